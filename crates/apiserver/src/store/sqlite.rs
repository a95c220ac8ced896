//! SQLite plumbing: the schema, connection set-up, and the queries both sides share.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;

use super::codec::Codec;
use super::{Event, EventType, Key, RawObject, StoreError, Stored};

/// Bumped when the layout changes incompatibly; a newer file is refused rather than misread.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS objects (
    resource   TEXT    NOT NULL,
    namespace  TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    mod_rev    INTEGER NOT NULL,
    create_rev INTEGER NOT NULL,
    value      BLOB    NOT NULL,
    PRIMARY KEY (resource, namespace, name)
);
-- rev is the global revision: one row per write, appended in the write's transaction.
-- ts (unix milliseconds) lets compaction keep a time window.
CREATE TABLE IF NOT EXISTS log (
    rev       INTEGER PRIMARY KEY,
    resource  TEXT    NOT NULL,
    namespace TEXT    NOT NULL,
    name      TEXT    NOT NULL,
    type      INTEGER NOT NULL,
    value     BLOB    NOT NULL,
    prev      BLOB,
    ts        INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS log_by_resource ON log (resource, rev);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('compacted_rev', 0);
";

/// The highest revision a snapshot has seen. The log may have been compacted away entirely, so
/// `compacted_rev` is a lower bound too; a fresh store reports 1, never 0, because clients treat
/// resourceVersion "0" as "any version".
const SNAPSHOT_REV: &str = "SELECT max(coalesce((SELECT max(rev) FROM log), 0), \
     (SELECT value FROM meta WHERE key = 'compacted_rev'), 1)";

/// Reader connections kept idle for reuse; more may be open at once under load.
const MAX_IDLE_READERS: usize = 4;

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens the writer connection: creates the file and schema, WAL mode, `synchronous=FULL` (a
/// commit returns only after the WAL is fsync'd, so an acknowledged write survives a crash).
pub(super) fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let what = || format!("opening {}", path.display());
    let conn = Connection::open(path).map_err(StoreError::sqlite(what()))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(StoreError::sqlite(what()))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(StoreError::sqlite(what()))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::sqlite(what())(rusqlite::Error::InvalidParameterName(format!(
            "journal_mode is {mode}, WAL is required"
        ))));
    }
    conn.pragma_update(None, "synchronous", "FULL").map_err(StoreError::sqlite(what()))?;
    conn.execute_batch(SCHEMA)
        .map_err(StoreError::sqlite(format!("creating the schema in {}", path.display())))?;
    let version: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
        .optional()
        .map_err(StoreError::sqlite("reading the schema version"))?;
    match version {
        None => {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                [SCHEMA_VERSION],
            )
            .map_err(StoreError::sqlite("writing the schema version"))?;
        }
        Some(v) if v == SCHEMA_VERSION => {}
        Some(v) => {
            return Err(StoreError::UnsupportedSchema { path: path.to_path_buf(), version: v });
        }
    }
    Ok(conn)
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let what = || format!("opening a reader on {}", path.display());
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(StoreError::sqlite(what()))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(StoreError::sqlite(what()))?;
    Ok(conn)
}

/// A small pool of read-only connections. WAL lets them read a consistent snapshot while the
/// writer commits.
pub(super) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    pub(super) fn new(path: PathBuf) -> ReadPool {
        ReadPool { path, idle: Mutex::new(Vec::new()) }
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // The pool holds only idle connections, so a panic while it was locked cannot have left it
        // inconsistent: recovering from poisoning is safe.
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        let out = f(&mut conn);
        // A connection an error left inside a transaction would pin an old snapshot: drop it.
        if conn.is_autocommit() {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
        }
        out
    }
}

pub(super) fn to_sql_rev(rev: u64) -> i64 {
    // Revisions come from a counter that starts at 1; they cannot reach i64::MAX.
    i64::try_from(rev).unwrap_or(i64::MAX)
}

pub(super) fn from_sql_rev(rev: i64) -> u64 {
    u64::try_from(rev).unwrap_or(0)
}

pub(super) fn snapshot_rev(conn: &Connection) -> Result<u64, StoreError> {
    conn.prepare_cached(SNAPSHOT_REV)
        .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
        .map(from_sql_rev)
        .map_err(StoreError::sqlite("reading the current revision"))
}

pub(super) fn compacted_rev(conn: &Connection) -> Result<u64, StoreError> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = 'compacted_rev'")
        .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
        .map(from_sql_rev)
        .map_err(StoreError::sqlite("reading the compacted revision"))
}

pub(super) fn parse(bytes: &[u8], what: impl FnOnce() -> String) -> Result<Value, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Json { context: what(), source })
}

/// The current row of `key`: (mod_rev, create_rev, raw JSON).
pub(super) fn get_raw(
    conn: &Connection,
    codec: &Codec,
    key: &Key,
) -> Result<Option<(u64, u64, Vec<u8>)>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT mod_rev, create_rev, value FROM objects \
         WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
        )
        .and_then(|mut s| {
            s.query_row(params![key.resource, key.namespace, key.name], |r| {
                Ok((from_sql_rev(r.get(0)?), from_sql_rev(r.get(1)?), r.get::<_, Vec<u8>>(2)?))
            })
            .optional()
        })
        .map_err(StoreError::sqlite(format!("reading {key}")))?;
    row.map(|(m, c, raw)| Ok((m, c, codec.open(key, raw)?))).transpose()
}

pub(super) fn get(
    conn: &Connection,
    codec: &Codec,
    key: &Key,
) -> Result<Option<Stored>, StoreError> {
    let Some((mod_rev, create_rev, raw)) = get_raw(conn, codec, key)? else {
        return Ok(None);
    };
    let object = parse(&raw, || format!("stored {key}"))?;
    Ok(Some(Stored { key: key.clone(), object, mod_rev, create_rev }))
}

/// One page of unparsed rows, the revision they are the state at, and how many rows follow.
pub(super) type RawPage = (Vec<RawObject>, u64, u64);

/// Objects of `resource` as of revision `at` (the latest when `None`), raw.
///
/// Past states come from the log: the state at `at` of an object written after `at` is the
/// `prev` of its first log entry after `at` (absent if that entry created it), so any revision
/// the log still covers (`at >= compacted_rev`) can be read exactly, in the same snapshot as the
/// current rows.
pub(super) fn list_raw(
    conn: &mut Connection,
    codec: &Codec,
    resource: &str,
    namespace: Option<&str>,
    after: Option<(&str, &str)>,
    limit: Option<usize>,
    at: Option<u64>,
) -> Result<RawPage, StoreError> {
    let what = || format!("listing {resource}");
    // One read transaction: the rows and the revision come from the same WAL snapshot.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Deferred)
        .map_err(StoreError::sqlite(what()))?;
    let current = snapshot_rev(&tx)?;
    let mut filter = String::from("resource = ?1");
    if namespace.is_some() {
        filter.push_str(" AND namespace = ?2");
    }
    // ("", "") sorts before every real key: names are never empty.
    let (after_ns, after_name) = after.unwrap_or(("", ""));
    let ns_param = namespace.unwrap_or("");

    // Keys written after `at`, with their state at `at` (None: did not exist yet).
    let mut past: BTreeMap<(String, String), Option<Vec<u8>>> = BTreeMap::new();
    let rev = match at {
        Some(at) if at > current => {
            return Err(StoreError::FutureRevision { requested: at, current });
        }
        Some(at) if at < current => {
            let compacted = compacted_rev(&tx)?;
            if at < compacted {
                return Err(StoreError::Compacted { requested: at, compacted });
            }
            let sql = format!(
                "SELECT namespace, name, type, prev FROM log \
                 WHERE {filter} AND rev > ?3 AND (namespace, name) > (?4, ?5) ORDER BY rev"
            );
            let mut stmt = tx.prepare_cached(&sql).map_err(StoreError::sqlite(what()))?;
            let mut rows = stmt
                .query(params![resource, ns_param, to_sql_rev(at), after_ns, after_name])
                .map_err(StoreError::sqlite(what()))?;
            while let Some(row) = rows.next().map_err(StoreError::sqlite(what()))? {
                let read = || -> rusqlite::Result<_> {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, Option<Vec<u8>>>(3)?,
                    ))
                };
                let (ns, name, code, prev) = read().map_err(StoreError::sqlite(what()))?;
                // Only the first entry after `at` tells the state at `at`.
                past.entry((ns, name))
                    .or_insert_with(|| if code == EventType::Added.code() { None } else { prev });
            }
            at
        }
        _ => current,
    };

    let page_sql = format!(
        "SELECT namespace, name, value FROM objects \
         WHERE {filter} AND (namespace, name) > (?3, ?4) ORDER BY namespace, name LIMIT ?5"
    );
    // With past states to merge in, the page boundary is only known after the merge.
    let sql_limit = match limit {
        Some(l) if past.is_empty() => i64::try_from(l).unwrap_or(i64::MAX),
        _ => -1,
    };
    let mut items = Vec::new();
    {
        let mut stmt = tx.prepare_cached(&page_sql).map_err(StoreError::sqlite(what()))?;
        let mut rows = stmt
            .query(params![resource, ns_param, after_ns, after_name, sql_limit])
            .map_err(StoreError::sqlite(what()))?;
        while let Some(row) = rows.next().map_err(StoreError::sqlite(what()))? {
            let read = || -> rusqlite::Result<_> {
                Ok(RawObject {
                    namespace: row.get::<_, String>(0)?,
                    name: row.get::<_, String>(1)?,
                    raw: row.get::<_, Vec<u8>>(2)?,
                })
            };
            items.push(read().map_err(StoreError::sqlite(what()))?);
        }
    }

    let remaining = if past.is_empty() {
        match (limit, items.last()) {
            (Some(limit), Some(last)) if items.len() >= limit => {
                let count_sql = format!(
                    "SELECT count(*) FROM objects WHERE {filter} AND (namespace, name) > (?3, ?4)"
                );
                tx.prepare_cached(&count_sql)
                    .and_then(|mut s| {
                        s.query_row(params![resource, ns_param, last.namespace, last.name], |r| {
                            r.get::<_, i64>(0)
                        })
                    })
                    .map(from_sql_rev)
                    .map_err(StoreError::sqlite(what()))?
            }
            _ => 0,
        }
    } else {
        let mut merged: BTreeMap<(String, String), Vec<u8>> =
            items.drain(..).map(|o| ((o.namespace, o.name), o.raw)).collect();
        for (key, state) in past {
            match state {
                Some(raw) => merged.insert(key, raw),
                None => merged.remove(&key),
            };
        }
        let total = merged.len();
        let take = limit.unwrap_or(total).min(total);
        items = merged
            .into_iter()
            .take(take)
            .map(|((namespace, name), raw)| RawObject { namespace, name, raw })
            .collect();
        (total - take) as u64
    };
    tx.finish().map_err(StoreError::sqlite(what()))?;
    let items = items
        .into_iter()
        .map(|o| {
            let key = Key::new(resource, o.namespace.clone(), o.name.clone());
            Ok(RawObject { raw: codec.open(&key, o.raw)?, ..o })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok((items, rev, remaining))
}

pub(super) fn list(
    conn: &mut Connection,
    codec: &Codec,
    resource: &str,
    namespace: Option<&str>,
    after: Option<(&str, &str)>,
    limit: Option<usize>,
) -> Result<(Vec<Stored>, u64, u64), StoreError> {
    let what = || format!("listing {resource}");
    // One read transaction: the rows and the revision come from the same WAL snapshot.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Deferred)
        .map_err(StoreError::sqlite(what()))?;
    let rev = snapshot_rev(&tx)?;

    let mut filter = String::from("resource = ?1");
    if namespace.is_some() {
        filter.push_str(" AND namespace = ?2");
    }
    let page_sql = format!(
        "SELECT namespace, name, mod_rev, create_rev, value FROM objects \
         WHERE {filter} AND (namespace, name) > (?3, ?4) ORDER BY namespace, name LIMIT ?5"
    );
    // ("", "") sorts before every real key: names are never empty.
    let (after_ns, after_name) = after.unwrap_or(("", ""));
    let sql_limit = limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
    let mut items = Vec::new();
    {
        let mut stmt = tx.prepare_cached(&page_sql).map_err(StoreError::sqlite(what()))?;
        let mut rows = stmt
            .query(params![resource, namespace.unwrap_or(""), after_ns, after_name, sql_limit])
            .map_err(StoreError::sqlite(what()))?;
        while let Some(row) = rows.next().map_err(StoreError::sqlite(what()))? {
            let read = || -> rusqlite::Result<_> {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    from_sql_rev(row.get(2)?),
                    from_sql_rev(row.get(3)?),
                    row.get::<_, Vec<u8>>(4)?,
                ))
            };
            let (ns, name, mod_rev, create_rev, raw) =
                read().map_err(StoreError::sqlite(what()))?;
            let key = Key { resource: resource.to_owned(), namespace: ns, name };
            let object = parse(&codec.open(&key, raw)?, || format!("stored {key}"))?;
            items.push(Stored { key, object, mod_rev, create_rev });
        }
    }

    let remaining = match (limit, items.last()) {
        (Some(limit), Some(last)) if items.len() >= limit => {
            let count_sql = format!(
                "SELECT count(*) FROM objects WHERE {filter} AND (namespace, name) > (?3, ?4)"
            );
            tx.prepare_cached(&count_sql)
                .and_then(|mut s| {
                    s.query_row(
                        params![
                            resource,
                            namespace.unwrap_or(""),
                            last.key.namespace,
                            last.key.name
                        ],
                        |r| r.get::<_, i64>(0),
                    )
                })
                .map(from_sql_rev)
                .map_err(StoreError::sqlite(what()))?
        }
        _ => 0,
    };
    tx.finish().map_err(StoreError::sqlite(what()))?;
    Ok((items, rev, remaining))
}

/// The number of objects of every resource that has any.
pub(super) fn count_by_resource(conn: &Connection) -> Result<Vec<(String, u64)>, StoreError> {
    let what = || "counting objects".to_string();
    let mut stmt = conn
        .prepare_cached("SELECT resource, count(*) FROM objects GROUP BY resource")
        .map_err(StoreError::sqlite(what()))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(StoreError::sqlite(what()))?;
    rows.map(|row| {
        row.map(|(resource, count)| (resource, u64::try_from(count).unwrap_or_default()))
            .map_err(StoreError::sqlite(what()))
    })
    .collect()
}

/// Keys of the objects (in `namespace`, if given) whose stored JSON contains `needle`, searched
/// inside SQLite so no row leaves it unless it matches.
pub(super) fn keys_containing(
    conn: &Connection,
    codec: &Codec,
    namespace: Option<&str>,
    needle: &str,
) -> Result<Vec<Key>, StoreError> {
    let what = || format!("searching objects for {needle:?}");
    let sql = if namespace.is_some() {
        "SELECT resource, namespace, name FROM objects \
         WHERE namespace = ?1 AND instr(value, CAST(?2 AS BLOB)) > 0"
    } else {
        // ?1 is bound but unused: both queries take the same parameters.
        "SELECT resource, namespace, name FROM objects WHERE instr(value, CAST(?2 AS BLOB)) > 0"
    };
    let mut stmt = conn.prepare_cached(sql).map_err(StoreError::sqlite(what()))?;
    let rows = stmt
        .query_map(params![namespace.unwrap_or(""), needle], |r| {
            Ok(Key { resource: r.get(0)?, namespace: r.get(1)?, name: r.get(2)? })
        })
        .map_err(StoreError::sqlite(what()))?;
    let mut keys = rows.collect::<Result<Vec<_>, _>>().map_err(StoreError::sqlite(what()))?;
    // Encrypted values hide the needle from SQLite: look inside them here.
    if let Some(resource) = codec.encrypted_resource() {
        let mut stmt = conn
            .prepare_cached(
                "SELECT namespace, name, value FROM objects \
                 WHERE resource = ?1 AND (?2 = '' OR namespace = ?2)",
            )
            .map_err(StoreError::sqlite(what()))?;
        let rows = stmt
            .query_map(params![resource, namespace.unwrap_or("")], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Vec<u8>>(2)?))
            })
            .map_err(StoreError::sqlite(what()))?;
        for row in rows {
            let (ns, name, value) = row.map_err(StoreError::sqlite(what()))?;
            let key = Key::new(resource, ns, name);
            let plain = codec.open(&key, value)?;
            if plain.windows(needle.len()).any(|w| w == needle.as_bytes()) && !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    Ok(keys)
}

/// Up to `limit` log entries of `resource` with `rev > after`, and the compacted revision, read
/// in one snapshot (so a compaction cannot slip between the check and the rows).
pub(super) fn log_page(
    conn: &mut Connection,
    codec: &Codec,
    resource: &str,
    after: u64,
    limit: usize,
) -> Result<(Vec<Event>, u64), StoreError> {
    let what = || format!("replaying the log of {resource}");
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Deferred)
        .map_err(StoreError::sqlite(what()))?;
    let compacted = compacted_rev(&tx)?;
    let mut events = Vec::new();
    {
        let mut stmt = tx
            .prepare_cached(
                "SELECT rev, namespace, name, type, value, prev FROM log \
                 WHERE resource = ?1 AND rev > ?2 ORDER BY rev LIMIT ?3",
            )
            .map_err(StoreError::sqlite(what()))?;
        let sql_limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = stmt
            .query(params![resource, to_sql_rev(after), sql_limit])
            .map_err(StoreError::sqlite(what()))?;
        while let Some(row) = rows.next().map_err(StoreError::sqlite(what()))? {
            let read = || -> rusqlite::Result<_> {
                Ok((
                    from_sql_rev(row.get(0)?),
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, Vec<u8>>(4)?,
                    row.get::<_, Option<Vec<u8>>>(5)?,
                ))
            };
            let (rev, namespace, name, code, raw, prev_raw) =
                read().map_err(StoreError::sqlite(what()))?;
            let key = Key { resource: resource.to_owned(), namespace, name };
            let kind = EventType::from_code(code).ok_or_else(|| {
                StoreError::sqlite(what())(rusqlite::Error::IntegralValueOutOfRange(3, code))
            })?;
            let object = parse(&codec.open(&key, raw)?, || format!("log entry {rev} of {key}"))?;
            let prev = prev_raw
                .map(|p| {
                    parse(&codec.open(&key, p)?, || {
                        format!("previous state in log entry {rev} of {key}")
                    })
                })
                .transpose()?;
            events.push(Event { rev, kind, key, object, prev });
        }
    }
    tx.finish().map_err(StoreError::sqlite(what()))?;
    Ok((events, compacted))
}
