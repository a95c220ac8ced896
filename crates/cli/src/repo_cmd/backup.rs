//! `repo backup`: files and directories, or stdin, into a new snapshot.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use holdfast_repository::backup::{self, BackupOptions, ParentChoice};

use super::{IncompleteSnapshot, RepoArgs, human, print_json};

#[derive(Args, Debug)]
pub(super) struct BackupCmd {
    /// Paths to back up.
    paths: Vec<PathBuf>,
    /// Read the content from standard input.
    #[arg(long)]
    stdin: bool,
    /// File name to store stdin under.
    #[arg(long, default_value = "stdin")]
    stdin_filename: String,
    /// Tag the snapshot (`a,b` or repeated).
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
    /// Record this time instead of now: `2026-12-06 10:00:00` (local time) or RFC 3339
    /// (`2026-12-06T10:00:00Z`).
    #[arg(long, value_parser = parse_time)]
    time: Option<jiff::Timestamp>,
    /// Leave out paths matching this pattern (repeatable; `*.tmp`, `/srv/cache`, `logs/**/*.gz`).
    #[arg(long = "exclude", short = 'e')]
    excludes: Vec<String>,
    /// Like --exclude, ignoring case.
    #[arg(long = "iexclude")]
    iexcludes: Vec<String>,
    /// Read exclude patterns from a file, one per line (`#` starts a comment; repeatable).
    #[arg(long = "exclude-file")]
    exclude_files: Vec<PathBuf>,
    /// Leave out directories that contain an entry of this name (`CACHEDIR.TAG`; repeatable).
    #[arg(long = "exclude-if-present")]
    exclude_if_present: Vec<String>,
    /// Leave out files larger than this (`500M`, `2G`, or bytes).
    #[arg(long, value_parser = parse_size)]
    exclude_larger_than: Option<u64>,
    /// Do not cross into other file systems (their mount points are kept, empty).
    #[arg(long, short = 'x')]
    one_file_system: bool,
    /// Read and chunk everything, report what would be added, write nothing.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Read the paths to back up from a file, one per line (repeatable).
    #[arg(long = "files-from")]
    files_from: Vec<PathBuf>,
}

/// `500M`, `2G`, `1024` → bytes (binary units, as restic).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                'B' => 1,
                _ => return Err(format!("{s:?}: unknown unit {c:?} (use K, M, G or T)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size like 500M"))
}

/// A snapshot time as restic's `--time` takes it (local time), or RFC 3339 with an offset.
pub(crate) fn parse_time(s: &str) -> Result<jiff::Timestamp, String> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    s.parse::<jiff::civil::DateTime>()
        .map_err(|e| format!("{s:?} is not a time like \"2026-12-06 10:00:00\": {e}"))?
        .to_zoned(jiff::tz::TimeZone::system())
        .map(|z| z.timestamp())
        .map_err(|e| format!("{s:?} does not exist in the local time zone: {e}"))
}

impl BackupCmd {
    pub(super) fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        let repo = args.open()?;
        let (progress, bar) = args.progress_bar("backup");
        let mut opts = BackupOptions::new();
        opts.tags = self
            .tags
            .iter()
            .flat_map(|t| t.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        opts.hostname = self.host.clone();
        opts.time = self.time;
        opts.dry_run = self.dry_run;
        opts.progress = progress;
        opts.cancel = super::interrupt::cancel_on_signal();
        for p in &self.excludes {
            opts.excludes.add_pattern(p, false)?;
        }
        for p in &self.iexcludes {
            opts.excludes.add_pattern(p, true)?;
        }
        for f in &self.exclude_files {
            opts.excludes.add_file(f, false)?;
        }
        opts.excludes.if_present.clone_from(&self.exclude_if_present);
        opts.excludes.larger_than = self.exclude_larger_than;
        opts.excludes.one_file_system = self.one_file_system;
        let mut paths = self.paths.clone();
        for f in &self.files_from {
            let text = std::fs::read_to_string(f)
                .map_err(|e| anyhow::anyhow!("reading --files-from {}: {e}", f.display()))?;
            paths.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(PathBuf::from),
            );
        }
        opts.parent = match (self.force, &self.parent) {
            (true, _) => ParentChoice::None,
            (false, Some(p)) => ParentChoice::Snapshot(p.clone()),
            (false, None) => ParentChoice::Auto,
        };
        let r = if self.stdin {
            if !paths.is_empty() {
                bail!("--stdin takes no paths");
            }
            let stdin = super::interrupt::CancellableStdin::new(opts.cancel.clone());
            backup::backup_reader(&repo, stdin, &self.stdin_filename, &opts)?
        } else {
            if paths.is_empty() {
                bail!("nothing to back up: give paths, --files-from or --stdin");
            }
            backup::backup_paths(&repo, &paths, &opts)?
        };
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        for w in &r.warnings {
            eprintln!("warning: {}", w.replace('\n', " "));
        }
        if args.json && self.dry_run {
            print_json(&serde_json::json!({
                "dry_run": true,
                "summary": r.snapshot.summary,
                "warnings": r.warnings,
            }))?;
        } else if args.json {
            print_json(&serde_json::json!({
                "snapshot_id": r.id.to_hex(),
                "summary": r.snapshot.summary,
                "warnings": r.warnings,
            }))?;
        } else {
            let s = &r.snapshot.summary;
            println!(
                "Files: {} new, {} changed, {} unmodified\n{} to the repository: {} ({} stored)\nprocessed {} files, {}{}",
                s.files_new,
                s.files_changed,
                s.files_unmodified,
                if self.dry_run { "Would add" } else { "Added" },
                human(s.data_added),
                human(s.data_added_packed),
                s.total_files_processed,
                human(s.total_bytes_processed),
                if self.dry_run {
                    String::new()
                } else {
                    format!("\nsnapshot {} saved", r.id.short())
                }
            );
        }
        if !r.warnings.is_empty() && !self.dry_run {
            return Err(
                IncompleteSnapshot { snapshot: r.id.short(), skipped: r.warnings.len() }.into()
            );
        }
        Ok(())
    }
}
