//! kill -9 in the middle of a backup: the repository stays consistent and a rerun reuses what
//! was uploaded. The test re-runs this test binary as the child that gets killed.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use holdfast_repository::Repository;
use holdfast_repository::backend::FileType;
use holdfast_repository::backup::{self, BackupOptions};
use holdfast_repository::check::{self, CheckOptions};
use holdfast_repository::prune::{self, PruneOptions};

use crate::support::*;

const CHILD_ENV: &str = "HOLDFAST_CRASH_CHILD";

/// The child's part: backs up the directory named in the environment until it is killed.
fn run_child(spec: &str) {
    let (repo_dir, src) = spec.split_once('\n').unwrap();
    let repo = Repository::open(local_backend(std::path::Path::new(repo_dir)), PASSWORD).unwrap();
    let opts = BackupOptions { threads: 1, uploads: 1, ..BackupOptions::new() };
    backup::backup_paths(&repo, &[PathBuf::from(src)], &opts).unwrap();
}

#[test]
fn kill_9_mid_backup_leaves_a_consistent_reusable_repository() {
    // Re-run as the child (same test, role chosen by the environment) so no test is ignored.
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return run_child(&spec);
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..40 {
        fs::write(src.join(format!("f{i:02}")), random_bytes(500 + i, 4 * 1024 * 1024)).unwrap();
    }
    init_local(&repo_dir);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash::kill_9_mid_backup_leaves_a_consistent_reusable_repository",
            "--nocapture",
        ])
        .env(CHILD_ENV, format!("{}\n{}", repo_dir.display(), src.display()))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the child has committed at least two index files, then SIGKILL it.
    let backend = local_backend(&repo_dir);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let indexes = backend.list(FileType::Index).unwrap().len();
        if indexes >= 2 {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("child finished ({status}) before it could be killed; make the input larger");
        }
        assert!(Instant::now() < deadline, "child made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(backend.list(FileType::Snapshot).unwrap().is_empty(), "killed before the snapshot");

    let repo = Repository::open(local_backend(&repo_dir), PASSWORD).unwrap();
    let report =
        check::check(&repo, &CheckOptions { read_data: true, ..Default::default() }).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let indexed_before = repo.index().len();
    assert!(indexed_before > 0);

    let r = backup::backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    let total = 40 * 4 * 1024 * 1024u64;
    assert!(
        r.snapshot.summary.data_added < total,
        "rerun stored {} of {total} bytes: uploaded packs were not reused",
        r.snapshot.summary.data_added
    );
    let target = tmp.path().join("restore");
    holdfast_repository::restore::restore(&repo, &r.snapshot.tree, &target, &Default::default())
        .unwrap();
    assert_same_tree(&src, &target.join("src"));
    let report =
        check::check(&repo, &CheckOptions { read_data: true, ..Default::default() }).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);

    // The killed backup's half-written staged pack files are ignored by everything above; a prune
    // (with no backup running, so no safety delay is needed) removes them.
    let staged = |dir: &std::path::Path| fs::read_dir(dir).map(Iterator::count).unwrap_or(0);
    let left = staged(&repo_dir.join("tmp"));
    let zero = PruneOptions { safety_delay: Duration::ZERO, ..PruneOptions::default() };
    let pruned = prune::prune(&repo, &zero).unwrap();
    assert_eq!(pruned.stale_staged_files, left);
    assert_eq!(staged(&repo_dir.join("tmp")), 0, "stale staged files remain");
}
