//! `repo snapshots`: list snapshots.

use super::{RepoArgs, print_json};

pub(super) fn run(args: &RepoArgs) -> anyhow::Result<()> {
    let repo = args.open()?;
    let listing = repo.snapshot_listing()?;
    // A damaged snapshot is reported and the others are listed all the same.
    for bad in &listing.unreadable {
        eprintln!("snapshot {} is unreadable, skipped: {}", bad.id.short(), bad.error);
    }
    let snaps = listing.entries;
    if args.json {
        let v: Vec<_> = snaps
            .iter()
            .map(|s| serde_json::json!({"id": s.id.to_hex(), "snapshot": s.snapshot}))
            .collect();
        return print_json(&v);
    }
    println!("{:<10} {:<20} {:<16} {:<16} paths", "ID", "time", "host", "tags");
    for s in &snaps {
        let t = s.snapshot.time.strftime("%Y-%m-%d %H:%M:%S").to_string();
        println!(
            "{:<10} {:<20} {:<16} {:<16} {}",
            s.id.short(),
            t,
            s.snapshot.hostname,
            s.snapshot.tags.join(","),
            s.snapshot.paths.join(" ")
        );
    }
    println!("{} snapshots", snaps.len());
    Ok(())
}
