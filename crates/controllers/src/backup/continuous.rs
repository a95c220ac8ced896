//! Continuous backups: the backupData action of a `Continuous` ActionSet is a worker that runs
//! for as long as its BackupSchedule entry is enabled (a WAL archiver, a binlog shipper).
//!
//! - **Worker.** One Job, restarted without limit when it stops (upstream runs a one-replica
//!   StatefulSet, whose pod restarts forever; this executor runs Jobs, and a Job with an
//!   unbounded `backoffLimit` behaves the same). A worker that exits 0 has nothing more to do in
//!   that run; its Job is replaced by a new one.
//! - **Progress.** The script rewrites `$DP_BACKUP_INFO_FILE` as it archives. Every
//!   `syncProgress.intervalSeconds` (5 when unset, as upstream's code) the controller reads the
//!   file the running pod wrote and, when it changed, copies `totalSize`, `timeRange` and
//!   `extras` into the action and the Backup's status, so `timeRange.end` grows as data arrives.
//!   Upstream's `manager` sidecar does this with `kubectl patch` from inside the pod; here the
//!   file is read where the executor keeps the pod's `emptyDir` (the volume resolver's answer).
//! - **End.** When the schedule is gone or its entry for this method is disabled, the worker's
//!   Job is deleted (its process stopped), the last progress kept, every action marked Completed
//!   with `availableReplicas: 0`, and the Backup Completed. The schedule controller puts it back
//!   to Running if the entry is enabled again; the worker then starts anew.

use std::path::Path;
use std::time::Duration;

use holdfast_api::kubeblocks::Backup;
use holdfast_api::kubeblocks::backup::{ActionPhase, ActionStatus, ActionType};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use serde_json::json;

use super::job::{self, MANAGER_VOLUME, PlannedAction};
use super::request::Request;
use super::status::{self, BackupInfo};
use super::{complete, delete_jobs, fail, patch_status};
use crate::events::{self, EventType};
use crate::{Context, Error, volume};

/// Upstream's code default for `syncProgress.intervalSeconds` (the CRD's is 60).
const DEFAULT_SYNC_SECONDS: u64 = 5;
/// How soon a replaced or starting worker is looked at again.
const SHORT_REQUEUE: Duration = Duration::from_secs(1);

/// Advances the continuous backupData action `actions[i]`.
pub async fn step(
    ctx: &Context,
    backup: &Backup,
    req: &Request,
    planned: &PlannedAction,
    mut actions: Vec<ActionStatus>,
    i: usize,
) -> Result<Action, Error> {
    let Some(job_name) = planned.job_name(backup) else {
        return fail(ctx, backup, format!("{} runs no Job", planned.describe())).await;
    };
    let ns = backup.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = jobs.get_opt(&job_name).await?;

    if !req.continuous.as_ref().is_some_and(|c| c.enabled) {
        let mut extras = None;
        if let Some(job) = &existing
            && let Some(info) = running_progress(ctx, &ns, job).await?
        {
            extras = record(&mut actions[i], info);
        }
        // Stopped before it is marked done: a worker left running would archive into a backup
        // that says it is finished.
        if delete_jobs(ctx, backup, |j| j.name_any() == job_name).await? > 0 {
            patch_status(ctx, backup, json!({"actions": actions})).await?;
            return Ok(Action::requeue(SHORT_REQUEUE));
        }
        let now = Time(ctx.clock.now());
        for action in &mut actions {
            action.phase = Some(ActionPhase::Completed);
            action.completion_timestamp = Some(now.clone());
        }
        actions[i].available_replicas = Some(0);
        let extras = extras_after(backup, extras);
        let backup =
            patch_status(ctx, backup, json!({"actions": actions, "extras": extras})).await?;
        events::publish(
            ctx,
            &backup,
            EventType::Normal,
            "ContinuousBackupStopped",
            "Backup",
            "the schedule's entry for this method is disabled (or the schedule is gone)",
        )
        .await;
        return complete(ctx, &backup, &actions).await;
    }

    let Some(existing) = existing else {
        let job = match job::build_action_job(ctx, req, planned) {
            Ok(job) => job,
            Err(reason) => return fail(ctx, backup, reason).await,
        };
        crate::executor::create_job(ctx, &jobs, &job).await?;
        let action = &mut actions[i];
        action.phase = Some(ActionPhase::Running);
        action.start_timestamp.get_or_insert_with(|| Time(ctx.clock.now()));
        action.completion_timestamp = None;
        action.action_type = Some(ActionType::Job);
        action.available_replicas = Some(0);
        action.object_ref = Some(job::object_ref(&job));
        patch_status(ctx, backup, json!({"actions": actions})).await?;
        return Ok(Action::requeue(SHORT_REQUEUE));
    };
    if existing.metadata.deletion_timestamp.is_some() {
        // A finished worker's Job on its way out; its successor starts once it is gone.
        return Ok(Action::requeue(SHORT_REQUEUE));
    }

    let before = actions[i].clone();
    match job::state(&existing) {
        job::JobState::Running => {
            let running = running_pod(ctx, &ns, &existing).await?;
            actions[i].available_replicas = Some(i32::from(running.is_some()));
            let mut reported = None;
            if let Some(info) = running.as_ref().and_then(|p| read_progress(ctx, &ns, p)) {
                reported = record(&mut actions[i], info);
            }
            actions[i].phase = Some(ActionPhase::Running);
            actions[i].object_ref = Some(job::object_ref(&existing));
            let old_extras = backup.status.as_ref().and_then(|s| s.extras.clone());
            let extras = extras_after(backup, reported);
            if actions[i] != before || extras != old_extras {
                let (total_size, time_range) = status::totals(&actions);
                let patch = json!({
                    "actions": actions,
                    "totalSize": total_size,
                    "timeRange": time_range,
                    "extras": extras,
                });
                patch_status(ctx, backup, patch).await?;
            }
            Ok(Action::requeue(sync_interval(req)))
        }
        job::JobState::Complete => {
            // The worker ended on its own while still wanted: keep what it reported, start a
            // new one.
            let text = job::termination_message(ctx, &ns, &job_name).await?;
            let mut reported = None;
            if let Ok(info) = BackupInfo::parse(text.as_deref()) {
                reported = record(&mut actions[i], info);
            }
            actions[i].available_replicas = Some(0);
            let (total_size, time_range) = status::totals(&actions);
            let patch = json!({
                "actions": actions,
                "totalSize": total_size,
                "timeRange": time_range,
                "extras": extras_after(backup, reported),
            });
            patch_status(ctx, backup, patch).await?;
            delete_jobs(ctx, backup, |j| j.name_any() == job_name).await?;
            tracing::info!(backup = %backup.name_any(), job = %job_name, "continuous worker exited; starting a new one");
            Ok(Action::requeue(SHORT_REQUEUE))
        }
        job::JobState::Failed(message) => {
            let reason = format!("{} (Job {job_name}) failed: {message}", planned.describe());
            let action = &mut actions[i];
            action.phase = Some(ActionPhase::Failed);
            action.failure_reason = Some(reason.clone());
            action.completion_timestamp = Some(Time(ctx.clock.now()));
            action.available_replicas = Some(0);
            patch_status(ctx, backup, json!({"actions": actions})).await?;
            fail(ctx, backup, reason).await
        }
    }
}

fn sync_interval(req: &Request) -> Duration {
    let seconds = req
        .actions
        .as_ref()
        .and_then(|a| a.backup_data.sync_progress.as_ref())
        .and_then(|s| s.interval_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .unwrap_or(DEFAULT_SYNC_SECONDS);
    Duration::from_secs(seconds)
}

/// The worker's newest Running pod.
async fn running_pod(ctx: &Context, ns: &str, job: &Job) -> Result<Option<Pod>, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let selector = format!("job-name={}", job.name_any());
    let mut list = pods.list(&ListParams::default().labels(&selector)).await?.items;
    list.retain(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
    list.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    Ok(list.pop())
}

/// What the running worker last reported, if anything readable.
async fn running_progress(ctx: &Context, ns: &str, job: &Job) -> Result<Option<BackupInfo>, Error> {
    Ok(running_pod(ctx, ns, job).await?.and_then(|p| read_progress(ctx, ns, &p)))
}

/// Reads `backup.info` from the pod's manager volume. A file caught while the script rewrites it
/// (upstream's scripts truncate, then write) does not parse and is read again next time.
fn read_progress(ctx: &Context, ns: &str, pod: &Pod) -> Option<BackupInfo> {
    let file_name = Path::new(super::env::BACKUP_INFO_FILE).file_name()?;
    let dir = volume::empty_dir_path(ctx, ns, &pod.name_any(), MANAGER_VOLUME);
    let text = std::fs::read_to_string(dir.join(file_name)).ok()?;
    match BackupInfo::parse(Some(&text)) {
        Ok(info) if info != BackupInfo::default() => Some(info),
        Ok(_) => None,
        Err(reason) => {
            tracing::debug!(pod = %pod.name_any(), %reason, "backup.info not readable yet");
            None
        }
    }
}

/// Puts a report on the action; returns its extras, which replace the Backup's (the script
/// rewrites the whole file each time, so appending would repeat them).
fn record(action: &mut ActionStatus, info: BackupInfo) -> Option<Vec<String>> {
    let extras = info.apply_to_action(action);
    (!extras.is_empty()).then_some(extras)
}

/// The Backup's extras after a report.
fn extras_after(backup: &Backup, reported: Option<Vec<String>>) -> Option<Vec<String>> {
    reported.or_else(|| backup.status.as_ref().and_then(|s| s.extras.clone()))
}
