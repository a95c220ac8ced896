//! Exact round trips: what goes in comes out, bit for bit and with its metadata.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use holdfast_repository::backend::FileType;
use holdfast_repository::backup::{self, BackupOptions};
use holdfast_repository::check::{self, CheckOptions};
use holdfast_repository::progress::{CancelToken, Progress};
use holdfast_repository::restore::{self, RestoreOptions};
use holdfast_repository::{Error, Repository, stats};

use crate::support::*;

fn set_mtime(p: &std::path::Path, secs: u64, nanos: u32) {
    let f = fs::File::options().write(true).open(p).or_else(|_| fs::File::open(p)).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::new(secs, nanos)).unwrap();
}

#[test]
fn mixed_tree_round_trips_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("a/b/c")).unwrap();
    fs::create_dir_all(src.join("empty")).unwrap();
    fs::write(src.join("big.bin"), random_bytes(1, 12 * 1024 * 1024 + 7)).unwrap();
    let text: String = (0..200_000).map(|i| format!("line {i} of a compressible file\n")).collect();
    fs::write(src.join("a/text.txt"), &text).unwrap();
    fs::write(src.join("a/b/empty-file"), b"").unwrap();
    fs::write(src.join("a/b/c/deep"), b"deep content").unwrap();
    fs::write(src.join("a/secret"), b"0600").unwrap();
    fs::set_permissions(src.join("a/secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(src.join("a/tool.sh"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("a/tool.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("a/text.txt", src.join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", src.join("dangling")).unwrap();
    fs::write(src.join("hard1"), b"shared inode").unwrap();
    fs::hard_link(src.join("hard1"), src.join("a/hard2")).unwrap();
    let odd = src.join(OsStr::from_bytes(b"odd \xff\xfe name\n"));
    fs::write(&odd, b"non-utf8 name").unwrap();
    fs::write(src.join("unicode-ñ-日本"), b"utf8").unwrap();
    xattr::set(src.join("a/secret"), "user.comment", b"kept \x00 binary").unwrap();
    set_mtime(&src.join("a/text.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&src.join("big.bin"), 1_500_000_000, 1);
    // Directory times last: creating entries above changed them.
    set_mtime(&src.join("a/b"), 1_400_000_000, 5);
    set_mtime(&src.join("empty"), 1_300_000_000, 0);

    let repo = init_local(&tmp.path().join("repo"));
    let r = backup::backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    assert_eq!(r.snapshot.summary.files_new, 10);
    let target = tmp.path().join("restore");
    let opts = RestoreOptions { xattrs: true, ..Default::default() };
    restore::restore(&repo, &r.snapshot.tree, &target, &opts).unwrap();
    assert_same_tree(&src, &target.join("src"));
    let restored_xattr = xattr::get(target.join("src/a/secret"), "user.comment").unwrap();
    assert_eq!(restored_xattr.as_deref(), Some(&b"kept \x00 binary"[..]));
    let hl1 = fs::metadata(target.join("src/hard1")).unwrap();
    let hl2 = fs::metadata(target.join("src/a/hard2")).unwrap();
    assert_eq!(hl1.ino(), hl2.ino(), "hardlinks restored as one inode");

    let listing = stats::ls(&repo, &r.snapshot.tree).unwrap();
    assert!(listing.iter().any(|e| e.path == "/src/a/b/c/deep"));
    let report =
        check::check(&repo, &CheckOptions { read_data: true, ..Default::default() }).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.blobs_read > 10);
}

#[test]
fn many_small_files_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("small");
    for d in 0..100 {
        let dir = src.join(format!("d{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..520 {
            fs::write(dir.join(format!("f{f:03}")), format!("file {d}/{f}\n").repeat(1 + f % 7))
                .unwrap();
        }
    }
    let repo = init_local(&tmp.path().join("repo"));
    let r = backup::backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    assert_eq!(r.snapshot.summary.files_new, 52_000);
    assert_eq!(r.progress.files_read, 52_000);
    // Tiny blobs fill packs and index files by count long before by size: both stay bounded
    // (a reader holds an index file whole).
    let mut data_packs = 0;
    for name in repo.index_files() {
        let file = repo.load_index_file(&name).unwrap();
        let blobs: usize = file.packs.iter().map(|p| p.blobs.len()).sum();
        assert!(blobs <= holdfast_repository::INDEX_FILE_BLOBS, "index file of {blobs} blobs");
        for p in &file.packs {
            assert!(
                p.blobs.len() <= holdfast_repository::pack::MAX_PACK_BLOBS,
                "{}",
                p.blobs.len()
            );
            data_packs +=
                usize::from(p.blobs[0].blob_type == holdfast_repository::pack::BlobType::Data);
        }
    }
    assert!(data_packs >= 4, "{data_packs} data packs");
    assert!(repo.index_files().len() >= 2);
    let target = tmp.path().join("restore");
    let p = restore::restore(&repo, &r.snapshot.tree, &target, &RestoreOptions::default()).unwrap();
    assert_eq!(p.files_done, 52_000);
    assert_same_tree(&src, &target.join("small"));
}

#[test]
fn sparse_file_restores_with_holes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("sparse");
    fs::create_dir_all(&src).unwrap();
    let path = src.join("disk.img");
    let f = fs::File::create(&path).unwrap();
    f.set_len(64 * 1024 * 1024).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&random_bytes(2, 100_000), 0).unwrap();
    f.write_all_at(&random_bytes(3, 100_000), 40 * 1024 * 1024).unwrap();
    drop(f);
    let repo = init_local(&tmp.path().join("repo"));
    let r = backup::backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    // Zero chunks dedupe: far less is stored than the file's size.
    assert!(r.snapshot.summary.data_added_packed < 2 * 1024 * 1024, "{:?}", r.snapshot.summary);
    let target = tmp.path().join("restore");
    restore::restore(
        &repo,
        &r.snapshot.tree,
        &target,
        &RestoreOptions { sparse: true, ..Default::default() },
    )
    .unwrap();
    let restored = target.join("sparse/disk.img");
    assert_eq!(
        blake3::hash(&fs::read(&restored).unwrap()),
        blake3::hash(&fs::read(&path).unwrap())
    );
    let allocated = fs::metadata(&restored).unwrap().blocks() * 512;
    assert!(allocated < 8 * 1024 * 1024, "sparse restore allocated {allocated} bytes");
}

#[test]
fn stdin_stream_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = init_local(&tmp.path().join("repo"));
    let data = random_bytes(4, 5 * 1024 * 1024 + 3);
    let r =
        backup::backup_reader(&repo, data.as_slice(), "dump.sql", &BackupOptions::new()).unwrap();
    assert_eq!(r.snapshot.paths, vec!["/dump.sql".to_string()]);
    let node = repo.find_node(&r.snapshot.tree, "/dump.sql").unwrap();
    assert_eq!(node.size, data.len() as u64);
    let mut out = Vec::new();
    restore::dump(&repo, &node, &mut out).unwrap();
    assert!(out == data, "dumped stream differs");
    let target = tmp.path().join("restore");
    restore::restore(&repo, &r.snapshot.tree, &target, &RestoreOptions::default()).unwrap();
    assert!(fs::read(target.join("dump.sql")).unwrap() == data);
}

#[test]
fn progress_is_reported_and_cancellation_stops_the_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("p");
    fs::create_dir_all(&src).unwrap();
    for i in 0..5 {
        fs::write(src.join(format!("f{i}")), random_bytes(10 + i, 1024 * 1024)).unwrap();
    }
    let repo = init_local(&tmp.path().join("repo"));
    let last = Arc::new(Mutex::new(Progress::default()));
    let calls = Arc::new(AtomicU64::new(0));
    let mut opts = BackupOptions::new();
    {
        let (last, calls) = (last.clone(), calls.clone());
        opts.progress = Some(Arc::new(move |p: &Progress| {
            *last.lock().unwrap() = *p;
            calls.fetch_add(1, Ordering::SeqCst);
        }));
    }
    backup::backup_paths(&repo, std::slice::from_ref(&src), &opts).unwrap();
    let p = *last.lock().unwrap();
    assert!(calls.load(Ordering::SeqCst) >= 1);
    assert_eq!((p.files_total, p.bytes_total), (5, 5 * 1024 * 1024));
    assert_eq!((p.files_done, p.bytes_done), (5, 5 * 1024 * 1024));

    // Cancel mid-run: from the progress callback, once it has reported data read. The backend
    // stores the first pack and holds later ones until the cancel, so the backup cannot finish
    // first however fast the machine is.
    let big = tmp.path().join("big");
    fs::create_dir_all(&big).unwrap();
    for i in 0..40 {
        fs::write(big.join(format!("f{i:02}")), random_bytes(100 + i, 1024 * 1024)).unwrap();
    }
    let cancel = CancelToken::new();
    let packs = Arc::new(AtomicU64::new(0));
    let gate = {
        let (open, packs) = (cancel.clone(), packs.clone());
        CreateHook {
            inner: local_backend(&tmp.path().join("repo")),
            hook: move |ft: FileType, _: &str, _: u64| {
                if ft == FileType::Pack && packs.fetch_add(1, Ordering::SeqCst) > 0 {
                    // Held until the cancel; at most a minute, so a backup that ignores
                    // cancellation finishes and fails the test instead of hanging it.
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while !open.is_cancelled() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                Ok(())
            },
        }
    };
    let gated = Repository::open(Arc::new(gate), PASSWORD).unwrap();
    let last = Arc::new(Mutex::new(Progress::default()));
    let mut opts = BackupOptions {
        cancel: cancel.clone(),
        parent: backup::ParentChoice::None,
        ..BackupOptions::new()
    };
    {
        let (last, cancel) = (last.clone(), cancel.clone());
        opts.progress = Some(Arc::new(move |p: &Progress| {
            if p.totals_known && p.bytes_done > 0 {
                cancel.cancel();
            }
            *last.lock().unwrap() = *p;
        }));
    }
    let err = backup::backup_paths(&gated, std::slice::from_ref(&big), &opts).unwrap_err();
    assert!(matches!(err, Error::Cancelled), "got {err}");
    let p = *last.lock().unwrap();
    assert_eq!((p.files_total, p.bytes_total), (40, 40 * 1024 * 1024), "{p:?}");
    assert!(p.files_done < p.files_total && p.bytes_done < p.bytes_total, "ran to the end: {p:?}");
    let packs = packs.load(Ordering::SeqCst);
    assert!((1..40).contains(&packs), "{packs} packs written of 40 MiB in 1 MiB packs");
    let repo = Repository::open(local_backend(&tmp.path().join("repo")), PASSWORD).unwrap();
    assert_eq!(repo.snapshots().unwrap().len(), 1, "a cancelled backup writes no snapshot");
    let report =
        check::check(&repo, &CheckOptions { read_data: true, ..Default::default() }).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}

#[test]
fn a_restore_never_writes_through_a_symbolic_link_in_the_target() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("data/sub")).unwrap();
    fs::write(src.join("data/sub/file"), b"restored").unwrap();
    let repo = init_local(&tmp.path().join("repo"));
    let r = backup::backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    // The target holds links where the snapshot has directories: one to a directory outside,
    // one dangling (what a workload could plant in its own volume before a restore into it).
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let target = tmp.path().join("restore");
    fs::create_dir_all(target.join("src")).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("src/data")).unwrap();
    restore::restore(&repo, &r.snapshot.tree, &target, &RestoreOptions::default()).unwrap();
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "written through the link");
    assert!(fs::symlink_metadata(target.join("src/data")).unwrap().is_dir());
    assert_same_tree(&src, &target.join("src"));

    let target2 = tmp.path().join("restore2");
    fs::create_dir_all(target2.join("src/data")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("nowhere"), target2.join("src/data/sub")).unwrap();
    restore::restore(&repo, &r.snapshot.tree, &target2, &RestoreOptions::default()).unwrap();
    assert!(!tmp.path().join("nowhere").exists(), "a dangling link was followed");
    assert_same_tree(&src, &target2.join("src"));
}
