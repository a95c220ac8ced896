use super::*;

fn defs() -> Vec<ResourceDef> {
    holdfast_api::registry()
}

fn def(group: &str, kind: &str) -> ResourceDef {
    defs().into_iter().find(|d| d.group == group && d.kind == kind).unwrap()
}

/// The first PATCH operation carrying `gvk`, as kubectl's query-param verifier looks for it.
fn patch_op_for<'a>(doc: &'a Value, gvk: &Value) -> Option<&'a Value> {
    doc["paths"]
        .as_object()?
        .values()
        .filter_map(|p| p.get("patch"))
        .find(|op| &op["x-kubernetes-group-version-kind"] == gvk)
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    let r = schema
        .get("$ref")
        .or_else(|| schema.get("allOf").and_then(|a| a[0].get("$ref")))
        .and_then(Value::as_str);
    match r {
        Some(r) => &doc["components"]["schemas"][r.strip_prefix(REF_PREFIX).unwrap()],
        None => schema,
    }
}

#[test]
fn index_lists_every_group_version_with_a_hash() {
    let defs = defs();
    let index = v3_index(&defs);
    let paths = index["paths"].as_object().unwrap();
    assert_eq!(paths.keys().next().unwrap(), "api/v1", "core first");
    let velero = paths["apis/velero.io/v1"]["serverRelativeURL"].as_str().unwrap();
    let doc = v3_group_version(&defs, "velero.io", "v1").unwrap();
    assert_eq!(velero, format!("/openapi/v3/apis/velero.io/v1?hash={}", document_hash(&doc)));
    assert!(paths.contains_key("apis/batch/v1"));
    assert!(paths.contains_key("apis/events.k8s.io/v1"));
    // Stable across calls, different between documents.
    assert_eq!(v3_index(&defs), index);
    assert_ne!(paths["api/v1"], paths["apis/batch/v1"]);
}

#[test]
fn hash_changes_when_a_schema_changes() {
    let mut defs = defs();
    let before = v3_index(&defs)["paths"]["apis/velero.io/v1"].clone();
    let other = v3_index(&defs)["paths"]["api/v1"].clone();
    let backup = defs
        .iter_mut()
        .find(|d| d.group == "velero.io" && d.kind == "BackupStorageLocation")
        .unwrap();
    backup.schema["properties"]["spec"]["description"] = json!("changed");
    let after = v3_index(&defs);
    assert_ne!(after["paths"]["apis/velero.io/v1"], before);
    assert_eq!(after["paths"]["api/v1"], other, "other documents keep their hash");
}

#[test]
fn custom_kind_patch_operation_satisfies_kubectl() {
    let doc = v3_group_version(&defs(), "velero.io", "v1").unwrap();
    assert_eq!(doc["openapi"], "3.0.0");
    let item =
        &doc["paths"]["/apis/velero.io/v1/namespaces/{namespace}/backupstoragelocations/{name}"];
    let patch = &item["patch"];
    assert_eq!(patch["x-kubernetes-action"], "patch");
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "velero.io", "version": "v1", "kind": "BackupStorageLocation"})
    );
    let params: Vec<&str> = patch["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(params.contains(&"fieldValidation"), "{params:?}");
    assert!(params.contains(&"name") && params.contains(&"namespace"));
    let types: Vec<&String> = patch["requestBody"]["content"].as_object().unwrap().keys().collect();
    assert_eq!(
        types,
        [
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml"
        ]
    );
    for verb in ["get", "put", "delete"] {
        assert_eq!(
            item[verb]["x-kubernetes-group-version-kind"]["kind"], "BackupStorageLocation",
            "{verb}"
        );
    }
    let coll = &doc["paths"]["/apis/velero.io/v1/namespaces/{namespace}/backupstoragelocations"];
    assert_eq!(coll["get"]["x-kubernetes-action"], "list");
    assert_eq!(coll["post"]["x-kubernetes-action"], "post");
    let all = &doc["paths"]["/apis/velero.io/v1/backupstoragelocations"];
    assert_eq!(all["get"]["operationId"], "listVeleroIoV1BackupStorageLocationForAllNamespaces");
    assert!(all.get("post").is_none());
    // The first PATCH for the GVK (what kubectl checks) declares fieldValidation.
    let first = patch_op_for(
        &doc,
        &json!({"group": "velero.io", "version": "v1", "kind": "BackupStorageLocation"}),
    );
    assert!(
        first.unwrap()["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation")
    );
}

#[test]
fn every_served_kind_has_a_patch_operation_and_schema() {
    let defs = defs();
    for d in &defs {
        let doc = v3_group_version(&defs, &d.group, &d.version).unwrap();
        let gvk = json!({"group": d.group, "version": d.version, "kind": d.kind});
        assert!(patch_op_for(&doc, &gvk).is_some(), "{}", d.kind);
        let schema = &doc["components"]["schemas"][schema_name(d)];
        assert_eq!(schema["x-kubernetes-group-version-kind"], json!([gvk]), "{}", d.kind);
        // Every $ref resolves inside the document.
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        for r in refs {
            assert!(
                doc["components"]["schemas"].get(&r).is_some(),
                "{} refers to missing {r}",
                d.kind
            );
        }
    }
}

#[test]
fn schema_names() {
    assert_eq!(schema_name(&def("velero.io", "PodVolumeRestore")), "io.velero.v1.PodVolumeRestore");
    assert_eq!(schema_name(&def("", "Pod")), "io.k8s.api.core.v1.Pod");
    assert_eq!(schema_name(&def("batch", "Job")), "io.k8s.api.batch.v1.Job");
    assert_eq!(schema_name(&def("events.k8s.io", "Event")), "io.k8s.api.events.v1.Event");
    let snap = defs().into_iter().find(|d| d.group == "snapshot.storage.k8s.io");
    if let Some(s) = snap {
        assert_eq!(schema_name(&s), format!("io.k8s.storage.snapshot.{}.{}", s.version, s.kind));
    }
}

#[test]
fn custom_kind_schema_supports_explain() {
    let doc = v3_group_version(&defs(), "velero.io", "v1").unwrap();
    let backup = &doc["components"]["schemas"]["io.velero.v1.BackupStorageLocation"];
    assert_eq!(
        backup["properties"]["spec"],
        def("velero.io", "BackupStorageLocation").schema["properties"]["spec"]
    );
    assert!(backup["properties"]["kind"]["description"].is_string());
    let meta = resolve(&doc, &backup["properties"]["metadata"]);
    assert!(
        meta["properties"]["name"]["description"].as_str().unwrap().contains("Name must be unique")
    );
    assert!(meta["properties"]["labels"]["additionalProperties"]["type"] == "string");
    let list = &doc["components"]["schemas"]["io.velero.v1.BackupStorageLocationList"];
    assert_eq!(list["x-kubernetes-group-version-kind"][0]["kind"], "BackupStorageLocationList");
}

#[test]
fn builtin_kinds_get_their_upstream_schemas() {
    let doc = v3_group_version(&defs(), "", "v1").unwrap();
    let pod = &doc["components"]["schemas"]["io.k8s.api.core.v1.Pod"];
    assert_eq!(
        pod["x-kubernetes-group-version-kind"],
        json!([{"group": "", "version": "v1", "kind": "Pod"}])
    );
    let spec = resolve(&doc, &pod["properties"]["spec"]);
    let containers = &spec["properties"]["containers"];
    assert!(containers["description"].as_str().unwrap().contains("containers"));
    let container = resolve(&doc, &containers["items"]);
    assert_eq!(container["properties"]["image"]["type"], "string");
    // Refs use OpenAPI 3 component paths, never JSON Schema $defs.
    assert!(!doc.to_string().contains("#/$defs"));
    // Core paths and the strategic merge patch content type for built-ins.
    let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
    assert!(
        patch["requestBody"]["content"].get("application/strategic-merge-patch+json").is_some()
    );
    let status = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/status"];
    assert_eq!(status["patch"]["operationId"], "patchCoreV1NamespacedPodStatus");
    assert!(status.get("delete").is_none());
    let ns = &doc["paths"]["/api/v1/namespaces/{name}"];
    assert_eq!(ns["patch"]["x-kubernetes-group-version-kind"]["kind"], "Namespace");
    let ns_params: Vec<&Value> =
        ns["patch"]["parameters"].as_array().unwrap().iter().map(|p| &p["name"]).collect();
    assert!(!ns_params.contains(&&json!("namespace")), "cluster-scoped paths take no namespace");
    assert!(doc["paths"].get("/api/v1/secrets").is_some(), "cross-namespace list");
}

#[test]
fn unknown_group_version_is_none() {
    assert!(v3_group_version(&defs(), "nope.io", "v1").is_none());
    assert!(v3_group_version(&defs(), "velero.io", "v9").is_none());
}
