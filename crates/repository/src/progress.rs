//! Progress reporting and cancellation, shared by backup, restore, check and prune.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// A point-in-time view of an operation's progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Files expected (0 until the scan has counted them).
    pub files_total: u64,
    /// Bytes expected.
    pub bytes_total: u64,
    /// Files finished (read, skipped as unchanged, or restored).
    pub files_done: u64,
    /// Bytes finished.
    pub bytes_done: u64,
    /// Files whose content was actually read from disk (backup) or fetched (restore).
    pub files_read: u64,
    /// Bytes actually read (backup) or written (restore).
    pub bytes_read: u64,
    /// Whether the totals are final.
    pub totals_known: bool,
}

/// Called with the current progress a few times a second and once at the end.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Cooperative cancellation: clone it, hand it to an operation, call [`CancelToken::cancel`].
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A fresh, uncancelled token.
    pub fn new() -> Self {
        Self::default()
    }
    /// Requests cancellation.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The live counters behind [`Progress`].
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) files_total: AtomicU64,
    pub(crate) bytes_total: AtomicU64,
    pub(crate) files_done: AtomicU64,
    pub(crate) bytes_done: AtomicU64,
    pub(crate) files_read: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
    pub(crate) totals_known: AtomicBool,
}

impl Counters {
    /// Snapshot of the counters.
    pub fn get(&self) -> Progress {
        Progress {
            files_total: self.files_total.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            files_done: self.files_done.load(Ordering::Relaxed),
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            files_read: self.files_read.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            totals_known: self.totals_known.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn add(c: &AtomicU64, v: u64) {
        c.fetch_add(v, Ordering::Relaxed);
    }
}

/// Calls a progress callback every `interval` on its own thread until dropped, then once more.
pub(crate) struct Ticker {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
    counters: Arc<Counters>,
    callback: Option<ProgressFn>,
}

impl Ticker {
    pub(crate) fn start(counters: Arc<Counters>, callback: Option<ProgressFn>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = callback.clone().map(|cb| {
            let stop = stop.clone();
            let counters = counters.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    cb(&counters.get());
                    std::thread::park_timeout(Duration::from_millis(200));
                }
            })
        });
        Self { stop, handle, counters, callback }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
        if let Some(cb) = &self.callback {
            cb(&self.counters.get());
        }
    }
}
