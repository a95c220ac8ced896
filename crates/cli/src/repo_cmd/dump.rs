//! `repo dump`: a file of a snapshot to standard output, or a directory as a tar stream.

use std::io::Write as _;

use anyhow::bail;
use clap::Args;
use holdfast_repository::dump;

use super::RepoArgs;
use super::filter::FilterArgs;

#[derive(Args, Debug)]
pub(super) struct DumpCmd {
    /// Snapshot id, prefix or `latest` (the newest that passes the filters).
    snapshot: String,
    /// The file or directory inside the snapshot (`/src/a.txt`; `/` for everything).
    path: String,
    /// Archive format for a directory (only `tar`).
    #[arg(long, short = 'a', default_value = "tar")]
    archive: String,
    #[command(flatten)]
    filter: FilterArgs,
}

impl DumpCmd {
    pub(super) fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        if self.archive != "tar" {
            bail!("--archive {}: only tar is supported", self.archive);
        }
        let repo = args.open()?;
        let snap = repo.find_snapshot_filtered(&self.snapshot, &self.filter.filter())?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        dump::dump(&repo, &snap.snapshot.tree, &self.path, &mut out)?;
        out.flush()?;
        Ok(())
    }
}
