//! The real `holdfast server` process: started on a free port over a data directory, reached
//! through the kubeconfig it writes there, and killed with SIGKILL when a test wants a crash (or
//! when dropped).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::Error;
use crate::kubeconfig;

/// What the server prints first, before its URL.
const BANNER: &str = "holdfast server listening on ";

/// A running `holdfast server`.
pub struct HoldfastServer {
    child: Child,
    url: String,
    data_dir: PathBuf,
}

impl HoldfastServer {
    /// Starts `exe server --listen 127.0.0.1:0 --data-dir DATA_DIR` (the test passes
    /// `env!("CARGO_BIN_EXE_holdfast")`) and returns once it printed its banner. Must be called
    /// inside a Tokio runtime: a task keeps draining the server's stdout.
    pub async fn start(exe: &Path, data_dir: &Path) -> Result<HoldfastServer, Error> {
        Self::start_with(exe, data_dir, &[]).await
    }

    /// [`HoldfastServer::start`] with more arguments (`--no-controllers`: the API server alone,
    /// as a cluster's API server for `holdfast operator`).
    pub async fn start_with(
        exe: &Path,
        data_dir: &Path,
        extra: &[&str],
    ) -> Result<HoldfastServer, Error> {
        let mut child = Command::new(exe)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(Error::io(format!("start {} server", exe.display())))?;
        let stdout = child.stdout.take().ok_or_else(|| Error::NotFound("server stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .map_err(|_| Error::Timeout("no banner from holdfast server within 60 s".into()))?
            .map_err(Error::io("read the banner of holdfast server"))?
            .ok_or_else(|| Error::Command {
                program: "holdfast server".into(),
                status: "exited before printing its banner".into(),
                stderr: String::new(),
            })?;
        let url = first
            .strip_prefix(BANNER)
            .ok_or_else(|| Error::Command {
                program: "holdfast server".into(),
                status: format!("unexpected banner {first:?}"),
                stderr: String::new(),
            })?
            .to_string();
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(HoldfastServer { child, url, data_dir: data_dir.to_path_buf() })
    }

    /// The URL from the banner (`https://127.0.0.1:<port>`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client from the kubeconfig the server (re)wrote into its data directory, once the API
    /// answers.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        let client = kubeconfig::client_from_file(&self.data_dir.join("kubeconfig")).await?;
        kubeconfig::wait_ready(&client).await?;
        Ok(client)
    }

    /// The kubeconfig the server wrote into its data directory.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.data_dir.join("kubeconfig")
    }

    /// SIGKILL (no shutdown path runs) and wait until the process is gone.
    pub async fn kill_9(&mut self) -> Result<(), Error> {
        self.child.start_kill().map_err(Error::io("kill holdfast server"))?;
        self.child.wait().await.map_err(Error::io("wait for holdfast server"))?;
        Ok(())
    }
}
