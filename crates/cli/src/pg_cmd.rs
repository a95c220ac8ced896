//! `holdfast pg …`: PostgreSQL backup and recovery for a DBA, without YAML. Base backups connect
//! as `pg_basebackup` does (`-h/-p/-U` and libpq's environment); `wal-push` and `wal-fetch` are
//! what `archive_command` and `restore_command` call; `restore` goes to a point in time, and
//! `recover` configures the same recovery on a base backup restored by other means.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use holdfast_postgres::base_backup::{self, BaseBackup};
use holdfast_postgres::recovery::{self, Target};
use holdfast_postgres::server::Connection;
use holdfast_postgres::tools::Tools;
use holdfast_postgres::wal_archive::{self, Fetched};
use holdfast_postgres::{Lsn, lsn::DEFAULT_SEGMENT_SIZE};
use holdfast_postgres::{wal_expiry, wal_stream};
use holdfast_repository::Repository;
use serde::Serialize;

use crate::repo_cmd::{RepoOptions, exit_on_error, human, print_json};

/// Global options and the subcommand.
#[derive(Args, Debug)]
pub struct PgArgs {
    #[command(flatten)]
    repo: RepoOptions,
    /// Directory of PostgreSQL's programs (else HOLDFAST_PG_BINDIR, PATH,
    /// /usr/lib/postgresql/*/bin).
    #[arg(long, global = true)]
    pg_bindir: Option<PathBuf>,
    #[command(subcommand)]
    command: PgCommand,
}

#[derive(Subcommand, Debug)]
enum PgCommand {
    /// Take a base backup of a running server into the repository.
    Backup(BackupCmd),
    /// List the base backups in the repository.
    Backups(BackupsCmd),
    /// Restore a base backup and configure recovery to a point in time (the latest by default).
    Restore(RestoreCmd),
    /// Configure point-in-time recovery on a data directory a base backup was already restored
    /// into by other means (the WAL from the archive, recovery.signal, the target).
    Recover(RecoverCmd),
    /// Archive WAL files (for `archive_command = 'holdfast pg wal-push … %p'`).
    WalPush(WalPushCmd),
    /// Fetch one archived WAL file (for `restore_command = 'holdfast pg wal-fetch … %f %p'`).
    WalFetch(WalFetchCmd),
    /// Stream WAL into the archive through a replication slot (no archive_command needed).
    WalStream(WalStreamCmd),
    /// The archived WAL.
    Wal(WalCmd),
}

/// Runs a pg command; on failure prints one line and exits non-zero.
pub fn run(args: PgArgs) -> anyhow::Result<()> {
    exit_on_error(execute(&args))
}

fn execute(args: &PgArgs) -> anyhow::Result<()> {
    let tools = Tools::new(args.pg_bindir.clone());
    match &args.command {
        PgCommand::Backup(c) => c.run(args, tools),
        PgCommand::Backups(c) => c.run(args),
        PgCommand::Restore(c) => c.run(args),
        PgCommand::Recover(c) => c.run(args),
        PgCommand::WalPush(c) => c.run(args),
        PgCommand::WalFetch(c) => c.run(args),
        PgCommand::WalStream(c) => c.run(args, tools),
        PgCommand::Wal(c) => c.run(args),
    }
}

/// Connection flags as pg_basebackup has them (`-h` is the host, so help is `--help` only).
#[derive(Args, Debug)]
struct ConnArgs {
    /// Database server host or socket directory (else PGHOST).
    #[arg(short = 'h', long)]
    host: Option<String>,
    /// Database server port (else PGPORT).
    #[arg(short = 'p', long)]
    port: Option<u16>,
    /// User name (else PGUSER); it needs the REPLICATION attribute. The password comes from
    /// PGPASSWORD or ~/.pgpass.
    #[arg(short = 'U', long)]
    username: Option<String>,
    /// Database for the queries around the backup (else PGDATABASE, else postgres).
    #[arg(short = 'd', long)]
    dbname: Option<String>,
}

impl ConnArgs {
    fn connection(&self) -> Connection {
        Connection {
            host: self.host.clone(),
            port: self.port,
            user: self.username.clone(),
            dbname: self.dbname.clone(),
            password: None,
        }
    }
}

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
struct BackupCmd {
    #[command(flatten)]
    conn: ConnArgs,
    /// Tag to add to the snapshot (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Pages per chunk of table and index files: 1 stores only the pages that changed since
    /// the last backup; more compress better and make a smaller index.
    #[arg(long, default_value_t = base_backup::DEFAULT_PAGES_PER_CHUNK)]
    pages_per_chunk: usize,
    /// Where the WAL that makes the backup consistent is kept: `fetch`, inside the backup (it
    /// restores on its own); `archive`, in this repository's WAL archive, which the cluster must
    /// fill (`archive_command` running `holdfast pg wal-push`, or `holdfast pg wal-stream`): that
    /// WAL is stored once, and the backup is saved only once the archive holds it.
    #[arg(long, value_enum, default_value = "fetch")]
    wal: WalArg,
    /// With `--wal archive`: how long to wait for the archive to hold the backup's WAL.
    #[arg(long, default_value = "60s")]
    archive_timeout: humantime::Duration,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum WalArg {
    Fetch,
    Archive,
}

#[derive(Serialize)]
struct BackupReport<'a> {
    snapshot: String,
    #[serde(flatten)]
    backup: &'a BaseBackup,
    bytes_read: u64,
    files: u64,
    bytes_added: u64,
    bytes_stored: u64,
}

impl BackupCmd {
    fn run(&self, args: &PgArgs, tools: Tools) -> anyhow::Result<()> {
        let repo = args.repo.open()?;
        let (progress, bar) = args.repo.progress_bar("pg backup");
        let cancel = crate::repo_cmd::cancel_on_signal();
        let opts = base_backup::Options {
            connection: self.conn.connection(),
            tools,
            tags: self.tags.clone(),
            pages_per_chunk: self.pages_per_chunk,
            progress,
            cancel,
            wal: match self.wal {
                WalArg::Fetch => base_backup::WalSource::Inside,
                WalArg::Archive => {
                    base_backup::WalSource::Archive { timeout: self.archive_timeout.into() }
                }
            },
        };
        let result = base_backup::run(&repo, &opts);
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let (result, backup) = result?;
        let s = &result.snapshot.summary;
        let report = BackupReport {
            snapshot: result.id.to_hex(),
            backup: &backup,
            bytes_read: result.progress.bytes_done,
            files: result.progress.files_done,
            bytes_added: s.data_added,
            bytes_stored: s.data_added_packed,
        };
        if args.repo.json() {
            return print_json(&report);
        }
        println!(
            "base backup {} of PostgreSQL {} (system {}): {} in {} files, {} new ({} stored)",
            &report.snapshot[..8],
            backup.version,
            backup.system_identifier,
            human(report.bytes_read),
            report.files,
            human(report.bytes_added),
            human(report.bytes_stored),
        );
        println!(
            "timeline {}, WAL {} to {}, {} to {}",
            backup.timeline,
            backup.start_lsn,
            backup.finish_lsn,
            backup.start_time,
            backup.finish_time
        );
        Ok(())
    }
}

#[derive(Args, Debug)]
struct BackupsCmd {}

#[derive(Serialize)]
struct BackupsRow {
    snapshot: String,
    #[serde(flatten)]
    backup: BaseBackup,
}

impl BackupsCmd {
    fn run(&self, args: &PgArgs) -> anyhow::Result<()> {
        let repo = args.repo.open()?;
        let rows: Vec<BackupsRow> = recovery::base_backups(&repo)?
            .into_iter()
            .map(|(s, backup)| BackupsRow { snapshot: s.id.to_hex(), backup })
            .collect();
        if args.repo.json() {
            return print_json(&rows);
        }
        println!(
            "{:<10} {:<21} {:<8} {:<4} {:<14} {:<14} finished",
            "snapshot", "system", "version", "tli", "start lsn", "finish lsn"
        );
        for r in &rows {
            let b = &r.backup;
            println!(
                "{:<10} {:<21} {:<8} {:<4} {:<14} {:<14} {}",
                &r.snapshot[..8],
                b.system_identifier,
                b.version,
                b.timeline,
                b.start_lsn.to_string(),
                b.finish_lsn.to_string(),
                b.finish_time
            );
        }
        Ok(())
    }
}

/// Where recovery stops: one of these, or the latest point.
#[derive(Args, Debug)]
struct TargetArgs {
    /// Recover to this time (RFC 3339, `2026-12-07T06:30:00Z`): the state just before the first
    /// transaction that ended after it.
    #[arg(long, conflicts_with_all = ["to_lsn", "to_name"])]
    to_time: Option<String>,
    /// Recover to this WAL position (`0/3000060`).
    #[arg(long, conflicts_with = "to_name")]
    to_lsn: Option<String>,
    /// Recover to this restore point (`pg_create_restore_point`).
    #[arg(long)]
    to_name: Option<String>,
}

#[derive(Args, Debug)]
struct RestoreCmd {
    /// The data directory to create (must be empty or absent).
    #[arg(long, short = 'D')]
    pgdata: PathBuf,
    #[command(flatten)]
    target: TargetArgs,
    /// Which cluster, when the repository holds several.
    #[arg(long)]
    system_identifier: Option<u64>,
    /// Where to put the WAL recovery replays (default `<pgdata>.restore-wal`).
    #[arg(long)]
    wal_dir: Option<PathBuf>,
    /// Check and print the plan; write nothing.
    #[arg(long)]
    dry_run: bool,
}

impl TargetArgs {
    fn target(&self) -> anyhow::Result<Target> {
        if let Some(t) = &self.to_time {
            let t =
                crate::repo_cmd::parse_time(t).map_err(|e| anyhow::anyhow!("--to-time: {e}"))?;
            return Ok(Target::Time(t));
        }
        if let Some(l) = &self.to_lsn {
            return Ok(Target::Lsn(l.parse::<Lsn>().context("--to-lsn")?));
        }
        if let Some(n) = &self.to_name {
            if n.is_empty() {
                bail!("--to-name: the restore point name is empty");
            }
            return Ok(Target::Name(n.clone()));
        }
        Ok(Target::Latest)
    }
}

impl RestoreCmd {
    fn run(&self, args: &PgArgs) -> anyhow::Result<()> {
        let target = self.target.target()?;
        let repo = args.repo.open()?;
        let plan = recovery::plan(&repo, &target, self.system_identifier)?;
        if self.dry_run {
            if args.repo.json() {
                return print_json(&plan);
            }
            print_plan(&plan);
            return Ok(());
        }
        let (progress, bar) = args.repo.progress_bar("pg restore");
        let opts = recovery::Options {
            spool: self.wal_dir.clone(),
            progress,
            cancel: crate::repo_cmd::cancel_on_signal(),
        };
        let restored = recovery::execute(&repo, plan, &self.pgdata, &opts);
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let restored = restored?;
        if args.repo.json() {
            return print_json(&restored);
        }
        print_plan(&restored.plan);
        println!(
            "restored into {}, {} of WAL in {}",
            restored.pgdata.display(),
            human(restored.wal_bytes),
            restored.spool.display()
        );
        println!(
            "start the server (pg_ctl -D {} start): it replays to the target and promotes; the \
             WAL directory can go once it has",
            restored.pgdata.display()
        );
        Ok(())
    }
}

#[derive(Args, Debug)]
struct RecoverCmd {
    /// The data directory a base backup was restored into by other means (a pg_basebackup tar
    /// extracted), not started yet.
    #[arg(long, short = 'D')]
    pgdata: PathBuf,
    #[command(flatten)]
    target: TargetArgs,
    /// Where to put the WAL recovery replays (default `<pgdata>.restore-wal`).
    #[arg(long)]
    wal_dir: Option<PathBuf>,
    /// Check and print the plan; write nothing.
    #[arg(long)]
    dry_run: bool,
}

impl RecoverCmd {
    fn run(&self, args: &PgArgs) -> anyhow::Result<()> {
        let target = self.target.target()?;
        let repo = args.repo.open()?;
        let plan = recovery::plan_recover(&repo, &self.pgdata, &target, self.wal_dir.as_deref())?;
        if self.dry_run {
            if args.repo.json() {
                return print_json(&plan);
            }
            print_recover_plan(&plan);
            return Ok(());
        }
        let recovered = recovery::recover(&repo, plan, &crate::repo_cmd::cancel_on_signal())?;
        if args.repo.json() {
            return print_json(&recovered);
        }
        print_recover_plan(&recovered.plan);
        println!(
            "configured recovery in {}, {} of WAL in {}",
            recovered.plan.pgdata.display(),
            human(recovered.wal_bytes),
            recovered.plan.spool.display()
        );
        println!(
            "start the server (pg_ctl -D {} start): it replays to the target and promotes; the \
             WAL directory can go once it has",
            recovered.plan.pgdata.display()
        );
        Ok(())
    }
}

fn print_recover_plan(plan: &recovery::RecoverPlan) {
    println!(
        "base backup in {} (system {}, timeline {}, WAL from {}, consistent at {} by {})",
        plan.pgdata.display(),
        plan.system_identifier,
        plan.timeline,
        plan.start_lsn,
        plan.finish_lsn,
        plan.finish_from
    );
    println!("target: {}; replay reaches {}", plan.target, plan.reaches);
    println!(
        "WAL files from the archive, from {}: {} into {}",
        plan.archive_from,
        plan.wal.len(),
        plan.spool.display()
    );
}

fn print_plan(plan: &recovery::Plan) {
    let b = &plan.base;
    println!(
        "base backup {} (PostgreSQL {}, system {}, timeline {}, consistent at {} / {})",
        &plan.snapshot[..8],
        b.version,
        b.system_identifier,
        b.timeline,
        b.finish_lsn,
        b.finish_time
    );
    println!("target: {}; replay reaches {}", plan.target, plan.reaches);
    println!("WAL files from the archive: {}", plan.wal.len());
}

/// The cluster flags of wal-push and wal-fetch.
#[derive(Args, Debug)]
struct ClusterArgs {
    /// The data directory whose `global/pg_control` names the cluster (default: the working
    /// directory, where PostgreSQL runs archive_command and restore_command).
    #[arg(long, short = 'D')]
    pgdata: Option<PathBuf>,
    /// The cluster's system identifier, instead of reading it from the data directory.
    #[arg(long, conflicts_with = "pgdata")]
    system_identifier: Option<u64>,
}

impl ClusterArgs {
    fn system_identifier(&self) -> anyhow::Result<u64> {
        match self.system_identifier {
            Some(id) => Ok(id),
            None => Ok(wal_archive::system_identifier(self.pgdata.as_deref())?),
        }
    }
}

#[derive(Args, Debug)]
struct WalPushCmd {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// WAL files to archive (`%p`); several are archived in parallel.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

impl WalPushCmd {
    fn run(&self, args: &PgArgs) -> anyhow::Result<()> {
        let id = self.cluster.system_identifier()?;
        let repo = args.repo.open()?;
        let results = push_all(&repo, id, &self.files);
        let mut pushed = Vec::new();
        let mut first_error = None;
        for (file, r) in self.files.iter().zip(results) {
            match r {
                Ok(p) => pushed.push(p),
                Err(e) => {
                    let e = anyhow::Error::from(e).context(format!("{}", file.display()));
                    if first_error.is_none() {
                        first_error = Some(e);
                    } else {
                        eprintln!("holdfast: {e:#}");
                    }
                }
            }
        }
        if args.repo.json() {
            print_json(&pushed)?;
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Archives files on up to four threads: each waits mostly on the storage.
fn push_all(
    repo: &Repository,
    id: u64,
    files: &[PathBuf],
) -> Vec<Result<wal_archive::Pushed, holdfast_postgres::Error>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<_>>> =
        files.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..files.len().min(4) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(file) = files.get(i) else { break };
                    let r = wal_archive::push(repo, file, id);
                    *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner().unwrap_or_else(|e| e.into_inner()).unwrap_or_else(|| {
                Err(holdfast_postgres::Error::Invalid("not archived (worker stopped)".into()))
            })
        })
        .collect()
}

#[derive(Args, Debug)]
struct WalFetchCmd {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The WAL file name PostgreSQL asks for (`%f`).
    file: String,
    /// Where to write it (`%p`).
    dest: PathBuf,
}

impl WalFetchCmd {
    fn run(&self, args: &PgArgs) -> anyhow::Result<()> {
        let id = self.cluster.system_identifier()?;
        let repo = args.repo.open()?;
        match wal_archive::fetch(&repo, id, &self.file, &self.dest)? {
            Fetched::Written(_) => Ok(()),
            // PostgreSQL asks for files past the end of the archive as a matter of course; a
            // plain exit 1 (never 126+, which it takes as fatal) says "not there".
            Fetched::NotArchived => {
                eprintln!("holdfast: {} is not in the WAL archive", self.file);
                std::process::exit(1);
            }
        }
    }
}

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
struct WalStreamCmd {
    #[command(flatten)]
    conn: ConnArgs,
    /// The replication slot that keeps the server's WAL until it is streamed (created when
    /// missing).
    #[arg(long, default_value = "holdfast")]
    slot: String,
    /// Where the segment being received is kept until whole: durable storage, the same
    /// directory on every restart.
    #[arg(long)]
    spool: PathBuf,
    /// Stop after this long (`10m`) instead of at SIGINT/SIGTERM.
    #[arg(long)]
    duration: Option<humantime::Duration>,
    /// Keep KubeBlocks' backup-info JSON (`totalSize`, and `timeRange` once a transaction is
    /// archived) in this file, rewritten whenever the archive grows.
    #[arg(long)]
    info_file: Option<PathBuf>,
    /// Make the server switch WAL segments this often (`1m`) when it wrote WAL since the last
    /// switch, so committed WAL reaches the archive on a quiet server (needs permission to call
    /// pg_switch_wal(); a superuser has it).
    #[arg(long)]
    switch_interval: Option<humantime::Duration>,
    /// Expire the cluster's archived WAL older than its oldest base backup this often (`1h`),
    /// as `holdfast pg wal expire` does; skipped for a round while a base backup runs.
    #[arg(long)]
    expire_every: Option<humantime::Duration>,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

impl WalStreamCmd {
    fn run(&self, args: &PgArgs, tools: Tools) -> anyhow::Result<()> {
        let repo = args.repo.open()?;
        let opts = wal_stream::Options {
            connection: self.conn.connection(),
            tools,
            slot: self.slot.clone(),
            spool: self.spool.clone(),
            duration: self.duration.map(Into::into),
            info_file: self.info_file.clone(),
            switch_interval: self.switch_interval.map(Into::into),
            expire_every: self.expire_every.map(Into::into),
            cancel: crate::repo_cmd::cancel_on_signal(),
        };
        let streamed = match wal_stream::run(&repo, &opts) {
            Err(holdfast_postgres::Error::Repository(holdfast_repository::Error::Cancelled)) => {
                return Ok(());
            }
            other => other?,
        };
        if args.repo.json() {
            return print_json(&streamed);
        }
        println!(
            "archived {} WAL files ({}), expired {}; pg_receivewal started {} times",
            streamed.archived,
            human(streamed.bytes),
            streamed.expired,
            streamed.starts
        );
        Ok(())
    }
}

#[derive(Args, Debug)]
struct WalCmd {
    #[command(subcommand)]
    command: WalSub,
}

#[derive(Subcommand, Debug)]
enum WalSub {
    /// Show the archived range of each timeline and every gap.
    Status(WalStatusCmd),
    /// Delete the archived WAL older than the start of each cluster's oldest base backup.
    Expire(WalExpireCmd),
}

#[derive(Args, Debug)]
struct WalExpireCmd {
    /// Only this cluster (default: every cluster with WAL in the repository).
    #[arg(long)]
    system_identifier: Option<u64>,
    /// Show what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
}

impl WalExpireCmd {
    fn run(&self, args: &PgArgs) -> anyhow::Result<()> {
        let repo = args.repo.open()?;
        let opts = wal_expiry::Options {
            system_identifier: self.system_identifier,
            dry_run: self.dry_run,
        };
        let all = wal_expiry::expire(&repo, &opts)?;
        if args.repo.json() {
            return print_json(&all);
        }
        if all.is_empty() {
            println!("no WAL archived");
        }
        let verb = if self.dry_run { "would delete" } else { "deleted" };
        for e in &all {
            let id = e.system_identifier;
            if let Some(why) = &e.skipped {
                println!("system {id}: kept everything ({why})");
                continue;
            }
            let mut kept_from = Vec::new();
            if let (Some(first), Some(base)) = (&e.first_kept, &e.oldest_base_backup) {
                kept_from.push(format!("{first}, where base backup {base} starts"));
            }
            if let Some(held) = &e.held_back_by {
                kept_from.push(format!(
                    "what was archived later than an hour before {held} (not a base backup \
                     holdfast took, so it may need WAL)"
                ));
            }
            println!(
                "system {id}: {verb} {} WAL files ({}); {} kept from {}",
                e.deleted.len(),
                human(e.deleted_bytes),
                e.kept,
                kept_from.join(" and ")
            );
        }
        Ok(())
    }
}

#[derive(Args, Debug)]
struct WalStatusCmd {
    /// Only this cluster (default: every cluster with WAL in the repository).
    #[arg(long)]
    system_identifier: Option<u64>,
}

impl WalCmd {
    fn run(&self, args: &PgArgs) -> anyhow::Result<()> {
        match &self.command {
            WalSub::Status(c) => c.run(args),
            WalSub::Expire(c) => c.run(args),
        }
    }
}

impl WalStatusCmd {
    fn run(&self, args: &PgArgs) -> anyhow::Result<()> {
        let repo = args.repo.open()?;
        let ids = match self.system_identifier {
            Some(id) => vec![id],
            None => wal_archive::clusters(&repo)?,
        };
        let bases = recovery::base_backups(&repo)?;
        let mut all = Vec::new();
        for id in ids {
            let size = bases
                .iter()
                .rev()
                .find(|(_, b)| b.system_identifier == id)
                .map_or(DEFAULT_SEGMENT_SIZE, |(_, b)| b.wal_segment_size);
            all.push(wal_archive::status(&repo, id, size)?);
        }
        if args.repo.json() {
            return print_json(&all);
        }
        if all.is_empty() {
            println!("no WAL archived");
        }
        for st in &all {
            println!("system {}:", st.system_identifier);
            for t in &st.timelines {
                for r in &t.runs {
                    println!(
                        "  timeline {}: {} … {} ({} segments), WAL {} to {}{}",
                        t.timeline,
                        r.first,
                        r.last,
                        r.segments,
                        r.start_lsn,
                        r.end_lsn,
                        r.newest_transaction
                            .map(|x| format!(", newest transaction {x}"))
                            .unwrap_or_default()
                    );
                }
                for g in &t.gaps {
                    println!(
                        "  timeline {}: GAP: {} … {} missing ({} segments)",
                        t.timeline, g.first_missing, g.last_missing, g.segments
                    );
                }
                for p in &t.partial {
                    println!("  timeline {}: partial {p}", t.timeline);
                }
            }
        }
        Ok(())
    }
}
