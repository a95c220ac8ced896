//! PodVolumeBackup: the node agent backs up one pod volume's directory into the repository of
//! (pod namespace, location, uploader type). Backups of the same volume are incremental: the
//! parent is the newest snapshot of the same source (the claim of a PVC volume, else the pod
//! and volume), so unchanged files are not even read. The snapshot records the source and the
//! work's `spec.tags`.
//!
//! Completed work carries `snapshotID`, `path` (the directory backed up) and `incrementalBytes`:
//! the bytes of file content this snapshot added to the repository, after deduplication.

use std::path::PathBuf;
use std::sync::Arc;

use holdfast_api::velero::DataMovePhase;
use holdfast_api::velero::pod_volume::PodVolumeBackup;
use holdfast_repository::Repository;
use holdfast_repository::backup::{BackupOptions, ParentChoice, backup_paths};
use holdfast_repository::progress::{CancelToken, ProgressFn};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt as _;
use kube::api::Api;
use kube::runtime::{Controller, watcher};
use serde_json::{Value, json};

use super::data_path::{self, Agent, Claim, Mover};
use super::repository;
use crate::volume::{EmbeddedVolumes, VolumeResolver as _};
use crate::{Error, reconciler};

/// The snapshot tag naming what a pod-volume snapshot is of (its incremental lineage).
pub const SOURCE_TAG: &str = "velero-source";
/// The snapshot tag naming who asked for it, as Velero's kopia uploader tags it.
pub const REQUESTER_TAG: &str = "snapshot-requester=snapshot-pod-volume";

/// Runs the controller for `agent`.
pub async fn run(agent: Arc<Agent>) -> Result<(), Error> {
    let api: Api<PodVolumeBackup> = Api::all(agent.ctx.client.clone());
    let controller = Controller::new(api, watcher::Config::default());
    reconciler::run("pod-volume-backup", controller, agent, data_path::reconcile::<Backups>).await
}

/// The PodVolumeBackup [`Mover`].
pub struct Backups;

/// What a backup needs.
pub struct Plan {
    repo: Repository,
    dir: PathBuf,
    source: String,
    tags: Vec<String>,
    host: String,
    threads: usize,
}

/// The pod a piece of pod-volume work names, from `spec.pod` (its namespace defaulting to the
/// work's own).
pub(crate) async fn pod_of(
    agent: &Agent,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    own_namespace: &str,
) -> Result<Pod, Error> {
    let ns = reference.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or(own_namespace);
    let name = reference.name.as_deref().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(agent.ctx.client.clone(), ns);
    pods.get_opt(name)
        .await?
        .ok_or_else(|| Error::Invalid(format!("pod {ns}/{name} does not exist")))
}

/// The lineage of a pod volume: `<ns>/<claim>` for a PVC volume (it outlives pods), else
/// `<ns>/<pod>/<volume>`.
pub(crate) fn source_of(pod: &Pod, volume: &str) -> String {
    let ns = pod.namespace().unwrap_or_default();
    let claim = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .and_then(|vs| vs.iter().find(|v| v.name == volume))
        .and_then(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone());
    match claim {
        Some(claim) => format!("{ns}/{claim}"),
        None => format!("{ns}/{}/{volume}", pod.name_any()),
    }
}

impl Mover for Backups {
    type Object = PodVolumeBackup;
    type Plan = Plan;

    fn phase(obj: &PodVolumeBackup) -> Option<DataMovePhase> {
        obj.status.as_ref().and_then(|s| s.phase)
    }

    fn cancel_requested(obj: &PodVolumeBackup) -> bool {
        obj.spec.cancel == Some(true)
    }

    fn accepted_at(obj: &PodVolumeBackup) -> Option<Time> {
        obj.status.as_ref().and_then(|s| s.accepted_timestamp.clone())
    }

    async fn claim(agent: &Agent, obj: &PodVolumeBackup) -> Result<Claim, Error> {
        let what = format!("PodVolumeBackup {}", obj.name_any());
        data_path::claim_for_node(agent, Some(&obj.spec.node), &what).await
    }

    fn accepted_fields(_agent: &Agent) -> Value {
        json!({})
    }

    async fn prepare(agent: &Agent, obj: &PodVolumeBackup) -> Result<Plan, Error> {
        let ctx = &agent.ctx;
        let own_ns = obj.namespace().unwrap_or_default();
        let pod = pod_of(agent, &obj.spec.pod, &own_ns).await?;
        let pod_ns = pod.namespace().unwrap_or_default();
        let dir = EmbeddedVolumes::new(ctx).pod_volume_dir(&pod, &obj.spec.volume).await?;
        if !dir.is_dir() {
            return Err(Error::NotReady(format!(
                "the directory {} of volume {:?} of pod {pod_ns}/{} does not exist yet",
                dir.display(),
                obj.spec.volume,
                pod.name_any()
            )));
        }
        let threads =
            data_path::parallelism(obj.spec.uploader_settings.as_ref(), "ParallelFilesUpload")?;
        let type_ = repository::type_name(None);
        let (repo, bsl) =
            repository::open(ctx, &own_ns, &obj.spec.backup_storage_location, &pod_ns, type_, true)
                .await?
                .map_err(|why| Error::Invalid(why.message().to_owned()))?;
        repository::ensure(ctx, &bsl, &pod_ns, type_).await?;
        let source = source_of(&pod, &obj.spec.volume);
        let mut tags = vec![REQUESTER_TAG.to_owned(), format!("{SOURCE_TAG}={source}")];
        for (k, v) in obj.spec.tags.iter().flatten() {
            tags.push(format!("{k}={v}"));
        }
        Ok(Plan { repo, dir, source, tags, host: agent.node.clone(), threads })
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
        let lineage = format!("{SOURCE_TAG}={}", plan.source);
        let parent = plan
            .repo
            .snapshots()?
            .into_iter()
            .rev()
            .find(|s| s.snapshot.tags.contains(&lineage))
            .map_or(ParentChoice::None, |s| ParentChoice::Snapshot(s.id.to_hex()));
        let opts = BackupOptions {
            tags: plan.tags,
            hostname: Some(plan.host),
            parent,
            progress: Some(progress),
            cancel,
            threads: plan.threads,
            ..BackupOptions::new()
        };
        let result = backup_paths(&plan.repo, std::slice::from_ref(&plan.dir), &opts)?;
        let summary = &result.snapshot.summary;
        let mut note = format!(
            "snapshot {} of {}: {} files, {} bytes, {} bytes new to the repository",
            result.id.short(),
            plan.dir.display(),
            summary.total_files_processed,
            summary.total_bytes_processed,
            summary.data_added
        );
        if !result.warnings.is_empty() {
            note.push_str(&format!(
                "; {} entries could not be read and were left out: {}",
                result.warnings.len(),
                result.warnings.join("; ")
            ));
        }
        let fields = json!({
            "snapshotID": result.id.to_hex(),
            "path": plan.dir.display().to_string(),
            "incrementalBytes": summary.data_added,
        });
        Ok((fields, note))
    }
}
