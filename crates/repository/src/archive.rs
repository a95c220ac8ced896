//! Archive files (format §16): named, write-once files kept beside the snapshots, such as
//! PostgreSQL WAL segments. Unlike every other object they are named by their caller, not by
//! their hash, because their readers ask for them by name (`restore_command` asks for
//! `000000010000000000000003`).
//!
//! Each is stored whole: a small encrypted header (name, size, keyed hash, the caller's
//! metadata) that a ranged read fetches alone, then the encrypted, compressed content. A name is
//! written once: storing the same content again is a success (an archiver retrying after a crash
//! must be told "done"), storing different content under it is refused, so a misconfigured
//! second server can never replace a segment that a restore depends on. A store returns only
//! once the object is durable (synced to disk on a local repository; acknowledged by S3).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::Repository;
use crate::backend::{Backend, FileType, ObjectInfo};
use crate::crypto::ObjectKind;
use crate::error::{Error, Result};
use crate::staging::StagedFile;

/// First bytes of every archive file.
const MAGIC: &[u8; 6] = b"HFARC\x01";
/// Bytes read for the header: enough for any header of ordinary metadata, one request.
const HEADER_READ: u64 = 4096;
/// Longest name accepted.
const MAX_NAME: usize = 200;

/// What an archive file's header says about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveHeader {
    /// The file's name (checked against the object it came from).
    pub name: String,
    /// Content length in bytes.
    pub size: u64,
    /// Keyed BLAKE3 of the content (the blob id of format §6), hex.
    pub hash: String,
    /// When it was stored.
    pub stored: jiff::Timestamp,
    /// The caller's facts about the content (a WAL segment's commit times, say).
    #[serde(default)]
    pub meta: serde_json::Value,
}

/// How a store went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The file was written now.
    New,
    /// The same content was already stored under this name (a retry).
    AlreadyThere,
}

/// Whether `name` may name an archive file: 1–200 of `[A-Za-z0-9._-]`, not starting with a dot.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_name(name: &str) -> Result<()> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "archive file name {name:?}: use 1–{MAX_NAME} letters, digits, '.', '_' or '-', \
             not starting with '.'"
        )))
    }
}

/// Stores `data` under `name` with `meta` in its header; see the module documentation for what
/// happens when the name exists.
///
/// # Errors
/// [`Error::ArchiveConflict`] when the name holds different content; backend errors.
pub fn store(
    repo: &Repository,
    name: &str,
    data: &[u8],
    meta: serde_json::Value,
) -> Result<Stored> {
    check_name(name)?;
    let hash = repo.blob_id(data).to_hex();
    let header = ArchiveHeader {
        name: name.to_string(),
        size: data.len() as u64,
        hash: hash.clone(),
        stored: jiff::Timestamp::now(),
        meta,
    };
    let json = serde_json::to_vec(&header).map_err(|e| Error::Invalid(e.to_string()))?;
    let sealed_header = repo.master.seal_object(ObjectKind::ArchiveHeader, &json);
    let sealed_body = repo.master.seal_object(ObjectKind::ArchiveBody, data);
    let mut object = Vec::with_capacity(10 + sealed_header.len() + sealed_body.len());
    object.extend_from_slice(MAGIC);
    object.extend_from_slice(&u32::try_from(sealed_header.len()).unwrap_or(u32::MAX).to_le_bytes());
    object.extend_from_slice(&sealed_header);
    object.extend_from_slice(&sealed_body);
    match create_durable(repo.backend.as_ref(), name, object) {
        Ok(()) => Ok(Stored::New),
        Err(e) if e.is_already_exists() => {
            let existing = header_of(repo, name)?;
            if existing.hash == hash && existing.size == data.len() as u64 {
                Ok(Stored::AlreadyThere)
            } else {
                Err(Error::ArchiveConflict { name: name.to_string() })
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes create-only and returns once the object is durable: through a synced staging file
/// and a hard link on a local repository, a plain create elsewhere (S3 acknowledges only what
/// it has stored).
fn create_durable(
    backend: &dyn Backend,
    name: &str,
    object: Vec<u8>,
) -> crate::backend::BackendResult<()> {
    let Some(dir) = backend.staging_dir() else {
        return backend.create(FileType::Archive, name, Bytes::from(object));
    };
    let staged = (|| {
        let mut file = StagedFile::create(&dir)?;
        file.write(&object)?;
        file.finish()
    })()
    .map_err(|e| crate::backend::BackendError::Permanent {
        backend: backend.location(),
        op: "stage archive file",
        path: dir.display().to_string(),
        message: e.to_string(),
    })?;
    backend.create_from_file(FileType::Archive, name, staged.path())
}

/// Splits an archive object into its sealed header and body.
fn split<'a>(name: &str, data: &'a [u8]) -> Result<(&'a [u8], &'a [u8])> {
    let path = FileType::Archive.path(name);
    if data.len() < MAGIC.len() + 4 || &data[..MAGIC.len()] != MAGIC {
        return Err(Error::corrupt(path, "not an archive file (bad magic)"));
    }
    let len = u32::from_le_bytes(data[6..10].try_into().unwrap_or_default()) as usize;
    let rest = &data[10..];
    if rest.len() < len {
        return Err(Error::corrupt(path, "header length beyond the object"));
    }
    Ok(rest.split_at(len))
}

fn open_header(repo: &Repository, name: &str, sealed: &[u8]) -> Result<ArchiveHeader> {
    let path = FileType::Archive.path(name);
    let json = repo.master.open_object(ObjectKind::ArchiveHeader, &path, sealed)?;
    let header: ArchiveHeader =
        serde_json::from_slice(&json).map_err(|e| Error::corrupt(path.clone(), e.to_string()))?;
    if header.name != name {
        return Err(Error::corrupt(path, format!("holds the file {:?}", header.name)));
    }
    Ok(header)
}

/// The header of `name`, read without its content (a stat and one ranged read; two for a
/// large header).
///
/// # Errors
/// Not found, corrupt header, backend errors.
pub fn header_of(repo: &Repository, name: &str) -> Result<ArchiveHeader> {
    check_name(name)?;
    // A range past the end is an error (the conformance contract), and small files are common
    // (a segment the server switched away from early compresses to a few KiB).
    let size = repo.backend.stat(FileType::Archive, name)?.size;
    let first = repo.backend.get_range(FileType::Archive, name, 0, HEADER_READ.min(size))?;
    let path = FileType::Archive.path(name);
    if first.len() < 10 || &first[..MAGIC.len()] != MAGIC {
        return Err(Error::corrupt(path, "not an archive file (bad magic)"));
    }
    let len = u64::from(u32::from_le_bytes(first[6..10].try_into().unwrap_or_default()));
    let sealed = if 10 + len <= first.len() as u64 {
        first.slice(10..10 + usize::try_from(len).unwrap_or(0))
    } else {
        repo.backend.get_range(FileType::Archive, name, 10, len)?
    };
    open_header(repo, name, &sealed)
}

/// The header and content of `name`, the content verified against the header's hash.
///
/// # Errors
/// Not found, corrupt object, backend errors.
pub fn load(repo: &Repository, name: &str) -> Result<(ArchiveHeader, Vec<u8>)> {
    check_name(name)?;
    let data = repo.backend.get(FileType::Archive, name)?;
    let (sealed_header, sealed_body) = split(name, &data)?;
    let header = open_header(repo, name, sealed_header)?;
    let path = FileType::Archive.path(name);
    let body = repo.master.open_object(ObjectKind::ArchiveBody, &path, sealed_body)?;
    if body.len() as u64 != header.size || repo.blob_id(&body).to_hex() != header.hash {
        return Err(Error::corrupt(path, "content does not match its header's hash"));
    }
    Ok((header, body))
}

/// Every archive file (names and stored sizes), sorted by name.
///
/// # Errors
/// Backend errors.
pub fn list(repo: &Repository) -> Result<Vec<ObjectInfo>> {
    let mut all: Vec<ObjectInfo> =
        repo.backend.list(FileType::Archive)?.into_iter().filter(|o| valid_name(&o.name)).collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

/// Deletes `name` (the caller has proven nothing needs it).
///
/// # Errors
/// Backend errors other than "not found".
pub fn delete(repo: &Repository, name: &str) -> Result<()> {
    check_name(name)?;
    match repo.backend.delete(FileType::Archive, name) {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::crypto::KdfParams;

    fn repo() -> Repository {
        let opts = crate::InitOptions { kdf: KdfParams::insecure_fast(), ..Default::default() };
        Repository::init(Arc::new(MemoryBackend::new()), b"pw", &opts).unwrap()
    }

    #[test]
    fn stores_once_accepts_the_same_content_again_and_refuses_other_content() {
        let repo = repo();
        let data = vec![5u8; 100_000];
        let meta = serde_json::json!({"last_commit": "2026-01-01T00:00:00Z"});
        assert_eq!(store(&repo, "seg-1", &data, meta.clone()).unwrap(), Stored::New);
        assert_eq!(store(&repo, "seg-1", &data, meta.clone()).unwrap(), Stored::AlreadyThere);
        let mut other = data.clone();
        other[500] = 6;
        let err = store(&repo, "seg-1", &other, meta.clone()).unwrap_err();
        assert!(matches!(err, Error::ArchiveConflict { .. }), "{err}");
        let (header, body) = load(&repo, "seg-1").unwrap();
        assert_eq!(body, data, "the first content stays");
        assert_eq!(header.meta, meta);
        assert_eq!(header_of(&repo, "seg-1").unwrap(), header);
        assert_eq!(
            list(&repo).unwrap().iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
            ["seg-1"]
        );
    }

    #[test]
    fn a_file_under_another_name_or_flipped_is_refused() {
        let repo = repo();
        store(&repo, "a", b"hello", serde_json::Value::Null).unwrap();
        let raw = repo.backend.get(FileType::Archive, "a").unwrap();
        repo.backend.create(FileType::Archive, "b", raw.clone()).unwrap();
        assert!(load(&repo, "b").unwrap_err().to_string().contains("holds the file"));
        let mut flipped = raw.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        repo.backend.create(FileType::Archive, "c", Bytes::from(flipped)).unwrap();
        assert!(load(&repo, "c").is_err());
        assert!(store(&repo, "../x", b"", serde_json::Value::Null).is_err());
    }
}
