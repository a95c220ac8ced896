//! `datasafed` compatibility, end to end: the real binary, started through a `datasafed`
//! symlink (and as `holdfast datasafed`), against a repository on the real filesystem and on a
//! real S3-compatible server (moto).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const HOLDFAST: &str = env!("CARGO_BIN_EXE_holdfast");

/// A scratch directory with a `datasafed` symlink, a repository directory and a clean env.
struct Env {
    dir: tempfile::TempDir,
    vars: Vec<(String, String)>,
    conf: PathBuf,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(HOLDFAST, dir.path().join("datasafed")).unwrap();
        std::fs::create_dir(dir.path().join("repo")).unwrap();
        let repo = dir.path().join("repo").display().to_string();
        let cache = dir.path().join("cache").display().to_string();
        let conf = dir.path().join("none.conf");
        Env {
            conf,
            vars: vec![
                ("DATASAFED_LOCAL_BACKEND_PATH".into(), repo),
                ("HOLDFAST_PASSWORD".into(), "secret".into()),
                ("HOLDFAST_CACHE_DIR".into(), cache),
            ],
            dir,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn set(&mut self, k: &str, v: &str) {
        self.vars.retain(|(x, _)| x != k);
        self.vars.push((k.into(), v.into()));
    }

    fn unset(&mut self, k: &str) {
        self.vars.retain(|(x, _)| x != k);
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.path("datasafed"));
        c.args(args).current_dir(self.dir.path()).env_clear();
        c.env("PATH", std::env::var("PATH").unwrap_or_default());
        // The default config path must not leak in from the machine running the tests.
        c.args(["-c", &self.conf.display().to_string()]);
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs and requires success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "datasafed {args:?} failed: {}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    }

    fn ok_bytes(&self, args: &[&str]) -> Vec<u8> {
        let o = self.run(args);
        assert!(o.status.success(), "datasafed {args:?} failed: {}", stderr(&o));
        o.stdout
    }

    fn push_bytes(&self, args: &[&str], data: &[u8]) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let data = data.to_vec();
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap();
        out
    }

    fn push(&self, rpath: &str, data: &[u8], extra: &[&str]) {
        let mut args = vec!["push"];
        args.extend_from_slice(extra);
        args.extend(["-", rpath]);
        let o = self.push_bytes(&args, data);
        assert!(o.status.success(), "push {rpath} failed: {}", stderr(&o));
    }

    fn repo_bytes(&self) -> u64 {
        dir_size(&self.path("repo"))
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn dir_size(p: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        n += if m.is_dir() { dir_size(&e.path()) } else { m.len() };
    }
    n
}

/// Deterministic pseudo-random bytes.
fn random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Compressible, text-like bytes.
fn text(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut i = 0u64;
    while v.len() < len {
        v.extend_from_slice(
            format!("row {i}\tvalue {}\tsome constant padding\n", i * 7).as_bytes(),
        );
        i += 1;
    }
    v.truncate(len);
    v
}

fn assert_one_line_error(o: &Output, needle: &str) {
    assert!(!o.status.success(), "expected failure, got success");
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(o);
    assert_eq!(e.trim_end().lines().count(), 1, "one line expected: {e:?}");
    assert!(e.starts_with("Error: "), "{e:?}");
    assert!(e.contains(needle), "{e:?} should mention {needle:?}");
}

#[test]
fn datasafed_stdin_push_pull_round_trips_and_a_similar_push_is_incremental() {
    let env = Env::new();
    // Chunks are up to 8 MiB and their cut points depend on the repository's random seed, so the
    // data is large enough that one rewritten chunk plus the tail stays under a third of it.
    let mut data = random(1, 48 << 20);
    data.extend(text(4 << 20));
    env.push("/b1.tar.zst", &data, &["-z", "zstd-fastest"]);
    assert!(env.path("repo/config").exists(), "the first push creates the repository");
    let after_first = env.repo_bytes();

    // pull -d with the push's algorithm returns exactly the pushed bytes.
    let back = env.ok_bytes(&["pull", "-d", "zstd-fastest", "/b1.tar.zst", "-"]);
    assert!(back == data, "pull -d returned {} bytes, pushed {}", back.len(), data.len());
    // pull without -d returns what datasafed would have stored: a zstd stream of the data.
    let z = env.ok_bytes(&["pull", "b1.tar.zst", "-"]);
    assert!(z.len() < data.len());
    assert!(zstd::decode_all(z.as_slice()).unwrap() == data);

    // A second backup of similar data: a few bytes changed in the middle and some appended.
    let mut second = data.clone();
    for b in &mut second[3 << 20..(3 << 20) + 100] {
        *b ^= 0x5a;
    }
    second.extend(random(2, 64 << 10));
    env.push("/b2.tar.zst", &second, &["-z", "zstd-fastest"]);
    let growth = env.repo_bytes() - after_first;
    assert!(
        growth * 3 < after_first,
        "second push grew the repository by {growth} bytes; the first took {after_first}"
    );
    let back = env.ok_bytes(&["pull", "-d", "zstd", "/b2.tar.zst", "-"]);
    assert!(back == second);
}

#[test]
fn datasafed_regular_files_push_and_pull_to_local_paths() {
    let env = Env::new();
    let data = random(3, 3 << 20);
    std::fs::write(env.path("in.bin"), &data).unwrap();
    env.ok(&["push", &env.path("in.bin").display().to_string(), "dir/in.bin"]);
    let target = env.path("out/nested/in.bin");
    env.ok(&["pull", "/dir/in.bin", &target.display().to_string()]);
    assert!(std::fs::read(&target).unwrap() == data);
    // Overwriting a path replaces the file and keeps one version of it.
    env.push("dir/in.bin", b"short", &[]);
    assert_eq!(env.ok_bytes(&["pull", "dir/in.bin", "-"]), b"short");
    assert_eq!(env.ok(&["list", "-o", "long", "dir/in.bin"]).split('\t').nth(1), Some("5"));
    let snaps = Command::new(HOLDFAST)
        .args(["repo", "snapshots", "--json", "-r", &env.path("repo").display().to_string()])
        .env("HOLDFAST_PASSWORD", "secret")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&snaps.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "the replaced version was removed");
    // The same commands answer as `holdfast datasafed`.
    let o = Command::new(HOLDFAST)
        .args(["datasafed", "pull", "dir/in.bin", "-"])
        .env_clear()
        .envs(env.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, b"short");
}

#[test]
fn datasafed_list_and_stat_print_datasafed_formats() {
    let env = Env::new();
    let t0 = jiff::Timestamp::now().as_second();
    let files: [(&str, usize); 5] = [
        ("/bk/a.tar.zst", 300),
        ("/bk/wal/20260101/0001.zst", 20),
        ("/bk/wal/20260101/0002.zst", 10),
        ("/bk/wal/20260102/0003.zst", 50),
        ("/other.txt", 7),
    ];
    for (p, n) in files {
        env.push(p, &random(n as u64, n), &[]);
    }
    env.ok(&["mkdir", "/bk/empty"]);
    let t1 = jiff::Timestamp::now().as_second();

    assert_eq!(env.ok(&["list", "/"]), "bk/\nother.txt\n");
    assert_eq!(env.ok(&["list", "/bk/"]), "bk/a.tar.zst\nbk/empty/\nbk/wal/\n");
    assert_eq!(
        env.ok(&["list", "-r", "-f", "/bk"]),
        "bk/a.tar.zst\nbk/wal/20260101/0001.zst\nbk/wal/20260101/0002.zst\nbk/wal/20260102/0003.zst\n"
    );
    assert_eq!(
        env.ok(&["list", "-d", "-r", "/"]),
        "bk/\nbk/empty/\nbk/wal/\nbk/wal/20260101/\nbk/wal/20260102/\n"
    );
    assert_eq!(env.ok(&["list", "--max-depth", "2", "-d", "/"]), "bk/\nbk/empty/\nbk/wal/\n");
    assert_eq!(
        env.ok(&["list", "-r", "-f", "-s", "size", "--reverse", "/bk/wal"]),
        "bk/wal/20260102/0003.zst\nbk/wal/20260101/0001.zst\nbk/wal/20260101/0002.zst\n"
    );
    assert_eq!(
        env.ok(&["list", "-r", "--name", "000[12].zst", "/"]),
        "bk/wal/20260101/0001.zst\nbk/wal/20260101/0002.zst\n"
    );
    assert_eq!(env.ok(&["list", "-r", "-f", "--newer-than", &(t1 + 1).to_string(), "/"]), "");
    assert_eq!(env.ok(&["list", "-r", "-f", "--older-than", &(t0 - 1).to_string(), "/"]), "");
    assert_eq!(
        env.ok(&["list", "-r", "-f", "--newer-than", &(t0 - 1).to_string(), "/"]).lines().count(),
        5
    );
    assert_eq!(env.ok(&["list", "/missing/"]), "", "a missing directory lists nothing");

    // long: mtime, size, path; a file path lists that file.
    let long = env.ok(&["list", "bk/a.tar.zst", "-o", "long"]);
    let cols: Vec<&str> = long.trim_end().split('\t').collect();
    assert_eq!(cols[1..], ["300", "bk/a.tar.zst"]);
    let mtime: jiff::Timestamp = cols[0].parse().unwrap();
    assert!((t0..=t1).contains(&mtime.as_second()), "{mtime}");
    assert!(cols[0].ends_with('Z'));

    // json: datasafed's framing, and the values.
    let json = env.ok(&["list", "-o", "json", "/bk"]);
    assert!(json.starts_with("[\n  {\n    \"path\": \"bk/a.tar.zst\",\n"), "{json}");
    assert!(json.contains("\n  }\n  ,\n  {\n"), "{json}");
    assert!(json.ends_with("\n  }\n]\n"), "{json}");
    let v: serde_json::Value = serde_json::from_str(&json.replace("\n  ,\n", ",\n")).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 3);
    assert_eq!(arr[0]["size"], 300);
    assert_eq!(arr[0]["is_dir"], false);
    assert_eq!(arr[2]["path"], "bk/wal");
    assert_eq!(arr[2]["is_dir"], true);
    assert_eq!(arr[2]["size"], -1);
    let m = arr[0]["mtime"].as_i64().unwrap();
    assert!((t0..=t1).contains(&m));
    assert_eq!(env.ok(&["list", "-o", "json", "/nothing/"]), "[]\n");

    // stat: totals computed from the pushed sizes.
    let total: usize = files.iter().filter(|(p, _)| p.starts_with("/bk/")).map(|(_, n)| n).sum();
    assert_eq!(
        env.ok(&["stat", "/bk"]),
        format!("TotalSize: {total}\nEntries: 8\nDirs: 4\nFiles: 4\n")
    );
    let size_line = env.ok(&["stat", "/"]);
    assert!(size_line.starts_with(&format!("TotalSize: {}\n", total + 7)), "{size_line}");
    assert_eq!(
        env.ok(&["stat", "--json", "/bk/a.tar.zst"]),
        "{\"dirs\":0,\"entries\":1,\"files\":1,\"total_size\":300}\n"
    );
}

#[test]
fn datasafed_rm_mkdir_and_rmdir_follow_datasafed() {
    let env = Env::new();
    env.push("/keep/x", b"x", &[]);
    env.push("/gone/a", b"aa", &[]);
    env.push("/gone/sub/b", b"bbb", &[]);
    env.ok(&["rm", "/keep/missing"]);
    assert_one_line_error(&env.run(&["rm", "/gone"]), "is a directory");
    env.ok(&["rm", "/gone/a"]);
    assert_eq!(env.ok(&["list", "-r", "-f", "/"]), "gone/sub/b\nkeep/x\n");
    env.ok(&["rm", "-r", "/gone"]);
    env.ok(&["rm", "-r", "/gone"]);
    assert_eq!(env.ok(&["list", "-r", "/"]), "keep/\nkeep/x\n");
    assert_one_line_error(&env.run(&["pull", "/gone/sub/b", "-"]), "not found");

    env.ok(&["mkdir", "/d/e"]);
    assert_eq!(env.ok(&["list", "-r", "-d", "/"]), "d/\nd/e/\nkeep/\n");
    assert_one_line_error(&env.run(&["mkdir", "/keep/x/y"]), "is a file");
    assert_one_line_error(&env.run(&["push", "-", "/d"]), "is a directory");
    assert_one_line_error(&env.run(&["rmdir", "/keep"]), "not empty");
    assert_one_line_error(&env.run(&["rmdir", "/nope"]), "not found");
    env.ok(&["rmdir", "/d/e"]);
    assert_eq!(env.ok(&["list", "-r", "-d", "/"]), "keep/\n");
}

#[test]
fn datasafed_the_base_path_scopes_every_command() {
    let mut env = Env::new();
    env.set("DATASAFED_BACKEND_BASE_PATH", "/ns/backup-1/");
    env.push("/data.tar.zst", b"payload", &["-z", "zstd"]);
    assert_eq!(env.ok(&["list", "/"]), "data.tar.zst\n");
    assert_eq!(env.ok(&["stat", "/"]).lines().next(), Some("TotalSize: 7"));
    env.unset("DATASAFED_BACKEND_BASE_PATH");
    assert_eq!(env.ok(&["list", "-r", "-f", "/"]), "ns/backup-1/data.tar.zst\n");
    assert_eq!(env.ok_bytes(&["pull", "-d", "zstd", "ns/backup-1/data.tar.zst", "-"]), b"payload");
    assert_one_line_error(&env.run(&["pull", "../escape", "-"]), "'..'");
    env.set("DATASAFED_BACKEND_BASE_PATH", "../up");
    assert_one_line_error(&env.run(&["list", "/"]), "'..'");
}

#[test]
fn datasafed_configuration_password_and_errors() {
    let mut env = Env::new();
    // No password anywhere: one line naming what to set, nothing created.
    env.unset("HOLDFAST_PASSWORD");
    let o = env.push_bytes(&["push", "-", "/x"], b"data");
    assert_one_line_error(&o, "HOLDFAST_PASSWORD");
    assert!(!env.path("repo/config").exists());
    // DATASAFED_ENCRYPTION_PASS_PHRASE is the last resort.
    env.set("DATASAFED_ENCRYPTION_PASS_PHRASE", "secret");
    env.set("DATASAFED_ENCRYPTION_ALGORITHM", "AES-256-CFB");
    env.push("/x", b"data", &[]);
    env.unset("DATASAFED_ENCRYPTION_PASS_PHRASE");

    // A config file with [storage] and [holdfast] password, without the local-path override.
    env.unset("DATASAFED_LOCAL_BACKEND_PATH");
    let conf = env.path("datasafed.conf");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ntype = local\nroot = {}\n\n[holdfast]\npassword = secret\n",
            env.path("repo").display()
        ),
    )
    .unwrap();
    env.conf = conf.clone();
    assert_eq!(env.ok_bytes(&["pull", "/x", "-"]), b"data");
    assert_eq!(env.ok(&["getconf", "storage.type"]), "local\n");
    // A wrong password is refused in one line.
    std::fs::write(&conf, "[storage]\ntype=local\nroot=repo\n[holdfast]\npassword=wrong\n")
        .unwrap();
    assert_one_line_error(&env.run(&["list", "/"]), "wrong password");
    // No config file at all.
    env.conf = env.path("none.conf");
    assert_one_line_error(&env.run(&["list", "/"]), "none.conf");

    env.set("DATASAFED_LOCAL_BACKEND_PATH", &env.path("repo").display().to_string());
    env.set("HOLDFAST_PASSWORD", "secret");
    // Usage errors are one line too, and a bad compression name is refused before any work.
    assert_one_line_error(&env.run(&["push", "-z", "brotli", "-", "/y"]), "brotli");
    assert_one_line_error(&env.run(&["push", "-", "/dir/"]), "ends with '/'");
    // Pulling what was pushed plain with an unimplemented decompressor names it.
    assert_one_line_error(&env.run(&["pull", "-d", "lz4", "/x", "-"]), "lz4");
    assert_one_line_error(&env.run(&["pull", "/missing.tar.zst", "-"]), "not found");
    let v = env.ok(&["version"]);
    assert!(v.starts_with("datasafed: "), "{v}");
}

#[test]
fn datasafed_a_failing_input_leaves_no_file() {
    let env = Env::new();
    env.push("/ok", b"ok", &[]);
    // Reading a directory as stdin fails mid-push (EISDIR).
    let o = env
        .command(&["push", "-", "/broken.tar"])
        .stdin(std::fs::File::open(env.path("repo")).unwrap())
        .output()
        .unwrap();
    assert_one_line_error(&o, "broken.tar");
    let o = env.run(&["push", &env.path("no-such-file").display().to_string(), "/broken2"]);
    assert_one_line_error(&o, "no-such-file");
    assert_eq!(env.ok(&["list", "-r", "/"]), "ok\n");
    // A pull that fails leaves no partial local file.
    let target = env.path("out.bin");
    assert_one_line_error(
        &env.run(&["pull", "/broken.tar", &target.display().to_string()]),
        "not found",
    );
    assert!(!target.exists());
}

#[test]
fn datasafed_concurrent_first_pushes_share_one_repository() {
    let env = Env::new();
    // Start all three before feeding any, so their opens and inits overlap.
    let mut children: Vec<Child> = (0..3)
        .map(|i| {
            env.command(&["push", "-", &format!("/c{i}")])
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let feeders: Vec<_> = children
        .iter_mut()
        .zip(0u64..)
        .map(|(c, i)| {
            let mut stdin = c.stdin.take().unwrap();
            std::thread::spawn(move || stdin.write_all(&random(i, 100_000)).unwrap())
        })
        .collect();
    for f in feeders {
        f.join().unwrap();
    }
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_eq!(env.ok(&["list", "/"]), "c0\nc1\nc2\n");
    for i in 0..3u64 {
        assert!(env.ok_bytes(&["pull", &format!("c{i}"), "-"]) == random(i, 100_000));
    }
}

#[test]
fn datasafed_s3_storage_from_the_config_file() {
    let moto = holdfast_testkit::Moto::start().unwrap_or_else(|e| panic!("{e}"));
    moto.create_bucket("backups").unwrap_or_else(|e| panic!("{e}"));
    let port = moto.port();

    let mut env = Env::new();
    env.unset("DATASAFED_LOCAL_BACKEND_PATH");
    env.unset("HOLDFAST_PASSWORD");
    env.set("DATASAFED_BACKEND_BASE_PATH", "kb/pg-1");
    let conf = env.path("datasafed.conf");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ntype = s3\nprovider = Minio\nenv_auth = false\naccess_key_id = test\n\
             secret_access_key = test\nregion = us-east-1\nendpoint = http://127.0.0.1:{port}\n\
             root = backups/holdfast\nno_check_bucket = true\n\n[holdfast]\npassword = s3secret\n"
        ),
    )
    .unwrap();
    env.conf = conf;
    let data = random(9, 3 << 20);
    let o = env.push_bytes(&["push", "-z", "zstd-fastest", "-", "/base.tar.zst"], &data);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(env.ok(&["list", "/"]), "base.tar.zst\n");
    assert_eq!(env.ok(&["stat", "/"]).lines().next(), Some("TotalSize: 3145728"));
    assert!(env.ok_bytes(&["pull", "-d", "zstd-fastest", "/base.tar.zst", "-"]) == data);
    env.ok(&["rm", "-r", "/"]);
    assert_eq!(env.ok(&["list", "-r", "/"]), "");
}

/// `holdfast repo` and `holdfast pg` take the repository from a datasafed config, as a KubeBlocks
/// Job gets it: the storage and password as `holdfast datasafed` reads them (the local-backend
/// override included); never together with `--repo`; never a repository that does not exist,
/// except for `init`, which creates it.
#[test]
fn repo_and_pg_commands_open_the_repository_a_datasafed_config_names() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let conf = dir.path().join("datasafed.conf");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ntype = local\nroot = {}\n\n[holdfast]\npassword = from-the-config\n",
            repo.display()
        ),
    )
    .unwrap();
    let conf_s = conf.to_str().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("f"), "some data\n").unwrap();
    let holdfast = |args: &[&str], env: &[(&str, &str)]| {
        Command::new(HOLDFAST)
            .args(args)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let ok = |args: &[&str], env: &[(&str, &str)]| {
        let o = holdfast(args, env);
        assert!(o.status.success(), "holdfast {args:?} failed: {}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let one_line_failure = |o: &Output, needle: &str| {
        assert!(!o.status.success(), "expected failure, got success");
        let e = stderr(o);
        assert_eq!(e.trim_end().lines().count(), 1, "one line expected: {e:?}");
        assert!(e.contains(needle), "{e:?} should mention {needle:?}");
    };

    // Nothing there yet: a command other than init refuses and creates nothing.
    let o = holdfast(&["repo", "snapshots", "--datasafed-config", conf_s], &[]);
    assert!(!o.status.success());
    assert!(!repo.exists(), "a command other than init created the repository");

    ok(&["repo", "init", "--datasafed-config", conf_s], &[]);
    ok(&["repo", "backup", "--datasafed-config", conf_s, "--quiet", data.to_str().unwrap()], &[]);
    // The environment variable stands for the flag, for `pg` as for `repo`.
    let listed = ok(&["repo", "snapshots", "--json"], &[("HOLDFAST_DATASAFED_CONFIG", conf_s)]);
    let snapshots: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(snapshots.as_array().map(Vec::len), Some(1), "{listed}");
    let bases = ok(&["pg", "backups", "--json"], &[("HOLDFAST_DATASAFED_CONFIG", conf_s)]);
    assert_eq!(bases.trim(), "[]");

    // The password really is the config's: --repo opens the same repository with it only.
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "from-the-config\n").unwrap();
    let repo_s = repo.to_str().unwrap();
    let with_repo =
        ["repo", "snapshots", "--repo", repo_s, "--password-file", pw.to_str().unwrap()];
    ok(&with_repo, &[]);
    std::fs::write(&pw, "wrong\n").unwrap();
    assert!(!holdfast(&with_repo, &[]).status.success(), "a wrong password opened it");

    // DATASAFED_LOCAL_BACKEND_PATH replaces the config's storage, as for datasafed.
    let elsewhere = dir.path().join("elsewhere.conf");
    std::fs::write(&elsewhere, "[storage]\ntype = local\nroot = /nonexistent\n").unwrap();
    let listed = ok(
        &["repo", "snapshots", "--json", "--datasafed-config", elsewhere.to_str().unwrap()],
        &[("DATASAFED_LOCAL_BACKEND_PATH", repo_s), ("HOLDFAST_PASSWORD", "from-the-config")],
    );
    assert!(listed.contains(snapshots[0]["id"].as_str().unwrap()), "{listed}");

    let right = dir.path().join("right-pw");
    std::fs::write(&right, "from-the-config\n").unwrap();
    let conf_pw = right.to_str().unwrap().to_string();

    // Both ways of naming a repository at once: refused with the cause.
    let o = holdfast(&["repo", "snapshots", "--repo", repo_s, "--datasafed-config", conf_s], &[]);
    one_line_failure(&o, "--datasafed-config");
    let o = holdfast(
        &["pg", "backups", "--datasafed-config", conf_s],
        &[("HOLDFAST_REPOSITORY", repo_s)],
    );
    one_line_failure(&o, "--repo");
    // Both ways of giving the password at once: refused too, not one silently preferred.
    let o = holdfast(
        &[
            "repo",
            "snapshots",
            "--datasafed-config",
            conf_s,
            "--password-file",
            pw.to_str().unwrap(),
        ],
        &[],
    );
    one_line_failure(&o, "--password-file");
    // The variable is one of the config's own password sources, not a second way.
    let ok_env = ok(
        &["repo", "snapshots", "--json", "--datasafed-config", elsewhere.to_str().unwrap()],
        &[("DATASAFED_LOCAL_BACKEND_PATH", repo_s), ("HOLDFAST_PASSWORD_FILE", conf_pw.as_str())],
    );
    assert!(ok_env.contains(snapshots[0]["id"].as_str().unwrap()), "{ok_env}");
    // A config naming a directory that does not exist is not a repository.
    let o =
        holdfast(&["repo", "snapshots", "--datasafed-config", elsewhere.to_str().unwrap()], &[]);
    one_line_failure(&o, "nonexistent");
}
