//! The API server inside the test process over a SQLite store in a temporary directory: reached
//! without TCP ([`InProcessApi`], as the controllers reach it) or behind real HTTPS with bearer
//! tokens and the kubeconfig `holdfast server` writes ([`HttpsApi`], as kubectl and other
//! clients reach it).

use std::path::{Path, PathBuf};

use holdfast_apiserver::auth::{Authenticator, Tokens};
use holdfast_apiserver::kubeconfig::{kubeconfig, write_kubeconfig};
use holdfast_apiserver::serve::{RunningServer, spawn};
use holdfast_apiserver::tls::{TlsMaterial, load_or_create_tls};
use holdfast_apiserver::{ApiServer, Store};

use crate::{Error, kubeconfig as client};

/// The API server with every kind registered, on a fresh store in `dir`.
fn api_server(dir: &Path) -> Result<ApiServer, Error> {
    let store = Store::open(&dir.join("store.db")).map_err(|e| Error::ApiServer(e.to_string()))?;
    Ok(ApiServer::new(store, holdfast_api::registry()))
}

fn temp_dir(prefix: &str) -> Result<tempfile::TempDir, Error> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(Error::io("create a temporary directory"))
}

/// The API server in this process, with a client that calls its router directly.
pub struct InProcessApi {
    /// A client of the server (default namespace `default`).
    pub client: kube::Client,
    /// The server, for what a test does beside the API (compaction, log paths, …).
    pub server: ApiServer,
    dir: tempfile::TempDir,
}

impl InProcessApi {
    /// A server on a fresh store.
    pub fn start() -> Result<InProcessApi, Error> {
        let dir = temp_dir("holdfast-api-")?;
        let server = api_server(dir.path())?;
        let client = kube::Client::new(server.router(), "default");
        Ok(InProcessApi { client, server, dir })
    }

    /// The temporary directory holding the store, removed with it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The API server in this process behind HTTPS on a free port of 127.0.0.1, with the TLS
/// material, tokens and admin kubeconfig `holdfast server` would write, and pod logs served
/// from `<dir>/pod-logs`.
pub struct HttpsApi {
    server: ApiServer,
    running: Option<RunningServer>,
    url: String,
    tls: TlsMaterial,
    auth: Authenticator,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

impl HttpsApi {
    /// Starts the server and returns once it answers. Must be called inside a Tokio runtime.
    pub async fn start() -> Result<HttpsApi, Error> {
        let setup = |e: &dyn std::fmt::Display| Error::ApiServer(e.to_string());
        let dir = temp_dir("holdfast-https-")?;
        let server = api_server(dir.path())?.with_pod_log_dir(dir.path().join("pod-logs"));
        let tls = load_or_create_tls(dir.path(), &[]).map_err(|e| setup(&e))?;
        let auth = Authenticator::load_or_create(dir.path(), &server).map_err(|e| setup(&e))?;
        let addr = "127.0.0.1:0".parse().map_err(|e| setup(&e))?;
        let running =
            spawn(server.router(), auth.clone(), tls.clone(), addr).await.map_err(|e| setup(&e))?;
        let url = running.url();
        let path = dir.path().join("kubeconfig");
        let admin =
            auth.tokens().admin_token().ok_or_else(|| Error::NotFound("an admin token".into()))?;
        write_kubeconfig(&path, &kubeconfig(&url, &tls.ca_pem, admin))
            .map_err(Error::io(format!("write {}", path.display())))?;
        let https =
            HttpsApi { server, running: Some(running), url, tls, auth, kubeconfig: path, dir };
        client::wait_ready(&https.admin().await?).await?;
        Ok(https)
    }

    /// The server, for what a test does beside the API (log paths, …).
    pub fn server(&self) -> &ApiServer {
        &self.server
    }

    /// The temporary directory holding the store, TLS material, tokens and pod logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The listening server (its address).
    pub fn running(&self) -> &RunningServer {
        self.running.as_ref().expect("running until shutdown, which consumes self")
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA and serving certificate.
    pub fn tls(&self) -> &TlsMaterial {
        &self.tls
    }

    /// The static bearer tokens the server accepts.
    pub fn tokens(&self) -> &Tokens {
        self.auth.tokens()
    }

    /// The authentication and authorization layer (tokens, RBAC).
    pub fn auth(&self) -> &Authenticator {
        &self.auth
    }

    /// The admin kubeconfig file.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Kubeconfig text for this server with `token`.
    pub fn kubeconfig(&self, token: &str) -> String {
        kubeconfig(&self.url, &self.tls.ca_pem, token)
    }

    /// Writes a kubeconfig with `token` as `<dir>/<name>`; its path.
    pub fn write_kubeconfig(&self, name: &str, token: &str) -> Result<PathBuf, Error> {
        let path = self.dir.path().join(name);
        write_kubeconfig(&path, &self.kubeconfig(token))
            .map_err(Error::io(format!("write {}", path.display())))?;
        Ok(path)
    }

    /// A kube-rs client through a kubeconfig with `token`.
    pub async fn client(&self, token: &str) -> Result<kube::Client, Error> {
        client::client(&self.kubeconfig(token)).await
    }

    /// A client with the admin token.
    pub async fn admin(&self) -> Result<kube::Client, Error> {
        let token =
            self.tokens().admin_token().ok_or_else(|| Error::NotFound("an admin token".into()))?;
        self.client(token).await
    }

    /// A client with the read-only token.
    pub async fn viewer(&self) -> Result<kube::Client, Error> {
        let token =
            self.tokens().view_token().ok_or_else(|| Error::NotFound("a view token".into()))?;
        self.client(token).await
    }

    /// Stops accepting and waits for the graceful shutdown; the directory goes with `self`.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        match self.running.take() {
            Some(running) => running.shutdown().await.map_err(|e| Error::ApiServer(e.to_string())),
            None => Ok(()),
        }
    }
}
