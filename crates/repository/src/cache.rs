//! The local metadata cache (format §15): index files, snapshots and tree packs of a remote
//! repository kept on local disk, so listing snapshots and the change detection of an
//! incremental backup do not download the same metadata every time (restic's `--cache-dir`).
//!
//! Every object of the format is named by the BLAKE3 hash of its stored bytes and never changes,
//! so a cached copy is either exactly the object or detectably wrong: whole objects are checked
//! against their name each time they are read from the cache, a cached pack once per process
//! before its first range read, and a mismatch drops the copy and reads the repository again.
//! The cache holds the stored (encrypted) bytes only. Entries of objects that a listing no longer
//! shows (forgotten snapshots, superseded index files) are removed at that listing; packs not
//! used for 30 days are removed when the cache is opened.

use std::collections::HashSet;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::backend::{Backend, BackendError, BackendResult, FileType, ObjectInfo};
use crate::id::Id;

/// The cache's own layout version, the name of its top directory's marker (format §15).
const CACHE_VERSION: &str = "1";

/// Cached packs unused this long are removed when a cache is opened.
const PACK_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// A backend with a local cache of the metadata objects in front of it.
pub struct CachedBackend {
    inner: Arc<dyn Backend>,
    dir: PathBuf,
    /// Packs whose cached copy was checked against its name by this process.
    verified: Mutex<HashSet<String>>,
}

/// The types whose whole objects are cached on read.
fn cached_whole(ft: FileType) -> bool {
    matches!(ft, FileType::Index | FileType::Snapshot)
}

impl CachedBackend {
    /// Caches `inner`'s metadata under `root/<repository id>` (created owner-only).
    ///
    /// # Errors
    /// The cache directory cannot be created.
    pub fn new(inner: Arc<dyn Backend>, root: &Path, repository_id: &str) -> BackendResult<Self> {
        let dir = root.join(repository_id);
        let fail = |e: std::io::Error| local_error(&dir, "create cache", e);
        for sub in [FileType::Index, FileType::Snapshot, FileType::Pack] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir.join(sub.dir()))
                .map_err(fail)?;
        }
        fs::write(dir.join("version"), CACHE_VERSION).map_err(fail)?;
        let cache = Self { inner, dir, verified: Mutex::new(HashSet::new()) };
        cache.expire_packs();
        Ok(cache)
    }

    fn path(&self, ft: FileType, name: &str) -> PathBuf {
        self.dir.join(ft.dir()).join(name)
    }

    /// The cached object, if present and intact (a damaged copy is removed).
    fn read_whole(&self, ft: FileType, name: &str) -> Option<Bytes> {
        let path = self.path(ft, name);
        let data = fs::read(&path).ok()?;
        if Id::of_object(&data).to_hex() == name {
            return Some(Bytes::from(data));
        }
        tracing::warn!(path = %path.display(), "cached object does not match its name; reading it again");
        let _ = fs::remove_file(&path);
        None
    }

    /// Stores a copy; failures only cost the next read a download.
    fn store(&self, ft: FileType, name: &str, data: &[u8]) {
        let path = self.path(ft, name);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(data))
            .and_then(|()| fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::debug!(path = %path.display(), error = %e, "cannot cache an object");
            let _ = fs::remove_file(&tmp);
        }
    }

    /// Removes cached copies of `ft` that `listed` no longer has.
    fn forget_unlisted(&self, ft: FileType, listed: &[ObjectInfo]) {
        let names: HashSet<&str> = listed.iter().map(|o| o.name.as_str()).collect();
        for entry in fs::read_dir(self.dir.join(ft.dir())).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !names.contains(name.as_str()) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    fn expire_packs(&self) {
        let now = SystemTime::now();
        for entry in
            fs::read_dir(self.dir.join(FileType::Pack.dir())).into_iter().flatten().flatten()
        {
            let used = entry.metadata().and_then(|m| m.modified()).unwrap_or(now);
            if now.duration_since(used).unwrap_or_default() > PACK_MAX_AGE {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// A range of a cached pack, after checking the copy once per process.
    fn read_pack_range(&self, name: &str, offset: u64, length: u64) -> Option<Bytes> {
        let path = self.path(FileType::Pack, name);
        if !path.exists() {
            return None;
        }
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner()).contains(name);
        if !verified {
            self.read_whole(FileType::Pack, name)?;
            self.verified.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_owned());
            // Marks the pack used, for expiry.
            let _ = fs::File::options()
                .append(true)
                .open(&path)
                .and_then(|f| f.set_modified(SystemTime::now()));
        }
        use std::os::unix::fs::FileExt as _;
        let file = fs::File::open(&path).ok()?;
        let mut buf = vec![0; usize::try_from(length).ok()?];
        file.read_exact_at(&mut buf, offset).ok()?;
        Some(Bytes::from(buf))
    }
}

fn local_error(path: &Path, op: &'static str, e: std::io::Error) -> BackendError {
    BackendError::Permanent {
        backend: path.display().to_string(),
        op,
        path: String::new(),
        message: e.to_string(),
    }
}

impl Backend for CachedBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn create(&self, ft: FileType, name: &str, data: Bytes) -> BackendResult<()> {
        self.inner.create(ft, name, data.clone())?;
        // What was just written is read again soon (the new index, the new snapshot).
        if cached_whole(ft) {
            self.store(ft, name, &data);
        }
        Ok(())
    }

    fn get(&self, ft: FileType, name: &str) -> BackendResult<Bytes> {
        // A whole pack is read by `check --read-data` and repairs, which must see the
        // repository's own copy: never from the cache.
        if cached_whole(ft)
            && let Some(data) = self.read_whole(ft, name)
        {
            return Ok(data);
        }
        let data = self.inner.get(ft, name)?;
        if cached_whole(ft) {
            self.store(ft, name, &data);
        }
        Ok(data)
    }

    fn get_range(
        &self,
        ft: FileType,
        name: &str,
        offset: u64,
        length: u64,
    ) -> BackendResult<Bytes> {
        if ft == FileType::Pack
            && let Some(data) = self.read_pack_range(name, offset, length)
        {
            return Ok(data);
        }
        self.inner.get_range(ft, name, offset, length)
    }

    fn list(&self, ft: FileType) -> BackendResult<Vec<ObjectInfo>> {
        let listed = self.inner.list(ft)?;
        if cached_whole(ft) {
            self.forget_unlisted(ft, &listed);
        }
        Ok(listed)
    }

    fn delete(&self, ft: FileType, name: &str) -> BackendResult<()> {
        self.inner.delete(ft, name)?;
        if cached_whole(ft) || ft == FileType::Pack {
            let _ = fs::remove_file(self.path(ft, name));
        }
        Ok(())
    }

    fn stat(&self, ft: FileType, name: &str) -> BackendResult<ObjectInfo> {
        self.inner.stat(ft, name)
    }

    fn upload_concurrency(&self) -> usize {
        self.inner.upload_concurrency()
    }

    fn staging_dir(&self) -> Option<PathBuf> {
        self.inner.staging_dir()
    }

    fn create_from_file(&self, ft: FileType, name: &str, file: &Path) -> BackendResult<()> {
        self.inner.create_from_file(ft, name, file)
    }

    fn keep_local(&self, ft: FileType, name: &str) -> BackendResult<()> {
        if ft != FileType::Pack || self.path(ft, name).exists() {
            return Ok(());
        }
        let data = self.inner.get(ft, name)?;
        if Id::of_object(&data).to_hex() == name {
            self.store(ft, name, &data);
            self.verified.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;

    #[test]
    fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let cached = CachedBackend::new(Arc::new(MemoryBackend::new()), dir.path(), "r").unwrap();
        crate::backend::conformance::run(&cached);
    }
}
