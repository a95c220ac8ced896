//! The local metadata cache (format §15) through a backend that records every read: a second
//! open reads index files, snapshots and tree packs from the cache only; a damaged cache entry is
//! noticed and read from the repository again; entries of forgotten snapshots go away.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;

use holdfast_repository::backend::{Backend, FileType};
use holdfast_repository::backup::{self, BackupOptions};
use holdfast_repository::{Id, Repository};

use crate::support::*;

/// Reads every tree of every snapshot; returns how many.
fn walk(repo: &Repository) -> usize {
    fn dir(repo: &Repository, id: &Id) -> usize {
        let tree = repo.load_tree(id).unwrap();
        1 + tree.nodes.iter().filter_map(|n| n.subtree).map(|s| dir(repo, &s)).sum::<usize>()
    }
    repo.snapshots().unwrap().iter().map(|e| dir(repo, &e.snapshot.tree)).sum()
}

fn tree_of_dirs(root: &Path, seed: u64) {
    for d in 0..12 {
        let sub = root.join(format!("d{d}")).join("inner");
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join("f"), random_bytes(seed + d, 20_000)).unwrap();
    }
}

#[test]
fn a_second_open_reads_metadata_from_the_cache_only() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo_dir, cache) = (tmp.path().join("repo"), tmp.path().join("cache"));
    let writer = init_local(&repo_dir);
    for seed in [1, 100] {
        let src = tmp.path().join(format!("src{seed}"));
        tree_of_dirs(&src, seed);
        backup::backup_paths(&writer, &[src], &BackupOptions::new()).unwrap();
    }
    let recording = Arc::new(Recording::new(local_backend(&repo_dir)));

    let first = Repository::open_cached(recording.clone(), PASSWORD, &cache).unwrap();
    let trees = walk(&first);
    assert!(trees >= 2 * 25, "{trees} trees");
    let first_reads = recording.take();
    let metadata = |reads: &[(FileType, String)]| {
        reads.iter().filter(|(ft, _)| *ft != FileType::Config && *ft != FileType::Key).count()
    };
    assert!(metadata(&first_reads) > 0, "the first open reads the repository");
    drop(first);

    let second = Repository::open_cached(recording.clone(), PASSWORD, &cache).unwrap();
    assert_eq!(walk(&second), trees);
    let reads = recording.take();
    assert_eq!(metadata(&reads), 0, "read from the repository again: {reads:?}");
    drop(second);

    // A damaged cached snapshot is noticed and read from the repository again.
    let id = repo_entries(&cache, "snapshots")[0].clone();
    let path = cache_entry(&cache, "snapshots", &id);
    let mut bytes = fs::read(&path).unwrap();
    bytes[10] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let third = Repository::open_cached(recording.clone(), PASSWORD, &cache).unwrap();
    assert_eq!(walk(&third), trees, "a damaged cache entry must not hide the snapshot");
    let reads: Vec<_> = recording
        .take()
        .into_iter()
        .filter(|(ft, _)| *ft != FileType::Config && *ft != FileType::Key)
        .collect();
    assert_eq!(reads, [(FileType::Snapshot, id.clone())]);
    assert_ne!(fs::read(&path).unwrap(), bytes, "the entry is replaced by the intact object");

    // A snapshot forgotten by another process leaves the cache at the next listing.
    writer.backend().delete(FileType::Snapshot, &id).unwrap();
    assert_eq!(third.snapshots().unwrap().len(), 1);
    assert!(!path.exists(), "the forgotten snapshot's cache entry stays");

    // Nothing but stored (encrypted) bytes, readable by the owner only.
    for dir in ["index", "snapshots", "data"] {
        let d = cache_dir(&cache).join(dir);
        assert_eq!(fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700, "{dir}");
        for entry in fs::read_dir(&d).unwrap() {
            let meta = entry.unwrap().metadata().unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
    }
    assert!(!repo_entries(&cache, "data").is_empty(), "tree packs are cached");
}

fn cache_dir(cache: &Path) -> std::path::PathBuf {
    let mut dirs: Vec<_> = fs::read_dir(cache).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "one repository, one cache directory: {dirs:?}");
    dirs.pop().unwrap()
}

fn cache_entry(cache: &Path, kind: &str, name: &str) -> std::path::PathBuf {
    cache_dir(cache).join(kind).join(name)
}

fn repo_entries(cache: &Path, kind: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(cache_dir(cache).join(kind))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
