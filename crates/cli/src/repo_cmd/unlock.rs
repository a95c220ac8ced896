//! `repo unlock`: remove locks whose holders are gone.

use clap::Args;

use super::{RepoArgs, print_json};

#[derive(Args, Debug)]
pub(super) struct UnlockCmd {
    /// Remove every lock, also those of processes that may still run. Only when you know they
    /// are gone: a prune could then delete data a running backup is about to reference.
    #[arg(long)]
    remove_all: bool,
}

impl UnlockCmd {
    pub(super) fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        let repo = args.open()?;
        let removed = repo.unlock(self.remove_all)?;
        if args.json {
            let v: Vec<_> = removed
                .iter()
                .map(|(l, why)| serde_json::json!({ "lock": l.name, "reason": why }))
                .collect();
            return print_json(&v);
        }
        for (l, why) in &removed {
            println!("removed lock {}: {why}", &l.name[..12.min(l.name.len())]);
        }
        println!("{} lock(s) removed", removed.len());
        Ok(())
    }
}
