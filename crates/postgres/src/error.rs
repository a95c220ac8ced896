//! The crate's error type.

/// What can go wrong backing up, archiving or restoring PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: an argument, a file that is not what it should be.
    #[error("{0}")]
    Invalid(String),
    /// The repository failed.
    #[error(transparent)]
    Repository(#[from] holdfast_repository::Error),
    /// A PostgreSQL program could not be started or failed.
    #[error("{program} failed: {message}")]
    Tool {
        /// The program (`pg_basebackup`, `psql`).
        program: String,
        /// Its exit status and last lines of error output.
        message: String,
    },
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A restore was refused before anything was written; the reason says what to do.
    #[error("restore refused, nothing was written: {0}")]
    Refused(String),
    /// WAL expiry was refused before anything was deleted; the reason says what to do.
    #[error("WAL expiry refused, nothing was deleted: {0}")]
    ExpiryRefused(String),
}

impl Error {
    /// An [`Error::Io`] builder for `map_err`.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
