//! The repository's acceptance criteria, library level: repacking prune, a full disk (through a
//! backend that runs out of space the way a disk does) and special files.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use holdfast_repository::backend::{Backend, BackendError, FileType};
use holdfast_repository::backup::{self, BackupOptions, ParentChoice};
use holdfast_repository::check::{self, CheckOptions};
use holdfast_repository::forget;
use holdfast_repository::prune::{self, PruneOptions};
use holdfast_repository::restore::{self, RestoreOptions};
use holdfast_repository::{Error, Repository};

use crate::support::*;

fn assert_clean(repo: &Repository) {
    let report =
        check::check(repo, &CheckOptions { read_data: true, ..Default::default() }).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}

fn pack_bytes(repo: &Repository) -> u64 {
    repo.backend().list(FileType::Pack).unwrap().iter().map(|o| o.size).sum()
}

#[test]
fn prune_repacks_partly_used_packs_and_everything_stays_restorable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = init_local(&dir);
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    // Small files share packs (1 MiB each), so deleting every other file leaves packs half used.
    for i in 0..24 {
        fs::write(src.join(format!("f{i:02}")), random_bytes(300 + i, 120_000)).unwrap();
    }
    let first =
        backup::backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    for i in (0..24).step_by(2) {
        fs::remove_file(src.join(format!("f{i:02}"))).unwrap();
    }
    let second =
        backup::backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    forget::remove_snapshots(&repo, &[first.id]).unwrap();
    let before = pack_bytes(&repo);

    // With 100% tolerated nothing is repacked (only the first snapshot's tree pack is unused).
    let never = PruneOptions { safety_delay: Duration::ZERO, max_unused: 1.0, dry_run: true };
    let r = prune::prune(&repo, &never).unwrap();
    assert_eq!(r.repacked_packs, 0, "{r:?}");

    // With a safety delay, phase 1 only marks.
    let delayed =
        PruneOptions { safety_delay: Duration::from_secs(3600), ..PruneOptions::default() };
    let mark = prune::prune(&repo, &delayed).unwrap();
    assert!(mark.repacked_packs > 0 && mark.new_packs > 0, "{mark:?}");
    assert_eq!(mark.deleted_packs, 0, "phase 1 deletes nothing");
    let zero = PruneOptions { safety_delay: Duration::ZERO, ..PruneOptions::default() };
    // Between the phases the old packs are planned and the new ones indexed.
    assert_clean(&repo);
    let fresh = Repository::open(local_backend(&dir), PASSWORD).unwrap();
    let target = tmp.path().join("mid");
    restore::restore(&fresh, &second.snapshot.tree, &target, &RestoreOptions::default()).unwrap();
    assert_same_tree(&src, &target.join("src"));

    let sweep = prune::prune(&repo, &zero).unwrap();
    assert_eq!(sweep.resurrected_packs, 0, "repacked blobs live on elsewhere: {sweep:?}");
    assert!(sweep.deleted_packs >= mark.repacked_packs, "{sweep:?}");
    let after = pack_bytes(&repo);
    assert!(after * 10 < before * 7, "repacking freed too little: {after} of {before}");
    let fresh = Repository::open(local_backend(&dir), PASSWORD).unwrap();
    assert_clean(&fresh);
    let target = tmp.path().join("after");
    restore::restore(&fresh, &second.snapshot.tree, &target, &RestoreOptions::default()).unwrap();
    assert_same_tree(&src, &target.join("src"));
    // The repository now meets the target: another prune has nothing to repack.
    let again = prune::prune(&fresh, &zero).unwrap();
    assert_eq!(again.repacked_packs, 0, "{again:?}");
}

/// A backend with a byte budget for new objects (`free`): past it, creates fail the way a full
/// disk does.
fn small_disk(dir: &Path, free: Arc<AtomicU64>) -> Arc<dyn Backend> {
    let inner = local_backend(dir);
    let location = inner.location();
    Arc::new(CreateHook {
        inner,
        hook: move |ft: FileType, name: &str, len: u64| {
            free.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(len))
                .map(|_| ())
                .map_err(|_| BackendError::Permanent {
                    backend: location.clone(),
                    op: "create",
                    path: ft.path(name),
                    message: "No space left on device (os error 28)".into(),
                })
        },
    })
}

#[test]
fn a_full_backend_fails_the_backup_cleanly_and_a_rerun_with_space_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    init_local(&dir);
    let free = Arc::new(AtomicU64::new(3 * 1024 * 1024));
    let repo = Repository::open(small_disk(&dir, free.clone()), PASSWORD).unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..8 {
        fs::write(src.join(format!("f{i}")), random_bytes(500 + i, 1024 * 1024)).unwrap();
    }
    let err =
        backup::backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap_err();
    assert!(matches!(err, Error::Backend(_)), "{err}");
    let line = err.to_string();
    assert!(line.contains("No space left") && !line.contains('\n'), "{line}");
    assert!(repo.snapshots().unwrap().is_empty(), "no snapshot from a failed backup");
    assert_clean(&repo);

    free.store(u64::MAX, Ordering::SeqCst);
    let opts = BackupOptions { parent: ParentChoice::None, ..BackupOptions::new() };
    let r = backup::backup_paths(&repo, std::slice::from_ref(&src), &opts).unwrap();
    assert_clean(&repo);
    let target = tmp.path().join("restore");
    restore::restore(&repo, &r.snapshot.tree, &target, &RestoreOptions::default()).unwrap();
    assert_same_tree(&src, &target.join("src"));
}

fn is_root() -> bool {
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

#[test]
fn fifos_and_device_nodes_are_recreated_with_their_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("special");
    fs::create_dir_all(&src).unwrap();
    let fifo = src.join("pipe");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    fs::set_permissions(&fifo, fs::Permissions::from_mode(0o640)).unwrap();
    let dev = src.join("null");
    let have_dev = is_root()
        && Command::new("mknod").arg(&dev).args(["c", "1", "3"]).status().unwrap().success();
    let repo = init_local(&tmp.path().join("repo"));
    let r = backup::backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    let target = tmp.path().join("restore");
    restore::restore(&repo, &r.snapshot.tree, &target, &RestoreOptions::default()).unwrap();
    let (a, b) =
        (fs::symlink_metadata(&fifo).unwrap(), fs::symlink_metadata(target.join("special/pipe")));
    let b = b.expect("the FIFO is recreated");
    assert!(b.file_type().is_fifo());
    assert_eq!((a.mode(), a.mtime(), a.mtime_nsec()), (b.mode(), b.mtime(), b.mtime_nsec()));
    if have_dev {
        let (a, b) = (
            fs::symlink_metadata(&dev).unwrap(),
            fs::symlink_metadata(target.join("special/null")).unwrap(),
        );
        assert!(b.file_type().is_char_device());
        assert_eq!((a.rdev(), a.mode()), (b.rdev(), b.mode()));
    }
    // A second restore over the first replaces the special files instead of failing.
    restore::restore(&repo, &r.snapshot.tree, &target, &RestoreOptions::default()).unwrap();
    assert_same_kinds(&src, &target.join("special"));
}

fn assert_same_kinds(a: &Path, b: &Path) {
    let names = |d: &Path| {
        let mut v: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name(), e.file_type().unwrap())
            })
            .collect();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    };
    assert_eq!(names(a), names(b));
}
