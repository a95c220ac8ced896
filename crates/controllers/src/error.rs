//! The error of the controllers crate, and its kind: what a failed reconcile asks of the
//! controller (see [`crate::reconciler::RequeuePolicy`]).

/// What an error means for the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Trying again unchanged cannot help: the object (or what it names) must change first, and
    /// that change arrives as a watch event. Never retried on a timer.
    Permanent,
    /// Something the object refers to does not exist yet or is not ready: the controller waits
    /// for the watch event that brings it, with a long safety requeue in case nothing watches it.
    Waiting,
    /// A hiccup (the API server, a file, the network): retried with a growing delay.
    Transient,
}

/// Everything a controller can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Adding or removing a finalizer failed (the object changed meanwhile, or the API failed).
    #[error("finalizer of {object}: {source}")]
    Finalizer {
        object: String,
        #[source]
        source: kube::Error,
    },
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
    /// An object's content cannot be acted on (missing field, dangling reference, bad value):
    /// [`ErrorKind::Permanent`]. The message names the object and the field, and what to fix.
    #[error("{0}")]
    Invalid(String),
    /// Something an object refers to does not exist yet or is not ready (a Secret not created
    /// yet, a PVC not bound yet): [`ErrorKind::Waiting`].
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

    /// What this error asks of the controller.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid(_) | Error::Json(_) => ErrorKind::Permanent,
            Error::NotReady(_) => ErrorKind::Waiting,
            Error::Kube(error) => kube_error_kind(error),
            Error::Finalizer { .. }
            | Error::Io { .. }
            | Error::Repository(_)
            | Error::ControllerStopped { .. } => ErrorKind::Transient,
        }
    }
}

/// An API answer says which kind it is: a request the server refuses as malformed (400, 422)
/// is refused again until the object changes; an object that is gone (404) may come back
/// (and its watch says so); conflicts, throttling, server errors and transport failures pass.
fn kube_error_kind(error: &kube::Error) -> ErrorKind {
    match error {
        kube::Error::Api(status) => match status.code {
            400 | 422 => ErrorKind::Permanent,
            404 => ErrorKind::Waiting,
            _ => ErrorKind::Transient,
        },
        _ => ErrorKind::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> Error {
        let status = kube::core::Status::failure("refused", "Reason").with_code(code);
        Error::Kube(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn each_error_says_what_it_asks_for() {
        assert_eq!(Error::Invalid("bad spec".into()).kind(), ErrorKind::Permanent);
        assert_eq!(Error::NotReady("no secret yet".into()).kind(), ErrorKind::Waiting);
        let io = Error::io("write /x")(std::io::Error::other("disk"));
        assert_eq!(io.kind(), ErrorKind::Transient);
        assert_eq!(api_error(422).kind(), ErrorKind::Permanent);
        assert_eq!(api_error(400).kind(), ErrorKind::Permanent);
        assert_eq!(api_error(404).kind(), ErrorKind::Waiting);
        assert_eq!(api_error(409).kind(), ErrorKind::Transient);
        assert_eq!(api_error(500).kind(), ErrorKind::Transient);
        assert_eq!(api_error(429).kind(), ErrorKind::Transient);
    }
}
