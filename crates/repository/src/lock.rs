//! Repository locks (format §12.1): shared for everything that reads or adds data, exclusive for
//! what deletes it (prune, repair).
//!
//! restic's model. A lock is an encrypted object in `locks/`. Taking one writes it first and then
//! lists the others, so of two processes that race, at least one sees the other and backs off
//! (both may, and retry). A holder rewrites its lock every [`REFRESH_INTERVAL`]; a lock whose time
//! is older than [`STALE_AFTER`], or that names a process on this host that no longer exists, is
//! stale and ignored (`repo unlock` removes it). Because a holder that could not refresh for that
//! long may already be ignored by others, [`RepoLock::check`] fails once the last refresh is older
//! than [`VALID_FOR`]: a backup checks before it commits, so a suspended or cut-off writer never
//! publishes a snapshot that a prune running meanwhile could have broken.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, FileType};
use crate::crypto::{MasterKey, ObjectKind};
use crate::error::{Error, Result};
use crate::{Id, Repository};

/// How often a holder rewrites its lock.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// A lock not refreshed for this long is stale: its holder is gone or cut off.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How long after its last refresh a holder still trusts its own lock: the margin to
/// [`STALE_AFTER`] covers clock skew between hosts and the time a commit takes.
pub const VALID_FOR: Duration = Duration::from_secs(25 * 60);
/// How often a waiting process looks again.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// Shared or exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// Backup, restore, check, forget, copy: many at once.
    Shared,
    /// Prune and repair: alone.
    Exclusive,
}

/// The JSON document of a lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// When the holder last wrote it.
    pub time: jiff::Timestamp,
    /// Exclusive or shared.
    pub exclusive: bool,
    /// Host of the holder.
    pub hostname: String,
    /// User of the holder.
    pub username: String,
    /// Process id of the holder.
    pub pid: u32,
    /// What holds it (`holdfast backup`), for the messages of those that wait.
    pub purpose: String,
    /// Makes every lock file's name unique.
    pub nonce: String,
}

impl LockInfo {
    fn new(kind: LockKind, purpose: &str) -> Self {
        Self {
            time: jiff::Timestamp::now(),
            exclusive: kind == LockKind::Exclusive,
            hostname: crate::snapshot::hostname(),
            username: crate::snapshot::username(),
            pid: std::process::id(),
            purpose: purpose.into(),
            nonce: Id(crate::crypto::random()).to_hex(),
        }
    }

    /// Why this lock is stale, or `None` when it may still be held.
    pub fn stale(&self, now: SystemTime) -> Option<String> {
        let age = now.duration_since(SystemTime::from(self.time)).unwrap_or_default();
        if age >= STALE_AFTER {
            return Some(format!("not refreshed for {}", human_age(age)));
        }
        if self.hostname == crate::snapshot::hostname() && !process_exists(self.pid) {
            return Some(format!("process {} on this host no longer exists", self.pid));
        }
        None
    }

    /// One line naming the holder.
    pub fn describe(&self) -> String {
        format!(
            "{} lock by {} (pid {} on {}, user {}) since {}",
            if self.exclusive { "an exclusive" } else { "a shared" },
            self.purpose,
            self.pid,
            self.hostname,
            self.username,
            self.time.round(jiff::Unit::Second).unwrap_or(self.time),
        )
    }
}

fn human_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

/// Whether a process of this host exists. Only Linux's `/proc` can tell; elsewhere every process
/// is assumed alive and its lock goes stale by time alone.
fn process_exists(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// A lock file found in `locks/`.
#[derive(Debug, Clone)]
pub struct FoundLock {
    /// Object name.
    pub name: String,
    /// Its content, or why it could not be read.
    pub info: std::result::Result<LockInfo, String>,
    /// When the backend last saw it written.
    pub last_modified: SystemTime,
}

impl FoundLock {
    /// Why it is stale, or `None`. A lock that cannot be read goes stale by its file's age.
    pub fn stale(&self, now: SystemTime) -> Option<String> {
        match &self.info {
            Ok(info) => info.stale(now),
            Err(e) => {
                let age = now.duration_since(self.last_modified).unwrap_or_default();
                (age >= STALE_AFTER).then(|| format!("unreadable ({e}) and {} old", human_age(age)))
            }
        }
    }

    fn describe(&self) -> String {
        match &self.info {
            Ok(info) => info.describe(),
            Err(e) => format!("an unreadable lock file locks/{} ({e})", self.name),
        }
    }

    fn exclusive(&self) -> bool {
        // A lock nobody can read might be exclusive: treat it so until it goes stale.
        self.info.as_ref().map_or(true, |i| i.exclusive)
    }
}

struct State {
    /// The lock file currently written.
    name: String,
    /// When it was last written.
    refreshed: SystemTime,
    /// Set when the lock file disappeared (`unlock --remove-all`).
    lost: Option<String>,
}

/// A held lock. Dropping it stops the refresher and deletes the lock file.
pub struct RepoLock {
    backend: Arc<dyn Backend>,
    state: Arc<Mutex<State>>,
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RepoLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoLock").field("name", &self.lock_state().name).finish()
    }
}

impl RepoLock {
    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails when the lock can no longer be trusted: removed by someone, or not refreshed for
    /// [`VALID_FOR`] (others may already treat it as stale).
    ///
    /// # Errors
    /// [`Error::LockLost`].
    pub fn check(&self) -> Result<()> {
        let s = self.lock_state();
        if let Some(reason) = &s.lost {
            return Err(Error::LockLost { reason: reason.clone() });
        }
        let age = SystemTime::now().duration_since(s.refreshed).unwrap_or_default();
        if age >= VALID_FOR {
            return Err(Error::LockLost {
                reason: format!(
                    "it was last refreshed {} ago, and after {} other processes may ignore it",
                    human_age(age),
                    human_age(STALE_AFTER)
                ),
            });
        }
        Ok(())
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let name = self.lock_state().name.clone();
        if let Err(e) = self.backend.delete(FileType::Lock, &name)
            && !e.is_not_found()
        {
            tracing::warn!(lock = %name, error = %e, "could not remove the lock file; `holdfast repo unlock` removes it once it is stale");
        }
    }
}

fn write_lock(backend: &dyn Backend, master: &MasterKey, info: &LockInfo) -> Result<String> {
    let json = serde_json::to_vec(info).map_err(|e| Error::Invalid(e.to_string()))?;
    let sealed = master.seal_object(ObjectKind::Lock, &json);
    let name = Id::of_object(&sealed).to_hex();
    backend.create(FileType::Lock, &name, Bytes::from(sealed))?;
    Ok(name)
}

impl Repository {
    /// Every lock file, readable or not (locks deleted while listing are left out).
    ///
    /// # Errors
    /// Backend errors.
    pub fn locks(&self) -> Result<Vec<FoundLock>> {
        let mut out = Vec::new();
        for info in self.backend.list(FileType::Lock)? {
            let parsed = match self.load_object(ObjectKind::Lock, FileType::Lock, &info.name) {
                Ok(json) => serde_json::from_slice::<LockInfo>(&json).map_err(|e| e.to_string()),
                Err(Error::Backend(e)) if e.is_not_found() => continue,
                Err(e @ Error::CorruptObject { .. }) => Err(e.to_string()),
                Err(e) => return Err(e),
            };
            out.push(FoundLock {
                name: info.name,
                info: parsed,
                last_modified: info.last_modified,
            });
        }
        Ok(out)
    }

    /// Takes a lock, waiting up to the handle's lock wait (see [`Repository::set_lock_wait`]) for
    /// conflicting ones to go away.
    ///
    /// # Errors
    /// [`Error::Locked`] naming the holder when the wait ends first; backend errors.
    pub fn lock(&self, kind: LockKind, purpose: &str) -> Result<RepoLock> {
        let deadline = Instant::now() + self.lock_wait();
        loop {
            let info = LockInfo::new(kind, purpose);
            let name = write_lock(&*self.backend, &self.master, &info)?;
            let conflict = match self.conflicting_lock(kind, &name) {
                Ok(c) => c,
                Err(e) => {
                    let _ = self.backend.delete(FileType::Lock, &name);
                    return Err(e);
                }
            };
            let Some(holder) = conflict else {
                return Ok(self.hold(name, kind, purpose));
            };
            self.backend.delete(FileType::Lock, &name)?;
            if Instant::now() >= deadline {
                return Err(Error::Locked {
                    location: self.backend.location(),
                    holder: holder.describe(),
                });
            }
            std::thread::sleep(RETRY_EVERY);
        }
    }

    /// The conflicting lock written first, if any: of a process holding two (a base backup
    /// holds one from before its server starts and its storing one more), the one that tells
    /// what it is doing.
    fn conflicting_lock(&self, kind: LockKind, own: &str) -> Result<Option<FoundLock>> {
        let now = SystemTime::now();
        Ok(self
            .locks()?
            .into_iter()
            .filter(|l| {
                l.name != own
                    && (kind == LockKind::Exclusive || l.exclusive())
                    && l.stale(now).is_none()
            })
            .min_by_key(|l| l.info.as_ref().map_or(l.last_modified, |i| SystemTime::from(i.time))))
    }

    fn hold(&self, name: String, kind: LockKind, purpose: &str) -> RepoLock {
        let state = Arc::new(Mutex::new(State { name, refreshed: SystemTime::now(), lost: None }));
        let (stop, stopped) = mpsc::channel::<()>();
        let backend = self.backend.clone();
        let master = self.master.clone();
        let shared = state.clone();
        let purpose = purpose.to_string();
        let refresher = std::thread::Builder::new()
            .name("holdfast-lock".into())
            .spawn(move || {
                // Ends when the lock is dropped (the sender goes away).
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(REFRESH_INTERVAL) {
                    refresh(&*backend, &master, &shared, kind, &purpose);
                }
            })
            .ok();
        RepoLock { backend: self.backend.clone(), state, stop: Some(stop), refresher }
    }

    /// Removes stale locks, or every lock with `all`; returns the removed ones with the reason.
    ///
    /// # Errors
    /// Backend errors.
    pub fn unlock(&self, all: bool) -> Result<Vec<(FoundLock, String)>> {
        let now = SystemTime::now();
        let mut removed = Vec::new();
        for l in self.locks()? {
            let reason = match (l.stale(now), all) {
                (Some(why), _) => why,
                (None, true) => "removed by --remove-all".to_string(),
                (None, false) => continue,
            };
            match self.backend.delete(FileType::Lock, &l.name) {
                Ok(()) => removed.push((l, reason)),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(removed)
    }
}

/// Writes a fresh lock file, then removes the previous one. A previous file that vanished means
/// someone removed the lock (`unlock --remove-all`): the holder is told through `lost`.
fn refresh(
    backend: &dyn Backend,
    master: &MasterKey,
    state: &Mutex<State>,
    kind: LockKind,
    purpose: &str,
) {
    let old = state.lock().unwrap_or_else(|e| e.into_inner()).name.clone();
    match backend.stat(FileType::Lock, &old) {
        Err(e) if e.is_not_found() => {
            state.lock().unwrap_or_else(|e| e.into_inner()).lost =
                Some(format!("its lock file locks/{old} was removed by another process"));
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not refresh the repository lock; retrying");
            return;
        }
        Ok(_) => {}
    }
    let info = LockInfo::new(kind, purpose);
    match write_lock(backend, master, &info) {
        Ok(name) => {
            {
                let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                s.name = name;
                s.refreshed = SystemTime::from(info.time);
            }
            let _ = backend.delete(FileType::Lock, &old);
        }
        Err(e) => tracing::warn!(error = %e, "could not refresh the repository lock; retrying"),
    }
}
