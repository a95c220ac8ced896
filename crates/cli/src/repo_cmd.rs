//! `holdfast repo …`: the repository CLI, in restic's conventions. Each subcommand is a module of
//! its own (as rustic lays out its commands); this one holds the global options and what the
//! subcommands share: the location, passwords, progress bars and output.

mod backup;
mod cat;
mod check;
mod copy;
mod diff;
mod dump;
mod filter;
mod find;
mod forget;
mod init;
mod interrupt;
mod key;
mod ls;
mod prune;
mod repair;
mod restore;
mod snapshots;
mod stats;
mod tag;
mod unlock;

pub(crate) use backup::parse_time;
pub(crate) use interrupt::cancel_on_signal;

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use holdfast_repository::Repository;
use holdfast_repository::location::Location;
use holdfast_repository::progress::{Progress, ProgressFn};

use crate::datasafed_cmd::config as datasafed_config;

/// Global repository options and the subcommand.
#[derive(Args, Debug)]
pub struct RepoArgs {
    #[command(flatten)]
    options: RepoOptions,
    #[command(subcommand)]
    command: RepoCommand,
}

/// The subcommands read the shared options straight off their arguments.
impl std::ops::Deref for RepoArgs {
    type Target = RepoOptions;

    fn deref(&self) -> &RepoOptions {
        &self.options
    }
}

/// Which repository, how to unlock it, and how to report: shared by `holdfast repo` and
/// `holdfast pg`.
#[derive(Args, Debug)]
pub struct RepoOptions {
    /// Repository location: a directory (`/srv/repo`) or `s3://bucket/prefix`.
    #[arg(long = "repo", short = 'r', env = "HOLDFAST_REPOSITORY", global = true)]
    repo: Option<String>,
    /// A datasafed config file (`/etc/datasafed/datasafed.conf`) naming the repository and its
    /// password, read as `holdfast datasafed` reads it (DATASAFED_LOCAL_BACKEND_PATH applies);
    /// instead of --repo.
    #[arg(long, env = "HOLDFAST_DATASAFED_CONFIG", global = true)]
    datasafed_config: Option<PathBuf>,
    /// File whose first line is the password (else HOLDFAST_PASSWORD, else a prompt).
    #[arg(long, env = "HOLDFAST_PASSWORD_FILE", global = true)]
    password_file: Option<PathBuf>,
    /// S3 endpoint URL for S3-compatible servers (else AWS_ENDPOINT_URL).
    #[arg(long, global = true)]
    s3_endpoint: Option<String>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Never draw progress bars.
    #[arg(long, global = true)]
    quiet: bool,
    /// Where S3 repositories' metadata is cached (default `$XDG_CACHE_HOME/holdfast`, else
    /// `~/.cache/holdfast`).
    #[arg(long, env = "HOLDFAST_CACHE_DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// Read all metadata from the repository, without the local cache.
    #[arg(long, global = true)]
    no_cache: bool,
    /// Wait up to this long for another process's conflicting lock (`5m`) instead of failing.
    #[arg(long, global = true, default_value = "0s")]
    retry_lock: humantime::Duration,
}

#[derive(Subcommand, Debug)]
enum RepoCommand {
    /// Create a new repository.
    Init(init::InitCmd),
    /// Back up files and directories (or stdin) into a new snapshot.
    Backup(backup::BackupCmd),
    /// Restore a snapshot into a directory.
    Restore(restore::RestoreCmd),
    /// List snapshots.
    Snapshots(snapshots::SnapshotsCmd),
    /// List the files of a snapshot.
    Ls(ls::LsCmd),
    /// Print an object as JSON: config, snapshot ID, index ID, key ID, or a file's content (`cat file SNAPSHOT PATH`).
    Cat(cat::CatCmd),
    /// Write a file of a snapshot to standard output, or a directory as a tar stream.
    Dump(dump::DumpCmd),
    /// Find entries of snapshots by name pattern, time, or blob or tree id.
    Find(find::FindCmd),
    /// Show what differs between two snapshots.
    Diff(diff::DiffCmd),
    /// Delete snapshots by retention rules.
    Forget(forget::ForgetCmd),
    /// Free space: delete packs no snapshot uses (waits for no other process to use the
    /// repository).
    Prune(prune::PruneCmd),
    /// Verify the repository.
    Check(check::CheckCmd),
    /// Repair a damaged repository.
    Repair(repair::RepairCmd),
    /// Repository or snapshot statistics.
    Stats(stats::StatsCmd),
    /// Add, remove or set the tags of snapshots.
    Tag(tag::TagCmd),
    /// Copy snapshots from another repository into this one.
    Copy(copy::CopyCmd),
    /// Manage passwords.
    Key(key::KeyCmd),
    /// Remove stale locks (left by processes that are gone).
    Unlock(unlock::UnlockCmd),
}

/// Runs a repo command; on failure prints one line and exits non-zero.
pub fn run(args: RepoArgs) -> anyhow::Result<()> {
    exit_on_error(execute(args))
}

/// Prints a failed command's one line and exits with restic's codes; passes success through.
pub(crate) fn exit_on_error(result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(e) = result {
        // The reader went away (`holdfast repo ls latest | head`): what it read was whole
        // lines, and there is nobody left to tell.
        if is_broken_pipe(&e) {
            std::process::exit(0);
        }
        eprintln!("holdfast: {}", format!("{e:#}").replace('\n', " "));
        // restic's conventions: 3 means the snapshot was saved but some entries were left out,
        // 130 that a signal stopped the command.
        let code = if e.downcast_ref::<IncompleteSnapshot>().is_some() {
            3
        } else if e.chain().any(|c| {
            matches!(
                c.downcast_ref::<holdfast_repository::Error>(),
                Some(holdfast_repository::Error::Cancelled)
            )
        }) {
            interrupt::EXIT_INTERRUPTED
        } else {
            1
        };
        std::process::exit(code);
    }
    Ok(())
}

fn execute(args: RepoArgs) -> anyhow::Result<()> {
    match &args.command {
        RepoCommand::Init(c) => c.run(&args),
        RepoCommand::Backup(c) => c.run(&args),
        RepoCommand::Restore(c) => c.run(&args),
        RepoCommand::Snapshots(c) => c.run(&args),
        RepoCommand::Ls(c) => c.run(&args),
        RepoCommand::Cat(c) => c.run(&args),
        RepoCommand::Diff(c) => c.run(&args),
        RepoCommand::Dump(c) => c.run(&args),
        RepoCommand::Find(c) => c.run(&args),
        RepoCommand::Forget(c) => c.run(&args),
        RepoCommand::Prune(c) => c.run(&args),
        RepoCommand::Check(c) => c.run(&args),
        RepoCommand::Repair(c) => c.run(&args),
        RepoCommand::Stats(c) => c.run(&args),
        RepoCommand::Tag(c) => c.run(&args),
        RepoCommand::Copy(c) => c.run(&args),
        RepoCommand::Key(c) => c.run(&args),
        RepoCommand::Unlock(c) => c.run(&args),
    }
}

/// A backup that saved its snapshot but had to leave unreadable entries out (exit code 3).
#[derive(Debug)]
struct IncompleteSnapshot {
    snapshot: String,
    skipped: usize,
}

impl std::fmt::Display for IncompleteSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "snapshot {} saved, but {} entries could not be read and were left out",
            self.snapshot, self.skipped
        )
    }
}

impl std::error::Error for IncompleteSnapshot {}

impl RepoOptions {
    /// Whether output is JSON.
    pub(crate) fn json(&self) -> bool {
        self.json
    }

    /// The repository location `--repo` or `--datasafed-config` names, with `--s3-endpoint`
    /// applied.
    fn location(&self) -> anyhow::Result<Location> {
        if let Some(conf) = &self.datasafed_config {
            if self.repo.is_some() {
                bail!(
                    "both --repo (or HOLDFAST_REPOSITORY) and --datasafed-config name a \
                     repository: give one"
                );
            }
            let mut location = datasafed_config::load(conf)?.location()?;
            // The config's endpoint stands unless one is asked for explicitly.
            if let (Location::S3(o), Some(endpoint)) = (&mut location, &self.s3_endpoint) {
                o.endpoint = Some(endpoint.clone());
            }
            return Ok(location);
        }
        let Some(url) = &self.repo else {
            bail!("no repository given: use --repo, HOLDFAST_REPOSITORY or --datasafed-config");
        };
        let mut location = Location::parse(url)?;
        if let Location::S3(o) = &mut location {
            o.endpoint.clone_from(&self.s3_endpoint);
        }
        Ok(location)
    }

    /// The existing repository (only `init` may create the directory; anything else on a
    /// missing path is a typo).
    pub(crate) fn open(&self) -> anyhow::Result<Repository> {
        self.open_with_cache(true)
    }

    /// The existing repository read without the metadata cache: for the repairs, which must
    /// see the repository's own objects (a cached copy would hide their damage).
    fn open_uncached(&self) -> anyhow::Result<Repository> {
        self.open_with_cache(false)
    }

    /// The existing repository without its index loaded, uncached: for `check` and `repair
    /// index`, which read the index files themselves (a damaged one is what they report or
    /// fix, and a second copy of a large index would double their memory).
    fn open_unindexed(&self) -> anyhow::Result<Repository> {
        let backend = self.location()?.open_existing()?;
        let repo = Repository::open_unindexed(backend, password(self)?.as_bytes())?;
        repo.set_lock_wait(self.retry_lock.into());
        Ok(repo)
    }

    fn open_with_cache(&self, cached: bool) -> anyhow::Result<Repository> {
        let location = self.location()?;
        let b = location.open_existing()?;
        let password = password(self)?;
        let root = if cached { self.cache_root(&location) } else { None };
        let repo = match root {
            Some(root) => Repository::open_cached(b, password.as_bytes(), &root)?,
            None => Repository::open(b, password.as_bytes())?,
        };
        repo.set_lock_wait(self.retry_lock.into());
        Ok(repo)
    }

    /// The metadata cache's root for `location`: S3 repositories only (a local repository is read
    /// as fast as a cache would be), none with `--no-cache`.
    fn cache_root(&self, location: &Location) -> Option<PathBuf> {
        if self.no_cache || !matches!(location, Location::S3(_)) {
            return None;
        }
        self.cache_dir.clone().or_else(|| {
            let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
            env("XDG_CACHE_HOME")
                .or_else(|| env("HOME").map(|h| h.join(".cache")))
                .map(|base| base.join("holdfast"))
        })
    }

    /// A progress bar on a terminal, nothing otherwise.
    pub(crate) fn progress_bar(
        &self,
        what: &'static str,
    ) -> (Option<ProgressFn>, Option<indicatif::ProgressBar>) {
        if self.json || self.quiet || !std::io::stderr().is_terminal() {
            return (None, None);
        }
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_prefix(what);
        let b = bar.clone();
        let f: ProgressFn = Arc::new(move |p: &Progress| {
            if p.totals_known {
                b.set_length(p.bytes_total);
            } else {
                b.set_length(p.bytes_total.max(p.bytes_done));
            }
            b.set_position(p.bytes_done);
            b.set_message(format!("{} files", p.files_done));
        });
        (Some(f), Some(bar))
    }
}

fn read_password_file(p: &std::path::Path) -> anyhow::Result<String> {
    let s = std::fs::read_to_string(p)
        .with_context(|| format!("reading password file {}", p.display()))?;
    Ok(s.lines().next().unwrap_or("").to_string())
}

fn password(args: &RepoOptions) -> anyhow::Result<String> {
    // A datasafed config carries its own password rules, so a Job given only the config finds
    // the password exactly where `holdfast datasafed` would.
    if let Some(conf) = &args.datasafed_config {
        // The config's rules read HOLDFAST_PASSWORD_FILE themselves (clap fills the option from
        // it too); a different file given as the flag would be silently ignored.
        let from_env = |p: &std::path::Path| {
            std::env::var_os("HOLDFAST_PASSWORD_FILE")
                .is_some_and(|v| std::path::Path::new(&v) == p)
        };
        if args.password_file.as_deref().is_some_and(|p| !from_env(p)) {
            bail!("both --password-file and --datasafed-config give the password: give one");
        }
        return datasafed_config::password(&datasafed_config::load(conf)?, conf);
    }
    secret(
        args.password_file.as_deref(),
        "HOLDFAST_PASSWORD",
        "repository password: ",
        "no password: use --password-file, HOLDFAST_PASSWORD or a terminal",
    )
}

/// A password from `file`, else the variable `env`, else a prompt; `missing` says what to do.
fn secret(
    file: Option<&std::path::Path>,
    env: &str,
    prompt: &str,
    missing: &'static str,
) -> anyhow::Result<String> {
    if let Some(p) = file {
        return read_password_file(p);
    }
    if let Ok(p) = std::env::var(env) {
        return Ok(p);
    }
    rpassword::prompt_password(prompt).context(missing)
}

fn new_password(file: &Option<PathBuf>) -> anyhow::Result<String> {
    if let Some(p) = file {
        return read_password_file(p);
    }
    if let Ok(p) = std::env::var("HOLDFAST_NEW_PASSWORD") {
        return Ok(p);
    }
    let a = rpassword::prompt_password("new password: ").context("no new password given")?;
    let b = rpassword::prompt_password("repeat new password: ").context("no new password given")?;
    if a != b {
        bail!("the passwords do not match");
    }
    Ok(a)
}

pub(crate) fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// Whether a command failed because its standard output was closed by the reader.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<serde_json::Error>()
                .and_then(|j| j.io_error_kind())
                .is_some_and(|k| k == std::io::ErrorKind::BrokenPipe)
    })
}

/// Writes to standard output and flushes (a closed pipe is an error `run` treats as the end).
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}

pub(crate) fn human(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

#[cfg(test)]
mod tests;
