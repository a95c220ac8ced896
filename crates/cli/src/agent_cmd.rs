//! `holdfast agent`: the node agent of cluster mode, one per node (the DaemonSet of
//! `deploy/agent.yaml`). It serves the PodVolumeBackups and PodVolumeRestores of its node, reading
//! and writing pod volumes where the kubelet mounted them (`<kubelet-dir>/pods/<uid>/volumes/…`,
//! `holdfast_controllers::volume::KubeletVolumes`), at most `HOLDFAST_NODE_AGENT_CONCURRENCY` at
//! once, and takes up after a restart what it had accepted. Every node runs its own, so there is
//! no leader: the work is split by node name.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use holdfast_controllers::context::{DEFAULT_KUBELET_DIR, Mode};

use crate::health::Health;

/// Options of `holdfast agent`.
#[derive(clap::Args)]
pub struct AgentArgs {
    /// The cluster's kubeconfig. Default: the in-cluster service account, else `$KUBECONFIG`,
    /// else `~/.kube/config`.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The node this agent serves (the DaemonSet passes `spec.nodeName` as `$NODE_NAME`).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// The kubelet's root directory as mounted into the agent; pod volumes are under its `pods/`.
    #[arg(long, env = "HOLDFAST_KUBELET_DIR", default_value = DEFAULT_KUBELET_DIR)]
    pub kubelet_dir: PathBuf,
    /// Namespace for holdfast's own objects.
    #[arg(long, env = "HOLDFAST_NAMESPACE", default_value = "holdfast-system")]
    pub namespace: String,
    /// Where `/healthz`, `/readyz` and `/metrics` are served (plain HTTP).
    #[arg(long, env = "HOLDFAST_HEALTH_LISTEN", default_value = "0.0.0.0:8081")]
    pub health_listen: SocketAddr,
    /// Directory for the agent's local state.
    #[arg(long, env = "HOLDFAST_DATA_DIR", default_value = "/var/lib/holdfast-agent")]
    pub data_dir: PathBuf,
    /// Velero's node-agent ConfigMap in `--namespace`: its `loadConcurrency` sets how many
    /// moves this node runs at once (else `HOLDFAST_NODE_AGENT_CONCURRENCY`, else 2).
    #[arg(long, env = "HOLDFAST_NODE_AGENT_CONFIGMAP", value_name = "NAME")]
    pub node_agent_configmap: Option<String>,
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    crate::server_cmd::run_service("holdfast agent", serve(args))
}

/// How often readiness is checked against the API server.
const READY_CHECK: Duration = Duration::from_secs(10);

async fn serve(args: AgentArgs) -> anyhow::Result<()> {
    if args.node_name.trim().is_empty() {
        anyhow::bail!("--node-name is empty: give the name of the node this agent runs on");
    }
    let pods = args.kubelet_dir.join("pods");
    if !pods.is_dir() {
        anyhow::bail!(
            "{} is not a directory: mount the kubelet's directory into the agent and give it \
             with --kubelet-dir",
            pods.display()
        );
    }
    let listener = tokio::net::TcpListener::bind(args.health_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.health_listen))?;
    let client = crate::operator_cmd::client(args.kubeconfig.as_ref()).await?;
    let configured = match &args.node_agent_configmap {
        Some(name) => holdfast_controllers::velero::load_concurrency::read(
            &client,
            &args.namespace,
            name,
            &args.node_name,
        )
        .await
        .context("cannot read the node-agent configuration")?,
        None => None,
    };
    let concurrency =
        configured.unwrap_or_else(holdfast_controllers::velero::configured_concurrency);
    let holdfast_exe =
        std::env::current_exe().context("cannot find the holdfast executable's path")?;
    let ctx = Arc::new(
        holdfast_controllers::Context::new(client.clone(), &args.data_dir, holdfast_exe)
            .with_system_namespace(&args.namespace)
            .with_mode(Mode::Cluster)
            .with_kubelet_dir(&args.kubelet_dir),
    );
    ctx.metrics.set_node_agent_concurrency(&args.node_name, concurrency);
    let health = Arc::new(Health::new(ctx.metrics.clone(), false));
    let local = listener.local_addr().context("cannot read the listening address")?;
    println!("holdfast agent {}: health and metrics on http://{local}", args.node_name);
    tracing::info!(node = %args.node_name, kubelet_dir = %args.kubelet_dir.display(), concurrency, "starting");
    let server = tokio::spawn(crate::health::serve(listener, health.clone()));
    let node = args.node_name.clone();
    let agent = tokio::spawn(crate::server_cmd::supervise("node agent", move || {
        holdfast_controllers::velero::run_node_agent(ctx.clone(), node.clone(), concurrency)
    }));
    let shutdown = crate::server_cmd::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        health.set_ready(client.apiserver_version().await.is_ok());
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(READY_CHECK) => {}
        }
    }
    // A move cut short is taken up again by the next agent on this node (its status says so).
    agent.abort();
    let _ = agent.await;
    server.abort();
    tracing::info!("stopped");
    Ok(())
}
