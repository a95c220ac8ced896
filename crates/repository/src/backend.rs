//! Storage backends: a small synchronous trait over "a place that keeps named immutable files".
//!
//! The engine only ever creates objects (create-only: an existing name is reported, never
//! overwritten), reads them whole or by range, lists them by [`FileType`], stats and deletes them.
//! Implementations: [`object::ObjectStoreBackend`] (local disk and S3 through `object_store`),
//! [`memory::MemoryBackend`] for tests, and the [`retry::RetryBackend`] decorator. The shared
//! [`conformance`] suite runs against each. Callers open backends through
//! [`crate::location::Location::open`], which applies the decorators.

use std::time::SystemTime;

use bytes::Bytes;

pub mod conformance;
pub mod memory;
pub mod object;
pub mod retry;

/// The kinds of objects a repository holds; each maps to a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// The single `config` object.
    Config,
    /// `keys/`: password-wrapped master keys.
    Key,
    /// `data/xx/`: packs.
    Pack,
    /// `index/`.
    Index,
    /// `snapshots/`.
    Snapshot,
    /// `prune/`: prune plans (phase 1 of garbage collection).
    PrunePlan,
    /// `locks/`: who is using the repository (format §12.1).
    Lock,
    /// `archive/`: named, write-once files such as WAL segments (format §16).
    Archive,
}

impl FileType {
    /// Every type, in a stable order.
    pub const ALL: [FileType; 8] = [
        FileType::Config,
        FileType::Key,
        FileType::Pack,
        FileType::Index,
        FileType::Snapshot,
        FileType::PrunePlan,
        FileType::Lock,
        FileType::Archive,
    ];

    /// The directory of this type (empty for the config).
    pub fn dir(self) -> &'static str {
        match self {
            FileType::Config => "",
            FileType::Key => "keys",
            FileType::Pack => "data",
            FileType::Index => "index",
            FileType::Snapshot => "snapshots",
            FileType::PrunePlan => "prune",
            FileType::Lock => "locks",
            FileType::Archive => "archive",
        }
    }

    /// The path of object `name` of this type, relative to the repository root.
    pub fn path(self, name: &str) -> String {
        match self {
            FileType::Config => "config".to_string(),
            FileType::Pack => format!("data/{}/{name}", name.get(..2).unwrap_or("00")),
            other => format!("{}/{name}", other.dir()),
        }
    }
}

/// What `list` and `stat` report about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object name (last path component).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time as the backend reports it.
    pub last_modified: SystemTime,
}

/// Failures of a backend. `Transient` ones may succeed when retried.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The object does not exist.
    #[error("{backend}: {path} not found")]
    NotFound {
        /// Backend location.
        backend: String,
        /// Object path.
        path: String,
    },
    /// A create-only write found the name taken.
    #[error("{backend}: {path} already exists")]
    AlreadyExists {
        /// Backend location.
        backend: String,
        /// Object path.
        path: String,
    },
    /// A failure that may pass on retry (network, throttling, server error).
    #[error("{backend}: {op} {path}: {message}")]
    Transient {
        /// Backend location.
        backend: String,
        /// Operation.
        op: &'static str,
        /// Object path.
        path: String,
        /// Cause, one line.
        message: String,
    },
    /// A failure that will not pass on retry (permissions, full disk, bad configuration).
    #[error("{backend}: {op} {path}: {message}")]
    Permanent {
        /// Backend location.
        backend: String,
        /// Operation.
        op: &'static str,
        /// Object path.
        path: String,
        /// Cause, one line.
        message: String,
    },
}

impl BackendError {
    /// Whether a retry may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, BackendError::Transient { .. })
    }

    /// Whether this is a not-found error.
    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
    }

    /// Whether this is an already-exists error.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, BackendError::AlreadyExists { .. })
    }
}

/// Result alias of backend operations.
pub type BackendResult<T> = Result<T, BackendError>;

/// A place that keeps the repository's files. Synchronous; call it from plain threads (or
/// `spawn_blocking` in async code).
pub trait Backend: Send + Sync {
    /// A human-readable location (`/path`, `s3://bucket/prefix`), used in errors.
    fn location(&self) -> String;
    /// Stores `data` as `name`, failing with `AlreadyExists` instead of overwriting.
    ///
    /// # Errors
    /// `AlreadyExists` when the name is taken, otherwise a transport or storage error.
    fn create(&self, ft: FileType, name: &str, data: Bytes) -> BackendResult<()>;
    /// Reads the whole object.
    ///
    /// # Errors
    /// `NotFound` or a transport error.
    fn get(&self, ft: FileType, name: &str) -> BackendResult<Bytes>;
    /// Reads `length` bytes at `offset`.
    ///
    /// # Errors
    /// `NotFound`, a short object, or a transport error.
    fn get_range(&self, ft: FileType, name: &str, offset: u64, length: u64)
    -> BackendResult<Bytes>;
    /// Lists every object of a type.
    ///
    /// # Errors
    /// A transport error.
    fn list(&self, ft: FileType) -> BackendResult<Vec<ObjectInfo>>;
    /// Deletes an object; deleting a missing object is not an error.
    ///
    /// # Errors
    /// A transport error.
    fn delete(&self, ft: FileType, name: &str) -> BackendResult<()>;
    /// Size and time of one object.
    ///
    /// # Errors
    /// `NotFound` or a transport error.
    fn stat(&self, ft: FileType, name: &str) -> BackendResult<ObjectInfo>;
    /// How many pack uploads a backup keeps in flight by default. Each holds a whole pack in
    /// memory, so a backend that gains nothing from more (a local disk, where every write ends in
    /// an fsync on the same device) asks for fewer.
    fn upload_concurrency(&self) -> usize {
        4
    }
    /// A directory on the same file system as the objects where packs can be staged while they
    /// are written, then stored with [`Backend::create_from_file`] (format §7.1). `None` (the
    /// default) means packs are built in memory and stored with [`Backend::create`].
    fn staging_dir(&self) -> Option<std::path::PathBuf> {
        None
    }
    /// Stores a complete, durable file as `name`, create-only like [`Backend::create`]. The
    /// caller removes `file` afterwards.
    ///
    /// # Errors
    /// `AlreadyExists` when the name is taken, otherwise a storage error.
    fn create_from_file(
        &self,
        ft: FileType,
        name: &str,
        file: &std::path::Path,
    ) -> BackendResult<()> {
        self.create(ft, name, read_staged(&self.location(), file)?)
    }
    /// Says that many small reads of this object follow (a pack of trees), so a backend with a
    /// local cache may fetch it whole once. A no-op by default.
    ///
    /// # Errors
    /// Reading the object failed.
    fn keep_local(&self, ft: FileType, name: &str) -> BackendResult<()> {
        let _ = (ft, name);
        Ok(())
    }
}

/// The bytes of a staged file, for backends that upload whole objects from memory.
///
/// # Errors
/// The file cannot be read.
pub(crate) fn read_staged(location: &str, file: &std::path::Path) -> BackendResult<Bytes> {
    std::fs::read(file).map(Bytes::from).map_err(|e| BackendError::Permanent {
        backend: location.to_string(),
        op: "read staged file",
        path: file.display().to_string(),
        message: e.to_string(),
    })
}

impl<B: Backend + ?Sized> Backend for std::sync::Arc<B> {
    fn location(&self) -> String {
        (**self).location()
    }
    fn create(&self, ft: FileType, name: &str, data: Bytes) -> BackendResult<()> {
        (**self).create(ft, name, data)
    }
    fn get(&self, ft: FileType, name: &str) -> BackendResult<Bytes> {
        (**self).get(ft, name)
    }
    fn get_range(
        &self,
        ft: FileType,
        name: &str,
        offset: u64,
        length: u64,
    ) -> BackendResult<Bytes> {
        (**self).get_range(ft, name, offset, length)
    }
    fn list(&self, ft: FileType) -> BackendResult<Vec<ObjectInfo>> {
        (**self).list(ft)
    }
    fn delete(&self, ft: FileType, name: &str) -> BackendResult<()> {
        (**self).delete(ft, name)
    }
    fn stat(&self, ft: FileType, name: &str) -> BackendResult<ObjectInfo> {
        (**self).stat(ft, name)
    }
    fn upload_concurrency(&self) -> usize {
        (**self).upload_concurrency()
    }
    fn staging_dir(&self) -> Option<std::path::PathBuf> {
        (**self).staging_dir()
    }
    fn create_from_file(
        &self,
        ft: FileType,
        name: &str,
        file: &std::path::Path,
    ) -> BackendResult<()> {
        (**self).create_from_file(ft, name, file)
    }
    fn keep_local(&self, ft: FileType, name: &str) -> BackendResult<()> {
        (**self).keep_local(ft, name)
    }
}
