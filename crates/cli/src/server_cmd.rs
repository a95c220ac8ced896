//! `holdfast server`: the embedded mode (DESIGN.md §2).

/// Options of `holdfast server`.
#[derive(clap::Args)]
pub struct ServerArgs {}

pub fn run(_args: ServerArgs) -> anyhow::Result<()> {
    anyhow::bail!("holdfast server is being built; see issue 2")
}
