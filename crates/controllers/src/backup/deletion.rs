//! Deleting a Backup as KubeBlocks does, in order: `Deleting` phase; backups chained to this one
//! are deleted too; the worker Jobs go; then per `deletionPolicy`:
//!
//! - **Retain**: the data stays in the repo (and its VolumeSnapshots stay) and the finalizer is
//!   removed. (Upstream leaves such a Backup stuck in Deleting forever; here it goes and only the
//!   data is kept.)
//! - **Delete**: the backup's VolumeSnapshots are deleted (their contents and stored snapshots go
//!   by their class's deletionPolicy); a snapshot-only backup has nothing in the repo, so that is
//!   all. Otherwise the ActionSet's preDelete Job per target pod (if any), then a Job running
//!   `datasafed rm -r <status.path>` with the repo's tool config; the finalizer goes when it
//!   succeeds. A failure is recorded in `status.failureReason` (this API version has no
//!   `deletionFailureReason`) and the finalizer stays; deleting the failed Job retries.
//!
//! Nothing to delete (no repo recorded, the BackupRepo gone) removes the finalizer at once.

use std::time::Duration;

use holdfast_api::kubeblocks::backup::{BackupDeletionPolicy, BackupPhase};
use holdfast_api::kubeblocks::{Backup, BackupRepo};
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::controller::Action;
use serde_json::json;

use super::job::{self, JobState};
use super::request::{self, Stage};
use super::volume_snapshot;
use super::{
    ANNOTATION_BASE, ANNOTATION_PARENT, FINALIZER, annotation, backup_api, delete_jobs,
    patch_status, phase, target_pods,
};
use crate::events::{self, EventType};
use crate::{Context, Error, finalizer, object};

/// Backoff of the delete Job (upstream's policy default; the policy may be gone by now).
const DELETE_BACKOFF_LIMIT: i32 = 2;

/// Drives a Backup with a deletionTimestamp towards having no finalizer.
pub async fn handle(ctx: &Context, backup: &Backup) -> Result<Action, Error> {
    if !finalizer::has(backup, FINALIZER) {
        return Ok(Action::await_change());
    }
    if phase(backup) != Some(BackupPhase::Deleting) {
        patch_status(ctx, backup, json!({"phase": BackupPhase::Deleting})).await?;
    }
    cascade(ctx, backup).await?;
    let left = delete_jobs(ctx, backup, |j| !is_deletion_job(j)).await?;
    if left > 0 {
        // The worker Pods must be gone before the data goes.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let st = backup.status.clone().unwrap_or_default();
    let repo_name = st.backup_repo_name.clone().filter(|r| !r.is_empty());
    let where_ = format!(
        "{}:{}",
        repo_name.as_deref().unwrap_or("(no repo)"),
        st.path.as_deref().unwrap_or("(no path)")
    );
    if backup.spec.deletion_policy == BackupDeletionPolicy::Retain {
        let note = format!("deletionPolicy is Retain: the backup data is kept at {where_}");
        events::publish(ctx, backup, EventType::Normal, "DataRetained", "Delete", &note).await;
        return remove_finalizer(ctx, backup).await;
    }
    let snapshots = volume_snapshot::delete_all(ctx, backup).await?;
    if !snapshots.is_empty() {
        let note = format!("deleted the VolumeSnapshots {}", snapshots.join(", "));
        events::publish(ctx, backup, EventType::Normal, "SnapshotsDeleted", "Delete", &note).await;
    }
    if volume_snapshot::snapshot_only(backup) {
        return remove_finalizer(ctx, backup).await;
    }
    let Some(repo_name) = repo_name else {
        // The backup never got as far as choosing a repo, so it wrote nothing.
        return remove_finalizer(ctx, backup).await;
    };
    let repos: Api<BackupRepo> = Api::all(ctx.client.clone());
    let Some(repo) = repos.get_opt(&repo_name).await? else {
        let note = format!(
            "backuprepo {repo_name} no longer exists, so the data at {where_} cannot be deleted \
             from here"
        );
        tracing::warn!(backup = %backup.name_any(), "{note}");
        events::publish(ctx, backup, EventType::Warning, "RepoGone", "Delete", &note).await;
        return remove_finalizer(ctx, backup).await;
    };
    let path = st.path.clone().unwrap_or_default();
    let name = backup.name_any();
    if path.trim_matches('/').is_empty() || !path.contains(&name) {
        let reason = format!(
            "refusing to delete the data of backup {name}: status.path {path:?} is empty or does \
             not contain the backup name; set deletionPolicy Retain to remove the Backup and \
             keep whatever is there"
        );
        return deletion_failed(ctx, backup, reason).await;
    }
    let ns = backup.namespace().unwrap_or_default();
    let access = match request::repo_access(ctx, &repo, &ns).await {
        Ok(access) => access,
        Err(error @ Error::Kube(_)) => return Err(error),
        Err(reason) => {
            let reason = format!(
                "cannot delete the backup data at {where_} yet: {reason}; fix the BackupRepo or \
                 set deletionPolicy Retain"
            );
            deletion_failed(ctx, backup, reason).await?;
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    };
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);

    if let Some(action) = pre_delete(ctx, backup, &jobs).await? {
        return Ok(action);
    }

    let delete_job = job::build_delete_job(ctx, backup, &access, &path, DELETE_BACKOFF_LIMIT);
    let job_name = delete_job.name_any();
    let Some(existing) = jobs.get_opt(&job_name).await? else {
        crate::executor::create_job(ctx, &jobs, &delete_job).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    };
    match job::state(&existing) {
        JobState::Running => Ok(Action::requeue(Duration::from_secs(60))),
        JobState::Failed(message) => {
            let reason = format!(
                "deleting the backup data at {where_} failed (Job {job_name}): {message}; fix the \
                 cause and delete Job {job_name} to retry, or set deletionPolicy Retain"
            );
            deletion_failed(ctx, backup, reason).await
        }
        JobState::Complete => {
            let note = format!("deleted the backup data at {where_}");
            events::publish(ctx, backup, EventType::Normal, "DataDeleted", "Delete", &note).await;
            remove_finalizer(ctx, backup).await
        }
    }
}

/// Runs the ActionSet's preDelete Job for each target pod, one after another. `Some(action)`
/// while one is not done (or failed).
async fn pre_delete(
    ctx: &Context,
    backup: &Backup,
    jobs: &Api<Job>,
) -> Result<Option<Action>, Error> {
    let req = match request::resolve(ctx, backup, Stage::Running).await {
        Ok(req) => req,
        Err(error @ Error::Kube(_)) => return Err(error),
        Err(reason) => {
            // Without the policy or ActionSet there is no preDelete to run; the data still goes.
            tracing::info!(backup = %backup.name_any(), %reason, "no preDelete action");
            return Ok(None);
        }
    };
    let Some(spec) = req.actions.as_ref().and_then(|a| a.pre_delete.clone()) else {
        return Ok(None);
    };
    for (index, pod_name) in target_pods(backup).iter().enumerate() {
        let job = job::build_pre_delete_job(ctx, &req, index, pod_name, &spec);
        let job_name = job.name_any();
        let Some(existing) = jobs.get_opt(&job_name).await? else {
            crate::executor::create_job(ctx, jobs, &job).await?;
            return Ok(Some(Action::requeue(Duration::from_secs(60))));
        };
        match job::state(&existing) {
            JobState::Complete => continue,
            JobState::Running => return Ok(Some(Action::requeue(Duration::from_secs(60)))),
            JobState::Failed(message) => {
                let reason = format!(
                    "preDelete for pod {pod_name} failed (Job {job_name}): {message}; fix the \
                     cause and delete Job {job_name} to retry, or set deletionPolicy Retain"
                );
                return deletion_failed(ctx, backup, reason).await.map(Some);
            }
        }
    }
    Ok(None)
}

/// Deletes the backups that build on this one (children name it as parent or base).
async fn cascade(ctx: &Context, backup: &Backup) -> Result<(), Error> {
    let api = backup_api(ctx, backup);
    let name = backup.name_any();
    for other in api.list(&ListParams::default()).await?.items {
        if other.name_any() == name || other.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let child = annotation(&other, ANNOTATION_PARENT) == Some(name.as_str())
            || annotation(&other, ANNOTATION_BASE) == Some(name.as_str())
            || other.spec.parent_backup_name.as_deref() == Some(name.as_str());
        if child {
            tracing::info!(backup = %name, child = %other.name_any(), "deleting a chained backup");
            object::delete_if_exists(&api, &other.name_any(), &DeleteParams::default()).await?;
        }
    }
    Ok(())
}

/// The preDelete and delete Jobs (kept until the end: a Completed one is not run again).
fn is_deletion_job(job: &Job) -> bool {
    let name = job.name_any();
    name.starts_with("dp-delete-") || name.starts_with("dp-predelete-")
}

/// Records why the data could not be deleted; the finalizer stays.
async fn deletion_failed(ctx: &Context, backup: &Backup, reason: String) -> Result<Action, Error> {
    let current = backup.status.as_ref().and_then(|s| s.failure_reason.as_deref());
    if current != Some(reason.as_str()) {
        patch_status(ctx, backup, json!({"failureReason": reason})).await?;
        events::publish(ctx, backup, EventType::Warning, "DeleteFailed", "Delete", &reason).await;
    }
    Ok(Action::await_change())
}

/// Removes every remaining Job of the backup (there is no garbage collector of dependents), then
/// the finalizer, which lets the API server delete the Backup.
async fn remove_finalizer(ctx: &Context, backup: &Backup) -> Result<Action, Error> {
    delete_jobs(ctx, backup, |_| true).await?;
    finalizer::remove(&backup_api(ctx, backup), backup, FINALIZER).await?;
    // The backup is gone (or going): its repo holds that much less.
    if let Some(repo) = backup.status.as_ref().and_then(|s| s.backup_repo_name.as_deref()) {
        crate::metrics::refresh_repo_size(ctx, repo).await;
    }
    Ok(Action::await_change())
}
