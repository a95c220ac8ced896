//! VolumeSnapshot, VolumeSnapshotContent and VolumeSnapshotClass end to end, only through the API
//! (kube-rs) of an embedded server with every controller running: the snapshot controller, the
//! embedded snapshot driver `holdfast.io/local-path` and the local-path provisioner restoring and
//! cloning claims. The data is checked on the real filesystem, byte for byte.

mod common;
#[path = "common/poll.rs"]
mod poll;

use std::collections::BTreeMap;
use std::fs::File;
use std::hash::{DefaultHasher, Hasher as _};
use std::os::unix::fs::{FileExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use common::{claim_dir, create};
use holdfast_api::quantity::format_bytes;
use holdfast_api::snapshot::{VolumeSnapshot, VolumeSnapshotClass, VolumeSnapshotContent};
use holdfast_testkit::EmbeddedServer;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use poll::poll;
use serde_json::{Value, json};

/// The binary job processes run as `datasafed`, built by Cargo for this test.
const BIN: &str = env!("CARGO_BIN_EXE_holdfast");
const NS: &str = "default";
/// How long a state may take to appear.
const WAIT: Duration = Duration::from_secs(60);
const DRIVER: &str = "holdfast.io/local-path";
const AS_SOURCE: &str = "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection";
const BOUND: &str = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection";
const CONTENT_BOUND: &str = "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";
const PVC_AS_SOURCE: &str = "snapshot.storage.kubernetes.io/pvc-as-source-protection";

fn snapshots(client: &Client) -> Api<VolumeSnapshot> {
    Api::namespaced(client.clone(), NS)
}

fn contents(client: &Client) -> Api<VolumeSnapshotContent> {
    Api::all(client.clone())
}

fn claims(client: &Client) -> Api<PersistentVolumeClaim> {
    Api::namespaced(client.clone(), NS)
}

/// Creates the claim `name` of `size`, from `source` when given (a `dataSource`).
async fn claim(client: &Client, name: &str, size: &str, source: Option<Value>) -> Result<()> {
    let mut spec = json!({"accessModes": ["ReadWriteOnce"],
                          "resources": {"requests": {"storage": size}}});
    if let Some(source) = source {
        spec["dataSource"] = source;
    }
    create(&claims(client), json!({"metadata": {"name": name}, "spec": spec})).await?;
    Ok(())
}

/// Waits until claim `name` is bound and returns its volume's directory.
async fn bound_dir(client: &Client, name: &str) -> Result<PathBuf> {
    poll(WAIT, &format!("claim {name} bound"), || async {
        let pvc = claims(client).get(name).await?;
        let phase = pvc.status.and_then(|s| s.phase);
        Ok((phase.as_deref() == Some("Bound")).then_some(()))
    })
    .await?;
    claim_dir(client, NS, name).await
}

fn from_snapshot(name: &str) -> Value {
    json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": name})
}

fn from_claim(name: &str) -> Value {
    json!({"kind": "PersistentVolumeClaim", "name": name})
}

/// Creates the dynamic snapshot `name` of claim `pvc`, of `class` (else the default).
async fn snapshot(client: &Client, name: &str, pvc: &str, class: Option<&str>) -> Result<()> {
    let mut spec = json!({"source": {"persistentVolumeClaimName": pvc}});
    if let Some(class) = class {
        spec["volumeSnapshotClassName"] = json!(class);
    }
    create(
        &snapshots(client),
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
               "metadata": {"name": name}, "spec": spec}),
    )
    .await?;
    Ok(())
}

/// Waits until snapshot `name` is ready to use.
async fn ready(client: &Client, name: &str) -> Result<VolumeSnapshot> {
    poll(WAIT, &format!("snapshot {name} ready"), || async {
        let vs = snapshots(client).get(name).await?;
        let ready = vs.status.as_ref().and_then(|s| s.ready_to_use) == Some(true);
        Ok(ready.then_some(vs))
    })
    .await
}

/// Waits until snapshot `name` reports an error, and returns its message.
async fn error_of(client: &Client, name: &str) -> Result<String> {
    poll(WAIT, &format!("an error on snapshot {name}"), || async {
        let vs = snapshots(client).get(name).await?;
        let status = vs.status.unwrap_or_default();
        let message = status.error.and_then(|e| e.message);
        if message.is_some() {
            ensure!(status.ready_to_use != Some(true), "an erring snapshot is not ready");
        }
        Ok(message)
    })
    .await
}

/// Waits until object `name` of `api` is gone.
async fn gone<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    poll(WAIT, &format!("{name} gone"), || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await
}

/// Waits for an event about `name` with `reason`, and returns its note.
async fn event(client: &Client, name: &str, reason: &str) -> Result<String> {
    poll(WAIT, &format!("event {reason} about {name}"), || async {
        let events: Api<Event> = Api::namespaced(client.clone(), NS);
        let list = events.list(&ListParams::default()).await?;
        Ok(list.items.into_iter().find_map(|e| {
            let about = e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name);
            (about && e.reason.as_deref() == Some(reason)).then(|| e.note.unwrap_or_default())
        }))
    })
    .await
}

/// A mixed tree in `dir`: many small files, two larger ones, a read-only directory, a private
/// file, a symlink and a sparse file with data in its middle. Returns its logical bytes.
fn fill(dir: &Path) -> Result<u64> {
    let mut bytes = 0;
    for d in 0..4 {
        let sub = dir.join(format!("small/{d}"));
        std::fs::create_dir_all(&sub)?;
        for f in 0..50 {
            let body = format!("file {d}/{f}\n").repeat(f * 7 + 1);
            bytes += body.len() as u64;
            std::fs::write(sub.join(format!("{f}.txt")), body)?;
        }
    }
    for (name, size) in [("large-a", 3 << 20), ("large-b", 1 << 20)] {
        let body: Vec<u8> =
            (0..size).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        std::fs::write(dir.join(name), &body)?;
        bytes += u64::from(size);
    }
    std::fs::write(dir.join("private"), b"secret")?;
    std::fs::set_permissions(dir.join("private"), std::fs::Permissions::from_mode(0o600))?;
    bytes += 6;
    std::os::unix::fs::symlink("large-a", dir.join("link"))?;
    let sparse = File::create(dir.join("sparse"))?;
    sparse.set_len(256 << 20)?;
    sparse.write_all_at(b"the middle", 128 << 20)?;
    bytes += 256 << 20;
    std::fs::set_permissions(dir.join("small/3"), std::fs::Permissions::from_mode(0o555))?;
    Ok(bytes)
}

/// Everything a restore must keep, per path: type, mode, owner, size, mtime, content hash or
/// link target.
fn manifest(root: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let m = std::fs::symlink_metadata(&path)?;
            let body = if m.is_file() {
                let mut hasher = DefaultHasher::new();
                hasher.write(&std::fs::read(&path)?);
                format!("{:x}", hasher.finish())
            } else if m.is_symlink() {
                std::fs::read_link(&path)?.display().to_string()
            } else {
                stack.push(path.clone());
                "dir".into()
            };
            let rel = path.strip_prefix(root)?.display().to_string();
            let size = if m.is_dir() { 0 } else { m.len() };
            let line = format!(
                "{:o} {}:{} {size} {}.{:09} {body}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec()
            );
            out.insert(rel, line);
        }
    }
    Ok(out)
}

fn handle_of(content: &VolumeSnapshotContent) -> Result<String> {
    content.status.as_ref().and_then(|s| s.snapshot_handle.clone()).context("no snapshotHandle")
}

fn bound_content(vs: &VolumeSnapshot) -> Result<String> {
    vs.status
        .as_ref()
        .and_then(|s| s.bound_volume_snapshot_content_name.clone())
        .context("the snapshot names no content")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamic_snapshot_is_point_in_time_and_restores_and_clones_byte_identical() -> Result<()>
{
    let server = EmbeddedServer::start(Path::new(BIN)).await?;
    let client = server.client.clone();
    claim(&client, "data", "1Gi", None).await?;
    let data = bound_dir(&client, "data").await?;
    let bytes = fill(&data)?;
    let before = manifest(&data)?;

    snapshot(&client, "snap", "data", None).await?;
    let vs = ready(&client, "snap").await?;
    let uid = vs.uid().context("uid")?;
    assert_eq!(
        vs.spec.volume_snapshot_class_name.as_deref(),
        Some("local-path"),
        "the driver's default class is chosen and written into the spec"
    );
    let content_name = bound_content(&vs)?;
    assert_eq!(content_name, format!("snapcontent-{uid}"));
    let content = contents(&client).get(&content_name).await?;
    let r = &content.spec.volume_snapshot_ref;
    assert_eq!(
        (r.name.as_deref(), r.namespace.as_deref(), r.uid.as_deref()),
        (Some("snap"), Some(NS), Some(uid.as_str())),
        "the content points back at the snapshot, uid included"
    );
    assert_eq!(content.spec.driver, DRIVER);
    assert_eq!(serde_json::to_value(content.spec.deletion_policy)?, json!("Delete"));
    let volume_handle = content.spec.source.volume_handle.clone().context("volumeHandle")?;
    assert!(data.ends_with(&volume_handle), "{volume_handle} names {}", data.display());
    let handle = handle_of(&content)?;
    assert_eq!(handle, format!("snapshot-{uid}"));
    let content_status = content.status.clone().context("content status")?;
    assert_eq!(content_status.restore_size, Some(i64::try_from(bytes)?), "restoreSize in bytes");
    assert_eq!(content_status.ready_to_use, Some(true));
    let status = vs.status.clone().context("status")?;
    assert_eq!(status.restore_size.map(|q| q.0), Some(format_bytes(u128::from(bytes))));
    assert!(status.error.is_none());
    let taken = content_status.creation_time.context("content creationTime")?;
    assert_eq!(
        status.creation_time.context("creationTime")?.0.as_second(),
        taken.div_euclid(1_000_000_000)
    );
    for finalizer in [AS_SOURCE, BOUND] {
        assert!(vs.finalizers().iter().any(|f| f == finalizer), "{finalizer} on {vs:?}");
    }
    assert!(content.finalizers().iter().any(|f| f == CONTENT_BOUND));
    poll(WAIT, "the source claim released", || async {
        let pvc = claims(&client).get("data").await?;
        Ok(pvc.finalizers().iter().all(|f| f != PVC_AS_SOURCE).then_some(()))
    })
    .await?;
    event(&client, "snap", "SnapshotReady").await?;
    assert!(server.data_dir().join("snapshots").join(&handle).join("data/large-a").is_file());

    // Writes after the snapshot: a changed file, a new one, a deleted one.
    std::fs::write(data.join("large-b"), b"overwritten after the snapshot")?;
    std::fs::write(data.join("after"), b"new")?;
    std::fs::remove_file(data.join("small/0/3.txt"))?;
    let after = manifest(&data)?;
    assert_ne!(before, after);

    claim(&client, "restored", "1Gi", Some(from_snapshot("snap"))).await?;
    let restored = bound_dir(&client, "restored").await?;
    assert_eq!(manifest(&restored)?, before, "the restored volume is the data at snapshot time");
    let sparse = std::fs::metadata(restored.join("sparse"))?;
    assert!(sparse.blocks() * 512 < 16 << 20, "holes stay holes: {} blocks", sparse.blocks());

    claim(&client, "clone", "1Gi", Some(from_claim("data"))).await?;
    let clone = bound_dir(&client, "clone").await?;
    assert_eq!(manifest(&clone)?, after, "a clone is the source as it is now");
    ensure!(clone != data && restored != data, "new volumes get their own directories");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_retain_policies_and_a_pre_provisioned_binding() -> Result<()> {
    let server = EmbeddedServer::start(Path::new(BIN)).await?;
    let client = server.client.clone();
    let stored = |handle: &str| server.data_dir().join("snapshots").join(handle);
    claim(&client, "data", "1Gi", None).await?;
    let data = bound_dir(&client, "data").await?;
    std::fs::write(data.join("db"), b"version 1")?;
    let original = manifest(&data)?;
    create(
        &Api::<VolumeSnapshotClass>::all(client.clone()),
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
               "metadata": {"name": "retained"}, "driver": DRIVER, "deletionPolicy": "Retain"}),
    )
    .await?;

    // Delete: the snapshot takes its content and the stored snapshot with it.
    snapshot(&client, "temporary", "data", None).await?;
    let temporary = ready(&client, "temporary").await?;
    let temporary_content = bound_content(&temporary)?;
    let temporary_handle = handle_of(&contents(&client).get(&temporary_content).await?)?;
    assert!(stored(&temporary_handle).is_dir());
    snapshots(&client).delete("temporary", &DeleteParams::default()).await?;
    gone(&snapshots(&client), "temporary").await?;
    gone(&contents(&client), &temporary_content).await?;
    assert!(!stored(&temporary_handle).exists(), "the driver deleted the stored snapshot");

    // Retain: the content and the stored snapshot stay.
    snapshot(&client, "kept", "data", Some("retained")).await?;
    let kept = ready(&client, "kept").await?;
    assert!(
        kept.finalizers().iter().all(|f| f != BOUND),
        "bound protection is only for policy Delete"
    );
    let kept_content = bound_content(&kept)?;
    let kept_handle = handle_of(&contents(&client).get(&kept_content).await?)?;
    snapshots(&client).delete("kept", &DeleteParams::default()).await?;
    gone(&snapshots(&client), "kept").await?;
    let retained = contents(&client).get(&kept_content).await?;
    assert!(retained.metadata.deletion_timestamp.is_none(), "a retained content stays");
    assert!(stored(&kept_handle).is_dir());
    // Deleting the retained content itself keeps the stored snapshot too.
    contents(&client).delete(&kept_content, &DeleteParams::default()).await?;
    gone(&contents(&client), &kept_content).await?;
    assert!(stored(&kept_handle).is_dir());

    // Pre-provisioned: a content for the kept snapshot, then a snapshot naming it.
    let imported_content = json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
        "metadata": {"name": "imported"},
        "spec": {"volumeSnapshotRef": {"name": "imported", "namespace": NS},
                 "deletionPolicy": "Delete", "driver": DRIVER,
                 "source": {"snapshotHandle": kept_handle}}});
    create(&contents(&client), imported_content).await?;
    create(
        &snapshots(&client),
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
               "metadata": {"name": "imported"},
               "spec": {"source": {"volumeSnapshotContentName": "imported"}}}),
    )
    .await?;
    let imported = ready(&client, "imported").await?;
    assert_eq!(bound_content(&imported)?, "imported");
    let content = contents(&client).get("imported").await?;
    assert_eq!(
        content.spec.volume_snapshot_ref.uid,
        imported.uid(),
        "the controller filled the uid"
    );
    assert_eq!(
        imported.status.and_then(|s| s.restore_size).map(|q| q.0),
        Some(format_bytes(9)),
        "the size the driver recorded for the snapshot"
    );
    claim(&client, "restored", "1Gi", Some(from_snapshot("imported"))).await?;
    assert_eq!(manifest(&bound_dir(&client, "restored").await?)?, original);

    // A content that names another snapshot is not taken over.
    create(
        &contents(&client),
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
               "metadata": {"name": "foreign"},
               "spec": {"volumeSnapshotRef": {"name": "someone-else", "namespace": NS},
                        "deletionPolicy": "Retain", "driver": DRIVER,
                        "source": {"snapshotHandle": kept_handle}}}),
    )
    .await?;
    create(
        &snapshots(&client),
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
               "metadata": {"name": "thief"},
               "spec": {"source": {"volumeSnapshotContentName": "foreign"}}}),
    )
    .await?;
    let message = error_of(&client, "thief").await?;
    assert!(message.contains("bound to another snapshot"), "{message}");
    assert!(message.contains("default/someone-else"), "{message}");
    event(&client, "thief", "SnapshotContentMisbound").await?;
    let foreign = contents(&client).get("foreign").await?;
    assert!(foreign.spec.volume_snapshot_ref.uid.is_none(), "the foreign content is untouched");

    // Deleting the pre-provisioned snapshot with policy Delete deletes the stored snapshot.
    snapshots(&client).delete("imported", &DeleteParams::default()).await?;
    gone(&contents(&client), "imported").await?;
    assert!(!stored(&kept_handle).exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_small_claim_stays_pending_and_holds_the_snapshots_deletion() -> Result<()> {
    let server = EmbeddedServer::start(Path::new(BIN)).await?;
    let client = server.client.clone();
    claim(&client, "data", "1Gi", None).await?;
    let data = bound_dir(&client, "data").await?;
    std::fs::write(data.join("big"), vec![1u8; 3 << 20])?;
    snapshot(&client, "snap", "data", None).await?;
    let vs = ready(&client, "snap").await?;
    assert_eq!(
        vs.status.as_ref().and_then(|s| s.restore_size.clone()).map(|q| q.0).as_deref(),
        Some("3Mi")
    );

    claim(&client, "small", "1Mi", Some(from_snapshot("snap"))).await?;
    let note = event(&client, "small", "ProvisioningFailed").await?;
    assert!(note.contains("smaller than the restoreSize of VolumeSnapshot snap 3Mi"), "{note}");
    let small = claims(&client).get("small").await?;
    assert!(small.spec.and_then(|s| s.volume_name).is_none(), "the claim stays Pending");

    snapshots(&client).delete("snap", &DeleteParams::default()).await?;
    let note = event(&client, "snap", "SnapshotDeletePending").await?;
    assert!(note.contains("small"), "{note}");
    let held = snapshots(&client).get("snap").await?;
    assert!(held.metadata.deletion_timestamp.is_some(), "deletion waits for the claim");
    let content = bound_content(&held)?;
    assert!(contents(&client).get_opt(&content).await?.is_some());

    claims(&client).delete("small", &DeleteParams::default()).await?;
    gone(&snapshots(&client), "snap").await?;
    gone(&contents(&client), &content).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_snapshots_are_refused_or_get_a_clear_error_and_recover() -> Result<()> {
    let server = EmbeddedServer::start(Path::new(BIN)).await?;
    let client = server.client.clone();

    // An empty class name is refused by the API, with the field.
    let empty: VolumeSnapshot = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "empty-class"},
        "spec": {"source": {"persistentVolumeClaimName": "data"}, "volumeSnapshotClassName": ""}}))?;
    match snapshots(&client).create(&PostParams::default(), &empty).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422);
            let causes = status.details.context("details")?.causes;
            assert_eq!(causes[0].field, "spec.volumeSnapshotClassName");
        }
        other => bail!("an empty class name must be refused, got {other:?}"),
    }

    // A missing claim: a clear error, and the snapshot proceeds once the claim appears.
    snapshot(&client, "early", "later", None).await?;
    let message = error_of(&client, "early").await?;
    assert!(message.contains("PersistentVolumeClaim default/later"), "{message}");
    assert!(message.contains("does not exist"), "{message}");
    claim(&client, "later", "1Gi", None).await?;
    let early = ready(&client, "early").await?;
    assert!(early.status.and_then(|s| s.error).is_none(), "the error is cleared once ready");

    // A class that does not exist.
    snapshot(&client, "classless", "later", Some("nope")).await?;
    let message = error_of(&client, "classless").await?;
    assert!(message.contains("VolumeSnapshotClass nope"), "{message}");

    // A content that does not exist.
    create(
        &snapshots(&client),
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
               "metadata": {"name": "dangling"},
               "spec": {"source": {"volumeSnapshotContentName": "no-such-content"}}}),
    )
    .await?;
    let message = error_of(&client, "dangling").await?;
    assert!(message.contains("VolumeSnapshotContent no-such-content"), "{message}");

    // A volume that is not on this server (a static hostPath volume elsewhere).
    create(
        &Api::<PersistentVolume>::all(client.clone()),
        json!({"metadata": {"name": "static"},
               "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                        "hostPath": {"path": "/srv/elsewhere"}, "storageClassName": "",
                        "claimRef": {"namespace": NS, "name": "foreign"}}}),
    )
    .await?;
    create(
        &claims(&client),
        json!({"metadata": {"name": "foreign"},
               "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                        "volumeName": "static", "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await?;
    let bound = json!({"status": {"phase": "Bound"}});
    claims(&client).patch_status("foreign", &PatchParams::default(), &Patch::Merge(&bound)).await?;
    snapshot(&client, "off-host", "foreign", None).await?;
    let message = error_of(&client, "off-host").await?;
    assert!(message.contains("nor a local-path volume of this server"), "{message}");
    assert!(message.contains("/srv/elsewhere"), "{message}");

    // Two default classes for one driver: no guess.
    create(
        &Api::<VolumeSnapshotClass>::all(client.clone()),
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
               "metadata": {"name": "second",
                            "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
               "driver": DRIVER, "deletionPolicy": "Delete"}),
    )
    .await?;
    snapshot(&client, "ambiguous", "later", None).await?;
    let message = error_of(&client, "ambiguous").await?;
    assert!(message.starts_with("2 default snapshot classes were found"), "{message}");
    let ambiguous = snapshots(&client).get("ambiguous").await?;
    assert!(ambiguous.spec.volume_snapshot_class_name.is_none());
    Ok(())
}
