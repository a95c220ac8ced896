//! Running a pod's containers as host processes: init containers in order, then the containers
//! together; logs to files, exit codes and termination messages into the Pod status.

use std::collections::HashMap;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::watch;

use super::env::{container_env, expand};
use super::identity;
use super::mounts::{
    Mount, container_mounts, host_path, mount_script, pod_scratch_dir, prepare_volumes,
};
use crate::volume::VolumeResolver;
use crate::{Context, Error};

/// The kubelet's default termination message path; a file it provides per container.
const DEFAULT_TERMINATION_PATH: &str = "/dev/termination-log";
/// The kubelet keeps at most this much of a termination message.
pub const MESSAGE_MAX: usize = 4096;
/// PATH for the mount prelude, whatever PATH the container asks for.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a pod cannot start (yet).
#[derive(Debug)]
pub enum StartError {
    /// Something it refers to is missing or not ready; retry (the kubelet keeps such a pod Pending).
    Wait(String),
    /// The pod can never run as written.
    Fail(String),
    /// The pod needs a private mount namespace and this host cannot make one: no retry can help.
    NoMountNamespace(String),
    /// The API failed; the reconcile is retried.
    Api(Error),
}

impl From<Error> for StartError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotReady(m) => StartError::Wait(m),
            Error::Invalid(m) => StartError::Fail(m),
            Error::Io { .. } => StartError::Fail(e.to_string()),
            other => StartError::Api(other),
        }
    }
}

/// Everything needed to run one container.
#[derive(Debug, Clone)]
pub struct ContainerPlan {
    pub name: String,
    pub image: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub working_dir: Option<String>,
    pub termination_path: String,
    pub fallback_to_logs: bool,
    pub log: PathBuf,
}

/// Everything needed to run one pod.
#[derive(Debug, Clone)]
pub struct PodPlan {
    pub namespace: String,
    pub name: String,
    pub init: Vec<ContainerPlan>,
    pub main: Vec<ContainerPlan>,
    pub scratch: PathBuf,
    /// Absolute path of `unshare`, when this host can make mount namespaces.
    pub unshare: Option<PathBuf>,
    /// Where the process groups of running containers are recorded ([`pid_dir`]).
    pub pids: PathBuf,
}

/// The log file of a container: `<data_dir>/logs/<ns>/<pod>/<container>.log`.
pub fn log_path(ctx: &Context, ns: &str, pod: &str, container: &str) -> PathBuf {
    ctx.logs_dir().join(ns).join(pod).join(format!("{container}.log"))
}

/// Where the process groups of a pod's running containers are recorded (one file per container:
/// `<pid> <start time>`), so that a server started after a crash can stop what the crashed one
/// left running: `<data_dir>/jobs/.pids/<ns>/<pod>`. Namespace names never start with a dot, so
/// this never meets a pod's scratch directory.
pub fn pid_dir(ctx: &Context, ns: &str, pod: &str) -> PathBuf {
    ctx.jobs_dir().join(".pids").join(ns).join(pod)
}

/// Resolves volumes, environment and commands of every container of `pod`.
pub async fn prepare(
    ctx: &Context,
    resolver: &impl VolumeResolver,
    pod: &Pod,
    unshare: &Result<PathBuf, String>,
) -> Result<PodPlan, StartError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.as_ref().ok_or_else(|| StartError::Fail("the pod has no spec".into()))?;
    let volume_dirs = prepare_volumes(ctx, resolver, pod).await?;
    let mut plan = PodPlan {
        namespace: ns.clone(),
        name: name.clone(),
        init: Vec::new(),
        main: Vec::new(),
        scratch: pod_scratch_dir(ctx, &ns, &name),
        unshare: unshare.as_ref().ok().cloned(),
        pids: pid_dir(ctx, &ns, &name),
    };
    for c in spec.init_containers.iter().flatten() {
        plan.init.push(container_plan(ctx, pod, c, &volume_dirs).await?);
    }
    for c in &spec.containers {
        plan.main.push(container_plan(ctx, pod, c, &volume_dirs).await?);
    }
    let needs_mounts = plan.init.iter().chain(&plan.main).any(|c| !c.mounts.is_empty());
    if needs_mounts && let Err(why) = unshare {
        return Err(StartError::NoMountNamespace(format!(
            "pod {ns}/{name} mounts volumes, which needs a private mount namespace \
             (`unshare -m`), and this host does not permit one: {why}"
        )));
    }
    Ok(plan)
}

async fn container_plan(
    ctx: &Context,
    pod: &Pod,
    c: &Container,
    volume_dirs: &HashMap<String, PathBuf>,
) -> Result<ContainerPlan, StartError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let env = container_env(&ctx.client, pod, c).await.map_err(|e| prefix_err(e, &c.name))?;
    let lookup = |n: &str| env.get(n).map(str::to_string);
    let argv: Vec<String> = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .map(|a| expand(a, lookup))
        .collect();
    if argv.is_empty() {
        return Err(StartError::Fail(format!(
            "container {:?} has no command: embedded mode runs commands on the host and cannot \
             use an image's entrypoint",
            c.name
        )));
    }
    let mounts =
        container_mounts(volume_dirs, c.volume_mounts.as_deref().unwrap_or_default(), |s| {
            expand(s, lookup)
        })
        .map_err(|e| prefix_err(e, &c.name))?;
    let identity = identity::container_identity(pod, c, identity::server_identity())
        .map_err(|why| StartError::Fail(format!("container {:?}: {why}", c.name)))?;
    let argv = match &identity {
        None => argv,
        Some(who) => {
            let setpriv = system_command("setpriv").ok_or_else(|| {
                StartError::Fail(format!(
                    "container {:?} runs as uid {}, which needs the `setpriv` command \
                     (util-linux)",
                    c.name, who.uid
                ))
            })?;
            let mut wrapped = vec![setpriv.display().to_string()];
            wrapped.extend(who.setpriv_args());
            wrapped.push("--".into());
            wrapped.extend(argv);
            wrapped
        }
    };
    let mut vars: Vec<(String, String)> = env.vars().to_vec();
    // Job processes find `datasafed` (this binary) first on PATH, as KubeBlocks' injected one.
    let base_path = env
        .get("PATH")
        .map(str::to_string)
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_else(|| SYSTEM_PATH.into());
    vars.retain(|(n, _)| n != "PATH");
    vars.push(("PATH".into(), format!("{}:{base_path}", ctx.bin_dir().display())));
    if !vars.iter().any(|(n, _)| n == "HOME") {
        let home = match &identity {
            Some(who) => who.home.clone(),
            None => std::env::var("HOME").unwrap_or_else(|_| "/".into()),
        };
        vars.push(("HOME".into(), home));
    }
    if !vars.iter().any(|(n, _)| n == "HOSTNAME") {
        vars.push(("HOSTNAME".into(), pod_name.to_string()));
    }
    Ok(ContainerPlan {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        argv,
        env: vars,
        mounts,
        working_dir: c.working_dir.clone(),
        termination_path: c
            .termination_message_path
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| DEFAULT_TERMINATION_PATH.into()),
        fallback_to_logs: c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError"),
        log: log_path(ctx, ns, pod_name, &c.name),
    })
}

/// A command of the system's own PATH (not the container's), by absolute path.
fn system_command(name: &str) -> Option<PathBuf> {
    SYSTEM_PATH.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

fn prefix_err(e: Error, container: &str) -> Error {
    match e {
        Error::NotReady(m) => Error::NotReady(format!("container {container:?}: {m}")),
        Error::Invalid(m) => Error::Invalid(format!("container {container:?}: {m}")),
        other => other,
    }
}

/// How a pod run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub succeeded: bool,
    /// Set when the run was stopped from outside (the reason given to the kill switch).
    pub killed: Option<String>,
}

/// Runs the pod to completion (or until `kill` carries a reason), keeping its status current.
pub async fn execute(
    ctx: &Context,
    plan: &PodPlan,
    mut kill: watch::Receiver<Option<String>>,
) -> Result<Outcome, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &plan.namespace);
    let start = now();
    let mut init_statuses: Vec<ContainerStatus> =
        plan.init.iter().map(|c| waiting(c, "PodInitializing")).collect();
    let mut main_statuses: Vec<ContainerStatus> =
        plan.main.iter().map(|c| waiting(c, "PodInitializing")).collect();
    let mut status = PodStatus {
        phase: Some("Running".into()),
        start_time: Some(start.clone()),
        host_ip: Some("127.0.0.1".into()),
        pod_ip: Some("127.0.0.1".into()),
        ..PodStatus::default()
    };
    let write = |status: &PodStatus, init: &[ContainerStatus], main: &[ContainerStatus]| {
        let mut s = status.clone();
        s.init_container_statuses = (!init.is_empty()).then(|| init.to_vec());
        s.container_statuses = Some(main.to_vec());
        patch_status(&pods, &plan.name, s)
    };
    write(&status, &init_statuses, &main_statuses).await?;

    let mut failed = false;
    for (i, c) in plan.init.iter().enumerate() {
        init_statuses[i] = running(c);
        write(&status, &init_statuses, &main_statuses).await?;
        let t = run_container(plan, c, kill.clone()).await;
        failed = t.exit_code != 0;
        init_statuses[i] = terminated(c, t);
        if failed {
            break;
        }
    }
    if !failed && kill.borrow().is_none() {
        for (i, c) in plan.main.iter().enumerate() {
            main_statuses[i] = running(c);
        }
        write(&status, &init_statuses, &main_statuses).await?;
        let runs = plan.main.iter().map(|c| run_container(plan, c, kill.clone()));
        let results = futures::future::join_all(runs).await;
        for (i, (c, t)) in plan.main.iter().zip(results).enumerate() {
            failed |= t.exit_code != 0;
            main_statuses[i] = terminated(c, t);
        }
    }
    let killed = kill.borrow_and_update().clone();
    let succeeded = !failed && killed.is_none();
    status.phase = Some(if succeeded { "Succeeded" } else { "Failed" }.into());
    if let Some(reason) = &killed {
        status.reason = Some(reason.clone());
        status.message = Some(format!("Pod was stopped: {reason}"));
        // Containers that never started are reported as such, not left "PodInitializing".
        for (s, c) in main_statuses.iter_mut().zip(&plan.main) {
            if s.state.as_ref().is_some_and(|st| st.terminated.is_none()) {
                *s = terminated(c, Terminated::not_run(reason));
            }
        }
    }
    write(&status, &init_statuses, &main_statuses).await?;
    // Every container has ended; an empty record directory is just clutter.
    let _ = std::fs::remove_dir(&plan.pids);
    // The scratch dir holds Secret material; nothing needs it once the pod is done.
    if let Err(error) = tokio::fs::remove_dir_all(&plan.scratch).await
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(%error, dir = %plan.scratch.display(), "cannot remove pod scratch");
    }
    Ok(Outcome { succeeded, killed })
}

/// Merge-patches the pod's status; a pod deleted meanwhile is not an error.
pub async fn patch_status(pods: &Api<Pod>, name: &str, status: PodStatus) -> Result<(), Error> {
    let patch = serde_json::json!({ "status": status });
    match pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Clone)]
struct Terminated {
    exit_code: i32,
    reason: String,
    message: Option<String>,
    started_at: Time,
    finished_at: Time,
}

impl Terminated {
    fn not_run(reason: &str) -> Self {
        Terminated {
            exit_code: 137,
            reason: reason.to_string(),
            message: None,
            started_at: now(),
            finished_at: now(),
        }
    }
}

async fn run_container(
    plan: &PodPlan,
    c: &ContainerPlan,
    mut kill: watch::Receiver<Option<String>>,
) -> Terminated {
    let started_at = now();
    if let Some(reason) = kill.borrow_and_update().clone() {
        return Terminated::not_run(&reason);
    }
    let (exit_code, mut reason) = match spawn(plan, c) {
        Err(e) => {
            append_log(&c.log, &format!("holdfast: {e}\n"));
            (127, "StartError".to_string())
        }
        Ok(mut child) => {
            let pid = child.id();
            let record = pid.and_then(|pid| record_group(&plan.pids, &c.name, pid));
            let result = tokio::select! {
                status = child.wait() => match status {
                    Ok(s) => (exit_code_of(s), String::new()),
                    Err(e) => {
                        append_log(&c.log, &format!("holdfast: cannot wait for the process: {e}\n"));
                        (128, "Error".to_string())
                    }
                },
                reason = stopped(&mut kill) => {
                    kill_group(pid).await;
                    let _ = child.kill().await;
                    let _ = child.wait().await;
                    (137, reason)
                }
            };
            if let Some(path) = record {
                let _ = std::fs::remove_file(path);
            }
            result
        }
    };
    if reason.is_empty() {
        reason = if exit_code == 0 { "Completed" } else { "Error" }.into();
    }
    let mut message = read_message(plan, c);
    if message.is_none() && exit_code != 0 && c.fallback_to_logs {
        message = Some(tail_bytes(&tail_lines(&c.log, 80), 2048));
    }
    Terminated { exit_code, reason, message, started_at, finished_at: now() }
}

/// Completes with the kill reason once one is set; never if the sender goes away without one.
async fn stopped(kill: &mut watch::Receiver<Option<String>>) -> String {
    loop {
        if let Some(reason) = kill.borrow_and_update().clone() {
            return reason;
        }
        if kill.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn spawn(plan: &PodPlan, c: &ContainerPlan) -> Result<tokio::process::Child, String> {
    if let Some(parent) = c.log.parent() {
        private_dir(parent)
            .map_err(|e| format!("cannot create log dir {}: {e}", parent.display()))?;
    }
    // Logs print what jobs print, passwords included: owner-only like the rest of the data dir.
    let log = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&c.log)
        .map_err(|e| format!("cannot create log {}: {e}", c.log.display()))?;
    let log2 = log.try_clone().map_err(|e| format!("cannot share log file: {e}"))?;
    let mut cmd = if c.mounts.is_empty() {
        let mut cmd = tokio::process::Command::new(&c.argv[0]);
        cmd.args(&c.argv[1..]);
        if let Some(wd) = c.working_dir.as_deref().filter(|w| !w.is_empty()) {
            cmd.current_dir(wd);
        }
        cmd
    } else {
        let unshare = plan.unshare.as_ref().ok_or("no mount namespace available")?;
        let script = format!(
            "HOLDFAST_PATH=\"$PATH\"; PATH={SYSTEM_PATH}\n{}",
            mount_script(&c.mounts, c.working_dir.as_deref()).replace(
                "exec \"$@\"",
                "PATH=\"$HOLDFAST_PATH\"; unset HOLDFAST_PATH\nexec \"$@\""
            )
        );
        let mut cmd = tokio::process::Command::new(unshare);
        cmd.args(["-m", "--propagation", "private", "--", "/bin/sh", "-c", &script, "sh"]);
        cmd.args(&c.argv);
        cmd
    };
    cmd.env_clear()
        .envs(c.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        // Its own process group, so a kill reaches everything the command started.
        .process_group(0)
        .kill_on_drop(true);
    cmd.spawn().map_err(|e| format!("cannot start {:?}: {e}", c.argv[0]))
}

/// Records the process group `pid` leads (with its start time, so a reused pid is never
/// mistaken for it) for [`kill_leftovers`]. Returns the record's path.
fn record_group(dir: &Path, container: &str, pid: u32) -> Option<PathBuf> {
    let path = dir.join(container);
    let start = start_time(pid)?;
    let written = private_dir(dir).and_then(|()| std::fs::write(&path, format!("{pid} {start}\n")));
    match written {
        Ok(()) => Some(path),
        Err(error) => {
            // The pod still runs; only a crash in the middle of it would leave it unstopped.
            tracing::warn!(%error, path = %path.display(), "cannot record a job process group");
            None
        }
    }
}

/// Fields of `/proc/<pid>/stat` after the command name (which may hold spaces and parentheses):
/// index 0 is the state, 2 the process group, 19 the start time.
fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn start_time(pid: u32) -> Option<String> {
    proc_stat(pid)?.get(19).cloned()
}

/// Whether a live (not zombie) process is in process group `pgid`.
fn group_alive(pgid: u32) -> bool {
    let pgid = pgid.to_string();
    std::fs::read_dir("/proc").into_iter().flatten().flatten().any(|entry| {
        entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .and_then(proc_stat)
            .is_some_and(|f| f.first().is_some_and(|s| s != "Z") && f.get(2) == Some(&pgid))
    })
}

/// Stops the process groups a previous run of the server recorded for `pod` (it was killed
/// while they ran, so nothing stopped them) and waits until they are gone, so that a retry
/// never runs beside its predecessor. Returns how many groups were stopped.
pub async fn kill_leftovers(ctx: &Context, ns: &str, pod: &str) -> usize {
    /// SIGKILL is not refused; this only bounds an uninterruptible sleep (a hung mount).
    const WAIT: std::time::Duration = std::time::Duration::from_secs(10);
    let dir = pid_dir(ctx, ns, pod);
    let mut groups = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else { continue };
        let mut fields = text.split_whitespace();
        let (Some(Ok(pid)), Some(recorded)) = (fields.next().map(str::parse::<u32>), fields.next())
        else {
            continue;
        };
        // A leader with another start time is an unrelated process that got the pid. A leader
        // that is gone may have left members behind, and its pid cannot be reused while they
        // live, so the group is still ours to stop.
        if start_time(pid).is_some_and(|now| now != recorded) {
            continue;
        }
        if group_alive(pid) {
            groups.push(pid);
        }
    }
    for &pgid in &groups {
        kill_group(Some(pgid)).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while groups.iter().any(|g| group_alive(*g)) {
        if tokio::time::Instant::now() > deadline {
            tracing::warn!(pod, ?groups, "leftover job processes survived SIGKILL");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    if let Err(error) = std::fs::remove_dir_all(&dir)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(%error, dir = %dir.display(), "cannot remove job process records");
    }
    groups.len()
}

/// SIGKILLs the process group led by `pid`.
async fn kill_group(pid: Option<u32>) {
    let Some(pid) = pid else { return };
    let result = tokio::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    if let Err(error) = result {
        tracing::warn!(%error, pid, "cannot kill a job process group");
    }
}

fn exit_code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// The termination message the container left, through its mounts.
fn read_message(plan: &PodPlan, c: &ContainerPlan) -> Option<String> {
    let path = match host_path(&c.mounts, &c.termination_path) {
        Some(p) => p,
        // Outside any mount the process wrote to the host's file system directly, except for
        // the kubelet's per-container default file, which no host has.
        None if c.termination_path != DEFAULT_TERMINATION_PATH => {
            PathBuf::from(&c.termination_path)
        }
        None => return None,
    };
    let _ = plan;
    let file = std::fs::File::open(&path).ok()?;
    let mut buf = Vec::new();
    file.take(MESSAGE_MAX as u64).read_to_end(&mut buf).ok()?;
    if buf.is_empty() {
        return None;
    }
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    while text.len() > MESSAGE_MAX {
        text.pop();
    }
    Some(text)
}

/// The last `n` lines of a file (reading at most its last 64 KiB).
pub fn tail_lines(path: &Path, n: usize) -> String {
    let Ok(mut file) = std::fs::File::open(path) else { return String::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(64 * 1024);
    if file.seek(SeekFrom::Start(from)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    if file.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn tail_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

fn append_log(path: &Path, line: &str) {
    use std::io::Write as _;
    if let Some(parent) = path.parent() {
        let _ = private_dir(parent);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Creates `dir` and missing parents owner-only (0700; the umask can only remove bits), as
/// everything the server keeps in its data directory.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

fn base_status(c: &ContainerPlan, state: ContainerState, started: bool) -> ContainerStatus {
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: String::new(),
        ready: false,
        restart_count: 0,
        started: Some(started),
        state: Some(state),
        ..ContainerStatus::default()
    }
}

/// A container waiting to start, with why.
pub fn waiting(c: &ContainerPlan, reason: &str) -> ContainerStatus {
    waiting_named(&c.name, &c.image, reason, None)
}

/// A waiting container status by name (for pods that could not be planned yet).
pub fn waiting_named(
    name: &str,
    image: &str,
    reason: &str,
    message: Option<String>,
) -> ContainerStatus {
    ContainerStatus {
        name: name.to_string(),
        image: image.to_string(),
        image_id: String::new(),
        ready: false,
        restart_count: 0,
        started: Some(false),
        state: Some(ContainerState {
            waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message }),
            ..ContainerState::default()
        }),
        ..ContainerStatus::default()
    }
}

fn running(c: &ContainerPlan) -> ContainerStatus {
    base_status(
        c,
        ContainerState {
            running: Some(ContainerStateRunning { started_at: Some(now()) }),
            ..ContainerState::default()
        },
        true,
    )
}

fn terminated(c: &ContainerPlan, t: Terminated) -> ContainerStatus {
    base_status(
        c,
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: t.exit_code,
                reason: Some(t.reason),
                message: t.message,
                started_at: Some(t.started_at),
                finished_at: Some(t.finished_at),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        },
        false,
    )
}
