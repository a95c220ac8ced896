//! Expiring archived WAL: deleting the WAL files no restore from this repository can read.
//!
//! A restore replays from the start of a base backup (`START WAL LOCATION`), so WAL before the
//! start of a cluster's oldest base backup is never read again, on any timeline: WAL follows
//! base backups, as in pgBackRest and Barman, and forgetting base backups is what frees it.
//! Timeline history files are always kept (a restore following timelines needs every one, and
//! they are a few bytes).
//!
//! Not every base backup is one holdfast can read the start of: `pg_basebackup`'s tar stored
//! through `datasafed push` (KubeBlocks' Full backups) is an opaque stream, and so is anything
//! else in the repository. Such a snapshot may need WAL from a little before it was taken (the
//! server chose its start as it began), so WAL archived later than [`UNRECOGNIZED_MARGIN`]
//! before the oldest snapshot that is not a recognized base backup is kept as well: as those
//! snapshots expire, their WAL follows. (A base backup holdfast takes records its start in its
//! labels; those of other clusters say they are not this cluster's.)
//!
//! Deleting is the dangerous verb, so expiry first proves nothing needs what it deletes:
//! - it holds the repository's exclusive lock, and every base backup holds a shared lock from
//!   before `pg_basebackup` starts until its snapshot is saved, so no base backup whose start is
//!   not yet recorded can be running;
//! - it reads every snapshot, and refuses when one cannot be read or a base backup's labels do
//!   not parse (either may be a base backup that needs the WAL);
//! - it refuses for a cluster with no snapshot at all to go by (its first base backup may be on
//!   its way);
//! - it deletes oldest first and stops at the first file it must keep, so what remains is one
//!   stretch, whether it finishes or stops halfway.
//!
//! WAL archived meanwhile (`wal-push`, `wal-stream`) takes no lock. It is kept: it is archived
//! after every snapshot taken so far, and its segments are numbered at or above the start of
//! every base backup on its timeline. (After a restore to an earlier point, the new timeline's
//! segments may be numbered below the start of a base backup of the abandoned timeline; those
//! are not needed by that backup, and a base backup of the new timeline holds its lock.)
//!
//! WAL that something outside the repository reads (a standby or a base backup kept elsewhere
//! whose `restore_command` is `wal-fetch`) is not known here.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use holdfast_repository::Repository;
use holdfast_repository::archive;
use holdfast_repository::backend::ObjectInfo;
use holdfast_repository::lock::LockKind;
use serde::Serialize;

use crate::Error;
use crate::base_backup::{BaseBackup, TAG};
use crate::lsn::{Segment, check_segment_size};
use crate::wal_archive::{archive_name, clusters_in};

/// WAL archived later than this before a snapshot that is not a recognized base backup is kept:
/// the time from `pg_basebackup` choosing its start to the snapshot's own time, and the clocks
/// of the hosts involved, fit well within it.
pub const UNRECOGNIZED_MARGIN: Duration = Duration::from_secs(3600);

/// What to expire.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only this cluster (else every cluster with WAL in the repository).
    pub system_identifier: Option<u64>,
    /// Report what would be deleted, delete nothing, take no lock.
    pub dry_run: bool,
}

/// What expiry did (or would do) to one cluster's WAL.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Expired {
    /// The cluster.
    pub system_identifier: u64,
    /// Why nothing was considered, when so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The oldest base backup's snapshot id: its start is the line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_base_backup: Option<String>,
    /// The segment holding the oldest base backup's start: it and everything after it stay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_kept: Option<String>,
    /// The oldest snapshot that is not a recognized base backup, when there is one: WAL archived
    /// later than [`UNRECOGNIZED_MARGIN`] before it stays.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_back_by: Option<String>,
    /// WAL file names deleted (or, in a dry run, to delete), oldest first.
    pub deleted: Vec<String>,
    /// Their stored bytes.
    pub deleted_bytes: u64,
    /// WAL files kept.
    pub kept: usize,
}

impl Expired {
    fn skipped(system_identifier: u64, why: String) -> Self {
        Expired {
            system_identifier,
            skipped: Some(why),
            oldest_base_backup: None,
            first_kept: None,
            held_back_by: None,
            deleted: Vec::new(),
            deleted_bytes: 0,
            kept: 0,
        }
    }
}

/// What the repository's snapshots say about the WAL they need.
struct Snapshots {
    /// Recognized base backups (short snapshot id, what it records), by cluster.
    bases: BTreeMap<u64, Vec<(String, BaseBackup)>>,
    /// The oldest snapshot that is not a recognized base backup: its short id and time.
    unrecognized: Option<(String, jiff::Timestamp)>,
}

/// Reads every snapshot, or refuses naming the one that cannot be judged.
fn judge(repo: &Repository) -> Result<Snapshots, Error> {
    let listing = repo.snapshot_listing()?;
    if let Some(bad) = listing.unreadable.first() {
        return Err(Error::ExpiryRefused(format!(
            "snapshot {} cannot be read ({}); it may be a base backup that needs the WAL: repair \
             it (`holdfast repo repair snapshots`) or forget it first",
            bad.id, bad.error
        )));
    }
    let mut out = Snapshots { bases: BTreeMap::new(), unrecognized: None };
    for entry in listing.entries {
        if !entry.snapshot.tags.iter().any(|t| t == TAG) {
            let time = entry.snapshot.time;
            if out.unrecognized.as_ref().is_none_or(|(_, oldest)| time < *oldest) {
                out.unrecognized = Some((entry.id.short(), time));
            }
            continue;
        }
        let base = BaseBackup::from_labels(&entry.snapshot.labels).map_err(|e| {
            Error::ExpiryRefused(format!(
                "snapshot {} is tagged {TAG} but its labels cannot be read ({e}), so the WAL it \
                 needs is unknown: forget it first if it is not a base backup",
                entry.id.short()
            ))
        })?;
        out.bases.entry(base.system_identifier).or_default().push((entry.id.short(), base));
    }
    Ok(out)
}

/// The segment holding the start of the oldest of `bases` (named with the cluster's segment
/// size) and that backup's snapshot id.
fn oldest_start(bases: &[(String, BaseBackup)]) -> Result<Option<(String, &str)>, Error> {
    let sizes: BTreeSet<u64> = bases.iter().map(|(_, b)| b.wal_segment_size).collect();
    let Some((id, oldest)) = bases.iter().min_by_key(|(_, b)| b.start_lsn) else {
        return Ok(None);
    };
    let [size] = sizes.into_iter().collect::<Vec<_>>()[..] else {
        return Err(Error::ExpiryRefused(
            "the cluster's base backups record different WAL segment sizes".into(),
        ));
    };
    check_segment_size(size)?;
    let first = Segment::of(oldest.timeline, oldest.start_lsn, size).name(size);
    Ok(Some((first, id.as_str())))
}

/// Where archived WAL file `file` lies: the 16 hex digits of its segment's log and number (which
/// order segments as their numbers do, whatever the segment size), or `None` for a timeline
/// history file or a name that is not WAL (kept).
fn position(file: &str) -> Option<&str> {
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let segment = file.get(..24).filter(|s| hex(s))?;
    let rest = &file[24..];
    let backup = rest
        .strip_prefix('.')
        .and_then(|r| r.strip_suffix(".backup"))
        .is_some_and(|offset| offset.len() == 8 && hex(offset));
    (rest.is_empty() || rest == ".partial" || backup).then(|| &segment[8..])
}

/// Expires archived WAL as the module describes.
///
/// # Errors
/// [`Error::ExpiryRefused`] when a snapshot cannot be judged, or the named cluster has nothing
/// to go by (without a name, such a cluster is reported as skipped); the repository's lock
/// errors when another process holds a lock; repository errors. A failure partway leaves the
/// oldest files deleted and the rest in place.
pub fn expire(repo: &Repository, opts: &Options) -> Result<Vec<Expired>, Error> {
    let lock =
        if opts.dry_run { None } else { Some(repo.lock(LockKind::Exclusive, "pg wal expire")?) };
    // Listed under the lock: a base backup that finished before it was granted is seen.
    let snapshots = judge(repo)?;
    let listed = archive::list(repo)?;
    let ids = match opts.system_identifier {
        Some(id) => vec![id],
        None => clusters_in(&listed),
    };
    let mut out = Vec::new();
    for id in ids {
        match expire_cluster(repo, id, &snapshots, &listed, lock.as_ref()) {
            Err(Error::ExpiryRefused(why)) if opts.system_identifier.is_none() => {
                out.push(Expired::skipped(id, why));
            }
            other => out.push(other?),
        }
    }
    Ok(out)
}

fn expire_cluster(
    repo: &Repository,
    id: u64,
    snapshots: &Snapshots,
    listed: &[ObjectInfo],
    lock: Option<&holdfast_repository::lock::RepoLock>,
) -> Result<Expired, Error> {
    let base = oldest_start(snapshots.bases.get(&id).map_or(&[], Vec::as_slice))?;
    let held = snapshots.unrecognized.as_ref().map(|(snapshot, time)| {
        let before = SystemTime::from(*time).checked_sub(UNRECOGNIZED_MARGIN);
        (before.unwrap_or(SystemTime::UNIX_EPOCH), format!("snapshot {snapshot} of {time}"))
    });
    if base.is_none() && held.is_none() {
        return Err(Error::ExpiryRefused(format!(
            "the cluster with system identifier {id} has no base backup in the repository, so \
             every WAL file may still be needed: take one first"
        )));
    }
    let prefix = format!("pg-{id}-");
    let mut files: Vec<(&str, String, u64, SystemTime)> = Vec::new();
    let mut others = 0;
    for o in listed {
        let Some(file) = o.name.strip_prefix(&prefix) else { continue };
        match position(file) {
            Some(at) => files.push((at, file.to_string(), o.size, o.last_modified)),
            None => others += 1,
        }
    }
    // Oldest first (by segment, then name: a segment before its `.backup` and `.partial`).
    files.sort_unstable();
    let line = base.as_ref().map(|(first, _)| &first[8..]);
    let keep = |at: &str, archived: SystemTime| {
        line.is_some_and(|l| at >= l) || held.as_ref().is_some_and(|(t, _)| archived >= *t)
    };
    // Up to the first file that stays, so what remains is one stretch.
    let doomed = files.iter().take_while(|(at, _, _, archived)| !keep(at, *archived)).count();
    let mut expired = Expired {
        system_identifier: id,
        skipped: None,
        oldest_base_backup: base.as_ref().map(|(_, snapshot)| snapshot.to_string()),
        first_kept: base.as_ref().map(|(first, _)| first.clone()),
        held_back_by: held.map(|(_, what)| what),
        deleted: Vec::new(),
        deleted_bytes: 0,
        kept: others + files.len() - doomed,
    };
    for (_, file, bytes, _) in &files[..doomed] {
        if let Some(lock) = lock {
            // A lock others may already consider stale protects nothing.
            lock.check()?;
            archive::delete(repo, &archive_name(id, file))?;
        }
        expired.deleted_bytes += bytes;
        expired.deleted.push(file.clone());
    }
    Ok(expired)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use holdfast_repository::backend::memory::MemoryBackend;
    use holdfast_repository::backend::{Backend, BackendError, BackendResult, FileType};
    use holdfast_repository::backup::{BackupOptions, backup_reader};
    use holdfast_repository::crypto::KdfParams;
    use holdfast_repository::{Id, InitOptions};

    use bytes::Bytes;

    use super::*;
    use crate::Lsn;
    use crate::lsn::DEFAULT_SEGMENT_SIZE;

    const SIZE: u64 = DEFAULT_SEGMENT_SIZE;

    /// A backend whose archive deletes fail from the `n`th on (counting from 1).
    struct FailingDeletes {
        inner: MemoryBackend,
        deletes: AtomicU32,
        fail_from: u32,
    }

    impl Backend for FailingDeletes {
        fn location(&self) -> String {
            "failing-deletes".into()
        }
        fn create(&self, ft: FileType, name: &str, data: Bytes) -> BackendResult<()> {
            self.inner.create(ft, name, data)
        }
        fn get(&self, ft: FileType, name: &str) -> BackendResult<Bytes> {
            self.inner.get(ft, name)
        }
        fn get_range(&self, ft: FileType, n: &str, o: u64, l: u64) -> BackendResult<Bytes> {
            self.inner.get_range(ft, n, o, l)
        }
        fn list(&self, ft: FileType) -> BackendResult<Vec<ObjectInfo>> {
            self.inner.list(ft)
        }
        fn delete(&self, ft: FileType, name: &str) -> BackendResult<()> {
            if ft == FileType::Archive
                && self.deletes.fetch_add(1, Ordering::SeqCst) + 1 >= self.fail_from
            {
                return Err(BackendError::Permanent {
                    backend: "failing-deletes".into(),
                    op: "delete",
                    path: name.into(),
                    message: "injected failure".into(),
                });
            }
            self.inner.delete(ft, name)
        }
        fn stat(&self, ft: FileType, name: &str) -> BackendResult<ObjectInfo> {
            self.inner.stat(ft, name)
        }
    }

    fn repo_on(backend: Arc<dyn Backend>) -> Repository {
        let opts = InitOptions { kdf: KdfParams::insecure_fast(), ..Default::default() };
        Repository::init(backend, b"pw", &opts).unwrap()
    }

    /// A base backup snapshot of cluster `system` starting inside `segment` of `timeline`.
    fn base(repo: &Repository, system: u64, timeline: u32, segment: u64) -> Id {
        let now = jiff::Timestamp::now();
        let b = BaseBackup {
            system_identifier: system,
            version: "16.4".into(),
            version_num: 160_004,
            timeline,
            start_lsn: Lsn(segment * SIZE + 0x28),
            finish_lsn: Lsn(segment * SIZE + 0x1_0000),
            start_time: now,
            finish_time: now,
            wal_segment_size: SIZE,
            block_size: 8192,
            wal_in_archive: true,
        };
        let mut o = BackupOptions::new();
        o.tags = vec![TAG.into()];
        o.labels = b.labels();
        backup_reader(repo, &b"pgdata"[..], "base.tar", &o).unwrap().id
    }

    fn push(repo: &Repository, system: u64, file: &str) {
        archive::store(repo, &archive_name(system, file), file.as_bytes(), serde_json::json!({}))
            .unwrap();
    }

    fn seg(timeline: u32, number: u64) -> String {
        Segment { timeline, number }.name(SIZE)
    }

    /// The archived WAL file names of `system`, sorted.
    fn archived(repo: &Repository, system: u64) -> Vec<String> {
        let prefix = format!("pg-{system}-");
        archive::list(repo)
            .unwrap()
            .into_iter()
            .filter_map(|o| o.name.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    /// Segments 1 to 12 of timeline 1 with a `.partial` and a `.backup` file low down, timeline
    /// 2's history file and its segments 3 and 4.
    fn a_cluster_archive(repo: &Repository, system: u64) {
        for n in 1..=12 {
            push(repo, system, &seg(1, n));
        }
        push(repo, system, &format!("{}.partial", seg(1, 4)));
        push(repo, system, &format!("{}.00000028.backup", seg(1, 3)));
        push(repo, system, "00000002.history");
        push(repo, system, &seg(2, 3));
        push(repo, system, &seg(2, 4));
    }

    #[test]
    fn wal_below_the_oldest_base_backup_goes_oldest_first_and_history_stays() {
        let repo = repo_on(Arc::new(MemoryBackend::new()));
        a_cluster_archive(&repo, 7);
        let older = base(&repo, 7, 1, 5);
        base(&repo, 7, 1, 9);
        let before = archived(&repo, 7);

        let dry = expire(&repo, &Options { dry_run: true, ..Default::default() }).unwrap();
        assert_eq!(archived(&repo, 7), before, "a dry run deletes nothing");
        let done = expire(&repo, &Options::default()).unwrap();
        assert_eq!(dry, done, "a dry run reports what the real one does");
        let [e] = &done[..] else { panic!("{done:?}") };
        assert_eq!(e.oldest_base_backup.as_deref(), Some(older.short().as_str()));
        assert_eq!(e.first_kept.as_deref(), Some(seg(1, 5).as_str()));
        let expected = vec![
            seg(1, 1),
            seg(1, 2),
            seg(1, 3),
            format!("{}.00000028.backup", seg(1, 3)),
            seg(2, 3),
            seg(1, 4),
            format!("{}.partial", seg(1, 4)),
            seg(2, 4),
        ];
        assert_eq!(e.deleted, expected, "oldest segment first");
        assert!(e.deleted_bytes > 0);
        let mut left = vec!["00000002.history".to_string()];
        left.extend((5..=12).map(|n| seg(1, n)));
        left.sort();
        assert_eq!(archived(&repo, 7), left);
        assert_eq!(e.kept, left.len());

        // Forgetting the older base backup frees the WAL only it needed.
        holdfast_repository::forget::remove_snapshots(&repo, &[older]).unwrap();
        let again = expire(&repo, &Options::default()).unwrap();
        assert_eq!(again[0].deleted, (5..=8).map(|n| seg(1, n)).collect::<Vec<_>>());
        let mut left = vec!["00000002.history".to_string()];
        left.extend((9..=12).map(|n| seg(1, n)));
        left.sort();
        assert_eq!(archived(&repo, 7), left);
    }

    #[test]
    fn a_cluster_without_a_base_backup_keeps_all_its_wal() {
        let repo = repo_on(Arc::new(MemoryBackend::new()));
        a_cluster_archive(&repo, 7);
        a_cluster_archive(&repo, 8);
        // Cluster 7's base backups say nothing about cluster 8's WAL.
        base(&repo, 7, 1, 11);
        let eight = archived(&repo, 8);

        let done = expire(&repo, &Options::default()).unwrap();
        let by: BTreeMap<u64, &Expired> = done.iter().map(|e| (e.system_identifier, e)).collect();
        assert!(by[&8].skipped.as_deref().is_some_and(|s| s.contains("no base backup")));
        assert!(by[&8].deleted.is_empty());
        assert_eq!(archived(&repo, 8), eight);
        assert_eq!(by[&7].deleted.len(), 14, "{:?}", by[&7].deleted);

        let named = Options { system_identifier: Some(8), ..Default::default() };
        let e = expire(&repo, &named).unwrap_err();
        assert!(matches!(e, Error::ExpiryRefused(_)), "{e}");
        assert!(e.to_string().contains("no base backup"), "{e}");
        assert_eq!(archived(&repo, 8), eight);
    }

    #[test]
    fn a_snapshot_that_cannot_be_judged_refuses_expiry() {
        let backend = Arc::new(MemoryBackend::new());
        let repo = repo_on(backend.clone());
        a_cluster_archive(&repo, 7);
        base(&repo, 7, 1, 9);
        let damaged = base(&repo, 7, 1, 2);
        let before = archived(&repo, 7);
        // The older base backup's snapshot file is damaged: it may need WAL from segment 2.
        backend.delete(FileType::Snapshot, &damaged.to_hex()).unwrap();
        backend.create(FileType::Snapshot, &damaged.to_hex(), Bytes::from_static(b"junk")).unwrap();
        let e = expire(&repo, &Options::default()).unwrap_err();
        assert!(matches!(e, Error::ExpiryRefused(_)), "{e}");
        assert!(e.to_string().contains(&damaged.to_hex()), "{e}");
        assert_eq!(archived(&repo, 7), before);
        backend.delete(FileType::Snapshot, &damaged.to_hex()).unwrap();

        // A snapshot tagged as a base backup whose labels do not say where it starts.
        let mut o = BackupOptions::new();
        o.tags = vec![TAG.into()];
        backup_reader(&repo, &b"?"[..], "base.tar", &o).unwrap();
        let e = expire(&repo, &Options::default()).unwrap_err();
        assert!(e.to_string().contains("labels cannot be read"), "{e}");
        assert_eq!(archived(&repo, 7), before);
    }

    /// A snapshot that is not a base backup holdfast recognizes (a `datasafed push` of
    /// `pg_basebackup`'s tar, say), taken at `time`.
    fn opaque(repo: &Repository, time: jiff::Timestamp) {
        let mut o = BackupOptions::new();
        o.tags = vec!["datasafed".into()];
        o.time = Some(time);
        backup_reader(repo, &b"a tar stream"[..], "base.tar", &o).unwrap();
    }

    #[test]
    fn a_snapshot_holdfast_cannot_read_holds_back_the_wal_archived_before_it() {
        let repo = repo_on(Arc::new(MemoryBackend::new()));
        a_cluster_archive(&repo, 7);
        base(&repo, 7, 1, 9);
        let before = archived(&repo, 7);
        // Taken now: every segment was archived less than an hour before it, so all stay.
        let now = jiff::Timestamp::now();
        opaque(&repo, now);
        let done = expire(&repo, &Options::default()).unwrap();
        assert!(done[0].deleted.is_empty(), "{done:?}");
        assert!(done[0].held_back_by.as_deref().is_some_and(|h| h.contains("snapshot")));
        assert_eq!(archived(&repo, 7), before);

        // The opaque snapshot taken two hours after the WAL was archived: the base backup's
        // line decides for cluster 7, and cluster 8, without a base backup of its own, keeps
        // only what was archived within the hour before that snapshot (here nothing).
        let repo = repo_on(Arc::new(MemoryBackend::new()));
        a_cluster_archive(&repo, 7);
        a_cluster_archive(&repo, 8);
        base(&repo, 7, 1, 9);
        opaque(&repo, now + jiff::SignedDuration::from_hours(2));
        let done = expire(&repo, &Options::default()).unwrap();
        assert_eq!(done[0].deleted.len(), 12, "{done:?}");
        assert_eq!(done[1].system_identifier, 8);
        assert_eq!(done[1].skipped, None);
        assert_eq!(archived(&repo, 8), vec!["00000002.history".to_string()]);
    }

    #[test]
    fn expiry_does_not_run_beside_a_base_backup_that_holds_its_lock() {
        let repo = repo_on(Arc::new(MemoryBackend::new()));
        a_cluster_archive(&repo, 7);
        base(&repo, 7, 1, 9);
        let before = archived(&repo, 7);
        // What `base_backup::run` holds from before pg_basebackup starts, while the backup's
        // start is recorded nowhere.
        let running = repo.lock(LockKind::Shared, "postgres base backup").unwrap();
        let e = expire(&repo, &Options::default()).unwrap_err();
        assert!(e.to_string().contains("postgres base backup"), "{e}");
        assert_eq!(archived(&repo, 7), before);
        drop(running);
        assert_eq!(expire(&repo, &Options::default()).unwrap()[0].deleted.len(), 12);
    }

    #[test]
    fn an_expiry_that_fails_partway_leaves_no_gap_and_finishes_when_run_again() {
        let backend = Arc::new(FailingDeletes {
            inner: MemoryBackend::new(),
            deletes: AtomicU32::new(0),
            fail_from: 4,
        });
        let repo = repo_on(backend.clone());
        for n in 1..=12 {
            push(&repo, 7, &seg(1, n));
        }
        base(&repo, 7, 1, 9);
        let e = expire(&repo, &Options::default()).unwrap_err();
        assert!(e.to_string().contains("injected failure"), "{e}");
        // The three oldest went; what remains is one unbroken run up to the newest.
        assert_eq!(archived(&repo, 7), (4..=12).map(|n| seg(1, n)).collect::<Vec<_>>());
        // The failed run's lock is gone with it.
        assert!(repo.locks().unwrap().is_empty());
        // Run again (the backend still fails from its fourth delete): three more, still no gap.
        backend.deletes.store(0, Ordering::SeqCst);
        assert!(expire(&repo, &Options::default()).is_err());
        assert_eq!(archived(&repo, 7), (7..=12).map(|n| seg(1, n)).collect::<Vec<_>>());
        backend.deletes.store(0, Ordering::SeqCst);
        let done = expire(&repo, &Options::default()).unwrap();
        assert_eq!(done[0].deleted, vec![seg(1, 7), seg(1, 8)]);
        assert_eq!(archived(&repo, 7), (9..=12).map(|n| seg(1, n)).collect::<Vec<_>>());
    }
}
