//! Clients that reach a server the way a user does, through a kubeconfig: kube-rs clients and
//! `kubectl` invocations.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::Error;
use crate::process::require_tool;

/// How long a server may take to answer after it started listening. Generous: the tests share
/// two cores with builds, and a restart after `kill -9` recovers its store first.
pub const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// A kube-rs client from kubeconfig text (its current context, as kubectl would pick it).
pub async fn client(yaml: &str) -> Result<kube::Client, Error> {
    let kubeconfig = Kubeconfig::from_yaml(yaml).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    Ok(kube::Client::try_from(config)?)
}

/// A kube-rs client from a kubeconfig file.
pub async fn client_from_file(path: &Path) -> Result<kube::Client, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(Error::io(format!("read the kubeconfig {}", path.display())))?;
    client(&text).await
}

/// Polls until the server answers and has bootstrapped (namespace `default` exists), or fails
/// after [`READY_TIMEOUT`].
pub async fn wait_ready(client: &kube::Client) -> Result<(), Error> {
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(_)) = namespaces.get_opt("default").await {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Timeout(format!(
                "the API server did not answer within {READY_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fails, naming the install script, unless `kubectl` is installed.
pub fn require_kubectl() -> Result<(), Error> {
    require_tool("kubectl", std::process::Command::new("kubectl").args(["version", "--client"]))
}

/// `kubectl --cache-dir CACHE ARGS…` with `KUBECONFIG` set to `kubeconfig`, stdin closed, killed
/// when dropped. The cache directory keeps discovery from leaking between tests (and from the
/// user's `~/.kube`).
pub fn kubectl(kubeconfig: &Path, cache_dir: &Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.env("KUBECONFIG", kubeconfig)
        .arg("--cache-dir")
        .arg(cache_dir)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}
