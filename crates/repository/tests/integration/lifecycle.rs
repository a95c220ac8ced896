//! Dedup, parents, keys, forget and two-phase prune, including concurrent writers.

use std::fs;
use std::path::Path;
use std::time::Duration;

use holdfast_repository::backend::FileType;
use holdfast_repository::backup::{self, BackupOptions, ParentChoice};
use holdfast_repository::check::{self, CheckOptions};
use holdfast_repository::crypto::KdfParams;
use holdfast_repository::forget::{self, KeepPolicy};
use holdfast_repository::prune::{self, PruneOptions};
use holdfast_repository::restore::{self, RestoreOptions};
use holdfast_repository::{Error, Repository};

use crate::support::*;

fn make_tree(dir: &Path, seed: u64, files: usize) {
    fs::create_dir_all(dir).unwrap();
    for i in 0..files {
        fs::write(
            dir.join(format!("f{i}")),
            random_bytes(seed * 1000 + i as u64, 200_000 + i * 1000),
        )
        .unwrap();
    }
}

fn assert_clean(repo: &Repository) {
    let report =
        check::check(repo, &CheckOptions { read_data: true, ..Default::default() }).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}

fn restore_matches(repo: &Repository, snap: &str, src: &Path, scratch: &Path) {
    let s = repo.find_snapshot(snap).unwrap();
    let target = scratch.join(format!("restore-{}", s.id.short()));
    restore::restore(repo, &s.snapshot.tree, &target, &RestoreOptions::default()).unwrap();
    assert_same_tree(src, &target.join(src.file_name().unwrap()));
}

#[test]
fn second_backup_of_the_same_data_adds_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 1, 10);
    let repo = init_local(&tmp.path().join("repo"));
    let first =
        backup::backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    assert!(first.snapshot.summary.data_blobs > 10);
    let packs = repo.backend().list(FileType::Pack).unwrap().len();
    let opts = BackupOptions { parent: ParentChoice::None, ..BackupOptions::new() };
    let second = backup::backup_paths(&repo, std::slice::from_ref(&src), &opts).unwrap();
    assert_eq!(second.progress.files_read, 10, "no parent: every file is read");
    assert_eq!(second.snapshot.summary.data_blobs, 0);
    assert_eq!(second.snapshot.summary.tree_blobs, 0);
    assert_eq!(second.snapshot.summary.data_added, 0);
    assert_eq!(repo.backend().list(FileType::Pack).unwrap().len(), packs);
    assert_eq!(first.snapshot.tree, second.snapshot.tree);
}

#[test]
fn parent_snapshot_skips_unchanged_files_without_reading_them() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 2, 20);
    let repo = init_local(&tmp.path().join("repo"));
    let first =
        backup::backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    assert_eq!(first.progress.files_read, 20);
    fs::write(src.join("f3"), b"changed").unwrap();
    fs::write(src.join("new"), b"new file").unwrap();
    let second =
        backup::backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    assert_eq!(second.snapshot.parent, Some(first.id));
    assert_eq!(second.progress.files_read, 2, "only the changed and the new file are read");
    assert_eq!(second.progress.files_done, 21);
    let s = &second.snapshot.summary;
    assert_eq!((s.files_new, s.files_changed, s.files_unmodified), (1, 1, 19));
    restore_matches(&repo, &second.id.to_hex(), &src, tmp.path());
    let d = holdfast_repository::stats::diff(&repo, &first.snapshot.tree, &second.snapshot.tree)
        .unwrap();
    assert_eq!(d.added, vec!["/src/new".to_string()]);
    assert_eq!(d.modified, vec!["/src/f3".to_string()]);
}

#[test]
fn keys_can_be_added_removed_and_changed_without_touching_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let src = tmp.path().join("src");
    make_tree(&src, 3, 2);
    let mut repo = init_local(&dir);
    backup::backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    let packs_before = repo.backend().list(FileType::Pack).unwrap();
    let second = repo.add_key(b"second password", KdfParams::insecure_fast()).unwrap();
    assert_eq!(repo.keys().unwrap().len(), 2);
    let other = Repository::open(local_backend(&dir), b"second password").unwrap();
    assert_eq!(other.key_name(), second);
    let err = repo.remove_key(repo.key_name()).unwrap_err();
    assert!(matches!(err, Error::Key { .. }), "{err}");
    repo.change_password(b"new first", KdfParams::insecure_fast()).unwrap();
    assert!(matches!(
        Repository::open(local_backend(&dir), PASSWORD),
        Err(Error::WrongPassword { .. })
    ));
    let reopened = Repository::open(local_backend(&dir), b"new first").unwrap();
    repo.remove_key(&second[..12]).unwrap();
    assert!(matches!(
        Repository::open(local_backend(&dir), b"second password"),
        Err(Error::WrongPassword { .. })
    ));
    assert_eq!(reopened.backend().list(FileType::Pack).unwrap(), packs_before);
    restore_matches(&reopened, "latest", &src, tmp.path());
}

#[test]
fn forget_then_two_phase_prune_frees_space_and_keeps_survivors_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = init_local(&tmp.path().join("repo"));
    let src = tmp.path().join("src");
    for round in 0..3 {
        let _ = fs::remove_dir_all(&src);
        make_tree(&src, 10 + round, 5);
        backup::backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    }
    let groups =
        forget::forget(&repo, &KeepPolicy { last: 1, ..Default::default() }, false).unwrap();
    assert_eq!(groups[0].remove.len(), 2);
    let bytes_before: u64 =
        repo.backend().list(FileType::Pack).unwrap().iter().map(|o| o.size).sum();
    let delayed =
        PruneOptions { safety_delay: Duration::from_secs(3600), ..PruneOptions::default() };
    let mark = prune::prune(&repo, &delayed).unwrap();
    assert!(mark.marked_packs > 0);
    assert_eq!(mark.deleted_packs, 0, "with a safety delay, phase 1 only marks");
    assert_eq!(mark.pending_plans, 1);
    // A check in between: the marked packs are unindexed but planned, not errors.
    assert_clean(&repo);
    let zero =
        PruneOptions { safety_delay: Duration::ZERO, dry_run: false, ..PruneOptions::default() };
    let sweep = prune::prune(&repo, &zero).unwrap();
    assert_eq!(sweep.deleted_packs, mark.marked_packs);
    assert_eq!(sweep.pending_plans, 0);
    let bytes_after: u64 =
        repo.backend().list(FileType::Pack).unwrap().iter().map(|o| o.size).sum();
    assert!(bytes_after * 2 < bytes_before, "{bytes_after} vs {bytes_before}");
    assert_clean(&repo);
    restore_matches(&repo, "latest", &src, tmp.path());

    let err = forget::forget(&repo, &KeepPolicy::default(), false).unwrap_err();
    assert!(matches!(err, Error::Invalid(_)));
}

#[test]
fn a_backup_whose_handle_read_the_index_before_a_prune_reads_it_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = init_local(&dir);
    let src = tmp.path().join("src");
    make_tree(&src, 20, 4);
    let first =
        backup::backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    // A long-lived handle (a controller's) has loaded the index, which lists the first packs.
    let running = Repository::open(local_backend(&dir), PASSWORD).unwrap();
    // Meanwhile the only snapshot is forgotten and prune deletes every pack.
    forget::remove_snapshots(&repo, &[first.id]).unwrap();
    let zero =
        PruneOptions { safety_delay: Duration::ZERO, dry_run: false, ..PruneOptions::default() };
    let pruned = prune::prune(&repo, &zero).unwrap();
    assert!(pruned.deleted_packs > 0, "{pruned:?}");
    // The old handle's backup re-reads the index under its lock and stores the data again
    // instead of pointing at deleted packs.
    let opts = BackupOptions { parent: ParentChoice::None, ..BackupOptions::new() };
    let late = backup::backup_paths(&running, std::slice::from_ref(&src), &opts).unwrap();
    assert!(late.snapshot.summary.data_blobs > 0, "it deduplicated against deleted packs");
    let sweep = prune::prune(&repo, &zero).unwrap();
    assert_eq!(sweep.deleted_packs, 0, "{sweep:?}");
    let fresh = Repository::open(local_backend(&dir), PASSWORD).unwrap();
    assert_clean(&fresh);
    restore_matches(&fresh, &late.id.to_hex(), &src, tmp.path());
}

#[test]
fn concurrent_backups_and_prune_leave_every_snapshot_restorable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    init_local(&dir);
    let srcs: Vec<_> = (0..2).map(|i| tmp.path().join(format!("src{i}"))).collect();
    for (i, s) in srcs.iter().enumerate() {
        make_tree(s, 30 + i as u64, 8);
        // Shared content across the two writers exercises concurrent dedup of the same blobs.
        fs::write(s.join("shared"), random_bytes(99, 600_000)).unwrap();
    }
    let ids = std::thread::scope(|sc| {
        let backups: Vec<_> = srcs
            .iter()
            .map(|s| {
                let dir = dir.clone();
                sc.spawn(move || {
                    let repo = Repository::open(local_backend(&dir), PASSWORD).unwrap();
                    // A prune holds the repository for a moment: wait for it.
                    repo.set_lock_wait(Duration::from_secs(600));
                    let mut ids = Vec::new();
                    for _ in 0..2 {
                        let opts =
                            BackupOptions { parent: ParentChoice::None, ..BackupOptions::new() };
                        ids.push(
                            backup::backup_paths(&repo, std::slice::from_ref(s), &opts).unwrap().id,
                        );
                    }
                    ids
                })
            })
            .collect();
        let pruner = {
            let dir = dir.clone();
            sc.spawn(move || {
                let repo = Repository::open(local_backend(&dir), PASSWORD).unwrap();
                // Waits for a moment when no backup holds the repository.
                repo.set_lock_wait(Duration::from_secs(600));
                let opts = PruneOptions {
                    safety_delay: Duration::from_secs(3600),
                    dry_run: false,
                    ..PruneOptions::default()
                };
                for _ in 0..3 {
                    prune::prune(&repo, &opts).unwrap();
                }
            })
        };
        pruner.join().unwrap();
        backups.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    let repo = Repository::open(local_backend(&dir), PASSWORD).unwrap();
    let zero =
        PruneOptions { safety_delay: Duration::ZERO, dry_run: false, ..PruneOptions::default() };
    prune::prune(&repo, &zero).unwrap();
    prune::prune(&repo, &zero).unwrap();
    let repo = Repository::open(local_backend(&dir), PASSWORD).unwrap();
    assert_eq!(repo.snapshots().unwrap().len(), 4);
    assert_clean(&repo);
    for (src, snaps) in srcs.iter().zip(&ids) {
        for id in snaps {
            restore_matches(&repo, &id.to_hex(), src, tmp.path());
        }
    }
}
