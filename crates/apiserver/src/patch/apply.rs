//! Minimal server-side apply: create-or-merge, per-manager field sets in
//! `managedFields` (operation `Apply`), removal of fields a manager stopped applying, and
//! conflicts with other managers unless forced.

use serde_json::{Map, Value};

use super::managed::{self, Entry, FieldPath, FieldSet, ListKind};
use super::{FieldConflict, PatchError};

/// Minimal server-side apply of `applied` (the apply configuration, already parsed from YAML/JSON)
/// by `manager`. `current` None → create. Returns the new object with `metadata.managedFields`
/// updated; when nothing changes it returns `current` byte-equal (same `time`).
pub fn apply(
    current: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
    time: &str,
) -> Result<Value, PatchError> {
    apply_subresource(current, applied, manager, None, force, api_version, time)
}

/// [`apply`] to a subresource: `Some("status")` for `PATCH …/status` with an apply patch
/// (kube-rs `patch_status` with `Patch::Apply`). The entry carries `subresource: status`; the
/// engine still copies only `status` from the result.
pub fn apply_subresource(
    current: Option<&Value>,
    applied: &Value,
    manager: &str,
    subresource: Option<&str>,
    force: bool,
    api_version: &str,
    time: &str,
) -> Result<Value, PatchError> {
    if !applied.is_object() {
        return Err(PatchError::Malformed("apply patch must be an object".to_string()));
    }
    if manager.is_empty() {
        return Err(PatchError::Malformed(
            "PATCH with an apply patch requires a fieldManager query parameter".to_string(),
        ));
    }
    let mut config = applied.clone();
    drop_nulls(&mut config);
    if let Some(meta) = config.get_mut("metadata").and_then(Value::as_object_mut) {
        // managedFields in an apply configuration are ignored, as the apiserver does.
        meta.shift_remove("managedFields");
    }
    if subresource == Some("status") {
        // The status subresource resets everything but status (upstream's ResetFieldsStrategy), so
        // this manager must not come to own spec or metadata fields through it.
        if let Some(root) = config.as_object_mut() {
            root.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
            if let Some(meta) = root.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.retain(|k, _| k == "name" || k == "namespace");
            }
        }
    }
    let applied_leaves = managed::leaves(&config);
    let new_set: FieldSet = applied_leaves.keys().cloned().collect();

    let empty = Value::Object(Map::new());
    let cur = current.unwrap_or(&empty);
    let mut all = managed::entries(cur);
    let mine = |e: &Entry| e.is(manager, "Apply", subresource);

    // Conflicts: another manager owns a field this configuration sets to a different value.
    let mut conflicts: Vec<(usize, FieldPath)> = Vec::new();
    for (i, e) in all.iter().enumerate() {
        if mine(e) {
            continue;
        }
        for (path, want) in &applied_leaves {
            if !e.fields.contains(path) {
                continue;
            }
            let differs = match managed::get(cur, path) {
                // A list element path only asserts presence.
                Some(have) => !want.is_null() && have != want,
                None => false,
            };
            if differs {
                conflicts.push((i, path.clone()));
            }
        }
    }
    if !conflicts.is_empty() {
        if !force {
            let list = conflicts
                .iter()
                .map(|(i, p)| FieldConflict {
                    manager: all[*i].manager.clone(),
                    api_version: all[*i].api_version.clone(),
                    field: managed::display(p),
                })
                .collect();
            return Err(PatchError::Conflict(list));
        }
        for (i, p) in &conflicts {
            let mut fields = all[*i].fields.clone();
            fields.remove(p);
            all[*i].set_fields(fields);
        }
    }

    let mut merged = cur.clone();
    merge_into(&mut merged, &config, "");

    // Fields this manager applied before and no longer applies, and nobody else owns, go away.
    let previous: FieldSet =
        all.iter().find(|e| mine(e)).map(|e| e.fields.clone()).unwrap_or_default();
    let others: Vec<&FieldSet> = all.iter().filter(|e| !mine(e)).map(|e| &e.fields).collect();
    let dropped: Vec<&FieldPath> = previous
        .difference(&new_set)
        .filter(|p| {
            !others.iter().any(|s| owns_at_or_below(s, p)) && !owns_at_or_below(&new_set, p)
        })
        .collect();
    // Only the outermost dropped paths: removing a list element's key field first would make the
    // element unfindable.
    for p in &dropped {
        if !dropped.iter().any(|q| q.len() < p.len() && p.starts_with(q)) {
            managed::remove(&mut merged, p);
        }
    }

    let changed = strip_managed(&merged) != strip_managed(cur);
    let idx = match all.iter().position(mine) {
        Some(i) => i,
        None => {
            all.push(Entry::new(manager, "Apply", subresource, api_version));
            all.len() - 1
        }
    };
    let e = &mut all[idx];
    let set_changed = e.set_fields(new_set);
    let version_changed = e.api_version != api_version;
    if set_changed || changed || version_changed || current.is_none() {
        e.touch(api_version, time);
    }
    managed::store(&mut merged, &all);
    Ok(merged)
}

/// Whether `set` holds `path` or anything below it (a list element stays while someone owns one
/// of its fields).
fn owns_at_or_below(set: &FieldSet, path: &FieldPath) -> bool {
    set.range(path.clone()..).next().is_some_and(|p| p.starts_with(path))
}

fn strip_managed(v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
        m.shift_remove("managedFields");
    }
    c
}

/// An apply configuration's `null`s mean "not set": drop them before merging.
fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, c| !c.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Merges an apply configuration into the live object: maps merge, keyed lists merge by key,
/// set lists union, every other list is atomic (replaced).
fn merge_into(target: &mut Value, config: &Value, name: &str) {
    match (target, config) {
        (Value::Object(t), Value::Object(c)) => {
            for (k, cv) in c {
                match t.get_mut(k) {
                    Some(tv) => merge_into(tv, cv, k),
                    None => {
                        t.insert(k.clone(), cv.clone());
                    }
                }
            }
        }
        (Value::Array(t), Value::Array(c)) => {
            match (managed::list_kind(name, t), managed::list_kind(name, c)) {
                (ListKind::Keyed(keys), ListKind::Keyed(_)) => {
                    for item in c {
                        let key = managed::element_key(item, &keys);
                        match t
                            .iter_mut()
                            .find(|x| key.is_some() && managed::element_key(x, &keys) == key)
                        {
                            Some(existing) => merge_into(existing, item, ""),
                            None => t.push(item.clone()),
                        }
                    }
                }
                (ListKind::Set, ListKind::Set) => {
                    for item in c {
                        if !t.contains(item) {
                            t.push(item.clone());
                        }
                    }
                }
                _ => *t = c.clone(),
            }
        }
        (t, c) => *t = c.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cm(data: Value) -> Value {
        json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","namespace":"default"},"data":data})
    }

    #[test]
    fn create_records_an_apply_entry() {
        let out = apply(None, &cm(json!({"a":"1"})), "kubectl", false, "v1", "T1").expect("apply");
        assert_eq!(out["data"], json!({"a":"1"}));
        assert_eq!(
            out["metadata"]["managedFields"],
            json!([{"manager":"kubectl","operation":"Apply","apiVersion":"v1","time":"T1","fieldsType":"FieldsV1",
                "fieldsV1":{"f:data":{"f:a":{}}}}])
        );
    }

    #[test]
    fn reapply_removes_fields_no_longer_applied_but_keeps_others() {
        let v1 =
            apply(None, &cm(json!({"a":"1","b":"2"})), "mgr", false, "v1", "T1").expect("apply");
        // Another writer adds c via an Update.
        let mut v2 = v1.clone();
        v2["data"]["c"] = json!("3");
        managed::record_update(&mut v2, Some(&v1), "editor", None, "v1", "T2");
        let v3 = apply(Some(&v2), &cm(json!({"a":"1"})), "mgr", false, "v1", "T3").expect("apply");
        assert_eq!(
            v3["data"],
            json!({"a":"1","c":"3"}),
            "b dropped (only mgr owned it), c kept (editor owns it)"
        );
        let mf = v3["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
        assert_eq!(mf.len(), 2);
        assert_eq!(mf[0]["fieldsV1"], json!({"f:data":{"f:a":{}}}));
        assert_eq!(mf[0]["time"], "T3");
    }

    #[test]
    fn same_apply_twice_is_byte_equal() {
        let cfg = json!({"apiVersion":"g/v1","kind":"K","metadata":{"name":"x"},
            "status":{"conditions":[{"type":"Ready","status":"True"}]}});
        let v1 = apply(None, &cfg, "ctl", false, "g/v1", "T1").expect("apply");
        let v2 = apply(Some(&v1), &cfg, "ctl", false, "g/v1", "T2").expect("apply");
        assert_eq!(serde_json::to_string(&v1).ok(), serde_json::to_string(&v2).ok());
    }

    #[test]
    fn conditions_merge_by_type_across_managers() {
        let a = json!({"apiVersion":"g/v1","kind":"K","metadata":{"name":"x"},
            "status":{"conditions":[{"type":"A","status":"True"}]}});
        let b = json!({"apiVersion":"g/v1","kind":"K","metadata":{"name":"x"},
            "status":{"conditions":[{"type":"B","status":"False"}]}});
        let v1 = apply(None, &a, "one", false, "g/v1", "T1").expect("apply");
        let v2 = apply_subresource(Some(&v1), &b, "two", Some("status"), false, "g/v1", "T2")
            .expect("apply");
        assert_eq!(
            v2["status"]["conditions"],
            json!([{"type":"A","status":"True"},{"type":"B","status":"False"}])
        );
        assert_eq!(v2["metadata"]["managedFields"][1]["subresource"], "status");
        assert_eq!(
            v2["metadata"]["managedFields"][1]["fieldsV1"],
            json!({"f:status":{"f:conditions":{"k:{\"type\":\"B\"}":{".":{},"f:status":{},"f:type":{}}}}})
        );
        // "one" stops applying condition A: it is removed; B stays.
        let none = json!({"apiVersion":"g/v1","kind":"K","metadata":{"name":"x"}});
        let v3 = apply(Some(&v2), &none, "one", false, "g/v1", "T3").expect("apply");
        assert_eq!(v3["status"]["conditions"], json!([{"type":"B","status":"False"}]));
    }

    #[test]
    fn status_apply_owns_only_status() {
        let v1 = apply(None, &cm(json!({"a":"1"})), "ctl", false, "v1", "T1").expect("apply");
        let cfg = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","labels":{"x":"y"}},
            "data":{"a":"changed"},"status":{"phase":"Ready"}});
        let v2 = apply_subresource(Some(&v1), &cfg, "ctl", Some("status"), false, "v1", "T2")
            .expect("apply");
        assert_eq!(v2["data"], json!({"a":"1"}));
        assert!(v2["metadata"].get("labels").is_none());
        assert_eq!(v2["status"], json!({"phase":"Ready"}));
        assert_eq!(
            v2["metadata"]["managedFields"][1]["fieldsV1"],
            json!({"f:status":{"f:phase":{}}})
        );
    }

    #[test]
    fn conflicting_value_is_rejected_unless_forced() {
        let v1 = apply(None, &cm(json!({"a":"1"})), "first", false, "v1", "T1").expect("apply");
        let err = apply(Some(&v1), &cm(json!({"a":"2"})), "second", false, "v1", "T2")
            .expect_err("conflict");
        match &err {
            PatchError::Conflict(c) => {
                assert_eq!(
                    c,
                    &vec![FieldConflict {
                        manager: "first".into(),
                        api_version: "v1".into(),
                        field: ".data.a".into()
                    }]
                );
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(err.http_status(), 409);
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"first\" using v1: .data.a"
        );
        // Same value: shared ownership, no conflict.
        let shared =
            apply(Some(&v1), &cm(json!({"a":"1"})), "second", false, "v1", "T2").expect("shared");
        assert_eq!(shared["metadata"]["managedFields"].as_array().map(Vec::len), Some(2));
        // Forced: the value changes and ownership moves.
        let forced =
            apply(Some(&v1), &cm(json!({"a":"2"})), "second", true, "v1", "T3").expect("forced");
        assert_eq!(forced["data"]["a"], "2");
        let mf = forced["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
        assert_eq!(mf.len(), 1, "first lost its only field: {mf:?}");
        assert_eq!(mf[0]["manager"], "second");
    }

    #[test]
    fn lists_other_than_known_map_lists_are_atomic() {
        let v1 = apply(None, &cm(json!(null)), "m", false, "v1", "T1").expect("apply");
        let base = json!({"apiVersion":"g/v1","kind":"K","metadata":{"name":"x"},"spec":{"items":[1,2,3]}});
        let v2 = apply(Some(&v1), &base, "m", false, "g/v1", "T2").expect("apply");
        let v3 = apply(
            Some(&v2),
            &json!({"apiVersion":"g/v1","kind":"K","metadata":{"name":"x"},"spec":{"items":[9]}}),
            "m",
            false,
            "g/v1",
            "T3",
        )
        .expect("apply");
        assert_eq!(v3["spec"]["items"], json!([9]));
        assert!(v3.get("data").is_none(), "null in an apply configuration sets nothing");
    }

    #[test]
    fn apply_without_manager_or_object_is_malformed() {
        assert!(matches!(
            apply(None, &json!([1]), "m", false, "v1", "T"),
            Err(PatchError::Malformed(_))
        ));
        assert!(matches!(
            apply(None, &cm(json!({})), "", false, "v1", "T"),
            Err(PatchError::Malformed(_))
        ));
    }
}
