//! Locks (format §12.1): prune never runs beside a backup, whatever its safety delay, and a backup
//! whose handle read the index before a prune re-reads it under its lock.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use holdfast_repository::backend::FileType;
use holdfast_repository::backup::{self, BackupOptions, ParentChoice};
use holdfast_repository::check::{self, CheckOptions};
use holdfast_repository::forget;
use holdfast_repository::lock::LockKind;
use holdfast_repository::prune::{self, PruneOptions};
use holdfast_repository::restore::{self, RestoreOptions};
use holdfast_repository::{Error, Repository};

use crate::support::*;

const ZERO: PruneOptions =
    PruneOptions { safety_delay: Duration::ZERO, dry_run: false, max_unused: 0.05 };

fn open(dir: &Path) -> Repository {
    Repository::open(local_backend(dir), PASSWORD).unwrap()
}

#[test]
fn prune_is_refused_while_a_shared_lock_is_held_and_runs_once_it_is_released() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = init_local(&dir);
    let held = open(&dir).lock(LockKind::Shared, "backup").unwrap();
    let err = prune::prune(&repo, &ZERO).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("shared lock by backup") && msg.contains("holdfast repo unlock"), "{msg}");
    // Other shared holders are not refused.
    drop(open(&dir).lock(LockKind::Shared, "restore").unwrap());
    // An exclusive holder refuses shared ones too.
    drop(held);
    assert!(repo.backend().list(FileType::Lock).unwrap().is_empty(), "the lock file is removed");
    let exclusive = open(&dir).lock(LockKind::Exclusive, "prune").unwrap();
    let err = open(&dir).lock(LockKind::Shared, "backup").unwrap_err();
    assert!(err.to_string().contains("an exclusive lock by prune"), "{err}");
    drop(exclusive);
    prune::prune(&repo, &ZERO).unwrap();
}

/// Twenty backups race a prune that runs with no safety delay in a loop, on data that shares
/// chunks with snapshots forgotten just before: the backups deduplicate against exactly the packs
/// prune wants to delete. Every snapshot must restore and `check --read-data` stay clean.
#[test]
fn prune_with_no_delay_racing_twenty_backups_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = init_local(&dir);
    let shared = random_bytes(7, 3 * 1024 * 1024);
    let srcs: Vec<_> = (0..20)
        .map(|i| {
            let s = tmp.path().join(format!("src{i:02}"));
            fs::create_dir_all(&s).unwrap();
            fs::write(s.join("shared"), &shared).unwrap();
            fs::write(s.join("own"), random_bytes(100 + i, 300_000)).unwrap();
            s
        })
        .collect();
    // Old snapshots holding the shared data (and some of their own), then forgotten: prune's
    // first target.
    let old = tmp.path().join("old");
    fs::create_dir_all(&old).unwrap();
    fs::write(old.join("shared"), &shared).unwrap();
    fs::write(old.join("gone"), random_bytes(5, 2 * 1024 * 1024)).unwrap();
    backup::backup_paths(&repo, std::slice::from_ref(&old), &BackupOptions::new()).unwrap();
    let all: Vec<_> = repo.snapshots().unwrap().into_iter().map(|s| s.id).collect();
    forget::remove_snapshots(&repo, &all).unwrap();

    let done = AtomicBool::new(false);
    let prunes = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    let attempts = AtomicUsize::new(0);
    let next = AtomicUsize::new(0);
    let ids = std::thread::scope(|sc| {
        let pruner = sc.spawn(|| {
            let repo = open(&dir);
            while !done.load(Ordering::SeqCst) {
                match prune::prune(&repo, &ZERO) {
                    Ok(r) => {
                        if r.deleted_packs > 0 {
                            prunes.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Err(Error::Locked { .. }) => {
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => panic!("prune failed: {e}"),
                }
                attempts.fetch_add(1, Ordering::SeqCst);
            }
        });
        let workers: Vec<_> = (0..3)
            .map(|_| {
                sc.spawn(|| {
                    // One handle per worker, opened once: its index goes stale as prune runs.
                    let repo = open(&dir);
                    let mut ids = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(s) = srcs.get(i) else { break };
                        let opts =
                            BackupOptions { parent: ParentChoice::None, ..BackupOptions::new() };
                        let r = loop {
                            match backup::backup_paths(&repo, std::slice::from_ref(s), &opts) {
                                Err(Error::Locked { .. }) => std::thread::yield_now(),
                                other => break other.unwrap(),
                            }
                        };
                        ids.push((r.id, s.clone()));
                        // Let the pruner try again between backups, so it finds moments when
                        // no backup holds the repository as well as moments when one does.
                        let seen = attempts.load(Ordering::SeqCst);
                        while attempts.load(Ordering::SeqCst) == seen {
                            std::thread::yield_now();
                        }
                    }
                    ids
                })
            })
            .collect();
        let ids: Vec<_> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
        done.store(true, Ordering::SeqCst);
        pruner.join().unwrap();
        ids
    });
    assert_eq!(ids.len(), 20);
    assert!(prunes.load(Ordering::SeqCst) > 0, "prune never deleted anything");
    assert!(refused.load(Ordering::SeqCst) > 0, "prune never met a running backup");
    let repo = open(&dir);
    let report =
        check::check(&repo, &CheckOptions { read_data: true, ..Default::default() }).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    for (id, src) in &ids {
        let s = repo.find_snapshot(&id.to_hex()).unwrap();
        let target = tmp.path().join(format!("restore-{}", id.short()));
        restore::restore(&repo, &s.snapshot.tree, &target, &RestoreOptions::default()).unwrap();
        assert_same_tree(src, &target.join(src.file_name().unwrap()));
    }
    assert!(repo.backend().list(FileType::Lock).unwrap().is_empty(), "every lock was released");
}
