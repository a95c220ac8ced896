//! `holdfast`: one binary for the embedded server, the cluster operator and agent, the repository
//! CLI and its datasafed face. Each subcommand lives in its own module.

use clap::{Parser, Subcommand};

mod crds_cmd;
mod repo_cmd;
mod server_cmd;

#[derive(Parser)]
#[command(
    name = "holdfast",
    version,
    about = "Backup and restore for volumes and PostgreSQL, with the Kubernetes APIs of Velero, KubeBlocks, CSI snapshots and Alauda"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the embedded server: a Kubernetes-compatible API server with a SQLite store.
    Server(server_cmd::ServerArgs),
    /// Print the CustomResourceDefinitions of every custom kind as YAML.
    Crds(crds_cmd::CrdsArgs),
    /// Work with a deduplicating, encrypted backup repository (restic-style commands).
    Repo(repo_cmd::RepoArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => server_cmd::run(args),
        Command::Crds(args) => crds_cmd::run(args),
        Command::Repo(args) => repo_cmd::run(args),
    }
}
