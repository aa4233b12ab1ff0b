//! The worker ↔ hub transport: TCP, with TLS (rustls) on top unless the
//! connection stays on loopback.
//!
//! Both ends read and write one connection from two places at once (the
//! worker sends frames while a thread of its own reads the hub's capture
//! filters), which a `rustls::StreamOwned` cannot do. So the TLS state sits
//! behind a mutex, and each half owns a clone of the socket; neither holds
//! the lock while it waits on the network. The reading half reads
//! ciphertext without it and takes it to decrypt (feeding rustls only as
//! fast as its plaintext is read); the writing half takes it to encrypt
//! into a buffer, and sends the buffer without it. Both halves are plain
//! `Read`/`Write`, so the framing (`proto::read_frame`/`write_frame`) does
//! not change.
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
use std::path::{Path, PathBuf};
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
            let mut alert = Vec::new();
            {
                let mut conn = locked(conn);
                conn.send_close_notify();
                while conn.wants_write() && conn.write_tls(&mut alert).is_ok() {}
            }
            let _ = self.socket.write_all(&alert);
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

/// A TLS configuration built from PEM files and built again when they
/// change: a renewed certificate (a Secret volume swaps its files) or a
/// new CA is taken by the next connection, with no restart. A change that
/// does not load keeps the configuration in force, and says why.
pub struct Reloading<T> {
    files: Vec<PathBuf>,
    build: fn(&[PathBuf]) -> anyhow::Result<Arc<T>>,
    current: Mutex<(Vec<Option<std::time::SystemTime>>, Arc<T>)>,
}

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading").field("files", &self.files).finish()
    }
}

fn mtimes(files: &[PathBuf]) -> Vec<Option<std::time::SystemTime>> {
    files.iter().map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).collect()
}

impl<T> Reloading<T> {
    fn new(files: Vec<PathBuf>, build: fn(&[PathBuf]) -> anyhow::Result<Arc<T>>) -> anyhow::Result<Self> {
        let stamp = mtimes(&files);
        let config = build(&files)?;
        Ok(Reloading { files, build, current: Mutex::new((stamp, config)) })
    }

    /// The configuration as of the files now.
    pub fn get(&self) -> Arc<T> {
        let mut current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let stamp = mtimes(&self.files);
        if stamp != current.0 {
            match (self.build)(&self.files) {
                Ok(config) => {
                    tracing::info!(files = ?self.files, "TLS files changed: reloaded");
                    *current = (stamp, config);
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "TLS files changed but do not load; keeping the previous ones");
                    current.0 = stamp;
                }
            }
        }
        current.1.clone()
    }
}

/// The hub's TLS, from its certificate chain and key, reloaded on change.
pub fn server_files(cert: &Path, key: &Path) -> anyhow::Result<Reloading<rustls::ServerConfig>> {
    Reloading::new(vec![cert.to_path_buf(), key.to_path_buf()], |f| server_config(&f[0], &f[1]))
}

/// The worker's TLS, from the hub's CA, reloaded on change.
pub fn client_files(ca: &Path) -> anyhow::Result<Reloading<rustls::ClientConfig>> {
    Reloading::new(vec![ca.to_path_buf()], |f| client_config(&f[0]))
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
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Completes the handshake within [`HANDSHAKE_TIMEOUT`] per read, then
/// splits. The socket's read timeout stays as the caller set it (the hub
/// keeps one until the worker has proved itself).
fn split(mut stream: TcpStream, mut conn: rustls::Connection) -> io::Result<(ReadHalf, WriteHalf)> {
    let before = stream.read_timeout()?;
    stream.set_read_timeout(Some(before.map_or(HANDSHAKE_TIMEOUT, |t| t.min(HANDSHAKE_TIMEOUT))))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut stream)?;
    }
    stream.set_read_timeout(before)?;
    let shared = Arc::new(Mutex::new(conn));
    let reader =
        TlsReader { conn: shared.clone(), socket: stream.try_clone()?, raw: vec![0; 16 * 1024], fed: 0, filled: 0 };
    let writer = TlsWriter { conn: shared.clone(), socket: stream.try_clone()?, out: Vec::new() };
    Ok((Box::new(reader), WriteHalf { inner: Box::new(writer), tls: Some(shared), socket: stream }))
}

fn locked(conn: &Mutex<rustls::Connection>) -> std::sync::MutexGuard<'_, rustls::Connection> {
    conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

struct TlsReader {
    conn: Arc<Mutex<rustls::Connection>>,
    socket: TcpStream,
    /// Ciphertext read from the socket; `raw[fed..filled]` is not yet
    /// given to rustls, which takes a few KiB at a time and none while it
    /// holds plaintext nobody has read.
    raw: Vec<u8>,
    fed: usize,
    filled: usize,
}

impl Read for TlsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.fed < self.filled {
                let mut conn = locked(&self.conn);
                // Plaintext first: rustls takes no more ciphertext while
                // it holds some.
                match conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                let mut pending = &self.raw[self.fed..self.filled];
                let taken = conn.read_tls(&mut pending)?;
                self.fed += taken;
                conn.process_new_packets().map_err(invalid)?;
                if taken == 0 {
                    // It took nothing and has nothing to give: the peer
                    // closed (close_notify) and what follows is not TLS.
                    return match conn.reader().read(buf) {
                        Ok(n) => Ok(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                        Err(e) => Err(e),
                    };
                }
                continue;
            }
            {
                let mut conn = locked(&self.conn);
                match conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            // Ciphertext is read without the lock, so the writing half is
            // never kept waiting on the network by this one.
            let n = self.socket.read(&mut self.raw)?;
            (self.fed, self.filled) = (0, n);
            if n == 0 {
                // The end of the stream without close_notify is a truncation.
                let mut conn = locked(&self.conn);
                return match conn.reader().read(buf) {
                    Ok(n) => Ok(n),
                    Err(_) => Err(io::ErrorKind::UnexpectedEof.into()),
                };
            }
        }
    }
}

/// The writing half: encrypts under the lock, sends without it (the
/// reading half may then decrypt while a send waits on the network).
struct TlsWriter {
    conn: Arc<Mutex<rustls::Connection>>,
    socket: TcpStream,
    out: Vec<u8>,
}

impl TlsWriter {
    fn send(&mut self) -> io::Result<()> {
        self.out.clear();
        {
            let mut conn = locked(&self.conn);
            while conn.wants_write() {
                conn.write_tls(&mut self.out)?;
            }
        }
        self.socket.write_all(&self.out)
    }
}

impl Write for TlsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = locked(&self.conn).writer().write(buf)?;
        self.send()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()?;
        self.socket.flush()
    }
}

/// A CA of its own and a certificate it signs, written as PEM files, for
/// tests and benches (feature `test-certs`).
#[cfg(any(test, feature = "test-certs"))]
pub mod test_certs {
    use std::path::{Path, PathBuf};

    /// Files of one CA and the certificate it signed.
    #[derive(Debug, Clone)]
    pub struct Files {
        pub ca: PathBuf,
        pub cert: PathBuf,
        pub key: PathBuf,
    }

    /// Writes `ca.pem`, `cert.pem` and `key.pem` into `dir`: a fresh CA and
    /// a certificate for `names` that it signed.
    #[allow(clippy::unwrap_used)]
    pub fn write(dir: &Path, names: &[&str]) -> Files {
        std::fs::create_dir_all(dir).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, "trawl test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        let files = Files { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem") };
        std::fs::write(&files.ca, ca_cert.pem()).unwrap();
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server and a client configuration for `localhost`, from one CA.
    fn configs(dir: &Path) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let f = test_certs::write(dir, &["localhost"]);
        (server_config(&f.cert, &f.key).unwrap(), client_config(&f.ca).unwrap())
    }

    fn pair() -> ((ReadHalf, WriteHalf), (ReadHalf, WriteHalf), TcpStream) {
        let dir =
            std::env::temp_dir().join(format!("trawl-tls-{}-{:?}", std::process::id(), std::thread::current().id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (server, client) = configs(&dir);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let raw = s.try_clone().unwrap();
            (accept(s, server).unwrap(), raw)
        });
        let c = connect(TcpStream::connect(addr).unwrap(), client, server_name("localhost").unwrap()).unwrap();
        let (s, raw) = accepted.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        (s, c, raw)
    }

    /// Frames far bigger than a TLS record cross intact both ways at once,
    /// with a writer on each side while the other reads.
    #[test]
    fn big_frames_cross_both_ways_at_once() {
        let ((mut s_read, mut s_write), (mut c_read, mut c_write), _raw) = pair();
        let sizes = [4usize, 3, 20_000, 1 << 20, 17, 5 << 20, 1];
        let frames: Vec<Vec<u8>> = sizes.iter().map(|&n| (0..n).map(|i| (i * 31 % 251) as u8).collect()).collect();
        let n = frames.len();
        // Each side reads on a thread of its own while it writes, as the
        // worker does.
        let client_reader = std::thread::spawn(move || {
            (0..n).map(|_| crate::proto::read_frame::<Vec<u8>>(&mut c_read).unwrap()).collect::<Vec<_>>()
        });
        let sent = frames.clone();
        let client_writer = std::thread::spawn(move || {
            for f in &sent {
                crate::proto::write_frame(&mut c_write, f).unwrap();
            }
            c_write
        });
        for f in &frames {
            crate::proto::write_frame(&mut s_write, f).unwrap();
        }
        let got: Vec<Vec<u8>> = (0..n).map(|_| crate::proto::read_frame(&mut s_read).unwrap()).collect();
        assert_eq!(got, frames);
        assert_eq!(client_reader.join().unwrap(), frames);
        client_writer.join().unwrap().close();
        // After the client's close_notify, the end of the stream.
        let mut rest = Vec::new();
        assert_eq!(s_read.read_to_end(&mut rest).unwrap(), 0);
    }

    /// After close_notify every read is the end of the stream (rustls
    /// takes no more bytes then; the reader must not spin on them).
    #[test]
    fn close_notify_ends_the_stream_for_good() {
        let ((mut s_read, _s_write), (_c_read, mut c_write), _raw) = pair();
        crate::proto::write_frame(&mut c_write, &vec![7u8; 100]).unwrap();
        c_write.close();
        let got: Vec<u8> = crate::proto::read_frame(&mut s_read).unwrap();
        assert_eq!(got, vec![7u8; 100]);
        let mut rest = [0u8; 16];
        assert_eq!(s_read.read(&mut rest).unwrap(), 0);
        assert_eq!(s_read.read(&mut rest).unwrap(), 0);
    }
}
