//! PodVolumeBackup: the node agent backs up one pod volume's directory into the repository of
//! (pod namespace, location, uploader type). Backups of the same volume are incremental: the
//! parent is the newest snapshot of the same source (the claim of a PVC volume, else the pod
//! and volume), so unchanged files are not even read. The snapshot records the source and the
//! work's `spec.tags`.
//!
//! Completed work carries `snapshotID`, `path` (the directory backed up) and `incrementalBytes`:
//! the bytes of file content this snapshot added to the repository, after deduplication.

use std::path::PathBuf;

use holdfast_api::velero::pod_volume::PodVolumeBackup;
use holdfast_repository::Repository;
use holdfast_repository::backup::{BackupOptions, ParentChoice, backup_paths};
use holdfast_repository::progress::{CancelToken, ProgressFn};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::Api;
use serde_json::{Value, json};

use super::data_path::{self, Agent, Claim, Mover};
use super::repository;
use crate::Error;
use crate::volume::VolumeResolver as _;

/// The snapshot tag naming what a pod-volume snapshot is of (its incremental lineage).
pub const SOURCE_TAG: &str = "velero-source";
/// The snapshot tag naming who asked for it, as Velero's kopia uploader tags it.
pub const REQUESTER_TAG: &str = "snapshot-requester=snapshot-pod-volume";

/// The PodVolumeBackup [`Mover`].
pub struct Backups;

/// What a backup of one directory needs.
pub struct Plan {
    pub(crate) repo: Repository,
    pub(crate) dir: PathBuf,
    /// The lineage ([`SOURCE_TAG`]): the parent is the newest snapshot of the same source.
    pub(crate) source: String,
    pub(crate) tags: Vec<String>,
    pub(crate) host: String,
    pub(crate) threads: usize,
}

/// Backs up `plan.dir` incrementally on its lineage. Returns the completed work's status
/// fields, a note for the completion event, and the entries that could not be read (left out
/// of the snapshot). Blocking.
pub(crate) fn back_up(
    plan: &Plan,
    cancel: CancelToken,
    progress: ProgressFn,
) -> Result<(Value, String, Vec<String>), holdfast_repository::Error> {
    let lineage = format!("{SOURCE_TAG}={}", plan.source);
    let parent = plan
        .repo
        .snapshots()?
        .into_iter()
        .rev()
        .find(|s| s.snapshot.tags.contains(&lineage))
        .map_or(ParentChoice::None, |s| ParentChoice::Snapshot(s.id.to_hex()));
    let opts = BackupOptions {
        tags: plan.tags.clone(),
        hostname: Some(plan.host.clone()),
        parent,
        progress: Some(progress),
        cancel,
        threads: plan.threads,
        ..BackupOptions::new()
    };
    let result = backup_paths(&plan.repo, std::slice::from_ref(&plan.dir), &opts)?;
    let summary = &result.snapshot.summary;
    let note = format!(
        "snapshot {} of {}: {} files, {} bytes, {} bytes new to the repository",
        result.id.short(),
        plan.dir.display(),
        summary.total_files_processed,
        summary.total_bytes_processed,
        summary.data_added
    );
    let fields = json!({
        "snapshotID": result.id.to_hex(),
        "path": plan.dir.display().to_string(),
        "incrementalBytes": summary.data_added,
    });
    Ok((fields, note, result.warnings))
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
    const FINALIZER: &'static str = data_path::POD_VOLUME_FINALIZER;

    data_path::velero_fields!(PodVolumeBackup);

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
        let dir = crate::volume::for_context(ctx).pod_volume_dir(&pod, &obj.spec.volume).await?;
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
        let (fields, mut note, warnings) = back_up(&plan, cancel, progress)?;
        if !warnings.is_empty() {
            note.push_str(&format!(
                "; {} entries could not be read and were left out: {}",
                warnings.len(),
                warnings.join("; ")
            ));
        }
        Ok((fields, note))
    }
}
