//! `repo ls`: the files of a snapshot.

use std::io::Write as _;

use clap::Args;
use holdfast_repository::Error;
use holdfast_repository::stats::{self, LsEntry};

use super::RepoArgs;
use super::filter::FilterArgs;

#[derive(Args, Debug)]
pub(super) struct LsCmd {
    /// Snapshot id, prefix or `latest` (the newest that passes the filters).
    snapshot: String,
    /// Only entries under this path.
    path: Option<String>,
    /// Mode, owner, group, size and modification time too, as restic's `ls -l`.
    #[arg(long, short = 'l')]
    long: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

impl LsCmd {
    pub(super) fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        let repo = args.open()?;
        let snap = repo.find_snapshot_filtered(&self.snapshot, &self.filter.filter())?;
        let prefix = self.path.clone().unwrap_or_default();
        let under = format!("{}/", prefix.trim_end_matches('/'));
        let wanted = |p: &str| prefix.is_empty() || p == prefix || p.starts_with(&under);
        // Streamed: memory stays one directory's tree, and a reader that stops reading
        // (`| head`) ends the walk with a write error `run` treats as the end.
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let write_err = |e: std::io::Error| Error::io("write", "<stdout>", e);
        if args.json {
            // A JSON array, one entry per line, written as it is walked.
            let mut first = true;
            out.write_all(b"[").map_err(write_err)?;
            stats::try_walk(&repo, &snap.snapshot.tree, &mut |path, node| {
                if !wanted(path) {
                    return Ok(());
                }
                let json = serde_json::to_string(&LsEntry::new(path, node))
                    .map_err(|e| Error::Invalid(e.to_string()))?;
                let sep = if first { "\n" } else { ",\n" };
                first = false;
                out.write_all(sep.as_bytes())
                    .and_then(|()| out.write_all(json.as_bytes()))
                    .map_err(write_err)
            })?;
            out.write_all(b"\n]\n").map_err(write_err)?;
        } else {
            if !args.quiet {
                writeln!(
                    out,
                    "snapshot {} of [{}] at {}:",
                    snap.id.short(),
                    snap.snapshot.paths.join(" "),
                    snap.snapshot.time
                )?;
            }
            stats::try_walk(&repo, &snap.snapshot.tree, &mut |path, node| {
                if !wanted(path) {
                    return Ok(());
                }
                if self.long {
                    writeln!(out, "{}", LsEntry::new(path, node).long_line())
                } else {
                    writeln!(out, "{path}")
                }
                .map_err(write_err)
            })?;
        }
        out.flush()?;
        Ok(())
    }
}
