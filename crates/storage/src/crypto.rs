//! Secrets at rest: XChaCha20-Poly1305 under the server's 32-byte key.
//!
//! What must stay true:
//! - every seal uses a fresh random 24-byte nonce, stored next to the ciphertext;
//! - the associated data is `app + "\0" + name`, so a ciphertext copied to another app or
//!   another name fails to open instead of leaking under the wrong name (app names cannot
//!   contain NUL, so the pair is unambiguous);
//! - a failure to open says nothing about the key, the value or the row.
use std::io::{self, Read, Write};
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use shared::AppName;

/// Bytes in a key file and in `StoreOptions::secret_key`.
pub const KEY_LEN: usize = 32;
/// Bytes in a stored nonce.
pub(crate) const NONCE_LEN: usize = 24;

/// A stored secret could not be sealed or opened (wrong key, moved or damaged row).
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("a stored secret could not be decrypted")]
    Open,
    #[error("a secret could not be encrypted")]
    Seal,
}

/// Seals and opens secret values with the server's key.
pub(crate) struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl SecretBox {
    pub(crate) fn new(key: &[u8; KEY_LEN]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(&Key::from(*key)),
        }
    }

    /// Encrypt `value` for (`app`, `name`); returns (nonce, ciphertext).
    pub(crate) fn seal(
        &self,
        app: &AppName,
        name: &str,
        value: &str,
    ) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let aad = aad(app, name);
        let ciphertext = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Seal)?;
        Ok((nonce.to_vec(), ciphertext))
    }

    /// Decrypt what `seal` returned for the same (`app`, `name`).
    pub(crate) fn open(
        &self,
        app: &AppName,
        name: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<String, CryptoError> {
        let nonce = <[u8; NONCE_LEN]>::try_from(nonce).map_err(|_| CryptoError::Open)?;
        let aad = aad(app, name);
        let plain = self
            .cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Open)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Open)
    }
}

fn aad(app: &AppName, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(app.as_str().len() + 1 + name.len());
    aad.extend_from_slice(app.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// A fresh random key, for `connect` without a configured key (its secrets do not outlive
/// the process in any useful way) and for tests.
pub fn random_key() -> [u8; KEY_LEN] {
    rand::random()
}

/// Read the 32-byte key in `path`, or create the file with a random key (permissions 0600
/// on Unix) when it does not exist. The file holds exactly the 32 raw bytes.
///
/// # Errors
/// The file cannot be read or created, or it does not hold exactly 32 bytes
/// (`InvalidData`): a damaged key file is never silently replaced.
pub fn load_or_create_key(path: &Path) -> io::Result<[u8; KEY_LEN]> {
    if let Some(key) = read_key_file(path)? {
        return Ok(key);
    }
    let key = random_key();
    match write_key_file(path, &key) {
        Ok(()) => Ok(key),
        // Another process created it between our read and our write: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_key(path),
        Err(e) => Err(e),
    }
}

/// The 32-byte key in `path`, or `None` when there is no such file.
///
/// # Errors
/// The file cannot be read, or it does not hold exactly 32 bytes (`InvalidData`).
pub fn read_key_file(path: &Path) -> io::Result<Option<[u8; KEY_LEN]>> {
    match read_key(path) {
        Ok(key) => Ok(Some(key)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Write `key` to `path`, all or nothing: the bytes go to a temporary file (0600) in the
/// same directory, which is fsynced and then linked into place, and the directory is
/// fsynced. An existing file is never replaced (`AlreadyExists`), and a crash leaves
/// either no key file or the whole key.
///
/// # Errors
/// `AlreadyExists` when `path` exists; any failure to write, sync or link.
pub fn write_key_file(path: &Path, key: &[u8; KEY_LEN]) -> io::Result<()> {
    let dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => {
            crate::private::create_dir_all(dir)?;
            dir
        }
        None => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map_or_else(|| "key".into(), |n| n.to_string_lossy()),
        uuid::Uuid::new_v4().simple()
    ));
    let written = (|| {
        let mut file = crate::private::create_new_file(&tmp)?;
        file.write_all(key)?;
        file.sync_all()?;
        drop(file);
        // A hard link never replaces an existing file, unlike a rename.
        std::fs::hard_link(&tmp, path)
    })();
    std::fs::remove_file(&tmp).ok();
    written?;
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// A short, one-way name for a key, stored in the database so that a server started with
/// another key notices before it seals or opens anything.
pub fn key_fingerprint(key: &[u8; KEY_LEN]) -> String {
    let mut hash = Sha256::new();
    hash.update(b"picloud secrets key fingerprint v1\0");
    hash.update(key);
    hash.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The database holds secrets sealed with another key than the one the server was given.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "the secrets key does not match the key that sealed this database's secrets; \
     restore the original key file (a new key would leave every stored secret unreadable)"
)]
pub struct KeyMismatch;

/// A running node of the cluster uses another secrets key than the one this server was
/// given: secrets sealed by one would be garbage to the other.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the secrets key differs from the key of the running node at {address}: every node of a \
     cluster must use the same key file"
)]
pub struct ClusterKeyMismatch {
    /// The advertised address of a running node with another key.
    pub address: String,
}

fn read_key(path: &Path) -> io::Result<[u8; KEY_LEN]> {
    let file = std::fs::File::open(path)?;
    let mut raw = Vec::with_capacity(KEY_LEN + 1);
    file.take(KEY_LEN as u64 + 1).read_to_end(&mut raw)?;
    <[u8; KEY_LEN]>::try_from(raw.as_slice()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the secret key file must hold exactly 32 bytes",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str) -> AppName {
        AppName::parse(name).expect("app name")
    }

    #[test]
    fn a_sealed_value_opens_only_under_its_own_app_and_name() {
        let sealer = SecretBox::new(&random_key());
        let (nonce, ct) = sealer.seal(&app("shop"), "token", "s3cr3t").expect("seal");
        assert_eq!(
            sealer
                .open(&app("shop"), "token", &nonce, &ct)
                .expect("open"),
            "s3cr3t"
        );
        assert!(sealer.open(&app("blog"), "token", &nonce, &ct).is_err());
        assert!(sealer.open(&app("shop"), "other", &nonce, &ct).is_err());
        assert!(!ct.windows(6).any(|w| w == b"s3cr3t"));
    }

    #[test]
    fn another_key_or_a_damaged_ciphertext_does_not_open() {
        let sealer = SecretBox::new(&random_key());
        let (nonce, mut ct) = sealer.seal(&app("shop"), "k", "value").expect("seal");
        assert!(
            SecretBox::new(&random_key())
                .open(&app("shop"), "k", &nonce, &ct)
                .is_err()
        );
        ct[0] ^= 1;
        assert!(sealer.open(&app("shop"), "k", &nonce, &ct).is_err());
        assert!(sealer.open(&app("shop"), "k", &nonce[..10], &ct).is_err());
    }

    #[test]
    fn two_seals_of_one_value_use_different_nonces() {
        let sealer = SecretBox::new(&random_key());
        let a = sealer.seal(&app("shop"), "k", "same").expect("seal");
        let b = sealer.seal(&app("shop"), "k", "same").expect("seal");
        assert_ne!(a.0, b.0);
        assert_ne!(a.1, b.1);
    }

    #[test]
    fn the_key_file_is_created_private_once_and_then_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/secret.key");
        let first = load_or_create_key(&path).expect("create");
        let again = load_or_create_key(&path).expect("read");
        assert_eq!(first, again);
        assert_eq!(std::fs::read(&path).expect("read"), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_key_file_is_written_whole_and_never_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret.key");
        let key = random_key();
        write_key_file(&path, &key).expect("write");
        assert_eq!(read_key_file(&path).expect("read"), Some(key));
        let err = write_key_file(&path, &random_key()).expect_err("exists");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(read_key_file(&path).expect("read"), Some(key));
        // No temporary file is left behind, whatever happened.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["secret.key"]);
        assert_eq!(
            read_key_file(&dir.path().join("missing")).expect("read"),
            None
        );
    }

    #[test]
    fn fingerprints_tell_keys_apart_without_revealing_them() {
        let key = random_key();
        assert_eq!(key_fingerprint(&key), key_fingerprint(&key));
        assert_ne!(key_fingerprint(&key), key_fingerprint(&random_key()));
        assert_eq!(key_fingerprint(&key).len(), 32);
        assert!(!key_fingerprint(&key).contains(&hex_of(&key[..16])));
    }

    fn hex_of(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn a_key_file_of_the_wrong_length_is_refused_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret.key");
        std::fs::write(&path, b"short").expect("write");
        let err = load_or_create_key(&path).expect_err("short key");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(std::fs::read(&path).expect("read"), b"short");
    }
}
