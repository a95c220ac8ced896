//! The error of the test launchers.

use crate::process::INSTALL_SCRIPT;

/// Why a launcher could not start or a helper failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or process operation failed; `context` says what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A program ran but exited unsuccessfully.
    #[error("{program} failed ({status}): {stderr}")]
    Command { program: String, status: String, stderr: String },
    /// A tool the tests drive is not installed. Tests fail on this instead of skipping, so a
    /// machine without the tool cannot pass them without running them.
    #[error("{tool} is not installed (looked {looked}); run {INSTALL_SCRIPT} to install it")]
    Missing { tool: String, looked: String },
    /// Something the launcher needs is not there (a system account, a file).
    #[error("{0} not found")]
    NotFound(String),
    /// Something did not become ready in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A call to the API server failed.
    #[cfg(feature = "kube")]
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A kubeconfig could not be read or turned into a client.
    #[cfg(feature = "kube")]
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// The in-process API server could not be set up (store, TLS material, tokens, listener).
    #[cfg(feature = "apiserver")]
    #[error("API server set-up: {0}")]
    ApiServer(String),
}

impl Error {
    /// An [`Error::Io`] with what was being done, for `map_err`.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    /// An [`Error::Missing`] for `tool`, looked for on PATH.
    pub fn missing(tool: impl Into<String>) -> Error {
        Error::Missing { tool: tool.into(), looked: "on PATH".into() }
    }
}
