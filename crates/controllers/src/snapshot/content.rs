//! The VolumeSnapshotContent side: the content's finalizer and deletion (as upstream's common
//! controller keeps them), and, for contents of the embedded driver, what its CSI sidecar does:
//! take the snapshot of a dynamic content's volume, check a pre-provisioned content's snapshot
//! exists, write `snapshotHandle`, `creationTime`, `restoreSize` and `readyToUse`, and delete the
//! stored snapshot with a content whose policy is Delete.

use std::sync::Arc;

use holdfast_api::snapshot::{
    DeletionPolicy, VolumeSnapshot, VolumeSnapshotContent, VolumeSnapshotContentStatus,
};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};

use super::driver::{DRIVER, LocalPathDriver, StoredSnapshot, blocking};
use super::{CONTENT_FINALIZER, Problem, binding, report, status_patch};
use crate::events::{EventType, publish};
use crate::{Context, Error, finalizer, object, reconciler};

/// Every field of a VolumeSnapshotContent's status, so a new status also clears what it leaves
/// unset.
const STATUS_FIELDS: [&str; 6] = [
    "creationTime",
    "error",
    "readyToUse",
    "restoreSize",
    "snapshotHandle",
    "volumeGroupSnapshotHandle",
];

/// Runs the content controller; a content is looked at again when a snapshot that may be its
/// own changes or goes.
pub async fn run(ctx: Arc<Context>) -> Result<(), Error> {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<VolumeSnapshotContent>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<VolumeSnapshot>::all(client),
        watcher::Config::default(),
        |vs: VolumeSnapshot| {
            let bound = vs.status.and_then(|s| s.bound_volume_snapshot_content_name);
            let dynamic = vs.metadata.uid.as_deref().map(binding::content_name);
            [bound, dynamic, vs.spec.source.volume_snapshot_content_name]
                .into_iter()
                .flatten()
                .map(|name| ObjectRef::<VolumeSnapshotContent>::new(&name))
                .collect::<Vec<_>>()
        },
    );
    reconciler::run("volume-snapshot-content", controller, ctx, reconcile).await
}

async fn reconcile(
    content: Arc<VolumeSnapshotContent>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let api: Api<VolumeSnapshotContent> = Api::all(ctx.client.clone());
    match sync(&ctx, &api, &content).await {
        Ok(action) => Ok(action),
        Err(problem) => {
            let recorded = content.status.as_ref().and_then(|s| s.error.as_ref());
            let recorded = recorded.and_then(|e| e.message.as_deref());
            Err(report(&ctx, &api, content.as_ref(), recorded, problem).await)
        }
    }
}

async fn sync(
    ctx: &Context,
    api: &Api<VolumeSnapshotContent>,
    content: &VolumeSnapshotContent,
) -> Result<Action, Problem> {
    if content.metadata.deletion_timestamp.is_some() {
        return delete(ctx, api, content).await;
    }
    if finalizer::add(api, content, CONTENT_FINALIZER).await? {
        return Ok(Action::await_change());
    }
    let reference = &content.spec.volume_snapshot_ref;
    if let Some(uid) = reference.uid.as_deref().filter(|u| !u.is_empty()) {
        let snapshot = snapshot_of(ctx, content).await?;
        if snapshot.as_ref().and_then(|vs| vs.uid()).as_deref() != Some(uid)
            && content.spec.deletion_policy == DeletionPolicy::Delete
        {
            // Bound to a snapshot that is gone: with policy Delete the content goes too (and the
            // driver deletes the stored snapshot on the way); with Retain it stays.
            object::delete_if_exists(api, &content.name_any(), &DeleteParams::default()).await?;
            return Ok(Action::await_change());
        }
    }
    if content.spec.driver != DRIVER {
        // Another driver's content: its own sidecar takes and reports the snapshot.
        return Ok(Action::await_change());
    }
    let status = content.status.clone().unwrap_or_default();
    if status.ready_to_use == Some(true) && status.snapshot_handle.is_some() {
        return Ok(Action::await_change());
    }
    let stored = snapshot_in_driver(ctx, content).await?;
    let ready = VolumeSnapshotContentStatus {
        creation_time: Some(stored.creation_time),
        error: None,
        ready_to_use: Some(true),
        restore_size: Some(stored.size_bytes),
        snapshot_handle: Some(stored.handle.clone()),
        volume_group_snapshot_handle: status.volume_group_snapshot_handle,
    };
    let patch = status_patch(&ready, &STATUS_FIELDS)?;
    api.patch_status(&content.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    if content.spec.source.volume_handle.is_some() {
        let message = format!(
            "Snapshot {} of volume {} taken by driver {DRIVER}: {} bytes",
            stored.handle, stored.source_volume, stored.size_bytes
        );
        publish(ctx, content, EventType::Normal, "SnapshotCreated", "Snapshot", &message).await;
    }
    Ok(Action::await_change())
}

/// The driver's snapshot of `content`: for a dynamic content, taken now (or found, when an
/// earlier attempt took it); for a pre-provisioned one, the snapshot its handle names.
async fn snapshot_in_driver(
    ctx: &Context,
    content: &VolumeSnapshotContent,
) -> Result<StoredSnapshot, Problem> {
    let driver = LocalPathDriver::new(ctx);
    let source = &content.spec.source;
    if let Some(volume) = source.volume_handle.clone() {
        // As upstream's sidecar names it: `snapshot-<VolumeSnapshot uid>`.
        let uid = content.spec.volume_snapshot_ref.uid.clone().filter(|u| !u.is_empty());
        let handle = format!("snapshot-{}", uid.or_else(|| content.uid()).unwrap_or_default());
        let now = i64::try_from(Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX);
        return blocking(move || driver.create_snapshot(&handle, &volume, now))
            .await
            .map_err(|error| Problem::reported("SnapshotCreationFailed", error));
    }
    let handle = source.snapshot_handle.clone().unwrap_or_default();
    let lookup = handle.clone();
    let found = blocking(move || driver.get_snapshot(&lookup))
        .await
        .map_err(|error| Problem::reported("SnapshotContentCheckFailed", error))?;
    found.ok_or_else(|| {
        Problem::permanent(
            "SnapshotContentCheckFailed",
            format!(
                "driver {DRIVER} has no snapshot {handle:?} (spec.source.snapshotHandle; nothing \
                 under {}): a pre-provisioned content must name a snapshot that exists",
                ctx.snapshots_dir().display()
            ),
        )
    })
}

/// The snapshot `content` names, if it exists.
async fn snapshot_of(
    ctx: &Context,
    content: &VolumeSnapshotContent,
) -> Result<Option<VolumeSnapshot>, Error> {
    let r = &content.spec.volume_snapshot_ref;
    let (Some(ns), Some(name)) = (r.namespace.as_deref(), r.name.as_deref()) else {
        return Ok(None);
    };
    let snapshots: Api<VolumeSnapshot> = Api::namespaced(ctx.client.clone(), ns);
    Ok(snapshots.get_opt(name).await?)
}

/// Deletion: a content its snapshot is still bound to waits for that snapshot; then the driver
/// deletes the stored snapshot when the policy is Delete, and the finalizer goes.
async fn delete(
    ctx: &Context,
    api: &Api<VolumeSnapshotContent>,
    content: &VolumeSnapshotContent,
) -> Result<Action, Problem> {
    if !finalizer::has(content, CONTENT_FINALIZER) {
        return Ok(Action::await_change());
    }
    if let Some(vs) = snapshot_of(ctx, content).await?
        && vs.metadata.deletion_timestamp.is_none()
        && binding::bound_both_ways(&vs, content)
    {
        return Err(Problem::from(Error::NotReady(format!(
            "VolumeSnapshotContent {} is in use by VolumeSnapshot {}/{}: it goes once that \
             snapshot is deleted",
            content.name_any(),
            vs.namespace().unwrap_or_default(),
            vs.name_any()
        ))));
    }
    let handle = content
        .status
        .as_ref()
        .and_then(|s| s.snapshot_handle.clone())
        .or_else(|| content.spec.source.snapshot_handle.clone());
    if content.spec.deletion_policy == DeletionPolicy::Delete
        && content.spec.driver == DRIVER
        && let Some(handle) = handle
    {
        let driver = LocalPathDriver::new(ctx);
        blocking(move || driver.delete_snapshot(&handle))
            .await
            .map_err(|error| Problem::reported("SnapshotDeleteError", error))?;
    }
    finalizer::remove(api, content, CONTENT_FINALIZER).await?;
    Ok(Action::await_change())
}
