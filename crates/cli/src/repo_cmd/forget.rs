//! `repo forget`: delete snapshots by retention rules (and prune afterwards on request).

use clap::Args;
use holdfast_repository::forget::{self, GroupBy, KeepPolicy};
use holdfast_repository::prune::{self, PruneOptions};

use super::filter::FilterArgs;
use super::{RepoArgs, print_json};

#[derive(Args, Debug)]
pub(super) struct ForgetCmd {
    /// Snapshots to delete explicitly.
    snapshots: Vec<String>,
    #[arg(long, default_value_t = 0)]
    keep_last: usize,
    #[arg(long, default_value_t = 0)]
    keep_hourly: usize,
    #[arg(long, default_value_t = 0)]
    keep_daily: usize,
    #[arg(long, default_value_t = 0)]
    keep_weekly: usize,
    #[arg(long, default_value_t = 0)]
    keep_monthly: usize,
    #[arg(long, default_value_t = 0)]
    keep_yearly: usize,
    /// Keep snapshots newer than the latest minus this (`30d`, `2w`).
    #[arg(long)]
    keep_within: Option<humantime::Duration>,
    /// Keep snapshots with this tag.
    #[arg(long = "keep-tag")]
    keep_tags: Vec<String>,
    /// Only show what would be deleted.
    #[arg(long)]
    dry_run: bool,
    /// Run prune afterwards.
    #[arg(long)]
    prune: bool,
    /// Apply the keep rules to each group of snapshots sharing these (`host`, `paths`, `tags`,
    /// comma-separated; `""` for one group).
    #[arg(long, short = 'g', default_value = "host,paths")]
    group_by: GroupBy,
    #[command(flatten)]
    filter: FilterArgs,
}

impl ForgetCmd {
    pub(super) fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        let repo = args.open()?;
        if !self.snapshots.is_empty() {
            let ids: Vec<_> = self
                .snapshots
                .iter()
                .map(|s| repo.find_snapshot_id(s))
                .collect::<Result<_, _>>()?;
            if !self.dry_run {
                forget::remove_snapshots(&repo, &ids)?;
            }
            if args.json {
                print_json(&ids.iter().map(|i| i.to_hex()).collect::<Vec<_>>())?;
            } else {
                println!("removed {} snapshots", ids.len());
            }
        } else {
            let policy = KeepPolicy {
                last: self.keep_last,
                hourly: self.keep_hourly,
                daily: self.keep_daily,
                weekly: self.keep_weekly,
                monthly: self.keep_monthly,
                yearly: self.keep_yearly,
                within: self.keep_within.map(Into::into),
                tags: self.keep_tags.clone(),
            };
            let groups = forget::forget_selected(
                &repo,
                &policy,
                &self.filter.filter(),
                self.group_by,
                self.dry_run,
            )?;
            if args.json {
                print_json(&groups)?;
            } else {
                for g in &groups {
                    let mut what = Vec::new();
                    if !g.hostname.is_empty() {
                        what.push(format!("host {}", g.hostname));
                    }
                    if !g.paths.is_empty() {
                        what.push(format!("paths {}", g.paths.join(" ")));
                    }
                    if !g.tags.is_empty() {
                        what.push(format!("tags {}", g.tags.join(",")));
                    }
                    if what.is_empty() {
                        what.push("all snapshots".into());
                    }
                    println!(
                        "{}: keep {}, remove {}",
                        what.join(" "),
                        g.keep.len(),
                        g.remove.len()
                    );
                    for id in &g.remove {
                        println!("  remove {}", id.short());
                    }
                }
            }
        }
        if self.prune && !self.dry_run {
            let r = prune::prune(&repo, &PruneOptions::default())?;
            super::prune::report(args, &r)?;
        }
        Ok(())
    }
}
