//! Patched data blobs (format §9.2): a chunk changed in a few 16 KiB blocks is stored as those
//! blocks and a reference to an earlier chunk. What must hold: scattered small writes cost about
//! the blocks they touch instead of whole chunks, every snapshot restores exactly, and prune,
//! check, copy and a rebuilt index all keep the bases patches need.

use std::path::Path;
use std::time::Duration;

use holdfast_repository::backend::FileType;
use holdfast_repository::backup::{BackupOptions, BackupResult, backup_paths};
use holdfast_repository::check::{self, CheckOptions};
use holdfast_repository::config::ChunkerParams;
use holdfast_repository::forget::{self, KeepPolicy};
use holdfast_repository::prune::{self, PruneOptions};
use holdfast_repository::repair::{self, RepairIndexOptions};
use holdfast_repository::restore::{RestoreOptions, restore};
use holdfast_repository::{Id, InitOptions, Repository};

use crate::support::*;

const MIN: usize = 256 * 1024;

fn repo_at(dir: &Path) -> Repository {
    let opts = InitOptions {
        chunker: ChunkerParams {
            min_size: MIN as u32,
            avg_size: 512 * 1024,
            max_size: 2 * 1024 * 1024,
            ..Default::default()
        },
        pack_size: 4 * 1024 * 1024,
        ..small_opts()
    };
    Repository::init(local_backend(dir), PASSWORD, &opts).unwrap()
}

fn pack_bytes(repo_dir: &Path) -> u64 {
    walkdir(&repo_dir.join("data"))
}

fn walkdir(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        n += if m.is_dir() { walkdir(&e.path()) } else { m.len() };
    }
    n
}

/// Where each chunk of the file starts, from its node in a snapshot.
fn chunk_starts(repo: &Repository, result: &BackupResult) -> Vec<usize> {
    let node = repo.find_node(&result.snapshot.tree, "src/disk.img").unwrap();
    let mut at = 0;
    node.content
        .iter()
        .map(|id| {
            let start = at;
            at += repo.load_blob(id).unwrap().len();
            start
        })
        .collect()
}

/// Content blobs of the file stored as patches.
fn patches(repo: &Repository, result: &BackupResult) -> Vec<(Id, Id)> {
    let node = repo.find_node(&result.snapshot.tree, "src/disk.img").unwrap();
    let index = repo.index();
    node.content.iter().filter_map(|id| Some((*id, index.get(id)?.blob.base?))).collect()
}

/// Rewrites 4 KiB inside block `block` of every other chunk but the last (which may be short).
/// The writes stay within the chunker's minimum size after each chunk's start, where it looks for
/// no boundary, so the chunks stay where they are (the chunker's key differs per repository).
fn write_blocks(data: &mut [u8], starts: &[usize], block: usize, seed: u64) -> usize {
    let mut n = 0;
    for (i, start) in starts[..starts.len() - 1].iter().enumerate().step_by(2) {
        let at = start + block * 16 * 1024 + 1000;
        if at + 4096 + 64 > start + MIN || at + 4096 > data.len() {
            continue;
        }
        data[at..at + 4096].copy_from_slice(&random_bytes(seed + i as u64, 4096));
        n += 1;
    }
    n
}

fn restores(repo: &Repository, result: &BackupResult, want: &[u8], out: &Path) {
    restore(repo, &result.snapshot.tree, out, &RestoreOptions::default()).unwrap();
    assert!(std::fs::read(out.join("src/disk.img")).unwrap() == want, "{out:?} differs");
}

fn read_data_errors(repo: &Repository) -> Vec<String> {
    check::check(repo, &CheckOptions { read_data: true, ..Default::default() }).unwrap().errors
}

#[test]
fn scattered_writes_store_patches_that_restore_exactly_through_prune_repair_and_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = repo_at(&dir);
    assert_eq!(repo.config().version, 4, "new repositories take patches");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let file = src.join("disk.img");
    let mut data = random_bytes(1, 16 << 20);
    std::fs::write(&file, &data).unwrap();
    let day0 = backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    let node0 = repo.find_node(&day0.snapshot.tree, "src/disk.img").unwrap();
    assert!(node0.prints.is_some(), "a file of 16 MiB gets a prints blob");
    assert!(patches(&repo, &day0).is_empty());
    let want0 = data.clone();
    let starts = chunk_starts(&repo, &day0);
    assert!(starts.len() > 16, "{} chunks", starts.len());

    // Day 1: 4 KiB in block 1 of every other chunk.
    let changed = write_blocks(&mut data, &starts, 1, 100);
    std::fs::write(&file, &data).unwrap();
    let before = pack_bytes(&dir);
    let day1 = backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    let grown = pack_bytes(&dir) - before;
    let p1 = patches(&repo, &day1);
    assert_eq!(p1.len(), changed, "every changed chunk is a patch");
    let node0_ids: std::collections::HashSet<Id> = node0.content.iter().copied().collect();
    assert!(p1.iter().all(|(_, base)| node0_ids.contains(base)), "patches of day 0's chunks");
    // Whole chunks would have been about `changed` × 512 KiB; patches carry one 16 KiB block.
    assert!(grown < (changed as u64) * 64 * 1024, "grew {grown} bytes for {changed} writes");
    let want1 = data.clone();

    // Day 2: another block of the same chunks; the patches stay patches of day 0's chunks and
    // carry both blocks.
    write_blocks(&mut data, &starts, 3, 200);
    std::fs::write(&file, &data).unwrap();
    let day2 = backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    let p2 = patches(&repo, &day2);
    assert_eq!(p2.len(), changed);
    assert!(p2.iter().all(|(_, base)| node0_ids.contains(base)), "no patch of a patch");
    let want2 = data.clone();

    restores(&repo, &day0, &want0, &tmp.path().join("r0"));
    restores(&repo, &day1, &want1, &tmp.path().join("r1"));
    restores(&repo, &day2, &want2, &tmp.path().join("r2"));
    assert_eq!(read_data_errors(&repo), Vec::<String>::new());

    // Only day 2 is kept: prune must keep day 0's chunks its patches are made of.
    forget::forget(&repo, &KeepPolicy { last: 1, ..Default::default() }, false).unwrap();
    let opts = PruneOptions { safety_delay: Duration::ZERO, dry_run: false, max_unused: 0.0 };
    let report = prune::prune(&repo, &opts).unwrap();
    assert!(report.repacked_packs + report.deleted_packs > 0, "{report:?}");
    let repo = Repository::open(repo.backend().clone(), PASSWORD).unwrap();
    assert_eq!(read_data_errors(&repo), Vec::<String>::new());
    restores(&repo, &day2, &want2, &tmp.path().join("after-prune"));

    // The index rebuilt from the packs' headers knows every patch's base.
    for f in repo.backend().list(FileType::Index).unwrap() {
        std::fs::remove_file(dir.join(FileType::Index.path(&f.name))).unwrap();
    }
    let repo = Repository::open(repo.backend().clone(), PASSWORD).unwrap();
    repair::repair_index(&repo, &RepairIndexOptions::default()).unwrap();
    let repo = Repository::open(repo.backend().clone(), PASSWORD).unwrap();
    assert_eq!(patches(&repo, &day2).len(), changed, "bases read back from pack headers");
    restores(&repo, &day2, &want2, &tmp.path().join("after-repair"));

    // A copy stores the resolved chunks: the other repository restores without the bases.
    let other = init_local(&tmp.path().join("other"));
    holdfast_repository::copy::copy(&repo, &other, &repo.snapshots().unwrap()).unwrap();
    let copied = other.snapshots().unwrap();
    let out = tmp.path().join("copied");
    restore(&other, &copied[0].snapshot.tree, &out, &RestoreOptions::default()).unwrap();
    assert!(std::fs::read(out.join("src/disk.img")).unwrap() == want2);
    assert_eq!(read_data_errors(&other), Vec::<String>::new());
}

#[test]
fn a_damaged_base_costs_the_files_patched_on_it_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = repo_at(&dir);
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut data = random_bytes(2, 8 << 20);
    std::fs::write(src.join("disk.img"), &data).unwrap();
    let day0 = backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    let starts = chunk_starts(&repo, &day0);
    write_blocks(&mut data, &starts, 2, 300);
    std::fs::write(src.join("disk.img"), &data).unwrap();
    std::fs::write(src.join("other"), b"untouched by the damage").unwrap();
    let day1 = backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    let (_, base) = patches(&repo, &day1)[0];

    // Flip a byte of the base inside its pack.
    let loc = repo.index().get_whole(&base).unwrap();
    let path = dir.join(FileType::Pack.path(&loc.pack.to_hex()));
    let mut pack = std::fs::read(&path).unwrap();
    pack[loc.blob.offset as usize + 40] ^= 1;
    std::fs::write(&path, &pack).unwrap();

    let errors = read_data_errors(&repo);
    assert!(errors.iter().any(|e| e.contains(&base.to_hex())), "{errors:?}");
    let out = tmp.path().join("out");
    let err = restore(&repo, &day1.snapshot.tree, &out, &RestoreOptions::default()).unwrap_err();
    assert!(err.to_string().contains("disk.img"), "{err}");
    assert_eq!(std::fs::read(out.join("src/other")).unwrap(), b"untouched by the damage");

    // Salvaging the damaged pack reports the base lost and, with it, the patches made of it,
    // though they sit in an intact pack.
    let (patch, _) = patches(&repo, &day1).into_iter().find(|(_, b)| *b == base).unwrap();
    let report = holdfast_repository::repair::packs::repair_packs(&repo, &Default::default());
    let lost = report.unwrap().lost_blobs;
    assert!(lost.contains(&base.to_hex()), "{lost:?}");
    assert!(lost.contains(&patch.to_hex()), "{lost:?}");
}

#[test]
fn chunks_moved_by_an_insertion_are_still_patched_against_the_chunks_they_were() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo_at(&tmp.path().join("repo"));
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let data = random_bytes(3, 12 << 20);
    std::fs::write(src.join("disk.img"), &data).unwrap();
    let day0 = backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    let starts = chunk_starts(&repo, &day0);

    // 64 KiB inserted early in the second chunk moves every later chunk by as much; then 4 KiB
    // rewritten in block 1 of every other chunk from the fourth on, where they now are.
    let shift = 64 * 1024;
    let mut changed = data[..starts[1] + 1000].to_vec();
    changed.extend(random_bytes(4, shift));
    changed.extend_from_slice(&data[starts[1] + 1000..]);
    let moved: Vec<usize> = starts[3..].iter().map(|s| s + shift).collect();
    let writes = write_blocks(&mut changed, &moved, 1, 400);
    assert!(writes >= 6, "{writes} writes");
    std::fs::write(src.join("disk.img"), &changed).unwrap();
    let day1 = backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    // Found by content, not by offset: every rewritten chunk that kept its boundaries, only
    // moved, is a patch. (The inserted bytes can make the chunker cut differently for a chunk or
    // two after them, with a key that differs per repository.)
    let old_len: Vec<usize> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    let new_starts = chunk_starts(&repo, &day1);
    let moved_intact = new_starts
        .windows(2)
        .filter(|w| {
            let old = w[0].checked_sub(shift).and_then(|o| starts.iter().position(|s| *s == o));
            old.is_some_and(|i| i >= 3 && old_len.get(i) == Some(&(w[1] - w[0])) && i % 2 == 1)
        })
        .count();
    assert!(moved_intact * 2 >= writes, "{moved_intact} of {writes} rewritten chunks kept intact");
    let p = patches(&repo, &day1);
    assert!(p.len() >= moved_intact, "{} patches for {moved_intact} moved chunks", p.len());
    restores(&repo, &day1, &changed, &tmp.path().join("out"));
    assert_eq!(read_data_errors(&repo), Vec::<String>::new());
}
