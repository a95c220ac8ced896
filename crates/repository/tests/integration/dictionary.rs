//! Compression dictionaries (format §7.2): a file cut into small fixed pieces is compressed
//! with a dictionary trained on its own pieces, which every pack holding such pieces carries.
//! What must hold: the pieces store smaller, restore exactly, verify, survive repacking, and a
//! damaged dictionary spoils only the blobs of its own pack.

use std::collections::HashSet;
use std::time::Duration;

use holdfast_repository::backup::{BackupOptions, Chunking, store_tar};
use holdfast_repository::check::{self, CheckOptions};
use holdfast_repository::forget::{self, KeepPolicy};
use holdfast_repository::index::IndexPack;
use holdfast_repository::pack::BlobType;
use holdfast_repository::prune::{self, PruneOptions};
use holdfast_repository::restore::{RestoreOptions, restore};
use holdfast_repository::{Error, Repository};

use crate::interleaved::tar_of;
use crate::support::*;

const PAGE: usize = 8192;
const PIECE: usize = 2 * PAGE;
const SEAL_OVERHEAD: usize = holdfast_repository::crypto::SEAL_OVERHEAD;

/// Pages laid out as a database lays out a table: a header, line pointers, and rows of a fixed
/// shape whose key grows and whose other columns vary a little (seeded, so runs are
/// reproducible).
fn table(pages: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut next = move || {
        state =
            state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as u32
    };
    let mut out = Vec::with_capacity(pages * PAGE);
    let mut key = 0u32;
    for p in 0..pages {
        let mut page = vec![0u8; PAGE];
        page[..4].copy_from_slice(&(p as u32).to_le_bytes());
        page[8..12].copy_from_slice(&next().to_le_bytes()); // an LSN-like field
        let rows = 60;
        for r in 0..rows {
            let at = PAGE - (r + 1) * 128;
            page[24 + r * 4..28 + r * 4].copy_from_slice(&(at as u32 | 0x8000_0000).to_le_bytes());
            let row = &mut page[at..at + 128];
            // One loading transaction: the same header on every row.
            row[..8].copy_from_slice(&[0x3c, 0x02, 0x00, 0x00, 0x02, 0x00, 0x18, 0x09]);
            key += 1;
            row[24..28].copy_from_slice(&key.to_le_bytes());
            row[28..32].copy_from_slice(&(key / 100_000).to_le_bytes());
            row[32..36].copy_from_slice(&(next() % 4).to_le_bytes());
            row[36..].fill(b' ');
        }
        out.extend_from_slice(&page);
    }
    out
}

fn back_up(repo: &Repository, data: &[u8]) -> holdfast_repository::backup::BackupResult {
    let pieces = |_: &str, _: u64| Chunking::Fixed(PIECE);
    store_tar(repo, tar_of("rel", data).as_slice(), "db", &pieces, &[], &BackupOptions::new())
        .unwrap()
        .save(repo, Default::default())
        .unwrap()
}

fn packs(repo: &Repository) -> Vec<IndexPack> {
    repo.index().to_packs(&HashSet::new())
}

fn dictionaries(packs: &[IndexPack]) -> usize {
    packs.iter().flat_map(|p| &p.blobs).filter(|b| b.blob_type == BlobType::Dictionary).count()
}

fn read_data(repo: &Repository) -> Vec<String> {
    check::check(repo, &CheckOptions { read_data: true, ..Default::default() }).unwrap().errors
}

#[test]
fn pages_compressed_with_their_files_dictionary_store_smaller_and_restore_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = init_local(&tmp.path().join("repo"));
    assert!(repo.config().version >= 2, "new repositories take dictionaries");
    let data = table(6144, 1);
    let result = back_up(&repo, &data);
    let packs = packs(&repo);
    // Every pack with pieces of the file carries the dictionary (1 MiB packs: several of them).
    let with_data = packs.iter().filter(|p| p.blobs.iter().any(|b| b.blob_type == BlobType::Data));
    assert!(
        with_data.clone().count() > 1,
        "the file spans packs: {:?}",
        packs.iter().map(|p| p.size).collect::<Vec<_>>()
    );
    for p in with_data {
        assert_eq!(
            p.blobs.iter().filter(|b| b.blob_type == BlobType::Dictionary).count(),
            1,
            "pack {} carries its pieces' dictionary",
            p.id
        );
    }
    // Smaller than every piece compressed alone at the same level, the dictionaries included
    // (what sealing and the pack headers add per blob is the same either way).
    let payloads: usize = packs
        .iter()
        .flat_map(|p| &p.blobs)
        .filter(|b| b.blob_type != BlobType::Tree)
        .map(|b| b.length as usize - SEAL_OVERHEAD)
        .sum();
    let alone: usize =
        data.chunks(PIECE).map(|c| zstd::bulk::compress(c, 3).unwrap().len().min(c.len())).sum();
    assert!(
        (payloads as f64) < 0.8 * alone as f64,
        "stored {payloads} bytes against {alone} for the pieces compressed alone"
    );
    let out = tmp.path().join("out");
    restore(&repo, &result.snapshot.tree, &out, &RestoreOptions::default()).unwrap();
    assert_eq!(std::fs::read(out.join("rel")).unwrap(), data);
    assert_eq!(read_data(&repo), Vec::<String>::new());
}

#[test]
fn a_file_of_few_pieces_gets_no_dictionary() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = init_local(&tmp.path().join("repo"));
    let data = table(60, 2); // 30 pieces: too few to train on
    let result = back_up(&repo, &data);
    assert_eq!(dictionaries(&packs(&repo)), 0);
    let out = tmp.path().join("out");
    restore(&repo, &result.snapshot.tree, &out, &RestoreOptions::default()).unwrap();
    assert_eq!(std::fs::read(out.join("rel")).unwrap(), data);
}

#[test]
fn repacked_pieces_leave_their_dictionary_behind_and_still_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = init_local(&tmp.path().join("repo"));
    let first = table(1024, 3);
    back_up(&repo, &first);
    // The second day rewrites every third page: the first day's packs become partly unused.
    let mut second = first.clone();
    let fresh = table(1024, 4);
    for page in (0..1024).step_by(3) {
        second[page * PAGE..(page + 1) * PAGE]
            .copy_from_slice(&fresh[page * PAGE..(page + 1) * PAGE]);
    }
    let kept = back_up(&repo, &second);
    forget::forget(&repo, &KeepPolicy { last: 1, ..Default::default() }, false).unwrap();
    let opts = PruneOptions { safety_delay: Duration::ZERO, dry_run: false, max_unused: 0.0 };
    let report = prune::prune(&repo, &opts).unwrap();
    assert!(report.repacked_packs > 0, "{report:?}");
    assert_eq!(read_data(&repo), Vec::<String>::new());
    let out = tmp.path().join("out");
    restore(&repo, &kept.snapshot.tree, &out, &RestoreOptions::default()).unwrap();
    assert_eq!(std::fs::read(out.join("rel")).unwrap(), second);
}

#[test]
fn a_damaged_dictionary_spoils_only_the_blobs_of_its_own_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = init_local(&dir);
    let data = table(6144, 5);
    let result = back_up(&repo, &data);
    let packs = packs(&repo);
    assert!(dictionaries(&packs) > 1, "the file spans packs, each with its dictionary");
    let victim =
        packs.iter().find(|p| p.blobs.iter().any(|b| b.blob_type == BlobType::Dictionary)).unwrap();
    let dict = victim.blobs.iter().find(|b| b.blob_type == BlobType::Dictionary).unwrap();
    let name = victim.id.to_hex();
    let path = dir.join("data").join(&name[..2]).join(&name);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[usize::try_from(dict.offset).unwrap() + 100] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();

    let errors = read_data(&repo);
    assert!(!errors.is_empty());
    assert!(errors.iter().all(|e| e.contains(&name)), "only the damaged pack is named: {errors:?}");
    // Its data blobs fail with the dictionary named; the other packs' still open.
    let bad: Vec<&String> = errors.iter().filter(|e| e.contains("dictionary")).collect();
    let victims = victim.blobs.iter().filter(|b| b.blob_type == BlobType::Data).count();
    assert_eq!(bad.len(), victims, "{errors:?}");
    let out = tmp.path().join("out");
    let err = restore(&repo, &result.snapshot.tree, &out, &RestoreOptions::default()).unwrap_err();
    assert!(matches!(&err, Error::DamagedFiles(files) if files.len() == 1), "{err}");
    // Every piece from the other packs was restored in place.
    let restored = std::fs::read(out.join("rel")).unwrap();
    let index = repo.index();
    let node = repo.find_node(&result.snapshot.tree, "rel").unwrap();
    for (i, id) in node.content.iter().enumerate() {
        let loc = index.get(id).unwrap();
        let range = i * PIECE..(i + 1) * PIECE;
        if loc.pack != victim.id {
            assert_eq!(restored[range.clone()], data[range], "piece {i}");
        }
    }
}
