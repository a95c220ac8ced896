//! An embedded holdfast server inside the test process: the API server over a SQLite store in a
//! temporary directory, reached through an in-process `kube::Client` (no TCP), with every
//! controller running on it exactly as `holdfast server` runs them.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use holdfast_controllers::Context;

use crate::Error;
use crate::api_server::InProcessApi;

/// A running embedded server; stops its controllers when dropped.
pub struct EmbeddedServer {
    /// A client of the in-process API server (default namespace `default`).
    pub client: kube::Client,
    /// The controllers' shared context.
    pub ctx: Arc<Context>,
    controllers: tokio::task::JoinHandle<()>,
    api: InProcessApi,
}

impl EmbeddedServer {
    /// Starts the API server and the controllers. Job processes run `holdfast_exe` as
    /// `datasafed`: the test passes the binary Cargo built for it,
    /// `env!("CARGO_BIN_EXE_holdfast")`, so tests that need it live in the crate that builds it.
    ///
    /// Must be called inside a multi-threaded Tokio runtime
    /// (`#[tokio::test(flavor = "multi_thread")]`): the controllers run as tasks on it.
    pub async fn start(holdfast_exe: &Path) -> Result<EmbeddedServer, Error> {
        Self::start_with(holdfast_exe, |ctx| ctx).await
    }

    /// [`EmbeddedServer::start`] with the controllers' context adjusted first (another clock,
    /// other intervals).
    pub async fn start_with(
        holdfast_exe: &Path,
        configure: impl FnOnce(Context) -> Context,
    ) -> Result<EmbeddedServer, Error> {
        let holdfast_exe = holdfast_exe.to_path_buf();
        if !holdfast_exe.is_file() {
            return Err(Error::NotFound(format!("the holdfast binary {}", holdfast_exe.display())));
        }
        let api = InProcessApi::start()?;
        // Like a server's data directory under /var/lib: users other than the server's (a job's
        // runAsUser, a database started on a restored claim) may pass through to their claims.
        std::fs::set_permissions(api.dir(), std::fs::Permissions::from_mode(0o711))
            .map_err(Error::io(format!("chmod {}", api.dir().display())))?;
        let data_dir = api.dir().join("data");
        std::fs::create_dir_all(&data_dir)
            .map_err(Error::io(format!("create {}", data_dir.display())))?;
        let client = api.client.clone();
        let ctx = Arc::new(configure(Context::new(client.clone(), data_dir, holdfast_exe)));
        let run_ctx = ctx.clone();
        let controllers = tokio::spawn(async move {
            if let Err(error) = holdfast_controllers::run(run_ctx).await {
                // The test sees the effect (nothing progresses); say why on stderr.
                eprintln!("embedded controllers stopped: {error}");
            }
        });
        Ok(EmbeddedServer { client, ctx, controllers, api })
    }

    /// The server's data directory (volumes, job logs, job scratch).
    pub fn data_dir(&self) -> &Path {
        &self.ctx.data_dir
    }

    /// A scratch directory beside the server's, removed with it.
    pub fn scratch_dir(&self, name: &str) -> Result<PathBuf, Error> {
        let dir = self.api.dir().join(name);
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
