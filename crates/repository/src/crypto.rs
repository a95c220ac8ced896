//! Keys and authenticated encryption (format §3): the master key and its derived subkeys,
//! AES-256-GCM sealing with random nonces, the encrypted-object envelope, and password-wrapped key
//! files (Argon2id).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Bytes of the nonce that starts a sealed message.
pub const NONCE_LEN: usize = aws_lc_rs::aead::NONCE_LEN;
/// Bytes a sealed message adds to its plaintext: nonce and tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + 16;

/// Random bytes from the system generator.
pub fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // aws-lc's generator only fails if the OS entropy source is gone; nothing can go on then.
    aws_lc_rs::rand::fill(&mut out).expect("system random generator failed");
    out
}

/// A 256-bit AES-GCM key.
pub struct SealKey(LessSafeKey);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    /// Wraps 32 raw key bytes.
    pub fn new(bytes: &[u8; 32]) -> Self {
        // A 32-byte key is exactly what AES-256-GCM takes, so construction cannot fail.
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).expect("32-byte AES-256 key");
        Self(LessSafeKey::new(unbound))
    }

    /// `nonce ‖ ciphertext ‖ tag` for `plaintext`, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        self.seal_into(aad, plaintext, &mut out);
        out
    }

    /// Appends `nonce ‖ ciphertext ‖ tag` for `plaintext` to `out`; returns the sealed length.
    /// Encrypts in place in `out`, so a pack is built with one copy of each blob.
    pub fn seal_into(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) -> usize {
        let nonce = random::<NONCE_LEN>();
        let start = out.len();
        out.reserve(plaintext.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[start + NONCE_LEN..],
            )
            .expect("AES-GCM seal of an in-memory buffer");
        out.extend_from_slice(tag.as_ref());
        out.len() - start
    }

    /// Verifies and decrypts a sealed message in its own buffer; returns the plaintext length
    /// (the plaintext then sits at `sealed[NONCE_LEN..NONCE_LEN + len]`), `None` when it does
    /// not authenticate.
    pub fn open_in_place(&self, aad: &[u8], sealed: &mut [u8]) -> Option<usize> {
        if sealed.len() < SEAL_OVERHEAD {
            return None;
        }
        let nonce: [u8; NONCE_LEN] = sealed[..NONCE_LEN].try_into().ok()?;
        self.0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut sealed[NONCE_LEN..],
            )
            .ok()
            .map(|p| p.len())
    }

    /// Verifies and decrypts a sealed message; `None` when it does not authenticate.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < SEAL_OVERHEAD {
            return None;
        }
        let nonce: [u8; NONCE_LEN] = sealed[..NONCE_LEN].try_into().ok()?;
        let mut body = sealed[NONCE_LEN..].to_vec();
        let len = self
            .0
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body)
            .ok()?
            .len();
        body.truncate(len);
        Some(body)
    }
}

/// The master key and everything derived from it (format §3.1).
pub struct MasterKey {
    raw: [u8; 32],
    id_key: [u8; 32],
    pack_key: [u8; 32],
    object_key: [u8; 32],
    chunker_seed: u64,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A fresh random master key.
    pub fn generate() -> Self {
        Self::from_raw(random())
    }

    /// Derives the subkeys of a master key.
    pub fn from_raw(raw: [u8; 32]) -> Self {
        let seed = blake3::derive_key("holdfast v1 chunker seed", &raw);
        let mut seed8 = [0u8; 8];
        seed8.copy_from_slice(&seed[..8]);
        Self {
            id_key: blake3::derive_key("holdfast v1 blob id", &raw),
            pack_key: blake3::derive_key("holdfast v1 pack encryption", &raw),
            object_key: blake3::derive_key("holdfast v1 object encryption", &raw),
            chunker_seed: u64::from_le_bytes(seed8),
            raw,
        }
    }

    /// The id of a blob's plaintext: keyed BLAKE3.
    pub fn blob_id(&self, plaintext: &[u8]) -> crate::Id {
        crate::Id(*blake3::keyed_hash(&self.id_key, plaintext).as_bytes())
    }

    /// The id of a blob's plaintext and the prints of its 16 KiB blocks (format §9.2), from one
    /// pass of the same hash.
    pub fn blob_id_and_prints(
        &self,
        plaintext: &[u8],
        prints: &mut Vec<crate::prints::Print>,
    ) -> crate::Id {
        crate::prints::id_and_prints(&self.id_key, plaintext, prints)
    }

    /// FastCDC seed.
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// The subkey for the pack with this salt.
    pub fn pack_key(&self, salt: &[u8; 16]) -> SealKey {
        SealKey::new(blake3::keyed_hash(&self.pack_key, salt).as_bytes())
    }

    fn object_subkey(&self, salt: &[u8; 16]) -> SealKey {
        SealKey::new(blake3::keyed_hash(&self.object_key, salt).as_bytes())
    }

    /// Compresses and seals a JSON document as an encrypted object of `kind` (format §3.2).
    pub fn seal_object(&self, kind: ObjectKind, json: &[u8]) -> Vec<u8> {
        let compressed = zstd::bulk::compress(json, 3).unwrap_or_else(|_| json.to_vec());
        let salt = random::<16>();
        let header = kind.header();
        let mut out = Vec::with_capacity(compressed.len() + 64);
        out.extend_from_slice(&header);
        out.extend_from_slice(&salt);
        out.extend_from_slice(&self.object_subkey(&salt).seal(&header, &compressed));
        out
    }

    /// Opens an encrypted object of `kind`; `object` names it in errors.
    ///
    /// # Errors
    /// `CorruptObject` on a wrong magic or kind, a failed tag, or bad compression.
    pub fn open_object(&self, kind: ObjectKind, object: &str, data: &[u8]) -> Result<Vec<u8>> {
        let header = kind.header();
        if data.len() < header.len() + 16 || data[..header.len()] != header {
            return Err(Error::corrupt(
                object,
                format!("not a {kind:?} object (bad magic or kind)"),
            ));
        }
        let salt: [u8; 16] = data[header.len()..header.len() + 16].try_into().unwrap_or_default();
        let compressed =
            self.object_subkey(&salt).open(&header, &data[header.len() + 16..]).ok_or_else(
                || Error::corrupt(object, "authentication failed (tampered or wrong key)"),
            )?;
        zstd::stream::decode_all(compressed.as_slice())
            .map_err(|e| Error::corrupt(object, format!("decompression failed: {e}")))
    }
}

/// Kinds of encrypted objects; the kind byte is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// `config`
    Config = 1,
    /// `index/`
    Index = 2,
    /// `snapshots/`
    Snapshot = 3,
    /// `prune/`
    PrunePlan = 4,
    /// `locks/`
    Lock = 5,
    /// The header of an `archive/` file (format §16).
    ArchiveHeader = 6,
    /// The body of an `archive/` file.
    ArchiveBody = 7,
}

impl ObjectKind {
    fn header(self) -> [u8; 7] {
        [b'H', b'F', b'O', b'B', b'J', 1, self as u8]
    }
}

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// RFC 9106's second recommended option: 64 MiB, 3 passes, 1 lane.
    fn default() -> Self {
        Self { memory_kib: 64 * 1024, iterations: 3, parallelism: 1 }
    }
}

impl KdfParams {
    /// Cheap parameters for tests only.
    pub fn insecure_fast() -> Self {
        Self { memory_kib: 64, iterations: 1, parallelism: 1 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KdfSpec {
    algorithm: String,
    #[serde(flatten)]
    params: KdfParams,
    salt: String,
}

/// A key file (format §3.3).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    /// Format version, 1.
    pub version: u32,
    /// Creation time.
    pub created: jiff::Timestamp,
    /// Host that created the key.
    pub hostname: String,
    /// User that created the key.
    pub username: String,
    kdf: KdfSpec,
    wrapped: String,
}

const KEY_AAD: &[u8] = b"holdfast v1 key";

fn kek(password: &[u8], salt: &[u8], p: KdfParams) -> Result<[u8; 32]> {
    let params = argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, Some(32))
        .map_err(|e| Error::Invalid(format!("argon2 parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    argon
        .hash_password_into(password, salt, &mut out)
        .map_err(|e| Error::Invalid(format!("argon2: {e}")))?;
    Ok(out)
}

impl KeyFile {
    /// Wraps `master` under `password`.
    ///
    /// # Errors
    /// Invalid KDF parameters.
    pub fn wrap(master: &MasterKey, password: &[u8], params: KdfParams) -> Result<Self> {
        let salt = random::<16>();
        let kek = kek(password, &salt, params)?;
        let wrapped = SealKey::new(&kek).seal(KEY_AAD, &master.raw);
        Ok(Self {
            version: 1,
            created: jiff::Timestamp::now(),
            hostname: crate::snapshot::hostname(),
            username: crate::snapshot::username(),
            kdf: KdfSpec { algorithm: "argon2id".into(), params, salt: B64.encode(salt) },
            wrapped: B64.encode(wrapped),
        })
    }

    /// Unwraps the master key; `None` when the password does not fit.
    ///
    /// # Errors
    /// A malformed key file (named by `object`).
    pub fn unwrap_key(&self, password: &[u8], object: &str) -> Result<Option<MasterKey>> {
        if self.version != 1 {
            return Err(Error::UnsupportedVersion { object: object.into(), version: self.version });
        }
        if self.kdf.algorithm != "argon2id" {
            return Err(Error::corrupt(object, format!("unknown kdf {}", self.kdf.algorithm)));
        }
        let salt = B64.decode(&self.kdf.salt).map_err(|e| Error::corrupt(object, e.to_string()))?;
        let wrapped =
            B64.decode(&self.wrapped).map_err(|e| Error::corrupt(object, e.to_string()))?;
        let kek = kek(password, &salt, self.kdf.params)?;
        Ok(SealKey::new(&kek).open(KEY_AAD, &wrapped).and_then(|raw| {
            let raw: [u8; 32] = raw.try_into().ok()?;
            Some(MasterKey::from_raw(raw))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let k = SealKey::new(&[7u8; 32]);
        let s = k.seal(b"aad", b"hello");
        assert_eq!(k.open(b"aad", &s).unwrap(), b"hello");
        assert!(k.open(b"other", &s).is_none());
        let mut t = s.clone();
        t[14] ^= 1;
        assert!(k.open(b"aad", &t).is_none());
    }

    #[test]
    fn key_file_wraps_and_rejects_wrong_password() {
        let m = MasterKey::generate();
        let kf = KeyFile::wrap(&m, b"pw", KdfParams::insecure_fast()).unwrap();
        let back = kf.unwrap_key(b"pw", "k").unwrap().unwrap();
        assert_eq!(back.raw, m.raw);
        assert!(kf.unwrap_key(b"nope", "k").unwrap().is_none());
    }

    #[test]
    fn objects_are_bound_to_their_kind() {
        let m = MasterKey::generate();
        let sealed = m.seal_object(ObjectKind::Index, b"{\"a\":1}");
        assert_eq!(m.open_object(ObjectKind::Index, "i", &sealed).unwrap(), b"{\"a\":1}");
        assert!(m.open_object(ObjectKind::Snapshot, "i", &sealed).is_err());
    }
}
