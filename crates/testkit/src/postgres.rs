//! A throw-away PostgreSQL server: `initdb` into a temporary directory, `pg_ctl start` on a free
//! port listening on 127.0.0.1 only, trust authentication (replication included, so
//! `pg_basebackup` works), stopped with `pg_ctl stop -m immediate` when dropped.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (CI containers), the server
//! runs as an unprivileged account (`postgres`, else `nobody`) that owns the data directory.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::Error;
use crate::process::{RunAs, free_port, is_root, on_path, run};

/// The database superuser every launched server has.
pub const SUPERUSER: &str = "postgres";

/// A running PostgreSQL server.
pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    data: PathBuf,
    port: u16,
    run_as: Option<RunAs>,
    stopped: bool,
}

impl Postgres {
    /// Initialises a new cluster and starts it.
    pub fn start() -> Result<Postgres, Error> {
        let mut pg = Self::init()?;
        pg.launch()?;
        Ok(pg)
    }

    /// Initialises a new cluster without starting it, so a test can add settings
    /// ([`Postgres::configure`]) and files the server user must reach ([`Postgres::owned_dir`])
    /// first; [`Postgres::start_server`] starts it.
    pub fn init() -> Result<Postgres, Error> {
        let bin = server_bin_dir()?;
        let (dir, run_as) = scratch()?;
        let data = dir.path().join("data");
        let pg = Postgres { bin, data, port: 0, run_as, stopped: true, dir };
        pg.make_owned_dir(&pg.data.clone())?;
        let data_arg = pg.data.clone();
        let mut cmd = pg.server_command(
            "initdb",
            &[
                OsStr::new("-D"),
                data_arg.as_os_str(),
                OsStr::new("-U"),
                OsStr::new(SUPERUSER),
                OsStr::new("--auth=trust"),
                OsStr::new("--no-locale"),
                OsStr::new("-E"),
                OsStr::new("UTF8"),
                OsStr::new("--no-sync"),
            ],
        );
        run(&mut cmd)?;
        Ok(pg)
    }

    /// Starts a server made by [`Postgres::init`].
    pub fn start_server(&mut self) -> Result<(), Error> {
        self.launch()
    }

    /// Appends `name = value` lines to `postgresql.conf` (values as the file wants them:
    /// strings single-quoted).
    pub fn configure(&self, settings: &[(&str, &str)]) -> Result<(), Error> {
        use std::io::Write as _;
        let conf = self.data.join("postgresql.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(Error::io(format!("open {}", conf.display())))?;
        for (name, value) in settings {
            writeln!(f, "{name} = {value}")
                .map_err(Error::io(format!("write {}", conf.display())))?;
        }
        Ok(())
    }

    /// A new directory in the server's scratch space that the server's account owns (and can
    /// therefore write, and reach): for archives, binaries and data directories it must use.
    pub fn owned_dir(&self, name: &str) -> Result<PathBuf, Error> {
        let dir = self.dir.path().join(name);
        self.make_owned_dir(&dir)?;
        Ok(dir)
    }

    /// Gives `path` (and everything below it) to the server's account when running as root.
    pub fn give(&self, path: &Path) -> Result<(), Error> {
        match &self.run_as {
            Some(user) => user.chown_tree(path),
            None => Ok(()),
        }
    }

    /// A command that runs `program` as the server's account (as is when not root), in the
    /// scratch directory.
    pub fn command_as_server_user(&self, program: &Path, args: &[&OsStr]) -> Command {
        let mut cmd = match &self.run_as {
            Some(user) => user.command(program, args),
            None => {
                let mut cmd = Command::new(program);
                cmd.args(args);
                cmd
            }
        };
        cmd.current_dir(self.dir.path());
        cmd
    }

    /// Starts a server on an existing data directory where it is, as the account that owns it
    /// (the restore must have left it owned by the account the server runs as, `postgres` or
    /// `nobody` when the tests run as root): nothing is copied or chowned, so a restore that left
    /// the wrong owner or modes, or a path that account cannot reach, fails here.
    pub fn start_in_place(data: &Path) -> Result<Postgres, Error> {
        let bin = server_bin_dir()?;
        let (dir, run_as) = scratch()?;
        let mut pg =
            Postgres { bin, data: data.to_path_buf(), port: 0, run_as, stopped: true, dir };
        pg.launch()?;
        Ok(pg)
    }

    /// The uid the server processes run as.
    pub fn server_uid(&self) -> Result<u32, Error> {
        match &self.run_as {
            Some(user) => Ok(user.uid),
            None => std::fs::metadata("/proc/self")
                .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
                .map_err(Error::io("stat /proc/self")),
        }
    }

    /// Starts a server on an existing data directory (a restored backup, say). The directory is
    /// copied first, so the original is left as the restore wrote it and the copy can be given
    /// to the unprivileged user when running as root.
    pub fn start_existing(source: &Path) -> Result<Postgres, Error> {
        let bin = server_bin_dir()?;
        if !source.join("PG_VERSION").is_file() {
            return Err(Error::Io {
                context: format!("{} is not a PostgreSQL data directory", source.display()),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no PG_VERSION file"),
            });
        }
        let (dir, run_as) = scratch()?;
        let data = dir.path().join("data");
        run(Command::new("cp").arg("-a").arg(source).arg(&data))?;
        // A stale pid file would make the server think another instance owns the directory.
        let _ = std::fs::remove_file(data.join("postmaster.pid"));
        if let Some(user) = &run_as {
            user.chown_tree(&data)?;
        }
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
            .map_err(Error::io(format!("chmod {}", data.display())))?;
        let mut pg = Postgres { bin, data, port: 0, run_as, stopped: true, dir };
        pg.launch()?;
        Ok(pg)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The server log file.
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("run/server.log")
    }

    /// Runs SQL through psql as the superuser against database `postgres`; the unaligned,
    /// tuples-only output, trimmed.
    pub fn psql(&self, sql: &str) -> Result<String, Error> {
        self.psql_db("postgres", sql)
    }

    /// Like [`Postgres::psql`] against another database.
    pub fn psql_db(&self, db: &str, sql: &str) -> Result<String, Error> {
        let psql = self.client_program("psql")?;
        let out = run(Command::new(psql)
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", SUPERUSER, "-d", db])
            .args(["-c", sql]))?;
        Ok(out.trim().to_string())
    }

    /// Runs pgbench against database `postgres` with `args` (e.g. `["-i", "-s", "5"]`).
    pub fn pgbench(&self, args: &[&str]) -> Result<String, Error> {
        let pgbench = self.client_program("pgbench")?;
        run(Command::new(pgbench)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", SUPERUSER])
            .args(args)
            .arg("postgres"))
    }

    /// Stops the server now (immediate mode). Dropping does the same.
    pub fn stop(&mut self) -> Result<(), Error> {
        if self.stopped {
            return Ok(());
        }
        let data = self.data.clone();
        let mut cmd = self.server_command(
            "pg_ctl",
            &[
                OsStr::new("stop"),
                OsStr::new("-m"),
                OsStr::new("immediate"),
                OsStr::new("-w"),
                OsStr::new("-D"),
                data.as_os_str(),
            ],
        );
        run(&mut cmd)?;
        self.stopped = true;
        Ok(())
    }

    fn launch(&mut self) -> Result<(), Error> {
        let run_dir = self.dir.path().join("run");
        self.make_owned_dir(&run_dir)?;
        self.port = free_port()?;
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} \
             -c wal_level=replica -c max_wal_senders=10 -c fsync=off \
             -c max_wal_size=64MB -c min_wal_size=32MB",
            self.port,
            run_dir.display()
        );
        let data = self.data.clone();
        let log = self.log_file();
        let mut cmd = self.server_command(
            "pg_ctl",
            &[
                OsStr::new("start"),
                OsStr::new("-w"),
                OsStr::new("-t"),
                OsStr::new("120"),
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-l"),
                log.as_os_str(),
                OsStr::new("-o"),
                OsStr::new(&options),
            ],
        );
        if let Err(error) = run(&mut cmd) {
            let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
            return Err(Error::Command {
                program: "pg_ctl start".into(),
                status: error.to_string(),
                stderr: log,
            });
        }
        self.stopped = false;
        // `pg_ctl -w` waits for the socket; also wait until TCP queries work.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match self.psql("SELECT 1") {
                Ok(out) if out == "1" => return Ok(()),
                result => {
                    if std::time::Instant::now() > deadline {
                        return Err(Error::Timeout(format!(
                            "PostgreSQL on port {} does not answer: {result:?}",
                            self.port
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// A directory the server user can write (owned by it when running as root).
    fn make_owned_dir(&self, dir: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(Error::io(format!("chmod {}", dir.display())))?;
        if let Some(user) = &self.run_as {
            user.chown_tree(dir)?;
        }
        Ok(())
    }

    fn server_command(&self, program: &str, args: &[&OsStr]) -> Command {
        let program = self.bin.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => user.command(&program, args),
            None => {
                let mut cmd = Command::new(&program);
                cmd.args(args);
                cmd
            }
        };
        // The server user may not be able to read the test's working directory.
        cmd.current_dir(self.dir.path());
        cmd
    }

    fn client_program(&self, name: &str) -> Result<PathBuf, Error> {
        let beside = self.bin.join(name);
        if beside.is_file() {
            return Ok(beside);
        }
        on_path(name).ok_or_else(|| Error::missing(name))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("stopping PostgreSQL on port {}: {error}", self.port);
        }
    }
}

/// The directory holding initdb, pg_ctl and postgres: where `initdb` on PATH really lives, else
/// the newest `/usr/lib/postgresql/<version>/bin`.
pub fn server_bin_dir() -> Result<PathBuf, Error> {
    let has_all =
        |dir: &Path| ["initdb", "pg_ctl", "postgres"].iter().all(|p| dir.join(p).is_file());
    if let Some(initdb) = on_path("initdb")
        && let Ok(real) = std::fs::canonicalize(&initdb)
        && let Some(dir) = real.parent()
        && has_all(dir)
    {
        return Ok(dir.to_path_buf());
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let dir = e.path().join("bin");
            has_all(&dir).then_some((version, dir))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir).ok_or_else(|| Error::Missing {
        tool: "PostgreSQL (initdb, pg_ctl, postgres)".into(),
        looked: "on PATH and in /usr/lib/postgresql/*/bin".into(),
    })
}

/// A scratch directory the server user can traverse, and that user when running as root.
fn scratch() -> Result<(tempfile::TempDir, Option<RunAs>), Error> {
    let dir = tempfile::Builder::new()
        .prefix("holdfast-pg-")
        .tempdir()
        .map_err(Error::io("create a temporary directory"))?;
    let run_as = if is_root() { Some(RunAs::find()?) } else { None };
    // The temp dir is 0700 root-owned; the server user must be able to enter it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(Error::io(format!("chmod {}", dir.path().display())))?;
    Ok((dir, run_as))
}
