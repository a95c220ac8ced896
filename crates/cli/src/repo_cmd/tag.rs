//! `repo tag`: add, remove or set snapshot tags (each changed snapshot gets a new id).

use clap::Args;
use holdfast_repository::tag::{self, TagChange};

use super::filter::FilterArgs;
use super::{RepoArgs, print_json};

#[derive(Args, Debug)]
pub(super) struct TagCmd {
    /// Snapshots to change (ids, prefixes or `latest`; default: all that pass the filters).
    snapshots: Vec<String>,
    /// Tags to add (`a,b` or repeated).
    #[arg(long)]
    add: Vec<String>,
    /// Tags to remove (`a,b` or repeated).
    #[arg(long)]
    remove: Vec<String>,
    /// Replace all tags with these (`a,b` or repeated; `--set ""` removes every tag).
    #[arg(long)]
    set: Option<Vec<String>>,
    #[command(flatten)]
    filter: FilterArgs,
}

fn split(v: &[String]) -> Vec<String> {
    v.iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

impl TagCmd {
    pub(super) fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        let change = TagChange {
            set: split(self.set.as_deref().unwrap_or_default()),
            set_given: self.set.is_some(),
            add: split(&self.add),
            remove: split(&self.remove),
        };
        if change.is_empty() {
            anyhow::bail!("nothing to do: give --add, --remove or --set");
        }
        if change.set_given && !(change.add.is_empty() && change.remove.is_empty()) {
            anyhow::bail!("--set cannot be combined with --add or --remove");
        }
        let repo = args.open()?;
        let snaps = repo.select_snapshots(&self.snapshots, &self.filter.filter())?;
        let changed = tag::tag(&repo, &snaps, &change)?;
        if args.json {
            return print_json(&changed);
        }
        for c in &changed {
            println!(
                "snapshot {} saved as {}: tags {}",
                c.old.short(),
                c.new.short(),
                c.tags.join(",")
            );
        }
        println!("modified tags on {} snapshots", changed.len());
        Ok(())
    }
}
