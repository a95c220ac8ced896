//! Base backups: `pg_basebackup`'s tar stream stored straight into the repository as the data
//! directory's tree, with the facts a restore needs recorded as the snapshot's labels.
//!
//! `pg_basebackup -Ft -D - -X fetch` sends one tar holding the data directory, the WAL from the
//! backup's start to its end (so the backup restores on its own, archive or not; with
//! [`WalSource::Archive`] that WAL is left to the repository's WAL archive instead) and the
//! `backup_manifest` that `pg_verifybackup` checks the restored copy against. Relation files
//! (tables and indexes, rewritten in place a page at a time) are cut into page-aligned pieces,
//! so a day that rewrites a few scattered pages stores those pages again, not the files around
//! them; everything else goes through the repository's content-defined chunker.

use std::collections::BTreeMap;
use std::process::Stdio;

use holdfast_repository::Repository;
use holdfast_repository::backup::{BackupOptions, BackupResult, Chunking, ParentChoice, store_tar};
use holdfast_repository::lock::LockKind;
use holdfast_repository::progress::{CancelToken, ProgressFn};
use serde::{Deserialize, Serialize};

use crate::lsn::{Lsn, check_segment_size};
use crate::server::Connection;
use crate::tools::{StderrTail, Tools, failure};
use crate::{Error, control};

/// The tag every base backup snapshot carries.
pub const TAG: &str = "postgres-base";
/// Pages per piece of a relation file unless asked otherwise. One page per piece stores the
/// fewest bytes of a day's changed pages, but each piece is compressed on its own, and pages
/// compress better two at a time: on pgbench data a week of daily fulls took 218 MiB at two
/// pages per piece, 257 at one, 238 at four and 331 at eight (docs/benchmarks.md).
pub const DEFAULT_PAGES_PER_CHUNK: usize = 2;

/// The snapshot path of a base backup (what `holdfast repo snapshots` shows).
pub const PATH: &str = "pgdata";
const LABEL_PREFIX: &str = "postgres.";

/// Members read whole from the stream for the facts they hold.
const BACKUP_LABEL: &str = "backup_label";
const MANIFEST: &str = "backup_manifest";
const PG_CONTROL: &str = "global/pg_control";

/// How to take a base backup.
#[derive(Clone, Default)]
pub struct Options {
    /// Where the server is.
    pub connection: Connection,
    /// PostgreSQL's programs.
    pub tools: Tools,
    /// Tags added to the snapshot's own.
    pub tags: Vec<String>,
    /// Pages per chunk of relation files; 0 means [`DEFAULT_PAGES_PER_CHUNK`].
    pub pages_per_chunk: usize,
    /// Progress callback (bytes read from the stream).
    pub progress: Option<ProgressFn>,
    /// Cancellation.
    pub cancel: CancelToken,
    /// Where the WAL that makes the backup consistent is kept.
    pub wal: WalSource,
}

/// Where a base backup's own WAL (from its start to the point it is consistent) is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WalSource {
    /// Inside the backup (`pg_basebackup -X fetch`): it restores on its own, archive or not.
    #[default]
    Inside,
    /// In this repository's WAL archive, which the cluster fills (`archive_command` running
    /// `holdfast pg wal-push`, or `holdfast pg wal-stream`), as pgBackRest keeps it by default:
    /// the WAL is stored once. The backup is saved only once the archive holds every segment
    /// from its start to its end, waiting up to `timeout` for them.
    Archive { timeout: std::time::Duration },
}

/// What a base backup is, as recorded in its snapshot's labels (`postgres.*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseBackup {
    /// The cluster's system identifier.
    pub system_identifier: u64,
    /// `server_version` (`15.18`).
    pub version: String,
    /// `server_version_num` (150018).
    pub version_num: u32,
    /// The timeline the backup ended on.
    pub timeline: u32,
    /// Where replay of this backup starts (`START WAL LOCATION`).
    pub start_lsn: Lsn,
    /// Where it is consistent: a restore can stop no earlier than this.
    pub finish_lsn: Lsn,
    /// When the backup started (server clock).
    pub start_time: jiff::Timestamp,
    /// When it finished (server clock, after the last byte arrived).
    pub finish_time: jiff::Timestamp,
    /// WAL segment size in bytes.
    pub wal_segment_size: u64,
    /// Page size in bytes.
    pub block_size: u64,
    /// Its own WAL is in the repository's WAL archive, not inside it ([`WalSource::Archive`]):
    /// a restore replays from `start_lsn` out of the archive.
    #[serde(default)]
    pub wal_in_archive: bool,
}

impl BaseBackup {
    /// The snapshot labels that record it.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            m.insert(format!("{LABEL_PREFIX}{k}"), v);
        };
        put("system-identifier", self.system_identifier.to_string());
        put("version", self.version.clone());
        put("version-num", self.version_num.to_string());
        put("timeline", self.timeline.to_string());
        put("start-lsn", self.start_lsn.to_string());
        put("finish-lsn", self.finish_lsn.to_string());
        put("start-time", self.start_time.to_string());
        put("finish-time", self.finish_time.to_string());
        put("wal-segment-size", self.wal_segment_size.to_string());
        put("block-size", self.block_size.to_string());
        if self.wal_in_archive {
            put("wal", "archive".into());
        }
        m
    }

    /// Reads it back from a snapshot's labels.
    ///
    /// # Errors
    /// A label is missing or does not parse.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Result<Self, Error> {
        fn get<T: std::str::FromStr>(
            labels: &BTreeMap<String, String>,
            key: &str,
        ) -> Result<T, Error> {
            labels.get(&format!("{LABEL_PREFIX}{key}")).and_then(|v| v.parse().ok()).ok_or_else(
                || Error::Invalid(format!("base backup label {LABEL_PREFIX}{key} missing or bad")),
            )
        }
        Ok(BaseBackup {
            system_identifier: get(labels, "system-identifier")?,
            version: get(labels, "version")?,
            version_num: get(labels, "version-num")?,
            timeline: get(labels, "timeline")?,
            start_lsn: get(labels, "start-lsn")?,
            finish_lsn: get(labels, "finish-lsn")?,
            start_time: get(labels, "start-time")?,
            finish_time: get(labels, "finish-time")?,
            wal_segment_size: get(labels, "wal-segment-size")?,
            block_size: get(labels, "block-size")?,
            // Absent in backups with their WAL inside, and in those taken before it existed.
            wal_in_archive: labels
                .get(&format!("{LABEL_PREFIX}wal"))
                .is_some_and(|v| v == "archive"),
        })
    }
}

/// Whether `path` (relative to the data directory) is a relation file: a table's or index's
/// data, free space map, visibility map or init fork, or a 1 GiB segment of one
/// (`base/16384/16397`, `base/1/1259_fsm`, `global/1262.1`, `pg_tblspc/…/16384/16400_vm`).
pub fn is_relation_file(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let in_relation_dir = match parts.as_slice() {
        ["global", _] => true,
        ["base", db, _] => db.bytes().all(|b| b.is_ascii_digit()),
        ["pg_tblspc", _, _, db, _] => db.bytes().all(|b| b.is_ascii_digit()),
        _ => false,
    };
    let Some(name) = parts.last() else { return false };
    let (stem, segment) = name.split_once('.').unwrap_or((name, "0"));
    let stem = ["_fsm", "_vm", "_init"].iter().find_map(|s| stem.strip_suffix(s)).unwrap_or(stem);
    in_relation_dir
        && !stem.is_empty()
        && stem.bytes().all(|b| b.is_ascii_digit())
        && segment.bytes().all(|b| b.is_ascii_digit())
        && !segment.is_empty()
}

/// The fields of `backup_label` a backup records.
pub(crate) fn parse_label(text: &str) -> Result<(Lsn, u32, Option<jiff::Timestamp>), Error> {
    let field =
        |key: &str| text.lines().find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()));
    let bad = |what: &str| Error::Invalid(format!("backup_label: {what}"));
    let start = field("START WAL LOCATION:")
        .and_then(|v| v.split_whitespace().next().map(str::to_string))
        .ok_or_else(|| bad("no START WAL LOCATION"))?
        .parse()?;
    let timeline = field("START TIMELINE:")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("no START TIMELINE"))?;
    // "2026-12-07 06:30:00 UTC" (the server's log_timezone; UTC in most deployments).
    let time = field("START TIME:").and_then(|v| {
        let (stamp, zone) = v.rsplit_once(' ')?;
        let civil: jiff::civil::DateTime = stamp.parse().ok()?;
        civil.to_zoned(jiff::tz::TimeZone::get(zone).ok()?).ok().map(|z| z.timestamp())
    });
    Ok((start, timeline, time))
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "WAL-Ranges")]
    wal_ranges: Vec<WalRange>,
}

#[derive(Deserialize)]
struct WalRange {
    #[serde(rename = "Timeline")]
    timeline: u32,
    #[serde(rename = "End-LSN")]
    end: String,
}

/// The timeline and LSN the backup ends at, from its manifest.
pub(crate) fn parse_manifest(bytes: &[u8]) -> Result<(u32, Lsn), Error> {
    let m: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| Error::Invalid(format!("backup_manifest does not parse: {e}")))?;
    let last = m
        .wal_ranges
        .last()
        .ok_or_else(|| Error::Invalid("backup_manifest lists no WAL range".into()))?;
    Ok((last.timeline, last.end.parse()?))
}

/// Takes a base backup into `repo`; returns the snapshot and what it recorded. Nothing is
/// visible in the repository unless `pg_basebackup` succeeded and its stream was whole.
///
/// # Errors
/// The server cannot be reached, `pg_basebackup` fails, the repository fails.
pub fn run(repo: &Repository, opts: &Options) -> Result<(BackupResult, BaseBackup), Error> {
    let conn = &opts.connection;
    let info = conn.info(&opts.tools)?;
    let segment_size = check_segment_size(info.wal_segment_size)?;
    let block = usize::try_from(info.block_size).unwrap_or(8192);
    let pages =
        if opts.pages_per_chunk == 0 { DEFAULT_PAGES_PER_CHUNK } else { opts.pages_per_chunk };
    let piece = block * pages;
    // Held from before the server picks the start LSN until the snapshot recording it is saved:
    // WAL expiry takes the exclusive lock, so it never runs while a base backup whose start is
    // recorded nowhere yet needs WAL from there on. (Storing the stream takes a lock of its own
    // too, but only once pg_basebackup is running.)
    let _lock = repo.lock(LockKind::Shared, "postgres base backup")?;
    let mut cmd = opts.tools.command("pg_basebackup")?;
    let wal_method = if opts.wal == WalSource::Inside { "fetch" } else { "none" };
    cmd.args(["-D", "-", "-F", "t", "-X", wal_method, "-c", "fast", "-l", "holdfast base backup"]);
    conn.apply(&mut cmd);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| Error::Tool {
        program: "pg_basebackup".into(),
        message: format!("cannot start: {e}"),
    })?;
    let stderr = StderrTail::collect(child.stderr.take());
    let stdout = child.stdout.take().ok_or_else(|| Error::Tool {
        program: "pg_basebackup".into(),
        message: "no output pipe".into(),
    })?;
    let chunking = move |path: &str, size: u64| {
        if size.is_multiple_of(info.block_size) && is_relation_file(path) {
            Chunking::Fixed(piece)
        } else {
            Chunking::ContentDefined
        }
    };
    let mut backup_opts = BackupOptions::new();
    backup_opts.tags = std::iter::once(TAG.to_string()).chain(opts.tags.iter().cloned()).collect();
    // The last base backup of the same server: its relation files' content lists are what
    // today's are stored as changes from (repository format §9.1).
    backup_opts.parent = ParentChoice::Auto;
    backup_opts.hostname = Some(conn.describe());
    backup_opts.progress.clone_from(&opts.progress);
    backup_opts.cancel = opts.cancel.clone();
    let stored = store_tar(
        repo,
        stdout,
        PATH,
        &chunking,
        &[BACKUP_LABEL, MANIFEST, PG_CONTROL],
        &backup_opts,
    );
    if stored.is_err() {
        // Whatever went wrong on our side, pg_basebackup must not be left running.
        let _ = child.kill();
    }
    let status = child.wait().map_err(Error::io("waiting for pg_basebackup"))?;
    let errors = stderr.text();
    if !status.success() && !opts.cancel.is_cancelled() {
        return Err(Error::Tool {
            program: "pg_basebackup".into(),
            message: failure(status, &errors),
        });
    }
    let stored = stored?;
    let kept = stored.kept();
    let missing = |name: &str| {
        Error::Invalid(format!(
            "pg_basebackup's stream has no {name}: is the server older than 13?"
        ))
    };
    let label = kept.get(BACKUP_LABEL).ok_or_else(|| missing(BACKUP_LABEL))?;
    let (start_lsn, _, start_time) = parse_label(&String::from_utf8_lossy(label))?;
    let (timeline, finish_lsn) =
        parse_manifest(kept.get(MANIFEST).ok_or_else(|| missing(MANIFEST))?)?;
    let system_identifier =
        control::system_identifier(kept.get(PG_CONTROL).ok_or_else(|| missing(PG_CONTROL))?)?;
    let finish_time = conn.now(&opts.tools)?;
    let backup = BaseBackup {
        system_identifier,
        version: info.version.clone(),
        version_num: info.version_num,
        timeline,
        start_lsn,
        finish_lsn,
        start_time: start_time.unwrap_or(info.now),
        finish_time,
        wal_segment_size: segment_size,
        block_size: info.block_size,
        wal_in_archive: opts.wal != WalSource::Inside,
    };
    if let WalSource::Archive { timeout } = opts.wal {
        // Saved only once it can be restored: its data stays unreferenced (prune's) otherwise.
        wait_for_archive(repo, &backup, timeout, &opts.cancel)?;
    }
    let result = stored.save(repo, backup.labels())?;
    tracing::info!(
        snapshot = %result.id.to_hex(),
        start_lsn = %backup.start_lsn,
        finish_lsn = %backup.finish_lsn,
        "base backup stored"
    );
    Ok((result, backup))
}

/// Waits until the WAL archive holds every segment of `backup` (start to end), as pgBackRest's
/// `archive-check` does.
fn wait_for_archive(
    repo: &Repository,
    backup: &BaseBackup,
    timeout: std::time::Duration,
    cancel: &CancelToken,
) -> Result<(), Error> {
    use crate::lsn::Segment;
    let size = backup.wal_segment_size;
    let first = Segment::of(backup.timeline, backup.start_lsn, size);
    let last = Segment::ending_at(backup.timeline, backup.finish_lsn, size);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let cat = crate::wal_archive::catalog(repo, backup.system_identifier, size)?;
        let missing = (first.number..=last.number)
            .map(|number| Segment { timeline: backup.timeline, number })
            .find(|s| !cat.has(*s));
        let Some(missing) = missing else { return Ok(()) };
        if cancel.is_cancelled() {
            return Err(Error::Invalid("cancelled while waiting for the WAL archive".into()));
        }
        if std::time::Instant::now() >= deadline {
            return Err(Error::Refused(format!(
                "WAL segment {} (needed to restore this backup, which keeps its WAL in the archive) \
                 was not archived into this repository within {}s: is the cluster's \
                 archive_command running `holdfast pg wal-push` into it, or `holdfast pg \
                 wal-stream`? Nothing was saved; take the backup with its WAL inside (--wal fetch) \
                 otherwise",
                missing.name(size),
                timeout.as_secs()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relation_files_are_told_from_the_rest() {
        for yes in [
            "base/16384/16397",
            "base/1/1259_fsm",
            "base/1/1259_vm",
            "base/5/16400_init",
            "global/1262",
            "base/16384/16397.12",
            "pg_tblspc/16500/PG_15_202209061/16384/16501",
        ] {
            assert!(is_relation_file(yes), "{yes}");
        }
        for no in [
            "global/pg_control",
            "base/16384/PG_VERSION",
            "base/16384/pg_filenode.map",
            "pg_wal/000000010000000000000002",
            "base/pgsql_tmp/x",
            "postgresql.conf",
            "base/16384/16397.",
            "base/16384/_vm",
        ] {
            assert!(!is_relation_file(no), "{no}");
        }
    }

    #[test]
    fn backup_label_and_manifest_give_lsns_timeline_and_time() {
        let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                     CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\n\
                     BACKUP FROM: primary\nSTART TIME: 2026-12-07 06:30:01 UTC\n\
                     LABEL: x\nSTART TIMELINE: 1\n";
        let (lsn, tli, time) = parse_label(label).unwrap();
        assert_eq!(lsn, "0/2000028".parse().unwrap());
        assert_eq!(tli, 1);
        assert_eq!(time, Some("2026-12-07T06:30:01Z".parse().unwrap()));
        let manifest = br#"{ "PostgreSQL-Backup-Manifest-Version": 1, "Files": [],
            "WAL-Ranges": [ { "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" } ],
            "Manifest-Checksum": "x" }"#;
        assert_eq!(parse_manifest(manifest).unwrap(), (1, "0/2000100".parse().unwrap()));
        assert!(parse_label("nothing").is_err());
    }

    #[test]
    fn labels_round_trip() {
        let b = BaseBackup {
            system_identifier: 7_300_000_000_000_000_001,
            version: "15.18".into(),
            version_num: 150_018,
            timeline: 2,
            start_lsn: Lsn(0x200_0028),
            finish_lsn: Lsn(0x200_0100),
            start_time: "2026-12-07T06:30:01Z".parse().unwrap(),
            finish_time: "2026-12-07T06:30:02.5Z".parse().unwrap(),
            wal_segment_size: 16 << 20,
            block_size: 8192,
            wal_in_archive: false,
        };
        assert_eq!(BaseBackup::from_labels(&b.labels()).unwrap(), b);
        let in_archive = BaseBackup { wal_in_archive: true, ..b };
        assert_eq!(in_archive.labels().get("postgres.wal").map(String::as_str), Some("archive"));
        assert_eq!(BaseBackup::from_labels(&in_archive.labels()).unwrap(), in_archive);
    }
}
