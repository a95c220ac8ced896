//! Cluster mode's leader election: two `holdfast operator` replicas against `holdfast server
//! --no-controllers` (the API server alone, standing in for a cluster's), authenticated as the
//! ServiceAccount of `deploy/rbac.yaml` with a token from `kubectl create token`, so the server's
//! RBAC holds them to the shipped Roles. Exactly one leads and runs the controllers; killed, it is
//! replaced within the lease duration; stopped with SIGTERM, it hands the lease over at once; and
//! no call they made was refused.

#[path = "common/poll.rs"]
mod poll;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use holdfast_testkit::HoldfastServer;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::ListParams;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};

use poll::poll;

const LEASE: Duration = Duration::from_secs(3);

/// A running `holdfast operator` and the address of its health and metrics server.
struct Operator {
    child: Child,
    health: String,
}

impl Operator {
    async fn start(exe: &Path, kubeconfig: &Path, identity: &str, data: PathBuf) -> Result<Self> {
        let mut child = Command::new(exe)
            .args(["operator", "--health-listen", "127.0.0.1:0", "--lease-duration", "3s"])
            .args(["--image", "registry.example/holdfast:test"])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--identity", identity, "--data-dir"])
            .arg(data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("start holdfast operator")?;
        let stdout = child.stdout.take().context("operator stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("no banner from holdfast operator")??
            .context("holdfast operator exited before its banner")?;
        let health = first
            .split_once("health and metrics on http://")
            .map(|(_, addr)| addr.to_string())
            .with_context(|| format!("unexpected banner {first:?}"))?;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child, health })
    }

    /// The body of `GET path` on the health server, and whether it answered 200.
    async fn get(&self, path: &str) -> Result<(bool, String)> {
        let mut s = tokio::net::TcpStream::connect(&self.health).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await?;
        let mut text = String::new();
        s.read_to_string(&mut text).await?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        Ok((head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), body.into()))
    }

    async fn leading(&self) -> Result<bool> {
        let (_, metrics) = self.get("/metrics").await?;
        Ok(metrics.lines().any(|l| l == "holdfast_operator_leader 1"))
    }

    fn pid(&self) -> Result<u32> {
        self.child.id().context("the operator has exited")
    }
}

async fn holder(leases: &Api<Lease>) -> Result<Option<String>> {
    Ok(leases
        .get_opt("holdfast-operator")
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty()))
}

#[tokio::test(flavor = "multi_thread")]
async fn one_replica_leads_and_another_takes_over_when_it_dies_or_stops() -> Result<()> {
    let exe = Path::new(env!("CARGO_BIN_EXE_holdfast"));
    let dir = tempfile::tempdir()?;
    let server =
        HoldfastServer::start_with(exe, &dir.path().join("server"), &["--no-controllers"]).await?;
    let client = server.client().await?;
    // What the installation manifests create before the operator starts, and a token of its
    // ServiceAccount (the server already serves the CRDs).
    let admin = server.kubeconfig_path();
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let cache = dir.path().join("kubectl-cache");
    for file in ["namespace.yaml", "rbac.yaml"] {
        let path = deploy.join(file);
        kubectl_ok(
            &admin,
            &cache,
            &["apply", "-n", "holdfast-system", "-f", path.to_str().context("utf-8")?],
        )
        .await?;
    }
    let token = kubectl_ok(
        &admin,
        &cache,
        &["create", "token", "holdfast-operator", "-n", "holdfast-system", "--duration", "1h"],
    )
    .await?;
    let kubeconfig = dir.path().join("operator-kubeconfig");
    std::fs::write(&kubeconfig, with_token(&std::fs::read_to_string(&admin)?, token.trim())?)?;
    let mut replicas = vec![
        Operator::start(exe, &kubeconfig, "replica-a", dir.path().join("a")).await?,
        Operator::start(exe, &kubeconfig, "replica-b", dir.path().join("b")).await?,
    ];
    let leases: Api<Lease> = Api::namespaced(client.clone(), "holdfast-system");

    let first =
        poll(Duration::from_secs(30), "a leader", || async { holder(&leases).await }).await?;
    let (leader, follower) = if first == "replica-a" { (0, 1) } else { (1, 0) };
    // Only the leader runs the controllers: it installs the shipped ActionSets.
    let action_sets: Api<holdfast_api::kubeblocks::ActionSet> = Api::all(client.clone());
    poll(Duration::from_secs(60), "the shipped ActionSets", || async {
        Ok((!action_sets.list(&ListParams::default()).await?.items.is_empty()).then_some(()))
    })
    .await?;
    poll(Duration::from_secs(10), "the leader's metrics", || async {
        Ok(replicas[leader].leading().await?.then_some(()))
    })
    .await?;
    assert!(!replicas[follower].leading().await?, "the follower runs no controllers");
    for r in &replicas {
        assert!(r.get("/healthz").await?.0);
        assert!(r.get("/readyz").await?.0, "both replicas reach the API server");
    }

    // The leader dies: the follower takes over once the lease is a whole duration old.
    replicas[leader].child.start_kill()?;
    replicas[leader].child.wait().await?;
    let killed = Instant::now();
    let second = poll(Duration::from_secs(30), "a new leader", || async {
        Ok(holder(&leases).await?.filter(|h| *h != first))
    })
    .await?;
    let took = killed.elapsed();
    assert!(
        took <= LEASE + LEASE / 3 + Duration::from_secs(2),
        "took over after {took:?} with a lease of {LEASE:?}"
    );
    assert_eq!(second, if first == "replica-a" { "replica-b" } else { "replica-a" });
    poll(Duration::from_secs(10), "the new leader's metrics", || async {
        Ok(replicas[follower].leading().await?.then_some(()))
    })
    .await?;

    // Stopped with SIGTERM, a leader gives the lease up before it exits.
    let pid = replicas[follower].pid()?;
    let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    if !status.success() {
        bail!("kill -TERM {pid} failed");
    }
    let exit = tokio::time::timeout(Duration::from_secs(20), replicas[follower].child.wait())
        .await
        .context("the operator did not stop within 20 s of SIGTERM")??;
    assert!(exit.success(), "a clean stop: {exit}");
    assert_eq!(holder(&leases).await?, None, "the lease was released");

    // The shipped Roles allowed every call the replicas made.
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let metrics = client.request_text(request).await?;
    let refused: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{") && l.contains("code=\"403\""))
        .collect();
    assert!(refused.is_empty(), "calls outside deploy/rbac.yaml: {refused:#?}");
    assert!(
        metrics.lines().any(|l| l.starts_with("apiserver_request_total{")
            && l.contains("resource=\"leases\"")
            && l.contains("verb=\"PUT\"")),
        "the replicas' lease renewals are counted"
    );
    Ok(())
}

/// Runs kubectl with `kubeconfig`; its stdout, or the failure with its stderr.
async fn kubectl_ok(kubeconfig: &Path, cache: &Path, args: &[&str]) -> Result<String> {
    let out = holdfast_testkit::kubeconfig::kubectl(kubeconfig, cache, args).output().await?;
    if !out.status.success() {
        bail!("kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The admin kubeconfig with `token` as its credentials.
fn with_token(kubeconfig: &str, token: &str) -> Result<String> {
    let line =
        kubeconfig.lines().find(|l| l.trim_start().starts_with("token:")).context("no token")?;
    let admin = line.trim_start().trim_start_matches("token:").trim().trim_matches('"');
    Ok(kubeconfig.replace(admin, token))
}
