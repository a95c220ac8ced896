//! Errors of the repository engine. Every variant carries the object, path or backend it concerns,
//! so a one-line rendering is enough for an operator to act on.

use std::path::PathBuf;

use crate::backend::BackendError;

/// Everything a repository operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The storage backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// No repository exists at the location (no `config` object).
    #[error("no repository at {location}: the config object is missing (run `repo init` first)")]
    NoRepository {
        /// Backend location.
        location: String,
    },
    /// `init` found an existing repository.
    #[error("a repository already exists at {location}")]
    AlreadyInitialized {
        /// Backend location.
        location: String,
    },
    /// No key file could be unwrapped with the given password.
    #[error("wrong password or no key file matches at {location}")]
    WrongPassword {
        /// Backend location.
        location: String,
    },
    /// An archive file name already holds different content (format §16).
    #[error(
        "archive/{name} already holds different content; refusing to overwrite it (is a second \
         server archiving into this repository under the same identity?)"
    )]
    ArchiveConflict {
        /// The archive file's name.
        name: String,
    },
    /// An object failed authentication or did not parse.
    #[error("corrupt object {object}: {reason}")]
    CorruptObject {
        /// Object path in the repository.
        object: String,
        /// What was wrong.
        reason: String,
    },
    /// A blob's tag or hash did not verify.
    #[error("corrupt blob {blob} in pack {pack}: {reason}")]
    CorruptBlob {
        /// Blob id (hex).
        blob: String,
        /// Pack name (hex).
        pack: String,
        /// What was wrong.
        reason: String,
    },
    /// A blob referenced by a tree or snapshot is not in the index.
    #[error("blob {blob} is not in the index")]
    MissingBlob {
        /// Blob id (hex).
        blob: String,
    },
    /// Prune found snapshots that reference blobs the index does not list. Their packs may
    /// exist without an index (a lost or damaged index file), so prune cannot tell which packs
    /// are unused and deletes nothing.
    #[error(
        "prune refused, nothing was deleted: {count} blob(s) that snapshots reference are not in \
         the index (first: {example}); run `holdfast repo repair index` to re-index the packs \
         from their own headers, then `holdfast repo check`"
    )]
    UnindexedReferences {
        /// How many referenced blobs the index lacks.
        count: usize,
        /// One of them (hex).
        example: String,
    },
    /// A restore wrote everything it could, but these entries (one line each: the path and
    /// what could not be read) are incomplete or missing.
    #[error(
        "restore finished, but {} entr(y/ies) could not be restored completely: {}",
        .0.len(),
        .0.join("; ")
    )]
    DamagedFiles(Vec<String>),
    /// `restore --verify` read back files that differ from the snapshot.
    #[error(
        "restore verification failed, {} file(s) differ from the snapshot (restore them again): {}",
        .0.len(),
        .0.join("; ")
    )]
    VerifyFailed(Vec<String>),
    /// The object was written by a newer or unknown format version.
    #[error("unsupported format version {version} in {object}")]
    UnsupportedVersion {
        /// Object path.
        object: String,
        /// The version found.
        version: u32,
    },
    /// A local file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A snapshot selector matched nothing or more than one snapshot.
    #[error("snapshot {selector}: {reason}")]
    SnapshotNotFound {
        /// What the user asked for.
        selector: String,
        /// Why it did not resolve.
        reason: String,
    },
    /// A path inside a snapshot does not exist.
    #[error("path {path} not found in snapshot")]
    PathNotFound {
        /// The path asked for.
        path: String,
    },
    /// A key operation was refused.
    #[error("key {key}: {reason}")]
    Key {
        /// Key file name.
        key: String,
        /// Why.
        reason: String,
    },
    /// Bad caller input (options, arguments).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The operation was cancelled through its cancel token.
    #[error("operation cancelled")]
    Cancelled,
    /// `check` found problems; each is listed.
    #[error("check found {} error(s): {}", .0.len(), .0.join("; "))]
    CheckFailed(Vec<String>),
    /// Another process holds a lock that conflicts with the one asked for.
    #[error(
        "the repository at {location} is locked: {holder}; wait for it to finish (or pass \
         --retry-lock), or if that process is gone, run `holdfast repo unlock`"
    )]
    Locked {
        /// Backend location.
        location: String,
        /// Who holds it, one line.
        holder: String,
    },
    /// A held lock can no longer be trusted, so the operation stops before it commits anything.
    #[error(
        "the repository lock was lost: {reason}; nothing was committed, run the operation again"
    )]
    LockLost {
        /// Why.
        reason: String,
    },
    /// A pipeline worker thread panicked or disappeared.
    #[error("internal pipeline failure: {0}")]
    Pipeline(String),
}

impl Error {
    /// Wraps an I/O error with the operation and path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { op, path: path.into(), source }
    }

    pub(crate) fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::CorruptObject { object: object.into(), reason: reason.into() }
    }

    /// Whether stored data is gone or damaged (as opposed to, say, a network error, which must
    /// stop an operation rather than have it skip what it could not read).
    pub(crate) fn is_damage(&self) -> bool {
        match self {
            Self::CorruptBlob { .. } | Self::MissingBlob { .. } | Self::CorruptObject { .. } => {
                true
            }
            Self::Backend(b) => b.is_not_found(),
            _ => false,
        }
    }
}

/// Result alias of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
