//! `repo repair index|packs|snapshots`: rebuild the index from the packs' own headers, salvage
//! damaged packs, rewrite snapshots without what cannot be read.

use clap::{Args, Subcommand};
use holdfast_repository::repair::packs::{RepairPacksOptions, repair_packs};
use holdfast_repository::repair::snapshots::{RepairSnapshotsOptions, repair_snapshots};
use holdfast_repository::repair::{self, RepairIndexOptions};

use super::{RepoArgs, print_json};

#[derive(Args, Debug)]
pub(super) struct RepairCmd {
    #[command(subcommand)]
    what: RepairWhat,
}

#[derive(Subcommand, Debug)]
enum RepairWhat {
    /// Rebuild the index from the pack headers (after an index file was lost or damaged).
    Index(IndexCmd),
    /// Copy the readable blobs of damaged packs into new packs and drop the damaged ones (the
    /// packs `check --read-data` names; without names every pack is read).
    Packs(PacksCmd),
    /// Write new snapshots without the files and directories that cannot be read (run
    /// `repair index` and `repair packs` first; a new backup of the same data is better when it
    /// still exists).
    Snapshots(SnapshotsCmd),
}

#[derive(Args, Debug)]
struct PacksCmd {
    /// Pack names or unique prefixes.
    packs: Vec<String>,
    /// Only report.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args, Debug)]
struct SnapshotsCmd {
    /// Snapshot ids, prefixes or `latest` (default: all).
    snapshots: Vec<String>,
    /// Remove each damaged original once its repaired snapshot is stored.
    #[arg(long)]
    forget: bool,
    /// Only report.
    #[arg(long)]
    dry_run: bool,
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
            RepairWhat::Packs(c) => c.run(args),
            RepairWhat::Snapshots(c) => c.run(args),
        }
    }
}

impl IndexCmd {
    fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        // Without the index: a damaged index file is what this command is for.
        let repo = args.open_unindexed()?;
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
    match r.new_index_files.as_slice() {
        [] if !dry_run && r.unreadable_packs.is_empty() => {
            println!("the index was complete; nothing written");
        }
        [] => {}
        files => println!(
            "wrote index {}, replacing {} index files",
            files.join(", "),
            r.index_files_replaced
        ),
    }
}

impl PacksCmd {
    fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        let repo = args.open_uncached()?;
        let r = repair_packs(
            &repo,
            &RepairPacksOptions {
                packs: self.packs.clone(),
                dry_run: self.dry_run,
                cancel: super::interrupt::cancel_on_signal(),
            },
        )?;
        if args.json {
            return print_json(&r);
        }
        let verb = if self.dry_run { "would replace" } else { "replaced" };
        for p in &r.damaged_packs {
            println!("damaged pack {p}");
        }
        for b in &r.lost_blobs {
            eprintln!("blob {b} could not be salvaged and has no other copy");
        }
        println!(
            "read {} packs; {verb} {} damaged pack(s), {} blob(s) salvaged into {} new pack(s), \
             {} lost",
            r.packs_read,
            r.damaged_packs.len(),
            r.salvaged_blobs,
            r.new_packs.len(),
            r.lost_blobs.len()
        );
        if !r.lost_blobs.is_empty() {
            println!(
                "back the data up again if it still exists, else run `holdfast repo repair \
                 snapshots --forget` to rewrite the snapshots that used the lost blobs"
            );
        }
        Ok(())
    }
}

impl SnapshotsCmd {
    fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        let repo = args.open_uncached()?;
        let r = repair_snapshots(
            &repo,
            &RepairSnapshotsOptions {
                snapshots: self.snapshots.clone(),
                forget: self.forget,
                dry_run: self.dry_run,
            },
        )?;
        if args.json {
            return print_json(&r);
        }
        for d in &r.damaged {
            println!("snapshot {} is damaged:", d.original.short());
            for line in &d.dropped {
                println!("  dropped {line}");
            }
            match (&d.repaired, d.forgotten) {
                (Some(new), true) => println!("  saved as {}, original removed", new.short()),
                (Some(new), false) => println!("  saved as {}", new.short()),
                (None, true) => println!("  nothing readable was left; original removed"),
                (None, false) if self.dry_run => {}
                (None, false) => println!("  nothing readable was left"),
            }
        }
        println!("{} snapshot(s) checked, {} damaged", r.checked, r.damaged.len());
        Ok(())
    }
}
