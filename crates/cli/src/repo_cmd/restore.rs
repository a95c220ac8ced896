//! `repo restore`: a snapshot into a directory.

use std::path::PathBuf;

use clap::Args;
use holdfast_repository::pattern::PatternSet;
use holdfast_repository::restore::{self, RestoreOptions};

use super::filter::FilterArgs;
use super::{RepoArgs, human, print_json};

#[derive(Args, Debug)]
pub(super) struct RestoreCmd {
    /// Snapshot id, prefix or `latest`.
    snapshot: String,
    /// Where to restore.
    #[arg(long)]
    target: PathBuf,
    /// Restore only what matches this pattern, keeping the snapshot's directories (repeatable;
    /// `/src/sub`, `*.conf`, `/src/**/*.rs`; paths as `snapshots` shows them work too).
    #[arg(long = "include", short = 'i')]
    includes: Vec<String>,
    /// Like --include, ignoring case.
    #[arg(long = "iinclude")]
    iincludes: Vec<String>,
    /// Leave out what matches this pattern (repeatable).
    #[arg(long = "exclude", short = 'e')]
    excludes: Vec<String>,
    /// Like --exclude, ignoring case.
    #[arg(long = "iexclude")]
    iexcludes: Vec<String>,
    /// Read every restored file back and compare it with the snapshot.
    #[arg(long)]
    verify: bool,
    /// Leave holes for all-zero chunks.
    #[arg(long)]
    sparse: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

impl RestoreCmd {
    pub(super) fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        let repo = args.open()?;
        let snap = repo.find_snapshot_filtered(&self.snapshot, &self.filter.filter())?;
        let (progress, bar) = args.progress_bar("restore");
        let mut includes = PatternSet::default();
        let mut excludes = PatternSet::default();
        let paths = &snap.snapshot.paths;
        for (list, ci) in [(&self.includes, false), (&self.iincludes, true)] {
            for p in list {
                includes.add_in_snapshot(p, ci, paths)?;
            }
        }
        for (list, ci) in [(&self.excludes, false), (&self.iexcludes, true)] {
            for p in list {
                excludes.add_in_snapshot(p, ci, paths)?;
            }
        }
        let opts = RestoreOptions {
            sparse: self.sparse,
            includes,
            excludes,
            verify: self.verify,
            progress,
            xattrs: true,
            cancel: super::interrupt::cancel_on_signal(),
            ..Default::default()
        };
        let p = restore::restore(&repo, &snap.snapshot.tree, &self.target, &opts)?;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        if args.json {
            print_json(&p)?;
        } else {
            println!(
                "restored snapshot {} to {}: {} files, {}{}",
                snap.id.short(),
                self.target.display(),
                p.files_done,
                human(p.bytes_done),
                if self.verify { "; every file read back and verified" } else { "" }
            );
        }
        Ok(())
    }
}
