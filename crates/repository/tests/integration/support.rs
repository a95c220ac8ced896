//! Shared helpers: small-parameter repositories and exact tree comparison.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use holdfast_repository::backend::object::ObjectStoreBackend;
use holdfast_repository::backend::{Backend, BackendResult, FileType, ObjectInfo};
use holdfast_repository::config::ChunkerParams;
use holdfast_repository::crypto::KdfParams;
use holdfast_repository::{InitOptions, Repository};

pub const PASSWORD: &[u8] = b"correct horse";

/// Small chunks and packs so tests exercise many of both quickly.
pub fn small_opts() -> InitOptions {
    InitOptions {
        chunker: ChunkerParams {
            min_size: 16 * 1024,
            avg_size: 64 * 1024,
            max_size: 256 * 1024,
            ..Default::default()
        },
        pack_size: 1024 * 1024,
        compression_level: 3,
        kdf: KdfParams::insecure_fast(),
    }
}

pub fn local_backend(dir: &Path) -> Arc<dyn Backend> {
    Arc::new(ObjectStoreBackend::local(dir).unwrap())
}

pub fn init_local(dir: &Path) -> Repository {
    Repository::init(local_backend(dir), PASSWORD, &small_opts()).unwrap()
}

/// A backend that asks `hook` (object type, name, length) before every `create` on `inner`, so a
/// test can fail or hold writes, and passes everything else straight through.
pub struct CreateHook<F> {
    pub inner: Arc<dyn Backend>,
    pub hook: F,
}

impl<F> Backend for CreateHook<F>
where
    F: Fn(FileType, &str, u64) -> BackendResult<()> + Send + Sync,
{
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self, ft: FileType, name: &str, data: Bytes) -> BackendResult<()> {
        (self.hook)(ft, name, data.len() as u64)?;
        self.inner.create(ft, name, data)
    }
    fn get(&self, ft: FileType, name: &str) -> BackendResult<Bytes> {
        self.inner.get(ft, name)
    }
    fn get_range(&self, ft: FileType, name: &str, o: u64, l: u64) -> BackendResult<Bytes> {
        self.inner.get_range(ft, name, o, l)
    }
    fn list(&self, ft: FileType) -> BackendResult<Vec<ObjectInfo>> {
        self.inner.list(ft)
    }
    fn delete(&self, ft: FileType, name: &str) -> BackendResult<()> {
        self.inner.delete(ft, name)
    }
    fn stat(&self, ft: FileType, name: &str) -> BackendResult<ObjectInfo> {
        self.inner.stat(ft, name)
    }
}

pub use holdfast_testkit::random_bytes;

/// Everything observable about one entry, for exact comparison.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub size: u64,
    pub mtime_ns: i128,
    pub content: Option<blake3::Hash>,
    pub target: Option<Vec<u8>>,
    /// For hardlinks: the relative path of the first entry with the same inode.
    pub link_group: Option<Vec<u8>>,
}

/// Describes a tree relative to `root` (root itself excluded), keyed by raw relative path.
pub fn describe(root: &Path) -> BTreeMap<Vec<u8>, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().as_os_str().as_bytes().to_vec();
            let ft = m.file_type();
            let (kind, content, target) = if ft.is_dir() {
                stack.push(p.clone());
                ("dir", None, None)
            } else if ft.is_symlink() {
                (
                    "symlink",
                    None,
                    Some(std::fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec()),
                )
            } else {
                ("file", Some(blake3::hash(&std::fs::read(&p).unwrap())), None)
            };
            let link_group = (kind == "file" && m.nlink() > 1)
                .then(|| inodes.entry(m.ino()).or_insert_with(|| rel.clone()).clone());
            out.insert(
                rel,
                Entry {
                    kind,
                    mode: if kind == "symlink" { 0 } else { m.mode() & 0o7777 },
                    size: if kind == "file" { m.size() } else { 0 },
                    mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                    content,
                    target,
                    link_group,
                },
            );
        }
    }
    out
}

/// Asserts two trees are identical in every observable respect.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let (da, db) = (describe(a), describe(b));
    assert_eq!(da.len(), db.len(), "entry counts differ");
    for (k, ea) in &da {
        let eb = db
            .get(k)
            .unwrap_or_else(|| panic!("{} missing from restore", String::from_utf8_lossy(k)));
        assert_eq!(ea, eb, "entry {} differs", String::from_utf8_lossy(k));
    }
}

/// Passes everything to `inner` and records each read of an object's bytes: its type, name and
/// how many bytes came back.
pub struct Recording {
    pub inner: Arc<dyn Backend>,
    reads: std::sync::Mutex<Vec<(FileType, String, u64)>>,
}

impl Recording {
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        Recording { inner, reads: std::sync::Mutex::new(Vec::new()) }
    }

    /// The reads so far (type and name), forgetting them.
    pub fn take(&self) -> Vec<(FileType, String)> {
        let reads = std::mem::take(&mut *self.reads.lock().unwrap());
        reads.into_iter().map(|(ft, name, _)| (ft, name)).collect()
    }

    /// Bytes read so far from objects of type `ft`.
    pub fn bytes(&self, ft: FileType) -> u64 {
        self.reads.lock().unwrap().iter().filter(|r| r.0 == ft).map(|r| r.2).sum()
    }

    fn record(&self, ft: FileType, name: &str, got: BackendResult<Bytes>) -> BackendResult<Bytes> {
        let data = got?;
        self.reads.lock().unwrap().push((ft, name.to_owned(), data.len() as u64));
        Ok(data)
    }
}

impl Backend for Recording {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self, ft: FileType, name: &str, data: Bytes) -> BackendResult<()> {
        self.inner.create(ft, name, data)
    }
    fn get(&self, ft: FileType, name: &str) -> BackendResult<Bytes> {
        self.record(ft, name, self.inner.get(ft, name))
    }
    fn get_range(
        &self,
        ft: FileType,
        name: &str,
        offset: u64,
        length: u64,
    ) -> BackendResult<Bytes> {
        self.record(ft, name, self.inner.get_range(ft, name, offset, length))
    }
    fn list(&self, ft: FileType) -> BackendResult<Vec<ObjectInfo>> {
        self.inner.list(ft)
    }
    fn delete(&self, ft: FileType, name: &str) -> BackendResult<()> {
        self.inner.delete(ft, name)
    }
    fn stat(&self, ft: FileType, name: &str) -> BackendResult<ObjectInfo> {
        self.inner.stat(ft, name)
    }
}
