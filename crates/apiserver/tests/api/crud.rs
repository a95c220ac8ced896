//! Create, get, list, replace, patch and delete of one object: names, conflicts, the status subresource, generation and resourceVersion.

use anyhow::{Context, Result};
use holdfast_api::snapshot::{VolumeSnapshot, VolumeSnapshotStatus};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::fixture::{fixture, rv, snapshot, status_of};

#[tokio::test]
async fn custom_kind_create_get_list_replace_patch_delete() -> Result<()> {
    let f = fixture()?;
    let api: Api<VolumeSnapshot> = Api::namespaced(f.client.clone(), "default");
    let created = api.create(&PostParams::default(), &snapshot("s1", "data")).await?;
    let meta = &created.metadata;
    assert_eq!(uuid::Uuid::parse_str(meta.uid.as_deref().unwrap_or(""))?.get_version_num(), 4);
    let ts = serde_json::to_value(&meta.creation_timestamp)?;
    let ts = ts.as_str().context("creationTimestamp")?;
    assert_eq!(ts.len(), "2026-01-01T00:00:00Z".len(), "whole seconds: {ts}");
    assert_eq!(meta.generation, Some(1));
    assert!(!rv(&created).is_empty());
    assert!(
        !meta.managed_fields.as_deref().unwrap_or_default().is_empty(),
        "managedFields recorded"
    );

    let got = api.get("s1").await?;
    assert_eq!(got.metadata.uid, created.metadata.uid);
    assert_eq!(got.spec.source.persistent_volume_claim_name.as_deref(), Some("data"));

    api.create(&PostParams::default(), &snapshot("s2", "logs")).await?;
    let list = api.list(&ListParams::default()).await?;
    assert_eq!(list.items.iter().map(|s| s.name_any()).collect::<Vec<_>>(), ["s1", "s2"]);
    assert!(list.metadata.resource_version.is_some_and(|v| !v.is_empty()));

    let mut replaced = got.clone();
    replaced.spec.volume_snapshot_class_name = Some("fast".into());
    let replaced = api.replace("s1", &PostParams::default(), &replaced).await?;
    assert_eq!(replaced.spec.volume_snapshot_class_name.as_deref(), Some("fast"));
    assert_eq!(replaced.metadata.generation, Some(2));
    assert_eq!(replaced.metadata.uid, created.metadata.uid);
    assert_eq!(replaced.metadata.creation_timestamp, created.metadata.creation_timestamp);

    let merged = api
        .patch(
            "s1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await?;
    assert_eq!(merged.labels().get("team").map(String::as_str), Some("a"));
    assert_eq!(merged.metadata.generation, Some(2), "a metadata change does not bump generation");

    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/spec/volumeSnapshotClassName", "value": "slow"}
    ]))?;
    let patched = api.patch("s1", &PatchParams::default(), &Patch::<()>::Json(ops)).await?;
    assert_eq!(patched.spec.volume_snapshot_class_name.as_deref(), Some("slow"));
    assert_eq!(patched.metadata.generation, Some(3));

    let applied = api
        .patch(
            "s3",
            &PatchParams::apply("tester"),
            &Patch::Apply(json!({
                "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                "metadata": {"name": "s3"}, "spec": {"source": {"persistentVolumeClaimName": "db"}}
            })),
        )
        .await?;
    assert_eq!(applied.spec.source.persistent_volume_claim_name.as_deref(), Some("db"));
    let mf = applied.metadata.managed_fields.clone().unwrap_or_default();
    assert!(
        mf.iter()
            .any(|e| e.manager.as_deref() == Some("tester")
                && e.operation.as_deref() == Some("Apply"))
    );

    let deleted = api.delete("s1", &DeleteParams::default()).await?;
    let deleted = deleted.left().context("delete without finalizers returns the object")?;
    assert_eq!(deleted.name_any(), "s1");
    assert!(api.get_opt("s1").await?.is_none());
    let s = status_of(api.get("s1").await)?;
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
    assert_eq!(s.message, "volumesnapshots.snapshot.storage.k8s.io \"s1\" not found");
    Ok(())
}

#[tokio::test]
async fn generate_name_conflicts_and_already_exists() -> Result<()> {
    let f = fixture()?;
    let api: Api<VolumeSnapshot> = Api::namespaced(f.client.clone(), "default");
    let mut vs = snapshot("", "data");
    vs.metadata.name = None;
    vs.metadata.generate_name = Some("snap-".into());
    let a = api.create(&PostParams::default(), &vs).await?;
    let b = api.create(&PostParams::default(), &vs).await?;
    for n in [a.name_any(), b.name_any()] {
        assert!(n.starts_with("snap-") && n.len() == "snap-".len() + 5, "{n}");
    }
    assert_ne!(a.name_any(), b.name_any());

    let s = status_of(api.create(&PostParams::default(), &snapshot(&a.name_any(), "x")).await)?;
    assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(
        s.message,
        format!("volumesnapshots.snapshot.storage.k8s.io \"{}\" already exists", a.name_any())
    );

    // Stale resourceVersion: 409 Conflict.
    let name = a.name_any();
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
    )
    .await?;
    let s = status_of(api.replace(&name, &PostParams::default(), &a).await)?;
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(s.message.starts_with(&format!(
        "Operation cannot be fulfilled on volumesnapshots.snapshot.storage.k8s.io \"{name}\": the object has been modified"
    )));

    // No resourceVersion on a custom kind: 422.
    let mut unpinned = api.get(&name).await?;
    unpinned.metadata.resource_version = None;
    let s = status_of(api.replace(&name, &PostParams::default(), &unpinned).await)?;
    assert_eq!(s.code, 422);
    assert_eq!(
        s.message,
        format!(
            "VolumeSnapshot.snapshot.storage.k8s.io \"{name}\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
        )
    );

    // A merge patch pinning an old resourceVersion is a failed precondition.
    let stale = json!({"metadata": {"resourceVersion": rv(&a), "labels": {"y": "2"}}});
    let s = status_of(api.patch(&name, &PatchParams::default(), &Patch::Merge(stale)).await)?;
    assert_eq!(s.code, 409);

    // PUT to a missing object: 404.
    let s = status_of(api.replace("nope", &PostParams::default(), &snapshot("nope", "x")).await)?;
    assert_eq!(s.code, 404);
    Ok(())
}

#[tokio::test]
async fn status_subresource_and_generation() -> Result<()> {
    let f = fixture()?;
    let api: Api<VolumeSnapshot> = Api::namespaced(f.client.clone(), "default");
    let mut vs = snapshot("s", "data");
    vs.status = Some(VolumeSnapshotStatus { ready_to_use: Some(true), ..Default::default() });
    let created = api.create(&PostParams::default(), &vs).await?;
    assert!(created.status.is_none(), "status is dropped on create");

    let st = api
        .patch_status(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "spec": {"volumeSnapshotClassName": "ignored"},
                "status": {"readyToUse": true}
            })),
        )
        .await?;
    assert_eq!(st.status.as_ref().and_then(|s| s.ready_to_use), Some(true));
    assert_eq!(st.spec.volume_snapshot_class_name, None, "a status write ignores spec");
    assert_eq!(st.metadata.generation, Some(1), "status does not bump generation");

    let main = api
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "spec": {"volumeSnapshotClassName": "fast"},
                "status": {"readyToUse": false}
            })),
        )
        .await?;
    assert_eq!(main.spec.volume_snapshot_class_name.as_deref(), Some("fast"));
    assert_eq!(
        main.status.as_ref().and_then(|s| s.ready_to_use),
        Some(true),
        "a main write keeps status"
    );
    assert_eq!(main.metadata.generation, Some(2));

    let got = api.get_status("s").await?;
    assert_eq!(got.status.and_then(|s| s.ready_to_use), Some(true));

    // Server-side apply of status, as kube-rs controllers do.
    let applied = api
        .patch_status(
            "s",
            &PatchParams::apply("ctl").force(),
            &Patch::Apply(json!({
                "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                "status": {"readyToUse": false, "restoreSize": "1Gi"}
            })),
        )
        .await?;
    assert_eq!(applied.status.as_ref().and_then(|s| s.ready_to_use), Some(false));
    assert_eq!(applied.spec.volume_snapshot_class_name.as_deref(), Some("fast"));
    Ok(())
}

#[tokio::test]
async fn no_op_writes_keep_the_resource_version() -> Result<()> {
    let f = fixture()?;
    let api: Api<VolumeSnapshot> = Api::namespaced(f.client.clone(), "default");
    let created = api.create(&PostParams::default(), &snapshot("s", "data")).await?;
    let rev_before = f.server.store().current_rev();
    let same = api.patch("s", &PatchParams::default(), &Patch::Merge(json!({"spec": {}}))).await?;
    assert_eq!(rv(&same), rv(&created));
    let replaced = api.replace("s", &PostParams::default(), &same).await?;
    assert_eq!(rv(&replaced), rv(&created));

    let apply = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "status": {"readyToUse": true}});
    let first = api.patch_status("s", &PatchParams::apply("ctl"), &Patch::Apply(&apply)).await?;
    let second = api.patch_status("s", &PatchParams::apply("ctl"), &Patch::Apply(&apply)).await?;
    assert_eq!(rv(&first), rv(&second), "re-applying the same status is a no-op");
    assert_eq!(
        f.server.store().current_rev(),
        rev_before + 1,
        "exactly one revision for the one real change"
    );
    Ok(())
}
