//! Events about objects (`events.k8s.io/v1`, which the API server also serves as core v1 Events
//! to `kubectl describe` and `kubectl get events`).
//!
//! Repeats are aggregated as client-go's event recorder does: an event with the same regarding
//! object, type, reason, note and source as one published before is not written again; that
//! event's count goes up and its last timestamp moves (the core fields `count`,
//! `firstTimestamp` and `lastTimestamp` kubectl shows as LAST SEEN, here their events.k8s.io
//! names `deprecatedCount` etc., plus `series`). Like client-go, the memory of what was
//! published is per process and bounded.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{EventSource, ObjectReference};
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams, PostParams};

pub use kube::runtime::events::EventType;

use crate::Context;

/// The `reportingController` of every event holdfast publishes.
pub const REPORTING_CONTROLLER: &str = "holdfast.io/controllers";

/// Kubernetes limits an event note to 1 kB.
const NOTE_MAX: usize = 1024;

/// How many distinct events are remembered (client-go's cache holds 4096).
const CACHE_MAX: usize = 4096;

/// The events published by this process, by what makes two of them the same.
#[derive(Debug, Default)]
pub struct EventCache {
    seen: Mutex<HashMap<String, Seen>>,
}

#[derive(Debug, Clone)]
struct Seen {
    namespace: String,
    name: String,
    count: i32,
}

impl EventCache {
    fn get(&self, key: &str) -> Option<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    fn put(&self, key: String, seen: Seen) {
        let mut map = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CACHE_MAX && !map.contains_key(&key) {
            // Forgetting only means the next repeat starts a new event, as after a restart.
            map.clear();
        }
        map.insert(key, seen);
    }
}

/// What client-go's `getEventKey` compares: source, regarding object, type, reason, message.
fn event_key(event: &Event) -> String {
    let r = event.regarding.clone().unwrap_or_default();
    [
        event.reporting_controller.as_deref(),
        r.api_version.as_deref(),
        r.kind.as_deref(),
        r.namespace.as_deref(),
        r.name.as_deref(),
        r.uid.as_deref(),
        r.field_path.as_deref(),
        event.type_.as_deref(),
        event.reason.as_deref(),
        event.note.as_deref(),
    ]
    .map(|p| p.unwrap_or(""))
    .join("\u{0}")
}

/// Publishes an event about `obj`, or counts a repeat of one published before. Best effort: an
/// event that cannot be written is logged and otherwise ignored, because failing a reconcile
/// over a lost event would turn a report into an outage. Cluster-scoped objects get their
/// events in "default", as Kubernetes does.
pub async fn publish<K>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) where
    K: Resource<DynamicType = ()>,
{
    let regarding = obj.object_ref(&());
    let event = event_for(regarding, type_, reason, action, note);
    let key = event_key(&event);
    if let Some(seen) = ctx.events.get(&key) {
        match count_repeat(ctx, &seen).await {
            Ok(()) => {
                ctx.events.put(key, Seen { count: seen.count + 1, ..seen });
                return;
            }
            // Deleted (or expired) since: start a new one.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(error) => {
                tracing::warn!(%error, reason, note, "cannot count a repeated event");
                return;
            }
        }
    }
    let ns = event.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), &ns);
    match api.create(&PostParams::default(), &event).await {
        Ok(created) => {
            let name = created.metadata.name.unwrap_or_default();
            ctx.events.put(key, Seen { namespace: ns, name, count: 1 });
        }
        Err(error) => tracing::warn!(%error, reason, note, "cannot publish an event"),
    }
}

/// One more occurrence of the event `seen`: count + 1, last seen now.
async fn count_repeat(ctx: &Context, seen: &Seen) -> Result<(), kube::Error> {
    let now = Timestamp::now();
    let count = seen.count + 1;
    let patch = serde_json::json!({
        "deprecatedCount": count,
        "deprecatedLastTimestamp": Time(now),
        "series": EventSeries { count, last_observed_time: MicroTime(now) },
    });
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), &seen.namespace);
    api.patch(&seen.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
}

/// The event object itself (separate so its shape is testable without a server).
pub fn event_for(
    regarding: ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) -> Event {
    let now = k8s_openapi::jiff::Timestamp::now();
    let base = regarding.name.clone().unwrap_or_else(|| "holdfast".into());
    Event {
        metadata: ObjectMeta {
            // Unique per nanosecond plus a random suffix: two events in one tick must not collide.
            name: Some(format!("{base}.{:x}{:04x}", now.as_nanosecond(), rand::random::<u16>())),
            namespace: Some(regarding.namespace.clone().unwrap_or_else(|| "default".into())),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(match type_ {
            EventType::Normal => "Normal".into(),
            EventType::Warning => "Warning".into(),
        }),
        reason: Some(reason.into()),
        action: Some(action.into()),
        note: Some(truncate_note(note)),
        regarding: Some(regarding),
        reporting_controller: Some(REPORTING_CONTROLLER.into()),
        reporting_instance: Some(REPORTING_CONTROLLER.into()),
        // What core v1 readers (`kubectl get events`: LAST SEEN, COUNT) look at.
        deprecated_source: Some(EventSource {
            component: Some(REPORTING_CONTROLLER.into()),
            host: None,
        }),
        deprecated_first_timestamp: Some(Time(now)),
        deprecated_last_timestamp: Some(Time(now)),
        deprecated_count: Some(1),
        ..Event::default()
    }
}

/// Keeps the end of a long note (the tail of a log is what explains a failure), within the limit
/// and on a character boundary.
fn truncate_note(note: &str) -> String {
    if note.len() <= NOTE_MAX {
        return note.to_string();
    }
    let marker = "…";
    let mut start = note.len() - (NOTE_MAX - marker.len());
    while !note.is_char_boundary(start) {
        start += 1;
    }
    format!("{marker}{}", &note[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notes_keep_their_tail_within_the_limit() {
        let note = format!("{}END", "é".repeat(2000));
        let t = truncate_note(&note);
        assert!(t.len() <= NOTE_MAX, "{}", t.len());
        assert!(t.ends_with("END"));
        assert_eq!(truncate_note("short"), "short");
    }
}
