//! `repo check`: verify the repository's structure, and with `--read-data` every byte.

use clap::Args;
use holdfast_repository::check::{self, CheckOptions, ReadSubset};

use super::{RepoArgs, print_json};

#[derive(Args, Debug)]
pub(super) struct CheckCmd {
    /// Also download and verify every pack.
    #[arg(long)]
    read_data: bool,
    /// Read only a subset of the packs: `n/t` (the n-th of t groups), `x%` (random), or a size
    /// like `500M` (random packs up to that much).
    #[arg(long)]
    read_data_subset: Option<ReadSubset>,
}

impl CheckCmd {
    pub(super) fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        let repo = args.open_unindexed()?;
        let (progress, bar) = args.progress_bar("check");
        let r = check::check(
            &repo,
            &CheckOptions {
                read_data: self.read_data,
                read_data_subset: self.read_data_subset,
                progress,
                ..Default::default()
            },
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
                if self.read_data || self.read_data_subset.is_some() {
                    format!(", {} packs and {} blobs read", r.packs_read, r.blobs_read)
                } else {
                    String::new()
                }
            );
        }
        r.into_result()?;
        if !args.json {
            println!("no errors were found");
        }
        Ok(())
    }
}
