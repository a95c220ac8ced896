//! Encryption at rest of Secrets, as kube-apiserver's `aesgcm` provider does it: each stored
//! Secret is `k8s:enc:aesgcm:v1:<key name>:` followed by a random 12-byte nonce and the AES-256-GCM
//! ciphertext (with its 16-byte tag) of the object's JSON, the store key
//! (`<resource>/<namespace>/<name>`) being the authenticated data, so a ciphertext moved to
//! another row does not decrypt.
//!
//! Keys live in `<data-dir>/encryption.key` (0600), one `name:base64(32 bytes)` per line: the
//! first encrypts, every one decrypts (add a new first line and restart to rotate: the store
//! re-encrypts every Secret with it at start).

use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::data_dir::create_private_file;
use crate::tls::write_private_file;

/// The prefix of every encrypted value, before the key name.
pub const PREFIX: &str = "k8s:enc:aesgcm:v1:";
/// The file name of the key file in the data directory.
pub const KEY_FILE: &str = "encryption.key";

#[derive(thiserror::Error, Debug)]
pub enum EncryptionError {
    #[error("cannot read or write encryption key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encryption key file {path} line {line}: {message}")]
    Parse { path: PathBuf, line: usize, message: String },
    #[error("cannot generate a random key or nonce")]
    Random,
    #[error("the value is encrypted with key {0:?}, which the key file does not have")]
    UnknownKey(String),
    #[error("the value does not decrypt: wrong key, or damaged")]
    Damaged,
}

struct NamedKey {
    name: String,
    key: LessSafeKey,
}

/// The keys Secrets are encrypted with.
pub struct Encryption {
    keys: Vec<NamedKey>,
    random: SystemRandom,
}

impl std::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.keys.iter().map(|k| k.name.as_str()).collect();
        f.debug_struct("Encryption").field("keys", &names).finish()
    }
}

impl Encryption {
    /// Keys from the text of a key file; the first one encrypts.
    ///
    /// # Errors
    /// A line is not `name:base64` of 32 bytes, or there is no key.
    pub fn parse(path: &Path, text: &str) -> Result<Encryption, EncryptionError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: &str| EncryptionError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                message: message.into(),
            };
            let (name, secret) = line.split_once(':').ok_or_else(|| err("expected name:base64"))?;
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(err("the key name must be a word"));
            }
            let secret =
                STANDARD.decode(secret.trim()).map_err(|_| err("the key is not base64"))?;
            let key = UnboundKey::new(&AES_256_GCM, &secret)
                .map_err(|_| err("the key must be 32 bytes"))?;
            keys.push(NamedKey { name: name.into(), key: LessSafeKey::new(key) });
        }
        if keys.is_empty() {
            return Err(EncryptionError::Parse {
                path: path.to_path_buf(),
                line: 0,
                message: "no key".into(),
            });
        }
        Ok(Encryption { keys, random: SystemRandom::new() })
    }

    /// Reads `<dir>/encryption.key`, or creates it (0600) with one fresh key named `key1`.
    ///
    /// # Errors
    /// The file cannot be read, parsed or created.
    pub fn load_or_create(dir: &Path) -> Result<Encryption, EncryptionError> {
        let path = dir.join(KEY_FILE);
        let io_err = |source| EncryptionError::Io { path: path.clone(), source };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                create_private_file(&path).map_err(io_err)?;
                Encryption::parse(&path, &text)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = [0u8; 32];
                SystemRandom::new().fill(&mut secret).map_err(|_| EncryptionError::Random)?;
                let text = format!(
                    "# Keys of the Secrets in store.db (name:base64 of 32 bytes); the first encrypts.\n\
                     key1:{}\n",
                    STANDARD.encode(secret)
                );
                write_private_file(&path, text.as_bytes()).map_err(io_err)?;
                Encryption::parse(&path, &text)
            }
            Err(e) => Err(io_err(e)),
        }
    }

    /// The prefix of a value encrypted with the current key.
    pub fn current_prefix(&self) -> String {
        format!("{PREFIX}{}:", self.keys[0].name)
    }

    /// Encrypts `plaintext` with the first key, `aad` authenticated alongside.
    ///
    /// # Errors
    /// No random nonce could be drawn.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, EncryptionError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).map_err(|_| EncryptionError::Random)?;
        let mut out = self.current_prefix().into_bytes();
        out.extend_from_slice(&nonce);
        let mut sealed = plaintext.to_vec();
        self.keys[0]
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut sealed,
            )
            .map_err(|_| EncryptionError::Damaged)?;
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plaintext of a stored value; a value without the prefix (written before encryption)
    /// is returned as it is.
    ///
    /// # Errors
    /// The key it names is missing, or it does not decrypt.
    pub fn open(&self, aad: &[u8], stored: Vec<u8>) -> Result<Vec<u8>, EncryptionError> {
        let Some(rest) = stored.strip_prefix(PREFIX.as_bytes()) else { return Ok(stored) };
        let colon = rest.iter().position(|&b| b == b':').ok_or(EncryptionError::Damaged)?;
        let name = String::from_utf8_lossy(&rest[..colon]).into_owned();
        let key = self
            .keys
            .iter()
            .find(|k| k.name == name)
            .ok_or_else(|| EncryptionError::UnknownKey(name.clone()))?;
        let body = &rest[colon + 1..];
        if body.len() < NONCE_LEN {
            return Err(EncryptionError::Damaged);
        }
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| EncryptionError::Damaged)?;
        let mut buffer = ciphertext.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buffer)
            .map_err(|_| EncryptionError::Damaged)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_binds_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let enc = Encryption::load_or_create(dir.path()).unwrap();
        let sealed = enc.seal(b"/secrets/a/s", b"{\"data\":\"x\"}").unwrap();
        assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
        assert_eq!(enc.open(b"/secrets/a/s", sealed.clone()).unwrap(), b"{\"data\":\"x\"}");
        assert!(matches!(enc.open(b"/secrets/a/t", sealed.clone()), Err(EncryptionError::Damaged)));
        assert_eq!(enc.open(b"x", b"{}".to_vec()).unwrap(), b"{}");
        // The same file gives the same key; a second, rotated-in key still opens old values.
        let again = Encryption::load_or_create(dir.path()).unwrap();
        assert_eq!(again.open(b"/secrets/a/s", sealed.clone()).unwrap(), b"{\"data\":\"x\"}");
        let text = std::fs::read_to_string(dir.path().join(KEY_FILE)).unwrap();
        let rotated = Encryption::parse(
            Path::new("k"),
            &format!("key2:{}\n{text}", STANDARD.encode([7u8; 32])),
        )
        .unwrap();
        assert_eq!(rotated.current_prefix(), "k8s:enc:aesgcm:v1:key2:");
        assert!(rotated.open(b"/secrets/a/s", sealed).is_ok());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
