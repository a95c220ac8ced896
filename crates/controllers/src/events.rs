//! Events about objects (`events.k8s.io/v1`, which the API server also serves as core v1 Events
//! to `kubectl describe`).

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Resource;
use kube::api::{Api, PostParams};

pub use kube::runtime::events::EventType;

use crate::Context;

/// The `reportingController` of every event holdfast publishes.
pub const REPORTING_CONTROLLER: &str = "holdfast.io/controllers";

/// Kubernetes limits an event note to 1 kB.
const NOTE_MAX: usize = 1024;

/// Publishes an event about `obj`. Best effort: an event that cannot be written is logged and
/// otherwise ignored, because failing a reconcile over a lost event would turn a report into an
/// outage. Cluster-scoped objects get their events in "default", as Kubernetes does.
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
    let ns = event.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), &ns);
    if let Err(error) = api.create(&PostParams::default(), &event).await {
        tracing::warn!(%error, reason, note, "cannot publish an event");
    }
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
