//! The error of the controllers crate.

/// Everything a controller can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A file operation failed; `context` says what was being done to which path.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// JSON (de)serialisation of an object or a document failed.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A repository operation failed.
    #[error("repository: {0}")]
    Repository(#[from] holdfast_repository::error::Error),
    /// An object's content cannot be acted on (missing field, dangling reference, bad value).
    /// The message names the object and the field.
    #[error("{0}")]
    Invalid(String),
    /// Something an object refers to does not exist yet or is not ready (a Secret not created
    /// yet, a PVC not bound yet): retry later rather than fail.
    #[error("{0}")]
    NotReady(String),
    /// A controller loop ended.
    #[error("controller {name} stopped: {reason}")]
    ControllerStopped { name: String, reason: String },
}

impl Error {
    /// An [`Error::Io`] with what was being done (`context`), for `map_err`.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
