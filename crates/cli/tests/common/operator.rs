//! `holdfast operator` replicas against `holdfast server --no-controllers` (the API server alone,
//! standing in for a cluster's), installed as `deploy/` installs them: the namespace and RBAC
//! applied with kubectl, each replica authenticated as the operator's ServiceAccount with a token
//! from `kubectl create token`, so the server's RBAC holds it to the shipped Roles. Included with
//! `#[path]` by the cluster-mode tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};

/// The namespace `deploy/` installs into.
pub const NAMESPACE: &str = "holdfast-system";
/// The user the operator's ServiceAccount token authenticates as.
pub const OPERATOR_USER: &str = "system:serviceaccount:holdfast-system:holdfast-operator";
/// The image the replicas are told to run their Jobs' tools from.
pub const IMAGE: &str = "registry.example/holdfast:test";

/// Applies `deploy/namespace.yaml` and `deploy/rbac.yaml` with the admin kubeconfig `admin` and
/// writes a kubeconfig for the operator's ServiceAccount into `dir`; returns its path.
pub async fn install(admin: &Path, dir: &Path) -> Result<PathBuf> {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let cache = dir.join("kubectl-cache");
    for file in ["namespace.yaml", "rbac.yaml"] {
        let path = deploy.join(file);
        kubectl_ok(
            admin,
            &cache,
            &["apply", "-n", NAMESPACE, "-f", path.to_str().context("utf-8")?],
        )
        .await?;
    }
    kubeconfig_of(admin, &cache, "holdfast-operator", dir).await
}

/// The node agent's ServiceAccount and its RBAC from `deploy/agent.yaml` (the DaemonSet left
/// out: the test runs the agent itself), and a kubeconfig for it in `dir`.
pub async fn install_agent(admin: &Path, dir: &Path) -> Result<PathBuf> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/agent.yaml"),
    )?;
    let rbac: Vec<&str> =
        text.split("\n---\n").filter(|doc| !doc.contains("kind: DaemonSet")).collect();
    let path = dir.join("agent-rbac.yaml");
    std::fs::write(&path, rbac.join("\n---\n"))?;
    let cache = dir.join("kubectl-cache");
    kubectl_ok(admin, &cache, &["apply", "-n", NAMESPACE, "-f", path.to_str().context("utf-8")?])
        .await?;
    kubeconfig_of(admin, &cache, "holdfast-agent", dir).await
}

/// A kubeconfig in `dir` authenticating as ServiceAccount `account` of [`NAMESPACE`].
async fn kubeconfig_of(admin: &Path, cache: &Path, account: &str, dir: &Path) -> Result<PathBuf> {
    let token = kubectl_ok(
        admin,
        cache,
        &["create", "token", account, "-n", NAMESPACE, "--duration", "1h"],
    )
    .await?;
    let kubeconfig = dir.join(format!("{account}-kubeconfig"));
    std::fs::write(&kubeconfig, with_token(&std::fs::read_to_string(admin)?, token.trim())?)?;
    Ok(kubeconfig)
}

/// Starts `exe ARGS…` and returns it with the address its first line names after
/// `health and metrics on http://`.
async fn start_with_banner(mut command: Command) -> Result<(Child, String)> {
    let mut child = command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("start holdfast")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .context("no banner")??
        .context("exited before its banner")?;
    let health = first
        .split_once("health and metrics on http://")
        .map(|(_, addr)| addr.to_string())
        .with_context(|| format!("unexpected banner {first:?}"))?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, health))
}

/// A running `holdfast agent` for node `node`, reading pod volumes under `kubelet_dir`, with
/// `extra` arguments; like an operator, it serves health and metrics.
pub async fn start_agent(
    exe: &Path,
    kubeconfig: &Path,
    node: &str,
    kubelet_dir: &Path,
    data: PathBuf,
    extra: &[&str],
) -> Result<Operator> {
    let mut command = Command::new(exe);
    command
        .args(["agent", "--health-listen", "127.0.0.1:0", "--node-name", node])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--kubelet-dir")
        .arg(kubelet_dir)
        .arg("--data-dir")
        .arg(data)
        .args(extra);
    let (child, health) = start_with_banner(command).await?;
    Ok(Operator { child, health })
}

/// A running `holdfast operator` (or agent) and the address of its health and metrics server.
pub struct Operator {
    pub child: Child,
    health: String,
}

impl Operator {
    /// Starts a replica named `identity` with a lease of `lease`.
    pub async fn start(
        exe: &Path,
        kubeconfig: &Path,
        identity: &str,
        data: PathBuf,
        lease: Duration,
    ) -> Result<Self> {
        let mut command = Command::new(exe);
        command
            .args(["operator", "--health-listen", "127.0.0.1:0"])
            .arg("--lease-duration")
            .arg(format!("{}s", lease.as_secs()))
            .args(["--image", IMAGE])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--identity", identity, "--data-dir"])
            .arg(data);
        let (child, health) = start_with_banner(command).await?;
        Ok(Self { child, health })
    }

    /// The body of `GET path` on the health server, and whether it answered 200.
    pub async fn get(&self, path: &str) -> Result<(bool, String)> {
        let mut s = tokio::net::TcpStream::connect(&self.health).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await?;
        let mut text = String::new();
        s.read_to_string(&mut text).await?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        Ok((head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), body.into()))
    }

    /// Whether this replica says it leads (and so runs the controllers).
    pub async fn leading(&self) -> Result<bool> {
        let (_, metrics) = self.get("/metrics").await?;
        Ok(metrics.lines().any(|l| l == "holdfast_operator_leader 1"))
    }

    pub fn pid(&self) -> Result<u32> {
        self.child.id().context("the operator has exited")
    }
}

/// The identity holding the operator's Lease, if any.
pub async fn holder(leases: &Api<Lease>) -> Result<Option<String>> {
    Ok(leases
        .get_opt("holdfast-operator")
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty()))
}

/// Runs kubectl with `kubeconfig`; its stdout, or the failure with its stderr.
pub async fn kubectl_ok(kubeconfig: &Path, cache: &Path, args: &[&str]) -> Result<String> {
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
