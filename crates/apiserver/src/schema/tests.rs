use serde_json::json;

use super::*;

/// Shaped like kube's `CustomResource` derive output (schemars → structural schema).
fn schema() -> Value {
    json!({
        "description": "Auto-generated derived type for BackupSpec via `CustomResource`",
        "title": "Backup",
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "required": ["storageLocation"],
                "properties": {
                    "storageLocation": {"type": "string", "minLength": 1, "maxLength": 20, "pattern": "^[a-z][a-z0-9-]*$"},
                    "mode": {"type": "string", "enum": ["Full", "Incremental"], "default": "Full"},
                    "retries": {"type": "integer", "format": "int32", "minimum": 0, "maximum": 10, "default": 3},
                    "ratio": {"type": "number", "nullable": true},
                    "paused": {"type": "boolean", "nullable": true},
                    "size": {"x-kubernetes-int-or-string": true, "nullable": true},
                    "notBefore": {"type": "string", "format": "date-time", "nullable": true},
                    "tags": {"type": "object", "additionalProperties": {"type": "string"}, "nullable": true},
                    "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "nullable": true},
                    "schedules": {
                        "type": "array", "maxItems": 3, "nullable": true,
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string"},
                                "enabled": {"type": "boolean", "default": true},
                                "window": {"type": "object", "properties": {"start": {"type": "string"}}, "nullable": true}
                            }
                        }
                    },
                    "options": {"type": "object", "properties": {"level": {"type": "integer", "default": 1}}, "default": {}},
                    "target": {
                        "type": "object", "nullable": true,
                        "properties": {"pvc": {"type": "string", "nullable": true}, "snapshot": {"type": "string", "nullable": true}},
                        "oneOf": [{"required": ["pvc"]}, {"required": ["snapshot"]}]
                    }
                }
            },
            "status": {"type": "object", "nullable": true, "properties": {"phase": {"type": "string", "nullable": true}}}
        }
    })
}

fn backup(spec: Value) -> Value {
    json!({"apiVersion": "example.io/v1", "kind": "Backup", "metadata": {"name": "b1", "namespace": "default"}, "spec": spec})
}

fn messages(errs: &[FieldError]) -> Vec<String> {
    errs.iter().map(ToString::to_string).collect()
}

#[test]
fn unknown_fields_are_pruned_with_kubernetes_paths() {
    let mut obj = backup(json!({
        "storageLocation": "default", "foo": 1,
        "schedules": [{"name": "a", "bar": true, "window": {"start": "1", "end": "2"}}],
        "tags": {"k": "v"},
        "config": {"anything": {"goes": [1]}}
    }));
    obj["metadata"]["foo"] = json!("x");
    obj["extra"] = json!({});
    let report = process(&schema(), &mut obj).expect("valid");
    assert_eq!(
        report.unknown_fields,
        vec![
            "metadata.foo",
            "spec.foo",
            "spec.schedules[0].bar",
            "spec.schedules[0].window.end",
            "extra"
        ]
    );
    assert!(obj.get("extra").is_none());
    assert!(obj["metadata"].get("foo").is_none());
    assert!(obj["spec"].get("foo").is_none());
    assert_eq!(obj["spec"]["schedules"][0]["window"], json!({"start": "1"}));
    assert_eq!(
        obj["spec"]["config"],
        json!({"anything": {"goes": [1]}}),
        "preserve-unknown-fields keeps everything"
    );
    assert_eq!(obj["spec"]["tags"], json!({"k": "v"}), "map entries are not unknown fields");
    assert_eq!(obj["apiVersion"], "example.io/v1");
}

#[test]
fn status_is_allowed_at_the_top_even_without_a_schema_for_it() {
    let s = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {}}}});
    let mut obj = json!({"apiVersion": "v", "kind": "K", "metadata": {"name": "x"}, "spec": {}, "status": {"free": 1}});
    let report = process(&s, &mut obj).expect("valid");
    assert!(report.unknown_fields.is_empty());
    assert_eq!(obj["status"], json!({"free": 1}));
}

#[test]
fn defaults_are_applied_after_pruning() {
    let mut obj = backup(
        json!({"storageLocation": "default", "schedules": [{"name": "a"}, {"name": "b", "enabled": false}],
        "paused": null, "mode": null}),
    );
    process(&schema(), &mut obj).expect("valid");
    let spec = &obj["spec"];
    assert_eq!(spec["mode"], "Full", "null on a non-nullable field takes the default");
    assert_eq!(spec["retries"], 3);
    assert_eq!(spec["options"], json!({"level": 1}), "a defaulted object is defaulted inside too");
    assert_eq!(
        spec["schedules"],
        json!([{"name": "a", "enabled": true}, {"name": "b", "enabled": false}])
    );
    assert_eq!(spec["paused"], Value::Null, "nullable keeps null");
}

#[test]
fn type_errors_read_like_kubernetes() {
    let mut obj = backup(
        json!({"storageLocation": "default", "schedules": [{"name": "a", "enabled": "string"}],
        "retries": "3", "ratio": "x", "tags": {"k": 1}, "size": true}),
    );
    let errs = process(&schema(), &mut obj).expect_err("invalid");
    assert_eq!(
        messages(&errs),
        vec![
            // Document order.
            "spec.schedules[0].enabled: Invalid value: \"string\": spec.schedules[0].enabled in body must be of type boolean: \"string\"",
            "spec.retries: Invalid value: \"string\": spec.retries in body must be of type integer: \"string\"",
            "spec.ratio: Invalid value: \"string\": spec.ratio in body must be of type number: \"string\"",
            "spec.tags[k]: Invalid value: \"integer\": spec.tags[k] in body must be of type string: \"integer\"",
            "spec.size: Invalid value: \"boolean\": spec.size in body must be of type integer or string: \"boolean\"",
        ]
    );
    assert_eq!(errs[0].kind, holdfast_api::FieldErrorKind::Invalid);
}

#[test]
fn int_or_string_accepts_both() {
    for size in [json!(5), json!("5Gi")] {
        let mut obj = backup(json!({"storageLocation": "default", "size": size}));
        process(&schema(), &mut obj).expect("valid");
    }
}

#[test]
fn required_enum_pattern_and_bounds_are_checked() {
    let mut obj =
        json!({"apiVersion": "example.io/v1", "kind": "Backup", "metadata": {"name": "b1"}});
    let errs = process(&schema(), &mut obj).expect_err("no spec");
    assert_eq!(messages(&errs), vec!["spec: Required value"]);

    let mut obj = backup(json!({"schedules": [{"enabled": true}], "mode": "Partial"}));
    let errs = process(&schema(), &mut obj).expect_err("invalid");
    assert_eq!(
        messages(&errs),
        vec![
            "spec.schedules[0].name: Required value",
            "spec.mode: Unsupported value: \"Partial\": supported values: \"Full\", \"Incremental\"",
            "spec.storageLocation: Required value",
        ]
    );
    assert_eq!(errs[1].kind.reason(), "FieldValueNotSupported");

    let mut obj = backup(json!({"storageLocation": "Bad_Name", "retries": 11,
        "schedules": [{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}]}));
    let errs = process(&schema(), &mut obj).expect_err("invalid");
    assert_eq!(
        messages(&errs),
        vec![
            "spec.storageLocation: Invalid value: \"Bad_Name\": spec.storageLocation in body should match '^[a-z][a-z0-9-]*$'",
            "spec.retries: Invalid value: 11: spec.retries in body should be less than or equal to 10",
            "spec.schedules: Invalid value: 4: spec.schedules in body should have at most 3 items",
        ]
    );

    let mut obj = backup(json!({"storageLocation": "", "retries": -1}));
    let errs = process(&schema(), &mut obj).expect_err("invalid");
    assert_eq!(
        messages(&errs),
        vec![
            "spec.storageLocation: Invalid value: \"\": spec.storageLocation in body should be at least 1 chars long",
            "spec.storageLocation: Invalid value: \"\": spec.storageLocation in body should match '^[a-z][a-z0-9-]*$'",
            "spec.retries: Invalid value: -1: spec.retries in body should be greater than or equal to 0",
        ]
    );
    let mut long = backup(json!({"storageLocation": "a".repeat(21)}));
    let errs = process(&schema(), &mut long).expect_err("too long");
    assert!(errs[0].to_string().ends_with("should be at most 20 chars long"), "{errs:?}");
}

#[test]
fn formats_date_time_and_int32() {
    let mut ok = backup(json!({"storageLocation": "default", "notBefore": "2026-11-21T10:00:00Z"}));
    process(&schema(), &mut ok).expect("valid date-time");
    let mut bad = backup(
        json!({"storageLocation": "default", "notBefore": "yesterday", "retries": 4_000_000_000u64}),
    );
    let errs = process(&schema(), &mut bad).expect_err("invalid");
    let m = messages(&errs);
    assert!(m.contains(&"spec.notBefore: Invalid value: \"yesterday\": spec.notBefore in body must be of type date-time: \"yesterday\"".to_string()), "{m:?}");
    assert!(
        m.iter().any(|e| e.starts_with(
            "spec.retries: Invalid value: 4000000000: spec.retries in body must be of type int32"
        )),
        "{m:?}"
    );
}

#[test]
fn nullable_controls_null() {
    let s = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "items": {"type": "array", "items": {"type": "string"}}}}}});
    let mut obj = json!({"metadata": {"name": "x"}, "spec": {"items": ["a", null]}});
    let errs = process(&s, &mut obj).expect_err("null item");
    assert_eq!(
        messages(&errs),
        vec![
            "spec.items[1]: Invalid value: \"null\": spec.items[1] in body must be of type string: \"null\""
        ]
    );
    // A non-nullable field set to null without a default is dropped (apiextensions prunes it).
    let mut obj = json!({"metadata": {"name": "x"}, "spec": {"items": null}});
    process(&s, &mut obj).expect("pruned");
    assert_eq!(obj["spec"], json!({}));
}

#[test]
fn one_of_needs_exactly_one_branch() {
    for (target, ok) in [
        (json!({"pvc": "p"}), true),
        (json!({"snapshot": "s"}), true),
        (json!({"pvc": "p", "snapshot": "s"}), false),
        (json!({}), false),
    ] {
        let mut obj = backup(json!({"storageLocation": "default", "target": target}));
        let res = process(&schema(), &mut obj);
        assert_eq!(res.is_ok(), ok, "{target}: {res:?}");
        if let Err(e) = res {
            assert!(
                e[0].to_string().contains("must validate one and only one schema (oneOf)"),
                "{e:?}"
            );
        }
    }
    let any = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "v": {"anyOf": [{"type": "integer"}, {"type": "string"}]}}}}});
    let mut obj = json!({"metadata": {"name": "x"}, "spec": {"v": true}});
    let errs = process(&any, &mut obj).expect_err("anyOf");
    assert!(errs[0].to_string().contains("must validate at least one schema (anyOf)"), "{errs:?}");
    let mut obj = json!({"metadata": {"name": "x"}, "spec": {"v": "s"}});
    process(&any, &mut obj).expect("anyOf string");
}

#[test]
fn list_type_map_and_set_reject_duplicates() {
    let s = json!({"type": "object", "properties": {"status": {"type": "object", "properties": {
        "conditions": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
            "items": {"type": "object", "properties": {"type": {"type": "string"}, "status": {"type": "string"}}}},
        "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}}}}});
    let mut obj = json!({"metadata": {"name": "x"}, "status": {
        "conditions": [{"type": "A", "status": "True"}, {"type": "A", "status": "False"}], "tags": ["x", "y", "x"]}});
    let errs = process(&s, &mut obj).expect_err("duplicates");
    assert_eq!(
        messages(&errs),
        vec![
            "status.conditions[1]: Duplicate value: [\"A\"]",
            "status.tags[2]: Duplicate value: \"x\""
        ]
    );
}

#[test]
fn metadata_is_checked_as_object_meta() {
    let mut obj = backup(json!({"storageLocation": "default"}));
    obj["metadata"]["name"] = json!("Not_Valid");
    obj["metadata"]["labels"] = json!({"app": "has space"});
    let errs = process(&schema(), &mut obj).expect_err("invalid");
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, vec!["metadata.name", "metadata.labels[app]"]);
    let mut gen_name = json!({"apiVersion": "example.io/v1", "kind": "Backup", "metadata": {"generateName": "b-"},
        "spec": {"storageLocation": "default"}});
    process(&schema(), &mut gen_name).expect("generateName without name is fine");
}

#[test]
fn real_generated_volume_snapshot_schema_round_trips() {
    // The schema `holdfast crds --json` prints for VolumeSnapshot (descriptions trimmed).
    let s = json!({"properties": {"spec": {"properties": {"source": {"properties": {
        "persistentVolumeClaimName": {"nullable": true, "type": "string"},
        "volumeSnapshotContentName": {"nullable": true, "type": "string"}}, "type": "object"},
        "volumeSnapshotClassName": {"nullable": true, "type": "string"}}, "required": ["source"], "type": "object"},
        "status": {"nullable": true, "properties": {"boundVolumeSnapshotContentName": {"nullable": true, "type": "string"},
            "readyToUse": {"nullable": true, "type": "boolean"},
            "restoreSize": {"nullable": true, "x-kubernetes-int-or-string": true}}, "type": "object"}},
        "required": ["spec"], "title": "VolumeSnapshot", "type": "object"});
    let mut obj = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "snap-1", "namespace": "default"},
        "spec": {"source": {"persistentVolumeClaimName": "data", "typo": 1}, "volumeSnapshotClassName": null},
        "status": {"readyToUse": true, "restoreSize": "1Gi"}});
    let report = process(&s, &mut obj).expect("valid");
    assert_eq!(report.unknown_fields, vec!["spec.source.typo"]);
    assert_eq!(obj["spec"]["volumeSnapshotClassName"], Value::Null);
    let mut bad =
        json!({"metadata": {"name": "s"}, "spec": {"source": {}}, "status": {"readyToUse": "yes"}});
    let errs = process(&s, &mut bad).expect_err("bad status");
    assert_eq!(errs[0].field, "status.readyToUse");
}

#[test]
fn removed_paths_lists_what_the_round_trip_dropped() {
    let before = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "bogus": 1},
        "spec": {"containers": [{"name": "c", "imagee": "x"}, {"name": "d"}], "nodeName": null, "foo": {"bar": 1}}});
    let after = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c"}, {"name": "d"}]}});
    assert_eq!(
        removed_paths(&before, &after),
        vec!["metadata.bogus", "spec.containers[0].imagee", "spec.foo"]
    );
    assert!(removed_paths(&after, &after).is_empty());
}

#[test]
fn a_non_object_body_is_rejected() {
    let errs = process(&schema(), &mut json!([1])).expect_err("array");
    assert_eq!(errs.len(), 1);
}

#[test]
fn embedded_resources_keep_their_envelope() {
    let s = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "template": {"type": "object", "x-kubernetes-embedded-resource": true,
            "properties": {"spec": {"type": "object", "properties": {"a": {"type": "string"}}}}}}}}});
    let mut obj = json!({"metadata": {"name": "x"}, "spec": {"template": {"apiVersion": "v1", "kind": "Pod",
        "metadata": {"labels": {"a": "b"}, "bogus": 1}, "spec": {"a": "x", "b": "y"}}}});
    let report = process(&s, &mut obj).expect("valid");
    assert_eq!(report.unknown_fields, vec!["spec.template.metadata.bogus", "spec.template.spec.b"]);
    assert_eq!(
        obj["spec"]["template"],
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"a": "b"}}, "spec": {"a": "x"}})
    );
}

#[test]
fn a_schema_without_structure_prunes_nothing_and_a_typed_root_prunes_unknown_top_fields() {
    let mut obj = json!({"metadata": {"name": "x"}, "spec": {"a": 1}, "other": 2});
    let report = process(&json!({}), &mut obj).expect("valid");
    assert!(report.unknown_fields.is_empty());
    assert_eq!(obj["other"], 2);
    let report = process(
        &json!({"type": "object", "properties": {"spec": {"type": "object",
        "x-kubernetes-preserve-unknown-fields": true}}}),
        &mut obj,
    )
    .expect("valid");
    assert_eq!(report.unknown_fields, vec!["other"]);
    assert_eq!(obj, json!({"metadata": {"name": "x"}, "spec": {"a": 1}}));
}

#[test]
fn byte_format_must_be_base64() {
    let s = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "ca": {"type": "string", "format": "byte"}}}}});
    let mut ok = json!({"metadata": {"name": "x"}, "spec": {"ca": "aGVsbG8="}});
    process(&s, &mut ok).expect("base64");
    let mut bad = json!({"metadata": {"name": "x"}, "spec": {"ca": "not base64!"}});
    let errs = process(&s, &mut bad).expect_err("not base64");
    assert_eq!(
        messages(&errs),
        vec![
            "spec.ca: Invalid value: \"not base64!\": spec.ca in body must be of type byte: \"not base64!\""
        ]
    );
}

/// Every custom-kind example the project ships passes its registry schema untouched: nothing is
/// pruned, nothing rejected, and processing it again changes nothing.
#[test]
fn every_shipped_example_passes_its_registry_schema() {
    // The directory at run time (cargo sets it for tests): a binary cargo reuses from a clone at
    // another path, through a shared target directory, would carry that clone's path.
    let dir = std::path::Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("../../examples");
    let defs = holdfast_api::registry();
    let mut checked = 0;
    // The demo, the walk-through and the reference manifests below it.
    let mut files = Vec::new();
    let mut dirs = vec![dir.clone()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).expect("examples dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
                files.push(path);
            }
        }
    }
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read example");
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("example parses");
        for doc in docs {
            let def = defs.iter().find(|d| {
                Some(d.api_version().as_str()) == doc["apiVersion"].as_str()
                    && Some(d.kind.as_str()) == doc["kind"].as_str()
            });
            let Some(def) = def.filter(|d| !d.builtin) else { continue };
            let mut obj = doc.clone();
            let report = process(&def.schema, &mut obj)
                .unwrap_or_else(|e| panic!("{}: {}", path.display(), messages(&e).join("; ")));
            assert!(
                report.unknown_fields.is_empty(),
                "{}: {:?}",
                path.display(),
                report.unknown_fields
            );
            let mut again = obj.clone();
            process(&def.schema, &mut again).expect("processed object stays valid");
            assert_eq!(again, obj, "{}: processing is idempotent", path.display());
            checked += 1;
        }
    }
    // 8 in the demo, 4 in the walk-through, 17 in reference/.
    assert!(checked >= 29, "only {checked} custom-kind examples found in {}", dir.display());
}
