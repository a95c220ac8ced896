//! One event, two views: core/v1 Events and events.k8s.io/v1 Events are the same rows.
//!
//! kube-runtime's `Recorder` writes events.k8s.io/v1 while `kubectl describe` reads core/v1
//! (`involvedObject.*` field selectors), so the server stores the core form and converts the
//! events.k8s.io view on the way in and out, with the field mapping of the upstream conversion
//! (`pkg/apis/events/v1/conversion.go`).

use holdfast_api::ResourceDef;
use serde_json::{Map, Value};

/// Whether `def` is the events.k8s.io view.
pub(crate) fn is_event_v1(def: &ResourceDef) -> bool {
    def.group == "events.k8s.io" && def.kind == "Event"
}

/// (events.k8s.io/v1 field, core/v1 field) pairs that carry the same value.
const RENAMED: [(&str, &str); 6] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
];
const COUNT: (&str, &str) = ("deprecatedCount", "count");
const SHARED: [&str; 8] =
    ["metadata", "eventTime", "series", "reportingInstance", "action", "reason", "related", "type"];

fn convert(obj: &Value, api_version: &str, to_core: bool) -> Value {
    let Some(src) = obj.as_object() else { return obj.clone() };
    let mut out = Map::new();
    out.insert("apiVersion".into(), api_version.into());
    out.insert("kind".into(), "Event".into());
    for f in SHARED {
        if let Some(v) = src.get(f) {
            out.insert(f.into(), v.clone());
        }
    }
    for (v1, core) in RENAMED.iter().chain(std::iter::once(&COUNT)) {
        let (from, to) = if to_core { (v1, core) } else { (core, v1) };
        if let Some(v) = src.get(*from) {
            out.insert((*to).into(), v.clone());
        }
    }
    if to_core && !out.contains_key("involvedObject") {
        // Required in core/v1; an event about nothing still round-trips.
        out.insert("involvedObject".into(), Value::Object(Map::new()));
    }
    Value::Object(out)
}

/// The stored (core/v1) form of an object of kind `def`.
pub(crate) fn to_storage(def: &ResourceDef, obj: Value) -> Value {
    if is_event_v1(def) { convert(&obj, "v1", true) } else { obj }
}

/// The `def` view of a stored object.
pub(crate) fn from_storage(def: &ResourceDef, obj: Value) -> Value {
    if is_event_v1(def) { convert(&obj, &def.api_version(), false) } else { obj }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn views_round_trip() {
        let def = holdfast_api::registry().into_iter().find(is_event_v1).unwrap();
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "hello", "reportingController": "c",
            "reportingInstance": "i", "reason": "Started", "type": "Normal", "action": "Run",
            "eventTime": "2026-01-01T00:00:00.000000Z"});
        let core = to_storage(&def, v1.clone());
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "hello");
        assert_eq!(core["reportingComponent"], "c");
        assert_eq!(from_storage(&def, core), v1);
    }
}
