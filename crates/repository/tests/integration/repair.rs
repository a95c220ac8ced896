//! A lost or damaged index file: prune refuses to delete what it cannot prove unreferenced,
//! `check` says what happened, and `repair index` rebuilds the index from the pack headers so
//! every snapshot restores again.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use holdfast_repository::backend::FileType;
use holdfast_repository::backup::{self, BackupOptions, BackupResult};
use holdfast_repository::check::{self, CheckOptions};
use holdfast_repository::index::IndexFile;
use holdfast_repository::pack::BlobType;
use holdfast_repository::prune::{self, PruneOptions};
use holdfast_repository::repair::packs::{RepairPacksOptions, repair_packs};
use holdfast_repository::repair::snapshots::{RepairSnapshotsOptions, repair_snapshots};
use holdfast_repository::repair::{self, RepairIndexOptions};
use holdfast_repository::restore::{self, RestoreOptions};
use holdfast_repository::{Error, Id, Repository};

use crate::support::*;

/// Backs up `name` (a few MiB in several files) and returns the result.
fn back_up(repo: &Repository, root: &Path, name: &str, seed: u64) -> BackupResult {
    let src = root.join(name);
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("big.bin"), random_bytes(seed, 3 * 1024 * 1024)).unwrap();
    for i in 0..20 {
        fs::write(src.join("sub").join(format!("f{i}")), random_bytes(seed + i, 5000)).unwrap();
    }
    backup::backup_paths(repo, &[src], &BackupOptions::new()).unwrap()
}

fn names(repo: &Repository, ft: FileType) -> HashSet<String> {
    repo.backend().list(ft).unwrap().into_iter().map(|o| o.name).collect()
}

fn restores_exactly(repo: &Repository, r: &BackupResult, root: &Path, name: &str) {
    let target = root.join(format!("restore-{name}-{}", &r.id.to_hex()[..8]));
    restore::restore(repo, &r.snapshot.tree, &target, &RestoreOptions::default()).unwrap();
    assert_same_tree(&root.join(name), &target.join(name));
}

/// Flips one bit of the byte `at` of a stored file (negative: from the end).
pub fn flip(path: &Path, at: isize) {
    let mut bytes = fs::read(path).unwrap();
    let at = if at < 0 { bytes.len() - at.unsigned_abs() } else { at.unsigned_abs() };
    bytes[at] ^= 0x01;
    writable(path);
    fs::write(path, &bytes).unwrap();
}

fn writable(path: &Path) {
    let mut perms = fs::metadata(path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    fs::set_permissions(path, perms).unwrap();
}

/// The case that used to destroy a repository: the index file listing one backup's data packs is
/// lost while its tree packs stay indexed, so the data packs look like leftovers of a crash.
#[test]
fn a_lost_index_file_stops_prune_and_repair_index_brings_every_snapshot_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = init_local(&dir);
    let first = back_up(&repo, tmp.path(), "a", 1);
    let first_files = names(&repo, FileType::Index);
    let second = back_up(&repo, tmp.path(), "b", 100);

    // Drop the data packs of the first backup from the index: its index files are replaced by
    // one that lists only its tree packs.
    let mut trees_only = IndexFile::default();
    for name in &first_files {
        let file = repo.load_index_file(&name.parse::<Id>().unwrap()).unwrap();
        trees_only.packs.extend(
            file.packs
                .into_iter()
                .filter(|p| p.blobs.iter().all(|b| b.blob_type == BlobType::Tree)),
        );
    }
    assert!(!trees_only.packs.is_empty(), "the first backup wrote a tree pack");
    repo.save_index_file(&trees_only).unwrap();
    for name in &first_files {
        fs::remove_file(dir.join(FileType::Index.path(name))).unwrap();
    }
    repo.reload_index().unwrap();
    let packs_before = names(&repo, FileType::Pack);

    // Prune at the most aggressive setting refuses and deletes nothing.
    let opts = PruneOptions { safety_delay: Duration::ZERO, ..Default::default() };
    let err = prune::prune(&repo, &opts).unwrap_err();
    assert!(matches!(err, Error::UnindexedReferences { .. }), "{err}");
    assert!(err.to_string().contains("repair index"), "{err}");
    assert_eq!(names(&repo, FileType::Pack), packs_before, "prune deleted packs");
    assert!(names(&repo, FileType::PrunePlan).is_empty(), "prune marked packs");

    // Check names the missing blobs and says what to run.
    let report = check::check(&repo, &CheckOptions::default()).unwrap();
    assert!(report.errors.iter().any(|e| e.contains("repair index")), "{:?}", report.errors);
    assert!(
        report.warnings.iter().any(|w| w.contains("not in any index")),
        "{:?}",
        report.warnings
    );

    // A dry run reports and changes nothing.
    let index_files = names(&repo, FileType::Index);
    let dry = RepairIndexOptions { dry_run: true, ..Default::default() };
    let r = repair::repair_index(&repo, &dry).unwrap();
    assert!(r.packs_added > 0, "{r:?}");
    assert!(r.new_index_files.is_empty(), "{r:?}");
    assert_eq!(names(&repo, FileType::Index), index_files);

    let r = repair::repair_index(&repo, &RepairIndexOptions::default()).unwrap();
    assert!(r.packs_added > 0, "{r:?}");
    assert_eq!(r.packs_indexed, packs_before.len(), "{r:?}");
    assert!(r.unreadable_packs.is_empty() && r.unreadable_index_files.is_empty(), "{r:?}");
    assert_eq!(r.new_index_files.len(), 1, "{r:?}");
    assert_eq!(names(&repo, FileType::Index), r.new_index_files.iter().cloned().collect());

    let report = check::check(&repo, &CheckOptions { read_data: true, ..Default::default() });
    let report = report.unwrap();
    assert!(report.errors.is_empty() && report.warnings.is_empty(), "{report:?}");
    restores_exactly(&repo, &first, tmp.path(), "a");
    restores_exactly(&repo, &second, tmp.path(), "b");

    // Now prune may run: nothing is unused, nothing referenced goes.
    let pruned = prune::prune(&repo, &opts).unwrap();
    assert_eq!(pruned.deleted_packs, 0, "{pruned:?}");
    assert_eq!(pruned.marked_packs, 0, "{pruned:?}");
    restores_exactly(&repo, &first, tmp.path(), "a");

    // Repairing a whole index changes nothing.
    let again = repair::repair_index(&repo, &RepairIndexOptions::default()).unwrap();
    assert_eq!((again.packs_added, again.new_index_files.len()), (0, 0), "{again:?}");
}

/// A truncated index file stops every command that reads the index, with an error that names it
/// and says what to run; `repair index` works without that index and replaces the file.
#[test]
fn a_truncated_index_file_is_named_and_replaced_by_repair_index() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = init_local(&dir);
    let r = back_up(&repo, tmp.path(), "a", 7);
    let damaged = names(&repo, FileType::Index).into_iter().next().unwrap();
    let path = dir.join(FileType::Index.path(&damaged));
    let bytes = fs::read(&path).unwrap();
    writable(&path);
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    drop(repo);

    let err = Repository::open(local_backend(&dir), PASSWORD).unwrap_err();
    let message = err.to_string();
    assert!(message.contains(&damaged) && message.contains("repair index"), "{message}");

    let repo = Repository::open_unindexed(local_backend(&dir), PASSWORD).unwrap();
    let report = repair::repair_index(&repo, &RepairIndexOptions::default()).unwrap();
    assert_eq!(report.unreadable_index_files.len(), 1, "{report:?}");
    assert!(report.unreadable_index_files[0].contains(&damaged), "{report:?}");
    assert!(!names(&repo, FileType::Index).contains(&damaged));

    let repo = Repository::open(local_backend(&dir), PASSWORD).unwrap();
    let report = check::check(&repo, &CheckOptions { read_data: true, ..Default::default() });
    assert!(report.unwrap().errors.is_empty());
    restores_exactly(&repo, &r, tmp.path(), "a");
}

/// A pack whose header is damaged is reported; a readable index entry for it is kept (its blobs
/// are still addressable by offset), and every other pack is indexed.
#[test]
fn a_pack_with_a_damaged_header_is_reported_and_left_out() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = init_local(&dir);
    back_up(&repo, tmp.path(), "a", 9);
    let packs = names(&repo, FileType::Pack);
    let victim = packs.iter().next().unwrap().clone();
    let path = dir.join(FileType::Pack.path(&victim));
    // The byte just before the trailing length field is the header's authentication tag.
    flip(&path, -5);

    let opts = RepairIndexOptions { read_all_packs: true, ..Default::default() };
    let report = repair::repair_index(&repo, &opts).unwrap();
    assert_eq!(report.headers_read, packs.len(), "{report:?}");
    assert_eq!(report.unreadable_packs.len(), 1, "{report:?}");
    assert!(report.unreadable_packs[0].contains(&victim), "{report:?}");
    // The readable index entry of the damaged pack is kept: its blobs are still addressable.
    assert_eq!(report.packs_indexed, packs.len(), "{report:?}");
}

/// The repository directory is owner-only and so are the key files and the config (wrapped keys
/// and the keyed chunker parameters).
#[test]
fn a_new_local_repository_keeps_its_secrets_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested").join("repo");
    let repo = init_local(&dir);
    repo.add_key(b"second password", holdfast_repository::crypto::KdfParams::insecure_fast())
        .unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "repository directory");
    assert_eq!(mode(&dir.join("config")), 0o600, "config");
    let keys: Vec<_> = fs::read_dir(dir.join("keys")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(keys.len(), 2);
    for key in keys {
        assert_eq!(mode(&key), 0o600, "{}", key.display());
    }
}

/// An index entry whose size disagrees with its pack is replaced by what the pack's header says,
/// even when it is the only index file.
#[test]
fn an_index_entry_that_disagrees_with_its_pack_is_corrected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = init_local(&dir);
    let r = back_up(&repo, tmp.path(), "a", 31);
    // One index file, with one pack's size off by one.
    let mut merged = IndexFile::default();
    let old: Vec<String> = names(&repo, FileType::Index).into_iter().collect();
    for name in &old {
        merged.packs.extend(repo.load_index_file(&name.parse::<Id>().unwrap()).unwrap().packs);
    }
    merged.packs[0].size += 1;
    repo.save_index_file(&merged).unwrap();
    for name in &old {
        fs::remove_file(dir.join(FileType::Index.path(name))).unwrap();
    }

    let report = repair::repair_index(&repo, &RepairIndexOptions::default()).unwrap();
    assert_eq!(report.entries_corrected, 1, "{report:?}");
    assert_eq!(report.headers_read, 1, "{report:?}");
    assert!(!report.new_index_files.is_empty(), "{report:?}");
    let report = check::check(&repo, &CheckOptions { read_data: true, ..Default::default() });
    assert!(report.unwrap().errors.is_empty());
    restores_exactly(&repo, &r, tmp.path(), "a");
}

/// One damaged snapshot file is reported and skipped: the other snapshots list, restore and
/// serve as parents; prune, which must see every snapshot, refuses and says how to remove it;
/// `forget` can remove it by id.
#[test]
fn a_damaged_snapshot_hides_no_other_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = init_local(&dir);
    let a = back_up(&repo, tmp.path(), "a", 41);
    let b = back_up(&repo, tmp.path(), "b", 42);
    let c = back_up(&repo, tmp.path(), "c", 43);
    let path = dir.join(FileType::Snapshot.path(&b.id.to_hex()));
    flip(&path, -1);

    let listing = repo.snapshot_listing().unwrap();
    let ids: Vec<Id> = listing.entries.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![a.id, c.id]);
    assert_eq!(listing.unreadable.len(), 1);
    assert_eq!(listing.unreadable[0].id, b.id);
    assert_eq!(repo.snapshots().unwrap().len(), 2);
    assert_eq!(repo.find_snapshot("latest").unwrap().id, c.id);
    let err = repo.find_snapshot(&b.id.to_hex()[..8]).unwrap_err();
    assert!(matches!(err, Error::CorruptObject { .. }), "{err}");
    restores_exactly(&repo, &a, tmp.path(), "a");
    let again =
        backup::backup_paths(&repo, &[tmp.path().join("c")], &BackupOptions::new()).unwrap();
    assert_eq!(again.snapshot.parent, Some(c.id), "the latest readable snapshot is the parent");

    let packs = names(&repo, FileType::Pack);
    let opts = PruneOptions { safety_delay: Duration::ZERO, ..Default::default() };
    let err = prune::prune(&repo, &opts).unwrap_err().to_string();
    assert!(err.contains(&b.id.to_hex()) && err.contains("forget"), "{err}");
    assert_eq!(names(&repo, FileType::Pack), packs, "prune deleted packs");

    let id = repo.find_snapshot_id(&b.id.to_hex()[..8]).unwrap();
    holdfast_repository::forget::remove_snapshots(&repo, &[id]).unwrap();
    assert!(repo.snapshot_listing().unwrap().unreadable.is_empty());
    prune::prune(&repo, &opts).unwrap();
    restores_exactly(&repo, &c, tmp.path(), "c");
}

/// One flipped byte in a pack spoils only the file whose chunk it is: the restore goes on,
/// writes every other file exactly, names the damaged one, and fails at the end.
#[test]
fn damage_in_one_file_stays_in_that_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = init_local(&dir);
    let r = back_up(&repo, tmp.path(), "a", 51);
    let victim = repo.find_node(&r.snapshot.tree, "/a/sub/f7").unwrap();
    let loc = repo.index().get(&victim.content[0]).unwrap();
    let path = dir.join(FileType::Pack.path(&loc.pack.to_hex()));
    flip(&path, isize::try_from(loc.blob.offset + u64::from(loc.blob.length) / 2).unwrap());

    let target = tmp.path().join("restore");
    let err =
        restore::restore(&repo, &r.snapshot.tree, &target, &RestoreOptions::default()).unwrap_err();
    let Error::DamagedFiles(files) = &err else { panic!("expected DamagedFiles, got {err}") };
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].contains("sub/f7"), "{files:?}");
    // Every other file is whole; the big one and the small ones around the damaged one.
    let src = tmp.path().join("a");
    assert_eq!(fs::read(target.join("a/big.bin")).unwrap(), fs::read(src.join("big.bin")).unwrap());
    for i in (0..20).filter(|i| *i != 7) {
        let name = format!("sub/f{i}");
        assert_eq!(
            fs::read(target.join("a").join(&name)).unwrap(),
            fs::read(src.join(&name)).unwrap(),
            "{name}"
        );
    }
}

/// The pack files of one blob type, by name.
fn packs_of(repo: &Repository, ty: BlobType) -> Vec<Id> {
    let index = repo.index();
    let mut out: Vec<Id> = index
        .to_packs(&HashSet::new())
        .into_iter()
        .filter(|p| p.blobs.iter().all(|b| b.blob_type == ty))
        .map(|p| p.id)
        .collect();
    out.sort();
    out
}

fn delete_pack(dir: &Path, pack: &Id) {
    let hex = pack.to_hex();
    fs::remove_file(dir.join("data").join(&hex[..2]).join(&hex)).unwrap();
}

/// A lost data pack used to poison every later backup: they deduplicated against it and exited 0
/// with snapshots that could not be restored. Now a backup stores that data again, the new
/// snapshot restores, and so does the old one (its blobs exist again, in the new packs).
#[test]
fn a_lost_data_pack_does_not_poison_later_backups_and_the_rerun_heals_the_old_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = init_local(&dir);
    let first = back_up(&repo, tmp.path(), "a", 1);
    let data_packs = packs_of(&repo, BlobType::Data);
    assert!(data_packs.len() >= 3, "{data_packs:?}");
    delete_pack(&dir, &data_packs[1]);

    // With the parent (files unchanged: their content would be reused) and without.
    for parent in [backup::ParentChoice::Auto, backup::ParentChoice::None] {
        let repo = Repository::open(local_backend(&dir), PASSWORD).unwrap();
        let opts = BackupOptions { parent, ..BackupOptions::new() };
        let r = backup::backup_paths(&repo, &[tmp.path().join("a")], &opts).unwrap();
        restores_exactly(&repo, &r, tmp.path(), "a");
    }
    // The old snapshot reads its lost blobs from their new copies, before and after repair index.
    let repo = Repository::open(local_backend(&dir), PASSWORD).unwrap();
    restores_exactly(&repo, &first, tmp.path(), "a");
    repair::repair_index(&repo, &RepairIndexOptions::default()).unwrap();
    let repo = Repository::open(local_backend(&dir), PASSWORD).unwrap();
    let report =
        check::check(&repo, &CheckOptions { read_data: true, ..Default::default() }).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    restores_exactly(&repo, &first, tmp.path(), "a");
    // Prune keeps every copy a snapshot uses, whichever index file lists it first.
    prune::prune(&repo, &PruneOptions::default()).unwrap();
    let repo = Repository::open(local_backend(&dir), PASSWORD).unwrap();
    restores_exactly(&repo, &first, tmp.path(), "a");
}

/// A lost tree pack used to make every later backup with that snapshot as its parent fail (the
/// parent's root tree could not be read). Now the backup reads every file, stores the trees
/// again, and both snapshots restore.
#[test]
fn a_lost_tree_pack_costs_only_change_detection() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = init_local(&dir);
    let first = back_up(&repo, tmp.path(), "a", 1);
    for pack in packs_of(&repo, BlobType::Tree) {
        delete_pack(&dir, &pack);
    }
    let repo = Repository::open(local_backend(&dir), PASSWORD).unwrap();
    let r = backup::backup_paths(&repo, &[tmp.path().join("a")], &BackupOptions::new()).unwrap();
    assert!(r.snapshot.summary.tree_blobs > 0, "the trees were stored again");
    restores_exactly(&repo, &r, tmp.path(), "a");
    restores_exactly(&repo, &first, tmp.path(), "a");
}

/// restic's repair sequence: `check --read-data` names a damaged pack, `repair packs` salvages
/// every blob of it that verifies, `repair snapshots --forget` rewrites the snapshot without the
/// one file that lost a chunk, and the result checks clean and restores every other file.
#[test]
fn repair_packs_then_repair_snapshots_keep_every_readable_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = init_local(&dir);
    let r = back_up(&repo, tmp.path(), "a", 61);
    let victim = repo.find_node(&r.snapshot.tree, "/a/sub/f3").unwrap();
    let loc = repo.index().get(&victim.content[0]).unwrap();
    let siblings = repo.index().to_packs(&HashSet::new());
    let in_pack = siblings.iter().find(|p| p.id == loc.pack).unwrap().blobs.len();
    assert!(in_pack > 1, "the damaged pack must hold other blobs to salvage");
    flip(
        &dir.join(FileType::Pack.path(&loc.pack.to_hex())),
        isize::try_from(loc.blob.offset + 40).unwrap(),
    );

    let report = repair_packs(&repo, &RepairPacksOptions::default()).unwrap();
    assert_eq!(report.damaged_packs, vec![loc.pack.to_hex()]);
    assert_eq!(report.lost_blobs, vec![victim.content[0].to_hex()]);
    assert_eq!(report.salvaged_blobs, in_pack - 1);
    assert!(!dir.join(FileType::Pack.path(&loc.pack.to_hex())).exists(), "damaged pack deleted");

    let fixed =
        repair_snapshots(&repo, &RepairSnapshotsOptions { forget: true, ..Default::default() })
            .unwrap();
    assert_eq!(fixed.checked, 1);
    assert_eq!(fixed.damaged.len(), 1);
    let d = &fixed.damaged[0];
    assert_eq!(d.original, r.id);
    assert!(d.forgotten);
    assert_eq!(d.dropped.len(), 1, "{:?}", d.dropped);
    assert!(d.dropped[0].starts_with("/a/sub/f3: 1 of 1 chunks unreadable"), "{:?}", d.dropped);

    let repo = Repository::open(local_backend(&dir), PASSWORD).unwrap();
    let report =
        check::check(&repo, &CheckOptions { read_data: true, ..Default::default() }).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let snaps = repo.snapshots().unwrap();
    assert_eq!(snaps.len(), 1);
    assert!(snaps[0].snapshot.tags.contains(&"repaired".to_string()));
    let target = tmp.path().join("restored");
    restore::restore(&repo, &snaps[0].snapshot.tree, &target, &RestoreOptions::default()).unwrap();
    let src = tmp.path().join("a");
    assert!(!target.join("a/sub/f3").exists());
    assert_eq!(fs::read(target.join("a/big.bin")).unwrap(), fs::read(src.join("big.bin")).unwrap());
    for i in (0..20).filter(|i| *i != 3) {
        let name = format!("sub/f{i}");
        assert_eq!(
            fs::read(target.join("a").join(&name)).unwrap(),
            fs::read(src.join(&name)).unwrap()
        );
    }
    // A second run finds nothing to do.
    let again = repair_snapshots(&repo, &RepairSnapshotsOptions::default()).unwrap();
    assert!(again.damaged.is_empty());
}

/// A lost tree pack: the snapshot keeps what its readable trees reach; directories whose trees
/// are gone become empty and are named.
#[test]
fn repair_snapshots_names_directories_it_had_to_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = init_local(&dir);
    let r = back_up(&repo, tmp.path(), "a", 71);
    // Lose the tree of `sub` only (the other trees share its pack): one index file replaces the
    // others and lists every blob but that one, as `repair packs` leaves a blob it could not
    // salvage.
    let sub = repo.find_node(&r.snapshot.tree, "/a/sub").unwrap().subtree.unwrap();
    let mut packs = repo.index().to_packs(&HashSet::new());
    for p in &mut packs {
        p.blobs.retain(|b| b.id != sub);
    }
    let old = repo.index_files();
    repo.save_index_file(&IndexFile { supersedes: old.clone(), packs }).unwrap();
    for f in old {
        repo.backend().delete(FileType::Index, &f.to_hex()).unwrap();
    }
    let repo = Repository::open(local_backend(&dir), PASSWORD).unwrap();
    let fixed = repair_snapshots(&repo, &RepairSnapshotsOptions::default()).unwrap();
    assert_eq!(fixed.damaged.len(), 1);
    let d = &fixed.damaged[0];
    assert!(!d.forgotten);
    assert!(
        d.dropped.iter().any(|l| l.starts_with("/a/sub: directory unreadable")),
        "{:?}",
        d.dropped
    );
    let repo = Repository::open(local_backend(&dir), PASSWORD).unwrap();
    let new = repo.find_snapshot(&d.repaired.unwrap().to_hex()).unwrap();
    let target = tmp.path().join("restored");
    restore::restore(&repo, &new.snapshot.tree, &target, &RestoreOptions::default()).unwrap();
    assert!(target.join("a/sub").is_dir());
    assert_eq!(fs::read_dir(target.join("a/sub")).unwrap().count(), 0);
}
