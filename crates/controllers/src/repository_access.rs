//! Reaching a repository's storage the way every controller that owns one does: a probe that
//! proves the storage takes a write, gives it back and lets it go, and opening the repository
//! with its key, creating it on first use where that is allowed. Blocking: call from
//! `spawn_blocking`. Errors are one line naming the location and the cause, ready for a status
//! message.

use std::sync::Arc;

use bytes::Bytes;
use holdfast_repository::backend::{Backend, FileType};
use holdfast_repository::location::Location;
use holdfast_repository::{InitOptions, Repository};

/// Writes, reads back and deletes a probe object beside the repository (in a directory or key
/// prefix of its own, so a failure never leaves anything inside the repository).
///
/// # Errors
/// The storage cannot be opened, written, read back or deleted from.
pub fn probe_storage(location: &Location) -> Result<(), String> {
    let probe_name = format!("precheck-{:016x}", rand::random::<u64>());
    let probe =
        location.join(&probe_name).open().map_err(|e| format!("cannot open storage: {e}"))?;
    let payload = Bytes::from(format!("holdfast pre-check {probe_name}\n"));
    let round_trip = (|| {
        probe
            .create(FileType::Config, "config", payload.clone())
            .map_err(|e| format!("cannot write: {e}"))?;
        let read =
            probe.get(FileType::Config, "config").map_err(|e| format!("cannot read back: {e}"))?;
        if read != payload {
            return Err(format!(
                "read back {} bytes that differ from the {} written",
                read.len(),
                payload.len()
            ));
        }
        probe.delete(FileType::Config, "config").map_err(|e| format!("cannot delete: {e}"))
    })();
    if let Location::Local(root) = location {
        // The probe's directory is ours alone; S3 has no directories to remove.
        let _ = std::fs::remove_dir_all(root.join(&probe_name));
    }
    drop(probe);
    round_trip.map_err(|e| format!("pre-check of {location} failed: {e}"))
}

/// Opens the repository at `location` with `password`; when the location holds none and
/// `create` is set, creates it. Returns the repository and whether it was created.
/// `whose_key` completes "this key does not open it (...)" for the caller's kind of owner.
///
/// # Errors
/// No repository (and `create` unset), a key that does not open it, storage errors.
pub fn open_or_create(
    location: &Location,
    password: &str,
    create: bool,
    whose_key: &str,
) -> Result<(Repository, bool), String> {
    let wrong_key = || {
        format!(
            "a holdfast repository exists at {location} but this key does not open it ({whose_key})"
        )
    };
    let backend: Arc<dyn Backend> = if create { location.open() } else { location.open_existing() }
        .map_err(|e| format!("cannot open storage: {e}"))?;
    let opened = match Repository::open(backend.clone(), password.as_bytes()) {
        Ok(repo) => Ok((repo, false)),
        Err(holdfast_repository::Error::NoRepository { .. }) if create => {
            match Repository::init(backend.clone(), password.as_bytes(), &InitOptions::default()) {
                Ok(repo) => Ok((repo, true)),
                // Another writer created it meanwhile: it must open with our key.
                Err(holdfast_repository::Error::AlreadyInitialized { .. }) => {
                    Repository::open(backend, password.as_bytes())
                        .map(|repo| (repo, false))
                        .map_err(|_| wrong_key())
                }
                Err(e) => Err(format!("cannot create the repository at {location}: {e}")),
            }
        }
        Err(holdfast_repository::Error::NoRepository { .. }) => {
            Err(format!("there is no repository at {location}"))
        }
        Err(holdfast_repository::Error::WrongPassword { .. }) => Err(wrong_key()),
        Err(e) => Err(format!("cannot open the repository at {location}: {e}")),
    };
    if let Ok((repo, _)) = &opened {
        // Backups and restores queue behind a running maintenance instead of failing; the
        // maintenance itself sets no wait (it is postponed instead).
        repo.set_lock_wait(DATA_PATH_LOCK_WAIT);
    }
    opened
}

/// How long a backup or restore waits for a prune or repair holding the repository's exclusive
/// lock. Prunes of these repositories take minutes; a lock held longer is most likely stale, and
/// one left by a dead process on this host is recognised at once.
pub const DATA_PATH_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30 * 60);
