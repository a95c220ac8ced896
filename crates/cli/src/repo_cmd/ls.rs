//! `repo ls`: the files of a snapshot.

use std::io::Write as _;

use clap::Args;
use holdfast_repository::stats;
use holdfast_repository::tree::NodeType;

use super::{RepoArgs, print_json};

#[derive(Args, Debug)]
pub(super) struct LsCmd {
    /// Snapshot id, prefix or `latest`.
    snapshot: String,
    /// Only entries under this path.
    path: Option<String>,
}

impl LsCmd {
    pub(super) fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        let repo = args.open()?;
        let snap = repo.find_snapshot(&self.snapshot)?;
        let prefix = self.path.clone().unwrap_or_default();
        let entries: Vec<_> = stats::ls(&repo, &snap.snapshot.tree)?
            .into_iter()
            .filter(|e| {
                prefix.is_empty()
                    || e.path == prefix
                    || e.path.starts_with(&format!("{}/", prefix.trim_end_matches('/')))
            })
            .collect();
        if args.json {
            return print_json(&entries);
        }
        // A write error (a reader that stopped reading) ends the listing; see `is_broken_pipe`.
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for e in entries {
            let kind = match e.node_type {
                NodeType::Dir => 'd',
                NodeType::Symlink => 'l',
                NodeType::File => '-',
                _ => '?',
            };
            writeln!(
                out,
                "{kind}{:04o} {:>5} {:>5} {:>12} {}",
                e.mode, e.uid, e.gid, e.size, e.path
            )?;
        }
        out.flush()?;
        Ok(())
    }
}
