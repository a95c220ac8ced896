//! The repository's acceptance criteria, shown through the real `holdfast repo` binary against real
//! repositories on the real file system (and a real tmpfs for the full-disk case).

use std::ffi::OsStr;
use std::fs;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "common/tree.rs"]
mod tree;
use tree::{assert_same_tree, describe, random_bytes};

const HOLDFAST: &str = env!("CARGO_BIN_EXE_holdfast");

/// A repository directory, its password file and a scratch area.
struct Env {
    tmp: tempfile::TempDir,
    repo: PathBuf,
    pw: PathBuf,
}

impl Env {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        let pw = tmp.path().join("pw");
        fs::write(&pw, "acceptance secret\n").unwrap();
        Env { tmp, repo, pw }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(HOLDFAST);
        c.arg("repo").arg("--quiet").arg("--repo").arg(&self.repo);
        c.arg("--password-file").arg(&self.pw).args(args);
        c.env_remove("HOLDFAST_PASSWORD").env_remove("HOLDFAST_REPOSITORY");
        c.stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and insists on success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "holdfast repo {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn init(&self) {
        self.ok(&["init", "--pack-size-mib", "1", "--chunk-avg-kib", "64"]);
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    fn check_read_data(&self) {
        let out = self.ok(&["check", "--read-data"]);
        assert!(out.contains("no errors were found"), "{out}");
    }
}

/// Asserts a failed run: exit code 1 and exactly one line on stderr; returns that line.
fn one_line_failure(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(out.status.code(), Some(1), "expected exit 1, got {}: {err}", out.status);
    assert_eq!(err.lines().count(), 1, "expected one line on stderr, got: {err}");
    err
}

/// Sets the mtime without opening the entry (opening a FIFO would block).
fn set_mtime(p: &Path, secs: u64) {
    let st = Command::new("touch")
        .args(["-m", "-h", "-d", &format!("@{secs}.987654321")])
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success(), "touch {}", p.display());
}

fn is_root() -> bool {
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

#[test]
fn every_kind_of_entry_and_stdin_round_trip_exactly() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("a/b/c")).unwrap();
    fs::create_dir_all(src.join("empty/also-empty")).unwrap();
    fs::write(src.join("large.bin"), random_bytes(1, 9 * 1024 * 1024 + 13)).unwrap();
    let text: String = (0..100_000).map(|i| format!("row {i} compresses well\n")).collect();
    fs::write(src.join("a/text.txt"), &text).unwrap();
    fs::write(src.join("a/b/zero-length"), b"").unwrap();
    fs::write(src.join("a/b/c/deep"), b"deep").unwrap();
    fs::write(src.join("a/private"), b"0600").unwrap();
    fs::set_permissions(src.join("a/private"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(src.join("a/setgid-tool"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("a/setgid-tool"), fs::Permissions::from_mode(0o2755)).unwrap();
    // A sparse disk image: 48 MiB with two islands of data.
    let img = fs::File::create(src.join("disk.img")).unwrap();
    img.set_len(48 * 1024 * 1024).unwrap();
    use std::os::unix::fs::FileExt;
    img.write_all_at(&random_bytes(2, 70_000), 0).unwrap();
    img.write_all_at(&random_bytes(3, 70_000), 30 * 1024 * 1024).unwrap();
    drop(img);
    std::os::unix::fs::symlink("a/text.txt", src.join("link")).unwrap();
    std::os::unix::fs::symlink("/does/not/exist", src.join("dangling")).unwrap();
    fs::write(src.join("hard1"), b"one inode, two names").unwrap();
    fs::hard_link(src.join("hard1"), src.join("a/hard2")).unwrap();
    fs::write(src.join(OsStr::from_bytes(b"bad \xff\xfe utf8\nnewline")), b"odd").unwrap();
    fs::write(src.join("spaces and ünïcödé 日本 -- $HOME ; *"), b"odd too").unwrap();
    fs::write(src.join("-starts-with-dash"), b"dash").unwrap();
    let fifo = Command::new("mkfifo").arg(src.join("a/pipe")).status().unwrap();
    assert!(fifo.success(), "mkfifo failed");
    if is_root() {
        // /dev/null's numbers: a character device restored as one.
        let st = Command::new("mknod").arg(src.join("a/null-dev")).args(["c", "1", "3"]).status();
        assert!(st.unwrap().success(), "mknod failed");
    }
    for (p, t) in [
        ("a/text.txt", 1_600_000_000),
        ("large.bin", 1_500_000_000),
        ("a/pipe", 1_400_000_000),
        ("a/b", 1_300_000_000),
        ("empty/also-empty", 1_200_000_000),
        ("empty", 1_100_000_000),
    ] {
        set_mtime(&src.join(p), t);
    }

    env.init();
    let backup = env.json(&["backup", src.to_str().unwrap()]);
    let snap = backup["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(backup["summary"]["files_new"], 12, "{backup}");

    let target = env.path("restore");
    env.ok(&["restore", &snap[..8], "--target", target.to_str().unwrap(), "--sparse"]);
    assert_same_tree(&src, &target.join("src"));
    let restored = fs::metadata(target.join("src/disk.img")).unwrap();
    assert_eq!(restored.len(), 48 * 1024 * 1024);
    assert!(restored.blocks() * 512 < 8 * 1024 * 1024, "holes were filled: {restored:?}");
    let (h1, h2) = (
        fs::metadata(target.join("src/hard1")).unwrap(),
        fs::metadata(target.join("src/a/hard2")).unwrap(),
    );
    assert_eq!(h1.ino(), h2.ino(), "hardlinks restore as one inode");

    // A stream from stdin comes back byte for byte, through restore and through `cat file`.
    let stream = random_bytes(4, 3 * 1024 * 1024 + 5);
    let mut child = env
        .cmd(&["--json", "backup", "--stdin", "--stdin-filename", "dump.sql"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&stream).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stdin_snap = v["snapshot_id"].as_str().unwrap().to_string();
    let dumped = env.cmd(&["cat", "file", &stdin_snap, "/dump.sql"]).output().unwrap();
    assert!(dumped.status.success());
    assert!(dumped.stdout == stream, "cat file returned different bytes");
    let t2 = env.path("restore-stdin");
    env.ok(&["restore", &stdin_snap, "--target", t2.to_str().unwrap()]);
    assert!(fs::read(t2.join("dump.sql")).unwrap() == stream, "restored stream differs");
    env.check_read_data();
}

#[test]
fn two_hundred_thousand_small_files_round_trip() {
    let env = Env::new();
    // 400,000 files of one block each take about 1.6 GB of disk; on a RAM disk when we may mount
    // one, so the test does not depend on the free space of a shared build disk.
    let _ram = Mount::tmpfs(env.tmp.path(), "4g").ok();
    fs::write(&env.pw, "acceptance secret\n").unwrap();
    let src = env.path("many");
    for d in 0..200 {
        let dir = src.join(format!("d{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..1000 {
            fs::write(dir.join(format!("{f}")), format!("{d}/{f}")).unwrap();
        }
    }
    env.init();
    let v = env.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(v["summary"]["files_new"], 200_000, "{v}");
    let target = env.path("out");
    let r = env.json(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(r["files_done"], 200_000, "{r}");
    assert_same_tree(&src, &target.join("many"));
}

#[test]
fn kill_9_mid_backup_leaves_a_checkable_repository_that_the_rerun_reuses() {
    let env = Env::new();
    env.init();
    let early = env.path("early");
    fs::create_dir_all(&early).unwrap();
    fs::write(early.join("before"), random_bytes(9, 300_000)).unwrap();
    env.ok(&["backup", early.to_str().unwrap()]);

    let src = env.path("big");
    fs::create_dir_all(&src).unwrap();
    let (files, size) = (16u64, 4 * 1024 * 1024usize);
    for i in 0..files {
        fs::write(src.join(format!("f{i:02}")), random_bytes(100 + i, size)).unwrap();
    }
    let mut child = env
        .cmd(&["backup", src.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once it has committed at least two index files beyond the first backup's one.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let indexes = fs::read_dir(env.repo.join("index")).map(|d| d.count()).unwrap_or(0);
        if indexes >= 3 {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("backup finished ({status}) before it could be killed; enlarge the input");
        }
        assert!(Instant::now() < deadline, "the backup made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let snaps = env.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 1, "the killed backup wrote no snapshot");

    env.check_read_data();
    let t = env.path("early-restore");
    env.ok(&["restore", "latest", "--target", t.to_str().unwrap()]);
    assert_same_tree(&early, &t.join("early"));

    let v = env.json(&["backup", src.to_str().unwrap()]);
    let added = v["summary"]["data_added"].as_u64().unwrap();
    assert!(
        added < files * size as u64,
        "the rerun stored {added} bytes of {}: uploaded packs were not reused",
        files * size as u64
    );
    env.check_read_data();
    let t = env.path("big-restore");
    env.ok(&["restore", v["snapshot_id"].as_str().unwrap(), "--target", t.to_str().unwrap()]);
    assert_same_tree(&src, &t.join("big"));
}

/// The largest file under `dir` (a pack with data blobs in it).
fn largest_file(dir: &Path) -> PathBuf {
    let mut best = (0, PathBuf::new());
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.len() > best.0 {
                best = (m.len(), p);
            }
        }
    }
    best.1
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0x40;
    let mut perms = fs::metadata(path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    fs::set_permissions(path, perms).unwrap();
    fs::write(path, &bytes).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(st.success());
}

#[test]
fn a_flipped_byte_in_any_object_is_named_by_check_and_fails_the_restore() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("data"), random_bytes(5, 600_000)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let pristine = env.path("pristine");
    copy_dir(&env.repo, &pristine);

    // A pack: check --read-data names it, a restore that needs it exits non-zero.
    let pack = largest_file(&env.repo.join("data"));
    let pack_name = pack.file_name().unwrap().to_str().unwrap().to_string();
    let len = fs::metadata(&pack).unwrap().len() as usize;
    flip_byte(&pack, len / 2);
    let out = env.run(&["check"]);
    assert!(out.status.success(), "the structure is intact");
    let out = env.run(&["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&pack_name), "check must name pack {pack_name}: {err}");
    let target = env.path("restore");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let line = one_line_failure(&out);
    assert!(line.contains("corrupt") && line.contains(&pack_name), "{line}");
    // Chunks that verified may have been written; nothing else: every byte is either the
    // original or still a hole.
    let original = random_bytes(5, 600_000);
    let restored = fs::read(target.join("src/data")).unwrap_or_default();
    assert!(restored.len() <= original.len());
    let wrong = restored.iter().zip(&original).filter(|(r, o)| r != o && **r != 0).count();
    assert_eq!(wrong, 0, "a failed restore wrote {wrong} wrong bytes");

    // An index file and a snapshot file, each in a fresh copy: check names the object.
    for dir in ["index", "snapshots"] {
        let repo = env.path(&format!("copy-{dir}"));
        copy_dir(&pristine, &repo);
        let obj = largest_file(&repo.join(dir));
        let name = obj.file_name().unwrap().to_str().unwrap().to_string();
        flip_byte(&obj, fs::metadata(&obj).unwrap().len() as usize - 3);
        let mut c = env.cmd(&["check", "--read-data"]);
        c.arg("--repo").arg(&repo);
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{dir}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&name), "check must name {dir}/{name}: {err}");
    }
}

#[test]
fn concurrent_backups_and_prune_leave_every_snapshot_restorable() {
    let env = Env::new();
    env.init();
    // Something for prune to collect while the backups run.
    let gone = env.path("gone");
    fs::create_dir_all(&gone).unwrap();
    fs::write(gone.join("x"), random_bytes(70, 2_000_000)).unwrap();
    let v = env.json(&["backup", gone.to_str().unwrap()]);
    env.ok(&["forget", v["snapshot_id"].as_str().unwrap()]);

    let srcs: Vec<PathBuf> = (0..2).map(|i| env.path(&format!("src{i}"))).collect();
    for (i, s) in srcs.iter().enumerate() {
        fs::create_dir_all(s).unwrap();
        for f in 0..6u64 {
            fs::write(s.join(format!("f{f}")), random_bytes(40 + 10 * i as u64 + f, 700_000))
                .unwrap();
        }
        // The same content in both: concurrent deduplication of identical blobs.
        fs::write(s.join("shared"), random_bytes(99, 900_000)).unwrap();
    }
    let mut snaps: Vec<(String, PathBuf)> = Vec::new();
    std::thread::scope(|sc| {
        let backups: Vec<_> = srcs
            .iter()
            .map(|s| {
                let env = &env;
                sc.spawn(move || {
                    (0..2)
                        .map(|_| {
                            // A prune holds the repository for a moment: wait for it.
                            let v = env.json(&[
                                "backup",
                                "--retry-lock",
                                "10m",
                                "--force",
                                s.to_str().unwrap(),
                            ]);
                            (v["snapshot_id"].as_str().unwrap().to_string(), s.clone())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let env = &env;
        let pruner = sc.spawn(move || {
            for _ in 0..3 {
                // Waits for a moment when no backup holds the repository.
                env.ok(&["prune", "--retry-lock", "10m", "--safety-delay", "1h"]);
            }
        });
        pruner.join().unwrap();
        for b in backups {
            snaps.extend(b.join().unwrap());
        }
    });
    // Both phases with no delay now that the writers are done.
    env.ok(&["prune", "--safety-delay", "0s"]);
    let r = env.json(&["prune", "--safety-delay", "0s"]);
    assert_eq!(r["pending_plans"], 0, "{r}");
    assert!(env.repo.join("data").read_dir().unwrap().next().is_some());
    env.check_read_data();
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 4);
    for (i, (id, src)) in snaps.iter().enumerate() {
        let t = env.path(&format!("r{i}"));
        env.ok(&["restore", id, "--target", t.to_str().unwrap()]);
        assert_same_tree(src, &t.join(src.file_name().unwrap()));
    }
}

/// A tmpfs mounted for the life of the value.
struct Mount(PathBuf);

impl Mount {
    /// Mounts a tmpfs of `size` on `dir`; why not (mount's own message) when it cannot.
    fn tmpfs(dir: &Path, size: &str) -> Result<Mount, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Mount(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("--lazy").arg(&self.0).status();
    }
}

/// A TCP port nothing listens on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn wrong_password_missing_repository_and_unreachable_s3_fail_in_one_line() {
    let env = Env::new();
    env.init();
    let before = describe(&env.repo);

    let bad = env.path("bad-pw");
    fs::write(&bad, "not it\n").unwrap();
    let mut c = env.cmd(&["snapshots"]);
    c.arg("--password-file").arg(&bad);
    let line = one_line_failure(&c.output().unwrap());
    assert!(line.contains("wrong password"), "{line}");
    let mut c = env.cmd(&["backup", env.pw.to_str().unwrap()]);
    c.arg("--password-file").arg(&bad);
    one_line_failure(&c.output().unwrap());
    assert_eq!(describe(&env.repo), before, "a failed open wrote something");

    let missing = env.path("no-such-repo");
    let mut c = env.cmd(&["backup", env.pw.to_str().unwrap()]);
    c.arg("--repo").arg(&missing);
    let line = one_line_failure(&c.output().unwrap());
    assert!(line.contains("no repository at"), "{line}");
    assert!(!missing.exists(), "a failed backup created the repository directory");
    let empty = env.path("empty-dir");
    fs::create_dir_all(&empty).unwrap();
    let mut c = env.cmd(&["snapshots"]);
    c.arg("--repo").arg(&empty);
    let line = one_line_failure(&c.output().unwrap());
    assert!(line.contains("no repository at") && line.contains("init"), "{line}");

    // An S3 endpoint nothing listens on: one line naming it, quickly (retries are bounded).
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let out = env
        .cmd(&["snapshots", "--repo", "s3://bucket/prefix", "--s3-endpoint", &endpoint])
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y")
        .output()
        .unwrap();
    let line = one_line_failure(&out);
    assert!(line.contains(&format!("127.0.0.1:{port}")), "the endpoint is named: {line}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());

    // S3 without any credentials: says what to set instead of hanging on instance metadata.
    let started = Instant::now();
    let mut c = env.cmd(&["snapshots", "--repo", "s3://bucket/prefix", "--s3-endpoint", &endpoint]);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    // No shared credentials file either.
    c.env("HOME", env.path("empty-home"));
    let line = one_line_failure(&c.output().unwrap());
    assert!(line.contains("AWS_ACCESS_KEY_ID"), "says what to set: {line}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
}

#[test]
fn a_full_disk_fails_in_one_line_and_the_rerun_after_freeing_space_succeeds() {
    let env = Env::new();
    let mnt = env.path("small-disk");
    fs::create_dir_all(&mnt).unwrap();
    // A real full disk needs a small file system of its own; CI runs the tests as root.
    let _guard = Mount::tmpfs(&mnt, "8m").unwrap_or_else(|why| {
        panic!(
            "cannot mount an 8 MiB tmpfs on {} ({why}; running as root: {}): the full-disk test \
             needs root (CAP_SYS_ADMIN) to make a small file system, as CI runs it",
            mnt.display(),
            is_root()
        )
    });
    let env = Env { repo: mnt.join("repo"), ..env };
    env.init();
    let small = env.path("small");
    fs::create_dir_all(&small).unwrap();
    fs::write(small.join("s"), random_bytes(1, 200_000)).unwrap();
    env.ok(&["backup", small.to_str().unwrap()]);

    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..6 {
        fs::write(src.join(format!("f{i}")), random_bytes(20 + i, 2 * 1024 * 1024)).unwrap();
    }
    let line = one_line_failure(&env.run(&["backup", src.to_str().unwrap()]));
    assert!(line.contains("No space left"), "{line}");
    // The failed backup's staged pack files went with it: they would only hold the space.
    let staged = fs::read_dir(env.repo.join("tmp")).map(Iterator::count).unwrap_or(0);
    assert_eq!(staged, 0, "staged pack files left behind");
    // What is there still checks clean, with the disk still full.
    env.check_read_data();
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1);

    // Free space (grow the tmpfs) and run again.
    let st = Command::new("mount").args(["-o", "remount,size=64m"]).arg(&mnt).status().unwrap();
    assert!(st.success());
    let v = env.json(&["backup", src.to_str().unwrap()]);
    env.check_read_data();
    let t = env.path("restore");
    env.ok(&["restore", v["snapshot_id"].as_str().unwrap(), "--target", t.to_str().unwrap()]);
    assert_same_tree(&src, &t.join("src"));
}

#[test]
fn unreadable_entries_are_skipped_with_a_warning_and_exit_code_3() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("locked-dir")).unwrap();
    fs::write(src.join("locked-dir/inside"), b"cannot list me").unwrap();
    fs::write(src.join("readable"), b"fine").unwrap();
    fs::write(src.join("secret"), b"cannot read me").unwrap();
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(src.join("locked-dir"), fs::Permissions::from_mode(0o000)).unwrap();
    env.init();

    // Root reads everything, so the backup runs as an unprivileged user when we are root.
    let mut c = env.cmd(&["--json", "backup", src.to_str().unwrap()]);
    if is_root() {
        for p in [env.tmp.path(), src.as_path()] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::set_permissions(&env.pw, fs::Permissions::from_mode(0o644)).unwrap();
        let st = Command::new("chown").args(["-R", "65534:65534"]).arg(&env.repo).status();
        assert!(st.unwrap().success());
        let args: Vec<_> = c.get_args().map(|a| a.to_owned()).collect();
        c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", HOLDFAST]).args(args);
        c.stdin(Stdio::null()).env_remove("HOLDFAST_PASSWORD");
    }
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "exit 3 = snapshot saved, some files unreadable: {err}");
    assert!(err.contains("secret") && err.contains("locked-dir"), "warnings name both: {err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["warnings"].as_array().map(Vec::len), Some(2), "{v}");
    let id = v["snapshot_id"].as_str().unwrap();

    let t = env.path("restore");
    env.ok(&["restore", id, "--target", t.to_str().unwrap()]);
    assert_eq!(fs::read(t.join("src/readable")).unwrap(), b"fine");
    assert!(!t.join("src/secret").exists(), "an unreadable file is left out, not stored empty");
    env.check_read_data();
}

#[test]
fn with_its_index_gone_prune_refuses_and_repair_index_restores_every_snapshot() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("big.bin"), random_bytes(3, 3 * 1024 * 1024)).unwrap();
    for i in 0..10 {
        fs::write(src.join("d").join(format!("f{i}")), random_bytes(10 + i, 4000)).unwrap();
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    let index_dir = env.repo.join("index");
    for entry in fs::read_dir(&index_dir).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let packs = || walkdir_count(&env.repo.join("data"));
    let before = packs();

    let line = one_line_failure(&env.run(&["prune", "--safety-delay", "0s"]));
    assert!(line.contains("nothing was deleted") && line.contains("repair index"), "{line}");
    assert_eq!(packs(), before, "prune deleted packs");

    let out = env.ok(&["repair", "index"]);
    assert!(out.contains(&format!("indexed {before} of {before} packs")), "{out}");
    env.check_read_data();
    let target = env.path("restore");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &target.join("src"));
}

/// Files below `dir`, at any depth.
fn walkdir_count(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() { stack.push(p) } else { n += 1 }
        }
    }
    n
}

#[test]
fn a_damaged_snapshot_is_reported_and_the_others_still_list_and_restore() {
    let env = Env::new();
    env.init();
    let (one, two) = (env.path("one"), env.path("two"));
    for (dir, seed) in [(&one, 1), (&two, 2)] {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("f"), random_bytes(seed, 100_000)).unwrap();
    }
    let first = env.json(&["backup", one.to_str().unwrap()]);
    env.ok(&["backup", two.to_str().unwrap()]);
    let id = first["snapshot_id"].as_str().unwrap().to_string();
    let path = env.repo.join("snapshots").join(&id);
    let len = fs::metadata(&path).unwrap().len() as usize;
    flip_byte(&path, len - 1);

    let out = env.run(&["snapshots"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&id[..8]) && stderr.contains("unreadable"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 snapshots"));
    let target = env.path("out");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&two, &target.join("two"));
}

#[test]
fn a_reader_that_stops_early_gets_no_broken_pipe_error() {
    use std::io::{BufRead as _, BufReader};
    let env = Env::new();
    env.init();
    let src = env.path("many");
    fs::create_dir_all(&src).unwrap();
    for i in 0..5000 {
        fs::write(src.join(format!("file-{i:05}")), format!("{i}")).unwrap();
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    for args in [&["ls", "latest"][..], &["--json", "ls", "latest"][..]] {
        // `holdfast repo ls latest | head -1`: read one line, then close the pipe.
        let mut child =
            env.cmd(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        assert!(!first.is_empty());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
        assert!(out.status.success(), "{args:?}: {}", out.status);
    }
}

#[test]
fn backup_time_records_the_given_time_and_refuses_a_malformed_one() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "x").unwrap();
    env.ok(&["backup", "--time", "2020-01-02T03:04:05Z", src.to_str().unwrap()]);
    let snaps = env.json(&["snapshots"]);
    assert_eq!(snaps[0]["snapshot"]["time"], "2020-01-02T03:04:05Z", "{snaps}");
    // restic's local form, in the zone TZ names (a POSIX rule: no time zone database needed).
    let local = env
        .cmd(&["backup", "--time", "2021-06-07 08:09:10", src.to_str().unwrap()])
        .env("TZ", "JST-9")
        .output()
        .unwrap();
    assert!(local.status.success(), "{}", String::from_utf8_lossy(&local.stderr));
    let snaps = env.json(&["snapshots"]);
    assert_eq!(snaps[1]["snapshot"]["time"], "2021-06-06T23:09:10Z", "{snaps}");
    let out = env.run(&["backup", "--time", "yesterday", src.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "clap refuses the value");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a time like"));
}

/// A `backup --stdin` that has stored some packs and waits for more input: a backup in flight.
fn start_held_backup(env: &Env, data: &[u8]) -> Child {
    let mut child = env
        .cmd(&["backup", "--stdin", "--stdin-filename", "held.bin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let packs = || {
        let data = env.repo.join("data");
        if data.exists() { walkdir_count(&data) } else { 0 }
    };
    let before = packs();
    child.stdin.as_mut().unwrap().write_all(data).unwrap();
    // 1 MiB packs: a few of them are stored once the data is read.
    wait_for("the held backup to store packs", || packs() >= before + 3);
    child
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap();
    assert!(st.success(), "kill {sig}");
}

/// A prune with no safety delay while a backup is in flight used to delete the backup's new packs
/// (its snapshot then pointed at nothing). Now the backup's lock holds prune off; SIGTERM stops a
/// backup cleanly; and a killed backup's lock is recognised as stale.
#[test]
fn prune_waits_for_a_running_backup_and_signals_stop_backups_cleanly() {
    let env = Env::new();
    env.init();
    let data = random_bytes(21, 6 * 1024 * 1024);
    let mut held = start_held_backup(&env, &data);

    let line = one_line_failure(&env.run(&["prune", "--safety-delay", "0s"]));
    assert!(line.contains("is locked") && line.contains("lock by backup"), "{line}");
    assert!(line.contains(&format!("pid {}", held.id())), "{line}");
    let out = env.ok(&["unlock"]);
    assert!(out.contains("0 lock(s) removed"), "a live holder's lock is not stale: {out}");

    let tail = random_bytes(22, 1024 * 1024);
    let mut stdin = held.stdin.take().unwrap();
    stdin.write_all(&tail).unwrap();
    drop(stdin);
    let out = held.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    env.ok(&["prune", "--safety-delay", "0s"]);
    env.check_read_data();
    let target = env.path("restored");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(fs::read(target.join("held.bin")).unwrap(), [data.clone(), tail].concat());
    assert!(files_in(&env.repo.join("locks")).is_empty(), "the backup released its lock");

    // SIGTERM mid-backup: a message, exit 130, no snapshot, no staged file, no lock left.
    let snapshots_before = files_in(&env.repo.join("snapshots")).len();
    let held = start_held_backup(&env, &random_bytes(23, 5 * 1024 * 1024));
    signal(&held, "-TERM");
    let out = held.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("termination signal received, stopping cleanly"), "{err}");
    assert_eq!(files_in(&env.repo.join("snapshots")).len(), snapshots_before);
    assert!(files_in(&env.repo.join("tmp")).is_empty(), "staged files left");
    assert!(files_in(&env.repo.join("locks")).is_empty(), "lock left");

    // kill -9: the lock stays behind, but names a process that is gone, so prune goes ahead and
    // `unlock` removes it.
    let mut held = start_held_backup(&env, &random_bytes(24, 5 * 1024 * 1024));
    signal(&held, "-KILL");
    held.wait().unwrap();
    assert_eq!(files_in(&env.repo.join("locks")).len(), 1);
    env.ok(&["prune", "--safety-delay", "0s"]);
    let out = env.ok(&["unlock"]);
    assert!(out.contains("no longer exists") && out.contains("1 lock(s) removed"), "{out}");
    env.check_read_data();
    let again = env.path("restored-again");
    env.ok(&["restore", "latest", "--target", again.to_str().unwrap()]);
    assert_same_tree(&target, &again);
}

/// Every file below `dir`, as relative paths.
fn relative_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                stack.push(p);
                out.push(format!("{rel}/"));
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

/// restic's backup selection flags: patterns (case-sensitive, case-insensitive, from a file),
/// marker files, a size limit, one file system, and the paths themselves from a file.
#[test]
fn backup_leaves_out_what_the_exclude_flags_name() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for d in ["sub", "cache", "logs/2026", "mnt"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    for f in [
        "keep.txt",
        "a.tmp",
        "sub/b.TMP",
        "sub/c.txt",
        "cache/data",
        "logs/2026/x.gz",
        "logs/y.log",
    ] {
        fs::write(src.join(f), f).unwrap();
    }
    fs::write(src.join("cache/CACHEDIR.TAG"), "Signature: 8a477f597d28d172789f06886806bc55")
        .unwrap();
    fs::write(src.join("big.bin"), random_bytes(8, 2 * 1024 * 1024)).unwrap();
    let _mount =
        Mount::tmpfs(&src.join("mnt"), "4m").expect("mounting a tmpfs (the tests run as root)");
    fs::write(src.join("mnt/elsewhere"), "another file system").unwrap();
    let patterns = env.path("excludes");
    fs::write(&patterns, "# compressed logs\nlogs/**/*.gz\n\n").unwrap();
    let list = env.path("list");
    fs::write(&list, format!("{}\n", src.display())).unwrap();

    env.ok(&[
        "backup",
        "--files-from",
        list.to_str().unwrap(),
        "--exclude",
        "*.tmp",
        "--iexclude",
        "B.tmp",
        "--exclude-file",
        patterns.to_str().unwrap(),
        "--exclude-if-present",
        "CACHEDIR.TAG",
        "--exclude-larger-than",
        "1M",
        "--one-file-system",
    ]);
    let target = env.path("restored");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(
        relative_files(&target.join("src")),
        ["keep.txt", "logs/", "logs/2026/", "logs/y.log", "mnt/", "sub/", "sub/c.txt"],
    );
    // A bad pattern or size is refused before anything is written.
    let line = one_line_failure(&env.run(&["backup", "--exclude", "a[b", src.to_str().unwrap()]));
    assert!(line.contains("unclosed ["), "{line}");
    let out = env.run(&["backup", "--exclude-larger-than", "5X", src.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1);
}

/// Ids of `snapshots --json` with these extra arguments, oldest first.
fn snapshot_ids(env: &Env, filter: &[&str]) -> Vec<String> {
    let mut a = vec!["snapshots"];
    a.extend_from_slice(filter);
    env.json(&a).as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn host_tag_and_path_filters_select_snapshots_and_tag_rewrites_them() {
    let env = Env::new();
    env.init();
    let (one, two) = (env.path("one"), env.path("two"));
    fs::create_dir_all(&one).unwrap();
    fs::create_dir_all(&two).unwrap();
    fs::write(one.join("one.txt"), "1").unwrap();
    fs::write(two.join("two.txt"), "2").unwrap();
    let (one_s, two_s) = (one.to_str().unwrap(), two.to_str().unwrap());
    env.ok(&["backup", "--host", "h1", "--tag", "a,b", "--time", "2026-01-01 10:00:00", one_s]);
    env.ok(&["backup", "--host", "h2", "--tag", "c", "--time", "2026-01-02 10:00:00", one_s]);
    env.ok(&["backup", "--host", "h1", "--time", "2026-01-03 10:00:00", two_s]);
    let all = snapshot_ids(&env, &[]);
    assert_eq!(all.len(), 3);
    assert_eq!(snapshot_ids(&env, &["--host", "h1"]), [all[0].clone(), all[2].clone()]);
    assert_eq!(snapshot_ids(&env, &["--host", "h1", "--host", "h2"]).len(), 3);
    // `--tag a,b` needs both; a second --tag is an alternative.
    assert_eq!(snapshot_ids(&env, &["--tag", "a,b"]), [all[0].clone()]);
    assert!(snapshot_ids(&env, &["--tag", "a,c"]).is_empty());
    assert_eq!(snapshot_ids(&env, &["--tag", "a", "--tag", "c"]), all[..2]);
    assert_eq!(snapshot_ids(&env, &["--path", one_s]), all[..2]);
    assert_eq!(snapshot_ids(&env, &["--path", one_s, "--host", "h2"]), [all[1].clone()]);
    // The table shows what the filters let through, restic's way.
    let table = env.ok(&["snapshots", "--tag", "c"]);
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(&all[1][..8]) && !table.contains(&all[0][..8]), "{table}");
    assert!(table.trim_end().ends_with("1 snapshots"), "{table}");

    // `latest` is the newest snapshot that passes the filters, for ls and restore.
    let listed = env.ok(&["ls", "latest", "--path", one_s]);
    assert!(listed.contains("/one/one.txt") && !listed.contains("two.txt"), "{listed}");
    assert!(env.ok(&["ls", "latest"]).contains("/two/two.txt"));
    let target = env.path("restored");
    env.ok(&["restore", "latest", "--host", "h2", "--target", target.to_str().unwrap()]);
    assert!(target.join("one/one.txt").is_file());
    let line = one_line_failure(&env.run(&["ls", "latest", "--host", "nobody"]));
    assert!(line.contains("filters"), "{line}");

    // tag: a new snapshot file recording the original, the old one removed.
    let out = env.json(&["tag", "--add", "x,y", "--remove", "a", "--tag", "a,b"]);
    let new_id = out[0]["new"].as_str().unwrap().to_string();
    assert_eq!(out[0]["old"].as_str().unwrap(), all[0]);
    assert_ne!(new_id, all[0]);
    let now = snapshot_ids(&env, &[]);
    assert_eq!(now.len(), 3);
    assert!(!now.contains(&all[0]) && now.contains(&new_id));
    let snap = env.json(&["cat", "snapshot", &new_id]);
    assert_eq!(snap["tags"], serde_json::json!(["b", "x", "y"]));
    assert_eq!(snap["original"].as_str().unwrap(), all[0]);
    assert!(!env.repo.join("snapshots").join(&all[0]).exists());
    // A second rewrite keeps the first original; --set replaces every tag.
    let out = env.json(&["tag", "--set", "only", &new_id[..8]]);
    let newer = out[0]["new"].as_str().unwrap().to_string();
    let snap = env.json(&["cat", "snapshot", &newer]);
    assert_eq!(snap["tags"], serde_json::json!(["only"]));
    assert_eq!(snap["original"].as_str().unwrap(), all[0]);
    let line = one_line_failure(&env.run(&["tag", "latest"]));
    assert!(line.contains("--add"), "{line}");

    // forget: filters choose what the rules see; --group-by chooses the groups.
    let plan = env.json(&["forget", "--keep-last", "1", "--dry-run"]);
    assert_eq!(plan.as_array().unwrap().len(), 3, "host,paths: three groups\n{plan}");
    let plan = env.json(&["forget", "--keep-last", "1", "--group-by", "host", "--dry-run"]);
    assert_eq!(plan.as_array().unwrap().len(), 2, "{plan}");
    let plan = env.json(&["forget", "--keep-last", "1", "--group-by", "", "--dry-run"]);
    assert_eq!(plan[0]["remove"].as_array().unwrap().len(), 2, "{plan}");
    env.ok(&["forget", "--keep-last", "1", "--group-by", "host", "--host", "h1"]);
    let left = snapshot_ids(&env, &[]);
    assert_eq!(left.len(), 2, "the older h1 snapshot is gone, h2's untouched");
    assert!(left.contains(&all[1]) && left.contains(&all[2]));
    let out = env.run(&["forget", "--keep-last", "1", "--group-by", "colour"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Every file of a repository with its size, sorted.
fn repo_files(repo: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = relative_files(repo)
        .into_iter()
        .filter(|p| !p.ends_with('/'))
        .map(|p| {
            let len = fs::metadata(repo.join(&p)).unwrap().len();
            (p, len)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn backup_dry_run_reports_what_it_would_add_and_writes_nothing() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("old.bin"), random_bytes(3, 300_000)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    fs::write(src.join("new.bin"), random_bytes(4, 2_000_000)).unwrap();
    let before = repo_files(&env.repo);
    let out = env.json(&["backup", "--dry-run", src.to_str().unwrap()]);
    assert_eq!(out["dry_run"], true, "{out}");
    assert_eq!(out["summary"]["files_new"], 1, "{out}");
    assert_eq!(out["summary"]["files_unmodified"], 1, "{out}");
    // The new file (random, so incompressible) and the trees that changed.
    let added = out["summary"]["data_added"].as_u64().unwrap();
    assert!((2_000_000..2_100_000).contains(&added), "{out}");
    assert!(out["summary"]["data_added_packed"].as_u64().unwrap() >= 2_000_000, "{out}");
    assert_eq!(repo_files(&env.repo), before, "a dry run wrote to the repository");
    let text = env.ok(&["backup", "-n", src.to_str().unwrap()]);
    assert!(text.contains("Would add to the repository: 1.9"), "{text}");
    assert!(!text.contains("saved"), "{text}");
    assert_eq!(repo_files(&env.repo), before);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1);
}

#[test]
fn ls_long_find_and_dump_work_as_restics() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub/deeper")).unwrap();
    fs::write(src.join("a.txt"), "alpha").unwrap();
    fs::write(src.join("sub/b.TXT"), "beta").unwrap();
    fs::write(src.join("sub/deeper/c.log"), "gamma").unwrap();
    fs::write(src.join("sub/big.bin"), random_bytes(5, 3_000_000)).unwrap();
    let long_name = "n".repeat(120);
    fs::write(src.join("sub/deeper").join(&long_name), "long").unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    fs::set_permissions(src.join("a.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    set_mtime(&src.join("a.txt"), 1_700_000_000);
    env.ok(&["backup", "--time", "2026-01-01 10:00:00", src.to_str().unwrap()]);

    // ls: paths by default; --long as restic's `ls -l`.
    let plain = env.ok(&["ls", "latest"]);
    assert!(plain.lines().any(|l| l == "/src/sub/deeper/c.log"), "{plain}");
    let long = env.ok(&["ls", "--long", "latest"]);
    let uid = fs::metadata(src.join("a.txt")).unwrap().uid();
    let local = Command::new("date").args(["-d", "@1700000000", "+%Y-%m-%d %H:%M:%S"]).output();
    let local = String::from_utf8(local.unwrap().stdout).unwrap();
    let want = format!("-rw-r----- {uid:>5} ", uid = uid);
    let line = long.lines().find(|l| l.ends_with(" /src/a.txt")).unwrap();
    assert!(line.starts_with(&want), "{line}");
    assert!(line.contains(&format!("     5 {} /src/a.txt", local.trim())), "{line}");
    assert!(long.lines().any(|l| l.starts_with("drwx") && l.ends_with(" /src/sub")), "{long}");
    assert!(long.lines().any(|l| l.starts_with("Lrwxrwxrwx") && l.ends_with("/src/link -> a.txt")));

    // find: restic patterns, case folding, time window, JSON.
    let found = env.ok(&["find", "*.txt"]);
    assert!(found.starts_with("Found matching entries in snapshot "), "{found}");
    assert!(found.contains("\n/src/a.txt\n") && !found.contains("b.TXT"), "{found}");
    let found = env.ok(&["find", "-i", "*.txt", "deeper/c.*"]);
    for p in ["/src/a.txt", "/src/sub/b.TXT", "/src/sub/deeper/c.log"] {
        assert!(found.contains(p), "{p}: {found}");
    }
    let found = env.json(&["find", "--newest", "2023-11-20 00:00:00", "*"]);
    assert_eq!(found[0]["hits"], 1, "only a.txt is that old: {found}");
    assert_eq!(found[0]["matches"][0]["path"], "/src/a.txt");
    assert!(env.json(&["find", "nothing-matches"]).as_array().unwrap().is_empty());
    let tree = env.json(&["cat", "snapshot", "latest"])["tree"].as_str().unwrap().to_string();
    let _ = tree;

    // dump: a file's bytes, a directory as a tar the real tar extracts to the same tree.
    let out = env.cmd(&["dump", "latest", "/src/sub/big.bin"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, fs::read(src.join("sub/big.bin")).unwrap());
    let tar_file = env.path("sub.tar");
    let out = env.cmd(&["dump", "--archive", "tar", "latest", "/src/sub"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    fs::write(&tar_file, &out.stdout).unwrap();
    let x = env.path("extracted");
    fs::create_dir_all(&x).unwrap();
    let st = Command::new("tar").arg("-xf").arg(&tar_file).arg("-C").arg(&x).status().unwrap();
    assert!(st.success());
    assert_same_tree(&src.join("sub"), &x.join("src/sub"));
    let whole = env.cmd(&["dump", "latest", "/"]).output().unwrap();
    let y = env.path("whole");
    fs::create_dir_all(&y).unwrap();
    let mut tar =
        Command::new("tar").arg("-x").arg("-C").arg(&y).stdin(Stdio::piped()).spawn().unwrap();
    tar.stdin.take().unwrap().write_all(&whole.stdout).unwrap();
    assert!(tar.wait().unwrap().success());
    assert_eq!(fs::read_link(y.join("src/link")).unwrap(), Path::new("a.txt"));
    assert_eq!(fs::read(y.join("src/a.txt")).unwrap(), b"alpha");
    let line = one_line_failure(&env.run(&["dump", "latest", "/src/none"]));
    assert!(line.contains("not found"), "{line}");
    let line = one_line_failure(&env.run(&["dump", "--archive", "zip", "latest", "/src"]));
    assert!(line.contains("only tar"), "{line}");
}

#[test]
fn restore_includes_and_excludes_keep_the_snapshot_structure_and_verify_reads_back() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("etc/conf.d")).unwrap();
    fs::create_dir_all(src.join("var/log")).unwrap();
    fs::create_dir_all(src.join("home/me")).unwrap();
    fs::write(src.join("etc/a.conf"), "a").unwrap();
    fs::write(src.join("etc/conf.d/b.conf"), "b").unwrap();
    fs::write(src.join("etc/conf.d/b.conf.bak"), "old").unwrap();
    fs::write(src.join("var/log/x.log"), random_bytes(6, 500_000)).unwrap();
    fs::write(src.join("home/me/notes.txt"), "n").unwrap();
    fs::write(src.join("home/me/NOTES.TXT"), "N").unwrap();
    std::os::unix::fs::symlink("a.conf", src.join("etc/link")).unwrap();
    set_mtime(&src.join("etc/link"), 1_600_000_000);
    env.ok(&["backup", src.to_str().unwrap()]);
    let shown = env.json(&["snapshots"])[0]["snapshot"]["paths"][0].as_str().unwrap().to_string();
    assert_eq!(shown, fs::canonicalize(&src).unwrap().to_str().unwrap());

    // Several globs, one excluded, the structure kept; a path as `snapshots` shows it.
    let t = env.path("t1");
    let var_log = format!("{shown}/var/log");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        t.to_str().unwrap(),
        "--include",
        "*.conf",
        "--include",
        &var_log,
        "--include",
        "/src/etc/link",
        "--exclude",
        "conf.d/b.*",
    ]);
    assert_eq!(
        relative_files(&t),
        [
            "src/",
            "src/etc/",
            "src/etc/a.conf",
            "src/etc/link",
            "src/var/",
            "src/var/log/",
            "src/var/log/x.log"
        ]
    );
    // The symlink keeps its own mtime (lutimes), not its target's.
    assert_eq!(fs::symlink_metadata(t.join("src/etc/link")).unwrap().mtime(), 1_600_000_000);
    assert_eq!(
        fs::read(t.join("src/var/log/x.log")).unwrap(),
        fs::read(src.join("var/log/x.log")).unwrap()
    );

    // Case-insensitive include; --verify reads everything back.
    let t2 = env.path("t2");
    let out = env.ok(&[
        "restore",
        "latest",
        "--target",
        t2.to_str().unwrap(),
        "--iinclude",
        "notes.txt",
        "--verify",
    ]);
    assert!(out.contains("verified"), "{out}");
    assert_eq!(
        relative_files(&t2),
        ["src/", "src/home/", "src/home/me/", "src/home/me/NOTES.TXT", "src/home/me/notes.txt"]
    );
    let t3 = env.path("t3");
    let out = env.json(&["restore", "latest", "--target", t3.to_str().unwrap(), "--verify"]);
    assert!(out["files_done"].as_u64().unwrap() >= 6, "{out}");
    assert_same_tree(&src, &t3.join("src"));
    let line =
        one_line_failure(&env.run(&["restore", "latest", "--target", "x", "--include", "a[b"]));
    assert!(line.contains("unclosed ["), "{line}");
}

#[test]
fn stats_modes_and_check_read_data_subset_count_as_restic() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    let data = random_bytes(7, 3_000_000);
    fs::write(src.join("a.bin"), &data).unwrap();
    fs::write(src.join("d/copy.bin"), &data).unwrap();
    fs::write(src.join("small"), "12345").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    env.ok(&["backup", src.to_str().unwrap()]);
    let restore = env.json(&["stats", "--mode", "restore-size"]);
    assert_eq!(restore["snapshots_count"], 2);
    assert_eq!(restore["total_size"], 2 * (6_000_000 + 5), "{restore}");
    assert_eq!(restore["total_file_count"], 2 * 5, "files and dirs, per snapshot: {restore}");
    let contents = env.json(&["stats", "--mode", "files-by-contents"]);
    assert_eq!(contents["total_file_count"], 2, "{contents}");
    assert_eq!(contents["total_size"], 3_000_005, "{contents}");
    let raw = env.json(&["stats", "--mode", "raw-data"]);
    let raw_size = raw["total_size"].as_u64().unwrap();
    // One copy of the data, the trees, and the file's prints blob (16 bytes per 16 KiB block).
    assert!((3_000_005..3_020_000).contains(&raw_size), "one copy of the data, trees: {raw}");
    assert!(raw["total_stored_size"].as_u64().unwrap() >= 3_000_005, "{raw}");
    let per_file = env.json(&["stats", "--mode", "blobs-per-file", "latest"]);
    assert_eq!(per_file["snapshots_count"], 1);
    assert_eq!(per_file["total_file_count"], 2, "{per_file}");
    let text = env.ok(&["stats", "--mode", "raw-data"]);
    assert!(text.starts_with("Stats in raw-data mode:"), "{text}");
    let out = env.run(&["stats", "--mode", "bogus"]);
    assert_eq!(out.status.code(), Some(2));

    // --read-data-subset: every pack exactly once over 1/t … t/t; a percentage, a size.
    let packs = files_in(&env.repo.join("data")).len()
        + fs::read_dir(env.repo.join("data"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| files_in(&e.path()).len())
            .sum::<usize>();
    let mut total = 0;
    for n in 1..=3 {
        let r = env.json(&["check", "--read-data-subset", &format!("{n}/3")]);
        total += r["packs_read"].as_u64().unwrap();
        assert!(r["errors"].as_array().unwrap().is_empty(), "{r}");
    }
    let all = env.json(&["check", "--read-data"])["packs_read"].as_u64().unwrap();
    assert_eq!(total, all, "the buckets partition the packs");
    assert!(all > 1 && all as usize <= packs, "{all} of {packs}");
    let r = env.json(&["check", "--read-data-subset", "1%"]);
    assert_eq!(r["packs_read"], 1, "at least one pack: {r}");
    let r = env.json(&["check", "--read-data-subset", "100%"]);
    assert_eq!(r["packs_read"], all);
    let r = env.json(&["check", "--read-data-subset", "1K"]);
    assert_eq!(r["packs_read"], 1, "{r}");
    let out = env.ok(&["check", "--read-data-subset", "2/3"]);
    assert!(out.contains("no errors were found"), "{out}");
    let out = env.run(&["check", "--read-data-subset", "4/3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("n <= t"));
}

/// `copy` re-encodes snapshots under the destination's keys: the copies restore byte-identical,
/// keep time, host, paths and tags, are made once (a second run, or a snapshot re-tagged in the
/// source, copies nothing), and the destination checks clean.
#[test]
fn copy_moves_snapshots_once_and_they_restore_exactly() {
    let src = Env::new();
    src.init();
    let data = src.path("data");
    fs::create_dir_all(data.join("sub")).unwrap();
    fs::write(data.join("big.bin"), random_bytes(31, 3 * 1024 * 1024)).unwrap();
    for i in 0..40 {
        fs::write(data.join("sub").join(format!("f{i}")), random_bytes(100 + i, 3000)).unwrap();
    }
    std::os::unix::fs::symlink("big.bin", data.join("link")).unwrap();
    let other = src.path("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("note"), "another host").unwrap();
    let d = data.to_str().unwrap();
    src.ok(&["backup", d, "--host", "h1", "--tag", "first"]);
    fs::write(data.join("sub/f0"), "changed").unwrap();
    src.ok(&["backup", d, "--host", "h1"]);
    src.ok(&["backup", other.to_str().unwrap(), "--host", "h2"]);

    let dst = Env::new();
    fs::write(&dst.pw, "another secret\n").unwrap();
    dst.init();
    let from = ["--from-repo", src.repo.to_str().unwrap()];
    let from_pw = ["--from-password-file", src.pw.to_str().unwrap()];
    let copy = |extra: &[&str]| {
        let mut a = vec!["copy"];
        a.extend(from);
        a.extend(from_pw);
        a.extend_from_slice(extra);
        dst.json(&a)
    };
    let first = copy(&["--host", "h1"]);
    let copied: Vec<bool> = first["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["already_copied"].as_bool().unwrap())
        .collect();
    assert_eq!(copied, [false, false], "{first}");
    assert!(first["blobs_added"].as_u64().unwrap() > 40, "{first}");

    // Again, and after the source re-tagged its first snapshot: nothing new.
    src.ok(&["tag", "--add", "kept", "--tag", "first"]);
    let again = copy(&["--host", "h1"]);
    assert_eq!(again["blobs_added"], 0, "{again}");
    assert!(
        again["snapshots"].as_array().unwrap().iter().all(|c| c["already_copied"] == true),
        "{again}"
    );
    // The rest: only h2's snapshot is new, and its blobs.
    let rest = copy(&[]);
    let new: Vec<_> = rest["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["already_copied"] == false)
        .collect();
    assert_eq!(new.len(), 1, "{rest}");

    let listed = |env: &Env| {
        let mut v: Vec<(String, String, String)> = env
            .json(&["snapshots"])
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["time"].to_string(), s["hostname"].to_string(), s["paths"].to_string()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(listed(&dst), listed(&src));
    let target = dst.path("restored");
    dst.ok(&["restore", "latest", "--host", "h1", "--target", target.to_str().unwrap()]);
    assert_same_tree(&data, &target.join("data"));
    let tags = dst.json(&["snapshots", "--tag", "first"]);
    assert_eq!(tags.as_array().unwrap().len(), 1, "the copy keeps the tags it was copied with");
    dst.check_read_data();

    // A copy into itself, or with the wrong source password, fails in one line.
    let line = one_line_failure(&src.run(&[
        "copy",
        "--from-repo",
        src.repo.to_str().unwrap(),
        "--from-password-file",
        src.pw.to_str().unwrap(),
    ]));
    assert!(line.contains("same repository"), "{line}");
    let line = one_line_failure(&dst.run(&[
        "copy",
        "--from-repo",
        src.repo.to_str().unwrap(),
        "--from-password-file",
        dst.pw.to_str().unwrap(),
    ]));
    assert!(line.contains("source repository"), "{line}");
}

/// The standard AWS chain and the bucket, on a real S3 server (moto): `init` creates a missing
/// bucket (and finds an existing one), keys come from a shared credentials file's profile when no
/// variable gives them, and a command on a bucket that does not exist says so in one line.
#[test]
fn init_creates_the_bucket_and_credentials_come_from_a_profile() {
    let moto = holdfast_testkit::Moto::start().unwrap_or_else(|e| panic!("{e}"));
    let env = Env::new();
    let home = env.path("home");
    fs::create_dir_all(home.join(".aws")).unwrap();
    fs::write(
        home.join(".aws/credentials"),
        "[default]\naws_access_key_id = wrong\n\n[backup]\naws_access_key_id = AKBACKUP\n\
         aws_secret_access_key = backup-secret\n",
    )
    .unwrap();
    fs::write(home.join(".aws/config"), "[profile backup]\nregion = eu-west-1\n").unwrap();
    let endpoint = moto.endpoint();
    let s3 = |repo: &str, args: &[&str]| {
        let mut c = env.cmd(args);
        c.args(["--repo", repo, "--s3-endpoint", &endpoint]);
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                c.env_remove(k);
            }
        }
        c.env("HOME", &home).env("AWS_PROFILE", "backup").env("XDG_CACHE_HOME", home.join("xdg"));
        c.output().unwrap()
    };
    let out =
        s3("s3://fresh-bucket/one", &["init", "--pack-size-mib", "1", "--chunk-avg-kib", "64"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("created bucket fresh-bucket"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A second repository in the same bucket: the bucket is found, not created again.
    let out =
        s3("s3://fresh-bucket/two", &["init", "--pack-size-mib", "1", "--chunk-avg-kib", "64"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("created bucket"));
    let data = env.path("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("f"), random_bytes(5, 200_000)).unwrap();
    let out = s3("s3://fresh-bucket/one", &["backup", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let target = env.path("restored");
    let out =
        s3("s3://fresh-bucket/one", &["restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_same_tree(&data, &target.join("data"));
    // The S3 repository's metadata is cached under XDG_CACHE_HOME, and --no-cache keeps none.
    let cached: Vec<_> = fs::read_dir(home.join("xdg/holdfast")).unwrap().collect();
    assert_eq!(cached.len(), 1, "the repository that was read has one cache");
    let elsewhere = env.path("no-cache");
    let out = s3(
        "s3://fresh-bucket/one",
        &["snapshots", "--no-cache", "--cache-dir", elsewhere.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!elsewhere.exists(), "--no-cache wrote a cache");

    // Another command on a bucket nobody created: one line that says so and what to do.
    let line = one_line_failure(&s3("s3://no-such-bucket/x", &["snapshots"]));
    assert!(line.contains("bucket does not exist") && line.contains("init"), "{line}");
    // A profile with half a key pair is named with its file.
    fs::write(home.join(".aws/credentials"), "[backup]\naws_access_key_id = AK\n").unwrap();
    let line = one_line_failure(&s3("s3://fresh-bucket/one", &["snapshots"]));
    assert!(line.contains(".aws/credentials (profile backup)"), "{line}");
}
