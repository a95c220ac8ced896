//! `repo cat`: print an object as JSON, or a file's content.

use anyhow::bail;
use clap::Args;
use holdfast_repository::restore;

use super::{RepoArgs, print_json};

#[derive(Args, Debug)]
pub(super) struct CatCmd {
    /// config | snapshot | index | key | file
    kind: String,
    /// The object (and path, for `file`).
    args: Vec<String>,
}

impl CatCmd {
    pub(super) fn run(&self, args: &RepoArgs) -> anyhow::Result<()> {
        let repo = args.open()?;
        let kind = &self.kind;
        let arg = |i: usize| {
            self.args.get(i).cloned().ok_or_else(|| anyhow::anyhow!("cat {kind}: missing argument"))
        };
        match kind.as_str() {
            "config" => print_json(repo.config())?,
            "snapshot" => {
                let s = repo.find_snapshot(&arg(0)?)?;
                print_json(&s.snapshot)?;
            }
            "index" => print_json(&repo.load_index_file(&arg(0)?.parse()?)?)?,
            "key" => {
                let k = arg(0)?;
                let key = repo
                    .keys()?
                    .into_iter()
                    .find(|x| x.name.starts_with(&k))
                    .ok_or_else(|| anyhow::anyhow!("no key {k}"))?;
                print_json(&key.key)?;
            }
            "file" => {
                let s = repo.find_snapshot(&arg(0)?)?;
                let node = repo.find_node(&s.snapshot.tree, &arg(1)?)?;
                restore::dump(&repo, &node, &mut std::io::stdout().lock())?;
            }
            other => {
                bail!("cat: unknown object kind {other:?} (config, snapshot, index, key, file)")
            }
        }
        Ok(())
    }
}
