//! `metadata.managedFields` bookkeeping: field sets in FieldsV1 notation, per-manager entries, and
//! the ownership transfer an Update performs (as the apiserver's managedFields handling does).
//!
//! A field set is a set of paths; each path element is written as FieldsV1 does: `f:<name>` for a
//! map field, `k:{"type":"Ready"}` for an element of a keyed list, `v:<json>` for an element of a
//! set list. A path names either a leaf (scalar, atomic list, empty map) or a list element itself.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// A path in FieldsV1 notation, e.g. `["f:spec", "f:containers", "k:{\"name\":\"a\"}", "f:image"]`.
pub(crate) type FieldPath = Vec<String>;
/// A manager's owned fields.
pub(crate) type FieldSet = BTreeSet<FieldPath>;

/// How a list field merges, by field name (the built-in kinds' `x-kubernetes-patch-merge-key` /
/// `x-kubernetes-list-map-keys`, plus `conditions` by `type` for custom kinds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListKind {
    /// Elements are maps identified by these key fields.
    Keyed(Vec<&'static str>),
    /// Elements are primitives merged as a set (`metadata.finalizers`).
    Set,
    /// The list is replaced whole.
    Atomic,
}

/// The list strategy for the list field `name` whose current elements are `items`.
///
/// `ports` is keyed by `containerPort` in containers and by `port` in Services; the elements tell
/// which. A list whose elements lack the key (or repeat it) is treated as atomic so that a
/// malformed list never loses elements.
pub(crate) fn list_kind(name: &str, items: &[Value]) -> ListKind {
    let keys: Vec<&'static str> = match name {
        "finalizers" => return ListKind::Set,
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => vec!["name"],
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                vec!["containerPort"]
            } else {
                vec!["port"]
            }
        }
        "volumeMounts" => vec!["mountPath"],
        "volumeDevices" => vec!["devicePath"],
        "conditions" => vec!["type"],
        "ownerReferences" => vec!["uid"],
        "hostAliases" => vec!["ip"],
        "topologySpreadConstraints" => vec!["topologyKey", "whenUnsatisfiable"],
        _ => return ListKind::Atomic,
    };
    let mut seen = BTreeSet::new();
    for item in items {
        match element_key(item, &keys) {
            Some(k) if seen.insert(k.clone()) => {}
            _ => return ListKind::Atomic,
        }
    }
    ListKind::Keyed(keys)
}

/// The FieldsV1 key of a keyed-list element (`{"type":"Ready"}`, keys sorted), or None when the
/// element is not a map or lacks a key field.
pub(crate) fn element_key(item: &Value, keys: &[&str]) -> Option<String> {
    let obj = item.as_object()?;
    let mut sorted: Vec<&str> = keys.to_vec();
    sorted.sort_unstable();
    let mut m = Map::new();
    for k in sorted {
        m.insert(k.to_string(), obj.get(k)?.clone());
    }
    Some(Value::Object(m).to_string())
}

/// Top-level and metadata fields no manager owns (apimachinery's `stripmeta`).
fn is_stripped(path: &[String]) -> bool {
    match path {
        [top] => top == "f:apiVersion" || top == "f:kind",
        [m, f] if m == "f:metadata" => matches!(
            f.as_str(),
            "f:name"
                | "f:namespace"
                | "f:uid"
                | "f:resourceVersion"
                | "f:generation"
                | "f:creationTimestamp"
                | "f:managedFields"
                | "f:selfLink"
                | "f:deletionTimestamp"
                | "f:deletionGracePeriodSeconds"
        ),
        _ => false,
    }
}

/// Every owned path of `obj` with its value (list-element paths map to `null`: only their
/// presence matters).
pub(crate) fn leaves(obj: &Value) -> BTreeMap<FieldPath, Value> {
    let mut out = BTreeMap::new();
    if let Value::Object(m) = obj {
        let mut path = Vec::new();
        for (k, v) in m {
            path.push(format!("f:{k}"));
            if !is_stripped(&path) {
                collect(k, v, &mut path, &mut out);
            }
            path.pop();
        }
    }
    out
}

fn collect(name: &str, v: &Value, path: &mut FieldPath, out: &mut BTreeMap<FieldPath, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                path.push(format!("f:{k}"));
                if !is_stripped(path) {
                    collect(k, c, path, out);
                }
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match list_kind(name, items) {
            ListKind::Keyed(keys) => {
                for item in items {
                    let Some(key) = element_key(item, &keys) else { continue };
                    path.push(format!("k:{key}"));
                    out.insert(path.clone(), Value::Null);
                    if let Value::Object(fields) = item {
                        for (k, c) in fields {
                            path.push(format!("f:{k}"));
                            collect(k, c, path, out);
                            path.pop();
                        }
                    }
                    path.pop();
                }
            }
            ListKind::Set => {
                for item in items {
                    path.push(format!("v:{item}"));
                    out.insert(path.clone(), Value::Null);
                    path.pop();
                }
            }
            ListKind::Atomic => {
                out.insert(path.clone(), v.clone());
            }
        },
        _ => {
            out.insert(path.clone(), v.clone());
        }
    }
}

/// Finds the value a path names inside `obj`.
pub(crate) fn get<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for pe in path {
        cur = step(cur, pe)?;
    }
    Some(cur)
}

fn step<'a>(v: &'a Value, pe: &str) -> Option<&'a Value> {
    if let Some(f) = pe.strip_prefix("f:") {
        return v.as_object()?.get(f);
    }
    let items = v.as_array()?;
    items.iter().find(|i| element_matches(i, pe))
}

fn element_matches(item: &Value, pe: &str) -> bool {
    if let Some(k) = pe.strip_prefix("k:") {
        let Ok(Value::Object(key)) = serde_json::from_str::<Value>(k) else { return false };
        let Some(obj) = item.as_object() else { return false };
        return key.iter().all(|(kk, kv)| obj.get(kk) == Some(kv));
    }
    if let Some(raw) = pe.strip_prefix("v:") {
        return serde_json::from_str::<Value>(raw).is_ok_and(|want| &want == item);
    }
    false
}

/// Removes the field or list element a path names; returns whether something was removed.
pub(crate) fn remove(obj: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else { return false };
    let mut cur = obj;
    for pe in parents {
        let next = if let Some(f) = pe.strip_prefix("f:") {
            cur.as_object_mut().and_then(|m| m.get_mut(f))
        } else {
            cur.as_array_mut().and_then(|items| items.iter_mut().find(|i| element_matches(i, pe)))
        };
        match next {
            Some(n) => cur = n,
            None => return false,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        return cur.as_object_mut().is_some_and(|m| m.shift_remove(f).is_some());
    }
    match cur.as_array_mut() {
        Some(items) => {
            let before = items.len();
            items.retain(|i| !element_matches(i, last));
            items.len() != before
        }
        None => false,
    }
}

/// Renders a path as Kubernetes prints it in conflicts: `.spec.containers[name="a"].image`.
pub(crate) fn display(path: &[String]) -> String {
    let mut s = String::new();
    for pe in path {
        if let Some(f) = pe.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = pe.strip_prefix("k:") {
            let parts: Vec<String> = match serde_json::from_str::<Value>(k) {
                Ok(Value::Object(m)) => m.iter().map(|(kk, kv)| format!("{kk}={kv}")).collect(),
                _ => vec![k.to_string()],
            };
            s.push('[');
            s.push_str(&parts.join(","));
            s.push(']');
        } else if let Some(v) = pe.strip_prefix("v:") {
            s.push_str(&format!("[{v}]"));
        } else {
            s.push_str(pe);
        }
    }
    s
}

/// Serialises a field set as a FieldsV1 object (`{"f:spec":{"f:x":{}}}`); a path that is both a
/// member and a prefix of others gets a `"."` child. Keys come out sorted, so equal sets always
/// serialise to equal bytes.
pub(crate) fn to_fields_v1(set: &FieldSet) -> Value {
    #[derive(Default)]
    struct Node {
        member: bool,
        children: BTreeMap<String, Node>,
    }
    fn render(n: &Node) -> Value {
        let mut m = Map::new();
        if n.member && !n.children.is_empty() {
            m.insert(".".to_string(), Value::Object(Map::new()));
        }
        for (k, c) in &n.children {
            m.insert(k.clone(), render(c));
        }
        Value::Object(m)
    }
    let mut root = Node::default();
    for path in set {
        let mut n = &mut root;
        for pe in path {
            n = n.children.entry(pe.clone()).or_default();
        }
        n.member = true;
    }
    render(&root)
}

/// Parses a FieldsV1 object back into a field set.
pub(crate) fn from_fields_v1(v: &Value) -> FieldSet {
    fn walk(v: &Value, path: &mut FieldPath, out: &mut FieldSet) {
        let Value::Object(m) = v else { return };
        if m.is_empty() {
            if !path.is_empty() {
                out.insert(path.clone());
            }
            return;
        }
        for (k, c) in m {
            if k == "." {
                if !path.is_empty() {
                    out.insert(path.clone());
                }
                continue;
            }
            path.push(k.clone());
            walk(c, path, out);
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// One `managedFields` entry. Entries nobody touched keep their original JSON, so a no-op write
/// leaves the object byte-equal.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub manager: String,
    pub operation: String,
    pub subresource: Option<String>,
    pub api_version: String,
    pub fields: FieldSet,
    raw: Value,
    dirty: bool,
    time: Option<String>,
}

impl Entry {
    pub fn new(
        manager: &str,
        operation: &str,
        subresource: Option<&str>,
        api_version: &str,
    ) -> Self {
        Self {
            manager: manager.to_string(),
            operation: operation.to_string(),
            subresource: subresource.map(str::to_string),
            api_version: api_version.to_string(),
            fields: FieldSet::new(),
            raw: Value::Null,
            dirty: true,
            time: None,
        }
    }

    fn parse(raw: &Value) -> Option<Self> {
        let o = raw.as_object()?;
        let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
        Some(Self {
            manager: s("manager").unwrap_or_default(),
            operation: s("operation").unwrap_or_default(),
            subresource: s("subresource").filter(|x| !x.is_empty()),
            api_version: s("apiVersion").unwrap_or_default(),
            fields: o.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
            raw: raw.clone(),
            dirty: false,
            time: s("time"),
        })
    }

    pub fn is(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }

    /// Marks the entry written now by `api_version` at `time`.
    pub fn touch(&mut self, api_version: &str, time: &str) {
        self.api_version = api_version.to_string();
        self.time = Some(time.to_string());
        self.dirty = true;
    }

    /// Replaces the field set, marking the entry changed if it differs.
    pub fn set_fields(&mut self, fields: FieldSet) -> bool {
        if fields != self.fields {
            self.fields = fields;
            self.dirty = true;
            true
        } else {
            false
        }
    }

    fn to_json(&self) -> Value {
        if !self.dirty {
            return self.raw.clone();
        }
        let mut m = Map::new();
        m.insert("manager".into(), Value::String(self.manager.clone()));
        m.insert("operation".into(), Value::String(self.operation.clone()));
        m.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        if let Some(t) = &self.time {
            m.insert("time".into(), Value::String(t.clone()));
        }
        m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
        m.insert("fieldsV1".into(), to_fields_v1(&self.fields));
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), Value::String(s.clone()));
        }
        Value::Object(m)
    }
}

/// The entries of `obj.metadata.managedFields` (malformed entries are dropped).
pub(crate) fn entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Entry::parse).collect())
        .unwrap_or_default()
}

/// Writes `entries` (minus empty ones) into `obj.metadata.managedFields`; no entries → no key.
pub(crate) fn store(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> =
        entries.iter().filter(|e| !e.fields.is_empty()).map(Entry::to_json).collect();
    let Some(root) = obj.as_object_mut() else { return };
    let meta = root.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    let Some(meta) = meta.as_object_mut() else { return };
    if list.is_empty() {
        meta.shift_remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

/// Records an Update (or an Update of `subresource`, e.g. `status`) by `manager` in
/// `obj.metadata.managedFields`, as the apiserver does for create, PUT and non-apply PATCH:
/// the manager takes ownership of every field it added or changed (other managers lose those),
/// and fields that disappeared leave every set.
///
/// The starting entries are, as upstream's field manager does, those the client sent in `obj` when
/// it sent a non-empty list (so `[{}]` resets ownership), else those of `old`; a status write
/// always starts from `old`. A client echoing what it read (kubectl edit, kube-rs replace) changes
/// nothing. A write that changes no field leaves managedFields byte-equal (including `time`).
pub fn record_update(
    obj: &mut Value,
    old: Option<&Value>,
    manager: &str,
    subresource: Option<&str>,
    api_version: &str,
    time: &str,
) {
    let sent = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let mut all = match old {
        Some(o) if !sent || subresource.is_some() => entries(o),
        _ => entries(obj),
    };
    let new_leaves = leaves(obj);
    let old_leaves = old.map(leaves).unwrap_or_default();
    let changed: FieldSet = new_leaves
        .iter()
        .filter(|(p, v)| old_leaves.get(*p) != Some(*v))
        .map(|(p, _)| p.clone())
        .collect();
    let removed: FieldSet =
        old_leaves.keys().filter(|p| !new_leaves.contains_key(*p)).cloned().collect();
    if !changed.is_empty() || !removed.is_empty() {
        for e in all.iter_mut().filter(|e| !e.is(manager, "Update", subresource)) {
            let kept: FieldSet =
                e.fields.difference(&changed).filter(|p| !removed.contains(*p)).cloned().collect();
            e.set_fields(kept);
        }
        let idx = match all.iter().position(|e| e.is(manager, "Update", subresource)) {
            Some(i) => i,
            None => {
                all.push(Entry::new(manager, "Update", subresource, api_version));
                all.len() - 1
            }
        };
        let e = &mut all[idx];
        let mut fields: FieldSet = e.fields.union(&changed).cloned().collect();
        fields.retain(|p| !removed.contains(p));
        e.set_fields(fields);
        e.touch(api_version, time);
    }
    store(obj, &all);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn p(parts: &[&str]) -> FieldPath {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fields_v1_round_trips_with_member_markers() {
        let v1 = json!({"f:status":{"f:conditions":{"k:{\"type\":\"Ready\"}":{".":{},"f:status":{},"f:type":{}}}},"f:metadata":{"f:finalizers":{"v:\"a\"":{}}}});
        let set = from_fields_v1(&v1);
        assert!(set.contains(&p(&["f:status", "f:conditions", "k:{\"type\":\"Ready\"}"])));
        assert!(set.contains(&p(&[
            "f:status",
            "f:conditions",
            "k:{\"type\":\"Ready\"}",
            "f:status"
        ])));
        assert!(set.contains(&p(&["f:metadata", "f:finalizers", "v:\"a\""])));
        assert_eq!(set.len(), 4);
        let back = to_fields_v1(&set);
        assert_eq!(from_fields_v1(&back), set);
        assert_eq!(
            back.to_string(),
            r#"{"f:metadata":{"f:finalizers":{"v:\"a\"":{}}},"f:status":{"f:conditions":{"k:{\"type\":\"Ready\"}":{".":{},"f:status":{},"f:type":{}}}}}"#
        );
    }

    #[test]
    fn leaves_skip_identity_metadata_and_key_lists() {
        let obj = json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"d","uid":"u","labels":{"a":"1"}},
            "spec":{"containers":[{"name":"c","image":"i"}],"args":["x"]}});
        let l = leaves(&obj);
        let keys: Vec<String> = l.keys().map(|k| display(k)).collect();
        assert_eq!(
            keys,
            vec![
                ".metadata.labels.a",
                ".spec.args",
                ".spec.containers[name=\"c\"]",
                ".spec.containers[name=\"c\"].image",
                ".spec.containers[name=\"c\"].name"
            ]
        );
        assert_eq!(l[&p(&["f:spec", "f:args"])], json!(["x"]));
    }

    #[test]
    fn duplicate_keys_make_a_list_atomic() {
        let items = vec![json!({"type":"A"}), json!({"type":"A"})];
        assert_eq!(list_kind("conditions", &items), ListKind::Atomic);
        assert_eq!(list_kind("conditions", &[json!({"type":"A"})]), ListKind::Keyed(vec!["type"]));
        assert_eq!(list_kind("ports", &[json!({"port":80})]), ListKind::Keyed(vec!["port"]));
        assert_eq!(
            list_kind("ports", &[json!({"containerPort":80})]),
            ListKind::Keyed(vec!["containerPort"])
        );
    }

    #[test]
    fn get_and_remove_follow_keyed_and_set_elements() {
        let mut obj = json!({"status":{"conditions":[{"type":"A","status":"True"},{"type":"B","status":"False"}]},"metadata":{"finalizers":["x","y"]}});
        let path = p(&["f:status", "f:conditions", "k:{\"type\":\"B\"}", "f:status"]);
        assert_eq!(get(&obj, &path), Some(&json!("False")));
        assert!(remove(&mut obj, &p(&["f:status", "f:conditions", "k:{\"type\":\"A\"}"])));
        assert!(remove(&mut obj, &p(&["f:metadata", "f:finalizers", "v:\"x\""])));
        assert!(!remove(&mut obj, &p(&["f:metadata", "f:nothing"])));
        assert_eq!(
            obj,
            json!({"status":{"conditions":[{"type":"B","status":"False"}]},"metadata":{"finalizers":["y"]}})
        );
    }

    #[test]
    fn create_records_every_field_for_the_manager() {
        let mut obj = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","labels":{"a":"b"}},"data":{"k":"v"}});
        record_update(&mut obj, None, "kubectl-create", None, "v1", "2026-01-01T00:00:00Z");
        assert_eq!(
            obj["metadata"]["managedFields"],
            json!([{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-01-01T00:00:00Z",
                "fieldsType":"FieldsV1","fieldsV1":{"f:data":{"f:k":{}},"f:metadata":{"f:labels":{"f:a":{}}}}}])
        );
    }

    #[test]
    fn update_moves_ownership_and_merges_into_the_same_entry() {
        let mut old = json!({"metadata":{"name":"c"},"data":{"k":"v","j":"1"}});
        record_update(&mut old, None, "creator", None, "v1", "T1");
        // A second manager changes k and adds n: it owns k and n; creator keeps only j.
        let mut new = json!({"metadata":{"name":"c"},"data":{"k":"v2","j":"1","n":"x"}});
        record_update(&mut new, Some(&old), "editor", None, "v1", "T2");
        let mf = &new["metadata"]["managedFields"];
        assert_eq!(mf.as_array().map(Vec::len), Some(2), "{mf}");
        assert_eq!(mf[0]["manager"], "creator");
        assert_eq!(mf[0]["fieldsV1"], json!({"f:data":{"f:j":{}}}));
        assert_eq!(mf[0]["time"], "T1", "losing fields does not count as a write by creator");
        assert_eq!(mf[1]["manager"], "editor");
        assert_eq!(mf[1]["fieldsV1"], json!({"f:data":{"f:k":{}, "f:n":{}}}));
        // editor removes j (owned by creator): creator's entry disappears, editor's set merges.
        let mut third = json!({"metadata":{"name":"c"},"data":{"k":"v2","n":"x","m":"y"}});
        record_update(&mut third, Some(&new), "editor", None, "v1", "T3");
        let mf = &third["metadata"]["managedFields"];
        assert_eq!(mf.as_array().map(Vec::len), Some(1), "{mf}");
        assert_eq!(mf[0]["fieldsV1"], json!({"f:data":{"f:k":{}, "f:m":{}, "f:n":{}}}));
        assert_eq!(mf[0]["time"], "T3");
    }

    #[test]
    fn no_op_update_keeps_managed_fields_byte_equal() {
        let mut old = json!({"metadata":{"name":"c"},"data":{"k":"v"}});
        record_update(&mut old, None, "creator", None, "v1", "T1");
        let mut same = old.clone();
        record_update(&mut same, Some(&old), "other", None, "v1", "T9");
        assert_eq!(serde_json::to_string(&same).ok(), serde_json::to_string(&old).ok());
    }

    #[test]
    fn managed_fields_sent_by_the_client_are_honoured_and_can_be_reset() {
        let mut old = json!({"metadata":{"name":"c"},"data":{"k":"v"}});
        record_update(&mut old, None, "creator", None, "v1", "T1");
        // An echo of what was read, plus a change: ownership continues from the echoed entries.
        let mut echo = old.clone();
        echo["data"]["n"] = json!("x");
        record_update(&mut echo, Some(&old), "editor", None, "v1", "T2");
        assert_eq!(echo["metadata"]["managedFields"][0], old["metadata"]["managedFields"][0]);
        assert_eq!(echo["metadata"]["managedFields"][1]["fieldsV1"], json!({"f:data":{"f:n":{}}}));
        // `[{}]` clears every entry; the writer then owns only what it changed.
        let mut reset = echo.clone();
        reset["metadata"]["managedFields"] = json!([{}]);
        reset["data"]["m"] = json!("y");
        record_update(&mut reset, Some(&echo), "editor", None, "v1", "T3");
        assert_eq!(
            reset["metadata"]["managedFields"],
            json!([{"manager":"editor","operation":"Update","apiVersion":"v1","time":"T3","fieldsType":"FieldsV1",
                "fieldsV1":{"f:data":{"f:m":{}}}}])
        );
        // With nothing sent (e.g. a typed client that drops the field), the stored entries stay.
        let mut dropped = echo.clone();
        if let Some(m) = dropped["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
        record_update(&mut dropped, Some(&echo), "editor", None, "v1", "T4");
        assert_eq!(dropped["metadata"]["managedFields"], echo["metadata"]["managedFields"]);
    }

    #[test]
    fn status_subresource_updates_get_their_own_entry() {
        let mut old = json!({"metadata":{"name":"c"},"spec":{"a":1}});
        record_update(&mut old, None, "ctl", None, "g/v1", "T1");
        let mut new = json!({"metadata":{"name":"c"},"spec":{"a":1},"status":{"phase":"Done"}});
        record_update(&mut new, Some(&old), "ctl", Some("status"), "g/v1", "T2");
        let mf = &new["metadata"]["managedFields"];
        assert_eq!(mf[1]["subresource"], "status");
        assert_eq!(mf[1]["fieldsV1"], json!({"f:status":{"f:phase":{}}}));
        assert_eq!(mf[0]["time"], "T1");
    }
}
