//! The embedded Job runner (the executor seam, docs/architecture.md): runs `batch/v1` Jobs the
//! way the Kubernetes Job controller and kubelet together would, with host processes instead of
//! containers.
//!
//! Each attempt is a real Pod object (`<job>-<5 random>`) whose status this runner keeps. Its
//! containers' `command`+`args` run as host processes (init containers in order, then the
//! containers together), each under `unshare -m` with its volumes bind-mounted at their
//! `mountPath`s. The Job status follows Kubernetes: counts, start/completion times, and the
//! `Complete` / `Failed` (`BackoffLimitExceeded`, `DeadlineExceeded`) conditions.
//!
//! Deviations, each deliberate: images are ignored; `restartPolicy: OnFailure` behaves like
//! `Never` (a failed attempt becomes a new Pod, counted against `backoffLimit`); the retry
//! backoff starts at 2 s instead of 10 s, since restarting a local process costs nothing;
//! `parallelism` is 1 (attempts run one after another up to `completions`).

pub mod env;
pub mod identity;
pub mod mounts;
pub mod pod;
pub mod process;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use tokio::sync::watch;

use self::pod::{CONTROLLER_UID, failed_container, finished_at, phase};
use self::process::{StartError, log_path, patch_status, tail_lines, waiting_named};
use crate::events::{EventType, publish};
use crate::volume::EmbeddedVolumes;
use crate::{Context, Error, object, owner, reconciler};

/// First delay before retrying a failed attempt; doubles per failure up to [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Attempts at removing a deleted Job's pods before leaving them to the next start's sweep.
const GC_ATTEMPTS: usize = 8;
/// How often a pod waiting for a Secret, ConfigMap or PVC is retried.
const WAIT_RETRY: Duration = Duration::from_secs(2);
/// Log lines of a failed container carried into the Job's Failed condition and Warning Event.
const TAIL_LINES: usize = 20;

/// Reason of a pod found Running after a restart with its process gone.
pub const NODE_RESTART: &str = "NodeRestart";

/// `ttlSecondsAfterFinished` of the backup and restore Jobs: a week, so the logs of a run that
/// failed on a Friday night are still there on Monday.
pub const FINISHED_JOB_TTL_SECONDS: i32 = 7 * 24 * 3600;

struct Runner {
    ctx: Arc<Context>,
    volumes: EmbeddedVolumes,
    /// `unshare`'s path, or why this host cannot make private mount namespaces.
    unshare: Result<PathBuf, String>,
    node: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Uids of every pod this process started: a Running pod not in here outlived its process.
    started: HashSet<String>,
    /// Pod uid -> the kill switch of its running processes.
    running: HashMap<String, Handle>,
}

struct Handle {
    job_uid: String,
    kill: watch::Sender<Option<String>>,
}

impl Runner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the processes of the Job's pods (all of them, or those not in `keep`). The first
    /// reason given to a pod is the one it reports: the reconcile after a Job failed for its
    /// deadline says `JobFinished` again while the pod's task may still be recording
    /// `DeadlineExceeded`.
    fn kill(&self, job_uid: &str, keep: Option<&HashSet<String>>, reason: &str) -> usize {
        let state = self.state();
        let mut n = 0;
        for (pod_uid, h) in &state.running {
            if h.job_uid == job_uid && keep.is_none_or(|k| !k.contains(pod_uid)) {
                h.kill.send_if_modified(|current| {
                    let first = current.is_none();
                    if first {
                        *current = Some(reason.to_string());
                    }
                    first
                });
                n += 1;
            }
        }
        n
    }
}

/// Runs Jobs until the watch fails fatally.
pub async fn run(ctx: Arc<Context>) -> Result<(), Error> {
    install_datasafed(&ctx)?;
    let unshare = detect_unshare(&ctx).await;
    if let Err(why) = &unshare {
        tracing::warn!(why, "Jobs that mount volumes will fail: no private mount namespace");
    }
    let runner = Arc::new(Runner {
        volumes: EmbeddedVolumes::new(&ctx),
        unshare,
        node: pod::node_name(),
        state: Mutex::default(),
        ctx: ctx.clone(),
    });
    let gc = tokio::spawn(collect_garbage(runner.clone()));
    let jobs: Api<Job> = Api::all(ctx.client.clone());
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let controller = Controller::new(jobs, watcher::Config::default())
        .owns(pods, watcher::Config::default().labels(CONTROLLER_UID));
    let stopped = reconciler::run("job-runner", controller, runner, reconcile).await;
    gc.abort();
    stopped
}

/// `<data_dir>/bin/datasafed` and `<data_dir>/bin/holdfast` -> the holdfast executable: the
/// first is what ActionSet scripts call (holdfast answers to that name as datasafed), the second
/// lets shipped ActionSets run `holdfast pg …`.
fn install_datasafed(ctx: &Context) -> Result<(), Error> {
    let bin = ctx.bin_dir();
    // A program, not data: jobs running as other users than the server must be able to run it.
    std::fs::create_dir_all(&bin)
        .and_then(|()| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))
        })
        .map_err(Error::io(format!("cannot create {}", bin.display())))?;
    for program in ["datasafed", "holdfast"] {
        let link = bin.join(program);
        if std::fs::read_link(&link).ok().as_deref() == Some(ctx.holdfast_exe.as_path()) {
            continue;
        }
        match std::fs::remove_file(&link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("cannot replace {}", link.display()))(e)),
        }
        std::os::unix::fs::symlink(&ctx.holdfast_exe, &link)
            .map_err(Error::io(format!("cannot create {}", link.display())))?;
    }
    Ok(())
}

/// Whether this host lets us make a private mount namespace and bind-mount in it (root, or the
/// right capabilities): tried once, for real.
async fn detect_unshare(ctx: &Context) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/bin".into(), "/bin".into()])
        .map(|d| d.join("unshare"))
        .find(|p| p.is_file())
        .ok_or("the `unshare` command (util-linux) is not installed")?;
    let probe = ctx.bin_dir();
    let output = tokio::process::Command::new(&path)
        .args([
            "-m",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            "mount --bind \"$1\" \"$1\"",
            "sh",
        ])
        .arg(&probe)
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    if output.status.success() {
        Ok(path)
    } else {
        Err(format!(
            "`unshare -m` + `mount --bind` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn is_finished(status: &JobStatus) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

enum Started {
    Yes,
    Waiting,
    Failed,
    JobFails(String),
}

async fn reconcile(job: Arc<Job>, runner: Arc<Runner>) -> Result<Action, Error> {
    let ctx = &runner.ctx;
    let ns = job.namespace().unwrap_or_else(|| "default".into());
    let Some(uid) = job.uid() else { return Ok(Action::await_change()) };
    if job.metadata.deletion_timestamp.is_some() {
        runner.kill(&uid, None, "JobDeleted");
        return Ok(Action::await_change());
    }
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut pods = pods_api
        .list(&ListParams::default().labels(&format!("{CONTROLLER_UID}={uid}")))
        .await?
        .items;
    pods.retain(|p| owner::is_controlled_by(p, &uid) && p.metadata.deletion_timestamp.is_none());
    let live: HashSet<String> = pods.iter().map(uid_of).collect();
    runner.kill(&uid, Some(&live), "PodDeleted");

    let status = job.status.clone().unwrap_or_default();
    if is_finished(&status) {
        runner.kill(&uid, None, "JobFinished");
        return expire(&runner, &job, &status).await;
    }
    let spec = job.spec.clone().unwrap_or_default();
    if spec.suspend == Some(true) {
        runner.kill(&uid, None, "JobSuspended");
        return Ok(Action::await_change());
    }

    // Restart recovery: a Running pod this process never started lost its process.
    for p in pods.iter_mut() {
        if phase(p) == "Running" && !runner.state().started.contains(&uid_of(p)) {
            // Processes the killed server started outlive it (own process groups); the retry
            // must not run beside them, writing to the same repository or volume.
            let stopped = process::kill_leftovers(ctx, &ns, &p.name_any()).await;
            let mut message = "the holdfast server restarted while the pod was running".to_string();
            if stopped > 0 {
                message.push_str(&format!("; its {stopped} leftover process group(s) were killed"));
            }
            fail_pod(&pods_api, p, NODE_RESTART, &message).await?;
        }
    }

    let now = Timestamp::now();
    let start_time = status.start_time.clone().unwrap_or(Time(now));
    let completions = spec.completions.unwrap_or(1).max(1);
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let count = |pods: &[Pod], ph: &str| pods.iter().filter(|p| phase(p) == ph).count() as i32;
    let mut requeue: Option<Duration> = None;
    let mut finish: Option<(&str, &str, String)> = None;
    let deadline =
        spec.active_deadline_seconds.map(|s| start_time.0 + SignedDuration::from_secs(s));

    if count(&pods, "Succeeded") >= completions {
        finish = Some(("Complete", "", String::new()));
    } else if count(&pods, "Failed") > backoff_limit {
        let message = format!(
            "Job has reached the specified backoff limit{}",
            failure_detail(ctx, &ns, &pods)
        );
        finish = Some(("Failed", "BackoffLimitExceeded", message));
    } else if let Some(deadline) = deadline {
        if now >= deadline {
            finish = Some((
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline".into(),
            ));
        } else {
            requeue = Some(Duration::try_from(deadline - now).unwrap_or(Duration::ZERO));
        }
    }

    if finish.is_none() {
        let active = pods.iter().any(|p| matches!(phase(p), "Pending" | "Running"));
        if !active {
            let failed = count(&pods, "Failed");
            let delay = backoff(failed);
            let last_failure = pods
                .iter()
                .filter(|p| phase(p) == "Failed")
                .filter_map(finished_at)
                .max_by_key(|t| t.0);
            let wait = last_failure
                .map(|t| t.0 + SignedDuration::try_from(delay).unwrap_or_default())
                .filter(|until| *until > now);
            if let Some(until) = wait {
                let remaining = Duration::try_from(until - now).unwrap_or(Duration::ZERO);
                requeue = Some(requeue.map_or(remaining, |r| r.min(remaining)));
            } else {
                let new = pod::new_pod(&job, &runner.node)?;
                let created = pods_api.create(&PostParams::default(), &new).await?;
                publish(
                    ctx,
                    job.as_ref(),
                    EventType::Normal,
                    "SuccessfulCreate",
                    "Create",
                    &format!("Created pod: {}", created.name_any()),
                )
                .await;
                pods.push(created);
            }
        }
        for p in pods.iter_mut() {
            if phase(p) != "Pending" || runner.state().started.contains(&uid_of(p)) {
                continue;
            }
            match try_start(&runner, &uid, &pods_api, p).await? {
                Started::Yes | Started::Failed => {}
                Started::Waiting => {
                    requeue = Some(requeue.map_or(WAIT_RETRY, |r| r.min(WAIT_RETRY)));
                }
                Started::JobFails(message) => {
                    finish = Some(("Failed", "MountNamespaceUnavailable", message));
                    break;
                }
            }
        }
    }

    if let Some((_, reason, message)) = &finish {
        // Kubernetes terminates what is still active once a Job has finished.
        let reason = if reason.is_empty() { "JobFinished" } else { reason };
        runner.kill(&uid, None, reason);
        for p in pods.iter_mut() {
            let running = runner.state().running.contains_key(&uid_of(p));
            if matches!(phase(p), "Pending" | "Running") {
                if running {
                    // Its task writes the final status; count it as failed now.
                    set_local_phase(p, "Failed");
                } else {
                    fail_pod(&pods_api, p, reason, message).await?;
                }
            }
        }
    }

    let mut new_status = status.clone();
    new_status.start_time = Some(start_time);
    let nonzero = |n: i32| (n > 0).then_some(n);
    new_status.active =
        nonzero(pods.iter().filter(|p| matches!(phase(p), "Pending" | "Running")).count() as i32);
    new_status.succeeded = nonzero(count(&pods, "Succeeded"));
    new_status.failed = nonzero(count(&pods, "Failed"));
    if let Some((type_, reason, message)) = &finish {
        let t = Time(Timestamp::now());
        new_status.conditions.get_or_insert_default().push(JobCondition {
            type_: (*type_).into(),
            status: "True".into(),
            reason: (!reason.is_empty()).then(|| reason.to_string()),
            message: (!message.is_empty()).then(|| message.clone()),
            last_probe_time: Some(t.clone()),
            last_transition_time: Some(t.clone()),
        });
        if *type_ == "Complete" {
            new_status.completion_time = Some(t);
        }
    }
    if Some(&new_status) != job.status.as_ref() {
        let mut value = serde_json::to_value(&new_status)?;
        // Merge patch keeps absent keys: clear the counts that dropped to zero explicitly.
        if let Some(map) = value.as_object_mut() {
            for key in ["active", "succeeded", "failed"] {
                map.entry(key).or_insert(serde_json::Value::Null);
            }
        }
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
        jobs.patch_status(
            &job.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({ "status": value })),
        )
        .await?;
    }
    if let Some((type_, reason, message)) = &finish {
        if *type_ == "Complete" {
            publish(ctx, job.as_ref(), EventType::Normal, "Completed", "Complete", "Job completed")
                .await;
        } else {
            publish(ctx, job.as_ref(), EventType::Warning, reason, "Fail", message).await;
        }
        return Ok(Action::await_change());
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// When the Job finished: its completion time, else when it got its Failed condition.
fn finished_time(status: &JobStatus) -> Option<Timestamp> {
    status.completion_time.as_ref().map(|t| t.0).or_else(|| {
        status
            .conditions
            .iter()
            .flatten()
            .filter(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
            .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
            .max()
    })
}

/// The TTL-after-finished controller's part: a finished Job with `ttlSecondsAfterFinished` is
/// deleted that long after it finished, its pods and their logs with it (until then they stay
/// readable, across restarts: the time comes from the Job's status).
async fn expire(runner: &Arc<Runner>, job: &Job, status: &JobStatus) -> Result<Action, Error> {
    let ctx = &runner.ctx;
    let ttl = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished);
    let (Some(ttl), Some(finished)) = (ttl, finished_time(status)) else {
        return Ok(Action::await_change());
    };
    let expires = finished + SignedDuration::from_secs(i64::from(ttl));
    let now = Timestamp::now();
    if now < expires {
        return Ok(Action::requeue(Duration::try_from(expires - now).unwrap_or(Duration::ZERO)));
    }
    let ns = job.namespace().unwrap_or_else(|| "default".into());
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let dp = DeleteParams {
        propagation_policy: Some(kube::api::PropagationPolicy::Background),
        // Not a Job of the same name created since.
        preconditions: Some(kube::api::Preconditions { uid: job.uid(), resource_version: None }),
        ..DeleteParams::default()
    };
    object::delete_if_exists(&jobs, &job.name_any(), &dp).await?;
    // Its pods and logs go now, not only when the deletion's watch event arrives (that path
    // stays for Jobs others delete; removing twice is harmless).
    if let Some(uid) = job.uid() {
        remove_job_pods(runner, &ns, &uid).await;
    }
    Ok(Action::await_change())
}

/// Delay before the attempt after `failed` failures.
fn backoff(failed: i32) -> Duration {
    if failed <= 0 {
        return Duration::ZERO;
    }
    let exp = (failed - 1).min(16) as u32;
    BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX)
}

/// ": <why>\n<last log lines>" of the most recent failed pod, for conditions and events.
fn failure_detail(ctx: &Context, ns: &str, pods: &[Pod]) -> String {
    let Some(last) =
        pods.iter().filter(|p| phase(p) == "Failed").max_by_key(|p| finished_at(p).map(|t| t.0))
    else {
        return String::new();
    };
    let pod_name = last.name_any();
    if let Some(c) = failed_container(last) {
        let terminated = c.state.as_ref().and_then(|s| s.terminated.as_ref());
        let code = terminated.map_or(0, |t| t.exit_code);
        // A container that never started has no log, only the reason it could not start.
        if let Some(t) = terminated.filter(|t| t.reason.as_deref() == Some("StartError")) {
            let why = t.message.as_deref().unwrap_or("unknown");
            return format!(": pod {pod_name} container {} could not start: {why}", c.name);
        }
        let tail = tail_lines(&log_path(ctx, ns, &pod_name, &c.name), TAIL_LINES);
        return format!(
            ": pod {pod_name} container {} exited with code {code}; last log lines:\n{tail}",
            c.name
        );
    }
    let status = last.status.as_ref();
    let why = status
        .and_then(|s| s.message.clone().or_else(|| s.reason.clone()))
        .unwrap_or_else(|| "unknown".into());
    format!(": pod {pod_name} failed: {why}")
}

fn set_local_phase(pod: &mut Pod, ph: &str) {
    pod.status.get_or_insert_default().phase = Some(ph.into());
}

/// Marks a pod Failed with `reason`: its unfinished containers are reported terminated too.
async fn fail_pod(
    pods: &Api<Pod>,
    pod: &mut Pod,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    let mut status = pod.status.clone().unwrap_or_default();
    status.phase = Some("Failed".into());
    status.reason = Some(reason.into());
    status.message = Some(message.into());
    let now = Time(Timestamp::now());
    let names: Vec<(String, String)> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
        .collect();
    let statuses = status.container_statuses.get_or_insert_default();
    for (name, image) in names {
        let terminated = ContainerStateTerminated {
            exit_code: 137,
            reason: Some(reason.into()),
            message: Some(message.into()),
            finished_at: Some(now.clone()),
            ..ContainerStateTerminated::default()
        };
        let done = ContainerStatus {
            name: name.clone(),
            image,
            state: Some(ContainerState {
                terminated: Some(terminated),
                ..ContainerState::default()
            }),
            started: Some(false),
            ..ContainerStatus::default()
        };
        match statuses.iter_mut().find(|s| s.name == name) {
            Some(s) if s.state.as_ref().is_some_and(|st| st.terminated.is_some()) => {}
            Some(s) => *s = done,
            None => statuses.push(done),
        }
    }
    patch_status(pods, &pod.name_any(), status.clone()).await?;
    pod.status = Some(status);
    Ok(())
}

/// Plans the pod and starts its processes, or records why it cannot start.
async fn try_start(
    runner: &Arc<Runner>,
    job_uid: &str,
    pods_api: &Api<Pod>,
    pod: &mut Pod,
) -> Result<Started, Error> {
    let ctx = &runner.ctx;
    match process::prepare(ctx, &runner.volumes, pod, &runner.unshare).await {
        Ok(plan) => {
            let pod_uid = uid_of(pod);
            let (tx, rx) = watch::channel(None);
            {
                let mut state = runner.state();
                state.started.insert(pod_uid.clone());
                state.running.insert(pod_uid.clone(), Handle { job_uid: job_uid.into(), kill: tx });
            }
            set_local_phase(pod, "Running");
            let runner = runner.clone();
            let pods_api = pods_api.clone();
            tokio::spawn(async move {
                if let Err(error) = process::execute(&runner.ctx, &plan, rx).await {
                    tracing::warn!(pod = %plan.name, %error, "job pod run failed");
                    let mut p = Pod::default();
                    p.metadata.name = Some(plan.name.clone());
                    let message = format!("the runner could not track the pod: {error}");
                    if let Err(error) = fail_pod(&pods_api, &mut p, "RunnerError", &message).await {
                        tracing::warn!(pod = %plan.name, %error, "cannot mark the pod failed");
                    }
                }
                runner.state().running.remove(&pod_uid);
            });
            Ok(Started::Yes)
        }
        Err(StartError::Wait(message)) => {
            let names: Vec<(String, String)> = pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                .collect();
            let statuses: Vec<ContainerStatus> = names
                .iter()
                .map(|(n, i)| {
                    waiting_named(n, i, "CreateContainerConfigError", Some(message.clone()))
                })
                .collect();
            let current = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
            if current != Some(&statuses) {
                let status = PodStatus {
                    phase: Some("Pending".into()),
                    container_statuses: Some(statuses),
                    ..PodStatus::default()
                };
                patch_status(pods_api, &pod.name_any(), status).await?;
            }
            Ok(Started::Waiting)
        }
        Err(StartError::Fail(message)) => {
            fail_pod(pods_api, pod, "StartError", &message).await?;
            Ok(Started::Failed)
        }
        Err(StartError::NoMountNamespace(message)) => {
            fail_pod(pods_api, pod, "MountNamespaceUnavailable", &message).await?;
            Ok(Started::JobFails(message))
        }
        Err(StartError::Api(e)) => Err(e),
    }
}

/// Deleting a Job deletes its pods and stops their processes (the API server has no garbage
/// collector), including Jobs deleted while the server was down.
async fn collect_garbage(runner: Arc<Runner>) {
    let jobs: Api<Job> = Api::all(runner.ctx.client.clone());
    let mut events = watcher(jobs, watcher::Config::default()).boxed();
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        match events.try_next().await {
            Ok(Some(watcher::Event::Delete(job))) => {
                if let Some(uid) = job.uid() {
                    let ns = job.namespace().unwrap_or_else(|| "default".into());
                    // Retried apart from the watch: a transient API error must not leave the
                    // pods (and their logs) until the next restart's sweep.
                    let runner = runner.clone();
                    tokio::spawn(async move {
                        let mut delay = Duration::from_millis(500);
                        for _ in 0..GC_ATTEMPTS {
                            if remove_job_pods(&runner, &ns, &uid).await {
                                return;
                            }
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(BACKOFF_MAX);
                        }
                        tracing::warn!(job = %uid, "gave up removing the pods of a deleted job; the next start sweeps them");
                    });
                }
            }
            Ok(Some(watcher::Event::Init)) => seen.clear(),
            Ok(Some(watcher::Event::InitApply(job))) => {
                seen.extend(job.uid());
            }
            Ok(Some(watcher::Event::InitDone)) => sweep(&runner, &seen).await,
            Ok(Some(watcher::Event::Apply(_))) => {}
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(%error, "job watch for garbage collection");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Removes pods whose Job is gone (deleted while nobody watched).
async fn sweep(runner: &Arc<Runner>, seen: &HashSet<String>) {
    let pods: Api<Pod> = Api::all(runner.ctx.client.clone());
    let Ok(list) = pods.list(&ListParams::default().labels(CONTROLLER_UID)).await else { return };
    let mut orphans: HashSet<(String, String)> = HashSet::new();
    for p in list.items {
        let Some(owner) = p.owner_references().iter().find(|o| o.kind == "Job").cloned() else {
            continue;
        };
        if seen.contains(&owner.uid) {
            continue;
        }
        let ns = p.namespace().unwrap_or_else(|| "default".into());
        // The Job may have been created after the initial list: look before deleting.
        let jobs: Api<Job> = Api::namespaced(runner.ctx.client.clone(), &ns);
        if let Ok(Some(j)) = jobs.get_opt(&owner.name).await
            && j.uid().as_deref() == Some(owner.uid.as_str())
        {
            continue;
        }
        orphans.insert((ns, owner.uid));
    }
    for (ns, uid) in orphans {
        remove_job_pods(runner, &ns, &uid).await;
    }
}

/// Whether everything went: false when an API call failed (the caller tries again).
async fn remove_job_pods(runner: &Arc<Runner>, ns: &str, job_uid: &str) -> bool {
    runner.kill(job_uid, None, "JobDeleted");
    let ctx = &runner.ctx;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let list = match pods
        .list(&ListParams::default().labels(&format!("{CONTROLLER_UID}={job_uid}")))
        .await
    {
        Ok(l) => l.items,
        Err(error) => {
            tracing::warn!(%error, "cannot list the pods of a deleted job");
            return false;
        }
    };
    let mut complete = true;
    for p in list {
        let name = p.name_any();
        // Pods of a Job deleted while the server was down may have left processes running.
        process::kill_leftovers(ctx, ns, &name).await;
        if let Err(error) = object::delete_if_exists(&pods, &name, &DeleteParams::default()).await {
            tracing::warn!(%error, pod = %name, "cannot delete a pod of a deleted job");
            complete = false;
        }
        for dir in [ctx.logs_dir().join(ns).join(&name), mounts::pod_scratch_dir(ctx, ns, &name)] {
            if let Err(error) = tokio::fs::remove_dir_all(&dir).await
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(%error, dir = %dir.display(), "cannot remove pod files");
            }
        }
    }
    complete
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_two_seconds_up_to_a_minute() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(10), BACKOFF_MAX);
        assert_eq!(backoff(100), BACKOFF_MAX);
    }
}
