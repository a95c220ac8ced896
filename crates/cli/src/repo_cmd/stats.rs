//! `repo stats`: repository or snapshot statistics.

use clap::Args;
use holdfast_repository::stats;

use super::{RepoArgs, human, print_json};

#[derive(Args, Debug)]
pub(super) struct StatsCmd {
    /// Limit to one snapshot.
    snapshot: Option<String>,
}

impl StatsCmd {
    pub(super) fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        let repo = args.open()?;
        let id = match &self.snapshot {
            Some(s) => Some(repo.find_snapshot(s)?.id),
            None => None,
        };
        let s = stats::stats(&repo, id.as_ref())?;
        if args.json {
            return print_json(&s);
        }
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
        Ok(())
    }
}
