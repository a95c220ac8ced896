//! `snapshot.storage.k8s.io`: the snapshot controller and the embedded snapshot driver
//! (docs/snapshots.md).
//!
//! As upstream splits it, the VolumeSnapshot side ([`volume_snapshot`]) binds snapshots to
//! contents (dynamic: it creates `snapcontent-<uid>`; pre-provisioned: it checks and completes
//! the content's reference), chooses the default class, mirrors the content's status, keeps the
//! finalizers and runs deletion; the content side ([`content`]) is the sidecar of the embedded
//! driver ([`driver`]), which takes, reports and deletes the snapshots of local-path volumes.
//! Contents of other drivers are left to their own sidecars (cluster mode).

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::events::{EventType, publish};
use crate::{Context, Error};

pub mod binding;
pub mod class;
pub mod content;
pub mod driver;
pub mod source_claim;
pub mod tree_copy;
pub mod volume_snapshot;

/// On a VolumeSnapshot while it is not being deleted: deletion waits for the claims restored
/// from it.
pub const AS_SOURCE_FINALIZER: &str =
    "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection";
/// On a bound VolumeSnapshot whose content's policy is Delete.
pub const BOUND_FINALIZER: &str = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection";
/// On a VolumeSnapshotContent: the storage snapshot is dealt with before the object goes.
pub const CONTENT_FINALIZER: &str =
    "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";
/// On a PersistentVolumeClaim while a snapshot of it is being taken.
pub const SOURCE_CLAIM_FINALIZER: &str = "snapshot.storage.kubernetes.io/pvc-as-source-protection";
/// Set on a content whose snapshot is being deleted, as upstream marks it for its sidecar.
pub const BEING_DELETED_ANNOTATION: &str =
    "snapshot.storage.kubernetes.io/volumesnapshot-being-deleted";

/// The API group of the snapshot kinds, as a claim's `dataSource.apiGroup` names it.
pub const GROUP: &str = "snapshot.storage.k8s.io";

/// Installs the embedded driver's `CSIDriver` and default class, then runs the snapshot and
/// content controllers until one stops.
pub async fn run(ctx: Arc<Context>) -> Result<(), Error> {
    // The embedded driver snapshots local-path volumes on this host: a cluster has its own
    // drivers (and the operator no right to register one).
    if ctx.mode == crate::context::Mode::Embedded {
        driver::ensure_csi_driver(&ctx).await?;
        class::ensure_default_class(&ctx).await?;
        let snapshots = driver::LocalPathDriver::new(&ctx);
        driver::blocking(move || snapshots.empty_trash()).await?;
    }
    tokio::select! {
        stopped = volume_snapshot::run(ctx.clone()) => stopped,
        stopped = content::run(ctx) => stopped,
    }
}

/// Why a snapshot object cannot progress, as its user sees it: `status.error.message` and a
/// Warning event with `reason`. `error` also decides when the object is looked at again. A
/// problem without a reason (an API hiccup) is only retried, never written into the status.
#[derive(Debug)]
pub struct Problem {
    pub reason: Option<&'static str>,
    pub error: Error,
}

impl Problem {
    /// A problem only a change of the object can solve.
    pub fn permanent(reason: &'static str, message: String) -> Problem {
        Problem { reason: Some(reason), error: Error::Invalid(message) }
    }

    /// A problem that goes once something named appears or becomes ready (a watch brings it).
    pub fn waiting(reason: &'static str, message: String) -> Problem {
        Problem { reason: Some(reason), error: Error::NotReady(message) }
    }

    /// `error` reported with `reason`, retried as its kind says.
    pub fn reported(reason: &'static str, error: Error) -> Problem {
        Problem { reason: Some(reason), error }
    }
}

impl From<Error> for Problem {
    fn from(error: Error) -> Problem {
        Problem { reason: None, error }
    }
}

impl From<kube::Error> for Problem {
    fn from(error: kube::Error) -> Problem {
        Problem::from(Error::from(error))
    }
}

/// Writes `problem` into the object's `status.error` (with `readyToUse: false`) and publishes a
/// Warning event, unless `recorded` (the current `status.error.message`) says so already: a
/// problem that persists must not rewrite the status, which would wake the controller again,
/// nor flood the events. Then hands the error back for the requeue.
pub(crate) async fn report<K>(
    ctx: &Context,
    api: &Api<K>,
    obj: &K,
    recorded: Option<&str>,
    problem: Problem,
) -> Error
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(reason) = problem.reason else { return problem.error };
    let message = problem.error.to_string();
    if recorded == Some(message.as_str()) {
        return problem.error;
    }
    let name = obj.meta().name.clone().unwrap_or_default();
    let patch = json!({"status": {
        "readyToUse": false,
        "error": {"message": message, "time": Time(Timestamp::now())},
    }});
    if let Err(error) =
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await
    {
        tracing::warn!(object = name, %error, "cannot record the snapshot error in the status");
    }
    publish(ctx, obj, EventType::Warning, reason, "Snapshot", &message).await;
    problem.error
}

/// `status` as a merge patch that also clears the `fields` it leaves unset (a merge patch keeps
/// what it does not mention).
pub(crate) fn status_patch(
    status: &impl serde::Serialize,
    fields: &[&str],
) -> Result<Value, Error> {
    let mut value = serde_json::to_value(status)?;
    if let Some(map) = value.as_object_mut() {
        for field in fields {
            map.entry(*field).or_insert(Value::Null);
        }
    }
    Ok(json!({"status": value}))
}
