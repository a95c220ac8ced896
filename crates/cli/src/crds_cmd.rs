//! `holdfast crds`: the CRDs of every custom kind, for `kubectl apply -f -` on a real cluster.

use std::io::Write;

/// Options of `holdfast crds`.
#[derive(clap::Args)]
pub struct CrdsArgs {
    /// Print JSON (a `v1` List) instead of multi-document YAML.
    #[arg(long)]
    json: bool,
}

pub fn run(args: CrdsArgs) -> anyhow::Result<()> {
    let crds = holdfast_api::crds();
    let mut out = std::io::stdout().lock();
    if args.json {
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": crds});
        serde_json::to_writer_pretty(&mut out, &list)?;
        writeln!(out)?;
    } else {
        for crd in &crds {
            writeln!(out, "---")?;
            write!(out, "{}", serde_saphyr::to_string(crd)?)?;
        }
    }
    Ok(())
}
