//! The single writer thread: group commit of every write, then fan-out of the events.
//!
//! One thread owns the only write connection, so the revision counter needs no lock and SQLite
//! never reports "database is locked" to a writer. It takes every request queued while the
//! previous transaction was committing and applies them all in one transaction, each inside its
//! own SAVEPOINT so a request that fails its check (or its SQL) leaves the others untouched. One
//! fsync then makes the whole batch durable, and only after it do requests get their answers and
//! watchers their events.

use std::fs::{File, TryLockError};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::Value;
use tokio::sync::{broadcast, oneshot};

use super::codec::Codec;
use super::sqlite::{self, to_sql_rev};
use super::{Event, EventType, Key, Shared, StoreError, Stored};

/// Upper bound on one group commit, so one transaction (and the memory of its events) stays small.
const MAX_BATCH: usize = 1024;

pub(crate) enum Request {
    Create {
        key: Key,
        object: Value,
        reply: oneshot::Sender<Result<Stored, StoreError>>,
    },
    Update {
        key: Key,
        object: Value,
        expected_mod_rev: u64,
        reply: oneshot::Sender<Result<Stored, StoreError>>,
    },
    Delete {
        key: Key,
        expected_mod_rev: Option<u64>,
        reply: oneshot::Sender<Result<Stored, StoreError>>,
    },
    Compact {
        min_keep: u64,
        min_age: Duration,
        // A std channel: `compact` is synchronous and may be called outside any runtime.
        reply: mpsc::SyncSender<Result<u64, StoreError>>,
    },
}

enum Op {
    Create { key: Key, object: Value },
    Update { key: Key, object: Value, expected_mod_rev: u64 },
    Delete { key: Key, expected_mod_rev: Option<u64> },
    Compact { min_keep: u64, min_age: Duration },
}

enum Reply {
    Write(oneshot::Sender<Result<Stored, StoreError>>),
    Compact(mpsc::SyncSender<Result<u64, StoreError>>),
}

enum Applied {
    // Boxed: an event is far larger than a compaction result.
    Write { stored: Stored, event: Option<Box<Event>> },
    Compacted(u64),
}

impl Request {
    fn into_parts(self) -> (Op, Reply) {
        match self {
            Request::Create { key, object, reply } => {
                (Op::Create { key, object }, Reply::Write(reply))
            }
            Request::Update { key, object, expected_mod_rev, reply } => {
                (Op::Update { key, object, expected_mod_rev }, Reply::Write(reply))
            }
            Request::Delete { key, expected_mod_rev, reply } => {
                (Op::Delete { key, expected_mod_rev }, Reply::Write(reply))
            }
            Request::Compact { min_keep, min_age, reply } => {
                (Op::Compact { min_keep, min_age }, Reply::Compact(reply))
            }
        }
    }
}

impl Reply {
    fn send(self, result: Result<Applied, StoreError>) {
        // A caller that stopped waiting (dropped future) still had its write committed; there is
        // nobody left to tell, so a failed send is ignored.
        match self {
            Reply::Write(tx) => {
                let _ = tx.send(result.and_then(|applied| match applied {
                    Applied::Write { stored, .. } => Ok(stored),
                    Applied::Compacted(_) => Err(StoreError::Closed),
                }));
            }
            Reply::Compact(tx) => {
                let _ = tx.send(result.and_then(|applied| match applied {
                    Applied::Compacted(rev) => Ok(rev),
                    Applied::Write { .. } => Err(StoreError::Closed),
                }));
            }
        }
    }
}

/// The store's side of the writer: a queue into the thread, and the thread to join on drop.
pub(crate) struct WriterHandle {
    queue: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl WriterHandle {
    pub(crate) fn send(&self, request: Request) -> Result<(), StoreError> {
        let queue = self.queue.as_ref().ok_or(StoreError::Closed)?;
        queue.send(request).map_err(|_| StoreError::Closed)
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        // Closing the queue ends the thread after its current batch; joining releases the lock
        // file, so the same path can be reopened as soon as the last handle is gone.
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Opens the write connection and starts the writer thread. Sets `shared`'s revisions from the
/// file before returning.
pub(super) fn spawn(
    path: &Path,
    shared: Arc<Shared>,
    events: broadcast::Sender<Arc<Event>>,
) -> Result<WriterHandle, StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        crate::data_dir::create_private_dir(parent).map_err(|source| StoreError::Io {
            context: "creating the store directory",
            path: parent.to_path_buf(),
            source,
        })?;
    }
    // Owner-only before SQLite opens it (its -wal and -shm files take the database file's mode);
    // the journal files an earlier version left readable are fixed here too.
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let file = std::path::PathBuf::from(file);
        if suffix.is_empty() || file.exists() {
            crate::data_dir::create_private_file(&file).map_err(|source| StoreError::Io {
                context: "making the store file owner-only",
                path: file.clone(),
                source,
            })?;
        }
    }
    let lock = lock_file(path)?;
    let conn = sqlite::open_writer(path)?;
    migrate(&conn, &shared.codec)?;
    let rev = sqlite::snapshot_rev(&conn)?;
    let compacted = sqlite::compacted_rev(&conn)?;
    shared.current_rev.store(rev, Ordering::Release);
    shared.compacted_rev.store(compacted, Ordering::Release);

    let (queue, requests) = mpsc::channel();
    let writer = Writer { conn, rev, shared, events, _lock: lock };
    let thread = std::thread::Builder::new()
        .name("holdfast-store-writer".into())
        .spawn(move || writer.run(requests))
        .map_err(|source| StoreError::Io {
            context: "starting the store writer thread",
            path: path.to_path_buf(),
            source,
        })?;
    Ok(WriterHandle { queue: Some(queue), thread: Some(thread) })
}

/// An advisory lock on `<path>.lock`: two writers on one file would hand out the same revisions.
/// The OS drops it when the process dies, so a crash never leaves the store locked.
fn lock_file(path: &Path) -> Result<File, StoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = std::path::PathBuf::from(lock_path);
    let file = File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(
        |source| StoreError::Io {
            context: "opening the store lock file",
            path: lock_path.clone(),
            source,
        },
    )?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::Locked { path: path.to_path_buf() }),
        Err(TryLockError::Error(source)) => {
            Err(StoreError::Io { context: "locking the store lock file", path: lock_path, source })
        }
    }
}

struct Writer {
    conn: Connection,
    /// The last revision committed (or, inside `commit_batch`, assigned).
    rev: u64,
    shared: Arc<Shared>,
    events: broadcast::Sender<Arc<Event>>,
    _lock: File,
}

impl Writer {
    fn run(mut self, requests: mpsc::Receiver<Request>) {
        while let Ok(first) = requests.recv() {
            let mut batch = vec![first.into_parts()];
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(request) => batch.push(request.into_parts()),
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
    }

    fn commit_batch(&mut self, batch: Vec<(Op, Reply)>) {
        let start_rev = self.rev;
        let now = unix_millis();
        let codec = self.shared.codec.clone();
        let mut tx = match self.conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                let source = Arc::new(e);
                for (_, reply) in batch {
                    reply.send(Err(StoreError::Sqlite {
                        context: "starting a write transaction".into(),
                        source: Arc::clone(&source),
                    }));
                }
                return;
            }
        };

        let mut rev = start_rev;
        let mut compacted = None;
        let mut outcomes = Vec::with_capacity(batch.len());
        for (op, reply) in batch {
            let outcome = apply_isolated(&mut tx, &codec, op, rev, now);
            match &outcome {
                Ok(Applied::Write { event: Some(event), .. }) => rev = event.rev,
                Ok(Applied::Compacted(c)) => compacted = Some(*c),
                _ => {}
            }
            outcomes.push((reply, outcome));
        }

        if let Err(e) = tx.commit() {
            // Nothing of the batch is durable: the successful requests fail too, with the cause.
            let source = Arc::new(e);
            for (reply, outcome) in outcomes {
                reply.send(outcome.and_then(|_| {
                    Err(StoreError::Sqlite {
                        context: "committing a write transaction".into(),
                        source: Arc::clone(&source),
                    })
                }));
            }
            return;
        }

        self.rev = rev;
        self.shared.current_rev.store(rev, Ordering::Release);
        if let Some(c) = compacted {
            self.shared.compacted_rev.store(c, Ordering::Release);
        }
        // Publish in revision order (the batch assigned them in order) before answering, so a
        // caller that saw its write acknowledged can rely on watchers having been offered it.
        let mut answers = Vec::with_capacity(outcomes.len());
        for (reply, outcome) in outcomes {
            let outcome = outcome.map(|applied| match applied {
                Applied::Write { stored, event } => {
                    if let Some(event) = event {
                        // Err only means nobody is watching right now.
                        let _ = self.events.send(Arc::from(event));
                    }
                    Applied::Write { stored, event: None }
                }
                other => other,
            });
            answers.push((reply, outcome));
        }
        for (reply, outcome) in answers {
            reply.send(outcome);
        }
    }
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Applies one request inside its own SAVEPOINT: on any error its partial writes are rolled back
/// and the rest of the batch goes on.
fn apply_isolated(
    tx: &mut Transaction<'_>,
    codec: &Codec,
    op: Op,
    rev: u64,
    now: i64,
) -> Result<Applied, StoreError> {
    let savepoint = tx.savepoint().map_err(StoreError::sqlite("starting a savepoint"))?;
    let applied = apply(&savepoint, codec, op, rev, now)?;
    savepoint.commit().map_err(StoreError::sqlite("releasing a savepoint"))?;
    Ok(applied)
}

/// Sets `metadata.resourceVersion` to `rev`, creating `metadata` if it is missing.
fn set_resource_version(key: &Key, object: &mut Value, rev: u64) -> Result<(), StoreError> {
    let not_object = || StoreError::NotAnObject { key: key.clone() };
    let metadata = object
        .as_object_mut()
        .ok_or_else(not_object)?
        .entry("metadata")
        .or_insert_with(|| Value::Object(serde_json::Map::new()))
        .as_object_mut()
        .ok_or_else(not_object)?;
    metadata.insert("resourceVersion".into(), Value::String(rev.to_string()));
    Ok(())
}

fn to_json(key: &Key, object: &Value) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(object)
        .map_err(|source| StoreError::Json { context: format!("new state of {key}"), source })
}

/// `rev` is the last assigned revision; a write takes `rev + 1`.
fn apply(
    conn: &Connection,
    codec: &Codec,
    op: Op,
    rev: u64,
    now: i64,
) -> Result<Applied, StoreError> {
    match op {
        Op::Create { key, mut object } => {
            if sqlite::get_raw(conn, codec, &key)?.is_some() {
                return Err(StoreError::AlreadyExists(key));
            }
            let new_rev = rev + 1;
            set_resource_version(&key, &mut object, new_rev)?;
            let value = codec.seal(&key, to_json(&key, &object)?)?;
            conn.prepare_cached(
                "INSERT INTO objects (resource, namespace, name, mod_rev, create_rev, value) \
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    key.resource,
                    key.namespace,
                    key.name,
                    to_sql_rev(new_rev),
                    value
                ])
            })
            .map_err(StoreError::sqlite(format!("creating {key}")))?;
            append_log(conn, &key, new_rev, EventType::Added, &value, None, now)?;
            let stored = Stored {
                key: key.clone(),
                object: object.clone(),
                mod_rev: new_rev,
                create_rev: new_rev,
            };
            let event = Event { rev: new_rev, kind: EventType::Added, key, object, prev: None };
            Ok(Applied::Write { stored, event: Some(Box::new(event)) })
        }
        Op::Update { key, mut object, expected_mod_rev } => {
            let Some((mod_rev, create_rev, prev_raw)) = sqlite::get_raw(conn, codec, &key)? else {
                return Err(StoreError::NotFound(key));
            };
            if mod_rev != expected_mod_rev {
                return Err(StoreError::Conflict {
                    key,
                    expected: expected_mod_rev,
                    actual: mod_rev,
                });
            }
            let prev = sqlite::parse(&prev_raw, || format!("stored {key}"))?;
            // No-op detection before a revision is spent (the Kubernetes API keeps the RV of an
            // unchanged object).
            set_resource_version(&key, &mut object, mod_rev)?;
            if object == prev {
                let stored = Stored { key, object, mod_rev, create_rev };
                return Ok(Applied::Write { stored, event: None });
            }
            let new_rev = rev + 1;
            set_resource_version(&key, &mut object, new_rev)?;
            let value = codec.seal(&key, to_json(&key, &object)?)?;
            conn.prepare_cached(
                "UPDATE objects SET mod_rev = ?4, value = ?5 \
                 WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
            )
            .and_then(|mut s| {
                s.execute(params![
                    key.resource,
                    key.namespace,
                    key.name,
                    to_sql_rev(new_rev),
                    value
                ])
            })
            .map_err(StoreError::sqlite(format!("updating {key}")))?;
            let prev_value = codec.seal(&key, prev_raw)?;
            append_log(conn, &key, new_rev, EventType::Modified, &value, Some(&prev_value), now)?;
            let stored =
                Stored { key: key.clone(), object: object.clone(), mod_rev: new_rev, create_rev };
            let event =
                Event { rev: new_rev, kind: EventType::Modified, key, object, prev: Some(prev) };
            Ok(Applied::Write { stored, event: Some(Box::new(event)) })
        }
        Op::Delete { key, expected_mod_rev } => {
            let Some((mod_rev, create_rev, prev_raw)) = sqlite::get_raw(conn, codec, &key)? else {
                return Err(StoreError::NotFound(key));
            };
            if let Some(expected) = expected_mod_rev.filter(|&e| e != mod_rev) {
                return Err(StoreError::Conflict { key, expected, actual: mod_rev });
            }
            let prev = sqlite::parse(&prev_raw, || format!("stored {key}"))?;
            let new_rev = rev + 1;
            let mut last = prev.clone();
            set_resource_version(&key, &mut last, new_rev)?;
            let value = codec.seal(&key, to_json(&key, &last)?)?;
            conn.prepare_cached(
                "DELETE FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
            )
            .and_then(|mut s| s.execute(params![key.resource, key.namespace, key.name]))
            .map_err(StoreError::sqlite(format!("deleting {key}")))?;
            let prev_value = codec.seal(&key, prev_raw)?;
            append_log(conn, &key, new_rev, EventType::Deleted, &value, Some(&prev_value), now)?;
            let stored =
                Stored { key: key.clone(), object: last.clone(), mod_rev: new_rev, create_rev };
            let event = Event {
                rev: new_rev,
                kind: EventType::Deleted,
                key,
                object: last,
                prev: Some(prev),
            };
            Ok(Applied::Write { stored, event: Some(Box::new(event)) })
        }
        Op::Compact { min_keep, min_age } => compact(conn, rev, min_keep, min_age, now),
    }
}

fn append_log(
    conn: &Connection,
    key: &Key,
    rev: u64,
    kind: EventType,
    value: &[u8],
    prev: Option<&[u8]>,
    now: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO log (rev, resource, namespace, name, type, value, prev, ts) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut s| {
        s.execute(params![
            to_sql_rev(rev),
            key.resource,
            key.namespace,
            key.name,
            kind.code(),
            value,
            prev,
            now
        ])
    })
    .map(drop)
    .map_err(StoreError::sqlite(format!("appending revision {rev} to the log")))
}

/// Deletes the log prefix that is both outside the newest `min_keep` revisions and older than
/// `min_age`. Only a prefix is ever deleted, so the log stays contiguous above `compacted_rev`
/// even if the wall clock went backwards.
fn compact(
    conn: &Connection,
    rev: u64,
    min_keep: u64,
    min_age: Duration,
    now: i64,
) -> Result<Applied, StoreError> {
    let what = || "compacting the log".to_owned();
    let old = sqlite::compacted_rev(conn)?;
    let cutoff = now.saturating_sub(i64::try_from(min_age.as_millis()).unwrap_or(i64::MAX));
    let first_young: Option<i64> = conn
        .prepare_cached("SELECT rev FROM log WHERE ts > ?1 ORDER BY rev LIMIT 1")
        .and_then(|mut s| s.query_row([cutoff], |r| r.get(0)).optional())
        .map_err(StoreError::sqlite(what()))?;
    // The newest revision older than `min_age` that has a log row: compaction never moves past
    // revisions it could not see the age of (e.g. the store's initial revision 1).
    let by_age = match first_young {
        None => rev,
        Some(young) => conn
            .prepare_cached("SELECT max(rev) FROM log WHERE rev < ?1")
            .and_then(|mut s| s.query_row([young], |r| r.get::<_, Option<i64>>(0)))
            .map_err(StoreError::sqlite(what()))?
            .map_or(old, sqlite::from_sql_rev),
    };
    let target = rev.saturating_sub(min_keep).min(by_age);
    if target <= old {
        return Ok(Applied::Compacted(old));
    }
    conn.prepare_cached("DELETE FROM log WHERE rev <= ?1")
        .and_then(|mut s| s.execute([to_sql_rev(target)]))
        .map_err(StoreError::sqlite(what()))?;
    conn.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'compacted_rev'")
        .and_then(|mut s| s.execute([to_sql_rev(target)]))
        .map_err(StoreError::sqlite(what()))?;
    Ok(Applied::Compacted(target))
}

/// Encrypts, with the current key, every stored value of the encrypted resource that is in
/// plaintext or under an older key: the current rows and the log (values and previous states).
/// When anything changed, the file is vacuumed and the WAL truncated, so the plaintext is in no
/// free page and no WAL frame afterwards.
fn migrate(conn: &Connection, codec: &Codec) -> Result<(), StoreError> {
    let Some(resource) = codec.encrypted_resource() else { return Ok(()) };
    let Some(prefix) = codec.encryption_of(resource).map(|e| e.current_prefix()) else {
        return Ok(());
    };
    let what = || format!("encrypting the stored {resource}");
    let stale = "substr(CAST(v AS BLOB), 1, length(CAST(?2 AS BLOB))) != CAST(?2 AS BLOB)";
    let mut changed = 0usize;
    let tx = conn.unchecked_transaction().map_err(StoreError::sqlite(what()))?;
    for (table, id, columns) in
        [("objects", "rowid", &["value"][..]), ("log", "rev", &["value", "prev"][..])]
    {
        for column in columns {
            let select = format!(
                "SELECT {id}, namespace, name, {column} AS v FROM {table} \
                 WHERE resource = ?1 AND {column} IS NOT NULL AND {stale}"
            );
            let rows: Vec<(i64, String, String, Vec<u8>)> = {
                let mut stmt = tx.prepare(&select).map_err(StoreError::sqlite(what()))?;
                stmt.query_map(params![resource, prefix], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .and_then(Iterator::collect)
                .map_err(StoreError::sqlite(what()))?
            };
            let update = format!("UPDATE {table} SET {column} = ?1 WHERE {id} = ?2");
            for (row, namespace, name, stored) in rows {
                let key = Key::new(resource, namespace, name);
                let sealed = codec.seal(&key, codec.open(&key, stored)?)?;
                tx.execute(&update, params![sealed, row]).map_err(StoreError::sqlite(what()))?;
                changed += 1;
            }
        }
    }
    tx.commit().map_err(StoreError::sqlite(what()))?;
    if changed > 0 {
        conn.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(StoreError::sqlite("vacuuming after encrypting"))?;
        tracing::info!(values = changed, "encrypted the stored Secrets at rest");
    }
    Ok(())
}
