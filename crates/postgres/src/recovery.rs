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

use std::io::Write as _;
use std::path::{Path, PathBuf};

use holdfast_repository::Repository;
use holdfast_repository::progress::{CancelToken, ProgressFn};
use holdfast_repository::restore::{RestoreOptions, restore};
use holdfast_repository::snapshot::SnapshotEntry;
use serde::Serialize;

use crate::base_backup::{BaseBackup, TAG};
use crate::lsn::{Lsn, Segment};
use crate::wal_archive::{Catalog, archive_name, catalog, summary, write_atomically};
use crate::{Error, wal_reader::SegmentSummary};

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
    let size = bases.last().map_or(crate::lsn::DEFAULT_SEGMENT_SIZE, |(_, b)| b.wal_segment_size);
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
    // Replay up to the backup's end comes from the WAL inside it; beyond, from the archive,
    // starting with the segment the backup ended in.
    let first = Segment::of(base.timeline, base.finish_lsn, size);
    let run_end = cat.run_end(first);
    let head =
        |s: Segment| -> Result<Option<SegmentSummary>, Error> { summary(repo, cluster, s, size) };
    let (last, reaches) = match target {
        Target::Latest => match run_end {
            Some(end) => {
                if let Some(why) = gap_after(&cat, end, size) {
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
                (None, format!("the end of the base backup at {}", base.finish_lsn))
            }
        },
        Target::Lsn(l) => {
            let want = Segment::of(base.timeline, *l, size);
            if run_end.is_none_or(|e| e < want) {
                let have = run_end.map_or_else(
                    || format!("segment {} is not archived", first.name(size)),
                    |e| format!("the archive ends with segment {}", e.name(size)),
                );
                let why = run_end.and_then(|e| gap_after(&cat, e, size));
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
                let gap = gap_after(&cat, end, size).map(|w| format!(" ({w})")).unwrap_or_default();
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
                    "no restore point {name:?}: segment {} (where the newest base backup ends) \
                     is not archived",
                    first.name(size)
                )));
            };
            let mut s = first;
            let mut found = None;
            while s <= end && found.is_none() {
                found = head(s)?
                    .and_then(|sum| sum.restore_points.into_iter().find(|p| &p.name == name))
                    .filter(|p| p.lsn >= base.finish_lsn)
                    .map(|p| (s, p.lsn));
                s = s.next();
            }
            let Some((at, lsn)) = found else {
                return Err(Error::Refused(format!(
                    "no restore point named {name:?} in the WAL archived after the newest base \
                     backup (through segment {})",
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
    Ok(Plan {
        snapshot: entry.id.to_hex(),
        base: base.clone(),
        target: target.to_string(),
        wal,
        reaches,
        kind: target.clone(),
    })
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
    let spool = match &opts.spool {
        Some(s) => std::path::absolute(s).map_err(Error::io("resolving the WAL directory"))?,
        None => {
            let mut name = pgdata.file_name().unwrap_or_default().to_os_string();
            name.push(".restore-wal");
            pgdata.with_file_name(name)
        }
    };
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
    if !plain_path(&spool) {
        return Err(Error::Refused(format!(
            "the WAL directory {} has characters restore_command cannot carry safely: pass \
             --wal-dir with letters, digits and / . _ - only",
            spool.display()
        )));
    }
    let system_identifier = plan.base.system_identifier;
    std::fs::create_dir_all(&spool).map_err(Error::io(format!("creating {}", spool.display())))?;
    let mut wal_bytes = 0;
    for file in &plan.wal {
        if opts.cancel.is_cancelled() {
            return Err(Error::Repository(holdfast_repository::Error::Cancelled));
        }
        let (_, data) =
            holdfast_repository::archive::load(repo, &archive_name(system_identifier, file))?;
        write_atomically(&spool.join(file), &data)?;
        wal_bytes += data.len() as u64;
    }
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
    configure(&pgdata, &spool, &plan.kind)?;
    own_like_the_data(&pgdata, &spool)?;
    Ok(Restored { plan, pgdata, spool, wal_bytes })
}

/// Writes the recovery configuration.
fn configure(pgdata: &Path, spool: &Path, target: &Target) -> Result<(), Error> {
    let _ = std::fs::remove_file(pgdata.join("standby.signal"));
    std::fs::File::create(pgdata.join("recovery.signal"))
        .map_err(Error::io("writing recovery.signal"))?;
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut lines = vec![
        String::new(),
        format!(
            "# Added by holdfast pg restore at {}: recovery to {target}.",
            jiff::Timestamp::now()
        ),
        format!("restore_command = {}", quote(&format!("cp \"{}/%f\" \"%p\"", spool.display()))),
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
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&auto)
        .map_err(Error::io(format!("opening {}", auto.display())))?;
    f.write_all((lines.join("\n") + "\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(Error::io(format!("writing {}", auto.display())))?;
    Ok(())
}

/// PostgreSQL refuses a data directory others can read or that it does not own: the directory
/// (not part of the backup) and the spool follow the owner of the restored files.
fn own_like_the_data(pgdata: &Path, spool: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
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
