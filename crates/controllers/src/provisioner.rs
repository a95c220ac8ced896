//! The embedded local-path provisioner: binds PVCs of the `local-path` StorageClass (or of no
//! class, while it is the default), and of any other StorageClass whose `provisioner` is
//! `holdfast.io/local-path` (a BackupRepo's generated class, say), to PersistentVolumes backed by
//! directories under `<data_dir>/volumes`. The class's `reclaimPolicy` (`Delete` when unset)
//! decides what happens when the claim goes: the directory is deleted, or kept (`Retain`).
//! A claim whose data source is a VolumeSnapshot or another claim gets a volume filled from it
//! ([`data_source`]) through the embedded snapshot driver.

pub mod data_source;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use holdfast_api::snapshot::VolumeSnapshot;

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeSpec,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use serde_json::json;

use crate::events::{EventType, publish};
use crate::snapshot::driver::{LocalPathDriver, blocking};
use crate::{Context, Error, object, reconciler};
use data_source::{DataSource, Populate};

/// Name of the StorageClass the provisioner serves.
pub const STORAGE_CLASS: &str = "local-path";
/// The `provisioner` field of that StorageClass.
pub const PROVISIONER: &str = "holdfast.io/local-path";
/// Annotation marking the default StorageClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
/// Annotation Kubernetes puts on dynamically provisioned PVs.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// Ensures the StorageClass exists, then binds PVCs and reclaims released PVs until a watch
/// fails fatally.
pub async fn run(ctx: Arc<Context>) -> Result<(), Error> {
    ensure_storage_class(&ctx).await?;
    let claims: Api<PersistentVolumeClaim> = Api::all(ctx.client.clone());
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let bind = Controller::new(claims.clone(), watcher::Config::default());
    // A claim waiting for its data source is looked at again when that source changes.
    let (by_snapshot, by_claim) = (bind.store(), bind.store());
    let bind = bind
        .watches(
            Api::<VolumeSnapshot>::all(ctx.client.clone()),
            watcher::Config::default(),
            move |vs: VolumeSnapshot| {
                restored_from(&by_snapshot, vs.namespace(), DataSource::Snapshot(vs.name_any()))
            },
        )
        .watches(claims.clone(), watcher::Config::default(), move |pvc: PersistentVolumeClaim| {
            restored_from(&by_claim, pvc.namespace(), DataSource::Claim(pvc.name_any()))
        });
    // A PV is reconciled when it changes and when its claim changes or disappears.
    let reclaim = Controller::new(volumes, watcher::Config::default()).watches(
        claims,
        watcher::Config::default(),
        |pvc: PersistentVolumeClaim| {
            let pv =
                pvc.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|n| !n.is_empty());
            pv.map(|name| ObjectRef::<PersistentVolume>::new(&name))
        },
    );
    // Either loop ending ends the provisioner.
    tokio::select! {
        stopped = reconciler::run("local-path-provisioner", bind, ctx.clone(), reconcile_claim) => stopped,
        stopped = reconciler::run("local-path-reclaimer", reclaim, ctx, reconcile_volume) => stopped,
    }
}

/// The claims of namespace `ns` (in `store`) whose data source is `source`.
fn restored_from(
    store: &Store<PersistentVolumeClaim>,
    ns: Option<String>,
    source: DataSource,
) -> Vec<ObjectRef<PersistentVolumeClaim>> {
    store
        .state()
        .iter()
        .filter(|pvc| pvc.namespace() == ns && data_source::of(pvc).as_ref() == Some(&source))
        .map(|pvc| ObjectRef::from_obj(pvc.as_ref()))
        .collect()
}

/// Whether `dir` is exactly `<volumes>/<namespace>/<name>`, with plain names.
fn is_volume_dir(volumes: &std::path::Path, dir: &std::path::Path) -> bool {
    use std::path::Component;
    let Ok(rest) = dir.strip_prefix(volumes) else { return false };
    let parts: Vec<Component<'_>> = rest.components().collect();
    parts.len() == 2 && parts.iter().all(|c| matches!(c, Component::Normal(_)))
}

/// Creates the `local-path` StorageClass, default, unless it exists (a user's edits are kept).
pub async fn ensure_storage_class(ctx: &Context) -> Result<(), Error> {
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    if classes.get_opt(STORAGE_CLASS).await?.is_some() {
        return Ok(());
    }
    let class = StorageClass {
        metadata: ObjectMeta {
            name: Some(STORAGE_CLASS.into()),
            annotations: Some(BTreeMap::from([(DEFAULT_CLASS_ANNOTATION.into(), "true".into())])),
            ..ObjectMeta::default()
        },
        provisioner: PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("Immediate".into()),
        ..StorageClass::default()
    };
    object::create_unless_exists(&classes, &class).await?;
    Ok(())
}

/// The directory of a claim's volume: `<data_dir>/volumes/<ns>/<pvc>-<uid8>`.
pub fn volume_dir(ctx: &Context, ns: &str, pvc: &str, uid: &str) -> PathBuf {
    let short: String = uid.chars().take(8).collect();
    ctx.volumes_dir().join(ns).join(format!("{pvc}-{short}"))
}

/// A class the provisioner serves: its name and the reclaim policy of its volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServedClass {
    name: String,
    reclaim_policy: String,
}

/// The class of this claim, when the provisioner serves it.
async fn serves(ctx: &Context, pvc: &PersistentVolumeClaim) -> Result<Option<ServedClass>, Error> {
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    let served = |name: &str, class: Option<&StorageClass>| ServedClass {
        name: name.to_owned(),
        reclaim_policy: class
            .and_then(|c| c.reclaim_policy.clone())
            .unwrap_or_else(|| "Delete".to_owned()),
    };
    match pvc.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()) {
        // "" asks for no dynamic provisioning at all.
        Some("") => Ok(None),
        Some(name) => {
            let class = classes.get_opt(name).await?;
            let ours = match &class {
                Some(c) => c.provisioner == PROVISIONER,
                // Its own class serves even while the StorageClass object is missing.
                None => name == STORAGE_CLASS,
            };
            Ok(ours.then(|| served(name, class.as_ref())))
        }
        None => {
            let class = classes.get_opt(STORAGE_CLASS).await?;
            let default = class.as_ref().is_some_and(|c| {
                c.annotations().get(DEFAULT_CLASS_ANNOTATION).map(String::as_str) == Some("true")
            });
            Ok(default.then(|| served(STORAGE_CLASS, class.as_ref())))
        }
    }
}

async fn reconcile_claim(
    pvc: Arc<PersistentVolumeClaim>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let ns = pvc.namespace().unwrap_or_else(|| "default".into());
    let name = pvc.name_any();
    let Some(uid) = pvc.uid() else { return Ok(Action::await_change()) };
    let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref());
    if pvc.metadata.deletion_timestamp.is_some() || phase == Some("Bound") || phase == Some("Lost")
    {
        return Ok(Action::await_change());
    }
    let spec = pvc.spec.clone().unwrap_or_default();
    if spec.volume_name.as_deref().is_some_and(|v| !v.is_empty() && !v.starts_with("pvc-")) {
        // Pre-bound to a volume someone else made: not ours to provision.
        return Ok(Action::await_change());
    }
    let Some(class) = serves(&ctx, &pvc).await? else {
        return Ok(Action::await_change());
    };
    let populate = match data_source::resolve(&ctx, &ns, &pvc).await {
        Ok(populate) => populate,
        Err(error @ (Error::Invalid(_) | Error::NotReady(_))) => {
            let note = error.to_string();
            publish(
                &ctx,
                pvc.as_ref(),
                EventType::Warning,
                "ProvisioningFailed",
                "Provision",
                &note,
            )
            .await;
            return Err(error);
        }
        Err(error) => return Err(error),
    };

    let pv_name = format!("pvc-{uid}");
    let dir = volume_dir(&ctx, &ns, &name, &uid);
    fill(&ctx, &dir, populate).await?;
    let capacity = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .cloned();
    let access_modes = spec
        .access_modes
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| vec!["ReadWriteOnce".into()]);
    let pv = PersistentVolume {
        metadata: ObjectMeta {
            name: Some(pv_name.clone()),
            annotations: Some(BTreeMap::from([(PROVISIONED_BY.into(), PROVISIONER.into())])),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: Some(access_modes.clone()),
            capacity: capacity.clone().map(|q| BTreeMap::from([("storage".into(), q)])),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: Some(ns.clone()),
                name: Some(name.clone()),
                uid: Some(uid.clone()),
                ..ObjectReference::default()
            }),
            host_path: Some(HostPathVolumeSource {
                path: dir.to_string_lossy().into_owned(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            persistent_volume_reclaim_policy: Some(class.reclaim_policy),
            storage_class_name: Some(class.name),
            volume_mode: spec.volume_mode.clone(),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    };
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    object::create_unless_exists(&volumes, &pv).await?;
    volumes
        .patch_status(
            &pv_name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"phase": "Bound"}})),
        )
        .await?;

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let mut meta_spec = json!({
        "metadata": {"annotations": {
            "pv.kubernetes.io/bind-completed": "yes",
            "pv.kubernetes.io/bound-by-controller": "yes",
            "volume.kubernetes.io/storage-provisioner": PROVISIONER,
        }},
        "spec": {"volumeName": pv_name},
    });
    if spec.storage_class_name.is_none() {
        // Kubernetes records the default class it used on the claim.
        meta_spec["spec"]["storageClassName"] = json!(STORAGE_CLASS);
    }
    claims.patch(&name, &PatchParams::default(), &Patch::Merge(&meta_spec)).await?;
    let mut status = json!({"phase": "Bound", "accessModes": access_modes});
    if let Some(q) = capacity {
        status["capacity"] = json!({"storage": q});
    }
    claims
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({"status": status})))
        .await?;
    publish(
        &ctx,
        pvc.as_ref(),
        EventType::Normal,
        "ProvisioningSucceeded",
        "Provision",
        &format!("Successfully provisioned volume {pv_name} at {}", dir.display()),
    )
    .await;
    Ok(Action::await_change())
}

/// Fills the new volume directory `dir`: empty, or from a snapshot or another volume through
/// the snapshot driver (all at once: a directory that exists is complete).
async fn fill(ctx: &Context, dir: &Path, populate: Populate) -> Result<(), Error> {
    let driver = LocalPathDriver::new(ctx);
    let dir = dir.to_path_buf();
    match populate {
        // As the local-path provisioner (`mkdir -m 0777`): a new claim is writable by whatever
        // user its pods run as; a pod's fsGroup or its own processes narrow it from there.
        Populate::Empty => std::fs::create_dir_all(&dir)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
            })
            .map_err(Error::io(format!("cannot create {}", dir.display()))),
        Populate::Snapshot(handle) => {
            blocking(move || driver.restore_snapshot(&handle, &dir)).await
        }
        Populate::Clone(source) => blocking(move || driver.clone_volume(&source, &dir)).await,
    }
}

/// A provisioned PV whose claim is gone is deleted with its directory (reclaim `Delete`) or
/// marked Released (`Retain`).
async fn reconcile_volume(pv: Arc<PersistentVolume>, ctx: Arc<Context>) -> Result<Action, Error> {
    if pv.annotations().get(PROVISIONED_BY).map(String::as_str) != Some(PROVISIONER)
        || pv.metadata.deletion_timestamp.is_some()
    {
        return Ok(Action::await_change());
    }
    let spec = pv.spec.clone().unwrap_or_default();
    let Some(claim) = spec.claim_ref.as_ref() else { return Ok(Action::await_change()) };
    let ns = claim.namespace.clone().unwrap_or_else(|| "default".into());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let current = claims.get_opt(claim.name.as_deref().unwrap_or_default()).await?;
    // A claim being deleted still holds its volume: its finalizers (a snapshot being taken of
    // it) may still read the data. Only a claim that is gone releases it.
    // A claimRef without a uid (a volume bound by name, as users pre-bind them) matches the
    // claim of that name.
    let claim_alive = current
        .is_some_and(|c| claim.uid.as_deref().is_none_or(|uid| c.uid().as_deref() == Some(uid)));
    if claim_alive {
        return Ok(Action::await_change());
    }
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    if spec.persistent_volume_reclaim_policy.as_deref() == Some("Delete") {
        if let Some(host) = &spec.host_path {
            let dir = PathBuf::from(&host.path);
            // Only ever delete one volume's own directory, `<volumes>/<namespace>/<name>`: never
            // the volumes directory, a namespace's directory, or a path that climbs out.
            if is_volume_dir(&ctx.volumes_dir(), &dir) {
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(format!("cannot delete {}", dir.display()))(e)),
                }
            }
        }
        object::delete_if_exists(&volumes, &pv.name_any(), &DeleteParams::default()).await?;
    } else if pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Released") {
        volumes
            .patch_status(
                &pv.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"phase": "Released"}})),
            )
            .await?;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::is_volume_dir;

    #[test]
    fn only_a_volumes_own_directory_may_be_deleted() {
        let volumes = Path::new("/data/volumes");
        assert!(is_volume_dir(volumes, Path::new("/data/volumes/apps/data-1a2b3c")));
        for bad in [
            "/data/volumes",
            "/data/volumes/apps",
            "/data/volumes/apps/../../etc",
            "/data/volumes/apps/x/y",
            "/data/other/apps/x",
            "/data/volumes/../volumes/apps",
        ] {
            assert!(!is_volume_dir(volumes, Path::new(bad)), "{bad}");
        }
    }
}
