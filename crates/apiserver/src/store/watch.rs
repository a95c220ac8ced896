//! Watch streams: replay from the durable log, then live events, with no gap and no duplicate.
//!
//! Why this is gap-free: the stream subscribes to the broadcast channel before it reads the log.
//! The writer publishes an event only after its commit, so any event missing from a log snapshot
//! (committed after the snapshot) was published after the subscription and is in the channel.
//! Events in both places are skipped by revision (`rev <= last`). If the channel overflows
//! (`Lagged`), the stream goes back to the log from its last revision: the dropped events were
//! committed before the overflow was seen, so the next log snapshot holds them.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::broadcast::{self, error::RecvError};

use super::sqlite;
use super::{Event, Shared, StoreError};

/// Log entries read per replay query; bounds the memory of a catching-up watcher.
const REPLAY_PAGE: usize = 512;

enum Phase {
    Replay,
    Live,
}

struct Watch {
    shared: Arc<Shared>,
    resource: String,
    /// The revision of the last event handed out (or `from_rev`).
    last: u64,
    live: broadcast::Receiver<Arc<Event>>,
    pending: VecDeque<Arc<Event>>,
    phase: Phase,
    done: bool,
}

pub(super) fn stream(
    shared: Arc<Shared>,
    resource: String,
    from_rev: u64,
    live: broadcast::Receiver<Arc<Event>>,
) -> impl Stream<Item = Result<Arc<Event>, StoreError>> + Send + Unpin + 'static {
    let watch = Watch {
        shared,
        resource,
        last: from_rev,
        live,
        pending: VecDeque::new(),
        phase: Phase::Replay,
        done: false,
    };
    // Boxed so callers get an `Unpin` stream they can `.next().await` without pinning.
    Box::pin(futures::stream::unfold(watch, |mut watch| async move {
        let item = watch.next().await?;
        Some((item, watch))
    }))
}

impl Watch {
    async fn next(&mut self) -> Option<Result<Arc<Event>, StoreError>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.last = event.rev;
                return Some(Ok(event));
            }
            match self.phase {
                Phase::Replay => match self.replay_page().await {
                    Ok(true) => self.phase = Phase::Live,
                    Ok(false) => {}
                    Err(e) => {
                        // Compacted (or a broken store): end the stream after the error, so the
                        // client relists instead of silently missing events.
                        self.done = true;
                        return Some(Err(e));
                    }
                },
                Phase::Live => match self.live.recv().await {
                    Ok(event) => {
                        if event.rev > self.last && event.key.resource == self.resource {
                            self.last = event.rev;
                            return Some(Ok(event));
                        }
                    }
                    Err(RecvError::Lagged(_)) => self.phase = Phase::Replay,
                    Err(RecvError::Closed) => {
                        self.done = true;
                        return None;
                    }
                },
            }
        }
    }

    /// Reads the next page of the log into `pending`. Returns whether the log is exhausted (as of
    /// this read's snapshot), i.e. whether to switch to live events.
    async fn replay_page(&mut self) -> Result<bool, StoreError> {
        let after = self.last;
        let shared = Arc::clone(&self.shared);
        let resource = self.resource.clone();
        let read = move || {
            shared
                .readers
                .with(|conn| sqlite::log_page(conn, &shared.codec, &resource, after, REPLAY_PAGE))
        };
        // SQLite reads block; keep them off the async workers when there is a runtime.
        let (events, compacted) = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime.spawn_blocking(read).await.map_err(|_| StoreError::Closed)??,
            Err(_) => read()?,
        };
        if after < compacted {
            return Err(StoreError::Compacted { requested: after, compacted });
        }
        let exhausted = events.len() < REPLAY_PAGE;
        self.pending.extend(events.into_iter().map(Arc::new));
        Ok(exhausted)
    }
}
