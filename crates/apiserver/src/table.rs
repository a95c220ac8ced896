//! `meta.k8s.io/v1` Table output for `kubectl get`, converted the way the
//! apiserver's CRD table convertor does: a `Name` column, then the kind's printer columns evaluated
//! with JSONPath, `date` cells as human ages, and `PartialObjectMetadata` rows (kubectl reads the
//! namespace from them under `-A`).

mod jsonpath;

use holdfast_api::{PrinterColumn, ResourceDef};
use serde_json::{Map, Value, json};

pub use jsonpath::{JsonPath, Template};

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

const AGE_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// Whether the `Accept` header asks for a Table (`as=Table`; kubectl sends it for get and get -w).
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|media| media.split(';').any(|p| p.trim() == "as=Table"))
}

/// The columns of `def` after `Name`: its printer columns, or `Age` when it declares none (as the
/// apiserver does for a CRD without `additionalPrinterColumns`).
fn columns(def: &ResourceDef) -> Vec<PrinterColumn> {
    if def.printer_columns.is_empty() {
        return vec![PrinterColumn {
            name: "Age".into(),
            type_: "date".into(),
            json_path: ".metadata.creationTimestamp".into(),
            priority: 0,
            description: AGE_DESCRIPTION.into(),
        }];
    }
    def.printer_columns.clone()
}

fn column_definitions(columns: &[PrinterColumn]) -> Vec<Value> {
    let mut defs = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": NAME_DESCRIPTION, "priority": 0})];
    defs.extend(columns.iter().map(|c| {
        let description = if c.description.is_empty() {
            if c.json_path == ".metadata.creationTimestamp" {
                AGE_DESCRIPTION.to_string()
            } else {
                format!("Custom resource definition column (in JSONPath format): {}", c.json_path)
            }
        } else {
            c.description.clone()
        };
        json!({"name": c.name, "type": c.type_, "format": "", "description": description,
            "priority": c.priority})
    }));
    defs
}

/// Builds a Table of `objects` of kind `def`.
///
/// `list_meta` becomes the Table's `metadata` (`resourceVersion`, `continue`,
/// `remainingItemCount`); `with_headers` false omits `columnDefinitions` (watch events after the
/// first, as the apiserver sends them). Ages are computed relative to `now`.
pub fn table(
    def: &ResourceDef,
    objects: &[Value],
    list_meta: Value,
    with_headers: bool,
    now: jiff::Timestamp,
) -> Value {
    let columns = columns(def);
    // A path that does not parse shows as empty cells rather than failing the whole listing; the
    // kinds' own tests make sure their columns parse.
    let paths: Vec<Option<Template>> =
        columns.iter().map(|c| Template::parse(&c.json_path).ok()).collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let mut cells = vec![obj.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
            cells.extend(columns.iter().zip(&paths).map(|(col, path)| match path {
                Some(Template::Path(p)) => cell(&col.type_, &p.select(obj), now),
                Some(template) => Value::String(template.render(obj, text)),
                None => Value::Null,
            }));
            json!({"cells": cells, "object": partial_object_metadata(obj)})
        })
        .collect();
    let mut out = Map::new();
    out.insert("kind".into(), json!("Table"));
    out.insert("apiVersion".into(), json!("meta.k8s.io/v1"));
    out.insert("metadata".into(), if list_meta.is_object() { list_meta } else { json!({}) });
    if with_headers {
        out.insert("columnDefinitions".into(), Value::Array(column_definitions(&columns)));
    }
    out.insert("rows".into(), Value::Array(rows));
    Value::Object(out)
}

/// The row object: the object's metadata without `managedFields`, as `PartialObjectMetadata`.
pub fn partial_object_metadata(obj: &Value) -> Value {
    let mut metadata = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    if let Some(m) = metadata.as_object_mut() {
        m.remove("managedFields");
    }
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata})
}

/// Renders one cell from the values a column's path selected.
fn cell(type_: &str, values: &[&Value], now: jiff::Timestamp) -> Value {
    let values: Vec<&Value> = values.iter().copied().filter(|v| !v.is_null()).collect();
    let Some(first) = values.first() else {
        return Value::Null;
    };
    if values.len() > 1 {
        // Several matches (a wildcard or filter): kubectl prints them comma-separated.
        return Value::String(values.iter().map(|v| text(v)).collect::<Vec<_>>().join(","));
    }
    match type_ {
        "date" => match first.as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok()) {
            Some(t) => Value::String(human_duration(now.duration_since(t).as_secs())),
            None => Value::String(text(first)),
        },
        "integer" => match first {
            Value::Number(n) if n.is_i64() || n.is_u64() => (*first).clone(),
            Value::String(s) if s.parse::<i64>().is_ok() => json!(s.parse::<i64>().ok()),
            _ => Value::String(text(first)),
        },
        "number" => match first {
            Value::Number(_) => (*first).clone(),
            _ => Value::String(text(first)),
        },
        "boolean" => match first {
            Value::Bool(_) => (*first).clone(),
            _ => Value::String(text(first)),
        },
        _ => Value::String(text(first)),
    }
}

/// A value as kubectl's JSONPath printer shows it: strings bare, arrays of scalars
/// comma-joined (`ReadWriteOnce,ReadOnlyMany`), other structures as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(items) if items.iter().all(|i| !i.is_array() && !i.is_object()) => {
            items.iter().map(text).collect::<Vec<_>>().join(",")
        }
        other => other.to_string(),
    }
}

/// Renders an age of `seconds` as kubectl does (`k8s.io/apimachinery/pkg/util/duration`
/// `HumanDuration`): `45s`, `3m20s`, `15m`, `2h30m`, `10h`, `3d4h`, `20d`, `2y3d`, `9y`.
pub fn human_duration(seconds: i64) -> String {
    // Up to 2 s in the future is clock skew between machines, shown as now.
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 { format!("{}d", hours / 24) } else { format!("{}d{h}h", hours / 24) };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let d = (hours / 24) % 365;
        let y = hours / 24 / 365;
        return if d == 0 { format!("{y}y") } else { format!("{y}y{d}d") };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_api::resource::column;

    fn now() -> jiff::Timestamp {
        "2026-11-21T12:00:00Z".parse().unwrap()
    }

    fn def(kind: &str) -> ResourceDef {
        holdfast_api::registry().into_iter().find(|d| d.kind == kind).unwrap()
    }

    fn custom(columns: Vec<PrinterColumn>) -> ResourceDef {
        let mut d = def("Backup");
        d.printer_columns = columns;
        d
    }

    #[test]
    fn accept_detection() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
        assert!(!wants_table(""));
    }

    #[test]
    fn human_durations_follow_kubectl() {
        for (secs, want) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (300, "5m"),
            (599, "9m59s"),
            (600, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (2 * 3600 + 30 * 60, "150m"),
            (5 * 3600 + 30 * 60, "5h30m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (8 * 86400, "8d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (733 * 86400, "2y3d"),
            (8 * 365 * 86400, "8y"),
            (9 * 365 * 86400 + 86400 * 20, "9y"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}s");
        }
    }

    #[test]
    fn table_with_printer_columns_has_exact_shape() {
        let d = custom(vec![
            PrinterColumn {
                name: "Phase".into(),
                type_: "string".into(),
                json_path: ".status.phase".into(),
                priority: 0,
                description: "Backup phase".into(),
            },
            column("Errors", "integer", ".status.errors", 1),
            column("Age", "date", ".metadata.creationTimestamp", 0),
        ]);
        let obj = json!({"apiVersion": "velero.io/v1", "kind": "Backup",
            "metadata": {"name": "b1", "namespace": "velero", "creationTimestamp": "2026-11-21T11:55:00Z",
                "resourceVersion": "7", "managedFields": [{"manager": "kubectl"}]},
            "spec": {}, "status": {"phase": "Completed", "errors": 0}});
        let t = table(&d, &[obj], json!({"resourceVersion": "118", "continue": ""}), true, now());
        assert_eq!(
            t,
            json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": "118", "continue": ""},
                "columnDefinitions": [
                    {"name": "Name", "type": "string", "format": "name", "description": NAME_DESCRIPTION, "priority": 0},
                    {"name": "Phase", "type": "string", "format": "", "description": "Backup phase", "priority": 0},
                    {"name": "Errors", "type": "integer", "format": "",
                     "description": "Custom resource definition column (in JSONPath format): .status.errors", "priority": 1},
                    {"name": "Age", "type": "date", "format": "", "description": AGE_DESCRIPTION, "priority": 0}],
                "rows": [{"cells": ["b1", "Completed", 0, "5m"],
                    "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                        "metadata": {"name": "b1", "namespace": "velero",
                            "creationTimestamp": "2026-11-21T11:55:00Z", "resourceVersion": "7"}}}]})
        );
    }

    #[test]
    fn without_headers_and_missing_cells() {
        let d = custom(vec![column("Phase", "string", ".status.phase", 0)]);
        let obj = json!({"metadata": {"name": "b2"}});
        let t = table(&d, &[obj], json!({}), false, now());
        assert!(t.get("columnDefinitions").is_none());
        assert_eq!(t["rows"][0]["cells"], json!(["b2", null]));
    }

    #[test]
    fn kind_without_columns_gets_age() {
        let d = custom(vec![]);
        let obj = json!({"metadata": {"name": "b3", "creationTimestamp": "2026-11-18T08:00:00Z"}});
        let t = table(&d, &[obj], json!({}), true, now());
        let names: Vec<&Value> =
            t["columnDefinitions"].as_array().unwrap().iter().map(|c| &c["name"]).collect();
        assert_eq!(names, [&json!("Name"), &json!("Age")]);
        assert_eq!(t["columnDefinitions"][1]["type"], "date");
        assert_eq!(t["rows"][0]["cells"], json!(["b3", "3d4h"]));
    }

    #[test]
    fn jsonpath_cells() {
        let d = custom(vec![
            column("Claim", "string", ".spec.source.persistentVolumeClaimName", 0),
            column("Ann", "string", r".metadata.annotations.x\.y/z", 0),
            column("Ready", "string", r#".status.conditions[?(@.type=="Ready")].status"#, 0),
            column("Modes", "string", ".spec.accessModes", 0),
            column("Size", "integer", ".status.size", 0),
            column("Bound", "boolean", ".status.bound", 0),
            column("Ratio", "number", ".status.ratio", 0),
            column("Bad date", "date", ".status.when", 0),
        ]);
        let obj = json!({"metadata": {"name": "x", "annotations": {"x.y/z": "ann"}},
            "spec": {"source": {"persistentVolumeClaimName": "data"},
                     "accessModes": ["ReadWriteOnce", "ReadOnlyMany"]},
            "status": {"conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}],
                       "size": "42", "bound": true, "ratio": 0.5, "when": "yesterday"}});
        let t = table(&d, &[obj], json!({}), true, now());
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "x",
                "data",
                "ann",
                "True",
                "ReadWriteOnce,ReadOnlyMany",
                42,
                true,
                0.5,
                "yesterday"
            ])
        );
    }

    #[test]
    fn builtin_pvc_columns_render() {
        let obj = json!({"metadata": {"name": "data", "namespace": "default",
                "creationTimestamp": "2026-11-21T10:00:00Z"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard", "volumeName": "pv1"},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}});
        let t = table(&def("PersistentVolumeClaim"), &[obj], json!({}), true, now());
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["data", "Bound", "pv1", "1Gi", "ReadWriteOnce", "standard", "120m"])
        );
    }

    #[test]
    fn empty_table_keeps_headers() {
        let t = table(&def("Pod"), &[], json!({"resourceVersion": "3"}), true, now());
        assert_eq!(t["rows"], json!([]));
        assert_eq!(t["metadata"]["resourceVersion"], "3");
        assert_eq!(t["columnDefinitions"][0]["format"], "name");
    }
}
