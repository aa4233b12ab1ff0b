//! Compiled plugin modules kept between runs, so a restart does not pay
//! Cranelift again. Loading one runs its machine code, so the cache is
//! trusted only as far as it is this user's alone:
//! - the directory (`TRAWL_CACHE_DIR`, else `$XDG_CACHE_HOME/trawl/modules`,
//!   else `~/.cache/trawl/modules`) must belong to this user and be closed
//!   to group and others (it is made so, or not used);
//! - each file carries an HMAC-SHA256 of its bytes, keyed with a random
//!   secret in that directory readable by this user only, and a file whose
//!   MAC does not match is compiled afresh, never loaded.
//!
//! Under `sudo` with `HOME` kept, the directory belongs to the user, not to
//! root, and is not used.

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const KEY_FILE: &str = "cache.key";

/// This process's effective user: the owner of `/proc/self`.
fn me() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// The cache directory, if it is this user's alone (made so if new).
fn dir() -> Option<PathBuf> {
    #[cfg(test)]
    if let Some(d) = tests::TEST_DIR.with(|d| d.borrow().clone()) {
        return checked(d);
    }
    let dir = match std::env::var_os("TRAWL_CACHE_DIR") {
        Some(d) if d.is_empty() => return None,
        Some(d) => PathBuf::from(d),
        None => match std::env::var_os("XDG_CACHE_HOME") {
            Some(x) => PathBuf::from(x).join("trawl/modules"),
            None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/trawl/modules"),
        },
    };
    checked(dir)
}

/// `dir`, made if missing, if it is this user's and closed to others.
fn checked(dir: PathBuf) -> Option<PathBuf> {
    std::fs::create_dir_all(&dir).ok()?;
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    if !meta.is_dir() || Some(meta.uid()) != me() {
        tracing::debug!(dir = %dir.display(), "module cache not this user's: not used");
        return None;
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).ok()?;
    }
    Some(dir)
}

/// The secret the MACs are keyed with, made on first use.
fn key(dir: &Path) -> Option<[u8; 32]> {
    let path = dir.join(KEY_FILE);
    let mut key = [0u8; 32];
    match std::fs::OpenOptions::new().read(true).open(&path) {
        Ok(mut f) => {
            let meta = f.metadata().ok()?;
            if Some(meta.uid()) != me() || meta.mode() & 0o077 != 0 {
                return None;
            }
            f.read_exact(&mut key).ok()?;
        }
        Err(_) => {
            std::fs::File::open("/dev/urandom").ok()?.read_exact(&mut key).ok()?;
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).ok()?;
            f.write_all(&key).ok()?;
        }
    }
    Some(key)
}

/// HMAC-SHA256 (RFC 2104).
fn mac(key: &[u8; 32], bytes: &[u8]) -> [u8; 32] {
    let mut pad = [0u8; 64];
    pad[..32].copy_from_slice(key);
    let (mut inner, mut outer) = (Sha256::new(), Sha256::new());
    inner.update(pad.map(|b| b ^ 0x36));
    inner.update(bytes);
    outer.update(pad.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The compiled bytes stored for module `hash`, if their MAC holds.
pub(crate) fn load(hash: &str) -> Option<Vec<u8>> {
    let dir = dir()?;
    let key = key(&dir)?;
    let file = std::fs::read(dir.join(format!("{hash}.cwasm"))).ok()?;
    let (tag, bytes) = file.split_at_checked(32)?;
    if !same_tag(tag, &mac(&key, bytes)) {
        tracing::warn!(hash, "compiled module in the cache fails its check: compiled afresh");
        return None;
    }
    Some(bytes.to_vec())
}

/// Compares tags in constant time.
fn same_tag(a: &[u8], b: &[u8; 32]) -> bool {
    a.len() == 32 && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Stores compiled `bytes` for module `hash`, behind their MAC.
pub(crate) fn store(hash: &str, bytes: &[u8]) {
    let Some(dir) = dir() else { return };
    let Some(key) = key(&dir) else { return };
    let tmp = dir.join(format!("{hash}.cwasm.{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&mac(&key, bytes)).and_then(|()| f.write_all(bytes)));
    if written.is_err() || std::fs::rename(&tmp, dir.join(format!("{hash}.cwasm"))).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // RFC 4231 test case 2 uses a 4-byte key; with our 32-byte keys,
        // check against case 1's shape instead: key 0x0b × 20, zero-padded
        // to 32 bytes is the same HMAC key (keys are padded with zeros).
        let mut key = [0u8; 32];
        key[..20].copy_from_slice(&[0x0b; 20]);
        let tag = mac(&key, b"Hi There");
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    }

    #[test]
    fn a_tampered_module_is_not_loaded() {
        let dir = std::env::temp_dir().join(format!("trawl-cache-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        temp_env(&dir, || {
            store("abc", b"compiled bytes");
            assert_eq!(load("abc").as_deref(), Some(&b"compiled bytes"[..]));
            let path = dir.join("abc.cwasm");
            let mut file = std::fs::read(&path).unwrap();
            let last = file.len() - 1;
            file[last] ^= 1;
            std::fs::write(&path, file).unwrap();
            assert_eq!(load("abc"), None);
            assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        });
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Runs `f` with the cache in `dir`: through a path only this test
    /// uses, so no environment variable changes under other tests.
    fn temp_env(dir: &Path, f: impl FnOnce()) {
        TEST_DIR.with(|d| *d.borrow_mut() = Some(dir.to_path_buf()));
        f();
        TEST_DIR.with(|d| *d.borrow_mut() = None);
    }

    thread_local! {
        pub(super) static TEST_DIR: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
    }
}
