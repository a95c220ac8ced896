//! WATCH: a chunked stream of newline-delimited JSON events.
//!
//! A watch from `resourceVersion` unset or `0` (or with `sendInitialEvents`) starts with a
//! synthetic ADDED per current object; from `N` it replays the store's log after `N` and goes
//! live. Selector transitions become ADDED/DELETED; bookmarks come every minute when asked and
//! once before the stream ends at `timeoutSeconds`. A revision the store has compacted answers
//! `200` with one ERROR event (410 Expired) so clients relist, as the apiserver does.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use holdfast_api::{FieldError, ResourceDef};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::ApiError;
use crate::handler::{ApiServer, Filter, Params, storage_resource, store_error};
use crate::store::{Event, EventType, StoreError};
use crate::table;

/// How often a bookmark is sent when the client allows them.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);
/// Events buffered for a slow client before the writer waits.
const BUFFER: usize = 64;

/// Starts a watch of `def` objects (in `namespace`, if given) per `params`.
///
/// # Errors
/// 400 for bad selectors or resourceVersion, 422 for `sendInitialEvents` without
/// `resourceVersionMatch=NotOlderThan` and `allowWatchBookmarks`, or `resourceVersionMatch`
/// without `sendInitialEvents`; 500/503 when the store fails.
pub(crate) async fn serve(
    server: &ApiServer,
    def: &ResourceDef,
    namespace: Option<String>,
    params: &Params,
    accept: &str,
) -> Result<Response, ApiError> {
    let filter = Filter::new(def, params)?;
    let store = server.store().clone();
    let resource = storage_resource(def);
    // The initial state is read on a blocking thread: SQLite reads block.
    let initial_list = async |ns: Option<String>| -> Result<(Vec<Value>, u64), ApiError> {
        let (store, resource) = (store.clone(), resource.clone());
        let (items, rev, _) =
            tokio::task::spawn_blocking(move || store.list(&resource, ns.as_deref(), None, None))
                .await
                .map_err(|e| ApiError::internal(format!("watch list task failed: {e}")))?
                .map_err(store_error)?;
        let objs = items
            .into_iter()
            .filter_map(|s| {
                let view = crate::handler::from_storage(def, s.object.clone());
                filter.matches(&s.object, &view).then_some(view)
            })
            .collect();
        Ok((objs, rev))
    };
    let forbidden = |field: &str, msg: &str| {
        ApiError::invalid_list_options(&[FieldError::forbidden(field, msg)])
    };
    let (initial, from_rev, initial_end) = if params.send_initial_events {
        if params.resource_version_match.as_deref() != Some("NotOlderThan") {
            return Err(forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        // The end of the initial events is announced by a bookmark, which a client that does
        // not allow bookmarks would never see.
        if !params.allow_watch_bookmarks {
            return Err(forbidden(
                "allowWatchBookmarks",
                "sendInitialEvents requires setting allowWatchBookmarks to true",
            ));
        }
        let (objs, rev) = initial_list(namespace.clone()).await?;
        (objs, rev, true)
    } else {
        if params.resource_version_match.is_some() {
            return Err(forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        match params.resource_version.as_deref() {
            None | Some("0") => {
                let (objs, rev) = initial_list(namespace.clone()).await?;
                (objs, rev, false)
            }
            Some(rv) => {
                let rev = rv.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version: {rv:?}"))
                })?;
                (Vec::new(), rev, false)
            }
        }
    };
    let timeout = params
        .timeout_seconds
        .map(Duration::from_secs)
        // The apiserver's default: between --min-request-timeout (1800 s) and twice that.
        .unwrap_or_else(|| Duration::from_secs(rand::rng().random_range(1800..3600)));
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(BUFFER);
    let watcher = Watcher {
        def: def.clone(),
        filter,
        namespace,
        table: table::wants_table(accept),
        sent_headers: false,
        bookmarks: params.allow_watch_bookmarks,
        last_rev: from_rev,
        tx,
    };
    let current = store.current_rev();
    // A revision the store has not reached would make every bookmark claim progress that never
    // happened; the apiserver answers such a watch with a 504 ERROR event.
    let started = if from_rev > current {
        Err(StoreError::FutureRevision { requested: from_rev, current })
    } else {
        store.watch(&resource, from_rev)
    };
    match started {
        Ok(events) => {
            tokio::spawn(watcher.run(initial, initial_end, events, timeout));
        }
        Err(e @ (StoreError::Compacted { .. } | StoreError::FutureRevision { .. })) => {
            let status = store_error(e).status();
            tokio::spawn(async move {
                let _ = watcher.send("ERROR", status).await;
            });
        }
        Err(e) => return Err(store_error(e)),
    }
    let mut resp = (StatusCode::OK, Body::from_stream(ReceiverStream::new(rx))).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

struct Watcher {
    def: ResourceDef,
    filter: Filter,
    namespace: Option<String>,
    table: bool,
    sent_headers: bool,
    bookmarks: bool,
    /// The revision up to which every event of the resource has been delivered or filtered out
    /// (the start revision before the first event). Bookmarks carry it, as the apiserver's do: a
    /// client resuming from it misses nothing and is not sent anything twice.
    last_rev: u64,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
}

/// The client went away.
struct Gone;

impl Watcher {
    async fn send(&self, kind: &str, object: Value) -> Result<(), Gone> {
        let mut line = json!({"type": kind, "object": object}).to_string();
        line.push('\n');
        self.tx.send(Ok(Bytes::from(line))).await.map_err(|_| Gone)
    }

    /// Sends an object event, as a one-row Table when the client asked for tables.
    async fn send_object(&mut self, kind: &str, mut obj: Value) -> Result<(), Gone> {
        crate::handler::ensure_type_meta(&self.def, &mut obj);
        if self.table {
            let rv = obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null);
            // Column headers only in the first event, as the apiserver does.
            obj = table::table(
                &self.def,
                &[obj],
                json!({"resourceVersion": rv}),
                !self.sent_headers,
                jiff::Timestamp::now(),
            );
            self.sent_headers = true;
        }
        self.send(kind, obj).await
    }

    async fn bookmark(&self, initial_events_end: bool) -> Result<(), Gone> {
        let mut meta = json!({"resourceVersion": self.last_rev.to_string()});
        if initial_events_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj =
            json!({"kind": self.def.kind, "apiVersion": self.def.api_version(), "metadata": meta});
        self.send("BOOKMARK", obj).await
    }

    /// What a store event means to this watcher: the event type and object to send, if any.
    fn classify(&self, ev: &Event) -> Option<(&'static str, Value)> {
        if self.namespace.as_deref().is_some_and(|ns| ns != ev.key.namespace) {
            return None;
        }
        let view = crate::handler::from_storage(&self.def, ev.object.clone());
        let now = self.filter.matches(&ev.object, &view);
        match ev.kind {
            EventType::Added => now.then_some(("ADDED", view)),
            EventType::Deleted => now.then_some(("DELETED", view)),
            EventType::Modified => {
                let before = ev.prev.as_ref().is_some_and(|p| {
                    let prev_view = crate::handler::from_storage(&self.def, p.clone());
                    self.filter.matches(p, &prev_view)
                });
                match (before, now) {
                    (true, true) => Some(("MODIFIED", view)),
                    (false, true) => Some(("ADDED", view)),
                    (true, false) => Some(("DELETED", view)),
                    (false, false) => None,
                }
            }
        }
    }

    async fn run<S>(mut self, initial: Vec<Value>, initial_end: bool, events: S, timeout: Duration)
    where
        S: Stream<Item = Result<std::sync::Arc<Event>, StoreError>> + Send + 'static,
    {
        let _ = self.stream(initial, initial_end, events, timeout).await;
    }

    async fn stream<S>(
        &mut self,
        initial: Vec<Value>,
        initial_end: bool,
        events: S,
        timeout: Duration,
    ) -> Result<(), Gone>
    where
        S: Stream<Item = Result<std::sync::Arc<Event>, StoreError>> + Send + 'static,
    {
        for obj in initial {
            self.send_object("ADDED", obj).await?;
        }
        if initial_end {
            self.bookmark(true).await?;
        }
        let mut events = std::pin::pin!(events);
        let deadline = tokio::time::sleep(timeout);
        let mut deadline = std::pin::pin!(deadline);
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + BOOKMARK_INTERVAL,
            BOOKMARK_INTERVAL,
        );
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(ev)) => {
                        self.last_rev = self.last_rev.max(ev.rev);
                        if let Some((kind, obj)) = self.classify(&ev) {
                            self.send_object(kind, obj).await?;
                        }
                    }
                    Some(Err(StoreError::Compacted { requested, compacted })) => {
                        let status = ApiError::expired(format!("too old resource version: {requested} ({compacted})"));
                        return self.send("ERROR", status.status()).await;
                    }
                    Some(Err(e)) => return self.send("ERROR", store_error(e).status()).await,
                    // The store is closing; the client re-watches from its last revision.
                    None => return Ok(()),
                },
                _ = tick.tick(), if self.bookmarks => self.bookmark(false).await?,
                () = &mut deadline => {
                    if self.bookmarks {
                        self.bookmark(false).await?;
                    }
                    return Ok(());
                }
                () = self.tx.closed() => return Err(Gone),
            }
        }
    }
}
