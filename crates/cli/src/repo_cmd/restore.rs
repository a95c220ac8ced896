//! `repo restore`: a snapshot into a directory.

use std::path::PathBuf;

use clap::Args;
use holdfast_repository::restore::{self, RestoreOptions};

use super::{RepoArgs, human, print_json};

#[derive(Args, Debug)]
pub(super) struct RestoreCmd {
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
}

impl RestoreCmd {
    pub(super) fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        let repo = args.open()?;
        let snap = repo.find_snapshot(&self.snapshot)?;
        let (progress, bar) = args.progress_bar("restore");
        let opts = RestoreOptions {
            sparse: self.sparse,
            include: self.include.clone(),
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
                "restored snapshot {} to {}: {} files, {}",
                snap.id.short(),
                self.target.display(),
                p.files_done,
                human(p.bytes_done)
            );
        }
        Ok(())
    }
}
