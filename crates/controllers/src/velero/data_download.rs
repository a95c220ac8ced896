//! DataDownload (velero.io/v2alpha1): the built-in data mover restores a snapshot of the
//! repository of (source namespace, location, kopia) into the volume of `spec.targetVolume`.
//!
//! The target claim is provisioned as any claim is (the local-path provisioner binds it as soon
//! as it exists); preparing waits, up to `spec.operationTimeout`, for it to exist and be bound,
//! and checks it is bound to `targetVolume.pv` when that is named. The data is then written
//! straight into its volume, overwriting what is there. Unlike Velero on a cluster there is no
//! restore pod or intermediate claim to rebind, so nothing temporary is left behind; a pod that
//! mounts the claim before the download completes sees it half-filled, so start consumers once
//! the DataDownload is `Completed`.

use std::time::Duration;

use holdfast_api::velero::data_mover::DataDownload;
use holdfast_repository::Error as RepoError;
use holdfast_repository::progress::{CancelToken, ProgressFn};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt as _;
use kube::api::Api;
use serde_json::{Value, json};

use super::data_path::{self, Agent, Claim, Mover};
use super::data_upload::{is_built_in, operation_timeout};
use super::pod_volume_restore::{Plan, restore_volume};
use crate::Error;
use crate::volume::VolumeResolver as _;

/// The DataDownload [`Mover`].
pub struct Downloads;

impl Mover for Downloads {
    type Object = DataDownload;
    type Plan = Plan;
    const FINALIZER: &'static str = data_path::DATA_MOVER_FINALIZER;

    data_path::velero_fields!(DataDownload);

    async fn claim(_agent: &Agent, obj: &DataDownload) -> Result<Claim, Error> {
        Ok(if is_built_in(obj.spec.datamover.as_deref()) { Claim::Ours } else { Claim::NotOurs })
    }

    fn accepted_fields(agent: &Agent) -> Value {
        json!({"acceptedByNode": agent.node, "node": agent.node})
    }

    fn prepare_timeout(obj: &DataDownload) -> Duration {
        operation_timeout(&obj.spec.operation_timeout)
    }

    async fn prepare(agent: &Agent, obj: &DataDownload) -> Result<Plan, Error> {
        let ctx = &agent.ctx;
        let own_ns = obj.namespace().unwrap_or_default();
        let target = &obj.spec.target_volume;
        let (ns, pvc) = (target.namespace.as_str(), target.pvc.as_str());
        let dir = crate::volume::for_context(ctx).pvc_dir(ns, pvc).await?;
        if !target.pv.is_empty() {
            let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
            let bound_to = claims
                .get_opt(pvc)
                .await?
                .and_then(|c| c.spec.and_then(|s| s.volume_name))
                .unwrap_or_default();
            if bound_to != target.pv {
                return Err(Error::Invalid(format!(
                    "targetVolume.pv is {:?} but PersistentVolumeClaim {ns}/{pvc} is bound to \
                     {bound_to:?}",
                    target.pv
                )));
            }
        }
        Plan::open(
            agent,
            &own_ns,
            &obj.spec.backup_storage_location,
            &obj.spec.source_namespace,
            &obj.spec.snapshot_id,
            dir,
            obj.spec.data_mover_config.as_ref(),
        )
        .await
    }

    fn total_bytes(plan: &Plan) -> Option<u64> {
        Some(plan.snapshot.snapshot.summary.total_bytes_processed)
    }

    fn run(
        plan: Plan,
        cancel: CancelToken,
        progress: ProgressFn,
    ) -> Result<(Value, String), RepoError> {
        let note = restore_volume(
            &plan.repo,
            &plan.snapshot,
            &plan.dir,
            plan.sparse,
            plan.threads,
            cancel,
            progress,
        )?;
        Ok((json!({}), note))
    }
}
