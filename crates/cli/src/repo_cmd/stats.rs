//! `repo stats`: repository or snapshot statistics; `--mode` counts as restic's modes do.

use clap::Args;
use holdfast_repository::stats::{self, StatsMode};

use super::filter::FilterArgs;
use super::{RepoArgs, human, print_json};

#[derive(Args, Debug)]
pub(super) struct StatsCmd {
    /// Only these snapshots (ids, prefixes or `latest`; default: all that pass the filters).
    snapshots: Vec<String>,
    /// restore-size, files-by-contents, raw-data or blobs-per-file (as restic counts them).
    #[arg(long)]
    mode: Option<StatsMode>,
    #[command(flatten)]
    filter: FilterArgs,
}

impl StatsCmd {
    pub(super) fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        let repo = args.open()?;
        let filter = self.filter.filter();
        if let Some(mode) = self.mode {
            let snaps = repo.select_snapshots(&self.snapshots, &filter)?;
            let s = stats::mode_stats(&repo, &snaps, mode)?;
            if args.json {
                return print_json(&s);
            }
            let name = serde_json::to_value(mode)?;
            println!("Stats in {} mode:", name.as_str().unwrap_or_default());
            println!("     Snapshots processed:  {}", s.snapshots_count);
            if let Some(n) = s.total_blob_count {
                println!("        Total Blob Count:  {n}");
            }
            if let Some(n) = s.total_file_count {
                println!("        Total File Count:  {n}");
            }
            println!("              Total Size:  {}", human(s.total_size));
            if let Some(n) = s.total_stored_size {
                println!("       Total Stored Size:  {}", human(n));
            }
            return Ok(());
        }
        let id = match self.snapshots.as_slice() {
            [] if filter.is_empty() => None,
            [] => Some(repo.find_snapshot_filtered("latest", &filter)?.id),
            [one] => Some(repo.find_snapshot_filtered(one, &filter)?.id),
            _ => anyhow::bail!("without --mode, stats takes at most one snapshot"),
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
