//! The durable object store behind the API server: SQLite in WAL mode with one global revision.
//!
//! Layout (the design precedent is k3s's kine: a key-value table plus a revision log):
//! - `objects` holds the current state of every object, keyed by (resource, namespace, name);
//! - `log` holds one row per write, keyed by the global revision, for watch replay;
//! - `meta` holds `compacted_rev`.
//!
//! Every write runs on one writer thread ([`writer`]), which drains all queued requests into one
//! transaction (group commit), so a write is acknowledged only after its transaction was fsync'd,
//! and concurrent writers share that fsync. After the commit the writer publishes the events, in
//! revision order, on a broadcast channel that [`Store::watch`] streams combine with a replay of the
//! durable log ([`watch`]). Reads use a small pool of reader connections ([`sqlite`]); WAL gives
//! them snapshot isolation, so a list and the revision it reports come from the same snapshot.

mod codec;
mod sqlite;
mod watch;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::Stream;
use serde_json::Value;
use tokio::sync::{broadcast, oneshot};

use crate::encryption::Encryption;

use self::codec::Codec;
use self::sqlite::ReadPool;
use self::writer::{Request, WriterHandle};

/// Identifies one object. `resource` is `"<group>/<plural>"` (`""` group → `"/pods"`,
/// `"velero.io/backups"`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub resource: String,
    /// `""` for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(
        resource: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Key {
        Key { resource: resource.into(), namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.resource, self.name)
        } else {
            write!(f, "{} {}/{}", self.resource, self.namespace, self.name)
        }
    }
}

/// One object as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub key: Key,
    /// The object; its `metadata.resourceVersion` is `mod_rev` as a decimal string.
    pub object: Value,
    /// The revision of the last write to the object (for a deleted object: the deletion revision).
    pub mod_rev: u64,
    /// The revision that created the object.
    pub create_rev: u64,
}

/// One object's stored JSON, unparsed: a list can copy it into a response as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawObject {
    pub namespace: String,
    pub name: String,
    /// The object as stored (a JSON object whose `metadata.resourceVersion` is set).
    pub raw: Vec<u8>,
}

/// What a write did to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    /// The watch event `type` of the Kubernetes API.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }

    fn code(self) -> i64 {
        match self {
            EventType::Added => 0,
            EventType::Modified => 1,
            EventType::Deleted => 2,
        }
    }

    fn from_code(code: i64) -> Option<EventType> {
        match code {
            0 => Some(EventType::Added),
            1 => Some(EventType::Modified),
            2 => Some(EventType::Deleted),
            _ => None,
        }
    }
}

/// One committed write, as seen by watchers.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub rev: u64,
    pub kind: EventType,
    pub key: Key,
    /// The new state; for `Deleted`, the last state with `resourceVersion` = the deletion revision.
    pub object: Value,
    /// The previous state (`None` for `Added`), so watchers can compute selector transitions.
    pub prev: Option<Value>,
}

#[non_exhaustive]
#[derive(thiserror::Error, Debug)]
pub enum StoreError {
    #[error("{0} already exists")]
    AlreadyExists(Key),
    #[error("{0} not found")]
    NotFound(Key),
    #[error("{key} was modified: expected resourceVersion {expected}, current is {actual}")]
    Conflict { key: Key, expected: u64, actual: u64 },
    #[error("too old resource version: {requested} ({compacted})")]
    Compacted { requested: u64, compacted: u64 },
    #[error("too large resource version: {requested}, current: {current}")]
    FutureRevision { requested: u64, current: u64 },
    #[error("{key}: the object must be a JSON object with an object `metadata`")]
    NotAnObject { key: Key },
    #[error("the store at {path} is already open in another process or handle")]
    Locked { path: PathBuf },
    #[error("{path} has store schema version {version}, newer than this build understands")]
    UnsupportedSchema { path: PathBuf, version: i64 },
    #[error("the store is closed")]
    Closed,
    /// `source` is shared so a failed group commit can report the same cause to every write in it.
    #[error("sqlite: {context}")]
    Sqlite {
        context: String,
        #[source]
        source: Arc<rusqlite::Error>,
    },
    #[error("json of {context}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{context}: {path}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Boxed: the key and the cause would make every store result large.
    #[error("{}: {}", .0.0, .0.1)]
    Encryption(Box<(Key, crate::encryption::EncryptionError)>),
}

impl StoreError {
    fn sqlite(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> StoreError {
        let context = context.into();
        move |source| StoreError::Sqlite { context, source: Arc::new(source) }
    }
}

/// How many events the live broadcast channel buffers per watcher before it lags; a lagging
/// watcher catches up from the durable log, so this bounds memory, not correctness.
const BROADCAST_CAPACITY: usize = 4096;

/// State shared by the `Store` handles, the writer thread and the watch streams.
struct Shared {
    readers: ReadPool,
    /// How values are stored (Secrets encrypted or not); readers and the writer share it.
    codec: Codec,
    /// Highest committed revision, for cheap `current_rev()`; updated by the writer after commit.
    current_rev: AtomicU64,
    compacted_rev: AtomicU64,
}

struct Inner {
    shared: Arc<Shared>,
    writer: WriterHandle,
    events: broadcast::Sender<Arc<Event>>,
    /// Keeps the temporary directory of `open_in_memory` alive as long as the store.
    _temp: Option<tempfile::TempDir>,
}

/// The durable store. Cheap to clone; all clones share one writer thread and one reader pool.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.shared.readers.path())
            .field("current_rev", &self.current_rev())
            .field("compacted_rev", &self.compacted_rev())
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path`, in WAL mode with `synchronous=FULL`.
    /// A second open of the same path while the first is alive fails with [`StoreError::Locked`]:
    /// the revision counter lives in the one writer thread.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, None, None)
    }

    /// Like [`Store::open`], with Secrets encrypted at rest by `encryption`. Secrets stored in
    /// plaintext, or under another key of `encryption` than its first, are re-encrypted before
    /// this returns, and the file is then vacuumed so no old page keeps the plaintext.
    pub fn open_encrypted(path: &Path, encryption: Encryption) -> Result<Store, StoreError> {
        Store::open_with(path, None, Some(encryption))
    }

    /// A store in a fresh temporary directory, removed when the last handle is dropped. Same code
    /// path as [`Store::open`] (a real file), so tests exercise WAL snapshots and fsync.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let temp =
            tempfile::Builder::new().prefix("holdfast-store-").tempdir().map_err(|source| {
                StoreError::Io {
                    context: "creating a temporary store directory",
                    path: std::env::temp_dir(),
                    source,
                }
            })?;
        let path = temp.path().join("store.db");
        Store::open_with(&path, Some(temp), None)
    }

    fn open_with(
        path: &Path,
        temp: Option<tempfile::TempDir>,
        encryption: Option<Encryption>,
    ) -> Result<Store, StoreError> {
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let shared = Arc::new(Shared {
            readers: ReadPool::new(path.to_path_buf()),
            codec: Codec::new(encryption),
            current_rev: AtomicU64::new(0),
            compacted_rev: AtomicU64::new(0),
        });
        // Sets both revisions in `shared` before it returns.
        let writer = writer::spawn(path, Arc::clone(&shared), events.clone())?;
        Ok(Store { inner: Arc::new(Inner { shared, writer, events, _temp: temp }) })
    }

    /// The highest committed revision (never 0: a fresh store starts at 1).
    pub fn current_rev(&self) -> u64 {
        self.inner.shared.current_rev.load(Ordering::Acquire)
    }

    /// Log entries up to and including this revision may have been dropped.
    pub fn compacted_rev(&self) -> u64 {
        self.inner.shared.compacted_rev.load(Ordering::Acquire)
    }

    pub fn get(&self, key: &Key) -> Result<Option<Stored>, StoreError> {
        let codec = &self.inner.shared.codec;
        self.inner.shared.readers.with(|conn| sqlite::get(conn, codec, key))
    }

    /// Objects of `resource` (in `namespace` if `Some`), ordered by (namespace, name), strictly
    /// after `after` = (namespace, name) if given, at most `limit` if given. Returns the items, the
    /// revision of the snapshot the read saw, and how many objects remain after this page.
    pub fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
        after: Option<(&str, &str)>,
        limit: Option<usize>,
    ) -> Result<(Vec<Stored>, u64, u64), StoreError> {
        let codec = &self.inner.shared.codec;
        self.inner
            .shared
            .readers
            .with(|conn| sqlite::list(conn, codec, resource, namespace, after, limit))
    }

    /// Like [`Store::list`], but unparsed, and as of revision `at` when given (the latest
    /// otherwise). Returns the rows, the revision they are the state at, and how many follow
    /// the page. A past revision is served exactly as long as the log covers it: fails with
    /// [`StoreError::Compacted`] below `compacted_rev()` and [`StoreError::FutureRevision`]
    /// above `current_rev()`. Blocks on SQLite: call it from `spawn_blocking` in async code.
    pub fn list_raw(
        &self,
        resource: &str,
        namespace: Option<&str>,
        after: Option<(&str, &str)>,
        limit: Option<usize>,
        at: Option<u64>,
    ) -> Result<(Vec<RawObject>, u64, u64), StoreError> {
        self.inner.shared.readers.with(|conn| {
            sqlite::list_raw(conn, &self.inner.shared.codec, resource, namespace, after, limit, at)
        })
    }

    /// Keys of the objects (in `namespace`, if given; else everywhere) whose stored JSON
    /// contains `needle` as bytes, e.g. a uid their owner references carry. A cheap pre-filter:
    /// callers check the parsed object. Blocks on SQLite like [`Store::list`].
    pub fn keys_containing(
        &self,
        namespace: Option<&str>,
        needle: &str,
    ) -> Result<Vec<Key>, StoreError> {
        let codec = &self.inner.shared.codec;
        self.inner
            .shared
            .readers
            .with(|conn| sqlite::keys_containing(conn, codec, namespace, needle))
    }

    /// How many objects each resource holds (`<group>/<plural>` and its count), from the primary
    /// key alone. Blocks on SQLite like [`Store::list`].
    pub fn count_by_resource(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.shared.readers.with(|conn| sqlite::count_by_resource(conn))
    }

    /// Creates `key`; fails with [`StoreError::AlreadyExists`] if it exists. The stored object gets
    /// `metadata.resourceVersion` = the new revision. Durable before this returns.
    pub async fn create(&self, key: Key, object: Value) -> Result<Stored, StoreError> {
        self.submit(|reply| Request::Create { key, object, reply }).await
    }

    /// Replaces `key` if its current `mod_rev` is `expected_mod_rev` (else
    /// [`StoreError::Conflict`]). An update that changes nothing (apart from
    /// `metadata.resourceVersion`) writes nothing and returns the current state unchanged, as the
    /// Kubernetes API does for no-op writes.
    pub async fn update(
        &self,
        key: Key,
        object: Value,
        expected_mod_rev: u64,
    ) -> Result<Stored, StoreError> {
        self.submit(|reply| Request::Update { key, object, expected_mod_rev, reply }).await
    }

    /// Deletes `key` (if its `mod_rev` is `expected_mod_rev`, when given). Returns the last state
    /// with `resourceVersion` and `mod_rev` = the deletion revision.
    pub async fn delete(
        &self,
        key: Key,
        expected_mod_rev: Option<u64>,
    ) -> Result<Stored, StoreError> {
        self.submit(|reply| Request::Delete { key, expected_mod_rev, reply }).await
    }

    async fn submit(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<Stored, StoreError>>) -> Request,
    ) -> Result<Stored, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner.writer.send(request(reply))?;
        // A dropped reply means the writer thread died (it never drops a request unanswered).
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Events with `rev > from_rev` for `resource` (all namespaces; the caller filters): first
    /// replayed from the durable log, then live, in revision order, with no gap and no duplicate.
    /// `from_rev == current_rev()` means only future events. Fails with
    /// [`StoreError::Compacted`] if `from_rev < compacted_rev()`; the stream itself yields
    /// `Err(Compacted)` and ends if compaction overtakes it while it is still replaying. The
    /// stream ends when the store is closed. The stream is `Unpin`: `.next().await` works on it
    /// directly.
    pub fn watch(
        &self,
        resource: &str,
        from_rev: u64,
    ) -> Result<
        impl Stream<Item = Result<Arc<Event>, StoreError>> + Send + Unpin + 'static,
        StoreError,
    > {
        // Subscribe before anything is read from the log: every event committed after the log
        // snapshot is then guaranteed to be in the channel (see watch.rs).
        let live = self.inner.events.subscribe();
        let compacted = self.compacted_rev();
        if from_rev < compacted {
            return Err(StoreError::Compacted { requested: from_rev, compacted });
        }
        Ok(watch::stream(Arc::clone(&self.inner.shared), resource.to_owned(), from_rev, live))
    }

    /// Drops log entries up to the newest revision that is both older than the newest `min_keep`
    /// revisions and older than `min_age`. The `objects` table is never touched. Returns the new
    /// compacted revision. Blocks on the writer thread: call it from `spawn_blocking`.
    pub fn compact(&self, min_keep: u64, min_age: Duration) -> Result<u64, StoreError> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.inner.writer.send(Request::Compact { min_keep, min_age, reply })?;
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    /// The path of the SQLite database file.
    pub fn path(&self) -> &Path {
        self.inner.shared.readers.path()
    }
}

#[cfg(test)]
mod tests;
