//! The worker ↔ hub transport: TCP, with TLS (rustls) on top unless the
//! connection stays on loopback.
//!
//! Both ends read and write one connection from two places at once (the
//! worker sends frames while a thread of its own reads the hub's capture
//! filters), which a `rustls::StreamOwned` cannot do. So the TLS state sits
//! behind a mutex, and each half owns a clone of the socket: the reading
//! half reads ciphertext without the lock (the kernel's buffer never fills
//! behind a writer) and takes the lock only to decrypt; the writing half
//! takes it to encrypt and send. Both halves are plain `Read`/`Write`, so
//! the framing (`proto::read_frame`/`write_frame`) does not change.
//!
//! Why not tonic: it would bring TLS, flow control and deadlines, but the
//! worker and hub are threads over blocking sockets, and the protocol is
//! one stream of postcard frames each way; the framing stays, with TLS
//! added where the bytes leave the machine.

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// One half of a connection, for reading frames.
pub type ReadHalf = Box<dyn Read + Send>;

/// The other half, for writing them; [`WriteHalf::close`] ends the
/// sending side (TLS `close_notify`, then a TCP half-close).
pub struct WriteHalf {
    inner: Box<dyn Write + Send>,
    tls: Option<Arc<Mutex<rustls::Connection>>>,
    socket: TcpStream,
}

impl std::fmt::Debug for WriteHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteHalf").field("tls", &self.tls.is_some()).finish()
    }
}

impl WriteHalf {
    /// Stops sending: the peer reads to the end of what was sent, then
    /// sees the end of the stream.
    pub fn close(&mut self) {
        if let Some(conn) = &self.tls {
            let mut conn = locked(conn);
            conn.send_close_notify();
            while conn.wants_write() {
                if conn.write_tls(&mut self.socket).is_err() {
                    break;
                }
            }
        }
        let _ = self.socket.shutdown(std::net::Shutdown::Write);
    }
}

impl Write for WriteHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The process-wide crypto provider: ring (already in the tree through the
/// Kubernetes client; aws-lc would need cmake to build).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read certificates from {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad PEM in {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", path.display());
    Ok(certs)
}

/// The hub's TLS: its certificate chain and key (PEM files).
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain = certificates(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a private key from {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the hub's certificate and key do not go together")?;
    Ok(Arc::new(config))
}

/// The worker's TLS: the CA (PEM) that signed the hub's certificate.
pub fn client_config(ca: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(ca)? {
        roots.add(cert).with_context(|| format!("{} is not a usable CA certificate", ca.display()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name a worker expects in the hub's certificate.
pub fn server_name(name: &str) -> anyhow::Result<ServerName<'static>> {
    ServerName::try_from(name.to_string()).with_context(|| format!("{name:?} is not a host name or address"))
}

/// Plain TCP, split in two.
pub fn plain(stream: TcpStream) -> io::Result<(ReadHalf, WriteHalf)> {
    let reader = stream.try_clone()?;
    let socket = stream.try_clone()?;
    Ok((Box::new(io::BufReader::new(reader)), WriteHalf { inner: Box::new(stream), tls: None, socket }))
}

/// The hub's side: completes the TLS handshake, then splits.
pub fn accept(stream: TcpStream, config: Arc<rustls::ServerConfig>) -> io::Result<(ReadHalf, WriteHalf)> {
    let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
    split(stream, rustls::Connection::Server(conn))
}

/// The worker's side: completes the TLS handshake (the hub's certificate
/// must chain to the CA and name `name`), then splits.
pub fn connect(
    stream: TcpStream,
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
) -> io::Result<(ReadHalf, WriteHalf)> {
    let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
    split(stream, rustls::Connection::Client(conn))
}

/// A peer that connects and never finishes its handshake is let go.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn split(mut stream: TcpStream, mut conn: rustls::Connection) -> io::Result<(ReadHalf, WriteHalf)> {
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut stream)?;
    }
    stream.set_read_timeout(None)?;
    let shared = Arc::new(Mutex::new(conn));
    let reader = TlsReader { conn: shared.clone(), socket: stream.try_clone()?, raw: vec![0; 16 * 1024] };
    let writer = TlsWriter { conn: shared.clone(), socket: stream.try_clone()? };
    Ok((Box::new(reader), WriteHalf { inner: Box::new(writer), tls: Some(shared), socket: stream }))
}

fn locked(conn: &Mutex<rustls::Connection>) -> std::sync::MutexGuard<'_, rustls::Connection> {
    conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct TlsReader {
    conn: Arc<Mutex<rustls::Connection>>,
    socket: TcpStream,
    raw: Vec<u8>,
}

impl Read for TlsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            {
                let mut conn = locked(&self.conn);
                match conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            // Ciphertext is read without the lock: a writer that blocks on
            // a full socket never stops this side from draining.
            let n = self.socket.read(&mut self.raw)?;
            let mut conn = locked(&self.conn);
            if n == 0 {
                // A close without close_notify is a truncation: say so.
                return match conn.reader().read(buf) {
                    Ok(n) => Ok(n),
                    Err(_) => Err(io::ErrorKind::UnexpectedEof.into()),
                };
            }
            let mut fed = &self.raw[..n];
            while !fed.is_empty() {
                conn.read_tls(&mut fed)?;
                conn.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
            // Answers the protocol owes (key updates) go out now.
            while conn.wants_write() {
                conn.write_tls(&mut self.socket)?;
            }
        }
    }
}

struct TlsWriter {
    conn: Arc<Mutex<rustls::Connection>>,
    socket: TcpStream,
}

impl Write for TlsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut conn = locked(&self.conn);
        let n = conn.writer().write(buf)?;
        while conn.wants_write() {
            conn.write_tls(&mut self.socket)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut conn = locked(&self.conn);
        conn.writer().flush()?;
        while conn.wants_write() {
            conn.write_tls(&mut self.socket)?;
        }
        Ok(())
    }
}
