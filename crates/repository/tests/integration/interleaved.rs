//! Restoring a file whose chunks come from many packs at once, as a daily full backup of a
//! database does (day one's pack, then each day's changed pages): the restore must read each
//! pack byte about once, however the chunks interleave.

use std::sync::Arc;

use holdfast_repository::Repository;
use holdfast_repository::backend::FileType;
use holdfast_repository::backup::{BackupOptions, Chunking, store_tar};
use holdfast_repository::restore::{RestoreOptions, restore};

use crate::support::*;

/// A one-member ustar archive.
pub fn tar_of(name: &str, content: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{:011o}", content.len()).as_bytes());
    h[136..147].copy_from_slice(b"14723133000");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

#[test]
fn a_file_drawn_from_many_packs_is_restored_reading_each_pack_about_once() {
    const PAGE: usize = 8192;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    std::fs::create_dir_all(&dir).unwrap();
    let recording = Arc::new(Recording::new(local_backend(&dir)));
    let repo = Repository::init(recording.clone(), PASSWORD, &small_opts()).unwrap();
    // 4 MiB of incompressible pages; every day rewrites every 50th page (a different 2%).
    let mut data = random_bytes(7, 512 * PAGE);
    let pages = |_: &str, _: u64| Chunking::Fixed(PAGE);
    let mut last = None;
    for day in 0..12u64 {
        if day > 0 {
            for page in (usize::try_from(day).unwrap()..512).step_by(50) {
                let fresh = random_bytes(day * 1000 + page as u64, PAGE);
                data[page * PAGE..(page + 1) * PAGE].copy_from_slice(&fresh);
            }
        }
        let stored = store_tar(
            &repo,
            tar_of("f", &data).as_slice(),
            "db",
            &pages,
            &[],
            &BackupOptions::new(),
        )
        .unwrap();
        last = Some(stored.save(&repo, Default::default()).unwrap());
    }
    let packs: u64 = repo.backend().list(FileType::Pack).unwrap().iter().map(|o| o.size).sum();
    assert!(
        repo.backend().list(FileType::Pack).unwrap().len() > 12,
        "chunks spread over many packs"
    );
    recording.take();
    let out = tmp.path().join("out");
    restore(&repo, &last.unwrap().snapshot.tree, &out, &RestoreOptions::default()).unwrap();
    assert_eq!(std::fs::read(out.join("f")).unwrap(), data);
    let read = recording.bytes(FileType::Pack);
    assert!(read <= 2 * packs, "read {read} pack bytes to restore from {packs}");
}
