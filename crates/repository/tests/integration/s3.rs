//! The S3 backend against a real S3-compatible server: moto (`moto_server` from PyPI), started
//! on a free port for this test. Skipped, with a notice, only when the binary is absent.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_repository::backend::{Backend, conformance};
use holdfast_repository::backup::{self, BackupOptions};
use holdfast_repository::check::{self, CheckOptions};
use holdfast_repository::location::{Location, S3Options};
use holdfast_repository::restore::{self, RestoreOptions};
use holdfast_repository::{Error, Repository};

use crate::support::*;

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http(port: u16, request: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(request.as_bytes())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn start_moto() -> Option<Moto> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let child = match Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("starting moto_server: {e}"),
    };
    let moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let probe =
            format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        if http(port, &probe).map(|r| r.starts_with("HTTP/1.1 200")).unwrap_or(false) {
            break;
        }
        assert!(Instant::now() < deadline, "moto_server did not answer within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(moto)
}

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
    let Some(moto) = start_moto() else {
        eprintln!("NOTICE: moto_server not found on PATH; skipping the S3 backend test");
        return;
    };
    let port = moto.port;
    let create = format!(
        "PUT /holdfast-test HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let resp = http(port, &create).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "create bucket: {resp}");

    // The shared conformance suite, including create-only semantics (If-None-Match: *).
    conformance::run(&*s3(port, "conformance"));

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
    assert!(matches!(
        Repository::open(s3(port, "repos/none"), PASSWORD),
        Err(Error::NoRepository { .. })
    ));

    // An endpoint nobody listens on fails with a backend error, not a hang.
    drop(moto);
    let err = Repository::open(s3(port, "repos/one"), PASSWORD).unwrap_err();
    assert!(matches!(err, Error::Backend(_)), "{err}");
}
