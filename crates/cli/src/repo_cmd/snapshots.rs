//! `repo snapshots`: list snapshots.

use clap::Args;

use super::filter::FilterArgs;
use super::{RepoArgs, print_json};

#[derive(Args, Debug)]
pub(super) struct SnapshotsCmd {
    /// Only these snapshots (ids, prefixes or `latest`).
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

impl SnapshotsCmd {
    pub(super) fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        let repo = args.open()?;
        let listing = repo.snapshot_listing()?;
        // A damaged snapshot is reported and the others are listed all the same.
        for bad in &listing.unreadable {
            eprintln!("snapshot {} is unreadable, skipped: {}", bad.id.short(), bad.error);
        }
        let filter = self.filter.filter();
        let snaps = if self.snapshots.is_empty() {
            filter.select(listing.entries)
        } else {
            repo.select_snapshots(&self.snapshots, &filter)?
        };
        if args.json {
            let v: Vec<_> = snaps
                .iter()
                .map(|s| serde_json::json!({"id": s.id.to_hex(), "snapshot": s.snapshot}))
                .collect();
            return print_json(&v);
        }
        // restic's table: one row per snapshot, paths after the other columns.
        let rows: Vec<[String; 4]> = snaps
            .iter()
            .map(|s| {
                [
                    s.id.short(),
                    s.snapshot
                        .time
                        .to_zoned(jiff::tz::TimeZone::system())
                        .strftime("%Y-%m-%d %H:%M:%S")
                        .to_string(),
                    s.snapshot.hostname.clone(),
                    s.snapshot.tags.join(","),
                ]
            })
            .collect();
        let width = |i: usize, head: &str| {
            rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0).max(head.len())
        };
        let w = [width(0, "ID"), width(1, "Time"), width(2, "Host"), width(3, "Tags")];
        let mut out = String::new();
        let line = |cols: [&str; 4], paths: &str| {
            format!(
                "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {paths}\n",
                cols[0],
                cols[1],
                cols[2],
                cols[3],
                w0 = w[0],
                w1 = w[1],
                w2 = w[2],
                w3 = w[3]
            )
        };
        let header = line(["ID", "Time", "Host", "Tags"], "Paths");
        let rule = "-".repeat(header.trim_end().chars().count().max(40));
        out.push_str(&header);
        out.push_str(&rule);
        out.push('\n');
        for (r, s) in rows.iter().zip(&snaps) {
            let mut paths = s.snapshot.paths.iter();
            out.push_str(&line(
                [&r[0], &r[1], &r[2], &r[3]],
                paths.next().map(String::as_str).unwrap_or(""),
            ));
            // Further paths on lines of their own, as restic does.
            for p in paths {
                out.push_str(&line(["", "", "", ""], p));
            }
        }
        out.push_str(&rule);
        out.push('\n');
        out.push_str(&format!("{} snapshots\n", snaps.len()));
        super::write_stdout(out.as_bytes())
    }
}
