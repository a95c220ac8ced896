//! The `--host`, `--tag` and `--path` snapshot filters the listing and selecting commands share.

use clap::Args;
use holdfast_repository::filter::SnapshotFilter;

#[derive(Args, Debug, Clone, Default)]
pub(super) struct FilterArgs {
    /// Only snapshots of this host (repeatable: any of them).
    #[arg(long = "host", short = 'H')]
    hosts: Vec<String>,
    /// Only snapshots with these tags: `a,b` needs both, a repeated --tag is an alternative.
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Only snapshots that include this path (repeatable: all of them).
    #[arg(long = "path")]
    paths: Vec<String>,
}

impl FilterArgs {
    pub(super) fn filter(&self) -> SnapshotFilter {
        let mut f = SnapshotFilter {
            hosts: self.hosts.clone(),
            paths: self.paths.clone(),
            ..Default::default()
        };
        for t in &self.tags {
            f.add_tag_list(t);
        }
        f
    }
}
