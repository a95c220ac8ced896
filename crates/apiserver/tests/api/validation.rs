//! What the server refuses and how: 422 with field paths, `fieldValidation` Strict/Warn/Ignore, request bodies (YAML, size limits, mismatched names and kinds).

use anyhow::{Context, Result};
use holdfast_api::snapshot::{VolumeSnapshot, VolumeSnapshotContent};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::fixture::{config_map, fixture, raw, snapshot, status_of};

#[tokio::test]
async fn invalid_objects_get_422_with_field_paths() -> Result<()> {
    let f = fixture()?;
    let api: Api<VolumeSnapshot> = Api::namespaced(f.client.clone(), "default");
    let mut both = snapshot("bad", "data");
    both.spec.source.volume_snapshot_content_name = Some("content".into());
    let s = status_of(api.create(&PostParams::default(), &both).await)?;
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(
        s.message.starts_with(
            "VolumeSnapshot.snapshot.storage.k8s.io \"bad\" is invalid: spec.source: Forbidden"
        ),
        "{}",
        s.message
    );
    let details = s.details.context("details")?;
    assert_eq!(details.name, "bad");
    assert_eq!(details.kind, "VolumeSnapshot");
    assert_eq!(details.causes[0].field, "spec.source");
    assert_eq!(details.causes[0].reason, "FieldValueForbidden");
    assert!(api.get_opt("bad").await?.is_none(), "nothing half-written");

    // Immutable source on update.
    api.create(&PostParams::default(), &snapshot("ok", "data")).await?;
    let s = status_of(
        api.patch(
            "ok",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"source": {"persistentVolumeClaimName": "other"}}})),
        )
        .await,
    )?;
    assert_eq!(s.code, 422);
    let cause = &s.details.context("details")?.causes[0];
    assert_eq!(cause.field, "spec.source.persistentVolumeClaimName");
    assert!(cause.message.ends_with("persistentVolumeClaimName is immutable"), "{}", cause.message);
    Ok(())
}

/// Upstream's CEL rules for the snapshot kinds, answered at admission with a field path: a
/// class name may not be empty, a source member may not change or go once set.
#[tokio::test]
async fn snapshot_rules_name_the_field() -> Result<()> {
    let f = fixture()?;
    let api: Api<VolumeSnapshot> = Api::namespaced(f.client.clone(), "default");
    let mut empty_class = snapshot("empty-class", "data");
    empty_class.spec.volume_snapshot_class_name = Some(String::new());
    let s = status_of(api.create(&PostParams::default(), &empty_class).await)?;
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    let cause = &s.details.context("details")?.causes[0];
    assert_eq!(
        (cause.field.as_str(), cause.reason.as_str()),
        ("spec.volumeSnapshotClassName", "FieldValueInvalid")
    );
    assert!(api.get_opt("empty-class").await?.is_none());

    // Dropping the member that was set: "required once set", on the source.
    api.create(&PostParams::default(), &snapshot("dynamic", "data")).await?;
    let s = status_of(
        api.patch(
            "dynamic",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"source": {
                "persistentVolumeClaimName": null, "volumeSnapshotContentName": "c"}}})),
        )
        .await,
    )?;
    let cause = &s.details.context("details")?.causes[0];
    assert_eq!(
        (cause.field.as_str(), cause.reason.as_str()),
        ("spec.source", "FieldValueRequired")
    );
    assert!(cause.message.ends_with("persistentVolumeClaimName is required once set"));
    // Emptying the class name later is refused too.
    let s = status_of(
        api.patch(
            "dynamic",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"volumeSnapshotClassName": ""}})),
        )
        .await,
    )?;
    assert_eq!(s.details.context("details")?.causes[0].field, "spec.volumeSnapshotClassName");

    // A content's snapshot handle is immutable.
    let contents: Api<VolumeSnapshotContent> = Api::all(f.client.clone());
    let content: VolumeSnapshotContent = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
        "metadata": {"name": "imported"},
        "spec": {"volumeSnapshotRef": {"name": "s", "namespace": "default"},
                 "deletionPolicy": "Retain", "driver": "holdfast.io/local-path",
                 "source": {"snapshotHandle": "snapshot-1"}}}))?;
    contents.create(&PostParams::default(), &content).await?;
    let s = status_of(
        contents
            .patch(
                "imported",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"source": {"snapshotHandle": "snapshot-2"}}})),
            )
            .await,
    )?;
    assert_eq!(s.details.context("details")?.causes[0].field, "spec.source.snapshotHandle");
    Ok(())
}

#[tokio::test]
async fn field_validation_strict_warn_ignore() -> Result<()> {
    let f = fixture()?;
    let body = |name: &str| {
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": name},
            "spec": {"source": {"persistentVolumeClaimName": "data"}, "foo": 1}})
        .to_string()
    };
    let uri = |v: &str| {
        format!(
            "/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots?fieldValidation={v}"
        )
    };
    let ct = [("content-type", "application/json")];

    let (code, _, text) =
        raw(&f.client, "POST", &uri("Strict"), &ct, body("s1").as_bytes()).await?;
    assert_eq!(code, 400, "{text}");
    let s: Value = serde_json::from_str(&text)?;
    assert_eq!(s["reason"], "BadRequest");
    assert_eq!(
        s["message"],
        "VolumeSnapshot in version \"v1\" cannot be handled as a VolumeSnapshot: strict decoding error: unknown field \"spec.foo\""
    );

    let (code, headers, text) =
        raw(&f.client, "POST", &uri("Warn"), &ct, body("s2").as_bytes()).await?;
    assert_eq!(code, 201, "{text}");
    let warning = headers.get("warning").and_then(|v| v.to_str().ok()).context("Warning header")?;
    assert_eq!(warning, r#"299 - "unknown field \"spec.foo\"""#);
    let created: Value = serde_json::from_str(&text)?;
    assert!(created["spec"].get("foo").is_none(), "pruned");

    let (code, headers, _) =
        raw(&f.client, "POST", &uri("Ignore"), &ct, body("s3").as_bytes()).await?;
    assert_eq!(code, 201);
    assert!(headers.get("warning").is_none());

    // Built-in kinds: unknown fields found by the typed round trip.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "creationTimestamp": null}, "bogus": 1});
    let (code, _, text) = raw(
        &f.client,
        "POST",
        "/api/v1/namespaces/default/configmaps?fieldValidation=Strict",
        &ct,
        cm.to_string().as_bytes(),
    )
    .await?;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains(r#"unknown field \"bogus\""#), "{text}");
    Ok(())
}

#[tokio::test]
async fn bodies_yaml_limits_and_mismatches() -> Result<()> {
    let f = fixture()?;
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  a: b\n";
    let (code, _, text) = raw(
        &f.client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &[("content-type", "application/yaml")],
        yaml.as_bytes(),
    )
    .await?;
    assert_eq!(code, 201, "{text}");
    // No Content-Type at all means JSON (the Python client).
    let (code, _, _) = raw(
        &f.client,
        "POST",
        "/api/v1/namespaces/default/configmaps?&",
        &[],
        br#"{"metadata":{"name":"no-ct"}}"#,
    )
    .await?;
    assert_eq!(code, 201);

    let (code, _, text) = raw(
        &f.client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &[("content-type", "application/json")],
        b"{oops",
    )
    .await?;
    assert_eq!(code, 400);
    let s: Value = serde_json::from_str(&text)?;
    assert_eq!((s["kind"].as_str(), s["reason"].as_str()), (Some("Status"), Some("BadRequest")));

    let big = vec![b' '; 4 * 1024 * 1024];
    let (code, _, text) =
        raw(&f.client, "POST", "/api/v1/namespaces/default/configmaps", &[], &big).await?;
    assert_eq!(code, 413, "{text}");
    assert!(text.contains("RequestEntityTooLarge"));

    let wrong_kind = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}});
    let (code, _, text) = raw(
        &f.client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &[],
        wrong_kind.to_string().as_bytes(),
    )
    .await?;
    assert_eq!(code, 400, "{text}");
    let wrong_ns = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "kube-system"}});
    let (code, _, text) = raw(
        &f.client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &[],
        wrong_ns.to_string().as_bytes(),
    )
    .await?;
    assert_eq!(code, 400);
    assert!(text.contains("does not match the namespace sent on the request"));

    let cms: Api<ConfigMap> = Api::namespaced(f.client.clone(), "missing");
    let s = status_of(cms.create(&PostParams::default(), &config_map("x", &[])).await)?;
    assert_eq!((s.code, s.message.as_str()), (404, "namespaces \"missing\" not found"));
    Ok(())
}

/// `kubectl create configmap c1 --from-literal=a=b`, as kubectl v1.32 sends it.
const CONFIG_MAP_PROTOBUF: &str = "6b3873000a0f0a0276311209436f6e6669674d617012260a120a02633112001a0022002a0032003800420012060a016112016212080a0362696e1201781a002200";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[tokio::test]
async fn media_types_protobuf_and_415() -> Result<()> {
    let f = fixture()?;
    let protobuf = [("content-type", "application/vnd.kubernetes.protobuf")];
    let (code, headers, text) = raw(
        &f.client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &protobuf,
        &hex(CONFIG_MAP_PROTOBUF),
    )
    .await?;
    assert_eq!(code, 201, "{text}");
    // Answered in JSON, which kubectl accepts beside protobuf.
    assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));
    let created: Value = serde_json::from_str(&text)?;
    assert_eq!(created["data"], json!({"a": "b", "bin": "x"}));

    // A protobuf ConfigMap posted as a Secret: the kinds disagree, as with JSON.
    let (code, _, text) = raw(
        &f.client,
        "POST",
        "/api/v1/namespaces/default/secrets",
        &protobuf,
        &hex(CONFIG_MAP_PROTOBUF),
    )
    .await?;
    assert_eq!(code, 400, "{text}");
    // Custom kinds are not served in protobuf, as upstream.
    let (code, _, text) = raw(
        &f.client,
        "POST",
        "/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots",
        &protobuf,
        &hex(CONFIG_MAP_PROTOBUF),
    )
    .await?;
    assert_eq!(code, 415, "{text}");
    let s: Value = serde_json::from_str(&text)?;
    assert_eq!(s["reason"], "UnsupportedMediaType");
    assert_eq!(
        s["message"],
        "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml"
    );
    // Unknown media types are 415 naming the accepted ones, not 400.
    let (code, _, text) = raw(
        &f.client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &[("content-type", "text/plain")],
        br#"{"metadata":{"name":"plain"}}"#,
    )
    .await?;
    assert_eq!(code, 415, "{text}");
    assert!(
        text.contains("accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf"),
        "{text}"
    );
    // Garbage in protobuf is a bad request.
    let (code, _, text) = raw(
        &f.client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &protobuf,
        b"k8s\0\x0a\xff",
    )
    .await?;
    assert_eq!(code, 400, "{text}");
    Ok(())
}

#[tokio::test]
async fn objects_over_the_etcd_limit_are_refused_as_upstream() -> Result<()> {
    let f = fixture()?;
    let uri = "/apis/storage.kubeblocks.io/v1alpha1/storageproviders";
    let provider = |name: &str, template_bytes: usize| {
        json!({"apiVersion": "storage.kubeblocks.io/v1alpha1", "kind": "StorageProvider",
            "metadata": {"name": name},
            "spec": {"datasafedConfigTemplate": "x".repeat(template_bytes)}})
        .to_string()
    };
    let ct = [("content-type", "application/json")];
    // 1.6 MiB: under the 3 MiB body limit, over etcd's 1.5 MiB.
    let (code, _, text) =
        raw(&f.client, "POST", uri, &ct, provider("big", 1600 * 1024).as_bytes()).await?;
    assert_eq!(code, 500, "{text}");
    let s: Value = serde_json::from_str(&text)?;
    assert_eq!(s["message"], "etcdserver: request is too large");
    assert!(s.get("reason").is_none(), "upstream passes the etcd error on without a reason: {s}");
    let (code, _, _) = raw(&f.client, "GET", &format!("{uri}/big"), &[], b"").await?;
    assert_eq!(code, 404);

    // Under the limit it is stored; growing past it by an update is refused the same way.
    let (code, _, text) =
        raw(&f.client, "POST", uri, &ct, provider("big", 1400 * 1024).as_bytes()).await?;
    assert_eq!(code, 201, "{text}");
    let grow = json!({"spec": {"storageClassTemplate": "y".repeat(200 * 1024)}}).to_string();
    let merge = [("content-type", "application/merge-patch+json")];
    let (code, _, text) =
        raw(&f.client, "PATCH", &format!("{uri}/big"), &merge, grow.as_bytes()).await?;
    assert_eq!(code, 500, "{text}");
    assert!(text.contains("etcdserver: request is too large"), "{text}");
    Ok(())
}
