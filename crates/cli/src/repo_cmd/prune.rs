//! `repo prune`: free space under an exclusive lock (mark unused packs, delete those marked at
//! least the safety delay ago: at once by default).

use clap::Args;
use holdfast_repository::prune::{self, PruneOptions, PruneReport};

use super::{RepoArgs, human, print_json};

#[derive(Args, Debug)]
pub(super) struct PruneCmd {
    /// Age a mark must reach before its packs are deleted. The lock makes `0s` safe; a delay
    /// keeps unused data (for undoing a `forget`) for longer.
    #[arg(long, default_value = "0s")]
    safety_delay: humantime::Duration,
    /// Only report.
    #[arg(long)]
    dry_run: bool,
    /// Unused space tolerated inside partly used packs, in percent of the repository
    /// (`5%`); above it the emptiest packs are repacked. `100%` never repacks.
    #[arg(long, default_value = "5%", value_parser = parse_percent)]
    max_unused: f64,
}

impl PruneCmd {
    pub(super) fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        let repo = args.open()?;
        let r = prune::prune(
            &repo,
            &PruneOptions {
                safety_delay: self.safety_delay.into(),
                dry_run: self.dry_run,
                max_unused: self.max_unused,
            },
        )?;
        report(args, &r)
    }
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

/// Prints what a prune did (also after `forget --prune`).
pub(super) fn report(args: &RepoArgs, r: &PruneReport) -> anyhow::Result<()> {
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
