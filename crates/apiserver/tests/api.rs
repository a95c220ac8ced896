//! The API server driven in-process through a real kube-rs client, over a real SQLite store.
//!
//! Each test builds its own server on a fresh store in a temporary directory and talks to it the
//! way controllers do (`kube::Client::new(router, "default")`): typed `Api` calls, raw requests
//! where a test needs headers or status codes, `kube::runtime::watcher`, and a `Controller` with
//! the `finalizer` helper.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use holdfast_api::snapshot::{
    VolumeSnapshot, VolumeSnapshotSource, VolumeSnapshotSpec, VolumeSnapshotStatus,
};
use holdfast_apiserver::{ApiServer, Store};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Namespace, Secret};
use k8s_openapi::api::events::v1::Event as EventV1;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, finalizer, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

struct Fixture {
    _dir: tempfile::TempDir,
    server: ApiServer,
    client: Client,
}

fn fixture() -> Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("store.db"))?;
    let server = ApiServer::new(store, holdfast_api::registry());
    let client = Client::new(server.router(), "default");
    Ok(Fixture { _dir: dir, server, client })
}

fn snapshot(name: &str, pvc: &str) -> VolumeSnapshot {
    VolumeSnapshot::new(
        name,
        VolumeSnapshotSpec {
            source: VolumeSnapshotSource {
                persistent_volume_claim_name: Some(pvc.into()),
                volume_snapshot_content_name: None,
            },
            volume_snapshot_class_name: None,
        },
    )
}

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.data = Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    cm
}

/// The `Status` of a failed call.
fn status_of<T: std::fmt::Debug>(r: kube::Result<T>) -> Result<Box<kube::core::Status>> {
    match r {
        Err(kube::Error::Api(s)) => Ok(s),
        other => bail!("expected an API error, got {other:?}"),
    }
}

/// A raw request; returns status, headers and body text.
async fn raw(
    client: &Client,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, http::HeaderMap, String)> {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client.send(b.body(kube::client::Body::from(body.to_vec()))?).await?;
    let (parts, body) = resp.into_parts();
    let bytes = body.collect_bytes().await?;
    Ok((parts.status.as_u16(), parts.headers, String::from_utf8(bytes.to_vec())?))
}

/// Polls `check` until it holds, failing after 20 s.
async fn eventually<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn rv(obj: &impl kube::Resource) -> String {
    obj.meta().resource_version.clone().unwrap_or_default()
}

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
async fn configmaps_and_secrets() -> Result<()> {
    let f = fixture()?;
    let cms: Api<ConfigMap> = Api::namespaced(f.client.clone(), "default");
    let cm = cms.create(&PostParams::default(), &config_map("c1", &[("a", "1")])).await?;
    let mut cm2 = cm.clone();
    cm2.data = Some([("a".to_string(), "2".to_string())].into());
    let cm2 = cms.replace("c1", &PostParams::default(), &cm2).await?;
    assert_eq!(cm2.data.as_ref().and_then(|d| d.get("a")).map(String::as_str), Some("2"));
    assert_ne!(rv(&cm), rv(&cm2));
    // Built-in kinds accept unconditional updates.
    let mut cm3 = cm2.clone();
    cm3.metadata.resource_version = None;
    cm3.data = Some([("a".to_string(), "3".to_string())].into());
    cms.replace("c1", &PostParams::default(), &cm3).await?;
    cms.delete("c1", &DeleteParams::default()).await?;
    assert!(cms.get_opt("c1").await?.is_none());

    let secrets: Api<Secret> = Api::namespaced(f.client.clone(), "default");
    let mut s = Secret::default();
    s.metadata.name = Some("creds".into());
    s.string_data = Some([("password".to_string(), "hunter2".to_string())].into());
    let s = secrets.create(&PostParams::default(), &s).await?;
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    assert!(s.string_data.is_none());
    let data = s.data.context("data")?;
    assert_eq!(data.get("password").map(|b| b.0.as_slice()), Some(b"hunter2".as_slice()));
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
    assert_eq!(s.details.context("details")?.causes[0].field, "spec.source");
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

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() -> Result<()> {
    let f = fixture()?;
    let api: Api<VolumeSnapshot> = Api::namespaced(f.client.clone(), "default");
    let mut vs = snapshot("s", "data");
    vs.metadata.finalizers = Some(vec!["example.com/cleanup".into()]);
    api.create(&PostParams::default(), &vs).await?;

    let (code, _, body) = raw(
        &f.client,
        "DELETE",
        "/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots/s",
        &[("content-type", "application/json")],
        br#"{"propagationPolicy":"Background"}"#,
    )
    .await?;
    assert_eq!(code, 202, "{body}");
    let marked: Value = serde_json::from_str(&body)?;
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 0);
    assert_eq!(marked["metadata"]["generation"], 2);

    let still = api.get("s").await?;
    assert!(still.metadata.deletion_timestamp.is_some());

    let s = status_of(
        api.patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/cleanup", "new"]}})),
        )
        .await,
    )?;
    assert_eq!(s.code, 422);
    assert!(s.message.contains("metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted"));

    api.patch(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    assert!(api.get_opt("s").await?.is_none(), "removing the last finalizer deletes the object");
    Ok(())
}

#[tokio::test]
async fn delete_options_preconditions_and_dry_run() -> Result<()> {
    let f = fixture()?;
    let api: Api<ConfigMap> = Api::namespaced(f.client.clone(), "default");
    let cm = api.create(&PostParams::default(), &config_map("c", &[("a", "1")])).await?;

    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("not-the-uid".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let s = status_of(api.delete("c", &dp).await)?;
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(
        s.message.contains("Precondition failed: UID in precondition: not-the-uid"),
        "{}",
        s.message
    );

    let rev = f.server.store().current_rev();
    api.delete("c", &DeleteParams::default().dry_run()).await?;
    let pp = PostParams { dry_run: true, ..Default::default() };
    api.create(&pp, &config_map("d", &[])).await?;
    api.patch("c", &PatchParams::default().dry_run(), &Patch::Merge(json!({"data": {"a": "2"}})))
        .await?;
    let mut replaced = cm.clone();
    replaced.data = Some([("a".to_string(), "3".to_string())].into());
    let would_be = api.replace("c", &pp, &replaced).await?;
    assert_eq!(would_be.data.and_then(|d| d.get("a").cloned()).as_deref(), Some("3"));
    assert_eq!(f.server.store().current_rev(), rev, "dry runs write nothing");
    assert!(api.get_opt("d").await?.is_none());
    let c = api.get("c").await?;
    assert_eq!(c.data.and_then(|d| d.get("a").cloned()).as_deref(), Some("1"));
    Ok(())
}

#[tokio::test]
async fn list_paging_with_limit_and_continue() -> Result<()> {
    let f = fixture()?;
    let api: Api<ConfigMap> = Api::namespaced(f.client.clone(), "default");
    for i in 0..5 {
        api.create(&PostParams::default(), &config_map(&format!("c{i}"), &[])).await?;
    }
    let first = api.list(&ListParams::default().limit(2)).await?;
    assert_eq!(first.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(), ["c0", "c1"]);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().context("continue token")?;
    let second = api.list(&ListParams::default().limit(2).continue_token(&token)).await?;
    assert_eq!(second.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(), ["c2", "c3"]);
    assert_eq!(
        second.metadata.resource_version, first.metadata.resource_version,
        "pages share the first page's RV"
    );
    let third = api
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(second.metadata.continue_.as_deref().unwrap_or("")),
        )
        .await?;
    assert_eq!(third.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(), ["c4"]);
    assert!(third.metadata.continue_.as_deref().unwrap_or("").is_empty());

    // Across namespaces.
    f.server.ensure_namespace("other").await?;
    Api::<ConfigMap>::namespaced(f.client.clone(), "other")
        .create(&PostParams::default(), &config_map("x", &[]))
        .await?;
    let all = Api::<ConfigMap>::all(f.client.clone()).list(&ListParams::default()).await?;
    assert_eq!(all.items.len(), 6);

    // A token older than the compacted revision has expired.
    for i in 0..3 {
        api.patch(
            "c0",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"i": i.to_string()}})),
        )
        .await?;
    }
    let store = f.server.store().clone();
    tokio::task::spawn_blocking(move || store.compact(0, Duration::ZERO)).await??;
    let s = status_of(api.list(&ListParams::default().limit(2).continue_token(&token)).await)?;
    assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
    Ok(())
}

#[tokio::test]
async fn label_and_field_selectors() -> Result<()> {
    let f = fixture()?;
    let api: Api<ConfigMap> = Api::namespaced(f.client.clone(), "default");
    for (name, app) in [("a", "web"), ("b", "db"), ("c", "web")] {
        let mut cm = config_map(name, &[]);
        cm.metadata.labels = Some([("app".to_string(), app.to_string())].into());
        api.create(&PostParams::default(), &cm).await?;
    }
    let names = |l: kube::core::ObjectList<ConfigMap>| {
        l.items.iter().map(|c| c.name_any()).collect::<Vec<_>>()
    };
    assert_eq!(names(api.list(&ListParams::default().labels("app=web")).await?), ["a", "c"]);
    assert_eq!(names(api.list(&ListParams::default().labels("app in (db,x)")).await?), ["b"]);
    assert_eq!(names(api.list(&ListParams::default().labels("app!=web")).await?), ["b"]);
    assert_eq!(names(api.list(&ListParams::default().fields("metadata.name=c")).await?), ["c"]);
    assert_eq!(
        names(api.list(&ListParams::default().fields("metadata.name!=c").labels("app=web")).await?),
        ["a"]
    );
    // Paging with a selector still returns every match once.
    let page = api.list(&ListParams::default().labels("app=web").limit(1)).await?;
    assert_eq!(names(page.clone()), ["a"]);
    let rest = api
        .list(
            &ListParams::default()
                .labels("app=web")
                .limit(1)
                .continue_token(page.metadata.continue_.as_deref().unwrap_or("")),
        )
        .await?;
    assert_eq!(names(rest), ["c"]);

    let s = status_of(api.list(&ListParams::default().fields("spec.foo=x")).await)?;
    assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
    assert!(s.message.contains("\"spec.foo\" is not a known field selector"), "{}", s.message);
    let s = status_of(api.list(&ListParams::default().labels("app in (")).await)?;
    assert_eq!(s.code, 400);

    // deletecollection honours selectors.
    api.delete_collection(&DeleteParams::default(), &ListParams::default().labels("app=web"))
        .await?;
    assert_eq!(names(api.list(&ListParams::default()).await?), ["b"]);
    Ok(())
}

#[tokio::test]
async fn watcher_sees_added_modified_deleted_in_order() -> Result<()> {
    let f = fixture()?;
    let api: Api<ConfigMap> = Api::namespaced(f.client.clone(), "default");
    api.create(&PostParams::default(), &config_map("before", &[])).await?;
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    // The initial list.
    let mut initial = Vec::new();
    loop {
        match events.try_next().await?.context("stream ended")? {
            watcher::Event::Init => {}
            watcher::Event::InitApply(cm) => initial.push(cm.name_any()),
            watcher::Event::InitDone => break,
            other => bail!("unexpected {other:?} during init"),
        }
    }
    assert_eq!(initial, ["before"]);

    api.create(&PostParams::default(), &config_map("w", &[("a", "1")])).await?;
    api.patch("w", &PatchParams::default(), &Patch::Merge(json!({"data": {"a": "2"}}))).await?;
    api.delete("w", &DeleteParams::default()).await?;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(20), events.try_next())
            .await??
            .context("stream ended")?;
        match ev {
            watcher::Event::Apply(cm) => seen.push(format!(
                "apply {} {}",
                cm.name_any(),
                cm.data.unwrap_or_default().get("a").cloned().unwrap_or_default()
            )),
            watcher::Event::Delete(cm) => seen.push(format!("delete {}", cm.name_any())),
            other => bail!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["apply w 1", "apply w 2", "delete w"]);
    Ok(())
}

#[tokio::test]
async fn watch_from_a_compacted_revision_sends_410_and_the_watcher_relists() -> Result<()> {
    let f = fixture()?;
    let api: Api<ConfigMap> = Api::namespaced(f.client.clone(), "default");
    let first = api.create(&PostParams::default(), &config_map("a", &[])).await?;
    for i in 0..5 {
        api.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"i": i.to_string()}})),
        )
        .await?;
    }
    let store = f.server.store().clone();
    tokio::task::spawn_blocking(move || store.compact(0, Duration::ZERO)).await??;

    // A raw watch from the old revision: one ERROR event with a 410 Status, then the end.
    let mut stream = api.watch(&WatchParams::default(), &rv(&first)).await?.boxed();
    match stream.try_next().await?.context("one event")? {
        WatchEvent::Error(e) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
            assert!(
                e.message.starts_with(&format!("too old resource version: {}", rv(&first))),
                "{}",
                e.message
            );
        }
        other => bail!("expected ERROR, got {other:?}"),
    }
    assert!(stream.try_next().await?.is_none(), "the stream ends after the ERROR");

    // kube-runtime: a watcher whose watch ends (timeoutSeconds=1) re-watches from its last RV;
    // once that RV is compacted the 410 ERROR makes it relist (a second Init).
    let mut events = watcher(api.clone(), watcher::Config::default().timeout(1)).boxed();
    let mut inits = 0;
    let mut compacted = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while inits < 2 {
        if Instant::now() > deadline {
            bail!("the watcher never relisted");
        }
        match tokio::time::timeout(Duration::from_secs(20), events.next())
            .await?
            .context("stream ended")?
        {
            Ok(watcher::Event::Init) => inits += 1,
            Ok(watcher::Event::InitDone) if !compacted => {
                // Move the store past the list's revision with writes to another kind, and compact.
                let secrets: Api<Secret> = Api::namespaced(f.client.clone(), "default");
                for i in 0..3 {
                    let mut s = Secret::default();
                    s.metadata.name = Some(format!("s{i}"));
                    secrets.create(&PostParams::default(), &s).await?;
                }
                let store = f.server.store().clone();
                tokio::task::spawn_blocking(move || store.compact(0, Duration::ZERO)).await??;
                compacted = true;
            }
            _ => {}
        }
    }
    Ok(())
}

#[tokio::test]
async fn raw_watch_bookmarks_selectors_and_initial_events() -> Result<()> {
    let f = fixture()?;
    let api: Api<ConfigMap> = Api::namespaced(f.client.clone(), "default");
    let mut cm = config_map("a", &[]);
    cm.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
    let a = api.create(&PostParams::default(), &cm).await?;

    // From the creation RV, with a selector: relabelling away is a DELETED, back is an ADDED.
    let client = f.client.clone();
    let from = rv(&a);
    let watch = tokio::spawn(async move {
        raw(
            &client,
            "GET",
            &format!("/api/v1/namespaces/default/configmaps?watch=1&labelSelector=app%3Dweb&allowWatchBookmarks=true&timeoutSeconds=2&resourceVersion={from}"),
            &[],
            b"",
        )
        .await
    });
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})),
    )
    .await?;
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await?;
    let (code, headers, body) = watch.await??;
    assert_eq!(code, 200);
    assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));
    let events: Vec<Value> = body.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["DELETED", "ADDED", "BOOKMARK"], "{body}");
    let bookmark = &events[2]["object"];
    assert_eq!(bookmark["kind"], "ConfigMap");
    assert_eq!(bookmark["apiVersion"], "v1");
    assert_eq!(
        bookmark["metadata"]["resourceVersion"],
        events[1]["object"]["metadata"]["resourceVersion"]
    );

    // Streaming list: ADDED for what exists, then the initial-events-end bookmark.
    let (_, _, body) = raw(
        &f.client,
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1",
        &[],
        b"",
    )
    .await?;
    let events: Vec<Value> = body.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "a");
    assert_eq!(events[1]["type"], "BOOKMARK");
    assert_eq!(events[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");

    // Without NotOlderThan it is refused rather than ignored.
    let (code, _, _) = raw(
        &f.client,
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true",
        &[],
        b"",
    )
    .await?;
    assert_eq!(code, 422);
    Ok(())
}

const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

#[tokio::test]
async fn table_output_for_list_get_and_watch() -> Result<()> {
    let f = fixture()?;
    let api: Api<VolumeSnapshot> = Api::namespaced(f.client.clone(), "default");
    api.create(&PostParams::default(), &snapshot("s1", "data")).await?;
    let (code, _, body) = raw(
        &f.client,
        "GET",
        "/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots?limit=500",
        &[("accept", TABLE_ACCEPT)],
        b"",
    )
    .await?;
    assert_eq!(code, 200);
    let t: Value = serde_json::from_str(&body)?;
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .context("columns")?
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(cols[0], "Name");
    assert!(cols.contains(&"ReadyToUse") && cols.contains(&"SourcePVC"), "{cols:?}");
    assert_eq!(t["rows"][0]["cells"][0], "s1");
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(t["rows"][0]["object"]["metadata"]["namespace"], "default");
    assert!(!t["metadata"]["resourceVersion"].as_str().unwrap_or("").is_empty());

    let (_, _, body) = raw(
        &f.client,
        "GET",
        "/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots/s1",
        &[("accept", TABLE_ACCEPT)],
        b"",
    )
    .await?;
    let t: Value = serde_json::from_str(&body)?;
    assert_eq!(t["rows"].as_array().map(Vec::len), Some(1));

    let (_, _, body) = raw(
        &f.client,
        "GET",
        "/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots?watch=true&timeoutSeconds=1",
        &[("accept", TABLE_ACCEPT)],
        b"",
    )
    .await?;
    let first: Value = serde_json::from_str(body.lines().next().context("one event")?)?;
    assert_eq!(first["type"], "ADDED");
    assert_eq!(first["object"]["kind"], "Table");
    assert_eq!(first["object"]["rows"][0]["cells"][0], "s1");
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

#[tokio::test]
async fn plain_endpoints_discovery_and_errors() -> Result<()> {
    let f = fixture()?;
    let v = f.client.apiserver_version().await?;
    assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "32"));
    assert!(v.git_version.starts_with("v1.32.0-holdfast"));
    for p in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(raw(&f.client, "GET", p, &[], b"").await?.0, 200, "{p}");
    }

    let (code, _, text) =
        raw(&f.client, "GET", "/apis/nope.example.com/v1/things", &[], b"").await?;
    assert_eq!(code, 404);
    let s: Value = serde_json::from_str(&text)?;
    assert_eq!(s["message"], "the server could not find the requested resource");
    assert_eq!(s["status"], "Failure");
    let (code, _, text) =
        raw(&f.client, "PUT", "/api/v1/namespaces/default/configmaps", &[], b"{}").await?;
    assert_eq!(code, 405);
    assert_eq!(serde_json::from_str::<Value>(&text)?["reason"], "MethodNotAllowed");
    assert_eq!(raw(&f.client, "GET", "/openapi/v2", &[], b"").await?.0, 404);

    let (code, _, text) = raw(&f.client, "GET", "/openapi/v3", &[], b"").await?;
    assert_eq!(code, 200);
    let index: Value = serde_json::from_str(&text)?;
    let url = index["paths"]["apis/snapshot.storage.k8s.io/v1"]["serverRelativeURL"]
        .as_str()
        .context("gv url")?
        .to_string();
    let (code, _, _) = raw(&f.client, "GET", &url, &[], b"").await?;
    assert_eq!(code, 200);

    let (_, headers, text) = raw(
        &f.client,
        "GET",
        "/apis",
        &[(
            "accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )],
        b"",
    )
    .await?;
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
    );
    assert_eq!(serde_json::from_str::<Value>(&text)?["kind"], "APIGroupDiscoveryList");

    // kube-rs legacy discovery finds the custom kinds and the status subresource.
    let discovery = kube::Discovery::new(f.client.clone()).run().await?;
    let group = discovery.get("snapshot.storage.k8s.io").context("snapshot group")?;
    let (ar, caps) = group.recommended_kind("VolumeSnapshot").context("VolumeSnapshot")?;
    assert_eq!(ar.plural, "volumesnapshots");
    assert!(
        caps.subresources
            .iter()
            .any(|(s, _)| s.plural == "volumesnapshots/status" || s.plural == "status")
    );
    Ok(())
}

#[tokio::test]
async fn strategic_merge_patch_on_builtins_and_415_on_custom_kinds() -> Result<()> {
    let f = fixture()?;
    let jobs: Api<Job> = Api::namespaced(f.client.clone(), "default");
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "a", "image": "busybox:1", "env": [{"name": "OLD", "value": "1"}]}
        ]}}}
    }))?;
    jobs.create(&PostParams::default(), &job).await?;
    let patched = jobs
        .patch(
            "j",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                "containers": [
                    {"name": "a", "image": "busybox:2", "$setElementOrder/env": [{"name": "NEW"}],
                     "env": [{"name": "NEW", "value": "2"}, {"$patch": "delete", "name": "OLD"}]},
                    {"name": "b", "image": "busybox:3"}
                ]
            }}}})),
        )
        .await?;
    let pod = patched.spec.and_then(|s| s.template.spec).context("pod spec")?;
    let containers: Vec<(String, Option<String>)> =
        pod.containers.iter().map(|c| (c.name.clone(), c.image.clone())).collect();
    assert_eq!(
        containers,
        [("a".into(), Some("busybox:2".into())), ("b".into(), Some("busybox:3".into()))]
    );
    let env: Vec<String> =
        pod.containers[0].env.clone().unwrap_or_default().into_iter().map(|e| e.name).collect();
    assert_eq!(env, ["NEW"]);

    let api: Api<VolumeSnapshot> = Api::namespaced(f.client.clone(), "default");
    api.create(&PostParams::default(), &snapshot("s", "data")).await?;
    let s = status_of(
        api.patch(
            "s",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await,
    )?;
    assert_eq!((s.code, s.reason.as_str()), (415, "UnsupportedMediaType"));
    assert_eq!(
        s.message,
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    );
    Ok(())
}

#[tokio::test]
async fn namespaces_must_exist_and_deletion_cascades() -> Result<()> {
    let f = fixture()?;
    let nss: Api<Namespace> = Api::all(f.client.clone());
    let names: Vec<String> =
        nss.list(&ListParams::default()).await?.items.iter().map(|n| n.name_any()).collect();
    for n in ["default", "kube-system", "kube-public"] {
        assert!(names.contains(&n.to_string()), "{names:?}");
    }
    let mut ns = Namespace::default();
    ns.metadata.name = Some("team".into());
    let ns = nss.create(&PostParams::default(), &ns).await?;
    assert_eq!(ns.status.and_then(|s| s.phase).as_deref(), Some("Active"));

    let cms: Api<ConfigMap> = Api::namespaced(f.client.clone(), "team");
    cms.create(&PostParams::default(), &config_map("c", &[])).await?;
    let snaps: Api<VolumeSnapshot> = Api::namespaced(f.client.clone(), "team");
    let mut held = snapshot("held", "data");
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    snaps.create(&PostParams::default(), &held).await?;

    let deleting =
        nss.delete("team", &DeleteParams::default()).await?.left().context("namespace object")?;
    assert_eq!(deleting.status.and_then(|s| s.phase).as_deref(), Some("Terminating"));
    let s = status_of(cms.create(&PostParams::default(), &config_map("late", &[])).await)?;
    assert_eq!(s.code, 403);

    eventually("the configmap to go", || async { cms.get_opt("c").await.ok().flatten().is_none() })
        .await?;
    eventually("the snapshot to be marked", || async {
        snaps
            .get_opt("held")
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s.metadata.deletion_timestamp.is_some())
    })
    .await?;
    assert!(nss.get_opt("team").await?.is_some(), "the namespace waits for the finalizer");
    snaps
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
    eventually("the namespace to go", || async {
        nss.get_opt("team").await.ok().flatten().is_none()
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn events_are_served_in_both_api_versions() -> Result<()> {
    let f = fixture()?;
    let cms: Api<ConfigMap> = Api::namespaced(f.client.clone(), "default");
    let cm = cms.create(&PostParams::default(), &config_map("subject", &[])).await?;
    let recorder = kube::runtime::events::Recorder::new(
        f.client.clone(),
        kube::runtime::events::Reporter { controller: "holdfast-test".into(), instance: None },
    );
    let ev = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Normal,
        reason: "Tested".into(),
        note: Some("it works".into()),
        action: "Test".into(),
        secondary: None,
    };
    let reference = kube::Resource::object_ref(&cm, &());
    // The first publish POSTs events.k8s.io/v1; the second merge-patches the series.
    recorder.publish(&ev, &reference).await?;
    recorder.publish(&ev, &reference).await?;

    let v1: Api<EventV1> = Api::namespaced(f.client.clone(), "default");
    let list = v1.list(&ListParams::default()).await?;
    assert_eq!(list.items.len(), 1);
    let e = &list.items[0];
    assert_eq!(e.note.as_deref(), Some("it works"));
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(2));
    assert_eq!(e.reporting_controller.as_deref(), Some("holdfast-test"));

    let core: Api<CoreEvent> = Api::namespaced(f.client.clone(), "default");
    let described = core
        .list(
            &ListParams::default()
                .fields("involvedObject.name=subject,involvedObject.kind=ConfigMap"),
        )
        .await?;
    assert_eq!(described.items.len(), 1);
    let c = &described.items[0];
    assert_eq!(c.message.as_deref(), Some("it works"));
    assert_eq!(c.reason.as_deref(), Some("Tested"));
    assert_eq!(c.involved_object.uid, cm.metadata.uid);
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ReconcileError(String);

struct Ctx {
    api: Api<VolumeSnapshot>,
    cleaned: tokio::sync::Mutex<Vec<String>>,
}

async fn reconcile(
    vs: Arc<VolumeSnapshot>,
    ctx: Arc<Ctx>,
) -> Result<Action, finalizer::Error<ReconcileError>> {
    let api = ctx.api.clone();
    finalizer::finalizer(&api, "holdfast.test/cleanup", vs, |event| async {
        match event {
            finalizer::Event::Apply(vs) => {
                let status = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                    "status": {"readyToUse": true}});
                api.patch_status(&vs.name_any(), &PatchParams::apply("test-controller").force(), &Patch::Apply(status))
                    .await
                    .map_err(|e| ReconcileError(e.to_string()))?;
                Ok(Action::await_change())
            }
            finalizer::Event::Cleanup(vs) => {
                ctx.cleaned.lock().await.push(vs.name_any());
                Ok(Action::await_change())
            }
        }
    })
    .await
}

#[tokio::test]
async fn controller_with_finalizer_reconciles_and_cleans_up() -> Result<()> {
    let f = fixture()?;
    let api: Api<VolumeSnapshot> = Api::namespaced(f.client.clone(), "default");
    let ctx = Arc::new(Ctx { api: api.clone(), cleaned: tokio::sync::Mutex::new(Vec::new()) });
    let controller = tokio::spawn(
        Controller::new(api.clone(), watcher::Config::default())
            .run(reconcile, |_, _, _| Action::requeue(Duration::from_millis(200)), ctx.clone())
            .for_each(|_| async {}),
    );

    api.create(&PostParams::default(), &snapshot("c1", "data")).await?;
    eventually("the finalizer and status", || async {
        api.get_opt("c1").await.ok().flatten().is_some_and(|vs| {
            vs.finalizers().iter().any(|x| x == "holdfast.test/cleanup")
                && vs.status.as_ref().and_then(|s| s.ready_to_use) == Some(true)
        })
    })
    .await?;
    // Settled: the controller does not keep writing (no-op applies are not events).
    let settled = f.server.store().current_rev();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(f.server.store().current_rev(), settled, "the controller hot-loops");

    api.delete("c1", &DeleteParams::default()).await?;
    eventually("cleanup and removal", || async {
        api.get_opt("c1").await.ok().flatten().is_none()
    })
    .await?;
    assert_eq!(*ctx.cleaned.lock().await, ["c1"]);
    controller.abort();
    Ok(())
}

/// The data of the ConfigMaps in a list, by name.
fn names_and_data(list: &kube::core::ObjectList<ConfigMap>) -> Vec<(String, Option<String>)> {
    list.items
        .iter()
        .map(|c| (c.name_any(), c.data.as_ref().and_then(|d| d.get("v").cloned())))
        .collect()
}

#[tokio::test]
async fn list_at_exact_and_not_older_than_revisions() -> Result<()> {
    let f = fixture()?;
    let api: Api<ConfigMap> = Api::namespaced(f.client.clone(), "default");
    let a = api.create(&PostParams::default(), &config_map("a", &[("v", "1")])).await?;
    let b = api.create(&PostParams::default(), &config_map("b", &[("v", "1")])).await?;
    api.patch("a", &PatchParams::default(), &Patch::Merge(json!({"data": {"v": "2"}}))).await?;
    api.delete("b", &DeleteParams::default()).await?;
    api.create(&PostParams::default(), &config_map("c", &[("v", "1")])).await?;
    let exact = |rv: &str| ListParams::default().at(rv).matching(kube::api::VersionMatch::Exact);

    // Exact: the state at that revision, rebuilt from the log (a before its patch, b before its
    // deletion, c not yet created), with the list RV being the requested one.
    let at_b = api.list(&exact(&rv(&b))).await?;
    assert_eq!(
        names_and_data(&at_b),
        [("a".into(), Some("1".into())), ("b".into(), Some("1".into()))]
    );
    assert_eq!(at_b.metadata.resource_version.as_deref(), Some(rv(&b).as_str()));
    assert_eq!(at_b.items[0].metadata.resource_version.as_deref(), Some(rv(&a).as_str()));
    let at_a = api.list(&exact(&rv(&a))).await?;
    assert_eq!(names_and_data(&at_a), [("a".into(), Some("1".into()))]);

    // NotOlderThan: the latest state.
    let latest = api
        .list(&ListParams::default().at(&rv(&a)).matching(kube::api::VersionMatch::NotOlderThan))
        .await?;
    assert_eq!(
        names_and_data(&latest),
        [("a".into(), Some("2".into())), ("c".into(), Some("1".into()))]
    );

    // A limit with resourceVersion=N and no match is exact too (the legacy paged semantics), and
    // every continue page reads the same snapshot, whatever is written in between.
    let page1 = api.list(&ListParams::default().at(&rv(&b)).limit(1)).await?;
    assert_eq!(names_and_data(&page1), [("a".into(), Some("1".into()))]);
    assert_eq!(page1.metadata.remaining_item_count, Some(1));
    api.create(&PostParams::default(), &config_map("aa", &[("v", "1")])).await?;
    let token = page1.metadata.continue_.clone().context("continue token")?;
    let page2 = api.list(&ListParams::default().limit(1).continue_token(&token)).await?;
    assert_eq!(names_and_data(&page2), [("b".into(), Some("1".into()))]);
    assert!(page2.metadata.continue_.as_deref().unwrap_or("").is_empty());

    // A revision the store has not reached: 504 Timeout, as the apiserver answers.
    let s = status_of(api.list(&exact("999999")).await)?;
    assert_eq!((s.code, s.reason.as_str()), (504, "Timeout"));
    let s = status_of(
        api.list(
            &ListParams::default().at("999999").matching(kube::api::VersionMatch::NotOlderThan),
        )
        .await,
    )?;
    assert_eq!(s.code, 504);

    // Contradictory options are refused, never ignored.
    for (query, code) in [
        ("resourceVersionMatch=Exact", 422),
        ("resourceVersionMatch=Exact&resourceVersion=0", 422),
        ("resourceVersionMatch=Newest&resourceVersion=1", 422),
        ("resourceVersion=abc", 400),
        (&*format!("resourceVersion={}&continue={token}", rv(&a)), 400),
    ] {
        let (got, _, body) = raw(
            &f.client,
            "GET",
            &format!("/api/v1/namespaces/default/configmaps?{query}"),
            &[],
            b"",
        )
        .await?;
        assert_eq!(got, code, "{query}: {body}");
    }

    // Once the log no longer reaches back to the revision: 410 Expired instead of a silently
    // different state; the current revision stays readable exactly.
    let store = f.server.store().clone();
    tokio::task::spawn_blocking(move || store.compact(0, Duration::ZERO)).await??;
    let s = status_of(api.list(&exact(&rv(&b))).await)?;
    assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
    assert!(
        s.message.starts_with(&format!("too old resource version: {}", rv(&b))),
        "{}",
        s.message
    );
    let now = api.list(&ListParams::default()).await?;
    let again = api.list(&exact(now.metadata.resource_version.as_deref().unwrap_or(""))).await?;
    assert_eq!(names_and_data(&again), names_and_data(&now));
    Ok(())
}

#[tokio::test]
async fn list_copies_stored_rows_and_fills_missing_type_meta() -> Result<()> {
    let f = fixture()?;
    let api: Api<ConfigMap> = Api::namespaced(f.client.clone(), "default");
    let mut cm = config_map("a", &[("v", "1")]);
    cm.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
    api.create(&PostParams::default(), &cm).await?;
    // A row written by something other than the API (no apiVersion/kind) is served with them.
    f.server
        .store()
        .create(
            holdfast_apiserver::store::Key::new("/configmaps", "default", "b"),
            json!({"metadata": {"name": "b", "namespace": "default", "labels": {"app": "db"}},
                   "data": {"v": "2"}}),
        )
        .await?;
    let (code, _, body) =
        raw(&f.client, "GET", "/api/v1/namespaces/default/configmaps", &[], b"").await?;
    assert_eq!(code, 200);
    let list: Value = serde_json::from_str(&body)?;
    assert_eq!(list["kind"], "ConfigMapList");
    assert_eq!(list["apiVersion"], "v1");
    let items = list["items"].as_array().context("items")?;
    assert_eq!(items.len(), 2, "{body}");
    for item in items {
        assert_eq!(
            (item["apiVersion"].as_str(), item["kind"].as_str()),
            (Some("v1"), Some("ConfigMap"))
        );
    }
    assert_eq!(items[1]["data"]["v"], "2");
    // Label selectors work on the unparsed rows too.
    let web = api.list(&ListParams::default().labels("app=web")).await?;
    assert_eq!(names_and_data(&web), [("a".into(), Some("1".into()))]);
    let db = api.list(&ListParams::default().labels("app in (db)")).await?;
    assert_eq!(names_and_data(&db), [("b".into(), Some("2".into()))]);
    Ok(())
}

/// The events of a finished raw watch.
async fn raw_watch(client: &Client, query: &str) -> Result<Vec<Value>> {
    let (code, _, body) = raw(
        client,
        "GET",
        &format!("/api/v1/namespaces/default/configmaps?watch=1&{query}"),
        &[],
        b"",
    )
    .await?;
    anyhow::ensure!(code == 200, "watch answered {code}: {body}");
    Ok(body.lines().map(serde_json::from_str).collect::<Result<_, _>>()?)
}

#[tokio::test]
async fn watch_bookmarks_carry_the_progress_and_only_when_allowed() -> Result<()> {
    let f = fixture()?;
    let api: Api<ConfigMap> = Api::namespaced(f.client.clone(), "default");
    let mut web = config_map("a", &[]);
    web.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
    let a = api.create(&PostParams::default(), &web).await?;
    let mut db = config_map("b", &[]);
    db.metadata.labels = Some([("app".to_string(), "db".to_string())].into());
    let b = api.create(&PostParams::default(), &db).await?;
    // Another kind's write moves the store past b; it is no event of this watch.
    let mut s = Secret::default();
    s.metadata.name = Some("s".into());
    let secret = api_secret(&f.client).create(&PostParams::default(), &s).await?;

    // From before a: a is delivered, b filtered out; the bookmark at the end says the watcher
    // has seen everything up to b (resuming from there misses nothing), not the store's newer
    // revision from the Secret.
    let from = (rv(&a).parse::<u64>()? - 1).to_string();
    let events = raw_watch(
        &f.client,
        &format!("labelSelector=app%3Dweb&allowWatchBookmarks=true&timeoutSeconds=1&resourceVersion={from}"),
    )
    .await?;
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["ADDED", "BOOKMARK"], "{events:?}");
    assert_eq!(events[1]["object"]["metadata"]["resourceVersion"], rv(&b).as_str());
    assert!(rv(&secret).parse::<u64>()? > rv(&b).parse::<u64>()?);

    // Without allowWatchBookmarks there is none.
    let events = raw_watch(&f.client, &format!("timeoutSeconds=1&resourceVersion={from}")).await?;
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["ADDED", "ADDED"], "{events:?}");

    // A revision from the future: one ERROR event (504), never a bookmark claiming it.
    let events =
        raw_watch(&f.client, "allowWatchBookmarks=true&timeoutSeconds=1&resourceVersion=999999")
            .await?;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 504);

    // Streaming lists need bookmarks allowed; resourceVersionMatch needs sendInitialEvents.
    for query in [
        "watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
        "watch=1&resourceVersionMatch=NotOlderThan&resourceVersion=1",
    ] {
        let (code, _, body) = raw(
            &f.client,
            "GET",
            &format!("/api/v1/namespaces/default/configmaps?{query}"),
            &[],
            b"",
        )
        .await?;
        assert_eq!(code, 422, "{query}: {body}");
    }
    Ok(())
}

fn api_secret(client: &Client) -> Api<Secret> {
    Api::namespaced(client.clone(), "default")
}

fn pod(
    name: &str,
    owners: &[(&str, &str, &str)],
    containers: &[&str],
) -> Result<k8s_openapi::api::core::v1::Pod> {
    let refs: Vec<Value> = owners
        .iter()
        .map(|(kind, owner, uid)| {
            json!({"apiVersion": if *kind == "Job" { "batch/v1" } else { "v1" }, "kind": kind, "name": owner, "uid": uid})
        })
        .collect();
    let containers: Vec<Value> =
        containers.iter().map(|c| json!({"name": c, "image": "busybox"})).collect();
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "ownerReferences": refs},
        "spec": {"containers": containers, "restartPolicy": "Never"},
    }))?)
}

fn job(name: &str) -> Result<Job> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [{"name": "main", "image": "busybox"}],
                                       "restartPolicy": "Never"}}},
    }))?)
}

#[tokio::test]
async fn delete_propagation_cascades_to_owned_objects() -> Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    let f = fixture()?;
    let jobs: Api<Job> = Api::namespaced(f.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(f.client.clone(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(f.client.clone(), "default");
    let names = |l: kube::core::ObjectList<Pod>| {
        l.items.into_iter().map(|p| p.name_any()).collect::<Vec<_>>()
    };
    let keeper = cms.create(&PostParams::default(), &config_map("keeper", &[])).await?;
    let keeper_uid = keeper.uid().context("uid")?;

    // Background: the Job's Pods go, and what those Pods own; a Pod with a second owner only
    // loses the reference; a Pod elsewhere with the same owner uid is not the Job's.
    let j1 = jobs.create(&PostParams::default(), &job("j1")?).await?;
    let uid = j1.uid().context("uid")?;
    let p1 =
        pods.create(&PostParams::default(), &pod("p1", &[("Job", "j1", &uid)], &["main"])?).await?;
    pods.create(&PostParams::default(), &pod("p2", &[("Job", "j1", &uid)], &["main"])?).await?;
    pods.create(
        &PostParams::default(),
        &pod("p3", &[("Job", "j1", &uid), ("ConfigMap", "keeper", &keeper_uid)], &["main"])?,
    )
    .await?;
    let mut grandchild = config_map("of-p1", &[]);
    grandchild.metadata.owner_references =
        Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: "p1".into(),
            uid: p1.uid().context("uid")?,
            ..Default::default()
        }]);
    cms.create(&PostParams::default(), &grandchild).await?;
    f.server.ensure_namespace("elsewhere").await?;
    let other: Api<Pod> = Api::namespaced(f.client.clone(), "elsewhere");
    other.create(&PostParams::default(), &pod("p9", &[("Job", "j1", &uid)], &["main"])?).await?;
    jobs.delete("j1", &DeleteParams::background()).await?;
    assert_eq!(names(pods.list(&ListParams::default()).await?), ["p3"]);
    let p3 = pods.get("p3").await?;
    let owners: Vec<String> = p3.owner_references().iter().map(|r| r.uid.clone()).collect();
    assert_eq!(owners, [keeper_uid]);
    assert!(cms.get_opt("of-p1").await?.is_none(), "the Pod's own dependent went too");
    assert!(other.get_opt("p9").await?.is_some(), "no cascade across namespaces");

    // Foreground: dependents first, then the owner.
    let j2 = jobs.create(&PostParams::default(), &job("j2")?).await?;
    let uid2 = j2.uid().context("uid")?;
    pods.create(&PostParams::default(), &pod("q1", &[("Job", "j2", &uid2)], &["main"])?).await?;
    jobs.delete("j2", &DeleteParams::foreground()).await?;
    assert!(pods.get_opt("q1").await?.is_none());
    assert!(jobs.get_opt("j2").await?.is_none());

    // Orphan, and a Job's default (orphan, as upstream): the Pods stay, without the reference.
    for (job_name, pod_name, params) in
        [("j3", "r1", DeleteParams::orphan()), ("j4", "r2", DeleteParams::default())]
    {
        let j = jobs.create(&PostParams::default(), &job(job_name)?).await?;
        let u = j.uid().context("uid")?;
        pods.create(&PostParams::default(), &pod(pod_name, &[("Job", job_name, &u)], &["main"])?)
            .await?;
        jobs.delete(job_name, &params).await?;
        assert!(jobs.get_opt(job_name).await?.is_none());
        let kept = pods.get(pod_name).await?;
        assert!(kept.owner_references().is_empty(), "{job_name}: {:?}", kept.metadata);
    }

    // A policy that does not exist is refused and deletes nothing.
    let (code, _, body) = raw(
        &f.client,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/keeper",
        &[("content-type", "application/json")],
        br#"{"propagationPolicy":"Sometimes"}"#,
    )
    .await?;
    assert_eq!(code, 400, "{body}");
    assert!(cms.get_opt("keeper").await?.is_some());
    Ok(())
}

#[tokio::test]
async fn pod_logs_are_served_from_the_log_directory() -> Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("store.db"))?;
    let logs = dir.path().join("logs");
    let server = ApiServer::new(store, holdfast_api::registry()).with_pod_log_dir(logs.clone());
    let client = Client::new(server.router(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("p", &[], &["main", "side"])?).await?;
    let path = server.pod_log_path("default", "p", "main").context("log dir set")?;
    assert_eq!(path, logs.join("default/p/main.log"));
    std::fs::create_dir_all(path.parent().context("parent")?)?;
    std::fs::write(&path, "one\ntwo\nthree\n")?;

    // kube-rs (what `kubectl logs` asks for): the first container by default, tailLines.
    assert_eq!(pods.logs("p", &kube::api::LogParams::default()).await?, "one\ntwo\nthree\n");
    let tail = kube::api::LogParams { tail_lines: Some(2), ..Default::default() };
    assert_eq!(pods.logs("p", &tail).await?, "two\nthree\n");
    let (code, headers, body) = raw(
        &client,
        "GET",
        "/api/v1/namespaces/default/pods/p/log?container=main&follow=false&limitBytes=3",
        &[],
        b"",
    )
    .await?;
    assert_eq!((code, body.as_str()), (200, "one"));
    assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some("text/plain"));

    // A container without a log yet, a pod that does not exist: 404; a container the pod does
    // not have: 400.
    let side = kube::api::LogParams { container: Some("side".into()), ..Default::default() };
    let s = status_of(pods.logs("p", &side).await)?;
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
    let s = status_of(pods.logs("nope", &kube::api::LogParams::default()).await)?;
    assert_eq!(s.code, 404);
    assert_eq!(s.message, "pods \"nope\" not found");
    let bad = kube::api::LogParams { container: Some("other".into()), ..Default::default() };
    assert_eq!(status_of(pods.logs("p", &bad).await)?.code, 400);
    let (code, _, _) =
        raw(&client, "POST", "/api/v1/namespaces/default/pods/p/log", &[], b"{}").await?;
    assert_eq!(code, 405);
    Ok(())
}
