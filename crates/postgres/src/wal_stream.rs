//! Streaming WAL into the archive through a replication slot, as Barman and `pg_receivewal` do:
//! nothing to configure on the server beyond `wal_level = replica` and a user allowed to
//! replicate, and no segment is lost when the archiver falls behind or stops, because the slot
//! keeps the server from recycling WAL it has not received.
//!
//! `pg_receivewal --slot S --synchronous` writes into a spool directory: the segment being
//! received as `<segment>.partial`, fsynced as it arrives and renamed to `<segment>` once whole.
//! Each whole segment (and timeline history file) is pushed into the archive like `wal-push`
//! does, then removed from the spool, except the newest pushed one: `pg_receivewal` resumes after
//! the newest segment it finds, so after a restart (of it, or of this process after `kill -9`)
//! streaming continues exactly where it stopped, and pushing the kept segment again is a no-op.
//! The partial segment stays in the spool until it is whole.
//!
//! A spool with no WAL in it (a new pod's `emptyDir`, a new disk) is seeded with the newest
//! segment the archive holds for the server's cluster and timeline, so `pg_receivewal` asks the
//! server for exactly what the archive lacks. Unseeded it would start at the slot's position
//! (version 15 and later) or at the server's current one (older), and skip any segment an earlier
//! worker had received, and confirmed to the slot, but not archived when it stopped. If the
//! server has recycled that WAL in between, the stream starts from the slot instead and the gap
//! is left for `wal status` to show (and restores to refuse to cross), with an error logged.
//!
//! `pg_receivewal` runs under `setpriv --pdeathsig TERM` where available, so it ends with this
//! process however that ends, and the slot is free for the next run.
//!
//! Two additions serve a stream run as a KubeBlocks continuous backup: `info_file` keeps
//! KubeBlocks' backup-info JSON (size and recoverable time range) current as WAL is archived,
//! and `switch_interval` makes the server switch segments on a timer, since the segment being
//! received is archived only once whole and a quiet server would otherwise keep committed WAL
//! out of the archive for as long as it takes to fill 16 MiB.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use holdfast_repository::Repository;
use holdfast_repository::progress::CancelToken;

use crate::Error;
use crate::lsn::{DEFAULT_SEGMENT_SIZE, Segment, WalFile, check_segment_size};
use crate::server::Connection;
use crate::tools::{StderrTail, Tools, failure};
use crate::wal_archive::{self, Fetched, Pushed, RangeCache, catalog, summary, write_atomically};
use crate::wal_expiry;
use crate::wal_reader::summarize;

/// How often the spool is looked at.
const POLL: Duration = Duration::from_millis(500);
/// Longest wait before starting `pg_receivewal` again after it stopped.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How to stream.
#[derive(Clone, Default)]
pub struct Options {
    /// Where the server is; the user needs REPLICATION.
    pub connection: Connection,
    /// PostgreSQL's programs.
    pub tools: Tools,
    /// The replication slot (created when missing).
    pub slot: String,
    /// The spool directory (created when missing); keep it on durable storage.
    pub spool: PathBuf,
    /// Stop after this long (tests and one-shot catch-ups); run until cancelled otherwise.
    pub duration: Option<Duration>,
    /// Where to keep KubeBlocks' backup-info JSON current (see [`backup_info`]).
    pub info_file: Option<PathBuf>,
    /// Switch the server to a new segment this often when it wrote WAL since the last switch
    /// (`pg_switch_wal()`, which the user must be allowed to call).
    pub switch_interval: Option<Duration>,
    /// Expire the streamed cluster's WAL this often ([`crate::wal_expiry`]), once the stream has
    /// archived a first segment and then on the interval; never waits for a lock.
    pub expire_every: Option<Duration>,
    /// Stops the stream.
    pub cancel: CancelToken,
}

/// What a stream did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Streamed {
    /// Files archived (not counting ones already there).
    pub archived: u64,
    /// Bytes of WAL archived.
    pub bytes: u64,
    /// Times `pg_receivewal` was (re)started.
    pub starts: u64,
    /// WAL files expired.
    pub expired: u64,
}

fn receivewal(opts: &Options, extra: &[&str]) -> Result<Command, Error> {
    let program = opts.tools.path("pg_receivewal")?;
    let mut cmd = match crate::tools::on_path("setpriv") {
        Some(setpriv) => {
            let mut c = Command::new(setpriv);
            c.args(["--pdeathsig", "TERM", "--"]).arg(program);
            c
        }
        None => Command::new(program),
    };
    opts.connection.apply(&mut cmd);
    cmd.args(["--slot", &opts.slot]).args(extra);
    Ok(cmd)
}

/// Creates the slot when it does not exist, reserving WAL from that moment: a slot made by
/// `pg_receivewal --create-slot` reserves nothing until a stream first connects, so WAL written
/// in between could be recycled, and the stream would start after it.
fn ensure_slot(opts: &Options) -> Result<(), Error> {
    let slot = &opts.slot;
    if slot.is_empty()
        || slot.len() > 63
        || !slot.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(Error::Invalid(format!(
            "replication slot name {slot:?}: use up to 63 lower-case letters, digits and '_'"
        )));
    }
    opts.connection.query(
        &opts.tools,
        &format!(
            "SELECT pg_create_physical_replication_slot('{slot}', true) WHERE NOT EXISTS \
             (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{slot}')"
        ),
    )?;
    Ok(())
}

/// Puts the newest archived segment of the server's cluster and current timeline into an empty
/// spool (see the module's documentation); the name seeded, if any.
fn seed(repo: &Repository, opts: &Options) -> Result<Option<String>, Error> {
    let has_wal = std::fs::read_dir(&opts.spool)
        .map_err(Error::io(format!("reading {}", opts.spool.display())))?
        .flatten()
        .any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".partial")
                || matches!(WalFile::parse(&name, DEFAULT_SEGMENT_SIZE), Some(WalFile::Segment(_)))
        });
    if has_wal {
        return Ok(None);
    }
    let rows = opts.connection.query(
        &opts.tools,
        "SELECT s.system_identifier, c.timeline_id, \
         (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size') \
         FROM pg_control_system() s, pg_control_checkpoint() c",
    )?;
    let row = rows.first().filter(|r| r.len() == 3).ok_or_else(|| {
        Error::Invalid("the server did not report its system identifier and timeline".into())
    })?;
    let bad = |what: &str, v: &str| Error::Invalid(format!("the server reported {what} {v:?}"));
    let system_identifier: u64 = row[0].parse().map_err(|_| bad("system identifier", &row[0]))?;
    let timeline: u32 = row[1].parse().map_err(|_| bad("timeline", &row[1]))?;
    let segment_size: u64 = row[2].parse().map_err(|_| bad("wal_segment_size", &row[2]))?;
    let cat = wal_archive::catalog(repo, system_identifier, segment_size)?;
    let Some(&number) = cat.segments.get(&timeline).and_then(|s| s.iter().max()) else {
        return Ok(None);
    };
    let name = Segment { timeline, number }.name(segment_size);
    match wal_archive::fetch(repo, system_identifier, &name, &opts.spool.join(&name))? {
        Fetched::Written(_) => Ok(Some(name)),
        Fetched::NotArchived => Ok(None),
    }
}

/// Whole files in the spool ready to archive, oldest first: segments and history files.
fn ready(spool: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(spool)
        .map_err(Error::io(format!("reading {}", spool.display())))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            matches!(
                WalFile::parse(&name, DEFAULT_SEGMENT_SIZE),
                Some(WalFile::Segment(_) | WalFile::History(_))
            )
            .then(|| (name, e.path()))
        })
        .collect();
    // History files first (a new timeline's segments refer to them), then segments by name,
    // which is timeline then position.
    files.sort_by_key(|(n, _)| (!n.ends_with(".history"), n.clone()));
    Ok(files)
}

/// The cluster a stream archives, learnt from its first segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cluster {
    system_identifier: u64,
    segment_size: u64,
}

/// Archives what is whole in the spool; removes what is archived except the newest segment.
/// `cluster` is what the segments say, learnt from the first one. Returns how many files were
/// archived now.
fn drain(
    repo: &Repository,
    spool: &Path,
    out: &mut Streamed,
    cluster: &mut Option<Cluster>,
) -> Result<u64, Error> {
    let files = ready(spool)?;
    let newest = files.iter().rev().find(|(n, _)| !n.ends_with(".history")).map(|(n, _)| n.clone());
    let mut archived = 0;
    for (name, path) in &files {
        // The cluster is the one the segments say, so the streamer needs no data directory.
        let said = if name.ends_with(".history") {
            None
        } else {
            let data =
                std::fs::read(path).map_err(Error::io(format!("reading {}", path.display())))?;
            Some(Cluster {
                system_identifier: summarize(&data)?.system_identifier,
                segment_size: check_segment_size(data.len() as u64)
                    .map_err(|e| Error::Invalid(format!("{name}: {e}")))?,
            })
        };
        let Some(said) = said.or(*cluster) else {
            // A history file before any segment: archived once a segment names the cluster.
            continue;
        };
        if let Some(c) = cluster.filter(|c| *c != said) {
            return Err(Error::Invalid(format!(
                "{name} belongs to the cluster {} ({} byte segments), but this stream's is {} \
                 ({} byte segments): the slot's server was replaced",
                said.system_identifier, said.segment_size, c.system_identifier, c.segment_size
            )));
        }
        *cluster = Some(said);
        let id = said.system_identifier;
        let Pushed { already_archived, size, .. } = wal_archive::push(repo, path, id)?;
        if !already_archived {
            archived += 1;
            out.archived += 1;
            out.bytes += size;
            tracing::info!(file = %name, "streamed WAL archived");
        }
        if Some(name) != newest.as_ref() {
            std::fs::remove_file(path)
                .map_err(Error::io(format!("removing {}", path.display())))?;
        }
    }
    Ok(archived)
}

/// KubeBlocks' backup-info JSON for a continuous backup: `totalSize` as a decimal string, and
/// `timeRange` with whole-second UTC times (truncated, so the end never claims a moment after
/// the newest archived transaction), left out while no transaction is archived.
pub fn backup_info(
    total_size: u64,
    range: Option<(jiff::Timestamp, jiff::Timestamp)>,
) -> serde_json::Value {
    let mut info = serde_json::json!({ "totalSize": total_size.to_string() });
    if let Some((start, end)) = range {
        let utc = |t: jiff::Timestamp| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        info["timeRange"] =
            serde_json::json!({ "start": utc(start), "end": utc(end), "timeZone": "+00:00" });
    }
    info
}

/// Rewrites the backup-info file for `cluster`. `totalSize` is what the cluster's archive files
/// take in the repository (stored bytes: compressed and encrypted, headers included), summed
/// from the listing the range needs anyway; the time range is
/// [`wal_archive::recoverable_range`]'s.
fn write_info(
    repo: &Repository,
    path: &Path,
    cluster: Cluster,
    ranges: &mut RangeCache,
) -> Result<(), Error> {
    let Cluster { system_identifier: id, segment_size: size } = cluster;
    let cat = catalog(repo, id, size)?;
    let range = ranges.range(&cat, |s| summary(repo, id, s, size))?;
    let info = backup_info(cat.stored_bytes, range);
    // Readers (the backup's status sync) see the old file or the new one, never half of one.
    write_atomically(path, info.to_string().as_bytes())
}

/// Switches the server to a new segment on a timer, when it wrote WAL since the last switch:
/// a server that wrote nothing is left alone, so an idle one is not made to fill the archive
/// with empty segments.
struct Switcher {
    every: Duration,
    next: Instant,
    /// `pg_current_wal_lsn()` right after the last switch.
    after_last: Option<String>,
}

impl Switcher {
    fn new(every: Duration) -> Self {
        Switcher { every, next: Instant::now() + every, after_last: None }
    }

    /// Switches if the interval has passed and there is WAL since the last switch. A failure
    /// (the server restarting, no permission) is logged and retried at the next interval: the
    /// stream itself is unaffected.
    fn tick(&mut self, opts: &Options) {
        if Instant::now() < self.next {
            return;
        }
        self.next = Instant::now() + self.every;
        let lsn = || -> Result<String, Error> {
            let rows = opts.connection.query(&opts.tools, "SELECT pg_current_wal_lsn()")?;
            rows.first().and_then(|r| r.first()).map(|l| l.trim().to_string()).ok_or_else(|| {
                Error::Tool {
                    program: "psql".into(),
                    message: format!("unexpected answer to pg_current_wal_lsn(): {rows:?}"),
                }
            })
        };
        let switch = || -> Result<String, Error> {
            let now = lsn()?;
            if self.after_last.as_ref() == Some(&now) {
                return Ok(now);
            }
            opts.connection.query(&opts.tools, "SELECT pg_switch_wal()")?;
            lsn()
        };
        match switch() {
            Ok(after) => self.after_last = Some(after),
            Err(e) => tracing::warn!(error = %e, "switching WAL segments failed; retrying later"),
        }
    }
}

/// Expires cluster `system_identifier`'s WAL without waiting for locks; returns how many files
/// went. Nothing that goes wrong stops the stream: a base backup holding its lock is waited out
/// until the next round, anything else is logged.
fn expire(repo: &Repository, system_identifier: u64) -> u64 {
    let wait = repo.lock_wait();
    repo.set_lock_wait(Duration::ZERO);
    let opts = wal_expiry::Options { system_identifier: Some(system_identifier), dry_run: false };
    let result = wal_expiry::expire(repo, &opts);
    repo.set_lock_wait(wait);
    match result {
        Ok(done) => {
            let deleted: Vec<&String> = done.iter().flat_map(|e| &e.deleted).collect();
            if let (Some(first), Some(last)) = (deleted.first(), deleted.last()) {
                tracing::info!(files = deleted.len(), %first, %last, "expired WAL older than the oldest base backup");
            }
            deleted.len() as u64
        }
        Err(Error::Repository(holdfast_repository::Error::Locked { holder, .. })) => {
            tracing::info!(%holder, "the repository is locked; expiring WAL at the next round");
            0
        }
        Err(e) => {
            tracing::warn!(error = %e, "expiring WAL failed; trying again at the next round");
            0
        }
    }
}

/// Streams until cancelled (or `duration` passes): `pg_receivewal` restarted with a backoff when
/// it stops, whole segments archived as they appear. Returns what was archived.
///
/// # Errors
/// The slot cannot be created, the spool cannot be used, the repository refuses a segment.
pub fn run(repo: &Repository, opts: &Options) -> Result<Streamed, Error> {
    std::fs::create_dir_all(&opts.spool)
        .map_err(Error::io(format!("creating {}", opts.spool.display())))?;
    ensure_slot(opts)?;
    let deadline = opts.duration.map(|d| Instant::now() + d);
    let mut out = Streamed::default();
    let mut child: Option<(Child, StderrTail)> = None;
    let mut backoff = Duration::from_secs(1);
    let mut next_start = Instant::now();
    let mut cluster = None;
    let mut switcher = opts.switch_interval.map(Switcher::new);
    let mut ranges = RangeCache::default();
    // Whether the info file must be (re)written: at start, once the cluster is known, and after
    // every drain that archived something. A failed write is retried at the next poll.
    let mut info_due = true;
    // The segment seeded into an empty spool for the running pg_receivewal, and whether seeding
    // is off (the server no longer had what follows it).
    let mut seeded: Option<String> = None;
    let mut unseeded = false;
    let mut next_expiry: Option<Instant> = None;
    let result = loop {
        if opts.cancel.is_cancelled() || deadline.is_some_and(|d| Instant::now() >= d) {
            break Ok(());
        }
        let exited = child.as_mut().and_then(|(c, _)| c.try_wait().ok().flatten());
        if let (Some(status), Some((_, tail))) = (exited, exited.and_then(|_| child.take())) {
            let stderr = tail.text();
            let why = failure(status, &stderr);
            if let Some(name) = seeded.take()
                && stderr.contains("has already been removed")
            {
                // What the archive lacks is gone from the server too: stream from the slot and
                // leave the gap visible rather than stop archiving altogether.
                tracing::error!(after = %name, "WAL after the archive's newest segment was \
                    recycled by the server before it was archived; streaming from the slot, the \
                    archive has a gap");
                let _ = std::fs::remove_file(opts.spool.join(&name));
                unseeded = true;
            }
            tracing::warn!(status = %why, "pg_receivewal stopped; starting it again");
            next_start = Instant::now() + backoff;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        if child.is_none() && Instant::now() >= next_start {
            if !unseeded {
                seeded = seed(repo, opts)?;
                if let Some(name) = &seeded {
                    tracing::info!(segment = %name, "empty spool: resuming after the archive's newest segment");
                }
            }
            let mut cmd = receivewal(opts, &["-D"])?;
            cmd.arg(&opts.spool).args(["--synchronous", "--no-loop"]);
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
            let mut c = cmd.spawn().map_err(|e| Error::Tool {
                program: "pg_receivewal".into(),
                message: format!("cannot start: {e}"),
            })?;
            let tail = StderrTail::collect(c.stderr.take());
            out.starts += 1;
            child = Some((c, tail));
        }
        match drain(repo, &opts.spool, &mut out, &mut cluster) {
            Ok(archived) => info_due |= archived > 0,
            Err(e) => break Err(e),
        }
        if let (Some(path), Some(c), true) = (&opts.info_file, cluster, info_due) {
            match write_info(repo, path, c, &mut ranges) {
                Ok(()) => info_due = false,
                Err(e) => tracing::warn!(error = %e, file = %path.display(),
                    "writing the backup info failed; retrying"),
            }
        }
        if let (Some(every), Some(c)) = (opts.expire_every, cluster)
            && next_expiry.is_none_or(|at| Instant::now() >= at)
        {
            next_expiry = Some(Instant::now() + every);
            let expired = expire(repo, c.system_identifier);
            out.expired += expired;
            info_due |= expired > 0;
        }
        if let Some(s) = &mut switcher {
            s.tick(opts);
        }
        if child.is_some() {
            backoff = Duration::from_secs(1).max(backoff / 2);
        }
        std::thread::sleep(POLL);
    };
    if let Some((mut c, _)) = child {
        // SIGTERM would let it finish a write; a kill is as safe, since every write is synced
        // and it resumes from the spool, and it cannot hang here.
        let _ = c.kill();
        let _ = c.wait();
    }
    result?;
    let archived = drain(repo, &opts.spool, &mut out, &mut cluster)?;
    if let (Some(path), Some(c), true) = (&opts.info_file, cluster, info_due || archived > 0) {
        write_info(repo, path, c, &mut ranges)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_info_is_kubeblocks_format_with_whole_utc_seconds() {
        let t = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        let info = backup_info(
            12_345,
            Some((t("2026-12-07T06:30:01.999Z"), t("2026-12-07T08:00:00.25+02:00"))),
        );
        assert_eq!(
            info,
            serde_json::json!({
                "totalSize": "12345",
                "timeRange": {
                    "start": "2026-12-07T06:30:01Z",
                    "end": "2026-12-07T06:00:00Z",
                    "timeZone": "+00:00"
                }
            })
        );
        assert_eq!(backup_info(0, None), serde_json::json!({ "totalSize": "0" }));
    }
}
