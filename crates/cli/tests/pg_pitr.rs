//! `holdfast pg` end to end against a real PostgreSQL: the server archives its WAL with
//! `archive_command = 'holdfast pg wal-push … %p'`, a base backup is taken with `holdfast pg
//! backup`, rows are committed before and after a moment T, and `holdfast pg restore` brings back
//! exactly the rows of T, of a named restore point, and of the latest point, each on a server
//! started on the restored directory as the server's own account. Targets the archive cannot
//! reach, and a removed segment, are refused before anything is written.
//!
//! As root (CI), every holdfast command runs as the server's account, as a DBA would run it
//! (`sudo -u postgres holdfast pg …`), so the repository stays writable by `archive_command`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use holdfast_testkit::Postgres;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");

struct Rig {
    pg: Postgres,
    bin: PathBuf,
    repo: PathBuf,
    password_file: PathBuf,
    scratch: PathBuf,
}

impl Rig {
    /// holdfast `args` as the server's account; the output, whatever the exit status.
    fn holdfast(&self, args: &[&str]) -> Result<Output> {
        self.run(args, true)
    }

    /// holdfast `pg args` as the server's account, or as this process (root in CI: what a
    /// restore Job runs as).
    fn run(&self, args: &[&str], as_server_user: bool) -> Result<Output> {
        let mut all: Vec<&OsStr> = vec![OsStr::new("pg")];
        let repo = self.repo.to_str().context("repo path")?;
        let pw = self.password_file.to_str().context("password path")?;
        all.extend(["--repo", repo, "--password-file", pw, "--quiet"].map(OsStr::new));
        all.extend(args.iter().map(OsStr::new));
        let mut cmd = if as_server_user {
            self.pg.command_as_server_user(&self.bin, &all)
        } else {
            let mut cmd = std::process::Command::new(&self.bin);
            cmd.args(&all);
            cmd
        };
        cmd.env_remove("PGHOST").env_remove("PGPORT").env_remove("PGUSER");
        cmd.output().context("running holdfast")
    }

    /// Like [`Rig::holdfast`], failing unless it succeeds; its standard output.
    fn ok(&self, args: &[&str]) -> Result<String> {
        self.ok_as(args, true)
    }

    /// Like [`Rig::run`], failing unless it succeeds; its standard output.
    fn ok_as(&self, args: &[&str], as_server_user: bool) -> Result<String> {
        let out = self.run(args, as_server_user)?;
        if !out.status.success() {
            bail!(
                "holdfast {args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    fn sql(&self, sql: &str) -> Result<String> {
        Ok(self.pg.psql(sql)?)
    }

    /// Waits until the segment now being written has been archived.
    fn archive_current_segment(&self) -> Result<()> {
        let wanted = self.sql("SELECT pg_walfile_name(pg_switch_wal())")?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let last = self.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")?;
            if last.as_str() >= wanted.as_str() {
                return Ok(());
            }
            let failed = self.sql("SELECT coalesce(last_failed_wal, '') FROM pg_stat_archiver")?;
            ensure!(
                Instant::now() < deadline,
                "segment {wanted} not archived in time (last archived {last:?}, last failed \
                 {failed:?}; server log: {})",
                std::fs::read_to_string(self.pg.log_file()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A data directory path in the server account's scratch space (not created).
    /// `holdfast repo args` on the rig's repository as the server's account, failing unless it
    /// succeeds.
    fn repo_ok(&self, args: &[&str]) -> Result<()> {
        let mut all = vec![OsStr::new("repo")];
        all.extend(args.iter().map(OsStr::new));
        all.extend([OsStr::new("--repo"), self.repo.as_os_str()]);
        all.extend([OsStr::new("--password-file"), self.password_file.as_os_str()]);
        let out = self.pg.command_as_server_user(&self.bin, &all).output()?;
        ensure!(out.status.success(), "repo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    }

    fn target(&self, name: &str) -> PathBuf {
        self.scratch.join(name)
    }
}

fn setup() -> Result<Rig> {
    let pg = Postgres::init()?;
    let tools = pg.owned_dir("tools")?;
    let bin = tools.join("holdfast");
    std::fs::copy(BIN, &bin).context("copying the holdfast binary")?;
    let scratch = pg.owned_dir("scratch")?;
    let repo = scratch.join("repo");
    let password_file = tools.join("password");
    std::fs::write(&password_file, "correct horse battery staple\n")?;
    pg.give(&tools)?;
    let mut rig = Rig { pg, bin, repo, password_file, scratch };
    rig.repo_ok(&["init"])?;
    let archive_command = format!(
        "'{} pg wal-push --repo {} --password-file {} %p'",
        rig.bin.display(),
        rig.repo.display(),
        rig.password_file.display()
    );
    rig.pg.configure(&[
        ("archive_mode", "on"),
        ("archive_command", &archive_command),
        ("wal_level", "replica"),
    ])?;
    rig.pg.start_server()?;
    Ok(rig)
}

/// Ids of the rows in `t`, in order, on a server.
fn ids(pg: &Postgres) -> Result<Vec<i64>> {
    let out = pg.psql("SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM t")?;
    Ok(out.split(',').filter(|s| !s.is_empty()).map(|s| s.parse()).collect::<Result<_, _>>()?)
}

fn insert(rig: &Rig, from: i64, to: i64) -> Result<()> {
    rig.sql(&format!("INSERT INTO t SELECT g, 'row ' || g FROM generate_series({from}, {to}) g"))?;
    Ok(())
}

/// Starts a server on a restored directory and waits until recovery has promoted it.
fn start_restored(dir: &Path) -> Result<Postgres> {
    let pg = Postgres::start_in_place(dir)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while pg.psql("SELECT pg_is_in_recovery()")? != "f" {
        ensure!(
            Instant::now() < deadline,
            "the restored server did not finish recovery: {}",
            std::fs::read_to_string(pg.log_file()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(pg)
}

/// Rows 101 to 200 committed and archived, a moment T from the server's clock (returned), then
/// rows 201 to 300 committed: a restore to T has exactly rows up to 200.
fn rows_around_a_moment(rig: &Rig) -> Result<String> {
    insert(rig, 101, 200)?;
    rig.archive_current_segment()?;
    // Commit times are microseconds: keep T apart from both neighbours.
    std::thread::sleep(Duration::from_millis(20));
    let t = rig.sql(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )?;
    std::thread::sleep(Duration::from_millis(20));
    insert(rig, 201, 300)?;
    Ok(t)
}

fn range(from: i64, to: i64) -> Vec<i64> {
    (from..=to).collect()
}

#[test]
fn base_backup_wal_archive_and_point_in_time_restores() -> Result<()> {
    let rig = setup()?;
    rig.sql("CREATE TABLE t (id bigint PRIMARY KEY, note text)")?;
    insert(&rig, 1, 100)?;

    // A base backup, its LSNs within what the server reported around it.
    let before = rig.sql("SELECT pg_current_wal_lsn() - '0/0'")?.parse::<u64>()?;
    let port = rig.pg.port().to_string();
    let out = rig.ok(&["backup", "-h", "127.0.0.1", "-p", &port, "-U", "postgres", "--json"])?;
    let after = rig.sql("SELECT pg_current_wal_lsn() - '0/0'")?.parse::<u64>()?;
    let report: Value = serde_json::from_str(&out)?;
    let lsn = |k: &str| -> Result<u64> {
        let s = report[k].as_str().with_context(|| format!("{k} in {report}"))?;
        let (hi, lo) = s.split_once('/').context("an LSN")?;
        Ok((u64::from_str_radix(hi, 16)? << 32) | u64::from_str_radix(lo, 16)?)
    };
    let (start, finish) = (lsn("start_lsn")?, lsn("finish_lsn")?);
    ensure!(
        before <= start && start < finish && finish <= after,
        "{before} {start} {finish} {after}"
    );
    let version = rig.sql("SHOW server_version")?;
    assert_eq!(report["version"].as_str(), version.split_whitespace().next());
    let sysid = rig.sql("SELECT system_identifier FROM pg_control_system()")?;
    assert_eq!(report["system_identifier"].to_string(), sysid);
    assert_eq!(report["timeline"], 1);

    // Rows before T, T, rows after T, a restore point, more rows; all archived.
    let t = rows_around_a_moment(&rig)?;
    rig.sql("SELECT pg_create_restore_point('after-300')")?;
    insert(&rig, 301, 400)?;
    rig.archive_current_segment()?;

    let status: Value = serde_json::from_str(&rig.ok(&["wal", "status", "--json"])?)?;
    let tl = &status[0]["timelines"][0];
    assert_eq!(tl["timeline"], 1, "{status}");
    assert_eq!(tl["gaps"].as_array().map(Vec::len), Some(0), "{status}");
    assert!(tl["runs"][0]["newest_transaction"].is_string(), "{status}");

    // pg_verifybackup accepts the restored copy as the backup's manifest describes it.
    let verify_dir = rig.target("verify");
    rig.ok(&["restore", "--pgdata", verify_dir.to_str().context("path")?])?;
    let verify = holdfast_testkit::postgres::server_bin_dir()?.join("pg_verifybackup");
    let out = rig.pg.command_as_server_user(&verify, &[verify_dir.as_os_str()]).output()?;
    ensure!(
        out.status.success(),
        "pg_verifybackup: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // To T: exactly the rows committed before it.
    let dir = rig.target("to-time");
    rig.ok(&["restore", "--pgdata", dir.to_str().context("path")?, "--to-time", &t])?;
    let restored = start_restored(&dir)?;
    assert_eq!(ids(&restored)?, range(1, 200));
    drop(restored);

    // To the restore point.
    let dir = rig.target("to-name");
    rig.ok(&["restore", "--pgdata", dir.to_str().context("path")?, "--to-name", "after-300"])?;
    let restored = start_restored(&dir)?;
    assert_eq!(ids(&restored)?, range(1, 300));
    drop(restored);

    // The latest point: everything.
    let latest = rig.target("latest");
    rig.ok(&["restore", "--pgdata", latest.to_str().context("path")?])?;
    let restored = start_restored(&latest)?;
    assert_eq!(ids(&restored)?, range(1, 400));
    restored.psql("INSERT INTO t VALUES (401, 'writable after promotion')")?;
    drop(restored);

    // Refused up front, nothing written: a time after the archive's newest transaction, a
    // time before the base backup.
    let refused = rig.target("refused");
    let refused_s = refused.to_str().context("path")?;
    let later = "2999-01-01T00:00:00Z";
    let out = rig.holdfast(&["restore", "--pgdata", refused_s, "--to-time", later])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no transaction after"), "{err}");
    let out =
        rig.holdfast(&["restore", "--pgdata", refused_s, "--to-time", "2001-01-01T00:00:00Z"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no base backup finished before"), "{err}");
    assert!(!refused.exists(), "a refused restore wrote {}", refused.display());

    // A segment removed from the middle of the archive: the gap is reported and every target
    // past it is refused.
    let current = rig.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")?;
    insert(&rig, 402, 500)?;
    rig.archive_current_segment()?;
    insert(&rig, 501, 600)?;
    rig.archive_current_segment()?;
    let archived = rig.repo.join("archive").join(format!("pg-{sysid}-{current}"));
    ensure!(archived.is_file(), "{} not archived", archived.display());
    std::fs::remove_file(&archived)?;
    let status = rig.ok(&["wal", "status"])?;
    assert!(status.contains("GAP") && status.contains(&current), "{status}");
    let out = rig.holdfast(&["restore", "--pgdata", refused_s])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&current) && err.contains("missing"), "{err}");
    assert!(!refused.exists(), "a refused restore wrote {}", refused.display());
    Ok(())
}

#[test]
fn wal_push_is_idempotent_and_refuses_a_different_segment_under_the_same_name() -> Result<()> {
    let rig = setup()?;
    rig.sql("CREATE TABLE t (id bigint PRIMARY KEY, note text)")?;
    insert(&rig, 1, 10)?;
    rig.archive_current_segment()?;
    let name = rig.sql("SELECT last_archived_wal FROM pg_stat_archiver")?;
    let data_dir = rig.pg.data_dir().to_path_buf();
    // The file PostgreSQL archived may already be recycled: fetch it back.
    let copy = rig.scratch.join(&name);
    let pgdata = data_dir.to_str().context("path")?;
    rig.ok(&["wal-fetch", "--pgdata", pgdata, &name, copy.to_str().context("path")?])?;
    // The same bytes again: accepted (what a retried archive_command does).
    let out =
        rig.ok(&["wal-push", "--pgdata", pgdata, "--json", copy.to_str().context("path")?])?;
    let pushed: Value = serde_json::from_str(&out)?;
    assert_eq!(pushed[0]["already_archived"], true, "{out}");
    // Different bytes under that name: refused, and the archived segment is unchanged.
    let original = std::fs::read(&copy)?;
    let mut changed = original.clone();
    let last = changed.len() - 1;
    changed[last] ^= 0xff;
    std::fs::write(&copy, &changed)?;
    let out = rig.holdfast(&["wal-push", "--pgdata", pgdata, copy.to_str().context("path")?])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("refusing to overwrite"), "{err}");
    let again = rig.scratch.join("again");
    rig.ok(&["wal-fetch", "--pgdata", pgdata, &name, again.to_str().context("path")?])?;
    assert!(std::fs::read(&again)? == original, "the archived segment changed");
    // A name that is not archived: exit 1, nothing written.
    let missing = rig.scratch.join("missing");
    let out = rig.holdfast(&[
        "wal-fetch",
        "--pgdata",
        pgdata,
        "0000000100000099000000FF",
        missing.to_str().context("path")?,
    ])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(!missing.exists());
    Ok(())
}

/// `kill -9` of `wal-push` at many points of its work never leaves a partial or wrong segment
/// under the segment's name, and the retry PostgreSQL would make then succeeds: a segment is
/// never lost, whatever moment the archiver dies at.
#[test]
fn killing_wal_push_at_any_point_loses_no_segment() -> Result<()> {
    let rig = setup()?;
    rig.sql("CREATE TABLE t (id bigint PRIMARY KEY, note text)")?;
    insert(&rig, 1, 50_000)?;
    rig.archive_current_segment()?;
    let name = rig.sql("SELECT last_archived_wal FROM pg_stat_archiver")?;
    let sysid = rig.sql("SELECT system_identifier FROM pg_control_system()")?;
    let pgdata = rig.pg.data_dir().to_str().context("path")?.to_string();
    // A copy of the segment, pushed as root into a repository of its own.
    let work = tempfile::tempdir()?;
    let segment = work.path().join(&name);
    rig.ok(&[
        "wal-fetch",
        "--pgdata",
        &pgdata,
        &name,
        rig.scratch.join(&name).to_str().context("path")?,
    ])?;
    std::fs::copy(rig.scratch.join(&name), &segment)?;
    let original = std::fs::read(&segment)?;
    let repo = work.path().join("repo");
    let pw = work.path().join("pw");
    std::fs::write(&pw, "pw\n")?;
    let base = |cmd: &mut std::process::Command| {
        cmd.args(["--repo", repo.to_str().unwrap_or_default()]).args([
            "--password-file",
            pw.to_str().unwrap_or_default(),
            "--quiet",
        ]);
    };
    let mut init = std::process::Command::new(BIN);
    init.arg("repo").arg("init");
    base(&mut init);
    ensure!(init.output()?.status.success(), "repo init");
    let object = repo.join("archive").join(format!("pg-{sysid}-{name}"));
    let fetched = work.path().join("fetched");
    let push = || {
        let mut cmd = std::process::Command::new(BIN);
        cmd.arg("pg");
        base(&mut cmd);
        cmd.args(["wal-push", "--system-identifier", &sysid]).arg(&segment);
        cmd
    };
    let fetch_equals = || -> Result<bool> {
        let mut cmd = std::process::Command::new(BIN);
        cmd.arg("pg");
        base(&mut cmd);
        cmd.args(["wal-fetch", "--system-identifier", &sysid, &name]).arg(&fetched);
        let out = cmd.output()?;
        ensure!(out.status.success(), "wal-fetch: {}", String::from_utf8_lossy(&out.stderr));
        Ok(std::fs::read(&fetched)? == original)
    };
    let mut killed_before_storing = 0;
    for step in 0..16u64 {
        let mut child = push().spawn()?;
        std::thread::sleep(Duration::from_millis(step * 25));
        child.kill()?;
        child.wait()?;
        if object.exists() {
            // Whatever the kill interrupted, a stored segment is the whole, right one.
            ensure!(fetch_equals()?, "step {step}: a damaged segment is stored");
        } else {
            killed_before_storing += 1;
        }
        // PostgreSQL retries a segment it was not told is archived; the retry succeeds.
        let out = push().output()?;
        ensure!(
            out.status.success(),
            "step {step}: the retry failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(fetch_equals()?, "step {step}: the retry stored something else");
        std::fs::remove_file(&object)?;
    }
    // The sweep really interrupted pushes before they stored anything.
    ensure!(killed_before_storing > 0, "every push finished before its kill");
    Ok(())
}

/// `holdfast pg wal-stream` archives through a replication slot with nothing configured on the
/// server; `kill -9` of the worker loses no segment: the slot keeps what the server wrote
/// meanwhile, and the restarted worker resumes from its spool.
/// A server, a repository and what the streaming tests do with them.
struct Streaming {
    pg: Postgres,
    sysid: String,
    work: tempfile::TempDir,
}

impl Streaming {
    fn new() -> Result<Streaming> {
        let pg = Postgres::start()?;
        pg.psql("CREATE TABLE t (id bigint PRIMARY KEY, note text)")?;
        let sysid = pg.psql("SELECT system_identifier FROM pg_control_system()")?;
        let work = tempfile::tempdir()?;
        std::fs::write(work.path().join("pw"), "pw\n")?;
        let rig = Streaming { pg, sysid, work };
        ensure!(rig.holdfast(&["repo", "init"]).output()?.status.success(), "repo init");
        Ok(rig)
    }

    fn holdfast(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(args.first().copied())
            .args(["--quiet", "--repo"])
            .arg(self.work.path().join("repo"))
            .arg("--password-file")
            .arg(self.work.path().join("pw"))
            .args(&args[1..]);
        cmd
    }

    /// A streaming worker on `spool` (a directory under the work directory).
    fn stream(&self, spool: &str) -> std::io::Result<std::process::Child> {
        self.stream_with(spool, &[])
    }

    /// Like [`Streaming::stream`], with more `wal-stream` flags.
    fn stream_with(&self, spool: &str, extra: &[&str]) -> std::io::Result<std::process::Child> {
        let port = self.pg.port().to_string();
        self.holdfast(&["pg", "wal-stream", "-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
            .arg("--spool")
            .arg(self.work.path().join(spool))
            .args(extra)
            .stdout(std::process::Stdio::null())
            .spawn()
    }

    fn archived(&self, segment: &str) -> PathBuf {
        self.work.path().join("repo/archive").join(format!("pg-{}-{segment}", self.sysid))
    }

    /// Commits a thousand rows from `from` and ends the segment; its name.
    fn switch(&self, from: i64) -> Result<String> {
        self.pg.psql(&format!(
            "INSERT INTO t SELECT g, 'x' FROM generate_series({from}, {from} + 999) g"
        ))?;
        Ok(self.pg.psql("SELECT pg_walfile_name(pg_switch_wal())")?)
    }

    fn no_stream(&self) -> Result<bool> {
        Ok(self.pg.psql("SELECT count(*) FROM pg_stat_replication")? == "0")
    }

    fn has_slot(&self) -> Result<bool> {
        Ok(self
            .pg
            .psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'holdfast'")?
            == "1")
    }

    /// The archive's runs and gaps as `wal status --json` reports them (first timeline).
    fn timeline_status(&self) -> Result<Value> {
        let out = self.holdfast(&["pg", "wal", "status", "--json"]).output()?;
        ensure!(out.status.success(), "wal status: {}", String::from_utf8_lossy(&out.stderr));
        let status: Value = serde_json::from_slice(&out.stdout)?;
        Ok(status[0]["timelines"][0].clone())
    }
}

/// Polls `done` every 100 ms for up to two minutes.
fn wait_until(what: &str, done: impl Fn() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done()? {
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[test]
fn streaming_through_a_slot_survives_kill_9_of_the_worker() -> Result<()> {
    let rig = Streaming::new()?;
    let mut worker = rig.stream("spool")?;
    // The slot exists once the worker is up; what is written from then on is kept for it.
    wait_until("the worker's slot", || rig.has_slot())?;
    let first = rig.switch(1)?;
    wait_until("the first segment archived", || Ok(rig.archived(&first).is_file()))?;
    worker.kill()?;
    worker.wait()?;
    // pg_receivewal went with it: the server has no stream left (else it would keep streaming
    // into the spool and the restart below would prove nothing).
    wait_until("pg_receivewal to go with the killed worker", || rig.no_stream())?;

    // Nobody streams: the server completes two more segments, and a checkpoint would recycle
    // them but for the slot.
    let second = rig.switch(1001)?;
    let third = rig.switch(2001)?;
    rig.pg.psql("CHECKPOINT")?;
    let mut worker = rig.stream("spool")?;
    wait_until("the third segment archived", || Ok(rig.archived(&third).is_file()))?;
    worker.kill()?;
    worker.wait()?;
    ensure!(rig.archived(&second).is_file(), "{second} was lost");

    let timeline = rig.timeline_status()?;
    assert_eq!(timeline["gaps"].as_array().map(Vec::len), Some(0), "{timeline}");
    let run = &timeline["runs"][0];
    ensure!(
        run["first"].as_str() <= Some(first.as_str())
            && run["last"].as_str() >= Some(third.as_str()),
        "{timeline}"
    );
    Ok(())
}

#[test]
fn the_streaming_worker_expires_the_wal_base_backups_no_longer_need() -> Result<()> {
    let rig = Streaming::new()?;
    let mut worker = rig.stream_with("spool", &["--expire-every", "1s"])?;
    let result = (|| -> Result<()> {
        wait_until("the worker's slot", || rig.has_slot())?;
        let first = rig.switch(1)?;
        let second = rig.switch(1001)?;
        wait_until("two segments archived", || Ok(rig.archived(&second).is_file()))?;
        ensure!(rig.archived(&first).is_file(), "{first} expired with no base backup");

        // A base backup (taken while the worker tries to expire every second: one of them
        // meets the backup's lock and waits for the next round); its start is after both.
        let port = rig.pg.port().to_string();
        let conn = ["-h", "127.0.0.1", "-p", port.as_str(), "-U", "postgres"];
        let mut args = vec!["pg", "backup", "--json"];
        args.extend(conn);
        let out = rig.holdfast(&args).output()?;
        ensure!(out.status.success(), "pg backup: {}", String::from_utf8_lossy(&out.stderr));
        let base: Value = serde_json::from_slice(&out.stdout)?;
        let start = segment_of(base["start_lsn"].as_str().context("start_lsn")?)?;
        ensure!(second < start, "{second} is not before the backup's start {start}");
        let third = rig.switch(2001)?;
        wait_until("the WAL before the base backup expired", || {
            Ok(!rig.archived(&first).is_file() && !rig.archived(&second).is_file())
        })?;
        wait_until("the segment after the backup archived", || Ok(rig.archived(&third).is_file()))?;
        ensure!(rig.archived(&start).is_file(), "the backup's own start segment went");
        let timeline = rig.timeline_status()?;
        assert_eq!(timeline["runs"][0]["first"], start.as_str(), "{timeline}");
        assert_eq!(timeline["gaps"].as_array().map(Vec::len), Some(0), "{timeline}");
        Ok(())
    })();
    worker.kill()?;
    worker.wait()?;
    result
}

#[test]
fn a_worker_on_an_empty_spool_resumes_after_the_archive_not_after_the_slot() -> Result<()> {
    let rig = Streaming::new()?;
    let mut worker = rig.stream("spool-1")?;
    wait_until("the worker's slot", || rig.has_slot())?;
    let first = rig.switch(1)?;
    wait_until("the first segment archived", || Ok(rig.archived(&first).is_file()))?;
    worker.kill()?;
    worker.wait()?;
    wait_until("the stream to end", || rig.no_stream())?;

    // A worker that received two segments on the slot, confirmed them (so the slot moved past
    // them) and died before archiving them, its spool lost with its pod.
    let lost = rig.work.path().join("lost-spool");
    std::fs::create_dir(&lost)?;
    let receivewal = holdfast_testkit::postgres::server_bin_dir()?.join("pg_receivewal");
    let port = rig.pg.port().to_string();
    let mut receiver = std::process::Command::new(receivewal)
        .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-w"])
        .args(["--slot", "holdfast", "--synchronous", "--no-loop", "-D"])
        .arg(&lost)
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let second = rig.switch(1001)?;
    let third = rig.switch(2001)?;
    wait_until("the receiver to complete the third segment", || Ok(lost.join(&third).is_file()))?;
    // More WAL after the third segment, until the receiver has confirmed past it: the slot then
    // no longer holds the second and third segments for anyone.
    wait_until("the slot to move past the third segment", || {
        rig.pg.psql("INSERT INTO t VALUES (-1, 'y') ON CONFLICT (id) DO UPDATE SET note = 'z'")?;
        let at = rig.pg.psql(
            "SELECT pg_walfile_name(restart_lsn) FROM pg_replication_slots \
             WHERE slot_name = 'holdfast'",
        )?;
        Ok(at > third)
    })?;
    receiver.kill()?;
    receiver.wait()?;
    wait_until("the receiver's stream to end", || rig.no_stream())?;
    std::fs::remove_dir_all(&lost)?;
    ensure!(!rig.archived(&second).exists() && !rig.archived(&third).exists(), "archived early");

    // A new worker on a new, empty spool asks the server for what the archive lacks.
    let mut worker = rig.stream("spool-2")?;
    let fourth = rig.switch(3001)?;
    wait_until("the fourth segment archived", || Ok(rig.archived(&fourth).is_file()))?;
    worker.kill()?;
    worker.wait()?;
    for segment in [&second, &third] {
        ensure!(
            rig.archived(segment).is_file(),
            "{segment} was skipped: the stream resumed after it"
        );
    }
    let timeline = rig.timeline_status()?;
    assert_eq!(timeline["gaps"].as_array().map(Vec::len), Some(0), "{timeline}");
    Ok(())
}

/// Every file under `dir` with its size, mode and modification time: what "left unchanged"
/// compares.
fn listing(dir: &Path) -> Result<Vec<String>> {
    use std::os::unix::fs::MetadataExt as _;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let m = entry.metadata()?;
            if m.is_dir() {
                todo.push(entry.path());
            }
            out.push(format!(
                "{} {} {:o} {}.{}",
                entry.path().display(),
                m.len(),
                m.mode(),
                m.mtime(),
                m.mtime_nsec()
            ));
        }
    }
    out.sort();
    Ok(out)
}

/// `holdfast pg recover` on a data directory restored without holdfast (a plain
/// `pg_basebackup -Ft -X fetch` tar extracted, as a KubeBlocks restore Job does): a target the
/// archive cannot reach is refused with the directory untouched; a time target brings back
/// exactly the rows committed before it; running it twice is the same as once.
#[test]
fn recover_configures_point_in_time_recovery_on_a_base_backup_restored_by_other_means() -> Result<()>
{
    let rig = setup()?;
    rig.sql("CREATE TABLE t (id bigint PRIMARY KEY, note text)")?;
    insert(&rig, 1, 100)?;
    let dir = rig.target("extracted");
    let dir_s = dir.to_str().context("path")?;
    let basebackup = holdfast_testkit::postgres::server_bin_dir()?.join("pg_basebackup");
    let script = format!(
        "set -eo pipefail; mkdir -m 700 {dir_s}; {} -h 127.0.0.1 -p {} -U postgres -Ft -D - \
         -X fetch | tar -xf - -C {dir_s}",
        basebackup.display(),
        rig.pg.port()
    );
    let out = rig
        .pg
        .command_as_server_user(Path::new("/bin/bash"), &[OsStr::new("-c"), OsStr::new(&script)])
        .output()?;
    ensure!(out.status.success(), "pg_basebackup | tar: {}", String::from_utf8_lossy(&out.stderr));
    ensure!(dir.join("backup_label").is_file() && dir.join("backup_manifest").is_file());

    let t = rows_around_a_moment(&rig)?;
    rig.archive_current_segment()?;

    // Beyond the archive: refused before anything is written.
    let before = listing(&dir)?;
    let out = rig.holdfast(&["recover", "--pgdata", dir_s, "--to-time", "2999-01-01T00:00:00Z"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no transaction after"), "{err}");
    assert_eq!(listing(&dir)?, before, "a refused recover changed {dir_s}");
    let spool = rig.target("extracted.restore-wal");
    assert!(!spool.exists(), "a refused recover wrote {}", spool.display());
    // A directory that is not an unstarted base backup.
    let out =
        rig.holdfast(&["recover", "--pgdata", rig.pg.data_dir().to_str().context("path")?])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no backup_label"), "{err}");

    // The dry run plans without writing.
    let recover_to_t_as = |extra: &[&str], as_server_user: bool| -> Result<Value> {
        let mut args = vec!["recover", "--pgdata", dir_s, "--to-time", &t, "--json"];
        args.extend(extra);
        Ok(serde_json::from_str(&rig.ok_as(&args, as_server_user)?)?)
    };
    let recover_to_t = |extra: &[&str]| recover_to_t_as(extra, true);
    let plan = recover_to_t(&["--dry-run"])?;
    assert_eq!(plan["finish_from"], "backup_manifest", "{plan}");
    let sysid = rig.sql("SELECT system_identifier FROM pg_control_system()")?;
    assert_eq!(plan["system_identifier"].to_string(), sysid, "{plan}");
    assert_eq!(listing(&dir)?, before, "a dry run changed {dir_s}");
    // Without the manifest, the backup's end is read from the newest segment in pg_wal: at or
    // after the manifest's End-LSN, in the same segment (the tar's WAL ends with it).
    let manifest = dir.join("backup_manifest");
    let away = rig.target("backup_manifest.away");
    std::fs::rename(&manifest, &away)?;
    let from_wal = recover_to_t(&["--dry-run"]);
    std::fs::rename(&away, &manifest)?;
    let from_wal = from_wal?;
    assert!(
        from_wal["finish_from"].as_str().is_some_and(|f| f.starts_with("pg_wal/")),
        "{from_wal}"
    );
    let lsn = |v: &Value| -> Result<u64> {
        let (hi, lo) =
            v["finish_lsn"].as_str().context("finish_lsn")?.split_once('/').context("lsn")?;
        Ok((u64::from_str_radix(hi, 16)? << 32) | u64::from_str_radix(lo, 16)?)
    };
    assert!(lsn(&from_wal)? >= lsn(&plan)?, "{from_wal} {plan}");
    assert_eq!(from_wal["wal"], plan["wal"], "{from_wal} {plan}");

    let first = recover_to_t(&[])?;
    let conf = std::fs::read_to_string(dir.join("postgresql.auto.conf"))?;
    let spooled = listing(&spool)?.len();
    // Again, the same way: the same settings, once. This time as this process, root in CI, as
    // a restore Job runs it: what it rewrites must go to the data's owner, or the server below
    // could not read it.
    let second = recover_to_t_as(&[], false)?;
    assert_eq!(first["plan"], second["plan"]);
    assert_eq!(std::fs::read_to_string(dir.join("postgresql.auto.conf"))?, conf);
    assert_eq!(conf.matches("restore_command").count(), 1, "{conf}");
    assert_eq!(listing(&spool)?.len(), spooled);
    ensure!(dir.join("recovery.signal").is_file());
    let owner = |p: &Path| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    let data_owner = owner(&dir.join("PG_VERSION"))?;
    for p in [dir.join("postgresql.auto.conf"), dir.join("recovery.signal"), spool.clone()]
        .into_iter()
        .chain(
            std::fs::read_dir(&spool)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<Vec<_>, _>>()?,
        )
    {
        assert_eq!(owner(&p)?, data_owner, "{} is not the data's owner's", p.display());
    }

    let restored = start_restored(&dir)?;
    assert_eq!(ids(&restored)?, range(1, 200));
    restored.psql("INSERT INTO t VALUES (201, 'writable after promotion')")?;
    Ok(())
}

/// `holdfast pg wal-stream --info-file F --switch-interval 2s` keeps KubeBlocks' backup info
/// current on a server that only commits a few rows: the timer switches segments so committed
/// WAL reaches the archive, and the time range's end follows the commits.
#[test]
fn streaming_keeps_the_backup_info_current_on_a_quiet_server() -> Result<()> {
    let pg = Postgres::start()?;
    pg.psql("CREATE TABLE t (id bigint PRIMARY KEY, note text)")?;
    let work = tempfile::tempdir()?;
    let (repo, pw, spool, info) = (
        work.path().join("repo"),
        work.path().join("pw"),
        work.path().join("spool"),
        work.path().join("info.json"),
    );
    std::fs::write(&pw, "pw\n")?;
    let init = std::process::Command::new(BIN)
        .args(["repo", "init", "--quiet"])
        .arg("--repo")
        .arg(&repo)
        .arg("--password-file")
        .arg(&pw)
        .output()?;
    ensure!(init.status.success(), "repo init: {}", String::from_utf8_lossy(&init.stderr));
    let port = pg.port().to_string();
    let mut worker = std::process::Command::new(BIN)
        .args(["pg", "--quiet", "--repo"])
        .arg(&repo)
        .arg("--password-file")
        .arg(&pw)
        .args(["wal-stream", "-h", "127.0.0.1", "-p", &port, "-U", "postgres", "--spool"])
        .arg(&spool)
        .arg("--info-file")
        .arg(&info)
        .args(["--switch-interval", "2s"])
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let result = (|| -> Result<()> {
        // The commit's time, whole seconds, read in the committing transaction (now() is when
        // it started, so the commit record is at or after it).
        let commit = |from: i64| -> Result<String> {
            Ok(pg.psql(&format!(
                "WITH ins AS (INSERT INTO t SELECT g, 'x' FROM generate_series({from}, {from} + 9) \
                 g RETURNING 1) SELECT to_char(date_trunc('second', now() AT TIME ZONE 'UTC'), \
                 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM (SELECT count(*) FROM ins) c"
            ))?)
        };
        let wait_end = |at_least: &str| -> Result<Value> {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let current = std::fs::read(&info)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
                if let Some(v) = &current
                    && v["timeRange"]["end"].as_str().is_some_and(|end| end >= at_least)
                {
                    return Ok(current.unwrap_or_default());
                }
                ensure!(
                    Instant::now() < deadline,
                    "the info file never reached a transaction at {at_least}: {current:?}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        let first = commit(1)?;
        let v = wait_end(&first)?;
        let range = &v["timeRange"];
        assert_eq!(range["timeZone"], "+00:00", "{v}");
        let start = range["start"].as_str().context("start")?;
        let end1 = range["end"].as_str().context("end")?.to_string();
        assert!(start <= end1.as_str() && start.ends_with('Z') && start.len() == 20, "{v}");
        let size: u64 = v["totalSize"].as_str().context("totalSize")?.parse()?;
        assert!(size > 0, "{v}");
        // A commit in a later second than the range's end: the end follows it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while pg
            .psql("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")?
            <= end1
        {
            ensure!(Instant::now() < deadline, "the server clock does not advance");
            std::thread::sleep(Duration::from_millis(100));
        }
        let second = commit(11)?;
        let v = wait_end(&second)?;
        assert!(v["timeRange"]["end"].as_str() > Some(end1.as_str()), "{v}");
        assert_eq!(v["timeRange"]["start"].as_str(), Some(start), "{v}");
        let grown: u64 = v["totalSize"].as_str().context("totalSize")?.parse()?;
        assert!(grown > size, "{v}");
        Ok(())
    })();
    worker.kill()?;
    worker.wait()?;
    result
}

#[test]
fn a_backup_keeping_its_wal_in_the_archive_restores_from_it_and_waits_for_it() -> Result<()> {
    let rig = setup()?;
    rig.sql("CREATE TABLE t (id bigint PRIMARY KEY, note text)")?;
    insert(&rig, 1, 100)?;
    let port = rig.pg.port().to_string();
    let conn = ["-h", "127.0.0.1", "-p", port.as_str(), "-U", "postgres"];
    let backup = |extra: &[&str]| -> Result<Output> {
        let mut args = vec!["backup"];
        args.extend(conn);
        args.extend(extra);
        rig.holdfast(&args)
    };
    let out = backup(&["--wal", "archive", "--json"])?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(report["wal_in_archive"], true, "{report}");
    insert(&rig, 101, 200)?;
    rig.archive_current_segment()?;

    // The backup's own WAL comes out of the archive: the latest point has every row.
    let latest = rig.target("latest");
    rig.ok(&["restore", "--pgdata", latest.to_str().context("path")?])?;
    let restored = start_restored(&latest)?;
    assert_eq!(ids(&restored)?, range(1, 200));
    drop(restored);

    // The same backup's files restored by other means (its snapshot extracted as is, as a
    // KubeBlocks restore Job does): its pg_wal holds none of its WAL, so `recover` replays from
    // the backup's start out of the archive, not from its end.
    let other = rig.target("other-means");
    rig.repo_ok(&["restore", "latest", "--target", other.to_str().context("path")?])?;
    let recovered: Value = serde_json::from_str(&rig.ok(&[
        "recover",
        "--pgdata",
        other.to_str().context("path")?,
        "--json",
    ])?)?;
    assert_eq!(recovered["plan"]["archive_from"], report["start_lsn"], "{recovered}");
    let restored = start_restored(&other)?;
    assert_eq!(ids(&restored)?, range(1, 200));
    drop(restored);

    // Without the segment the backup started in, it cannot be restored: refused up front.
    let sysid = rig.sql("SELECT system_identifier FROM pg_control_system()")?;
    let (hi, lo) =
        report["start_lsn"].as_str().context("start_lsn")?.split_once('/').context("lsn")?;
    let start = (u64::from_str_radix(hi, 16)? << 32) | u64::from_str_radix(lo, 16)?;
    let segment = format!("{:08X}{:08X}{:08X}", 1, start >> 32, (start & 0xFFFF_FFFF) >> 24);
    let archived = rig.repo.join("archive").join(format!("pg-{sysid}-{segment}"));
    ensure!(archived.is_file(), "{} not archived", archived.display());
    let kept = rig.target("kept-segment");
    std::fs::rename(&archived, &kept)?;
    let refused = rig.target("refused");
    let out = rig.holdfast(&["restore", "--pgdata", refused.to_str().context("path")?])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(&segment)
            && err.contains("keeps its WAL in the archive"),
        "{err}"
    );
    assert!(!refused.exists(), "a refused restore wrote {}", refused.display());
    std::fs::rename(&kept, &archived)?;

    // A cluster that no longer archives here: the backup waits, then fails, and saves nothing.
    rig.sql("ALTER SYSTEM SET archive_command = 'true'")?;
    rig.sql("SELECT pg_reload_conf()")?;
    let before = rig.ok(&["backups", "--json"])?;
    let out = backup(&["--wal", "archive", "--archive-timeout", "2s"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("was not archived into this repository within 2s"),
        "{err}"
    );
    assert_eq!(rig.ok(&["backups", "--json"])?, before, "a backup without its WAL was saved");
    Ok(())
}

/// The segment holding `lsn` (`X/Y` text) on timeline 1, as a WAL file name.
fn segment_of(lsn: &str) -> Result<String> {
    let (hi, lo) = lsn.split_once('/').context("lsn")?;
    let at = (u64::from_str_radix(hi, 16)? << 32) | u64::from_str_radix(lo, 16)?;
    Ok(format!("{:08X}{:08X}{:08X}", 1, at >> 32, (at & 0xFFFF_FFFF) >> 24))
}

/// The cluster's archived WAL file names (timeline 1 segments only), sorted.
fn archived_segments(rig: &Rig, sysid: &str) -> Result<Vec<String>> {
    let prefix = format!("pg-{sysid}-00000001");
    let mut names: Vec<String> = std::fs::read_dir(rig.repo.join("archive"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix) && n.len() == prefix.len() + 16)
        .map(|n| n[n.len() - 24..].to_string())
        .collect();
    names.sort();
    Ok(names)
}

#[test]
fn wal_expiry_keeps_what_base_backups_need_and_never_runs_beside_one() -> Result<()> {
    let rig = setup()?;
    let sysid = rig.sql("SELECT system_identifier FROM pg_control_system()")?;
    rig.sql("CREATE TABLE t (id bigint PRIMARY KEY, note text)")?;
    insert(&rig, 1, 50)?;
    rig.archive_current_segment()?;
    let port = rig.pg.port().to_string();
    let conn = ["-h", "127.0.0.1", "-p", port.as_str(), "-U", "postgres"];
    let backup = |extra: &[&str]| -> Result<Value> {
        let mut args = vec!["backup", "--json"];
        args.extend(conn);
        args.extend(extra);
        Ok(serde_json::from_str(&rig.ok(&args)?)?)
    };

    // No base backup yet: named, the cluster is refused; unnamed, it is left alone.
    let before = archived_segments(&rig, &sysid)?;
    ensure!(!before.is_empty(), "nothing archived");
    let out = rig.holdfast(&["wal", "expire", "--system-identifier", &sysid])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no base backup"), "{err}");
    let report: Value = serde_json::from_str(&rig.ok(&["wal", "expire", "--json"])?)?;
    assert!(
        report[0]["skipped"].as_str().is_some_and(|s| s.contains("no base backup")),
        "{report}"
    );
    assert_eq!(archived_segments(&rig, &sysid)?, before);

    // Two base backups with WAL between them; the second keeps its WAL in the archive.
    let first = backup(&[])?;
    for from in [51, 101, 151] {
        insert(&rig, from, from + 49)?;
        rig.archive_current_segment()?;
    }
    let second = backup(&["--wal", "archive"])?;
    insert(&rig, 201, 250)?;
    rig.archive_current_segment()?;

    // With both kept, nothing before the first one's start is needed.
    let line = |b: &Value| segment_of(b["start_lsn"].as_str().unwrap_or_default());
    let (first_line, second_line) = (line(&first)?, line(&second)?);
    let all = archived_segments(&rig, &sysid)?;
    let expired: Value = serde_json::from_str(&rig.ok(&["wal", "expire", "--json"])?)?;
    assert_eq!(expired[0]["first_kept"], first_line.as_str(), "{expired}");
    let left = archived_segments(&rig, &sysid)?;
    let wanted: Vec<String> = all.into_iter().filter(|s| *s >= first_line).collect();
    assert_eq!(left, wanted);
    assert_eq!(left.first(), Some(&first_line), "{left:?}");

    // Forget the first: its WAL goes, up to the second's start, oldest first, and no further.
    rig.repo_ok(&["forget", first["snapshot"].as_str().context("snapshot")?])?;
    let dry: Value = serde_json::from_str(&rig.ok(&["wal", "expire", "--dry-run", "--json"])?)?;
    assert_eq!(archived_segments(&rig, &sysid)?, left, "a dry run deleted WAL");
    let expired: Value = serde_json::from_str(&rig.ok(&["wal", "expire", "--json"])?)?;
    assert_eq!(dry, expired);
    let deleted: Vec<&str> = expired[0]["deleted"]
        .as_array()
        .context("deleted")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let wanted: Vec<&str> =
        left.iter().map(String::as_str).filter(|s| *s < second_line.as_str()).collect();
    assert!(!wanted.is_empty(), "the test needs WAL between the two backups");
    // Segments, and the first backup's `.backup` history file with them.
    assert_eq!(deleted.iter().copied().filter(|f| f.len() == 24).collect::<Vec<_>>(), wanted);
    assert!(deleted.iter().all(|f| *f < second_line.as_str()), "{deleted:?}");
    let now = archived_segments(&rig, &sysid)?;
    assert_eq!(now.first(), Some(&second_line), "{now:?}");
    let status: Value = serde_json::from_str(&rig.ok(&["wal", "status", "--json"])?)?;
    let runs = &status[0]["timelines"][0]["runs"];
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "one unbroken run: {status}");
    assert_eq!(runs[0]["first"], second_line.as_str(), "{status}");

    // The second backup, which needs the archive, still restores to the latest point.
    let latest = rig.target("latest");
    rig.ok(&["restore", "--pgdata", latest.to_str().context("path")?])?;
    let restored = start_restored(&latest)?;
    assert_eq!(ids(&restored)?, range(1, 250));
    drop(restored);

    // An expiry that starts while a base backup is starting (here: from inside pg_basebackup,
    // before the server has chosen the backup's start) is refused by the backup's lock, and
    // deletes nothing.
    let real = holdfast_testkit::postgres::server_bin_dir()?;
    let bindir = rig.pg.owned_dir("wrapped-bin")?;
    for entry in std::fs::read_dir(&real)? {
        let entry = entry?;
        if entry.file_name() != "pg_basebackup" {
            std::os::unix::fs::symlink(entry.path(), bindir.join(entry.file_name()))?;
        }
    }
    let seen = rig.scratch.join("expire-during-backup");
    let script = format!(
        "#!/bin/sh\n{bin} pg --repo {repo} --password-file {pw} wal expire >{seen} 2>&1\n\
         echo \"exit $?\" >>{seen}\nexec {real}/pg_basebackup \"$@\"\n",
        bin = rig.bin.display(),
        repo = rig.repo.display(),
        pw = rig.password_file.display(),
        seen = seen.display(),
        real = real.display(),
    );
    let wrapper = bindir.join("pg_basebackup");
    std::fs::write(&wrapper, script)?;
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    rig.pg.give(&bindir)?;
    let before = archived_segments(&rig, &sysid)?;
    let third = backup(&["--pg-bindir", bindir.to_str().context("path")?])?;
    let during = std::fs::read_to_string(&seen).context("the wrapper did not run")?;
    assert!(
        during.contains("is locked: a shared lock by postgres base backup")
            && !during.contains("exit 0"),
        "expiry ran beside a starting base backup: {during}"
    );
    // Nothing deleted (the backup's own end switched WAL, so more may have been archived).
    let after = archived_segments(&rig, &sysid)?;
    assert!(before.iter().all(|s| after.contains(s)), "{before:?} → {after:?}");
    ensure!(third["snapshot"].is_string(), "{third}");
    Ok(())
}
