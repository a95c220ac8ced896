//! The behaviour every [`Backend`] must show, as one function each implementation's tests call
//! (the pattern of object_store's `integration.rs`). Panics with a message on the first violation.

use bytes::Bytes;

use super::{Backend, FileType};

/// Runs the whole suite against an empty backend.
///
/// # Panics
/// On the first behaviour that differs from the contract.
pub fn run(b: &dyn Backend) {
    suite(b);
    concurrent_creates(b);
}

/// Runs the suite but for the race of concurrent creates of one name, for a backend whose store
/// cannot give that guarantee: moto, the S3 test server, checks for the object and then writes it
/// without a lock, so two racing conditional PUTs can both succeed there (S3 itself decides them
/// atomically).
///
/// # Panics
/// As [`run`].
pub fn run_without_races(b: &dyn Backend) {
    suite(b);
}

fn suite(b: &dyn Backend) {
    let name = "ab".repeat(32);
    let data = Bytes::from((0..=255u8).cycle().take(10_000).collect::<Vec<u8>>());

    // Missing objects are NotFound for get and stat, and listing an empty type is empty.
    for ft in FileType::ALL {
        assert!(b.list(ft).expect("list empty").is_empty(), "{ft:?} not empty at start");
    }
    assert!(b.get(FileType::Pack, &name).expect_err("get missing").is_not_found());
    assert!(b.stat(FileType::Pack, &name).expect_err("stat missing").is_not_found());

    // Create, read back whole and by range, stat.
    b.create(FileType::Pack, &name, data.clone()).expect("create");
    assert_eq!(b.get(FileType::Pack, &name).expect("get"), data);
    assert_eq!(b.get_range(FileType::Pack, &name, 100, 50).expect("range"), data.slice(100..150));
    assert_eq!(b.get_range(FileType::Pack, &name, 9_990, 10).expect("tail"), data.slice(9_990..));
    let st = b.stat(FileType::Pack, &name).expect("stat");
    assert_eq!(st.size, 10_000);
    assert_eq!(st.name, name);

    // Create-only: a second create of the same name fails with AlreadyExists and changes nothing.
    let err =
        b.create(FileType::Pack, &name, Bytes::from_static(b"other")).expect_err("2nd create");
    assert!(err.is_already_exists(), "second create gave {err}");
    assert_eq!(b.get(FileType::Pack, &name).expect("get after"), data);

    // Listing is per type and returns bare names and sizes.
    b.create(FileType::Index, "i1", Bytes::from_static(b"one")).expect("index");
    b.create(FileType::Snapshot, "s1", Bytes::from_static(b"two")).expect("snapshot");
    b.create(FileType::Config, "config", Bytes::from_static(b"cfg")).expect("config");
    let packs = b.list(FileType::Pack).expect("list packs");
    assert_eq!(packs.len(), 1);
    assert_eq!(packs[0].name, name);
    assert_eq!(packs[0].size, 10_000);
    let idx = b.list(FileType::Index).expect("list index");
    assert_eq!(idx.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["i1"]);
    assert_eq!(b.list(FileType::Config).expect("list config").len(), 1);
    assert!(b.list(FileType::Key).expect("list keys").is_empty());
    assert_eq!(b.get(FileType::Config, "config").expect("get config"), Bytes::from_static(b"cfg"));

    // Delete removes; deleting again is fine.
    b.delete(FileType::Pack, &name).expect("delete");
    assert!(b.get(FileType::Pack, &name).expect_err("gone").is_not_found());
    b.delete(FileType::Pack, &name).expect("delete twice");
    assert!(b.list(FileType::Pack).expect("list after delete").is_empty());

    // A staged file is stored under its name, create-only; the staging name stays the caller's.
    let dir = b.staging_dir().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&dir).expect("staging dir");
    let staged = dir.join(format!("conformance-{}", std::process::id()));
    std::fs::write(&staged, &data).expect("write staged file");
    b.create_from_file(FileType::Pack, &name, &staged).expect("create from file");
    assert_eq!(b.get(FileType::Pack, &name).expect("get staged"), data);
    std::fs::remove_file(&staged).expect("the staged file is still there to remove");
    assert_eq!(b.get(FileType::Pack, &name).expect("get after removal"), data);
    std::fs::write(&staged, b"other").expect("write another staged file");
    let err = b.create_from_file(FileType::Pack, &name, &staged).expect_err("2nd from file");
    assert!(err.is_already_exists(), "second create from file gave {err}");
    assert_eq!(b.get(FileType::Pack, &name).expect("get after"), data, "overwritten");
    std::fs::remove_file(&staged).expect("remove the second staged file");
    b.delete(FileType::Pack, &name).expect("delete staged");
}

/// Concurrent creates of one name: exactly one wins.
fn concurrent_creates(b: &dyn Backend) {
    let wins = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|i| {
                s.spawn(move || {
                    b.create(FileType::Snapshot, "race", Bytes::from(vec![i; 100])).is_ok()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).filter(|w| *w).count()
    });
    assert_eq!(wins, 1, "concurrent create-only writes");
}
