//! The Backup controller (KubeBlocks' Backup semantics; docs/architecture.md has the flow).
//!
//! A Backup moves `New → Running → Completed | Failed`, and `Deleting` once it is deleted. Every
//! decision is derived from API objects (the Backup's status and annotations, its Jobs and their
//! Pods), so a restarted controller resumes where the previous one stopped:
//!
//! - **New**: the request is resolved (policy → method → ActionSet → repo → target pods, and the
//!   parent of an incremental backup); labels, the finalizer and the chosen target pods are written
//!   to the metadata, then `status` gets the path, the repo, the planned actions and `Running`.
//! - **Running**: the actions run one after another (preBackup hooks, backupData,
//!   createVolumeSnapshot, postBackup hooks, per target pod), each as a `batch/v1` Job except the
//!   snapshot action, which creates VolumeSnapshots ([`volume_snapshot`]). A Job's outcome moves its
//!   action to Completed or Failed; the backupData container's termination message is the
//!   `backup.info` JSON the script wrote.
//! - **Continuous** (a `Continuous` ActionSet, created by a BackupSchedule): backupData is a
//!   worker that runs while the schedule's entry is enabled, its progress synced into
//!   `timeRange`/`totalSize` as it goes ([`continuous`]).
//! - **Completed**: the expiration follows `retentionPeriod`; the worker Jobs (and their logs)
//!   stay until their `ttlSecondsAfterFinished` or the Backup's deletion removes them.
//! - **Deleting**: see [`deletion`].

pub mod chain;
pub mod continuous;
pub mod deletion;
pub mod env;
pub mod job;
pub mod request;
pub mod status;
pub mod volume_snapshot;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use holdfast_api::kubeblocks::Backup;
use holdfast_api::kubeblocks::backup::{ActionPhase, ActionStatus, ActionType, BackupPhase};
use holdfast_api::snapshot::VolumeSnapshot;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::events::{self, EventType};
use crate::{Context, Error, finalizer, metrics, object, owner, reconciler};

use request::Request;

/// Keeps a Backup until its data has been dealt with according to its deletionPolicy.
pub const FINALIZER: &str = finalizer::DATA_PROTECTION;
/// The BackupRepo holding a backup's data.
pub const LABEL_BACKUP_REPO: &str = "dataprotection.kubeblocks.io/backup-repo-name";
/// The BackupPolicy a backup followed.
pub const LABEL_BACKUP_POLICY: &str = "dataprotection.kubeblocks.io/backup-policy";
/// Full, Incremental, Differential or Continuous (the ActionSet's backupType).
pub const LABEL_BACKUP_TYPE: &str = "dataprotection.kubeblocks.io/backup-type";
/// The BackupSchedule that created a backup.
pub const LABEL_BACKUP_SCHEDULE: &str = "dataprotection.kubeblocks.io/backup-schedule";
/// `true` on backups a schedule created.
pub const LABEL_AUTOBACKUP: &str = "dataprotection.kubeblocks.io/autobackup";
/// On worker Jobs: the Backup they work for (truncated to a label value's 63 characters).
pub const LABEL_BACKUP_NAME: &str = "dataprotection.kubeblocks.io/backup-name";
/// On worker Jobs, with [`MANAGED_BY`].
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`LABEL_MANAGED_BY`] on worker Jobs (as upstream, so tools find them).
pub const MANAGED_BY: &str = "kubeblocks-dataprotection";
/// Set while a backup waits for its BackupRepo to become Ready.
pub const LABEL_WAIT_REPO: &str = "dataprotection.kubeblocks.io/wait-repo-preparation";
/// `true` makes the controller ignore a Backup.
pub const ANNOTATION_SKIP: &str = "dataprotection.kubeblocks.io/skip-reconciliation";
/// The target pods chosen when the backup started, comma-separated, in action order. The status
/// schema of this API version has no `targetPodName`, and the choice must survive a restart.
pub const ANNOTATION_TARGET_PODS: &str = "dataprotection.kubeblocks.io/target-pods";
/// The parent of an incremental or differential backup (also when picked automatically).
/// `status.parentBackupName` does not exist in this API version, and `spec.parentBackupName` is
/// immutable, so the resolved parent is recorded here.
pub const ANNOTATION_PARENT: &str = "dataprotection.kubeblocks.io/parent-backup-name";
/// The Full backup at the root of an incremental or differential chain.
pub const ANNOTATION_BASE: &str = "dataprotection.kubeblocks.io/base-backup-name";
/// `status.formatVersion` of the backups this controller writes (upstream's value).
pub const FORMAT_VERSION: &str = "0.1.0";

/// How often a backup that waits for something outside the API watch (a repo turning Ready) looks
/// again.
const WAIT_REQUEUE: Duration = Duration::from_secs(3);
/// The safety requeue of a backup waiting for its VolumeSnapshots (their changes are watched).
const SNAPSHOT_REQUEUE: Duration = Duration::from_secs(5);

/// Runs the Backup controller until its watch ends.
pub async fn run(ctx: Arc<Context>) -> Result<(), Error> {
    let backups: Api<Backup> = Api::all(ctx.client.clone());
    let jobs: Api<Job> = Api::all(ctx.client.clone());
    let snapshots: Api<VolumeSnapshot> = Api::all(ctx.client.clone());
    let managed = format!("{LABEL_MANAGED_BY}={MANAGED_BY}");
    let controller = Controller::new(backups, watcher::Config::default())
        .owns(jobs, watcher::Config::default().labels(&managed))
        .owns(snapshots, watcher::Config::default().labels(&managed));
    reconciler::run("backup", controller, ctx, reconcile).await
}

async fn reconcile(obj: Arc<Backup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &ns);
    // The cached object may predate this controller's own last status patch; decisions are made
    // on the current one.
    let Some(backup) = api.get_opt(&obj.name_any()).await? else {
        return Ok(Action::await_change());
    };
    if annotation(&backup, ANNOTATION_SKIP) == Some("true") {
        return Ok(Action::await_change());
    }
    if backup.metadata.deletion_timestamp.is_some() {
        return deletion::handle(&ctx, &backup).await;
    }
    match phase(&backup) {
        None | Some(BackupPhase::New) => handle_new(&ctx, backup).await,
        Some(BackupPhase::Running) => handle_running(&ctx, backup).await,
        Some(BackupPhase::Completed) => handle_completed(&ctx, &backup).await,
        Some(BackupPhase::Failed | BackupPhase::Deleting) => Ok(Action::await_change()),
    }
}

/// The Backup's phase.
pub fn phase(backup: &Backup) -> Option<BackupPhase> {
    backup.status.as_ref().and_then(|s| s.phase)
}

/// One annotation of an object.
pub(crate) fn annotation<'a, K: Resource>(obj: &'a K, key: &str) -> Option<&'a str> {
    obj.meta().annotations.as_ref()?.get(key).map(String::as_str)
}

/// One label of an object.
pub(crate) fn label<'a, K: Resource>(obj: &'a K, key: &str) -> Option<&'a str> {
    obj.meta().labels.as_ref()?.get(key).map(String::as_str)
}

/// The target pods recorded when the backup started.
pub fn target_pods(backup: &Backup) -> Vec<String> {
    annotation(backup, ANNOTATION_TARGET_PODS)
        .map(|v| v.split(',').filter(|p| !p.is_empty()).map(str::to_string).collect())
        .unwrap_or_default()
}

/// Resolves the request and starts the backup: metadata first (finalizer before any data can be
/// written), then the status that moves it to Running.
async fn handle_new(ctx: &Context, backup: Backup) -> Result<Action, Error> {
    let req = match request::resolve(ctx, &backup, request::Stage::New).await {
        Ok(req) => req,
        Err(error) => return blocked(ctx, &backup, error).await,
    };
    let api = backup_api(ctx, &backup);
    let name = backup.name_any();

    let mut labels = BTreeMap::new();
    labels.insert(LABEL_BACKUP_REPO.to_string(), Value::from(req.repo.name_any()));
    labels.insert(LABEL_BACKUP_POLICY.to_string(), Value::from(req.policy.name_any()));
    labels.insert(LABEL_BACKUP_TYPE.to_string(), Value::from(format!("{:?}", req.backup_type)));
    labels.insert(LABEL_WAIT_REPO.to_string(), Value::Null);
    let mut annotations = BTreeMap::new();
    let pods: Vec<String> = req.pods.iter().map(|p| p.name_any()).collect();
    annotations.insert(ANNOTATION_TARGET_PODS.to_string(), Value::from(pods.join(",")));
    if let Some(chain) = &req.chain {
        annotations.insert(ANNOTATION_PARENT.to_string(), Value::from(chain.parent.clone()));
        annotations.insert(ANNOTATION_BASE.to_string(), Value::from(chain.base.clone()));
    }
    let meta = json!({"metadata": {
        "labels": labels,
        "annotations": annotations,
        "finalizers": finalizer::added(&backup, FINALIZER),
        "resourceVersion": backup.resource_version(),
    }});
    let backup = api.patch(&name, &PatchParams::default(), &Patch::Merge(&meta)).await?;

    let now = ctx.clock.now();
    let actions: Vec<ActionStatus> = job::plan(&req)
        .iter()
        .map(|a| ActionStatus {
            name: a.name.clone(),
            phase: Some(ActionPhase::New),
            action_type: Some(a.action_type()),
            ..ActionStatus::default()
        })
        .collect();
    let expiration = status::expiration(now, &backup);
    let patch = json!({
        "formatVersion": FORMAT_VERSION,
        "phase": BackupPhase::Running,
        "path": req.backup_path(),
        "backupRepoName": req.repo.name_any(),
        "target": req.target,
        "backupMethod": req.method,
        "actions": actions,
        "startTimestamp": Time(now),
        "expiration": expiration.map(Time),
        "failureReason": Value::Null,
    });
    let backup = patch_status(ctx, &backup, patch).await?;
    ctx.metrics.backup_attempted(&backup);
    events::publish(
        ctx,
        &backup,
        EventType::Normal,
        "BackupStarted",
        "Backup",
        &format!(
            "backing up {} with method {} to {}:{}",
            pods.join(", "),
            req.method.name,
            req.repo.name_any(),
            req.backup_path()
        ),
    )
    .await;
    handle_running(ctx, backup).await
}

/// What to do when the request cannot be resolved (yet): an invalid one fails the backup, one
/// waiting for something marks it waiting, and any other error is the reconcile's.
async fn blocked(ctx: &Context, backup: &Backup, error: Error) -> Result<Action, Error> {
    match error {
        Error::Invalid(reason) => fail(ctx, backup, reason).await,
        Error::NotReady(reason) => {
            // The label is the visible "waiting" state (this status has no conditions); the event
            // says for what, once.
            if label(backup, LABEL_WAIT_REPO) != Some("true") {
                let patch = json!({"metadata": {"labels": {LABEL_WAIT_REPO: "true"}}});
                backup_api(ctx, backup)
                    .patch(&backup.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                events::publish(ctx, backup, EventType::Normal, "Waiting", "Backup", &reason).await;
            }
            tracing::debug!(backup = %backup.name_any(), %reason, "backup waits");
            Ok(Action::requeue(WAIT_REQUEUE))
        }
        other => Err(other),
    }
}

/// Runs the planned actions in order; each call advances as far as the Jobs allow.
async fn handle_running(ctx: &Context, backup: Backup) -> Result<Action, Error> {
    let req = match request::resolve(ctx, &backup, request::Stage::Running).await {
        Ok(req) => req,
        Err(error) => return blocked(ctx, &backup, error).await,
    };
    let plan = job::plan(&req);
    let ns = backup.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let mut st = backup.status.clone().unwrap_or_default();
    let mut actions = st.actions.clone().unwrap_or_default();

    for i in 0..actions.len() {
        // A continuous worker is never done while the backup runs (a Completed one was stopped
        // by a disabled schedule entry, and the entry is enabled again).
        if req.continuous.is_some()
            && let Some(planned) = plan
                .iter()
                .find(|p| p.name == actions[i].name && p.kind == job::ActionKind::BackupData)
        {
            return continuous::step(ctx, &backup, &req, planned, actions, i).await;
        }
        match actions[i].phase {
            Some(ActionPhase::Completed) => continue,
            Some(ActionPhase::Failed) => {
                let reason = actions[i].failure_reason.clone().unwrap_or_default();
                return fail(ctx, &backup, format!("action {} failed: {reason}", actions[i].name))
                    .await;
            }
            _ => {}
        }
        let Some(planned) = plan.iter().find(|p| p.name == actions[i].name) else {
            let reason = format!(
                "action {} is no longer part of the backup: the ActionSet or the BackupPolicy \
                 changed while the backup ran; create a new Backup",
                actions[i].name
            );
            return fail(ctx, &backup, reason).await;
        };
        let Some(job_name) = planned.job_name(&backup) else {
            // The snapshot action: its VolumeSnapshots, not a Job, say where it is.
            let action = &mut actions[i];
            action.start_timestamp.get_or_insert_with(|| Time(ctx.clock.now()));
            action.action_type = Some(ActionType::None);
            match volume_snapshot::step(ctx, &req, planned).await? {
                volume_snapshot::Progress::Waiting(_) => {
                    if action.phase != Some(ActionPhase::Running) {
                        action.phase = Some(ActionPhase::Running);
                        patch_status(ctx, &backup, json!({"actions": actions})).await?;
                    }
                    return Ok(Action::requeue(SNAPSHOT_REQUEUE));
                }
                volume_snapshot::Progress::Ready { snapshots, total_size } => {
                    action.phase = Some(ActionPhase::Completed);
                    action.completion_timestamp = Some(Time(ctx.clock.now()));
                    action.volume_snapshots = Some(snapshots);
                    action.total_size = total_size;
                    patch_status(ctx, &backup, json!({"actions": actions})).await?;
                    continue;
                }
                volume_snapshot::Progress::Failed(message) => {
                    let reason = format!("{}: {message}", planned.describe());
                    action.phase = Some(ActionPhase::Failed);
                    action.failure_reason = Some(reason.clone());
                    action.completion_timestamp = Some(Time(ctx.clock.now()));
                    patch_status(ctx, &backup, json!({"actions": actions})).await?;
                    return fail(ctx, &backup, reason).await;
                }
            }
        };
        let Some(existing) = jobs.get_opt(&job_name).await? else {
            let job = match job::build_action_job(ctx, &req, planned) {
                Ok(job) => job,
                Err(reason) => return fail(ctx, &backup, reason).await,
            };
            crate::executor::create_job(ctx, &jobs, &job).await?;
            let action = &mut actions[i];
            action.phase = Some(ActionPhase::Running);
            action.start_timestamp = Some(Time(ctx.clock.now()));
            action.action_type = Some(ActionType::Job);
            action.object_ref = Some(job::object_ref(&job));
            patch_status(ctx, &backup, json!({"actions": actions})).await?;
            // The Job's status changes wake this controller up (it owns the Job).
            return Ok(Action::requeue(Duration::from_secs(60)));
        };
        match job::state(&existing) {
            job::JobState::Running => {
                if actions[i].phase != Some(ActionPhase::Running) {
                    actions[i].phase = Some(ActionPhase::Running);
                    actions[i].object_ref = Some(job::object_ref(&existing));
                    if actions[i].start_timestamp.is_none() {
                        actions[i].start_timestamp = Some(Time(ctx.clock.now()));
                    }
                    patch_status(ctx, &backup, json!({"actions": actions})).await?;
                }
                return Ok(Action::requeue(Duration::from_secs(60)));
            }
            job::JobState::Failed(message) => {
                let action = &mut actions[i];
                let reason = format!("{} (Job {job_name}) failed: {message}", planned.describe());
                action.phase = Some(ActionPhase::Failed);
                action.failure_reason = Some(reason.clone());
                action.completion_timestamp = Some(Time(ctx.clock.now()));
                action.object_ref = Some(job::object_ref(&existing));
                patch_status(ctx, &backup, json!({"actions": actions})).await?;
                return fail(ctx, &backup, reason).await;
            }
            job::JobState::Complete => {
                if planned.kind == job::ActionKind::BackupData {
                    let text = job::termination_message(ctx, &ns, &job_name).await?;
                    match status::BackupInfo::parse(text.as_deref()) {
                        Ok(info) => info.apply(&mut actions[i], &mut st),
                        Err(reason) => return fail(ctx, &backup, reason).await,
                    }
                }
                let action = &mut actions[i];
                action.phase = Some(ActionPhase::Completed);
                action.completion_timestamp = Some(Time(ctx.clock.now()));
                action.object_ref = Some(job::object_ref(&existing));
                patch_status(ctx, &backup, json!({"actions": actions, "extras": st.extras}))
                    .await?;
            }
        }
    }
    complete(ctx, &backup, &actions).await
}

/// Every action is done: Completed with the totals, duration and expiration.
async fn complete(
    ctx: &Context,
    backup: &Backup,
    actions: &[ActionStatus],
) -> Result<Action, Error> {
    let now = ctx.clock.now();
    let st = backup.status.clone().unwrap_or_default();
    let start = st
        .start_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| backup.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    let (total_size, time_range) = status::totals(actions);
    let mut done = backup.clone();
    done.status.get_or_insert_default().completion_timestamp = Some(Time(now));
    done.status.get_or_insert_default().phase = Some(BackupPhase::Completed);
    let expiration = status::expiration(now, &done);
    let duration = status::status_duration(now.duration_since(start).unsigned_abs());
    let patch = json!({
        "phase": BackupPhase::Completed,
        "completionTimestamp": Time(now),
        "duration": duration,
        "expiration": expiration.map(Time),
        "totalSize": total_size.or(st.total_size),
        "timeRange": time_range.or(st.time_range),
        "volumeSnapshots": volume_snapshot::recorded(actions),
    });
    let backup = patch_status(ctx, backup, patch).await?;
    ctx.metrics.backup_finished(&backup);
    if let Some(repo) = &st.backup_repo_name {
        metrics::refresh_repo_size(ctx, repo).await;
    }
    events::publish(
        ctx,
        &backup,
        EventType::Normal,
        "BackupCompleted",
        "Backup",
        &format!("backup completed in {duration}"),
    )
    .await;
    handle_completed(ctx, &backup).await
}

/// A Completed backup: its expiration follows `retentionPeriod` (which may be edited). Its
/// worker Jobs stay, so their logs can be read, until their `ttlSecondsAfterFinished` or the
/// Backup's deletion removes them (upstream deletes them at once, and their logs with them).
async fn handle_completed(ctx: &Context, backup: &Backup) -> Result<Action, Error> {
    let st = backup.status.clone().unwrap_or_default();
    // After a start, the first Completed backup of each repo seen sets the repo's size.
    if let Some(repo) = &st.backup_repo_name
        && ctx.metrics.repo_size_unknown(repo)
    {
        metrics::refresh_repo_size(ctx, repo).await;
    }
    if let Some(done) = &st.completion_timestamp {
        let want = status::expiration(done.0, backup);
        if want != st.expiration.as_ref().map(|t| t.0) {
            patch_status(ctx, backup, json!({"expiration": want.map(Time)})).await?;
        }
    }
    Ok(Action::await_change())
}

/// Marks the backup Failed with a reason that says what to fix, and a Warning event.
pub(crate) async fn fail(ctx: &Context, backup: &Backup, reason: String) -> Result<Action, Error> {
    let before = phase(backup);
    let now = ctx.clock.now();
    let mut failed = backup.clone();
    let st = failed.status.get_or_insert_default();
    let start = st.start_timestamp.as_ref().map(|t| t.0);
    let expiration = st.expiration.as_ref().map(|t| t.0).or_else(|| {
        let base = start
            .or_else(|| backup.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .unwrap_or(now);
        status::expiration(base, backup)
    });
    let patch = json!({
        "phase": BackupPhase::Failed,
        "failureReason": reason,
        "completionTimestamp": Time(now),
        "expiration": expiration.map(Time),
    });
    let backup = patch_status(ctx, backup, patch).await?;
    match before {
        Some(BackupPhase::Completed | BackupPhase::Failed) => {}
        None | Some(BackupPhase::New) => {
            ctx.metrics.backup_attempted(&backup);
            ctx.metrics.backup_finished(&backup);
        }
        Some(_) => ctx.metrics.backup_finished(&backup),
    }
    events::publish(ctx, &backup, EventType::Warning, "BackupFailed", "Backup", &reason).await;
    tracing::info!(backup = %backup.name_any(), %reason, "backup failed");
    Ok(Action::await_change())
}

pub(crate) fn backup_api(ctx: &Context, backup: &Backup) -> Api<Backup> {
    Api::namespaced(ctx.client.clone(), &backup.namespace().unwrap_or_default())
}

/// A JSON merge patch of `status`.
pub(crate) async fn patch_status(
    ctx: &Context,
    backup: &Backup,
    status: Value,
) -> Result<Backup, Error> {
    let patch = json!({ "status": status });
    Ok(backup_api(ctx, backup)
        .patch_status(&backup.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?)
}

/// The Jobs working for this backup (by label, confirmed by owner uid: label values are
/// truncated, names are not).
pub(crate) async fn owned_jobs(ctx: &Context, backup: &Backup) -> Result<Vec<Job>, Error> {
    let ns = backup.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = format!(
        "{LABEL_BACKUP_NAME}={},{LABEL_MANAGED_BY}={MANAGED_BY}",
        job::label_value(&backup.name_any())
    );
    let uid = backup.uid().unwrap_or_default();
    let list = jobs.list(&ListParams::default().labels(&selector)).await?;
    Ok(list.items.into_iter().filter(|j| owner::is_owned_by(j, &uid)).collect())
}

/// Deletes this backup's Jobs that `which` selects (with their Pods); returns how many were
/// still there.
pub(crate) async fn delete_jobs(
    ctx: &Context,
    backup: &Backup,
    which: impl Fn(&Job) -> bool,
) -> Result<usize, Error> {
    let ns = backup.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let mut left = 0;
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    for job in owned_jobs(ctx, backup).await?.iter().filter(|j| which(j)) {
        left += 1;
        if job.metadata.deletion_timestamp.is_some() {
            continue;
        }
        object::delete_if_exists(&jobs, &job.name_any(), &dp).await?;
    }
    Ok(left)
}

impl Request {
    /// `status.path`: `/<ns>/<policy.pathPrefix>/<backup>` (this API version's BackupRepo has no
    /// pathPrefix of its own).
    pub fn backup_path(&self) -> String {
        status::join_path(&[
            &self.backup.namespace().unwrap_or_default(),
            self.policy.spec.path_prefix.as_deref().unwrap_or(""),
            &self.backup.name_any(),
        ])
    }

    /// `DP_BACKUP_ROOT_PATH`: the directory holding every backup of the policy.
    pub fn root_path(&self) -> String {
        status::join_path(&[
            &self.backup.namespace().unwrap_or_default(),
            self.policy.spec.path_prefix.as_deref().unwrap_or(""),
        ])
    }

    /// Where one target pod's data goes: the backup path, plus the pod with strategy All.
    pub fn target_relative_path(&self, pod: &str) -> String {
        if self.all_pods() { pod.to_string() } else { String::new() }
    }

    /// `DP_BACKUP_BASE_PATH` of one target pod.
    pub fn base_path(&self, pod: &str) -> String {
        status::join_path(&[&self.backup_path(), &self.target_relative_path(pod)])
    }

    fn all_pods(&self) -> bool {
        self.target.pod_selector.strategy
            == holdfast_api::kubeblocks::backup_policy::PodSelectionStrategy::All
    }
}
