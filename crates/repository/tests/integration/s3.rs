//! The S3 backend against a real S3-compatible server: moto (`moto_server` from PyPI), started
//! on a free port for this test. Without `moto_server` the test fails, naming the install script.

use std::sync::Arc;

use holdfast_repository::backend::{Backend, conformance};
use holdfast_repository::backup::{self, BackupOptions};
use holdfast_repository::check::{self, CheckOptions};
use holdfast_repository::location::{Location, S3Options};
use holdfast_repository::restore::{self, RestoreOptions};
use holdfast_repository::{Error, Repository};
use holdfast_testkit::Moto;

use crate::support::*;

fn s3(port: u16, prefix: &str) -> Arc<dyn Backend> {
    Location::S3(S3Options {
        bucket: "holdfast-test".into(),
        prefix: prefix.into(),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: Some("us-east-1".into()),
        path_style: Some(true),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
    })
    .open()
    .unwrap()
}

#[test]
fn s3_backend_against_moto() {
    let moto = Moto::start().unwrap_or_else(|e| panic!("{e}"));
    let port = moto.port();
    moto.create_bucket("holdfast-test").unwrap_or_else(|e| panic!("create bucket: {e}"));

    // The shared conformance suite, including create-only semantics (If-None-Match: *), but
    // not the race of several creates of one name: moto decides those without a lock.
    conformance::run_without_races(&*s3(port, "conformance"));

    // A repository round trip under another prefix.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("big"), random_bytes(77, 3 * 1024 * 1024)).unwrap();
    std::fs::write(src.join("sub/small"), b"small file").unwrap();
    let repo = Repository::init(s3(port, "repos/one"), PASSWORD, &small_opts()).unwrap();
    let r = backup::backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    let repo = Repository::open(s3(port, "repos/one"), PASSWORD).unwrap();
    let target = tmp.path().join("restore");
    restore::restore(&repo, &r.snapshot.tree, &target, &RestoreOptions::default()).unwrap();
    assert_same_tree(&src, &target.join("src"));
    let report =
        check::check(&repo, &CheckOptions { read_data: true, ..Default::default() }).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);

    // A small write to the large file: the next backup reads the parent's prints blob from S3
    // and stores the changed chunk as a patch (format §9.2), which restores exactly.
    let node = repo.find_node(&r.snapshot.tree, "src/big").unwrap();
    assert!(node.prints.is_some());
    let mut at = 0usize;
    let mut target_chunk = None;
    for id in &node.content {
        let len = repo.load_blob(id).unwrap().len();
        // Four blocks or more, so one changed block is at most a quarter; the write stays
        // within the chunker's minimum size after the chunk's start, so no boundary moves.
        if len > 3 * 16 * 1024 && target_chunk.is_none() {
            target_chunk = Some(at);
        }
        at += len;
    }
    let at = target_chunk.expect("a chunk of four blocks") + 200;
    let mut data = std::fs::read(src.join("big")).unwrap();
    data[at..at + 100].copy_from_slice(&random_bytes(78, 100));
    std::fs::write(src.join("big"), &data).unwrap();
    let r2 =
        backup::backup_paths(&repo, std::slice::from_ref(&src), &BackupOptions::new()).unwrap();
    let index = repo.index();
    let changed = repo.find_node(&r2.snapshot.tree, "src/big").unwrap();
    let patched = changed.content.iter().filter(|id| index.get(id).unwrap().blob.base.is_some());
    assert_eq!(patched.count(), 1, "the changed chunk is a patch");
    let target = tmp.path().join("restore2");
    restore::restore(&repo, &r2.snapshot.tree, &target, &RestoreOptions::default()).unwrap();
    assert!(std::fs::read(target.join("src/big")).unwrap() == data);
    let report =
        check::check(&repo, &CheckOptions { read_data: true, ..Default::default() }).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(matches!(
        Repository::open(s3(port, "repos/none"), PASSWORD),
        Err(Error::NoRepository { .. })
    ));

    // An endpoint nobody listens on fails with a backend error, not a hang.
    drop(moto);
    let err = Repository::open(s3(port, "repos/one"), PASSWORD).unwrap_err();
    assert!(matches!(err, Error::Backend(_)), "{err}");
}
