//! Point-in-time restore: choose the base backup, prove the WAL from it to the target is all
//! archived and actually reaches the target, and only then write: the WAL into a spool
//! directory, the base backup into the data directory, and the recovery configuration
//! (`recovery.signal`, `restore_command`, the target, `recovery_target_action = 'promote'`).
//!
//! The restored server needs neither holdfast nor the repository's password to recover: its
//! `restore_command` copies from the spool. Starting it replays to the target and promotes.
//!
//! Why the checks: PostgreSQL only learns that WAL is missing, or that the archive ends before
//! a time target, when replay gets there, and then stops with "recovery ended before configured
//! recovery target was reached", typically in a crash loop after the old data directory is gone.
//! Every such case is refused here, with the reason, before anything is written.
//!
//! [`plan_recover`] and [`recover`] do the same for a data directory a base backup was restored
//! into by other means (a `pg_basebackup` tar extracted by a KubeBlocks restore Job): the
//! backup's end is read from the directory itself, and the archive checks are the same ones.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use holdfast_repository::Repository;
use holdfast_repository::progress::{CancelToken, ProgressFn};
use holdfast_repository::restore::{RestoreOptions, restore};
use holdfast_repository::snapshot::SnapshotEntry;
use serde::Serialize;

use crate::base_backup::{BaseBackup, TAG, parse_label, parse_manifest};
use crate::lsn::{DEFAULT_SEGMENT_SIZE, Lsn, Segment, WalFile};
use crate::wal_archive::{
    Catalog, archive_name, catalog, claimed_segment_size, summary, write_atomically,
};
use crate::wal_reader::{SegmentSummary, summarize};
use crate::{Error, control};

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The end of the archived WAL.
    Latest,
    /// Just before the first transaction that ended after this time.
    Time(jiff::Timestamp),
    /// This WAL position.
    Lsn(Lsn),
    /// A restore point made with `pg_create_restore_point`.
    Name(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Latest => write!(f, "the latest archived point"),
            Target::Time(t) => write!(f, "time {t}"),
            Target::Lsn(l) => write!(f, "LSN {l}"),
            Target::Name(n) => write!(f, "restore point {n:?}"),
        }
    }
}

/// What a restore will do, decided and checked before it writes.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The base backup's snapshot id.
    pub snapshot: String,
    /// The base backup.
    pub base: BaseBackup,
    /// The target, as text.
    pub target: String,
    /// WAL files to put in the spool, in replay order (history files first).
    pub wal: Vec<String>,
    /// Where replay stops, in words: the LSN reached or the segment holding the target.
    pub reaches: String,
    #[serde(skip)]
    kind: Target,
}

/// The base backups in `repo`, oldest first by the point they are consistent at.
///
/// # Errors
/// Repository errors.
pub fn base_backups(repo: &Repository) -> Result<Vec<(SnapshotEntry, BaseBackup)>, Error> {
    let mut bases: Vec<(SnapshotEntry, BaseBackup)> = repo
        .snapshots()?
        .into_iter()
        .filter(|s| s.snapshot.tags.iter().any(|t| t == TAG))
        .filter_map(|s| BaseBackup::from_labels(&s.snapshot.labels).ok().map(|b| (s, b)))
        .collect();
    bases.sort_by_key(|(_, b)| (b.finish_time, b.finish_lsn));
    Ok(bases)
}

/// The one cluster the base backups belong to, or the one asked for.
fn choose_cluster(bases: &[(SnapshotEntry, BaseBackup)], asked: Option<u64>) -> Result<u64, Error> {
    let mut ids: Vec<u64> = bases.iter().map(|(_, b)| b.system_identifier).collect();
    ids.sort_unstable();
    ids.dedup();
    match (asked, ids.as_slice()) {
        (Some(id), _) if ids.contains(&id) => Ok(id),
        (Some(id), _) => Err(Error::Refused(format!(
            "no base backup of the cluster with system identifier {id} in the repository"
        ))),
        (None, []) => Err(Error::Refused(
            "the repository holds no base backup: take one with `holdfast pg backup`".into(),
        )),
        (None, [one]) => Ok(*one),
        (None, many) => Err(Error::Refused(format!(
            "the repository holds base backups of {} clusters ({}): pass --system-identifier",
            many.len(),
            many.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Refusal for an archive that stops at a gap, naming it.
fn gap_after(cat: &Catalog, end: Segment, size: u64) -> Option<String> {
    cat.next_after(end).map(|later| {
        format!(
            "WAL segment {} is missing from the archive, but later WAL exists (from {}); replay \
             cannot cross the gap",
            end.next().name(size),
            later.name(size)
        )
    })
}

/// Decides and checks a restore of cluster `system_identifier` (or the only one) to `target`.
///
/// # Errors
/// [`Error::Refused`] with the reason when no base backup fits, WAL is missing, or the archive
/// does not reach the target; repository errors.
pub fn plan(
    repo: &Repository,
    target: &Target,
    system_identifier: Option<u64>,
) -> Result<Plan, Error> {
    let all = base_backups(repo)?;
    let cluster = choose_cluster(&all, system_identifier)?;
    let bases: Vec<&(SnapshotEntry, BaseBackup)> =
        all.iter().filter(|(_, b)| b.system_identifier == cluster).collect();
    let size = bases.last().map_or(DEFAULT_SEGMENT_SIZE, |(_, b)| b.wal_segment_size);
    let cat = catalog(repo, cluster, size)?;
    let oldest = &bases[0].1;
    // The newest base backup consistent before the target.
    let base = match target {
        Target::Latest | Target::Name(_) => bases.last().copied(),
        Target::Time(t) => bases.iter().rev().find(|(_, b)| b.finish_time <= *t).copied(),
        Target::Lsn(l) => bases.iter().rev().find(|(_, b)| b.finish_lsn <= *l).copied(),
    };
    let Some((entry, base)) = base else {
        return Err(Error::Refused(match target {
            Target::Time(t) => format!(
                "no base backup finished before {t}: the oldest finished at {}",
                oldest.finish_time
            ),
            Target::Lsn(l) => format!(
                "no base backup is consistent before LSN {l}: the oldest is consistent from {}",
                oldest.finish_lsn
            ),
            _ => "no base backup".into(),
        }));
    };
    let from = BackupEnd {
        cluster,
        timeline: base.timeline,
        finish_lsn: base.finish_lsn,
        size,
        from_archive: base.wal_in_archive.then_some(base.start_lsn),
    };
    let (wal, reaches) = archive_part(repo, &cat, &from, target)?;
    Ok(Plan {
        snapshot: entry.id.to_hex(),
        base: base.clone(),
        target: target.to_string(),
        wal,
        reaches,
        kind: target.clone(),
    })
}

/// Where a base backup ends: replay from there on comes from the archive.
#[derive(Debug, Clone, Copy)]
struct BackupEnd {
    /// The cluster's system identifier.
    cluster: u64,
    /// The timeline the backup ended on.
    timeline: u32,
    /// Where it is consistent.
    finish_lsn: Lsn,
    /// WAL segment size.
    size: u64,
    /// The backup's own WAL is in the archive, from this LSN (its start) on.
    from_archive: Option<Lsn>,
}

/// Proves the archive `cat` takes replay from the end of a base backup to `target`, with no
/// gap: the WAL files to spool (history files first, then segments in replay order), and where
/// replay stops, in words.
///
/// # Errors
/// [`Error::Refused`] naming what is missing; repository errors.
fn archive_part(
    repo: &Repository,
    cat: &Catalog,
    from: &BackupEnd,
    target: &Target,
) -> Result<(Vec<String>, String), Error> {
    let BackupEnd { cluster, timeline, finish_lsn, size, from_archive } = *from;
    // Replay up to the backup's end comes from the WAL inside it; beyond, from the archive,
    // starting with the segment the backup ended in. A backup that keeps its WAL in the archive
    // replays from its start out of the archive, which must reach at least its end.
    let first = Segment::of(timeline, from_archive.unwrap_or(finish_lsn), size);
    let run_end = cat.run_end(first);
    if from_archive.is_some() {
        let end = Segment::ending_at(timeline, finish_lsn, size);
        if run_end.is_none_or(|e| e < end) {
            let missing = run_end.map_or(first, |e| e.next());
            return Err(Error::Refused(format!(
                "the base backup keeps its WAL in the archive, and segment {} (between its start \
                 and the point it is consistent at {finish_lsn}) is not archived",
                missing.name(size)
            )));
        }
    }
    let head =
        |s: Segment| -> Result<Option<SegmentSummary>, Error> { summary(repo, cluster, s, size) };
    let (last, reaches) = match target {
        Target::Latest => match run_end {
            Some(end) => {
                if let Some(why) = gap_after(cat, end, size) {
                    return Err(Error::Refused(format!(
                        "{why}; a restore to the latest point would stop at the gap: restore \
                         to a point before it (--to-time or --to-lsn)"
                    )));
                }
                let reached = head(end)?.map_or(Lsn((end.number + 1) * size), |s| s.end);
                (Some(end), format!("the end of the archived WAL at {reached}"))
            }
            None => {
                if let Some(later) = cat.next_after(first) {
                    return Err(Error::Refused(format!(
                        "WAL segment {} (where the base backup ends) is not archived, but later \
                         WAL exists (from {}); replay cannot cross the gap",
                        first.name(size),
                        later.name(size)
                    )));
                }
                (None, format!("the end of the base backup at {finish_lsn}"))
            }
        },
        Target::Lsn(l) => {
            let want = Segment::of(timeline, *l, size);
            if run_end.is_none_or(|e| e < want) {
                let have = run_end.map_or_else(
                    || format!("segment {} is not archived", first.name(size)),
                    |e| format!("the archive ends with segment {}", e.name(size)),
                );
                let why = run_end.and_then(|e| gap_after(cat, e, size));
                return Err(Error::Refused(format!(
                    "LSN {l} is in segment {}, but {have}{}",
                    want.name(size),
                    why.map(|w| format!(" ({w})")).unwrap_or_default()
                )));
            }
            let reached = head(want)?.map_or(Lsn((want.number + 1) * size), |s| s.end);
            if reached < *l {
                return Err(Error::Refused(format!(
                    "LSN {l} is beyond the archived WAL, which ends at {reached}"
                )));
            }
            (Some(want), format!("LSN {l}"))
        }
        Target::Time(t) => {
            let Some(end) = run_end else {
                return Err(Error::Refused(format!(
                    "segment {} (where the base backup ends) is not archived, so no WAL after \
                     the backup can be replayed",
                    first.name(size)
                )));
            };
            let mut newest = None;
            let mut found = None;
            let mut s = first;
            while s <= end {
                if let Some(sum) = head(s)? {
                    if sum.last_xact.is_some_and(|x| x > *t) {
                        found = Some(s);
                        break;
                    }
                    newest = sum.last_xact.or(newest);
                }
                s = s.next();
            }
            let Some(at) = found else {
                let gap = gap_after(cat, end, size).map(|w| format!(" ({w})")).unwrap_or_default();
                return Err(Error::Refused(format!(
                    "the archived WAL{} has no transaction after {t}{gap}, so recovery could \
                     never tell it had reached that time: restore to the latest point instead \
                     (no target), or wait until WAL with a later transaction is archived",
                    newest
                        .map(|n| format!(" ends with a transaction at {n} and"))
                        .unwrap_or_default()
                )));
            };
            (
                Some(at),
                format!("{t}: the first transaction after it is in segment {}", at.name(size)),
            )
        }
        Target::Name(name) => {
            let Some(end) = run_end else {
                return Err(Error::Refused(format!(
                    "no restore point {name:?}: segment {} (where the base backup ends) \
                     is not archived",
                    first.name(size)
                )));
            };
            let mut s = first;
            let mut found = None;
            while s <= end && found.is_none() {
                found = head(s)?
                    .and_then(|sum| sum.restore_points.into_iter().find(|p| &p.name == name))
                    .filter(|p| p.lsn >= finish_lsn)
                    .map(|p| (s, p.lsn));
                s = s.next();
            }
            let Some((at, lsn)) = found else {
                return Err(Error::Refused(format!(
                    "no restore point named {name:?} in the WAL archived after the base backup \
                     (through segment {})",
                    end.name(size)
                )));
            };
            (Some(at), format!("restore point {name:?} at {lsn}"))
        }
    };
    let mut wal: Vec<String> = cat.history.iter().map(|t| format!("{t:08X}.history")).collect();
    if let Some(last) = last {
        let mut s = first;
        while s <= last {
            wal.push(s.name(size));
            s = s.next();
        }
    }
    Ok((wal, reaches))
}

/// How to write a restore.
#[derive(Clone, Default)]
pub struct Options {
    /// Where the WAL for recovery goes (default: beside the data directory,
    /// `<pgdata>.restore-wal`).
    pub spool: Option<PathBuf>,
    /// Progress of the base backup's restore.
    pub progress: Option<ProgressFn>,
    /// Cancellation.
    pub cancel: CancelToken,
}

/// What a restore wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    /// The plan it carried out.
    pub plan: Plan,
    /// The data directory.
    pub pgdata: PathBuf,
    /// Where the WAL for recovery is.
    pub spool: PathBuf,
    /// WAL bytes spooled.
    pub wal_bytes: u64,
}

fn is_empty_dir(p: &Path) -> Result<bool, Error> {
    match std::fs::read_dir(p) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::Io { context: format!("reading {}", p.display()), source: e }),
    }
}

/// Whether a path can go into `restore_command` as it is: quoting it for both the
/// configuration file and the shell is not worth the risk of getting it wrong.
fn plain_path(p: &Path) -> bool {
    p.to_str()
        .is_some_and(|s| s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+,=@:".contains(&b)))
}

/// Carries out `plan` into `pgdata`, which must be empty or absent.
///
/// # Errors
/// [`Error::Refused`] for a non-empty data directory or spool, or an unusable spool path;
/// repository and I/O errors.
pub fn execute(
    repo: &Repository,
    plan: Plan,
    pgdata: &Path,
    opts: &Options,
) -> Result<Restored, Error> {
    let pgdata = std::path::absolute(pgdata).map_err(Error::io("resolving the data directory"))?;
    let spool = spool_dir(&pgdata, opts.spool.as_deref())?;
    if !is_empty_dir(&pgdata)? {
        return Err(Error::Refused(format!(
            "{} is not empty: restore into a new directory, or move the old one away first",
            pgdata.display()
        )));
    }
    if !is_empty_dir(&spool)? {
        return Err(Error::Refused(format!(
            "the WAL directory {} is not empty (a previous restore's?): remove it or pass another",
            spool.display()
        )));
    }
    let wal_bytes = spool_wal(repo, plan.base.system_identifier, &plan.wal, &spool, &opts.cancel)?;
    let id = repo.find_snapshot_id(&plan.snapshot)?;
    let snapshot = repo.load_snapshot(&id)?;
    let restore_opts = RestoreOptions {
        progress: opts.progress.clone(),
        cancel: opts.cancel.clone(),
        ..RestoreOptions::default()
    };
    std::fs::create_dir_all(&pgdata)
        .map_err(Error::io(format!("creating {}", pgdata.display())))?;
    restore(repo, &snapshot.tree, &pgdata, &restore_opts)?;
    configure(&pgdata, &spool, &plan.kind, "restore")?;
    own_like_the_data(&pgdata, &spool)?;
    Ok(Restored { plan, pgdata, spool, wal_bytes })
}

/// The WAL directory: `spool` if given, else `<pgdata>.restore-wal` beside the data directory;
/// absolute, and a path `restore_command` can carry.
fn spool_dir(pgdata: &Path, spool: Option<&Path>) -> Result<PathBuf, Error> {
    let spool = match spool {
        Some(s) => std::path::absolute(s).map_err(Error::io("resolving the WAL directory"))?,
        None => {
            let mut name = pgdata.file_name().unwrap_or_default().to_os_string();
            name.push(".restore-wal");
            pgdata.with_file_name(name)
        }
    };
    if !plain_path(&spool) {
        return Err(Error::Refused(format!(
            "the WAL directory {} has characters restore_command cannot carry safely: pass \
             --wal-dir with letters, digits and / . _ - only",
            spool.display()
        )));
    }
    Ok(spool)
}

/// Copies the WAL files `wal` of cluster `system_identifier` from the archive into `spool`
/// (created when missing), each whole or not at all; the bytes copied.
fn spool_wal(
    repo: &Repository,
    system_identifier: u64,
    wal: &[String],
    spool: &Path,
    cancel: &CancelToken,
) -> Result<u64, Error> {
    std::fs::create_dir_all(spool).map_err(Error::io(format!("creating {}", spool.display())))?;
    let mut wal_bytes = 0;
    for file in wal {
        if cancel.is_cancelled() {
            return Err(Error::Repository(holdfast_repository::Error::Cancelled));
        }
        let (_, data) =
            holdfast_repository::archive::load(repo, &archive_name(system_identifier, file))?;
        write_atomically(&spool.join(file), &data)?;
        wal_bytes += data.len() as u64;
    }
    Ok(wal_bytes)
}

/// What begins the block of settings `configure` appends.
const MARK: &str = "# Added by holdfast pg ";

/// The settings `configure` writes: a block of these after [`MARK`] is holdfast's own.
const OURS: &[&str] = &[
    "restore_command",
    "recovery_target_timeline",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_action",
];

/// The setting a configuration line assigns, if it assigns one (`name = value` or
/// `name value`).
fn setting(line: &str) -> Option<(&str, &str)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line.find(|c: char| c == '=' || c.is_whitespace()).unwrap_or(line.len());
    let value = line[end..].trim_start().trim_start_matches('=').trim();
    Some((&line[..end], value))
}

/// `postgresql.auto.conf` without the blocks holdfast appended before, so writing the
/// configuration again replaces them instead of piling up.
fn without_our_settings(text: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let mut ours = false;
    for line in text.lines() {
        if line.starts_with(MARK) {
            ours = true;
            // The blank line the block was appended after.
            if kept.last().is_some_and(|l| l.trim().is_empty()) {
                kept.pop();
            }
            continue;
        }
        if ours && setting(line).is_some_and(|(name, _)| OURS.contains(&name)) {
            continue;
        }
        ours = false;
        kept.push(line);
    }
    kept.iter().map(|l| format!("{l}\n")).collect()
}

/// `spool` as `restore_command` names it: relative to the data directory (PostgreSQL runs the
/// command there, as `%p` shows) when the two share a parent below `/`, so a volume holding both
/// can be mounted anywhere (a restore Job mounts it at one path, the database pod at another);
/// absolute otherwise.
fn as_seen_from(pgdata: &Path, spool: &Path) -> PathBuf {
    let from: Vec<_> = pgdata.components().collect();
    let to: Vec<_> = spool.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    // Only the root in common: a relative path would say nothing more than the absolute one.
    if common <= 1 || !pgdata.is_absolute() || !spool.is_absolute() {
        return spool.to_path_buf();
    }
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}

/// Writes the recovery configuration (replacing what holdfast wrote there before); `by` is the
/// command, for the comment.
fn configure(pgdata: &Path, spool: &Path, target: &Target, by: &str) -> Result<(), Error> {
    let _ = std::fs::remove_file(pgdata.join("standby.signal"));
    std::fs::File::create(pgdata.join("recovery.signal"))
        .map_err(Error::io("writing recovery.signal"))?;
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut lines = vec![
        String::new(),
        // No time here: configuring twice the same way must leave the same file.
        format!("{MARK}{by}: recovery to {target}."),
        format!(
            "restore_command = {}",
            quote(&format!("cp \"{}/%f\" \"%p\"", as_seen_from(pgdata, spool).display()))
        ),
        "recovery_target_timeline = 'current'".to_string(),
    ];
    match target {
        Target::Latest => {}
        // The setting wants PostgreSQL's own notation ("2026-12-07 06:30:00.123456+00"); ISO
        // 8601's "T" and "Z" are refused at startup.
        Target::Time(t) => lines.push(format!(
            "recovery_target_time = {}",
            quote(&t.strftime("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
        )),
        Target::Lsn(l) => lines.push(format!("recovery_target_lsn = {}", quote(&l.to_string()))),
        Target::Name(n) => lines.push(format!("recovery_target_name = {}", quote(n))),
    }
    if *target != Target::Latest {
        lines.push("recovery_target_action = 'promote'".to_string());
    }
    let auto = pgdata.join("postgresql.auto.conf");
    let before = match std::fs::read_to_string(&auto) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(Error::Io { context: format!("reading {}", auto.display()), source: e });
        }
    };
    let text = without_our_settings(&before) + &lines.join("\n") + "\n";
    let mode = std::fs::metadata(&auto).map_or(0o600, |m| m.permissions().mode());
    // Rewritten whole through a rename: a crash leaves the old settings or the new ones.
    write_atomically(&auto, text.as_bytes())?;
    std::fs::set_permissions(&auto, std::fs::Permissions::from_mode(mode))
        .map_err(Error::io(format!("chmod {}", auto.display())))?;
    Ok(())
}

/// PostgreSQL refuses a data directory others can read or that it does not own: the directory
/// (not part of the backup) and the spool follow the owner of the restored files.
fn own_like_the_data(pgdata: &Path, spool: &Path) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt as _;
    let owner = std::fs::metadata(pgdata.join("PG_VERSION"))
        .map_err(Error::io("reading the restored PG_VERSION"))?;
    std::fs::set_permissions(pgdata, std::fs::Permissions::from_mode(0o700))
        .map_err(Error::io(format!("chmod {}", pgdata.display())))?;
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    if me != 0 {
        return Ok(());
    }
    let chown = |p: &Path| {
        std::os::unix::fs::chown(p, Some(owner.uid()), Some(owner.gid()))
            .map_err(Error::io(format!("chown {}", p.display())))
    };
    chown(pgdata)?;
    chown(spool)?;
    for entry in std::fs::read_dir(spool).map_err(Error::io("reading the WAL directory"))? {
        chown(&entry.map_err(Error::io("reading the WAL directory"))?.path())?;
    }
    chown(&pgdata.join("recovery.signal"))?;
    chown(&pgdata.join("postgresql.auto.conf"))
}

/// What `recover` will do to a data directory a base backup was restored into by other means
/// (a `pg_basebackup` tar extracted by a restore Job), decided and checked before it writes.
#[derive(Debug, Clone, Serialize)]
pub struct RecoverPlan {
    /// The data directory.
    pub pgdata: PathBuf,
    /// Where the WAL for recovery goes.
    pub spool: PathBuf,
    /// The cluster (from `global/pg_control`).
    pub system_identifier: u64,
    /// The timeline the backup ended on.
    pub timeline: u32,
    /// Where replay starts (`backup_label`).
    pub start_lsn: Lsn,
    /// Where the backup is consistent.
    pub finish_lsn: Lsn,
    /// Where the archive takes over: `finish_lsn` when `pg_wal` holds the backup's own WAL, else
    /// `start_lsn` (a backup taken without its WAL, `pg_basebackup -X none` or `holdfast pg
    /// backup --wal archive`: replay starts in the archive).
    pub archive_from: Lsn,
    /// Where `finish_lsn` was read: `backup_manifest`, or the newest segment in `pg_wal`.
    pub finish_from: String,
    /// When the backup started (`backup_label`), if it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<jiff::Timestamp>,
    /// WAL segment size.
    pub wal_segment_size: u64,
    /// The target, as text.
    pub target: String,
    /// WAL files to put in the spool, in replay order (history files first).
    pub wal: Vec<String>,
    /// Where replay stops, in words.
    pub reaches: String,
    #[serde(skip)]
    kind: Target,
}

/// What `recover` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Recovered {
    /// The plan it carried out.
    pub plan: RecoverPlan,
    /// WAL bytes spooled.
    pub wal_bytes: u64,
}

/// The newest WAL segment in `pg_wal` (timeline, then position), with its bytes.
fn newest_segment(pg_wal: &Path) -> Result<Option<(String, Vec<u8>)>, Error> {
    let names = match std::fs::read_dir(pg_wal) {
        Ok(entries) => entries.flatten().filter_map(|e| e.file_name().into_string().ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Io { context: format!("reading {}", pg_wal.display()), source: e });
        }
    };
    // Names alone sort as timeline, then position, whatever the segment size.
    let newest = names
        .filter(|n| matches!(WalFile::parse(n, DEFAULT_SEGMENT_SIZE), Some(WalFile::Segment(_))))
        .max();
    let Some(name) = newest else { return Ok(None) };
    let path = pg_wal.join(&name);
    let data = std::fs::read(&path).map_err(Error::io(format!("reading {}", path.display())))?;
    Ok(Some((name, data)))
}

/// Refuses recovery settings in the data directory's configuration that holdfast did not write
/// and that would fight the ones it writes: a second target makes the server refuse to start
/// ("multiple recovery targets specified"), and a signal file with someone else's target means
/// the directory was already set up for a different recovery.
fn refuse_foreign_targets(pgdata: &Path) -> Result<(), Error> {
    let signal =
        ["recovery.signal", "standby.signal"].into_iter().find(|f| pgdata.join(f).exists());
    for file in ["postgresql.conf", "postgresql.auto.conf"] {
        let path = pgdata.join(file);
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let text = if file == "postgresql.auto.conf" { without_our_settings(&text) } else { text };
        let foreign = text.lines().filter_map(setting).find(|(name, value)| {
            name.starts_with("recovery_target")
                && *name != "recovery_target_timeline"
                && *name != "recovery_target_action"
                && *name != "recovery_target_inclusive"
                && !matches!(*value, "" | "''")
        });
        if let Some((name, value)) = foreign {
            return Err(Error::Refused(format!(
                "{} already sets {name} = {value}{}, not written by holdfast: remove it (or \
                 restore the base backup again) before configuring another recovery",
                path.display(),
                signal.map(|f| format!(" and {f} is present")).unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// Decides and checks point-in-time recovery of `pgdata`, which holds a base backup restored by
/// other means and not started yet, to `target`. The backup's end comes from its
/// `backup_manifest`, else from the newest segment in its `pg_wal`; from there on the archive
/// must hold every segment up to the target, as for a restore.
///
/// # Errors
/// [`Error::Refused`] with the reason: no `backup_label` (not an unstarted base backup), another
/// recovery configured, a target before the backup, WAL missing; I/O and repository errors.
pub fn plan_recover(
    repo: &Repository,
    pgdata: &Path,
    target: &Target,
    spool: Option<&Path>,
) -> Result<RecoverPlan, Error> {
    let pgdata = std::path::absolute(pgdata).map_err(Error::io("resolving the data directory"))?;
    let label_path = pgdata.join("backup_label");
    let label = match std::fs::read_to_string(&label_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Refused(format!(
                "{} has no backup_label: it is not a base backup that was never started (a \
                 server started on it renames backup_label to backup_label.old)",
                pgdata.display()
            )));
        }
        Err(e) => {
            return Err(Error::Io {
                context: format!("reading {}", label_path.display()),
                source: e,
            });
        }
    };
    let (start_lsn, start_timeline, start_time) = parse_label(&label)?;
    let system_identifier = control::system_identifier_of(&pgdata)?;
    refuse_foreign_targets(&pgdata)?;
    let newest = newest_segment(&pgdata.join("pg_wal"))?;
    let size =
        newest.as_ref().and_then(|(_, d)| claimed_segment_size(d)).unwrap_or(DEFAULT_SEGMENT_SIZE);
    let manifest_path = pgdata.join("backup_manifest");
    let (timeline, finish_lsn, finish_from) = match std::fs::read(&manifest_path) {
        Ok(bytes) => {
            let (timeline, end) = parse_manifest(&bytes)?;
            (timeline, end, "backup_manifest".to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let Some((name, data)) = newest else {
                return Err(Error::Refused(format!(
                    "{} has neither a backup_manifest nor WAL in pg_wal: where the backup ends \
                     cannot be told",
                    pgdata.display()
                )));
            };
            let sum =
                summarize(&data).map_err(|e| Error::Invalid(format!("pg_wal/{name}: {e}")))?;
            (sum.timeline, sum.end, format!("pg_wal/{name}"))
        }
        Err(e) => {
            return Err(Error::Io {
                context: format!("reading {}", manifest_path.display()),
                source: e,
            });
        }
    };
    if finish_lsn < start_lsn || timeline < start_timeline {
        return Err(Error::Invalid(format!(
            "the backup ends at {finish_lsn} on timeline {timeline}, before it starts ({start_lsn} \
             on timeline {start_timeline}): {finish_from} is not this backup's"
        )));
    }
    // The restore's own check on the base, with what the directory knows: the backup must have
    // started before a time target (its end time is not recorded in the directory).
    match (target, start_time) {
        (Target::Time(t), Some(started)) if started > *t => {
            return Err(Error::Refused(format!(
                "the base backup in {} started at {started}, after {t}: restore a base backup \
                 finished before that time",
                pgdata.display()
            )));
        }
        (Target::Lsn(l), _) if finish_lsn > *l => {
            return Err(Error::Refused(format!(
                "the base backup in {} is consistent only from {finish_lsn}, after LSN {l}: \
                 restore a base backup consistent before it",
                pgdata.display()
            )));
        }
        _ => {}
    }
    let cat = catalog(repo, system_identifier, size)?;
    // Without the segment replay starts in, the backup's own WAL was left to the archive.
    let start_segment = Segment::of(start_timeline, start_lsn, size).name(size);
    let from_archive = (!pgdata.join("pg_wal").join(&start_segment).is_file()).then_some(start_lsn);
    let from = BackupEnd { cluster: system_identifier, timeline, finish_lsn, size, from_archive };
    let (wal, reaches) = archive_part(repo, &cat, &from, target)?;
    let spool = spool_dir(&pgdata, spool)?;
    Ok(RecoverPlan {
        pgdata,
        spool,
        system_identifier,
        timeline,
        start_lsn,
        finish_lsn,
        archive_from: from_archive.unwrap_or(finish_lsn),
        finish_from,
        start_time,
        wal_segment_size: size,
        target: target.to_string(),
        wal,
        reaches,
        kind: target.clone(),
    })
}

/// Carries out a [`RecoverPlan`]: the WAL into the spool, then `recovery.signal` and the
/// recovery settings (replacing holdfast's own from an earlier run, so running it twice with the
/// same arguments leaves the same directory). WAL files in the spool that the plan does not
/// need (an earlier run's, to another target) are removed; anything else there is refused.
///
/// # Errors
/// [`Error::Refused`] for a spool holding other files; repository and I/O errors.
pub fn recover(
    repo: &Repository,
    plan: RecoverPlan,
    cancel: &CancelToken,
) -> Result<Recovered, Error> {
    let spool = &plan.spool;
    let mut stale = Vec::new();
    match std::fs::read_dir(spool) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(Error::io(format!("reading {}", spool.display())))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                // A temporary file is what an interrupted earlier run left: stale as well.
                let temporary = name.starts_with('.') && name.ends_with(".holdfast-tmp");
                if !temporary && WalFile::parse(&name, plan.wal_segment_size).is_none() {
                    return Err(Error::Refused(format!(
                        "the WAL directory {} holds {name}, which is not WAL: remove it or pass \
                         another --wal-dir",
                        spool.display()
                    )));
                }
                if !plan.wal.contains(&name) {
                    stale.push(entry.path());
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::Io { context: format!("reading {}", spool.display()), source: e });
        }
    }
    for path in stale {
        std::fs::remove_file(&path).map_err(Error::io(format!("removing {}", path.display())))?;
    }
    let wal_bytes = spool_wal(repo, plan.system_identifier, &plan.wal, spool, cancel)?;
    configure(&plan.pgdata, spool, &plan.kind, "recover")?;
    own_like_the_data(&plan.pgdata, spool)?;
    Ok(Recovered { plan, wal_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_command_names_the_wal_directory_relative_to_the_data_directory() {
        let seen = |a: &str, b: &str| as_seen_from(Path::new(a), Path::new(b));
        assert_eq!(seen("/v/pgroot/data", "/v/pitr"), Path::new("../../pitr"));
        assert_eq!(
            seen("/srv/pg/data", "/srv/pg/data.restore-wal"),
            Path::new("../data.restore-wal")
        );
        assert_eq!(seen("/data", "/wal"), Path::new("/wal"), "only / in common");
    }

    #[test]
    fn configuring_again_replaces_only_holdfasts_own_settings() {
        let dir = tempfile::tempdir().unwrap();
        let auto = dir.path().join("postgresql.auto.conf");
        std::fs::write(&auto, "# Do not edit this file manually!\nwork_mem = '8MB'\n").unwrap();
        let spool = dir.path().join("wal");
        let t: jiff::Timestamp = "2026-12-07T06:30:00Z".parse().unwrap();
        configure(dir.path(), &spool, &Target::Name("a".into()), "recover").unwrap();
        configure(dir.path(), &spool, &Target::Time(t), "recover").unwrap();
        let text = std::fs::read_to_string(&auto).unwrap();
        assert!(text.starts_with("# Do not edit this file manually!\nwork_mem = '8MB'\n\n# Added"));
        assert_eq!(text.matches(MARK).count(), 1, "{text}");
        assert_eq!(text.matches("restore_command").count(), 1, "{text}");
        assert!(!text.contains("recovery_target_name"), "{text}");
        assert!(text.contains("recovery_target_time = '2026-12-07 06:30:00.000000+00'"), "{text}");
        assert!(dir.path().join("recovery.signal").is_file());
        // Someone else's target is refused; holdfast's own is not.
        refuse_foreign_targets(dir.path()).unwrap();
        let added = "work_mem = '4MB'\nrecovery_target_lsn = '0/3000000'\n";
        std::fs::write(&auto, text + added).unwrap();
        let err = refuse_foreign_targets(dir.path()).unwrap_err().to_string();
        assert!(err.contains("recovery_target_lsn") && err.contains("recovery.signal"), "{err}");
    }
}
