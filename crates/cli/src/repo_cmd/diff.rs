//! `repo diff`: what differs between two snapshots.

use clap::Args;
use holdfast_repository::stats;

use super::{RepoArgs, print_json};

#[derive(Args, Debug)]
pub(super) struct DiffCmd {
    /// First snapshot.
    a: String,
    /// Second snapshot.
    b: String,
}

impl DiffCmd {
    pub(super) fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        let repo = args.open()?;
        let (sa, sb) = (repo.find_snapshot(&self.a)?, repo.find_snapshot(&self.b)?);
        let d = stats::diff(&repo, &sa.snapshot.tree, &sb.snapshot.tree)?;
        if args.json {
            return print_json(&d);
        }
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
        Ok(())
    }
}
