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
    /// Record this time instead of now: `2026-12-06 10:00:00` (local time) or RFC 3339
    /// (`2026-12-06T10:00:00Z`).
    #[arg(long, value_parser = parse_time)]
    time: Option<jiff::Timestamp>,
}

/// A snapshot time as restic's `--time` takes it (local time), or RFC 3339 with an offset.
fn parse_time(s: &str) -> Result<jiff::Timestamp, String> {
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
        opts.tags = self.tags.clone();
        opts.hostname = self.host.clone();
        opts.time = self.time;
        opts.progress = progress;
        opts.parent = match (self.force, &self.parent) {
            (true, _) => ParentChoice::None,
            (false, Some(p)) => ParentChoice::Snapshot(p.clone()),
            (false, None) => ParentChoice::Auto,
        };
        let r = if self.stdin {
            if !self.paths.is_empty() {
                bail!("--stdin takes no paths");
            }
            backup::backup_reader(&repo, std::io::stdin().lock(), &self.stdin_filename, &opts)?
        } else {
            backup::backup_paths(&repo, &self.paths, &opts)?
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
            return Err(
                IncompleteSnapshot { snapshot: r.id.short(), skipped: r.warnings.len() }.into()
            );
        }
        Ok(())
    }
}
