//! Content list blobs (format §9.1): a large file's list of chunks is stored apart from its
//! tree, whole on the first backup and as the changes from the parent snapshot's list after.
//! What must hold: a day with scattered changes stores a small delta instead of the whole list,
//! every snapshot restores exactly, and prune keeps every blob of a chain while a snapshot uses
//! it, even after the snapshot that wrote the whole list is gone.

use std::path::Path;
use std::time::Duration;

use holdfast_repository::backend::FileType;
use holdfast_repository::backup::{BackupOptions, BackupResult, Chunking, backup_paths, store_tar};
use holdfast_repository::check::{self, CheckOptions};
use holdfast_repository::config::ChunkerParams;
use holdfast_repository::content_list::MIN_ENTRIES;
use holdfast_repository::forget::{self, KeepPolicy};
use holdfast_repository::prune::{self, PruneOptions};
use holdfast_repository::repair::snapshots::{RepairSnapshotsOptions, repair_snapshots};
use holdfast_repository::restore::{RestoreOptions, restore};
use holdfast_repository::tree::Node;
use holdfast_repository::{Error, InitOptions, Repository};

use crate::interleaved::tar_of;
use crate::support::*;

const PAGE: usize = 8192;

/// Chunks of about 4 KiB, so a few MiB make a file of more than [`MIN_ENTRIES`] chunks.
fn tiny_chunks(dir: &Path) -> Repository {
    let opts = InitOptions {
        chunker: ChunkerParams {
            min_size: 1024,
            avg_size: 4096,
            max_size: 16 * 1024,
            ..Default::default()
        },
        ..small_opts()
    };
    Repository::init(local_backend(dir), PASSWORD, &opts).unwrap()
}

/// The node of `name` in a snapshot's root tree (a tar snapshot) or below its one path.
fn node(repo: &Repository, result: &BackupResult, path: &str) -> Node {
    repo.find_node(&result.snapshot.tree, path).unwrap()
}

fn read_data(repo: &Repository) -> Vec<String> {
    check::check(repo, &CheckOptions { read_data: true, ..Default::default() }).unwrap().errors
}

/// Rewrites every 50th page, starting at a different one each day (2% of the pages).
fn change_pages(data: &mut [u8], day: u64) {
    let pages = data.len() / PAGE;
    for page in (usize::try_from(day).unwrap()..pages).step_by(50) {
        let fresh = random_bytes(day * 100_000 + page as u64, PAGE);
        data[page * PAGE..(page + 1) * PAGE].copy_from_slice(&fresh);
    }
}

#[test]
fn daily_pieces_of_a_large_file_store_a_delta_and_prune_keeps_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = init_local(&tmp.path().join("repo"));
    assert!(repo.config().version >= 3, "new repositories take content lists");
    // 2,048 pieces of 8 KiB: twice the smallest list stored apart.
    let mut data = random_bytes(11, 2 * MIN_ENTRIES * PAGE);
    let pages = |_: &str, _: u64| Chunking::Fixed(PAGE);
    let back_up = |data: &[u8]| {
        store_tar(&repo, tar_of("rel", data).as_slice(), "db", &pages, &[], &BackupOptions::new())
            .unwrap()
            .save(&repo, Default::default())
            .unwrap()
    };
    let mut days = vec![(back_up(&data), data.clone())];
    let first = node(&repo, &days[0].0, "rel");
    assert_eq!(first.content.len(), 2 * MIN_ENTRIES);
    assert_eq!(first.content_lists.len(), 1, "day one stores the whole list apart");
    for day in 1..4u64 {
        let changed = (usize::try_from(day).unwrap()..data.len() / PAGE).step_by(50).count() + 3;
        change_pages(&mut data, day);
        // The file grows too: new pieces past the old end.
        data.extend_from_slice(&random_bytes(day, 3 * PAGE));
        let result = back_up(&data);
        let n = node(&repo, &result, "rel");
        assert_eq!(n.content.len(), data.len() / PAGE);
        assert_eq!(
            n.content_lists.len(),
            usize::try_from(day).unwrap() + 1,
            "day {day} is a delta on the day before, which builds on day one"
        );
        assert_eq!(n.content_lists.last(), first.content_lists.first());
        assert_eq!(result.snapshot.parent, Some(days.last().unwrap().0.id));
        // What the metadata cost: the root tree and a delta of the 44 changed entries, far
        // below the 64 KiB the whole list takes.
        let metadata = result.snapshot.summary.data_added - (changed * PAGE) as u64;
        assert!(metadata < 8 * 1024, "day {day} added {metadata} bytes beside its pieces");
        days.push((result, data.clone()));
    }
    // Each day restores exactly.
    for (i, (result, want)) in days.iter().enumerate() {
        let out = tmp.path().join(format!("out{i}"));
        restore(&repo, &result.snapshot.tree, &out, &RestoreOptions::default()).unwrap();
        assert!(std::fs::read(out.join("rel")).unwrap() == *want, "day {i} restores exactly");
    }
    // Forgetting every day but the last leaves its chain referenced only through it: prune must
    // keep all of it, repacking around it.
    forget::forget(&repo, &KeepPolicy { last: 1, ..Default::default() }, false).unwrap();
    let opts = PruneOptions { safety_delay: Duration::ZERO, dry_run: false, max_unused: 0.0 };
    let report = prune::prune(&repo, &opts).unwrap();
    assert!(report.repacked_packs + report.deleted_packs > 0, "{report:?}");
    assert_eq!(read_data(&repo), Vec::<String>::new());
    let repo = Repository::open(repo.backend().clone(), PASSWORD).unwrap();
    let (last, want) = days.last().unwrap();
    let out = tmp.path().join("after-prune");
    restore(&repo, &last.snapshot.tree, &out, &RestoreOptions::default()).unwrap();
    assert!(std::fs::read(out.join("rel")).unwrap() == *want, "the last day restores after prune");
}

#[test]
fn a_changed_file_in_a_directory_backup_stores_its_list_as_a_delta() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tiny_chunks(&tmp.path().join("repo"));
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let file = src.join("disk.img");
    let mut data = random_bytes(5, 12 << 20);
    std::fs::write(&file, &data).unwrap();
    std::fs::write(src.join("small"), b"a small file keeps its list inline").unwrap();
    let one = backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    let first = node(&repo, &one, "src/disk.img");
    assert!(first.content.len() >= MIN_ENTRIES, "{} chunks", first.content.len());
    assert_eq!(first.content_lists.len(), 1);
    assert!(node(&repo, &one, "src/small").content_lists.is_empty());

    // A few scattered writes, each 100 bytes a little after a chunk's start: the chunker looks
    // for no boundary within its minimum size of the last one and a boundary depends only on
    // the 64 bytes before it, so the chunks stay where they were and the list changes in
    // exactly those places (the chunker's key differs per repository: writes at fixed offsets
    // would sometimes move a boundary, and every position after it).
    let mut starts = Vec::new();
    let mut at = 0usize;
    for id in &first.content {
        starts.push(at);
        at += repo.load_blob(id).unwrap().len();
    }
    for i in [starts.len() / 8, starts.len() / 2, starts.len() * 7 / 8] {
        let at = starts[i] + 200;
        data[at..at + 100].copy_from_slice(&random_bytes(at as u64, 100));
    }
    std::fs::write(&file, &data).unwrap();
    let two = backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    let second = node(&repo, &two, "src/disk.img");
    assert_eq!(second.content_lists.len(), 2, "a delta on the first list");
    assert_eq!(second.content_lists[1], first.content_lists[0]);
    assert_ne!(second.content, first.content);

    // Unchanged: the node names the same chain again, nothing new is written.
    let three = backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    assert_eq!(node(&repo, &two, "src/disk.img"), node(&repo, &three, "src/disk.img"));
    assert_eq!(three.snapshot.summary.tree_blobs, 0, "{:?}", three.snapshot.summary);

    let out = tmp.path().join("out");
    restore(&repo, &three.snapshot.tree, &out, &RestoreOptions::default()).unwrap();
    assert_same_tree(&src, &out.join("src"));
    assert_eq!(read_data(&repo), Vec::<String>::new());

    // A copy into another repository (other keys, other ids) carries the list translated.
    let other = init_local(&tmp.path().join("other"));
    holdfast_repository::copy::copy(&repo, &other, &repo.snapshots().unwrap()).unwrap();
    let copied = other.snapshots().unwrap();
    assert_eq!(copied.len(), 3);
    let out = tmp.path().join("copied");
    restore(&other, &copied[1].snapshot.tree, &out, &RestoreOptions::default()).unwrap();
    assert!(std::fs::read(out.join("src/disk.img")).unwrap() == data);
    assert_eq!(read_data(&other), Vec::<String>::new());
}

#[test]
fn a_damaged_content_list_costs_its_file_only_and_prune_deletes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = init_local(&dir);
    let data = random_bytes(3, MIN_ENTRIES * PAGE);
    let other = random_bytes(4, 100_000);
    // Two members: the large file, then a small one beside it.
    let mut archive = tar_of("rel", &data);
    archive.truncate(archive.len() - 1024);
    archive.extend_from_slice(&tar_of("other", &other));
    let pages = |_: &str, _: u64| Chunking::Fixed(PAGE);
    let result = store_tar(&repo, archive.as_slice(), "db", &pages, &[], &BackupOptions::new())
        .unwrap()
        .save(&repo, Default::default())
        .unwrap();
    let list = node(&repo, &result, "rel").content_lists[0];
    let loc = repo.index().get(&list).unwrap();
    let at = loc.blob.offset + u64::from(loc.blob.length) / 2;
    crate::repair::flip(&dir.join(FileType::Pack.path(&loc.pack.to_hex())), at as isize);

    let errors = check::check(&repo, &CheckOptions::default()).unwrap().errors;
    assert!(errors.iter().any(|e| e.contains(&list.to_hex())), "check names the list: {errors:?}");
    // Restore writes the other file and names the one it could not.
    let out = tmp.path().join("out");
    match restore(&repo, &result.snapshot.tree, &out, &RestoreOptions::default()) {
        Err(Error::DamagedFiles(paths)) => {
            assert_eq!(paths.len(), 1, "{paths:?}");
            assert!(paths[0].contains("rel"), "{paths:?}");
        }
        other => panic!("restore of a file with an unreadable list: {other:?}"),
    }
    assert!(std::fs::read(out.join("other")).unwrap() == other);
    assert!(!out.join("rel").exists(), "a file with an unreadable list was written");
    // Prune cannot tell what the list referenced: it refuses and deletes nothing.
    let before = repo.backend().list(FileType::Pack).unwrap().len();
    let opts = PruneOptions { safety_delay: Duration::ZERO, dry_run: false, max_unused: 0.0 };
    assert!(prune::prune(&repo, &opts).is_err(), "prune refuses");
    assert_eq!(repo.backend().list(FileType::Pack).unwrap().len(), before, "nothing deleted");
    // Repair leaves that file out and keeps the other.
    let report = repair_snapshots(&repo, &RepairSnapshotsOptions::default()).unwrap();
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    let dropped = &report.damaged[0].dropped;
    assert!(dropped.len() == 1 && dropped[0].starts_with("/rel: its list"), "{dropped:?}");
    let repaired = report.damaged[0].repaired.unwrap();
    let repaired = repo.find_snapshot(&repaired.to_hex()).unwrap();
    let out = tmp.path().join("repaired");
    restore(&repo, &repaired.snapshot.tree, &out, &RestoreOptions::default()).unwrap();
    assert!(std::fs::read(out.join("other")).unwrap() == other);
    assert!(!out.join("rel").exists());
}
