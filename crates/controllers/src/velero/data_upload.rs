//! DataUpload (velero.io/v2alpha1): the built-in data mover backs up the data of a CSI
//! VolumeSnapshot into the repository of (source namespace, location, kopia).
//!
//! Exposing the snapshot is the volume resolver's job ([`VolumeResolver::snapshot_dir`]): in
//! embedded mode the snapshot is a directory of the embedded driver that never changes, read in
//! place, so no hosting pod, backup claim or snapshot copy is made and nothing is left to clean
//! up; the VolumeSnapshot stays with whoever made it. Preparing waits, up to
//! `spec.operationTimeout`, for the snapshot to become ready to use.
//!
//! The upload is incremental on the claim's lineage (`velero-source=<ns>/<pvc>`), the one
//! PodVolumeBackups of that claim use too. A snapshot is immutable, so an entry that cannot be
//! read means it was deleted or damaged while being read: the upload then fails, and the
//! incomplete repository snapshot is removed rather than recorded.

use std::path::PathBuf;
use std::time::Duration;

use holdfast_api::go_duration::parse_go_duration;
use holdfast_api::snapshot::{VolumeSnapshot, VolumeSnapshotContent};
use holdfast_api::velero::data_mover::DataUpload;
use holdfast_repository::forget::remove_snapshots;
use holdfast_repository::id::Id;
use holdfast_repository::progress::{CancelToken, ProgressFn};
use kube::ResourceExt as _;
use kube::api::Api;
use serde_json::{Value, json};

use super::data_path::{self, Agent, Claim, Mover, PREPARE_TIMEOUT};
use super::pod_volume_backup::{self, SOURCE_TAG, back_up};
use super::repository;
use crate::Error;
use crate::volume::VolumeResolver as _;

/// The snapshot tag naming who asked for it, as Velero's data mover tags it.
pub const REQUESTER_TAG: &str = "snapshot-requester=snapshot-data-upload";
/// The snapshot tag naming the VolumeSnapshot the data came from.
pub const VOLUME_SNAPSHOT_TAG: &str = "volume-snapshot";

/// Whether `datamover` names the built-in data mover (`""` or `velero`); work for any other
/// mover is left to it.
pub fn is_built_in(datamover: Option<&str>) -> bool {
    matches!(datamover.map(str::trim), None | Some("" | "velero"))
}

/// How long preparing may wait: `operationTimeout` (Velero bounds its internal waits with it),
/// at most the data path's prepare timeout; unparsable or zero means that timeout.
pub fn operation_timeout(spec: &str) -> Duration {
    parse_go_duration(spec.trim())
        .ok()
        .filter(|d| !d.is_zero())
        .map_or(PREPARE_TIMEOUT, |d| d.min(PREPARE_TIMEOUT))
}

/// The DataUpload [`Mover`].
pub struct Uploads;

/// What an upload needs.
pub struct Plan {
    backup: pod_volume_backup::Plan,
    /// Where the snapshot was, for the message when it vanished.
    snapshot: String,
}

impl Mover for Uploads {
    type Object = DataUpload;
    type Plan = Plan;
    const FINALIZER: &'static str = data_path::DATA_MOVER_FINALIZER;

    data_path::velero_fields!(DataUpload);

    async fn claim(_agent: &Agent, obj: &DataUpload) -> Result<Claim, Error> {
        // The snapshot is reachable from this node: the embedded server has only this one.
        Ok(if is_built_in(obj.spec.datamover.as_deref()) { Claim::Ours } else { Claim::NotOurs })
    }

    fn accepted_fields(agent: &Agent) -> Value {
        json!({"acceptedByNode": agent.node, "node": agent.node})
    }

    fn prepare_timeout(obj: &DataUpload) -> Duration {
        operation_timeout(&obj.spec.operation_timeout)
    }

    async fn prepare(agent: &Agent, obj: &DataUpload) -> Result<Plan, Error> {
        let ctx = &agent.ctx;
        let own_ns = obj.namespace().unwrap_or_default();
        let source_ns = obj.spec.source_namespace.as_str();
        let csi = obj.spec.csi_snapshot.as_ref().ok_or_else(|| {
            Error::Invalid("spec.csiSnapshot is required for snapshotType CSI".to_owned())
        })?;
        let vs_name = csi.volume_snapshot.as_str();
        let snapshots: Api<VolumeSnapshot> = Api::namespaced(ctx.client.clone(), source_ns);
        let vs = snapshots.get_opt(vs_name).await?.ok_or_else(|| {
            Error::Invalid(format!("VolumeSnapshot {source_ns}/{vs_name} does not exist"))
        })?;
        let status = vs.status.as_ref();
        if status.and_then(|s| s.ready_to_use) != Some(true) {
            let why = status
                .and_then(|s| s.error.as_ref())
                .and_then(|e| e.message.clone())
                .map_or_else(String::new, |m| format!(" (its error: {m})"));
            return Err(Error::NotReady(format!(
                "VolumeSnapshot {source_ns}/{vs_name} is not ready to use yet{why}"
            )));
        }
        let content_name = status
            .and_then(|s| s.bound_volume_snapshot_content_name.clone())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                Error::NotReady(format!(
                    "VolumeSnapshot {source_ns}/{vs_name} is not bound to a content yet"
                ))
            })?;
        let contents: Api<VolumeSnapshotContent> = Api::all(ctx.client.clone());
        let content = contents.get_opt(&content_name).await?.ok_or_else(|| {
            Error::Invalid(format!(
                "VolumeSnapshotContent {content_name} of VolumeSnapshot {source_ns}/{vs_name} \
                 does not exist"
            ))
        })?;
        let handle = content
            .status
            .as_ref()
            .and_then(|s| s.snapshot_handle.clone())
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                Error::NotReady(format!(
                    "VolumeSnapshotContent {content_name} has no snapshot handle yet"
                ))
            })?;
        let dir: PathBuf =
            crate::volume::for_context(ctx).snapshot_dir(&content.spec.driver, &handle).await?;
        let threads =
            data_path::parallelism(obj.spec.data_mover_config.as_ref(), "ParallelFilesUpload")?;
        let type_ = repository::type_name(None);
        let (repo, bsl) = repository::open(
            ctx,
            &own_ns,
            &obj.spec.backup_storage_location,
            source_ns,
            type_,
            true,
        )
        .await?
        .map_err(|why| Error::Invalid(why.message().to_owned()))?;
        repository::ensure(ctx, &bsl, source_ns, type_).await?;
        let source = format!("{source_ns}/{}", obj.spec.source_pvc);
        let tags = vec![
            REQUESTER_TAG.to_owned(),
            format!("{SOURCE_TAG}={source}"),
            format!("{VOLUME_SNAPSHOT_TAG}={source_ns}/{vs_name}"),
        ];
        Ok(Plan {
            backup: pod_volume_backup::Plan {
                repo,
                dir,
                source,
                tags,
                host: agent.node.clone(),
                threads,
            },
            snapshot: format!("VolumeSnapshot {source_ns}/{vs_name} (handle {handle})"),
        })
    }

    fn total_bytes(_plan: &Plan) -> Option<u64> {
        // Counted by the backup's own scan, which runs beside it.
        None
    }

    fn run(
        plan: Plan,
        cancel: CancelToken,
        progress: ProgressFn,
    ) -> Result<(Value, String), holdfast_repository::Error> {
        let (fields, note, warnings) = back_up(&plan.backup, cancel, progress)?;
        let vanished = !plan.backup.dir.is_dir();
        if warnings.is_empty() && !vanished {
            return Ok((fields, note));
        }
        // An immutable snapshot that cannot be read whole was deleted or damaged meanwhile:
        // what was saved is not that snapshot, so it is not kept.
        if let Some(id) = fields["snapshotID"].as_str().and_then(|h| h.parse::<Id>().ok()) {
            remove_snapshots(&plan.backup.repo, &[id])?;
        }
        let mut why = format!("{} changed while it was uploaded", plan.snapshot);
        if vanished {
            why.push_str(": it was deleted");
        }
        if !warnings.is_empty() {
            why.push_str(&format!(
                "; {} entries could not be read: {}",
                warnings.len(),
                warnings.join("; ")
            ));
        }
        why.push_str("; nothing was recorded, take a new snapshot and upload it again");
        Err(holdfast_repository::Error::Pipeline(why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_built_in_mover_is_ours() {
        assert!(is_built_in(None));
        assert!(is_built_in(Some("")));
        assert!(is_built_in(Some("velero")));
        assert!(!is_built_in(Some("acme.io/mover")));
    }

    #[test]
    fn the_operation_timeout_bounds_preparing() {
        assert_eq!(operation_timeout("10m0s"), Duration::from_secs(600));
        assert_eq!(operation_timeout("2h"), PREPARE_TIMEOUT, "never past the prepare timeout");
        assert_eq!(operation_timeout(""), PREPARE_TIMEOUT);
        assert_eq!(operation_timeout("0s"), PREPARE_TIMEOUT);
        assert_eq!(operation_timeout("soon"), PREPARE_TIMEOUT);
    }
}
