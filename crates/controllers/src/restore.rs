//! The Restore controller: validates the request, checks the backup's repo,
//! runs the ActionSet's prepareData Jobs into the restore claims (created if missing; for a backup
//! of volume snapshots, created from its snapshots: [`volume_snapshot`]), then the postReady
//! actions once the readiness probe passes, and records every action in the status.
//!
//! Stages, each recorded as a condition: `ValidationPassed`, `CheckBackupRepo`, `PrepareData`,
//! `ReadinessProbe`, `PostReady`. Phase: Running, then Completed or Failed (terminal).
//!
//! prepareData runs once per backup of the chain (see [`plan`]), in order. Within one backup,
//! `Parallel` starts every replica's Job at once; `Serial` runs one replica at a time and deletes
//! each completed Job before the next, releasing its claims. Any failed Job fails the Restore.
//!
//! postReady `exec` actions: embedded pods are descriptions of work on this host, so an exec runs
//! as a Job with the pod container's env and volume mounts (the nearest thing to running inside
//! it). In a cluster the same Job runs where the scheduler puts it.

pub mod job;
pub mod plan;
pub mod volume_snapshot;

use std::sync::Arc;
use std::time::Duration;

use holdfast_api::kubeblocks::actionset::ActionSpec;
use holdfast_api::kubeblocks::backup_repo::BackupRepoPhase;
use holdfast_api::kubeblocks::restore::{
    RestoreActionStatus, RestorePhase, RestoreStatus, RestoreStatusAction, RestoreVolumeClaim,
    VolumeClaimRestorePolicy,
};
use holdfast_api::kubeblocks::{BackupRepo, Restore};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use serde_json::json;

use crate::backup::job::{JobState, deadline_seconds, state};
use crate::backup::status::status_duration;
use crate::events::{EventType, publish};
use crate::kubeblocks_env::{RepoAccess, connection_env, merge};
use crate::{Context, Error, condition, metrics, object, reconciler, target_pod};
use job::{JobParts, Unit};
use plan::Plan;

/// Condition types, in the order the stages run.
pub const CONDITION_VALIDATION: &str = "ValidationPassed";
pub const CONDITION_REPO: &str = "CheckBackupRepo";
pub const STAGE_PREPARE_DATA: Stage = Stage {
    condition: "PrepareData",
    done: ("PrepareDataSuccessfully", "the data is in place"),
    waiting: "Processing",
    failed: "PrepareDataFailed",
};
pub const STAGE_READINESS_PROBE: Stage = Stage {
    condition: "ReadinessProbe",
    done: ("ReadinessProbeSucceeded", "the restored service is ready"),
    waiting: "Probing",
    failed: "ReadinessProbeFailed",
};
pub const STAGE_POST_READY: Stage = Stage {
    condition: "PostReady",
    done: ("PostReadySuccessfully", "the post-ready actions completed"),
    waiting: "Processing",
    failed: "PostReadyFailed",
};

/// A stage of the restore after the repo check, and the condition reasons it reports.
pub struct Stage {
    /// The condition type.
    pub condition: &'static str,
    /// Reason and message once the stage is done.
    pub done: (&'static str, &'static str),
    /// Reason while it runs.
    pub waiting: &'static str,
    /// Reason when it failed (terminal).
    pub failed: &'static str,
}

/// How often a running restore looks again at what it waits for (Jobs are also watched).
const POLL: Duration = Duration::from_secs(2);

/// Runs the Restore controller until its watch ends.
pub async fn run(ctx: Arc<Context>) -> Result<(), Error> {
    let restores: Api<Restore> = Api::all(ctx.client.clone());
    let jobs: Api<Job> = Api::all(ctx.client.clone());
    let controller = Controller::new(restores, watcher::Config::default())
        .owns(jobs, watcher::Config::default());
    reconciler::run("restore", controller, ctx, reconcile).await
}

async fn reconcile(obj: Arc<Restore>, ctx: Arc<Context>) -> Result<Action, Error> {
    // The cached object may predate this controller's own last status patch. Deciding on it
    // could run a completed step again: a Serial restore deletes each completed Job, so a stale
    // status without that Job's record would create it again over data already restored.
    let api: Api<Restore> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let Some(restore) = api.get_opt(&obj.name_any()).await? else {
        return Ok(Action::await_change());
    };
    if restore.metadata.deletion_timestamp.is_some() {
        // Owned Jobs go with it (owner references); nothing else to undo.
        return Ok(Action::await_change());
    }
    let status = restore.status.clone().unwrap_or_default();
    match status.phase {
        None => start(&ctx, &restore, status).await,
        Some(RestorePhase::Running) => progress(&ctx, &restore, status).await,
        Some(RestorePhase::Completed | RestorePhase::Failed | RestorePhase::AsDataSource) => {
            Ok(Action::await_change())
        }
    }
}

/// Validation: moves a new Restore to Running, or to Failed with the reason.
async fn start(
    ctx: &Context,
    restore: &Restore,
    mut status: RestoreStatus,
) -> Result<Action, Error> {
    status.start_timestamp.get_or_insert(Time(ctx.clock.now()));
    if let Err(message) = validate_spec(restore) {
        return fail(ctx, restore, status, CONDITION_VALIDATION, "ValidateFailed", &message).await;
    }
    let policy = match plan::resolve(ctx, restore).await {
        Ok(plan) => plan.backup.spec.backup_policy_name,
        Err(Error::Invalid(message)) => {
            return fail(ctx, restore, status, CONDITION_VALIDATION, "ValidateFailed", &message)
                .await;
        }
        Err(Error::NotReady(message)) => {
            set_condition(
                ctx,
                restore,
                &mut status,
                CONDITION_VALIDATION,
                false,
                "Waiting",
                &message,
            );
            write_status(ctx, restore, &status).await?;
            return Ok(Action::requeue(POLL));
        }
        Err(error) => return Err(error),
    };
    if spec_has_data_source(restore) {
        // PVCs with dataSourceRef are filled by a volume populator (upstream's AsDataSource).
        status.phase = Some(RestorePhase::AsDataSource);
        set_condition(
            ctx,
            restore,
            &mut status,
            CONDITION_VALIDATION,
            true,
            "ValidateSuccessfully",
            "the restore is a volume data source",
        );
        write_status(ctx, restore, &status).await?;
        ctx.metrics.restore_attempted(restore, &policy);
        return Ok(Action::await_change());
    }
    status.phase = Some(RestorePhase::Running);
    set_condition(
        ctx,
        restore,
        &mut status,
        CONDITION_VALIDATION,
        true,
        "ValidateSuccessfully",
        "validation passed",
    );
    write_status(ctx, restore, &status).await?;
    ctx.metrics.restore_attempted(restore, &policy);
    publish(ctx, restore, EventType::Normal, "Running", "Restore", "validation passed; restoring")
        .await;
    Ok(Action::requeue(Duration::ZERO))
}

/// What the API schema cannot check: there must be something to restore into.
fn validate_spec(restore: &Restore) -> Result<(), String> {
    let has_claims = restore.spec.prepare_data_config.as_ref().is_some_and(|p| {
        p.volume_claims.as_ref().is_some_and(|c| !c.is_empty())
            || p.volume_claims_template.is_some()
            || p.data_source_ref.is_some()
    });
    if !has_claims && restore.spec.ready_config.is_none() {
        return Err("nothing to restore into: set spec.prepareDataConfig.volumeClaims, \
                    spec.prepareDataConfig.volumeClaimsTemplate or spec.readyConfig"
            .into());
    }
    Ok(())
}

fn spec_has_data_source(restore: &Restore) -> bool {
    restore.spec.prepare_data_config.as_ref().is_some_and(|p| p.data_source_ref.is_some())
}

/// One step of a running restore.
async fn progress(
    ctx: &Context,
    restore: &Restore,
    mut status: RestoreStatus,
) -> Result<Action, Error> {
    let plan = match plan::resolve(ctx, restore).await {
        Ok(plan) => plan,
        Err(Error::Invalid(message)) => {
            return fail(ctx, restore, status, CONDITION_VALIDATION, "ValidateFailed", &message)
                .await;
        }
        Err(Error::NotReady(_)) => return Ok(Action::requeue(POLL)),
        Err(error) => return Err(error),
    };
    let before = status.clone();

    // CheckBackupRepo: the repo is Ready and its tool configuration is in this namespace.
    let repo_access = match check_repo(ctx, restore, &plan).await {
        Ok(access) => {
            set_condition(
                ctx,
                restore,
                &mut status,
                CONDITION_REPO,
                true,
                "CheckBackupRepoSuccessfully",
                "the backup repo is ready",
            );
            access
        }
        Err(Error::Invalid(message)) => {
            return fail(ctx, restore, status, CONDITION_REPO, "CheckBackupRepoFailed", &message)
                .await;
        }
        Err(Error::NotReady(message)) => {
            set_condition(ctx, restore, &mut status, CONDITION_REPO, false, "Waiting", &message);
            return finish_step(ctx, restore, &before, status, Action::requeue(POLL)).await;
        }
        Err(error) => return Err(error),
    };

    // PrepareData.
    if !condition_true(&status, STAGE_PREPARE_DATA.condition) {
        let step = prepare_data(ctx, restore, &plan, repo_access.as_ref(), &mut status).await?;
        if let Some(action) =
            settle(ctx, restore, &before, &mut status, &STAGE_PREPARE_DATA, step).await?
        {
            return Ok(action);
        }
    }

    // ReadinessProbe, then PostReady.
    if restore.spec.ready_config.is_some() && !condition_true(&status, STAGE_POST_READY.condition) {
        if !condition_true(&status, STAGE_READINESS_PROBE.condition) {
            let step = readiness(ctx, restore, &plan).await?;
            if let Some(action) =
                settle(ctx, restore, &before, &mut status, &STAGE_READINESS_PROBE, step).await?
            {
                return Ok(action);
            }
        }
        let step = post_ready(ctx, restore, &plan, repo_access.as_ref(), &mut status).await?;
        if let Some(action) =
            settle(ctx, restore, &before, &mut status, &STAGE_POST_READY, step).await?
        {
            return Ok(action);
        }
    }

    let now = ctx.clock.now();
    status.phase = Some(RestorePhase::Completed);
    status.completion_timestamp = Some(Time(now));
    status.duration = Some(duration(&status, now));
    write_status(ctx, restore, &status).await?;
    let read = plan.backup.status.as_ref().and_then(|s| s.total_size.as_deref());
    let end = metrics::End::new(
        metrics::Outcome::Succeeded,
        status.start_timestamp.as_ref().map(|t| t.0),
        now,
    )
    .with_bytes(metrics::total_size(read));
    ctx.metrics.restore_finished(restore, &plan.backup.spec.backup_policy_name, &end);
    publish(
        ctx,
        restore,
        EventType::Normal,
        "Completed",
        "Restore",
        &format!("restored backup {}", plan.backup.name_any()),
    )
    .await;
    Ok(Action::await_change())
}

/// Writes the status if it changed and returns `action`.
async fn finish_step(
    ctx: &Context,
    restore: &Restore,
    before: &RestoreStatus,
    status: RestoreStatus,
    action: Action,
) -> Result<Action, Error> {
    if &status != before {
        write_status(ctx, restore, &status).await?;
    }
    Ok(action)
}

/// Records a stage's step in its condition. `Some(action)`: the reconcile ends here (the status
/// is written and the restore polled again, or failed); `None`: the stage is done, go on.
async fn settle(
    ctx: &Context,
    restore: &Restore,
    before: &RestoreStatus,
    status: &mut RestoreStatus,
    stage: &Stage,
    step: Step,
) -> Result<Option<Action>, Error> {
    match step {
        Step::Done => {
            let (reason, message) = stage.done;
            set_condition(ctx, restore, status, stage.condition, true, reason, message);
            Ok(None)
        }
        Step::Wait(message) => {
            set_condition(ctx, restore, status, stage.condition, false, stage.waiting, &message);
            let action = Action::requeue(POLL);
            finish_step(ctx, restore, before, status.clone(), action).await.map(Some)
        }
        Step::Failed(message) => {
            fail(ctx, restore, status.clone(), stage.condition, stage.failed, &message)
                .await
                .map(Some)
        }
    }
}

/// The outcome of a stage so far.
enum Step {
    Done,
    Wait(String),
    Failed(String),
}

/// How Jobs in the restore's namespace reach the repo (None for a backup without a repo).
async fn check_repo(
    ctx: &Context,
    restore: &Restore,
    plan: &Plan,
) -> Result<Option<RepoAccess>, Error> {
    let Some(repo_name) = plan
        .backup
        .status
        .as_ref()
        .and_then(|s| s.backup_repo_name.clone())
        .filter(|n| !n.is_empty())
    else {
        return Ok(None);
    };
    let repos: Api<BackupRepo> = Api::all(ctx.client.clone());
    let Some(repo) = repos.get_opt(&repo_name).await? else {
        return Err(Error::Invalid(format!(
            "backuprepo {repo_name} of backup {} not found; its data cannot be reached",
            plan.backup.name_any()
        )));
    };
    match repo.status.as_ref().and_then(|s| s.phase) {
        Some(BackupRepoPhase::Ready) => {}
        Some(BackupRepoPhase::Failed) => {
            return Err(Error::Invalid(format!(
                "backuprepo {repo_name} is Failed; fix it and create the Restore again"
            )));
        }
        other => {
            return Err(Error::NotReady(format!(
                "waiting for backuprepo {repo_name} to become Ready (it is {})",
                other.map(|p| format!("{p:?}")).unwrap_or_else(|| "not checked yet".into())
            )));
        }
    }
    let ns = restore.namespace().unwrap_or_default();
    // The repo's tool configuration in the restore's namespace (it may differ from the backup's).
    let access = match crate::backup_repo::ensure_access(ctx, &repo, &ns).await {
        Ok(access) => access,
        Err(error @ Error::Kube(_)) => return Err(error),
        Err(error) => {
            return Err(Error::NotReady(format!(
                "waiting for the tool configuration of backuprepo {repo_name} in namespace {ns}: {error}"
            )));
        }
    };
    Ok(Some(access))
}

/// Runs the prepareData Jobs of every backup of the chain, in order.
async fn prepare_data(
    ctx: &Context,
    restore: &Restore,
    plan: &Plan,
    repo_access: Option<&RepoAccess>,
    status: &mut RestoreStatus,
) -> Result<Step, Error> {
    let Some(cfg) = restore.spec.prepare_data_config.clone() else {
        return Ok(Step::Done);
    };
    let units = job::units(&cfg);
    let ns = restore.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    for (set_index, set) in plan.sets.iter().enumerate() {
        if crate::backup::volume_snapshot::took_snapshots(&set.backup) {
            match volume_snapshot::provision(ctx, &ns, &set.backup, &units).await? {
                Step::Done => {}
                step => return Ok(step),
            }
        }
        let restore_actions = set.action_set.as_ref().and_then(|a| a.spec.restore.as_ref());
        let Some(action) = restore_actions.and_then(|r| r.prepare_data.clone()) else {
            continue;
        };
        let mut waiting = Vec::new();
        for (unit_index, unit) in units.iter().enumerate() {
            let name = job::prepare_data_job_name(restore, set_index, unit_index);
            if action_done(status, "prepareData", &name) {
                continue;
            }
            if !ensure_claims(ctx, &ns, unit).await? {
                waiting.push(format!("claims of job {name} to be bound"));
                if cfg.volume_claim_restore_policy == VolumeClaimRestorePolicy::Serial {
                    break;
                }
                continue;
            }
            let existing = match jobs.get_opt(&name).await? {
                Some(existing) => existing,
                None => {
                    let (volumes, mounts) = job::claim_volumes(unit);
                    let parts = JobParts {
                        name: name.clone(),
                        container: "restore".into(),
                        image: action.base.image.clone(),
                        command: action.base.command.clone(),
                        env: job::restore_env(&ctx.bin_dir(), restore, set, unit.pod_index),
                        env_from: action_set_env_from(set),
                        volumes,
                        mounts,
                        repo_access: repo_access.cloned(),
                        backoff_limit: restore.spec.backoff_limit,
                        active_deadline_seconds: None,
                    };
                    crate::executor::create_or_get_job(ctx, &jobs, &job::build(restore, parts))
                        .await?
                }
            };
            record(ctx, status, "prepareData", &set.backup.name_any(), &existing);
            match state(&existing) {
                JobState::Complete => {
                    if cfg.volume_claim_restore_policy == VolumeClaimRestorePolicy::Serial {
                        // The record of its completion is stored before the Job goes: without
                        // either, the next reconcile would run it again.
                        write_status(ctx, restore, status).await?;
                        // Release the claims before the next replica starts.
                        let dp = DeleteParams {
                            propagation_policy: Some(PropagationPolicy::Background),
                            ..DeleteParams::default()
                        };
                        object::delete_if_exists(&jobs, &name, &dp).await?;
                    }
                }
                JobState::Failed(message) => {
                    return Ok(Step::Failed(format!(
                        "prepareData job {name} (backup {}) failed: {message}",
                        set.backup.name_any()
                    )));
                }
                JobState::Running => {
                    waiting.push(format!("job {name}"));
                    if cfg.volume_claim_restore_policy == VolumeClaimRestorePolicy::Serial {
                        break;
                    }
                }
            }
        }
        if !waiting.is_empty() {
            return Ok(Step::Wait(format!(
                "restoring backup {}: waiting for {}",
                set.backup.name_any(),
                waiting.join(", ")
            )));
        }
    }
    Ok(Step::Done)
}

/// Creates the unit's claims that do not exist; whether all of them are Bound.
async fn ensure_claims(ctx: &Context, ns: &str, unit: &Unit) -> Result<bool, Error> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let mut bound = true;
    for claim in &unit.claims {
        let name = claim.metadata.name.clone().unwrap_or_default();
        let existing = match api.get_opt(&name).await? {
            Some(pvc) => pvc,
            None => object::create_or_get(&api, &claim_object(ns, claim)).await?,
        };
        bound &= is_bound(&existing);
    }
    Ok(bound)
}

/// The claim a restore claim describes, in `ns`.
fn claim_object(ns: &str, claim: &RestoreVolumeClaim) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: claim.metadata.name.clone(),
            namespace: Some(ns.to_string()),
            labels: claim.metadata.labels.clone(),
            annotations: claim.metadata.annotations.clone(),
            ..Default::default()
        },
        spec: Some(claim.volume_claim_spec.clone()),
        status: None,
    }
}

fn is_bound(pvc: &PersistentVolumeClaim) -> bool {
    pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
}

/// Runs the readiness probe as a Job that retries the command every periodSeconds, each attempt
/// limited to timeoutSeconds, until it succeeds.
async fn readiness(ctx: &Context, restore: &Restore, plan: &Plan) -> Result<Step, Error> {
    let Some(probe) = restore.spec.ready_config.as_ref().and_then(|r| r.readiness_probe.clone())
    else {
        return Ok(Step::Done);
    };
    let ns = restore.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let name = job::probe_job_name(restore);
    let existing = match jobs.get_opt(&name).await? {
        Some(j) => j,
        None => {
            let (env, env_from, volumes, mounts) = match post_ready_target(ctx, restore).await? {
                Ok(target) => target_parts(ctx, restore, plan, target.as_ref()),
                Err(message) => return Ok(Step::Failed(message)),
            };
            let script = "sleep \"$1\"; period=\"$2\"; limit=\"$3\"; shift 3; \
                          until timeout \"$limit\" \"$@\"; do sleep \"$period\"; done";
            let mut command = vec![
                "sh".to_string(),
                "-c".into(),
                script.into(),
                "readiness-probe".into(),
                probe.initial_delay_seconds.unwrap_or(0).to_string(),
                probe.period_seconds.unwrap_or(5).to_string(),
                probe.timeout_seconds.unwrap_or(30).to_string(),
            ];
            command.extend(probe.exec.command.clone());
            let parts = JobParts {
                name: name.clone(),
                container: "readiness-probe".into(),
                image: probe.exec.image.clone(),
                command,
                env,
                env_from,
                volumes,
                mounts,
                repo_access: None,
                backoff_limit: Some(0),
                active_deadline_seconds: None,
            };
            crate::executor::create_or_get_job(ctx, &jobs, &job::build(restore, parts)).await?
        }
    };
    Ok(match state(&existing) {
        JobState::Complete => Step::Done,
        JobState::Failed(message) => {
            Step::Failed(format!("readiness probe job {name} failed: {message}"))
        }
        JobState::Running => Step::Wait(format!("waiting for the readiness probe (job {name})")),
    })
}

/// The pod `readyConfig.jobAction.target` selects, if any (Err: a message to fail with).
async fn post_ready_target(
    ctx: &Context,
    restore: &Restore,
) -> Result<Result<Option<Pod>, String>, Error> {
    let Some(target) = restore
        .spec
        .ready_config
        .as_ref()
        .and_then(|r| r.job_action.as_ref())
        .map(|j| j.target.clone())
    else {
        return Ok(Ok(None));
    };
    let what = "spec.readyConfig.jobAction.target.podSelector";
    let pods = select_pods(ctx, restore, &target.pod_selector, what).await?;
    match pods {
        Ok(pods) => match pods.into_iter().next() {
            Some(pod) => Ok(Ok(Some(pod))),
            None => Ok(Err("no pod matches spec.readyConfig.jobAction.target.podSelector".into())),
        },
        Err(message) => Ok(Err(message)),
    }
}

type Parts = (
    Vec<k8s_openapi::api::core::v1::EnvVar>,
    Vec<k8s_openapi::api::core::v1::EnvFromSource>,
    Vec<k8s_openapi::api::core::v1::Volume>,
    Vec<k8s_openapi::api::core::v1::VolumeMount>,
);

/// Env, envFrom and volumes of post-ready work on `pod`: the pod container's env, the `DP_*`
/// and `DP_DB_*` variables, the merged ActionSet/Backup/Restore env, and the target's mounts.
fn target_parts(ctx: &Context, restore: &Restore, plan: &Plan, pod: Option<&Pod>) -> Parts {
    let mut env = Vec::new();
    let mut env_from = Vec::new();
    if let Some(pod) = pod {
        let (pod_env, pod_env_from, _) = job::pod_env(pod, None);
        env = pod_env;
        env_from = pod_env_from;
    }
    let cred = restore.spec.ready_config.as_ref().and_then(|r| r.connection_credential.as_ref());
    merge(&mut env, connection_env(cred, pod));
    merge(&mut env, job::restore_env(&ctx.bin_dir(), restore, plan.last(), 0));
    env_from.extend(action_set_env_from(plan.last()));
    let mounts = restore
        .spec
        .ready_config
        .as_ref()
        .and_then(|r| r.job_action.as_ref())
        .and_then(|j| j.target.volume_mounts.clone())
        .unwrap_or_default();
    let (volumes, mounts) = match pod {
        Some(pod) => job::pod_volumes(pod, &mounts),
        None => (Vec::new(), Vec::new()),
    };
    (env, env_from, volumes, mounts)
}

/// The ActionSet's envFrom of one backup of the chain (none without an ActionSet).
fn action_set_env_from(set: &plan::BackupSet) -> Vec<k8s_openapi::api::core::v1::EnvFromSource> {
    set.action_set.as_ref().and_then(|a| a.spec.env_from.clone()).unwrap_or_default()
}

/// Pods in the restore's namespace matching `selector` (the field `what`), sorted by name; the
/// inner error says why the selector is invalid.
async fn select_pods(
    ctx: &Context,
    restore: &Restore,
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    what: &str,
) -> Result<Result<Vec<Pod>, String>, Error> {
    let ns = restore.namespace().unwrap_or_default();
    match target_pod::matching(ctx, &ns, selector, what).await {
        Ok(pods) => Ok(Ok(pods)),
        Err(Error::Invalid(message)) => Ok(Err(message)),
        Err(error) => Err(error),
    }
}

/// Runs the ActionSet's postReady actions in order, each after the previous completed.
async fn post_ready(
    ctx: &Context,
    restore: &Restore,
    plan: &Plan,
    repo_access: Option<&RepoAccess>,
    status: &mut RestoreStatus,
) -> Result<Step, Error> {
    let actions: Vec<ActionSpec> = plan
        .last()
        .action_set
        .as_ref()
        .and_then(|a| a.spec.restore.as_ref())
        .and_then(|r| r.post_ready.clone())
        .unwrap_or_default();
    let ns = restore.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let backup_name = plan.last().backup.name_any();
    for (index, action) in actions.iter().enumerate() {
        // Each action expands to the Jobs that run it.
        let mut planned: Vec<Job> = Vec::new();
        if let Some(job_action) = &action.job {
            let name = job::post_ready_job_name(restore, index, None);
            if !action_done(status, "postReady", &name) {
                let target = match post_ready_target(ctx, restore).await? {
                    Ok(t) => t,
                    Err(message) => return Ok(Step::Failed(message)),
                };
                let (env, env_from, volumes, mounts) =
                    target_parts(ctx, restore, plan, target.as_ref());
                planned.push(job::build(
                    restore,
                    JobParts {
                        name,
                        container: "post-ready".into(),
                        image: job_action.base.image.clone(),
                        command: job_action.base.command.clone(),
                        env,
                        env_from,
                        volumes,
                        mounts,
                        repo_access: repo_access.cloned(),
                        backoff_limit: restore.spec.backoff_limit,
                        active_deadline_seconds: None,
                    },
                ));
            }
        } else if let Some(exec) = &action.exec {
            let Some(selector) = restore
                .spec
                .ready_config
                .as_ref()
                .and_then(|r| r.exec_action.as_ref())
                .and_then(|e| e.target.as_ref())
                .map(|t| t.pod_selector.clone())
            else {
                return Ok(Step::Failed(format!(
                    "postReady action {index} of actionset {} is an exec action; set \
                     spec.readyConfig.execAction.target.podSelector to choose the pods it runs in",
                    plan.last().action_set.as_ref().map(ResourceExt::name_any).unwrap_or_default()
                )));
            };
            let what = "spec.readyConfig.execAction.target.podSelector";
            let pods =
                match select_pods(ctx, restore, &selector, what).await? {
                    Ok(pods) if !pods.is_empty() => pods,
                    Ok(_) => return Ok(Step::Wait(
                        "waiting for a pod matching spec.readyConfig.execAction.target.podSelector"
                            .into(),
                    )),
                    Err(message) => return Ok(Step::Failed(message)),
                };
            for (p, pod) in pods.iter().enumerate() {
                let name = job::post_ready_job_name(restore, index, Some(p));
                if action_done(status, "postReady", &name) {
                    continue;
                }
                let (mut env, env_from, container_mounts) =
                    job::pod_env(pod, exec.container.as_deref());
                let cred = restore
                    .spec
                    .ready_config
                    .as_ref()
                    .and_then(|r| r.connection_credential.as_ref());
                merge(&mut env, connection_env(cred, Some(pod)));
                merge(&mut env, job::restore_env(&ctx.bin_dir(), restore, plan.last(), 0));
                let (volumes, mounts) = job::pod_volumes(pod, &container_mounts);
                planned.push(job::build(
                    restore,
                    JobParts {
                        name,
                        container: exec.container.clone().unwrap_or_else(|| "exec".into()),
                        image: "holdfast-exec".into(),
                        command: exec.command.clone(),
                        env,
                        env_from,
                        volumes,
                        mounts,
                        repo_access: None,
                        backoff_limit: Some(0),
                        active_deadline_seconds: exec
                            .timeout
                            .as_deref()
                            .and_then(|t| deadline_seconds(t).ok()),
                    },
                ));
            }
        }
        let mut running = Vec::new();
        for wanted in planned {
            let name = wanted.name_any();
            let existing = match jobs.get_opt(&name).await? {
                Some(j) => j,
                None => crate::executor::create_or_get_job(ctx, &jobs, &wanted).await?,
            };
            record(ctx, status, "postReady", &backup_name, &existing);
            match state(&existing) {
                JobState::Complete => {}
                JobState::Failed(message) => {
                    return Ok(Step::Failed(format!("postReady job {name} failed: {message}")));
                }
                JobState::Running => running.push(name),
            }
        }
        if !running.is_empty() {
            return Ok(Step::Wait(format!("waiting for postReady job(s) {}", running.join(", "))));
        }
    }
    Ok(Step::Done)
}

/// Whether the action of `stage` run by Job `name` is recorded as Completed (its Job may be gone:
/// Serial deletes completed Jobs).
fn action_done(status: &RestoreStatus, stage: &str, name: &str) -> bool {
    let key = format!("Job/{name}");
    stage_actions(status, stage).is_some_and(|a| {
        a.iter().any(|a| a.object_key == key && a.status == RestoreActionStatus::Completed)
    })
}

fn stage_actions<'a>(
    status: &'a RestoreStatus,
    stage: &str,
) -> Option<&'a Vec<RestoreStatusAction>> {
    let actions = status.actions.as_ref()?;
    if stage == "prepareData" { actions.prepare_data.as_ref() } else { actions.post_ready.as_ref() }
}

/// Records (or updates) the action a Job runs.
fn record(ctx: &Context, status: &mut RestoreStatus, stage: &str, backup: &str, job: &Job) {
    let name = job.name_any();
    let key = format!("Job/{name}");
    let actions = status.actions.get_or_insert_default();
    let list = if stage == "prepareData" {
        actions.prepare_data.get_or_insert_default()
    } else {
        actions.post_ready.get_or_insert_default()
    };
    let job_status = job.status.clone().unwrap_or_default();
    let (state_now, message) = match state(job) {
        JobState::Complete => (RestoreActionStatus::Completed, None),
        JobState::Failed(m) => (RestoreActionStatus::Failed, Some(m)),
        JobState::Running => (RestoreActionStatus::Processing, None),
    };
    let entry = RestoreStatusAction {
        name: stage.to_string(),
        backup_name: backup.to_string(),
        object_key: key.clone(),
        message,
        status: state_now,
        start_time: job_status.start_time.or_else(|| job.metadata.creation_timestamp.clone()),
        end_time: job_status
            .completion_time
            .or_else(|| (state_now == RestoreActionStatus::Failed).then(|| Time(ctx.clock.now()))),
    };
    match list.iter_mut().find(|a| a.object_key == key) {
        Some(slot) => {
            if slot.status != RestoreActionStatus::Completed {
                let end = slot.end_time.clone();
                *slot = entry;
                if slot.end_time.is_none() {
                    slot.end_time = end;
                }
            }
        }
        None => list.push(entry),
    }
}

fn condition_true(status: &RestoreStatus, type_: &str) -> bool {
    condition::is_true(status.conditions.as_deref().unwrap_or_default(), type_)
}

/// Sets a condition of the restore; its transition time changes only when its status does.
fn set_condition(
    ctx: &Context,
    restore: &Restore,
    status: &mut RestoreStatus,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
) {
    let conditions = status.conditions.get_or_insert_default();
    let generation = restore.metadata.generation;
    condition::set(conditions, type_, ok, reason, message, generation, ctx.clock.now());
}

fn duration(status: &RestoreStatus, now: Timestamp) -> String {
    let start = status.start_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
    let elapsed = now.duration_since(start);
    status_duration(Duration::try_from(elapsed).unwrap_or_default())
}

/// Marks the restore Failed at `condition` with `message` (terminal), with a Warning event.
async fn fail(
    ctx: &Context,
    restore: &Restore,
    mut status: RestoreStatus,
    condition: &str,
    reason: &str,
    message: &str,
) -> Result<Action, Error> {
    let now = ctx.clock.now();
    set_condition(ctx, restore, &mut status, condition, false, reason, message);
    status.phase = Some(RestorePhase::Failed);
    status.start_timestamp.get_or_insert(Time(now));
    status.completion_timestamp = Some(Time(now));
    status.duration = Some(duration(&status, now));
    write_status(ctx, restore, &status).await?;
    let policy = metrics::restore_policy(ctx, restore).await;
    // A restore failing validation never left its initial phase: it is attempted here.
    if restore.status.as_ref().and_then(|s| s.phase).is_none() {
        ctx.metrics.restore_attempted(restore, &policy);
    }
    let start = status.start_timestamp.as_ref().map(|t| t.0);
    ctx.metrics.restore_finished(
        restore,
        &policy,
        &metrics::End::new(metrics::Outcome::Failed, start, now),
    );
    publish(ctx, restore, EventType::Warning, reason, "Restore", message).await;
    Ok(Action::await_change())
}

async fn write_status(
    ctx: &Context,
    restore: &Restore,
    status: &RestoreStatus,
) -> Result<(), Error> {
    let ns = restore.namespace().unwrap_or_default();
    let api: Api<Restore> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = json!({ "status": status });
    api.patch_status(&restore.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}
