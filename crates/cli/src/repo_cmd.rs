//! `holdfast repo …`: the repository CLI, in restic's conventions.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use holdfast_repository::backend::Backend;
use holdfast_repository::backend::object::{ObjectStoreBackend, S3Options};
use holdfast_repository::backend::retry::RetryBackend;
use holdfast_repository::backup::{self, BackupOptions, ParentChoice};
use holdfast_repository::check::{self, CheckOptions};
use holdfast_repository::crypto::KdfParams;
use holdfast_repository::forget::{self, KeepPolicy};
use holdfast_repository::progress::{Progress, ProgressFn};
use holdfast_repository::prune::{self, PruneOptions};
use holdfast_repository::restore::{self, RestoreOptions};
use holdfast_repository::stats;
use holdfast_repository::tree::NodeType;
use holdfast_repository::{InitOptions, Repository};

/// Global repository options and the subcommand.
#[derive(Args, Debug)]
pub struct RepoArgs {
    /// Repository location: a directory (`/srv/repo`) or `s3://bucket/prefix`.
    #[arg(long = "repo", short = 'r', env = "HOLDFAST_REPOSITORY", global = true)]
    repo: Option<String>,
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
    #[command(subcommand)]
    command: RepoCommand,
}

#[derive(Subcommand, Debug)]
enum RepoCommand {
    /// Create a new repository.
    Init {
        /// Target pack size in MiB.
        #[arg(long, default_value_t = 32)]
        pack_size_mib: u32,
        /// Average chunk size in KiB (min is half, max eight times).
        #[arg(long, default_value_t = 1024)]
        chunk_avg_kib: u32,
    },
    /// Back up files and directories (or stdin) into a new snapshot.
    Backup {
        /// Paths to back up.
        paths: Vec<PathBuf>,
        /// Read the content from standard input.
        #[arg(long)]
        stdin: bool,
        /// File name to store stdin under.
        #[arg(long, default_value = "stdin")]
        stdin_filename: String,
        /// Tag the snapshot (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Host name to record.
        #[arg(long)]
        host: Option<String>,
        /// Parent snapshot for change detection (default: latest with the same host and paths).
        #[arg(long)]
        parent: Option<String>,
        /// Read every file, ignoring any parent.
        #[arg(long)]
        force: bool,
    },
    /// Restore a snapshot into a directory.
    Restore {
        /// Snapshot id, prefix or `latest`.
        snapshot: String,
        /// Where to restore.
        #[arg(long)]
        target: PathBuf,
        /// Restore only this path of the snapshot.
        #[arg(long)]
        include: Option<String>,
        /// Leave holes for all-zero chunks.
        #[arg(long)]
        sparse: bool,
    },
    /// List snapshots.
    Snapshots,
    /// List the files of a snapshot.
    Ls {
        /// Snapshot id, prefix or `latest`.
        snapshot: String,
        /// Only entries under this path.
        path: Option<String>,
    },
    /// Print an object as JSON: config, snapshot ID, index ID, key ID, or a file's content (`cat file SNAPSHOT PATH`).
    Cat {
        /// config | snapshot | index | key | file
        kind: String,
        /// The object (and path, for `file`).
        args: Vec<String>,
    },
    /// Show what differs between two snapshots.
    Diff {
        /// First snapshot.
        a: String,
        /// Second snapshot.
        b: String,
    },
    /// Delete snapshots by retention rules.
    Forget {
        /// Snapshots to delete explicitly.
        snapshots: Vec<String>,
        #[arg(long, default_value_t = 0)]
        keep_last: usize,
        #[arg(long, default_value_t = 0)]
        keep_hourly: usize,
        #[arg(long, default_value_t = 0)]
        keep_daily: usize,
        #[arg(long, default_value_t = 0)]
        keep_weekly: usize,
        #[arg(long, default_value_t = 0)]
        keep_monthly: usize,
        #[arg(long, default_value_t = 0)]
        keep_yearly: usize,
        /// Keep snapshots newer than the latest minus this (`30d`, `2w`).
        #[arg(long)]
        keep_within: Option<humantime::Duration>,
        /// Keep snapshots with this tag.
        #[arg(long = "keep-tag")]
        keep_tags: Vec<String>,
        /// Only show what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Run prune afterwards.
        #[arg(long)]
        prune: bool,
    },
    /// Free space: mark unused packs, delete those marked more than the safety delay ago.
    Prune {
        /// Age a mark must reach before its packs are deleted.
        #[arg(long, default_value = "24h")]
        safety_delay: humantime::Duration,
        /// Only report.
        #[arg(long)]
        dry_run: bool,
        /// Unused space tolerated inside partly used packs, in percent of the repository
        /// (`5%`); above it the emptiest packs are repacked. `100%` never repacks.
        #[arg(long, default_value = "5%", value_parser = parse_percent)]
        max_unused: f64,
    },
    /// Verify the repository.
    Check {
        /// Also download and verify every pack.
        #[arg(long)]
        read_data: bool,
    },
    /// Repository or snapshot statistics.
    Stats {
        /// Limit to one snapshot.
        snapshot: Option<String>,
    },
    /// Manage passwords.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// List key files.
    List,
    /// Add a password (read from --new-password-file, HOLDFAST_NEW_PASSWORD or a prompt).
    Add {
        #[arg(long, env = "HOLDFAST_NEW_PASSWORD_FILE")]
        new_password_file: Option<PathBuf>,
    },
    /// Remove a key file by id or prefix.
    Remove {
        /// Key id.
        id: String,
    },
    /// Change the password of the key in use.
    Passwd {
        #[arg(long, env = "HOLDFAST_NEW_PASSWORD_FILE")]
        new_password_file: Option<PathBuf>,
    },
}

/// Runs a repo command; on failure prints one line and exits non-zero.
pub fn run(args: RepoArgs) -> anyhow::Result<()> {
    if let Err(e) = execute(args) {
        eprintln!("holdfast: {}", format!("{e:#}").replace('\n', " "));
        // restic's convention: 3 means the snapshot was saved but some entries were left out.
        let code = if e.downcast_ref::<IncompleteSnapshot>().is_some() { 3 } else { 1 };
        std::process::exit(code);
    }
    Ok(())
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

fn backend(args: &RepoArgs) -> anyhow::Result<Arc<dyn Backend>> {
    let Some(url) = &args.repo else {
        bail!("no repository given: use --repo or HOLDFAST_REPOSITORY");
    };
    let b = if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("repository URL {url} has no bucket");
        }
        ObjectStoreBackend::s3(&S3Options {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint: args.s3_endpoint.clone(),
            ..Default::default()
        })?
    } else {
        let path = std::path::Path::new(url.strip_prefix("file://").unwrap_or(url));
        // Only init may create the directory; anything else on a missing path is a typo.
        if !matches!(args.command, RepoCommand::Init { .. }) && !path.exists() {
            bail!("no repository at {}: the directory does not exist", path.display());
        }
        ObjectStoreBackend::local(path)?
    };
    Ok(Arc::new(RetryBackend::new(b, 3, Duration::from_millis(200))))
}

fn read_password_file(p: &std::path::Path) -> anyhow::Result<String> {
    let s = std::fs::read_to_string(p)
        .with_context(|| format!("reading password file {}", p.display()))?;
    Ok(s.lines().next().unwrap_or("").to_string())
}

fn password(args: &RepoArgs) -> anyhow::Result<String> {
    if let Some(p) = &args.password_file {
        return read_password_file(p);
    }
    if let Ok(p) = std::env::var("HOLDFAST_PASSWORD") {
        return Ok(p);
    }
    rpassword::prompt_password("repository password: ")
        .context("no password: use --password-file, HOLDFAST_PASSWORD or a terminal")
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

fn open(args: &RepoArgs) -> anyhow::Result<Repository> {
    let b = backend(args)?;
    Ok(Repository::open(b, password(args)?.as_bytes())?)
}

/// A progress bar on a terminal, nothing otherwise.
fn progress_bar(
    args: &RepoArgs,
    what: &'static str,
) -> (Option<ProgressFn>, Option<indicatif::ProgressBar>) {
    if args.json || args.quiet || !std::io::stderr().is_terminal() {
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

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn human(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

fn execute(args: RepoArgs) -> anyhow::Result<()> {
    match &args.command {
        RepoCommand::Init { pack_size_mib, chunk_avg_kib } => {
            let b = backend(&args)?;
            let pw = match &args.password_file {
                Some(_) => password(&args)?,
                None => match std::env::var("HOLDFAST_PASSWORD") {
                    Ok(p) => p,
                    Err(_) => new_password(&None)?,
                },
            };
            if pw.is_empty() {
                bail!("an empty password is not allowed");
            }
            let avg = chunk_avg_kib * 1024;
            let opts = InitOptions {
                pack_size: pack_size_mib.saturating_mul(1024 * 1024),
                chunker: holdfast_repository::config::ChunkerParams {
                    min_size: avg / 2,
                    avg_size: avg,
                    max_size: avg.saturating_mul(8),
                    ..Default::default()
                },
                ..Default::default()
            };
            let repo = Repository::init(b, pw.as_bytes(), &opts)?;
            if args.json {
                print_json(
                    &serde_json::json!({"id": repo.config().id, "location": repo.backend().location()}),
                )?;
            } else {
                println!(
                    "created repository {} at {}",
                    &repo.config().id[..10],
                    repo.backend().location()
                );
            }
        }
        RepoCommand::Backup { paths, stdin, stdin_filename, tags, host, parent, force } => {
            let repo = open(&args)?;
            let (progress, bar) = progress_bar(&args, "backup");
            let mut opts = BackupOptions::new();
            opts.tags = tags.clone();
            opts.hostname = host.clone();
            opts.progress = progress;
            opts.parent = match (force, parent) {
                (true, _) => ParentChoice::None,
                (false, Some(p)) => ParentChoice::Snapshot(p.clone()),
                (false, None) => ParentChoice::Auto,
            };
            let r = if *stdin {
                if !paths.is_empty() {
                    bail!("--stdin takes no paths");
                }
                backup::backup_reader(&repo, std::io::stdin().lock(), stdin_filename, &opts)?
            } else {
                backup::backup_paths(&repo, paths, &opts)?
            };
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            for w in &r.warnings {
                eprintln!("warning: {}", w.replace('\n', " "));
            }
            if args.json {
                print_json(&serde_json::json!({
                    "snapshot_id": r.id.to_hex(),
                    "summary": r.snapshot.summary,
                    "warnings": r.warnings,
                }))?;
            } else {
                let s = &r.snapshot.summary;
                println!(
                    "Files: {} new, {} changed, {} unmodified\nAdded to the repository: {} ({} stored)\nprocessed {} files, {}\nsnapshot {} saved",
                    s.files_new,
                    s.files_changed,
                    s.files_unmodified,
                    human(s.data_added),
                    human(s.data_added_packed),
                    s.total_files_processed,
                    human(s.total_bytes_processed),
                    r.id.short()
                );
            }
            if !r.warnings.is_empty() {
                return Err(IncompleteSnapshot {
                    snapshot: r.id.short(),
                    skipped: r.warnings.len(),
                }
                .into());
            }
        }
        RepoCommand::Restore { snapshot, target, include, sparse } => {
            let repo = open(&args)?;
            let snap = repo.find_snapshot(snapshot)?;
            let (progress, bar) = progress_bar(&args, "restore");
            let opts = RestoreOptions {
                sparse: *sparse,
                include: include.clone(),
                progress,
                xattrs: true,
                ..Default::default()
            };
            let p = restore::restore(&repo, &snap.snapshot.tree, target, &opts)?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            if args.json {
                print_json(&p)?;
            } else {
                println!(
                    "restored snapshot {} to {}: {} files, {}",
                    snap.id.short(),
                    target.display(),
                    p.files_done,
                    human(p.bytes_done)
                );
            }
        }
        RepoCommand::Snapshots => {
            let repo = open(&args)?;
            let snaps = repo.snapshots()?;
            if args.json {
                let v: Vec<_> = snaps
                    .iter()
                    .map(|s| serde_json::json!({"id": s.id.to_hex(), "snapshot": s.snapshot}))
                    .collect();
                print_json(&v)?;
            } else {
                println!("{:<10} {:<20} {:<16} {:<16} paths", "ID", "time", "host", "tags");
                for s in &snaps {
                    let t = s.snapshot.time.strftime("%Y-%m-%d %H:%M:%S").to_string();
                    println!(
                        "{:<10} {:<20} {:<16} {:<16} {}",
                        s.id.short(),
                        t,
                        s.snapshot.hostname,
                        s.snapshot.tags.join(","),
                        s.snapshot.paths.join(" ")
                    );
                }
                println!("{} snapshots", snaps.len());
            }
        }
        RepoCommand::Ls { snapshot, path } => {
            let repo = open(&args)?;
            let snap = repo.find_snapshot(snapshot)?;
            let prefix = path.clone().unwrap_or_default();
            let entries: Vec<_> = stats::ls(&repo, &snap.snapshot.tree)?
                .into_iter()
                .filter(|e| {
                    prefix.is_empty()
                        || e.path == prefix
                        || e.path.starts_with(&format!("{}/", prefix.trim_end_matches('/')))
                })
                .collect();
            if args.json {
                print_json(&entries)?;
            } else {
                for e in entries {
                    let kind = match e.node_type {
                        NodeType::Dir => 'd',
                        NodeType::Symlink => 'l',
                        NodeType::File => '-',
                        _ => '?',
                    };
                    println!(
                        "{kind}{:04o} {:>5} {:>5} {:>12} {}",
                        e.mode, e.uid, e.gid, e.size, e.path
                    );
                }
            }
        }
        RepoCommand::Cat { kind, args: rest } => {
            let repo = open(&args)?;
            let arg = |i: usize| {
                rest.get(i).cloned().ok_or_else(|| anyhow::anyhow!("cat {kind}: missing argument"))
            };
            match kind.as_str() {
                "config" => print_json(repo.config())?,
                "snapshot" => {
                    let s = repo.find_snapshot(&arg(0)?)?;
                    print_json(&s.snapshot)?;
                }
                "index" => print_json(&repo.load_index_file(&arg(0)?.parse()?)?)?,
                "key" => {
                    let k = arg(0)?;
                    let key = repo
                        .keys()?
                        .into_iter()
                        .find(|x| x.name.starts_with(&k))
                        .ok_or_else(|| anyhow::anyhow!("no key {k}"))?;
                    print_json(&key.key)?;
                }
                "file" => {
                    let s = repo.find_snapshot(&arg(0)?)?;
                    let node = repo.find_node(&s.snapshot.tree, &arg(1)?)?;
                    restore::dump(&repo, &node, &mut std::io::stdout().lock())?;
                }
                other => {
                    bail!("cat: unknown object kind {other:?} (config, snapshot, index, key, file)")
                }
            }
        }
        RepoCommand::Diff { a, b } => {
            let repo = open(&args)?;
            let (sa, sb) = (repo.find_snapshot(a)?, repo.find_snapshot(b)?);
            let d = stats::diff(&repo, &sa.snapshot.tree, &sb.snapshot.tree)?;
            if args.json {
                print_json(&d)?;
            } else {
                for p in &d.added {
                    println!("+    {p}");
                }
                for p in &d.removed {
                    println!("-    {p}");
                }
                for p in &d.modified {
                    println!("M    {p}");
                }
                println!(
                    "{} added, {} removed, {} modified",
                    d.added.len(),
                    d.removed.len(),
                    d.modified.len()
                );
            }
        }
        RepoCommand::Forget {
            snapshots,
            keep_last,
            keep_hourly,
            keep_daily,
            keep_weekly,
            keep_monthly,
            keep_yearly,
            keep_within,
            keep_tags,
            dry_run,
            prune: then_prune,
        } => {
            let repo = open(&args)?;
            if !snapshots.is_empty() {
                let ids: Vec<_> = snapshots
                    .iter()
                    .map(|s| repo.find_snapshot(s).map(|e| e.id))
                    .collect::<Result<_, _>>()?;
                if !dry_run {
                    forget::remove_snapshots(&repo, &ids)?;
                }
                if args.json {
                    print_json(&ids.iter().map(|i| i.to_hex()).collect::<Vec<_>>())?;
                } else {
                    println!("removed {} snapshots", ids.len());
                }
            } else {
                let policy = KeepPolicy {
                    last: *keep_last,
                    hourly: *keep_hourly,
                    daily: *keep_daily,
                    weekly: *keep_weekly,
                    monthly: *keep_monthly,
                    yearly: *keep_yearly,
                    within: keep_within.map(Into::into),
                    tags: keep_tags.clone(),
                };
                let groups = forget::forget(&repo, &policy, *dry_run)?;
                if args.json {
                    print_json(&groups)?;
                } else {
                    for g in &groups {
                        println!(
                            "host {} paths {}: keep {}, remove {}",
                            g.hostname,
                            g.paths.join(" "),
                            g.keep.len(),
                            g.remove.len()
                        );
                        for id in &g.remove {
                            println!("  remove {}", id.short());
                        }
                    }
                }
            }
            if *then_prune && !dry_run {
                let r = prune::prune(&repo, &PruneOptions::default())?;
                report_prune(&args, &r)?;
            }
        }
        RepoCommand::Prune { safety_delay, dry_run, max_unused } => {
            let repo = open(&args)?;
            let r = prune::prune(
                &repo,
                &PruneOptions {
                    safety_delay: (*safety_delay).into(),
                    dry_run: *dry_run,
                    max_unused: *max_unused,
                },
            )?;
            report_prune(&args, &r)?;
        }
        RepoCommand::Check { read_data } => {
            let repo = open(&args)?;
            let (progress, bar) = progress_bar(&args, "check");
            let r = check::check(
                &repo,
                &CheckOptions { read_data: *read_data, progress, ..Default::default() },
            )?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            if args.json {
                print_json(&r)?;
            } else {
                for w in &r.warnings {
                    eprintln!("warning: {w}");
                }
                for e in &r.errors {
                    eprintln!("error: {e}");
                }
                println!(
                    "{} snapshots, {} packs, {} trees checked{}",
                    r.snapshots,
                    r.packs,
                    r.trees,
                    if *read_data {
                        format!(", {} blobs read", r.blobs_read)
                    } else {
                        String::new()
                    }
                );
            }
            r.into_result()?;
            if !args.json {
                println!("no errors were found");
            }
        }
        RepoCommand::Stats { snapshot } => {
            let repo = open(&args)?;
            let id = match snapshot {
                Some(s) => Some(repo.find_snapshot(s)?.id),
                None => None,
            };
            let s = stats::stats(&repo, id.as_ref())?;
            if args.json {
                print_json(&s)?;
            } else {
                println!(
                    "snapshots: {}\nfiles: {}\nrestore size: {}\nunique data: {}\nstored in {} packs: {}\nblobs: {}",
                    s.snapshots,
                    s.total_files,
                    human(s.total_restore_size),
                    human(s.unique_data_bytes),
                    s.packs,
                    human(s.pack_bytes),
                    s.blobs
                );
            }
        }
        RepoCommand::Key { command } => {
            let mut repo = open(&args)?;
            match command {
                KeyCommand::List => {
                    let keys = repo.keys()?;
                    if args.json {
                        let v: Vec<_> = keys.iter().map(|k| serde_json::json!({"id": k.name, "current": k.current, "key": k.key})).collect();
                        print_json(&v)?;
                    } else {
                        for k in keys {
                            println!(
                                "{}{:<10} {:<16} {:<12} {}",
                                if k.current { "*" } else { " " },
                                &k.name[..8],
                                k.key.hostname,
                                k.key.username,
                                k.key.created
                            );
                        }
                    }
                }
                KeyCommand::Add { new_password_file } => {
                    let pw = new_password(new_password_file)?;
                    let name = repo.add_key(pw.as_bytes(), KdfParams::default())?;
                    println!("added key {}", &name[..8]);
                }
                KeyCommand::Remove { id } => {
                    let name = repo.remove_key(id)?;
                    println!("removed key {}", &name[..8]);
                }
                KeyCommand::Passwd { new_password_file } => {
                    let pw = new_password(new_password_file)?;
                    let name = repo.change_password(pw.as_bytes(), KdfParams::default())?;
                    println!("password changed; new key {}", &name[..8]);
                }
            }
        }
    }
    Ok(())
}

/// `5%` or `5` → 0.05.
fn parse_percent(s: &str) -> Result<f64, String> {
    let n: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage (like 5%)"))?;
    if (0.0..=100.0).contains(&n) { Ok(n / 100.0) } else { Err(format!("{s} is outside 0%..100%")) }
}

fn report_prune(args: &RepoArgs, r: &prune::PruneReport) -> anyhow::Result<()> {
    if args.json {
        return print_json(r);
    }
    println!(
        "marked {} packs ({}, {} of them repacked into {} new); deleted {} packs ({}); {} re-indexed; {} plans waiting for the safety delay",
        r.marked_packs,
        human(r.marked_bytes),
        r.repacked_packs,
        r.new_packs,
        r.deleted_packs,
        human(r.deleted_bytes),
        r.resurrected_packs,
        r.pending_plans
    );
    if r.stale_staged_files > 0 {
        println!("removed {} staged pack files left by interrupted backups", r.stale_staged_files);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
