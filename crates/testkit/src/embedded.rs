//! An embedded holdfast server inside the test process: the API server over a SQLite store in a
//! temporary directory, reached through an in-process `kube::Client` (no TCP), with every
//! controller running on it exactly as `holdfast server` runs them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use holdfast_apiserver::{ApiServer, Store};
use holdfast_controllers::Context;

use crate::Error;
use crate::process::run;

/// A running embedded server; stops its controllers when dropped.
pub struct EmbeddedServer {
    /// A client of the in-process API server (default namespace `default`).
    pub client: kube::Client,
    /// The controllers' shared context.
    pub ctx: Arc<Context>,
    controllers: tokio::task::JoinHandle<()>,
    _api: ApiServer,
    dir: tempfile::TempDir,
}

impl EmbeddedServer {
    /// Starts the API server and the controllers. Must be called inside a multi-threaded Tokio
    /// runtime (`#[tokio::test(flavor = "multi_thread")]`): the controllers run as tasks on it.
    pub async fn start() -> Result<EmbeddedServer, Error> {
        Self::start_with(|ctx| ctx).await
    }

    /// [`EmbeddedServer::start`] with the controllers' context adjusted first (another clock,
    /// other intervals).
    pub async fn start_with(
        configure: impl FnOnce(Context) -> Context,
    ) -> Result<EmbeddedServer, Error> {
        let holdfast_exe = holdfast_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("holdfast-embedded-")
            .tempdir()
            .map_err(Error::io("create a temporary directory"))?;
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir)
            .map_err(Error::io(format!("create {}", data_dir.display())))?;
        let store =
            Store::open(&dir.path().join("store.db")).map_err(|e| Error::Store(e.to_string()))?;
        let api = ApiServer::new(store, holdfast_api::registry());
        let client = kube::Client::new(api.router(), "default");
        let ctx = Arc::new(configure(Context::new(client.clone(), data_dir, holdfast_exe)));
        let run_ctx = ctx.clone();
        let controllers = tokio::spawn(async move {
            if let Err(error) = holdfast_controllers::run(run_ctx).await {
                // The test sees the effect (nothing progresses); say why on stderr.
                eprintln!("embedded controllers stopped: {error}");
            }
        });
        Ok(EmbeddedServer { client, ctx, controllers, _api: api, dir })
    }

    /// The server's data directory (volumes, job logs, job scratch).
    pub fn data_dir(&self) -> &Path {
        &self.ctx.data_dir
    }

    /// A scratch directory beside the server's, removed with it.
    pub fn scratch_dir(&self, name: &str) -> Result<PathBuf, Error> {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        Ok(dir)
    }

    /// Whether the controllers are still running.
    pub fn controllers_running(&self) -> bool {
        !self.controllers.is_finished()
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        self.controllers.abort();
    }
}

/// The `holdfast` executable job processes run as `datasafed`: `$HOLDFAST_EXE` when set, else
/// built once per test process with `cargo build -p holdfast` into the same target directory
/// as the running test (Cargo has released its build lock by the time tests run).
pub fn holdfast_binary() -> Result<PathBuf, Error> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| build_holdfast().map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| Error::NotFound(format!("the holdfast binary ({e})")))
}

fn build_holdfast() -> Result<PathBuf, Error> {
    if let Some(exe) = std::env::var_os("HOLDFAST_EXE") {
        return Ok(PathBuf::from(exe));
    }
    // A test executable lives in <target>/<profile>/deps/.
    let test_exe = std::env::current_exe().map_err(Error::io("locate the test executable"))?;
    let profile_dir = test_exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| Error::NotFound("the target directory of the test executable".into()))?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| Error::NotFound("the target directory of the test executable".into()))?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "holdfast", "--bin", "holdfast"])
        .current_dir(&workspace)
        .env("CARGO_TARGET_DIR", target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    let exe = profile_dir.join("holdfast");
    if !exe.is_file() {
        return Err(Error::NotFound(format!("{} after cargo build", exe.display())));
    }
    Ok(exe)
}
