//! `repo repair index`: rebuild the index from the packs' own headers.

use clap::{Args, Subcommand};
use holdfast_repository::Repository;
use holdfast_repository::repair::{self, RepairIndexOptions};

use super::{RepoArgs, password, print_json};

#[derive(Args, Debug)]
pub(super) struct RepairCmd {
    #[command(subcommand)]
    what: RepairWhat,
}

#[derive(Subcommand, Debug)]
enum RepairWhat {
    /// Rebuild the index from the pack headers (after an index file was lost or damaged).
    Index(IndexCmd),
}

#[derive(Args, Debug)]
struct IndexCmd {
    /// Read the header of every pack, not only of packs no readable index file describes.
    #[arg(long)]
    read_all_packs: bool,
    /// Only report what would change.
    #[arg(long)]
    dry_run: bool,
}

impl RepairCmd {
    pub(super) fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        match &self.what {
            RepairWhat::Index(c) => c.run(args),
        }
    }
}

impl IndexCmd {
    fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        // Without the index: a damaged index file is what this command is for.
        let backend = args.location()?.open_existing()?;
        let repo = Repository::open_unindexed(backend, password(args)?.as_bytes())?;
        let r = repair::repair_index(
            &repo,
            &RepairIndexOptions {
                read_all_packs: self.read_all_packs,
                dry_run: self.dry_run,
                ..Default::default()
            },
        )?;
        if args.json {
            print_json(&r)?;
        } else {
            print_text(&r, self.dry_run);
        }
        if !r.unreadable_packs.is_empty() {
            anyhow::bail!(
                "{} pack(s) have unreadable headers (indexed only where an index file still \
                 described them); run `holdfast repo check --read-data` to see what they held",
                r.unreadable_packs.len()
            );
        }
        Ok(())
    }
}

fn print_text(r: &repair::RepairIndexReport, dry_run: bool) {
    for e in &r.unreadable_index_files {
        eprintln!("damaged index file (its packs are read from their headers): {e}");
    }
    for p in &r.unreadable_packs {
        eprintln!("pack with an unreadable header: {p}");
    }
    let verb = if dry_run { "would index" } else { "indexed" };
    println!(
        "{verb} {} of {} packs ({} headers read, {} packs added, {} entries corrected, {} entries \
         of missing packs dropped, {} packs left to prune plans)",
        r.packs_indexed,
        r.packs,
        r.headers_read,
        r.packs_added,
        r.entries_corrected,
        r.missing_packs_dropped,
        r.planned_packs
    );
    match &r.new_index_file {
        Some(f) => println!("wrote index {f}, replacing {} index files", r.index_files_replaced),
        None if !dry_run && r.unreadable_packs.is_empty() => {
            println!("the index was complete; nothing written");
        }
        None => {}
    }
}
