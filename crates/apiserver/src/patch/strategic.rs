//! Strategic merge patch for the built-in kinds: what `kubectl apply`, `kubectl edit`
//! and `kubectl patch` (default `--type=strategic`) send for core kinds.
//!
//! Maps merge like RFC 7386 (`null` deletes a key); lists with a merge key merge element-wise; the
//! primitive list `finalizers` merges as a set; every other list is replaced. Directives:
//! `$patch: delete|replace|merge`, `$setElementOrder/<field>`, `$deleteFromPrimitiveList/<field>`,
//! `$retainKeys`. The merge keys are a static table taken from the upstream OpenAPI's
//! `x-kubernetes-patch-merge-key` / `x-kubernetes-patch-strategy` annotations for the kinds we store.

use serde_json::{Map, Value};

use super::PatchError;

/// How the list field `name` of `kind` merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    /// Elements are maps merged by this key.
    Key(&'static str),
    /// Primitive elements merged as a set.
    Primitive,
    /// The patch's list replaces the original.
    Replace,
}

fn strategy(name: &str, kind: &str) -> Strategy {
    match name {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => Strategy::Key("name"),
        // ServiceSpec.ports merges by `port`; container ports by `containerPort`.
        "ports" if kind == "Service" => Strategy::Key("port"),
        "ports" => Strategy::Key("containerPort"),
        "volumeMounts" => Strategy::Key("mountPath"),
        "volumeDevices" => Strategy::Key("devicePath"),
        "conditions" => Strategy::Key("type"),
        "ownerReferences" => Strategy::Key("uid"),
        "hostAliases" => Strategy::Key("ip"),
        "topologySpreadConstraints" => Strategy::Key("topologyKey"),
        "finalizers" => Strategy::Primitive,
        _ => Strategy::Replace,
    }
}

const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Applies the strategic merge patch `patch` (a JSON object) to a copy of `target`, an object of the
/// built-in kind `kind` (e.g. `Pod`, `Job`, `Service`).
pub fn strategic(target: &Value, patch: &Value, kind: &str) -> Result<Value, PatchError> {
    let Value::Object(p) = patch else {
        return Err(PatchError::Malformed(
            "strategic merge patch must be a JSON object".to_string(),
        ));
    };
    let empty = Map::new();
    let t = target.as_object().unwrap_or(&empty);
    Ok(Value::Object(merge_map(Some(t), p, kind, "")?.unwrap_or_default()))
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn bad(path: &str, reason: impl Into<String>) -> PatchError {
    PatchError::Strategic {
        path: if path.is_empty() { "<root>".to_string() } else { path.to_string() },
        reason: reason.into(),
    }
}

/// Merges `patch` into the map `orig` (absent → an empty map). `None` means `$patch: delete`.
fn merge_map(
    orig: Option<&Map<String, Value>>,
    patch: &Map<String, Value>,
    kind: &str,
    path: &str,
) -> Result<Option<Map<String, Value>>, PatchError> {
    match patch.get("$patch") {
        None => {}
        Some(Value::String(d)) if d == "merge" => {}
        Some(Value::String(d)) if d == "delete" => return Ok(None),
        Some(Value::String(d)) if d == "replace" => {
            let mut rest = patch.clone();
            rest.shift_remove("$patch");
            return merge_map(None, &rest, kind, path);
        }
        Some(other) => return Err(bad(path, format!("unknown patch directive $patch: {other}"))),
    }
    let mut out = orig.cloned().unwrap_or_default();

    if let Some(keep) = patch.get("$retainKeys") {
        let Some(keep) = keep.as_array() else {
            return Err(bad(path, "$retainKeys must be a list of field names"));
        };
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }

    for (k, v) in patch {
        let Some(field) = k.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) else { continue };
        let Some(doomed) = v.as_array() else {
            return Err(bad(&child(path, field), format!("{k} must be a list")));
        };
        if let Some(Value::Array(items)) = out.get_mut(field) {
            items.retain(|i| !doomed.contains(i));
        }
    }

    for (k, pv) in patch {
        if k.starts_with('$') {
            continue;
        }
        let here = child(path, k);
        match pv {
            Value::Null => {
                out.shift_remove(k);
            }
            Value::Object(pm) => {
                let merged = match out.get(k) {
                    Some(Value::Object(om)) => merge_map(Some(om), pm, kind, &here)?,
                    _ => merge_map(None, pm, kind, &here)?,
                };
                match merged {
                    Some(m) => {
                        out.insert(k.clone(), Value::Object(m));
                    }
                    None => {
                        out.shift_remove(k);
                    }
                }
            }
            Value::Array(pa) => {
                let orig_items = out.get(k).and_then(Value::as_array).map(Vec::as_slice);
                let merged = merge_list(k, orig_items, pa, kind, &here)?;
                out.insert(k.clone(), Value::Array(merged));
            }
            other => {
                out.insert(k.clone(), other.clone());
            }
        }
    }

    for (k, order) in patch {
        let Some(field) = k.strip_prefix(SET_ELEMENT_ORDER) else { continue };
        let Some(order) = order.as_array() else {
            return Err(bad(&child(path, field), format!("{k} must be a list")));
        };
        if let Some(Value::Array(items)) = out.get_mut(field) {
            *items = reorder(std::mem::take(items), order, strategy(field, kind));
        }
    }
    Ok(Some(out))
}

fn is_replace_marker(v: &Value) -> bool {
    v.get("$patch").and_then(Value::as_str) == Some("replace")
}

fn merge_list(
    name: &str,
    orig: Option<&[Value]>,
    patch: &[Value],
    kind: &str,
    path: &str,
) -> Result<Vec<Value>, PatchError> {
    let replace_all = patch.iter().any(is_replace_marker);
    let patch_items: Vec<&Value> = patch.iter().filter(|v| !is_replace_marker(v)).collect();
    let orig: &[Value] = if replace_all { &[] } else { orig.unwrap_or(&[]) };
    match strategy(name, kind) {
        Strategy::Replace => Ok(patch_items.into_iter().cloned().collect()),
        Strategy::Primitive => {
            let mut out = orig.to_vec();
            for item in patch_items {
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
            Ok(out)
        }
        Strategy::Key(key) => {
            let mut out = orig.to_vec();
            for (i, item) in patch_items.into_iter().enumerate() {
                let here = format!("{path}[{i}]");
                let Value::Object(pm) = item else {
                    return Err(bad(
                        &here,
                        format!("list element must be an object with merge key \"{key}\""),
                    ));
                };
                let Some(kv) = pm.get(key) else {
                    return Err(bad(
                        &here,
                        format!("map does not contain declared merge key: {key}"),
                    ));
                };
                let pos = out.iter().position(|o| o.get(key) == Some(kv));
                if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                    out.retain(|o| o.get(key) != Some(kv));
                    continue;
                }
                match pos {
                    Some(p) => {
                        let merged = merge_map(out[p].as_object(), pm, kind, &here)?;
                        match merged {
                            Some(m) => out[p] = Value::Object(m),
                            None => {
                                out.remove(p);
                            }
                        }
                    }
                    None => {
                        if let Some(m) = merge_map(None, pm, kind, &here)? {
                            out.push(Value::Object(m));
                        }
                    }
                }
            }
            Ok(out)
        }
    }
}

/// Orders `items` as `order` says (elements named by merge key, or primitives); elements the order
/// does not mention (added by someone else) keep their relative order after those.
fn reorder(items: Vec<Value>, order: &[Value], strategy: Strategy) -> Vec<Value> {
    let matches = |item: &Value, want: &Value| match strategy {
        Strategy::Key(key) => item.get(key).is_some() && item.get(key) == want.get(key),
        _ => item == want,
    };
    let mut rest: Vec<Option<Value>> = items.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(rest.len());
    for want in order {
        if let Some(slot) = rest.iter_mut().find(|s| s.as_ref().is_some_and(|i| matches(i, want))) {
            out.extend(slot.take());
        }
    }
    out.extend(rest.into_iter().flatten());
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn kubectl_apply_on_a_job_merges_containers_and_env_by_name() {
        let job = json!({"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"j","namespace":"default"},
            "spec":{"backoffLimit":2,"template":{"spec":{"restartPolicy":"Never","containers":[
                {"name":"a","image":"busybox:1","env":[{"name":"OLD","value":"1"},{"name":"KEEP","value":"k"}]},
                {"name":"b","image":"busybox:1"}]}}}});
        // The exact body kubectl apply sent.
        let patch = json!({"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"a"},{"name":"b"}],"containers":[{"name":"a","image":"busybox:2","$setElementOrder/env":[{"name":"NEW"}],"env":[{"name":"NEW","value":"2"},{"$patch":"delete","name":"OLD"}]}]}}}});
        let out = strategic(&job, &patch, "Job").expect("patch");
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([
                {"name":"a","image":"busybox:2","env":[{"name":"NEW","value":"2"},{"name":"KEEP","value":"k"}]},
                {"name":"b","image":"busybox:1"}
            ])
        );
        assert_eq!(out["spec"]["backoffLimit"], 2);
        assert_eq!(out["spec"]["template"]["spec"]["restartPolicy"], "Never");
        assert_eq!(out["metadata"], job["metadata"]);
    }

    #[test]
    fn kubectl_apply_on_a_secret_deletes_and_adds_keys() {
        let secret = json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"s","annotations":{
            "kubectl.kubernetes.io/last-applied-configuration":"{\"data\":{\"a\":\"eA==\",\"b\":\"eQ==\"}}\n"}},
            "type":"Opaque","data":{"a":"eA==","b":"eQ=="}});
        let patch = json!({"data":{"b":null,"c":"eg=="},"metadata":{"annotations":{
            "kubectl.kubernetes.io/last-applied-configuration":"{\"data\":{\"a\":\"eA==\",\"c\":\"eg==\"}}\n"}}});
        let out = strategic(&secret, &patch, "Secret").expect("patch");
        assert_eq!(out["data"], json!({"a":"eA==","c":"eg=="}));
        assert_eq!(out["type"], "Opaque");
        assert_eq!(
            out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
            "{\"data\":{\"a\":\"eA==\",\"c\":\"eg==\"}}\n"
        );
    }

    #[test]
    fn kubectl_apply_on_a_pod_keeps_server_side_container_fields() {
        let pod = json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"app":"web","old":"x"}},
            "spec":{"containers":[{"name":"app","image":"nginx:1.26","ports":[{"containerPort":80,"protocol":"TCP"}],
                "volumeMounts":[{"name":"tok","mountPath":"/var/run/secrets"}]}],
                "volumes":[{"name":"tok","projected":{"sources":[]}}]}});
        let patch = json!({"metadata":{"labels":{"old":null,"tier":"front"}},
            "spec":{"$setElementOrder/containers":[{"name":"app"}],"containers":[{"image":"nginx:1.27","name":"app",
                "ports":[{"containerPort":443}],"volumeMounts":[{"mountPath":"/data","name":"d"}]}]}});
        let out = strategic(&pod, &patch, "Pod").expect("patch");
        assert_eq!(out["metadata"]["labels"], json!({"app":"web","tier":"front"}));
        let c = &out["spec"]["containers"][0];
        assert_eq!(c["image"], "nginx:1.27");
        assert_eq!(
            c["ports"],
            json!([{"containerPort":80,"protocol":"TCP"},{"containerPort":443}])
        );
        assert_eq!(
            c["volumeMounts"],
            json!([{"name":"tok","mountPath":"/var/run/secrets"},{"mountPath":"/data","name":"d"}])
        );
        assert_eq!(out["spec"]["volumes"], pod["spec"]["volumes"]);
    }

    #[test]
    fn set_element_order_reorders_and_keeps_unmentioned_elements() {
        let pod = json!({"spec":{"containers":[{"name":"a"},{"name":"b"},{"name":"sidecar"}]}});
        let patch = json!({"spec":{"$setElementOrder/containers":[{"name":"b"},{"name":"a"}]}});
        let out = strategic(&pod, &patch, "Pod").expect("patch");
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name":"b"},{"name":"a"},{"name":"sidecar"}])
        );
    }

    #[test]
    fn patch_directives_delete_and_replace_maps_and_lists() {
        let pod = json!({"spec":{"securityContext":{"runAsUser":1,"fsGroup":2},"nodeSelector":{"a":"b"},
            "containers":[{"name":"a","image":"x"},{"name":"b","image":"y"}]}});
        let patch = json!({"spec":{"securityContext":{"$patch":"replace","runAsUser":5},
            "nodeSelector":{"$patch":"delete"},
            "containers":[{"$patch":"replace"},{"name":"c","image":"z"}]}});
        let out = strategic(&pod, &patch, "Pod").expect("patch");
        assert_eq!(
            out["spec"],
            json!({"securityContext":{"runAsUser":5},"containers":[{"name":"c","image":"z"}]})
        );
        let bad = strategic(&pod, &json!({"spec":{"$patch":"explode"}}), "Pod")
            .expect_err("bad directive");
        assert_eq!(bad.http_status(), 422);
    }

    #[test]
    fn finalizers_merge_as_a_set_and_delete_from_primitive_list() {
        let obj = json!({"metadata":{"finalizers":["a","b"]}});
        let out =
            strategic(&obj, &json!({"metadata":{"finalizers":["b","c"]}}), "Pod").expect("patch");
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
        let out = strategic(
            &out,
            &json!({"metadata":{"$deleteFromPrimitiveList/finalizers":["a","c"]}}),
            "Pod",
        )
        .expect("patch");
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn retain_keys_clears_other_volume_sources() {
        let pod = json!({"spec":{"volumes":[{"name":"v","hostPath":{"path":"/x"}},{"name":"w","emptyDir":{}}]}});
        let patch = json!({"spec":{"volumes":[{"$retainKeys":["emptyDir","name"],"emptyDir":{},"name":"v"}]}});
        let out = strategic(&pod, &patch, "Pod").expect("patch");
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name":"v","emptyDir":{}},{"name":"w","emptyDir":{}}])
        );
    }

    #[test]
    fn other_lists_are_replaced_and_service_ports_merge_by_port() {
        let pod = json!({"spec":{"tolerations":[{"key":"a"}],"containers":[{"name":"c","args":["1","2"]}]}});
        let out = strategic(
            &pod,
            &json!({"spec":{"tolerations":[{"key":"b"}],"containers":[{"name":"c","args":["3"]}]}}),
            "Pod",
        )
        .expect("patch");
        assert_eq!(out["spec"]["tolerations"], json!([{"key":"b"}]));
        assert_eq!(out["spec"]["containers"][0]["args"], json!(["3"]));
        let svc = json!({"spec":{"ports":[{"port":80,"targetPort":8080}]}});
        let out = strategic(
            &svc,
            &json!({"spec":{"ports":[{"port":80,"targetPort":9090},{"port":443}]}}),
            "Service",
        )
        .expect("patch");
        assert_eq!(out["spec"]["ports"], json!([{"port":80,"targetPort":9090},{"port":443}]));
    }

    #[test]
    fn owner_references_and_conditions_merge_by_key() {
        let obj = json!({"metadata":{"ownerReferences":[{"uid":"1","name":"a"}]},
            "status":{"conditions":[{"type":"Ready","status":"False"},{"type":"Init","status":"True"}]}});
        let patch = json!({"metadata":{"ownerReferences":[{"uid":"2","name":"b"}]},
            "status":{"conditions":[{"type":"Ready","status":"True"}]}});
        let out = strategic(&obj, &patch, "Pod").expect("patch");
        assert_eq!(
            out["metadata"]["ownerReferences"],
            json!([{"uid":"1","name":"a"},{"uid":"2","name":"b"}])
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type":"Ready","status":"True"},{"type":"Init","status":"True"}])
        );
    }

    #[test]
    fn missing_merge_key_and_non_object_patch_are_errors() {
        let pod = json!({"spec":{"containers":[{"name":"a"}]}});
        let err = strategic(&pod, &json!({"spec":{"containers":[{"image":"x"}]}}), "Pod")
            .expect_err("no key");
        assert_eq!(
            err.to_string(),
            "strategic merge patch failed at spec.containers[0]: map does not contain declared merge key: name"
        );
        assert!(matches!(strategic(&pod, &json!([1]), "Pod"), Err(PatchError::Malformed(_))));
    }
}
