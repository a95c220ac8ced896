//! The VolumeSnapshot side of the snapshot controller, with upstream's rules: a dynamic snapshot
//! gets the content `snapcontent-<uid>` for its claim's volume, taken with its class (else the
//! default class of the volume's driver, written into the spec); a pre-provisioned one binds to
//! the content it names once that content names it back. The status mirrors the bound content.
//! Deleting a snapshot waits for the claims being restored from it, then deletes its content when
//! the policy is Delete (the driver then deletes the stored snapshot) or keeps it (Retain).

use std::sync::Arc;

use holdfast_api::snapshot::{
    DeletionPolicy, VolumeMode, VolumeSnapshot, VolumeSnapshotClass, VolumeSnapshotContent,
};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::CSIDriver;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use serde_json::json;

use super::binding::{self, PreProvisioned};
use super::driver::{DRIVER, LocalPathDriver};
use super::{
    AS_SOURCE_FINALIZER, BEING_DELETED_ANNOTATION, BOUND_FINALIZER, Problem, class, report,
    source_claim, status_patch,
};
use crate::events::{EventType, publish};
use crate::provisioner::data_source::{self, DataSource};
use crate::{Context, Error, finalizer, object, reconciler};

/// Every field of a VolumeSnapshot's status, so a mirrored status also clears what it leaves unset.
const STATUS_FIELDS: [&str; 6] = [
    "boundVolumeSnapshotContentName",
    "creationTime",
    "error",
    "readyToUse",
    "restoreSize",
    "volumeGroupSnapshotName",
];

/// Runs the VolumeSnapshot controller. A snapshot is looked at again when its content changes,
/// when a claim it snapshots or a claim restored from it changes, and (while it is not bound)
/// when a class changes.
pub async fn run(ctx: Arc<Context>) -> Result<(), Error> {
    let client = ctx.client.clone();
    let controller =
        Controller::new(Api::<VolumeSnapshot>::all(client.clone()), watcher::Config::default());
    let (by_claim, unbound) = (controller.store(), controller.store());
    let controller = controller
        .watches(
            Api::<VolumeSnapshotContent>::all(client.clone()),
            watcher::Config::default(),
            |content: VolumeSnapshotContent| {
                let r = content.spec.volume_snapshot_ref;
                Some(ObjectRef::new(r.name.as_deref()?).within(r.namespace.as_deref()?))
            },
        )
        .watches(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            watcher::Config::default(),
            move |pvc: PersistentVolumeClaim| {
                let (ns, name) = (pvc.namespace(), pvc.name_any());
                let mut refs: Vec<ObjectRef<VolumeSnapshot>> = by_claim
                    .state()
                    .iter()
                    .filter(|vs| {
                        vs.namespace() == ns
                            && vs.spec.source.persistent_volume_claim_name.as_deref()
                                == Some(name.as_str())
                    })
                    .map(|vs| ObjectRef::from_obj(vs.as_ref()))
                    .collect();
                if let (Some(DataSource::Snapshot(source)), Some(ns)) =
                    (data_source::of(&pvc), ns.as_deref())
                {
                    refs.push(ObjectRef::new(&source).within(ns));
                }
                refs
            },
        )
        .watches(
            Api::<VolumeSnapshotClass>::all(client),
            watcher::Config::default(),
            move |_: VolumeSnapshotClass| {
                unbound
                    .state()
                    .iter()
                    .filter(|vs| {
                        vs.status
                            .as_ref()
                            .and_then(|s| s.bound_volume_snapshot_content_name.as_ref())
                            .is_none()
                    })
                    .map(|vs| ObjectRef::from_obj(vs.as_ref()))
                    .collect::<Vec<_>>()
            },
        );
    reconciler::run("volume-snapshot", controller, ctx, reconcile).await
}

async fn reconcile(vs: Arc<VolumeSnapshot>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<VolumeSnapshot> =
        Api::namespaced(ctx.client.clone(), &vs.namespace().unwrap_or_default());
    let result = if vs.metadata.deletion_timestamp.is_some() {
        delete(&ctx, &api, &vs).await
    } else {
        sync(&ctx, &api, &vs).await
    };
    match result {
        Ok(action) => Ok(action),
        Err(problem) => {
            let recorded = vs.status.as_ref().and_then(|s| s.error.as_ref());
            let recorded = recorded.and_then(|e| e.message.as_deref());
            Err(report(&ctx, &api, vs.as_ref(), recorded, problem).await)
        }
    }
}

async fn sync(
    ctx: &Context,
    api: &Api<VolumeSnapshot>,
    vs: &VolumeSnapshot,
) -> Result<Action, Problem> {
    if finalizer::add(api, vs, AS_SOURCE_FINALIZER).await? {
        // The edit comes back as a change of the snapshot.
        return Ok(Action::await_change());
    }
    let source = &vs.spec.source;
    let content = match (&source.persistent_volume_claim_name, &source.volume_snapshot_content_name)
    {
        (Some(pvc), _) => dynamic_content(ctx, api, vs, pvc).await?,
        (None, Some(name)) => pre_provisioned_content(ctx, vs, name).await?,
        (None, None) => {
            return Err(Problem::permanent(
                "InvalidSnapshot",
                "spec.source names neither a persistentVolumeClaimName nor a \
                 volumeSnapshotContentName"
                    .into(),
            ));
        }
    };
    mirror(ctx, api, vs, &content).await
}

/// The content of a dynamic snapshot: the one it is bound to or made before, else a new one for
/// its claim's volume.
async fn dynamic_content(
    ctx: &Context,
    api: &Api<VolumeSnapshot>,
    vs: &VolumeSnapshot,
    pvc_name: &str,
) -> Result<VolumeSnapshotContent, Problem> {
    let contents: Api<VolumeSnapshotContent> = Api::all(ctx.client.clone());
    let bound = vs.status.as_ref().and_then(|s| s.bound_volume_snapshot_content_name.clone());
    let name =
        bound.clone().unwrap_or_else(|| binding::content_name(&vs.uid().unwrap_or_default()));
    if let Some(content) = contents.get_opt(&name).await? {
        binding::check_dynamic(vs, &content)?;
        return Ok(content);
    }
    if bound.is_some() {
        return Err(Problem::waiting(
            "SnapshotContentMissing",
            format!(
                "VolumeSnapshotContent {name}, which this snapshot is bound to, does not exist"
            ),
        ));
    }

    let ns = vs.namespace().unwrap_or_default();
    let failed = "SnapshotContentCreationFailed";
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let pvc = claims.get_opt(pvc_name).await?.ok_or_else(|| {
        Problem::waiting(
            failed,
            format!(
                "PersistentVolumeClaim {ns}/{pvc_name} (spec.source.persistentVolumeClaimName) \
                 does not exist"
            ),
        )
    })?;
    let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let Some(pv_name) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|_| bound)
    else {
        return Err(Problem::waiting(
            failed,
            format!("PersistentVolumeClaim {ns}/{pvc_name} is not bound to a volume yet"),
        ));
    };
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let pv = volumes.get_opt(&pv_name).await?.ok_or_else(|| {
        Problem::waiting(
            failed,
            format!("PersistentVolume {pv_name} of claim {ns}/{pvc_name} does not exist"),
        )
    })?;
    let (driver, volume_handle) = volume_of(ctx, &pv, &ns, pvc_name)?;
    let class = snapshot_class(ctx, api, vs, &driver, &format!("{ns}/{pvc_name}")).await?;
    if class.spec.driver != DRIVER {
        let drivers: Api<CSIDriver> = Api::all(ctx.client.clone());
        if drivers.get_opt(&class.spec.driver).await?.is_none() {
            return Err(Problem::waiting(
                failed,
                format!(
                    "no CSIDriver {} is installed: nothing can take the snapshots of \
                     VolumeSnapshotClass {}",
                    class.spec.driver,
                    class.name_any()
                ),
            ));
        }
    }
    source_claim::protect(ctx, &pvc).await?;
    let mode = match pvc.spec.as_ref().and_then(|s| s.volume_mode.as_deref()) {
        Some("Block") => VolumeMode::Block,
        _ => VolumeMode::Filesystem,
    };
    let content = binding::dynamic_content(vs, &class, &volume_handle, Some(mode));
    let content = object::create_or_get(&contents, &content).await?;
    binding::check_dynamic(vs, &content)?;
    Ok(content)
}

/// The CSI driver and volume handle of `pv`: a CSI volume's own, or the embedded driver's for a
/// local-path volume of this server.
fn volume_of(
    ctx: &Context,
    pv: &PersistentVolume,
    ns: &str,
    pvc: &str,
) -> Result<(String, String), Problem> {
    let spec = pv.spec.as_ref();
    if let Some(csi) = spec.and_then(|s| s.csi.as_ref()) {
        return Ok((csi.driver.clone(), csi.volume_handle.clone()));
    }
    if let Some(handle) = LocalPathDriver::new(ctx).volume_handle(pv) {
        return Ok((DRIVER.to_owned(), handle));
    }
    let path = spec
        .and_then(|s| s.host_path.as_ref().map(|h| h.path.clone()))
        .or_else(|| spec.and_then(|s| s.local.as_ref().map(|l| l.path.clone())));
    let place = path.map_or_else(|| "no hostPath".to_owned(), |p| format!("path {p}"));
    Err(Problem::permanent(
        "SnapshotContentCreationFailed",
        format!(
            "PersistentVolume {} of claim {ns}/{pvc} is neither a CSI volume nor a local-path \
             volume of this server ({place}, outside {}): the embedded snapshot driver {DRIVER} \
             snapshots only the volumes the local-path provisioner made",
            pv.name_any(),
            ctx.volumes_dir().display()
        ),
    ))
}

/// The class the snapshot names, which must be for the volume's driver; else the default class
/// of that driver, written into `spec.volumeSnapshotClassName` as upstream does.
async fn snapshot_class(
    ctx: &Context,
    api: &Api<VolumeSnapshot>,
    vs: &VolumeSnapshot,
    driver: &str,
    claim: &str,
) -> Result<VolumeSnapshotClass, Problem> {
    let classes: Api<VolumeSnapshotClass> = Api::all(ctx.client.clone());
    if let Some(name) = vs.spec.volume_snapshot_class_name.as_deref() {
        let class = classes.get_opt(name).await?.ok_or_else(|| {
            Problem::waiting(
                "GetSnapshotClassFailed",
                format!("VolumeSnapshotClass {name} (spec.volumeSnapshotClassName) does not exist"),
            )
        })?;
        if class.spec.driver != driver {
            return Err(Problem::permanent(
                "SnapshotContentCreationFailed",
                format!(
                    "VolumeSnapshotClass {name} is for driver {}, but the volume of claim {claim} \
                     belongs to driver {driver}",
                    class.spec.driver
                ),
            ));
        }
        return Ok(class);
    }
    let all = classes.list(&ListParams::default()).await?.items;
    let chosen = class::choose_default(&all, driver)
        .map_err(|message| Problem::waiting("SetDefaultSnapshotClassFailed", message))?
        .clone();
    api.patch(
        &vs.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"volumeSnapshotClassName": chosen.name_any()}})),
    )
    .await?;
    Ok(chosen)
}

/// The pre-provisioned content `name`, bound: its reference must name this snapshot, and gets
/// the snapshot's uid when it has none.
async fn pre_provisioned_content(
    ctx: &Context,
    vs: &VolumeSnapshot,
    name: &str,
) -> Result<VolumeSnapshotContent, Problem> {
    let contents: Api<VolumeSnapshotContent> = Api::all(ctx.client.clone());
    let content = contents.get_opt(name).await?.ok_or_else(|| {
        Problem::waiting(
            "SnapshotContentMissing",
            format!("VolumeSnapshotContent {name} (spec.source.volumeSnapshotContentName) does not exist"),
        )
    })?;
    match binding::check_pre_provisioned(vs, &content)? {
        PreProvisioned::Bound => Ok(content),
        PreProvisioned::FillUid => {
            let r = binding::snapshot_ref(vs);
            let patch = json!({
                "metadata": {"resourceVersion": content.resource_version()},
                "spec": {"volumeSnapshotRef": {
                    "apiVersion": r.api_version, "kind": r.kind, "uid": r.uid,
                }},
            });
            Ok(contents.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?)
        }
    }
}

/// Mirrors the bound content into the snapshot's status, keeps the bound finalizer, and lets
/// the source claim go once the snapshot is ready.
async fn mirror(
    ctx: &Context,
    api: &Api<VolumeSnapshot>,
    vs: &VolumeSnapshot,
    content: &VolumeSnapshotContent,
) -> Result<Action, Problem> {
    if content.spec.deletion_policy == DeletionPolicy::Delete
        && finalizer::add(api, vs, BOUND_FINALIZER).await?
    {
        return Ok(Action::await_change());
    }
    let status = binding::mirrored_status(vs.status.as_ref(), content);
    let was_ready = vs.status.as_ref().and_then(|s| s.ready_to_use) == Some(true);
    if vs.status.as_ref() != Some(&status) {
        let patch = status_patch(&status, &STATUS_FIELDS)?;
        api.patch_status(&vs.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    if status.ready_to_use != Some(true) {
        return Ok(Action::await_change());
    }
    if !was_ready {
        let message = format!(
            "Snapshot {}/{} is ready to use.",
            vs.namespace().unwrap_or_default(),
            vs.name_any()
        );
        publish(ctx, vs, EventType::Normal, "SnapshotReady", "Snapshot", &message).await;
    }
    if let Some(pvc) = vs.spec.source.persistent_volume_claim_name.as_deref() {
        source_claim::release(ctx, &vs.namespace().unwrap_or_default(), pvc, vs).await?;
    }
    Ok(Action::await_change())
}

/// Deletion: wait for the claims being restored from the snapshot, delete its content when the
/// policy is Delete, release the source claim, then let the snapshot go.
async fn delete(
    ctx: &Context,
    api: &Api<VolumeSnapshot>,
    vs: &VolumeSnapshot,
) -> Result<Action, Problem> {
    if !finalizer::has(vs, AS_SOURCE_FINALIZER) && !finalizer::has(vs, BOUND_FINALIZER) {
        return Ok(Action::await_change());
    }
    let ns = vs.namespace().unwrap_or_default();
    let name = vs.name_any();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let restoring: Vec<String> = claims
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|pvc| {
            let pending = pvc.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
                == "Pending";
            pending
                && pvc.metadata.deletion_timestamp.is_none()
                && data_source::of(pvc) == Some(DataSource::Snapshot(name.clone()))
        })
        .map(|pvc| pvc.name_any())
        .collect();
    if !restoring.is_empty() {
        let message = format!(
            "Snapshot {ns}/{name} is being used to restore PersistentVolumeClaim {}: its \
             deletion waits until the claim is bound or deleted",
            restoring.join(", ")
        );
        publish(ctx, vs, EventType::Warning, "SnapshotDeletePending", "Delete", &message).await;
        return Err(Problem::from(Error::NotReady(message)));
    }

    let contents: Api<VolumeSnapshotContent> = Api::all(ctx.client.clone());
    let content_name = vs
        .status
        .as_ref()
        .and_then(|s| s.bound_volume_snapshot_content_name.clone())
        .or_else(|| vs.spec.source.volume_snapshot_content_name.clone())
        .unwrap_or_else(|| binding::content_name(&vs.uid().unwrap_or_default()));
    if let Some(content) = contents.get_opt(&content_name).await? {
        let ours = content.spec.volume_snapshot_ref.uid.is_some()
            && content.spec.volume_snapshot_ref.uid == vs.uid();
        if ours && content.spec.deletion_policy == DeletionPolicy::Delete {
            let mark = json!({"metadata": {"annotations": {BEING_DELETED_ANNOTATION: "yes"}}});
            contents.patch(&content_name, &PatchParams::default(), &Patch::Merge(&mark)).await?;
            object::delete_if_exists(&contents, &content_name, &DeleteParams::default()).await?;
        }
    }
    if let Some(pvc) = vs.spec.source.persistent_volume_claim_name.as_deref() {
        source_claim::release(ctx, &ns, pvc, vs).await?;
    }
    finalizer::remove_each(api, vs, &[AS_SOURCE_FINALIZER, BOUND_FINALIZER]).await?;
    Ok(Action::await_change())
}
