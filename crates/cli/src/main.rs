//! `holdfast`: one binary for the embedded server, the cluster operator and agent, the repository
//! CLI and its datasafed face. Each subcommand lives in its own module.

use clap::{Parser, Subcommand};

mod agent_cmd;
mod crds_cmd;
mod datasafed_cmd;
mod health;
mod install_tools_cmd;
mod logs_cmd;
mod operator_cmd;
mod pg_cmd;
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
    /// Run every controller against a Kubernetes cluster's API server, one leader among the
    /// replicas (cluster mode).
    Operator(operator_cmd::OperatorArgs),
    /// Run the node agent of one cluster node: PodVolumeBackups and PodVolumeRestores of its pods'
    /// volumes, read where the kubelet mounted them (cluster mode, a DaemonSet).
    Agent(agent_cmd::AgentArgs),
    /// Copy this binary into a directory as `holdfast` and `datasafed` (what cluster-mode Jobs'
    /// init containers run, so any image can call both).
    InstallTools(install_tools_cmd::InstallToolsArgs),
    /// Print the CustomResourceDefinitions of every custom kind as YAML.
    Crds(crds_cmd::CrdsArgs),
    /// Work with a deduplicating, encrypted backup repository (restic-style commands).
    Repo(Box<repo_cmd::RepoArgs>),
    /// PostgreSQL: base backups, the WAL archive (archive_command / restore_command), and
    /// point-in-time restore.
    Pg(Box<pg_cmd::PgArgs>),
    /// Print the log of an embedded Job's pod from the data directory.
    Logs(logs_cmd::LogsArgs),
    /// datasafed-compatible storage commands (push, pull, list, stat, rm, mkdir, rmdir) over a
    /// holdfast repository; also what the binary does when started as `datasafed`.
    Datasafed(datasafed_cmd::DatasafedArgs),
}

fn main() -> anyhow::Result<()> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // KubeBlocks ActionSets call `datasafed …`: a symlink or copy named so is that tool, and
    // `holdfast datasafed …` takes the same path so both report errors the datasafed way.
    if args.first().is_some_and(|a0| datasafed_cmd::invoked_as_datasafed(a0)) {
        return datasafed_cmd::main(args);
    }
    if args.get(1).is_some_and(|a| a == "datasafed") {
        args.remove(0);
        return datasafed_cmd::main(args);
    }
    let cli = Cli::parse_from(args);
    match cli.command {
        Command::Server(args) => server_cmd::run(args),
        Command::Operator(args) => operator_cmd::run(args),
        Command::Agent(args) => agent_cmd::run(args),
        Command::InstallTools(args) => install_tools_cmd::run(args),
        Command::Crds(args) => crds_cmd::run(args),
        Command::Repo(args) => repo_cmd::run(*args),
        Command::Pg(args) => pg_cmd::run(*args),
        Command::Logs(args) => logs_cmd::run(args),
        Command::Datasafed(args) => datasafed_cmd::run(args),
    }
}
