//! Corruption is found and named; wrong passwords and missing repositories fail clearly.

use std::fs;
use std::path::PathBuf;

use holdfast_repository::backend::FileType;
use holdfast_repository::backup::{self, BackupOptions};
use holdfast_repository::check::{self, CheckOptions};
use holdfast_repository::pack::BlobType;
use holdfast_repository::restore::{self, RestoreOptions};
use holdfast_repository::{Error, Repository};

use crate::support::*;

#[test]
fn flipped_byte_in_a_pack_is_named_by_check_and_fails_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("data.bin"), random_bytes(7, 3 * 1024 * 1024)).unwrap();
    let repo_dir = tmp.path().join("repo");
    let repo = init_local(&repo_dir);
    let r = backup::backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();

    // Pick a data blob and flip one byte in the middle of it, on disk.
    let node = repo.find_node(&r.snapshot.tree, "/src/data.bin").unwrap();
    let loc = repo.index().get(&node.content[1]).unwrap();
    assert_eq!(loc.blob.blob_type, BlobType::Data);
    let pack = loc.pack.to_hex();
    let path: PathBuf = repo_dir.join(FileType::Pack.path(&pack));
    let mut bytes = fs::read(&path).unwrap();
    let at = (loc.blob.offset + u64::from(loc.blob.length) / 2) as usize;
    bytes[at] ^= 0x01;
    let mut perms = fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    fs::set_permissions(&path, perms).unwrap();
    fs::write(&path, &bytes).unwrap();

    let report = check::check(&repo, &CheckOptions::default()).unwrap();
    assert!(report.errors.is_empty(), "structure is intact: {:?}", report.errors);
    let report =
        check::check(&repo, &CheckOptions { read_data: true, ..Default::default() }).unwrap();
    assert!(!report.errors.is_empty());
    assert!(report.errors.iter().all(|e| e.contains(&pack)), "{:?}", report.errors);
    assert!(
        report.errors.iter().any(|e| e.contains(&node.content[1].to_hex())),
        "{:?}",
        report.errors
    );
    let err = report.into_result().unwrap_err();
    assert!(err.to_string().contains(&pack));

    let target = tmp.path().join("restore");
    let err =
        restore::restore(&repo, &r.snapshot.tree, &target, &RestoreOptions::default()).unwrap_err();
    match &err {
        Error::DamagedFiles(files) => {
            assert_eq!(files.len(), 1, "{files:?}");
            assert!(files[0].contains("data.bin"), "{files:?}");
            assert!(files[0].contains(&pack), "{files:?}");
            assert!(files[0].contains(&node.content[1].to_hex()), "{files:?}");
        }
        other => panic!("expected DamagedFiles, got {other}"),
    }
    // Everything readable was written, and nothing wrong: the first chunk is in place.
    let restored = fs::read(target.join("src/data.bin")).unwrap();
    let original = random_bytes(7, 3 * 1024 * 1024);
    let first_len = repo.load_blob(&node.content[0]).unwrap().len();
    assert_eq!(restored[..first_len], original[..first_len]);
    let mut out = Vec::new();
    assert!(matches!(restore::dump(&repo, &node, &mut out), Err(Error::CorruptBlob { .. })));
}

#[test]
fn wrong_password_missing_repository_and_double_init_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let err = Repository::open(local_backend(&dir), PASSWORD).unwrap_err();
    assert!(matches!(err, Error::NoRepository { .. }), "{err}");
    init_local(&dir);
    let err = Repository::open(local_backend(&dir), b"not the password").unwrap_err();
    assert!(matches!(err, Error::WrongPassword { .. }), "{err}");
    assert!(err.to_string().contains("wrong password"));
    let err = Repository::init(local_backend(&dir), PASSWORD, &small_opts()).unwrap_err();
    assert!(matches!(err, Error::AlreadyInitialized { .. }), "{err}");
    Repository::open(local_backend(&dir), PASSWORD).unwrap();
}

#[test]
fn tampered_snapshot_and_index_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"hello").unwrap();
    let dir = tmp.path().join("repo");
    let repo = init_local(&dir);
    let r = backup::backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    let snap_path = dir.join(FileType::Snapshot.path(&r.id.to_hex()));
    let mut bytes = fs::read(&snap_path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let mut perms = fs::metadata(&snap_path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    fs::set_permissions(&snap_path, perms).unwrap();
    fs::write(&snap_path, &bytes).unwrap();
    let report = check::check(&repo, &CheckOptions::default()).unwrap();
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(report.errors[0].contains(&r.id.to_hex()), "{:?}", report.errors);
}
