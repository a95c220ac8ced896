//! `holdfast operator`: every controller against a cluster's API server (a kubeconfig, else the
//! in-cluster service account). Replicas elect one leader through a Lease; only the leader runs
//! the controllers, the others wait to take over. `/healthz`, `/readyz` and `/metrics` are served
//! on a plain HTTP port for the kubelet's probes and Prometheus.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use holdfast_controllers::context::Mode;
use holdfast_controllers::lease::{Candidate, Standing};

use crate::health::Health;

/// Options of `holdfast operator`.
#[derive(clap::Args)]
pub struct OperatorArgs {
    /// The cluster's kubeconfig. Default: the in-cluster service account, else `$KUBECONFIG`,
    /// else `~/.kube/config`.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace for holdfast's own objects (generated Secrets, the leader Lease).
    #[arg(long, env = "HOLDFAST_NAMESPACE", default_value = "holdfast-system")]
    pub namespace: String,
    /// Where `/healthz`, `/readyz` and `/metrics` are served (plain HTTP).
    #[arg(long, env = "HOLDFAST_HEALTH_LISTEN", default_value = "0.0.0.0:8080")]
    pub health_listen: SocketAddr,
    /// This replica's name in the Lease. Default: `$POD_NAME`, else the host name and process id.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long a leader's Lease holds without renewal before another replica takes over.
    #[arg(long, default_value = "15s")]
    pub lease_duration: humantime::Duration,
    /// The Lease's name.
    #[arg(long, default_value = "holdfast-operator")]
    pub lease_name: String,
    /// The holdfast image Jobs copy `holdfast` and `datasafed` from (an init container of each
    /// Job). Default: this pod's own image (read through `$POD_NAME`).
    #[arg(long, env = "HOLDFAST_IMAGE")]
    pub image: Option<String>,
    /// Directory for the controllers' local state.
    #[arg(long, env = "HOLDFAST_DATA_DIR", default_value = "/var/lib/holdfast")]
    pub data_dir: PathBuf,
}

pub fn run(args: OperatorArgs) -> anyhow::Result<()> {
    crate::server_cmd::run_service("holdfast operator", operate(args))
}

pub(crate) async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .with_context(|| format!("kubeconfig {} is not usable", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no cluster found: not in a pod, and no usable $KUBECONFIG or ~/.kube/config \
             (give --kubeconfig FILE)",
        )?,
    };
    kube::Client::try_from(config).context("cannot build a client for the cluster")
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "holdfast".into());
    format!("{host}-{}", std::process::id())
}

/// The image of this operator's own container, when it runs in a pod named `$POD_NAME`.
async fn own_image(client: &kube::Client, namespace: &str) -> Option<String> {
    let name = std::env::var("POD_NAME").ok()?;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(client.clone(), namespace);
    let spec = pods.get_opt(&name).await.ok()??.spec?;
    let containers = &spec.containers;
    containers.iter().find(|c| c.name == "operator").or(containers.first())?.image.clone()
}

async fn operate(args: OperatorArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.health_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.health_listen))?;
    let client = client(args.kubeconfig.as_ref()).await?;
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let duration: Duration = args.lease_duration.into();
    if duration < Duration::from_secs(3) {
        anyhow::bail!("--lease-duration {} is too short: give 3s or more", args.lease_duration);
    }
    let image = match args.image.clone() {
        Some(image) => image,
        None => own_image(&client, &args.namespace).await.context(
            "cannot tell the holdfast image Jobs copy their tools from: give --image (in a pod, it is read from the pod's own spec through $POD_NAME)",
        )?,
    };
    let holdfast_exe =
        std::env::current_exe().context("cannot find the holdfast executable's path")?;
    let ctx = Arc::new(
        holdfast_controllers::Context::new(client.clone(), &args.data_dir, holdfast_exe)
            .with_system_namespace(&args.namespace)
            .with_mode(Mode::Cluster)
            .with_image(image),
    );
    let health = Arc::new(Health::new(ctx.metrics.clone(), true));
    let local = listener.local_addr().context("cannot read the listening address")?;
    println!("holdfast operator {identity}: health and metrics on http://{local}");
    tracing::info!(%identity, namespace = %args.namespace, lease = %args.lease_name, "starting");
    let server = tokio::spawn(crate::health::serve(listener, health.clone()));

    let mut candidate =
        Candidate::new(client, &args.namespace, &args.lease_name, &identity, duration);
    let mut controllers: Option<tokio::task::JoinHandle<()>> = None;
    let shutdown = crate::server_cmd::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        // Bounded: a leader whose renewal hangs must still stop before its lease can expire.
        let standing = tokio::time::timeout(candidate.retry_period(), candidate.try_lead())
            .await
            .map_err(|_| {
                anyhow::anyhow!("the API server did not answer within a third of the lease")
            })
            .and_then(|r| r.map_err(anyhow::Error::from));
        health.set_ready(standing.is_ok());
        match standing {
            Ok(Standing::Leading) => {
                if controllers.is_none() {
                    tracing::info!(%identity, "leading: starting the controllers");
                    let ctx = ctx.clone();
                    controllers = Some(tokio::spawn(crate::server_cmd::supervise(
                        "controllers",
                        move || holdfast_controllers::run(ctx.clone()),
                    )));
                }
            }
            Ok(Standing::Following { holder }) => {
                if let Some(task) = controllers.take() {
                    tracing::warn!(%identity, ?holder, "lost the lease: stopping the controllers");
                    task.abort();
                }
            }
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "cannot reach the lease");
                if candidate.must_stop()
                    && let Some(task) = controllers.take()
                {
                    tracing::warn!(%identity, "lease not renewed in time: stopping the controllers");
                    task.abort();
                }
            }
        }
        health.set_leading(controllers.is_some());
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(candidate.retry_period()) => {}
        }
    }
    // Hand over: stop acting first, then free the lease so a successor starts at once.
    if let Some(task) = controllers.take() {
        task.abort();
        let _ = task.await;
    }
    if let Err(error) = candidate.release().await {
        tracing::warn!(%error, "cannot release the lease; the next leader waits for it to expire");
    }
    server.abort();
    tracing::info!("stopped");
    Ok(())
}
