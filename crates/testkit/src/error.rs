//! The error of the test launchers.

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
    /// A program the launcher needs is not installed.
    #[error("{0} not found (looked on PATH and in /usr/lib/postgresql/*/bin)")]
    NotFound(String),
    /// Something did not become ready in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A call to the API server failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The embedded API server's store could not be opened.
    #[error("store: {0}")]
    Store(String),
}

impl Error {
    /// An [`Error::Io`] with what was being done, for `map_err`.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
