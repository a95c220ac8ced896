//! `holdfast server`: the embedded mode (docs/architecture.md). One process serving the
//! Kubernetes-compatible API over HTTPS from a SQLite store in the data directory, with a
//! kubeconfig written so kubectl works at once.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use holdfast_apiserver::ApiServer;
use holdfast_apiserver::auth::Authenticator;
use holdfast_apiserver::encryption::Encryption;
use holdfast_apiserver::kubeconfig::{kubeconfig, write_kubeconfig};
use holdfast_apiserver::metrics::ExpositionSource;
use holdfast_apiserver::serve::{serve, with_metrics};
use holdfast_apiserver::store::Store;
use holdfast_apiserver::tls::load_or_create_tls;

/// Options of `holdfast server`.
#[derive(clap::Args)]
pub struct ServerArgs {
    /// Directory for the store (store.db), TLS material (pki/), tokens and the kubeconfig.
    /// Default: $XDG_DATA_HOME/holdfast, else ~/.local/share/holdfast, else ./holdfast-data.
    #[arg(long, env = "HOLDFAST_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to serve HTTPS on. Port 0 picks a free port (printed at start).
    #[arg(long, env = "HOLDFAST_LISTEN", value_name = "ADDR", default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// Where to write the kubeconfig for kubectl. Default: <data-dir>/kubeconfig.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig_out: Option<PathBuf>,
    /// Extra host name or IP address for the server certificate (repeatable); 127.0.0.1, ::1
    /// and localhost are always included.
    #[arg(long = "tls-san", value_name = "HOST")]
    pub tls_sans: Vec<String>,
    /// Serve the API only: run no controllers (no Job runner, no provisioner, no reconcilers).
    #[arg(long)]
    pub no_controllers: bool,
    /// Append an audit.k8s.io/v1 event (level Metadata) for every request to FILE, as
    /// kube-apiserver's option of that name does.
    #[arg(long, value_name = "FILE")]
    pub audit_log_path: Option<PathBuf>,
}

pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    run_service("holdfast server", serve_until_signal(args))
}

/// Runs a long-lived command (`server`, `operator`) with logging on stderr on a multi-threaded
/// runtime; its failure is one line, cause chain included, then a non-zero exit (not main's
/// multi-line report).
/// How long a stopping service waits for work on blocking threads: less than the agent
/// DaemonSet's `terminationGracePeriodSeconds` (10 s), so it exits before it is killed.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(8);

pub(crate) fn run_service(
    name: &str,
    service: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if let Err(error) = runtime.block_on(service) {
        eprintln!("{name}: {error:#}");
        std::process::exit(1);
    }
    // Work on blocking threads is cancelled by now (data moves stop at their next check); a
    // thread that is not does not hold the exit up for longer than a pod's grace period.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Ignore the error of a second initialisation (only possible when embedded in tests).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// The default data directory, per the XDG base directory convention.
pub fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("holdfast");
    }
    // Root's home is private to root, so the users job processes and databases run as could
    // never reach their claims under it: a root server keeps its data where a node agent does.
    if holdfast_controllers::job_runner::identity::server_identity().0 == 0 {
        return PathBuf::from("/var/lib/holdfast");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".local/share/holdfast");
    }
    PathBuf::from("holdfast-data")
}

/// The address clients should dial: a wildcard listen address is reached over loopback.
fn client_addr(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, local.port())
}

async fn serve_until_signal(args: ServerArgs) -> anyhow::Result<()> {
    // Bind first: a taken port is the most common failure and must not touch the data dir.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr().context("cannot read the listening address")?;

    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    // Owner-only: the store holds every Secret, and the directory tokens and keys. Whatever an
    // earlier version left readable to others is restricted too, except what belongs to the
    // workloads; the controllers open the way to that (`Context::open_workload_dirs`).
    holdfast_apiserver::data_dir::create_private_dir(&data_dir)
        .and_then(|()| {
            holdfast_apiserver::data_dir::restrict_data_dir(
                &data_dir,
                holdfast_controllers::context::WORKLOAD_OWNED,
            )
        })
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let data_dir = std::path::absolute(&data_dir)
        .with_context(|| format!("cannot resolve data directory {}", data_dir.display()))?;

    let mut hosts = args.tls_sans.clone();
    if !local.ip().is_unspecified() {
        hosts.push(local.ip().to_string());
    }
    let tls = load_or_create_tls(&data_dir, &hosts)
        .with_context(|| format!("data directory {} is not usable", data_dir.display()))?;
    let store_path = data_dir.join("store.db");
    let encryption = Encryption::load_or_create(&data_dir)
        .with_context(|| format!("data directory {} is not usable", data_dir.display()))?;
    let store = Store::open_encrypted(&store_path, encryption)
        .with_context(|| format!("cannot open the store {}", store_path.display()))?;

    let api =
        ApiServer::new(store, holdfast_api::registry()).with_pod_log_dir(data_dir.join("logs"));
    let auth = Authenticator::load_or_create(&data_dir, &api)
        .with_context(|| format!("data directory {} is not usable", data_dir.display()))?;
    if let Some(path) = &args.audit_log_path {
        auth.set_audit_log(holdfast_apiserver::audit::AuditLog::open(path)?);
    }
    let admin_token =
        auth.tokens().admin_token().context("the token file has no admin token")?.to_string();
    let compactor = api.spawn_compactor();
    let (controllers, metric_sources) = if args.no_controllers {
        (None, Vec::new())
    } else {
        let (task, metrics) = spawn_controllers(&api, &data_dir).await?;
        // One /metrics shows the API server's families and the controllers'.
        let source: ExpositionSource = Arc::new(move || metrics.render());
        (Some(task), vec![source])
    };

    let client = client_addr(local);
    let url = format!("https://{client}");
    let kubeconfig_path = args.kubeconfig_out.unwrap_or_else(|| data_dir.join("kubeconfig"));
    let kubeconfig_path = std::path::absolute(&kubeconfig_path).unwrap_or(kubeconfig_path);
    write_kubeconfig(&kubeconfig_path, &kubeconfig(&url, &tls.ca_pem, &admin_token))
        .with_context(|| format!("cannot write kubeconfig {}", kubeconfig_path.display()))?;

    print_banner(&url, &data_dir, &kubeconfig_path);
    tracing::info!(%url, data_dir = %data_dir.display(), "serving");

    let router = with_metrics(api.router(), &api, metric_sources);
    let result = serve(router, auth, tls, listener, shutdown_signal()).await;
    compactor.abort();
    if let Some(controllers) = controllers {
        controllers.abort();
    }
    result.context("server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Starts every controller on an in-process client (the router without the serving layer's
/// authentication: the controllers are part of this process). A failing controller set is logged
/// and restarted with a growing delay; it never takes the API server down with it. Returns the
/// task and the controllers' metrics, which outlive a restart of the set.
async fn spawn_controllers(
    api: &ApiServer,
    data_dir: &Path,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, Arc<holdfast_controllers::metrics::Metrics>)> {
    let holdfast_exe =
        std::env::current_exe().context("cannot find the holdfast executable's path")?;
    let client = kube::Client::new(api.router(), "default");
    let ctx = Arc::new(holdfast_controllers::Context::new(client, data_dir, holdfast_exe));
    let system_namespace = &ctx.system_namespace;
    api.ensure_namespace(system_namespace)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create namespace {system_namespace}: {e}"))?;
    let metrics = ctx.metrics.clone();
    let task =
        tokio::spawn(supervise("controllers", move || holdfast_controllers::run(ctx.clone())));
    Ok((task, metrics))
}

/// Runs `run` (a controller set, the node agent) for ever, restarting it with a growing delay when
/// it fails (shared by the server, the operator's leader and the agent).
pub(crate) async fn supervise<F, Fut>(what: &'static str, run: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), holdfast_controllers::Error>>,
{
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(60);
    let mut delay = FIRST;
    loop {
        let started = Instant::now();
        match run().await {
            Ok(()) => tracing::warn!(what, ?delay, "stopped; restarting"),
            Err(error) => tracing::error!(what, %error, ?delay, "failed; restarting"),
        }
        // A run that lasted a while was healthy: start the backoff over.
        if started.elapsed() > MAX {
            delay = FIRST;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX);
    }
}

fn print_banner(url: &str, data_dir: &Path, kubeconfig_path: &Path) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    // A closed stdout must not stop the server.
    let _ = writeln!(
        out,
        "holdfast server listening on {url}\n  data directory: {}\n  export KUBECONFIG={}\n  kubectl get ns",
        data_dir.display(),
        kubeconfig_path.display()
    );
    let _ = out.flush();
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}
