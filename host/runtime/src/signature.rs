//! Ed25519 signatures over plugin modules: a detached signature of the
//! module's bytes, checked against the operator's public key before a hub
//! accepts a plugin (`--plugin-key`).
//!
//! Keys and signatures are text so they travel in ConfigMaps, Secrets and
//! HTTP headers: a private key is PKCS#8 PEM (what `openssl genpkey
//! -algorithm ed25519` writes), a public key is SPKI PEM (`openssl pkey
//! -pubout`) or the raw 32 bytes in base64, and a signature is its 64
//! bytes in base64 (or raw).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

/// What is wrong with a key or a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("not an Ed25519 public key (want SPKI PEM or 32 bytes in base64)")]
    BadPublicKey,
    #[error("not an Ed25519 private key (want PKCS#8 PEM)")]
    BadPrivateKey,
    #[error("not an Ed25519 signature (want 64 bytes, raw or in base64)")]
    Malformed,
    #[error("the signature does not match the module and the plugin key")]
    Mismatch,
    #[error("a signature is required: the hub was started with --plugin-key")]
    Missing,
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo; the key's 32 bytes follow.
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

fn pem_body(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = text.split_once(&begin)?.1.split_once(&end)?.0;
    B64.decode(body.split_whitespace().collect::<String>()).ok()
}

/// An operator's public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let bytes = match pem_body(text, "PUBLIC KEY") {
            Some(der) if der.len() == 44 && der[..12] == SPKI_PREFIX => der[12..].to_vec(),
            Some(_) => return Err(SignatureError::BadPublicKey),
            None => B64.decode(text.trim()).map_err(|_| SignatureError::BadPublicKey)?,
        };
        Ok(PublicKey(bytes.try_into().map_err(|_| SignatureError::BadPublicKey)?))
    }

    /// The raw key in base64.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// The key as SPKI PEM, as `openssl pkey -pubout` writes it.
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", B64.encode(der))
    }

    /// Checks `signature` (64 bytes, raw or base64) over `module`.
    pub fn verify(&self, module: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        let raw = decode_signature(signature)?;
        UnparsedPublicKey::new(&ED25519, &self.0).verify(module, &raw).map_err(|_| SignatureError::Mismatch)
    }
}

fn decode_signature(signature: &[u8]) -> Result<Vec<u8>, SignatureError> {
    if signature.len() == 64 {
        return Ok(signature.to_vec());
    }
    let text = std::str::from_utf8(signature).map_err(|_| SignatureError::Malformed)?;
    let raw = B64.decode(text.trim()).map_err(|_| SignatureError::Malformed)?;
    if raw.len() == 64 { Ok(raw) } else { Err(SignatureError::Malformed) }
}

/// A signing key, from its PKCS#8 PEM.
#[derive(Debug)]
pub struct SigningKey(Ed25519KeyPair);

impl SigningKey {
    /// A new key, as PKCS#8 PEM.
    pub fn generate() -> Result<String, SignatureError> {
        let rng = ring::rand::SystemRandom::new();
        let der = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| SignatureError::BadPrivateKey)?;
        Ok(format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", B64.encode(der.as_ref())))
    }

    pub fn parse(pem: &str) -> Result<Self, SignatureError> {
        let der = pem_body(pem, "PRIVATE KEY").ok_or(SignatureError::BadPrivateKey)?;
        // OpenSSL writes PKCS#8 v1 (no public key inside); ring's own keys are v2.
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|_| SignatureError::BadPrivateKey)?;
        Ok(SigningKey(pair))
    }

    pub fn public_key(&self) -> PublicKey {
        let mut raw = [0u8; 32];
        raw.copy_from_slice(self.0.public_key().as_ref());
        PublicKey(raw)
    }

    /// The detached signature of `module`, in base64.
    pub fn sign(&self, module: &[u8]) -> String {
        B64.encode(self.0.sign(module).as_ref())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_module_and_key() {
        let key = SigningKey::parse(&SigningKey::generate().unwrap()).unwrap();
        let public = PublicKey::parse(&key.public_key().to_pem()).unwrap();
        assert_eq!(PublicKey::parse(&public.to_base64()).unwrap(), public);
        let sig = key.sign(b"module");
        assert_eq!(public.verify(b"module", sig.as_bytes()), Ok(()));
        assert_eq!(public.verify(b"module!", sig.as_bytes()), Err(SignatureError::Mismatch));
        let other = SigningKey::parse(&SigningKey::generate().unwrap()).unwrap();
        assert_eq!(other.public_key().verify(b"module", sig.as_bytes()), Err(SignatureError::Mismatch));
        assert_eq!(public.verify(b"module", b"not base64!"), Err(SignatureError::Malformed));
        assert_eq!(PublicKey::parse("garbage"), Err(SignatureError::BadPublicKey));
    }

    #[test]
    fn openssl_keys_and_signatures_are_accepted() {
        if std::process::Command::new("openssl").arg("version").output().is_err() {
            return;
        }
        let dir = std::env::temp_dir().join(format!("trawl-sig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let run = |args: &[&str]| {
            assert!(std::process::Command::new("openssl").args(args).current_dir(&dir).status().unwrap().success());
        };
        run(&["genpkey", "-algorithm", "ed25519", "-out", "key.pem"]);
        run(&["pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem"]);
        std::fs::write(dir.join("m.wasm"), b"\0asm module").unwrap();
        run(&["pkeyutl", "-sign", "-inkey", "key.pem", "-rawin", "-in", "m.wasm", "-out", "m.sig"]);
        let public = PublicKey::parse(&std::fs::read_to_string(dir.join("pub.pem")).unwrap()).unwrap();
        assert_eq!(public.verify(b"\0asm module", &std::fs::read(dir.join("m.sig")).unwrap()), Ok(()));
        let ours = SigningKey::parse(&std::fs::read_to_string(dir.join("key.pem")).unwrap()).unwrap();
        assert_eq!(ours.public_key(), public);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
