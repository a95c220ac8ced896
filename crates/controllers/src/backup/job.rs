//! The `batch/v1` Jobs of a backup, built like KubeBlocks builds them, and
//! reading their outcome back (Job conditions; the backupData container's termination message,
//! which carries `backup.info`).

use std::collections::BTreeMap;

use holdfast_api::go_duration::{GoDurationError, parse_go_duration, whole_seconds_up};
use holdfast_api::kubeblocks::Backup;
use holdfast_api::kubeblocks::actionset::{
    ActionSpec, BaseJobActionSpec, ExecActionSpec, JobActionSpec,
};
use holdfast_api::kubeblocks::backup::ActionType;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, ObjectReference, Pod, PodSpec, PodTemplateSpec,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::env::{self, BACKUP_INFO_FILE};
use super::request::Request;
use super::{LABEL_BACKUP_NAME, LABEL_MANAGED_BY, MANAGED_BY};
use crate::kubeblocks_env::{self, RepoAccess};
use crate::{Context, Error, owner, target_pod};

/// The emptyDir shared with the backupData container, holding `backup.info`.
pub const MANAGER_VOLUME: &str = "dp-manager";
/// Where [`MANAGER_VOLUME`] is mounted.
pub const MANAGER_MOUNT: &str = "/dp-manager";
/// The name of the backupData container (its termination message is `backup.info`).
pub const BACKUP_DATA_CONTAINER: &str = "backupdata";
/// Upstream's default `BackupPolicy.spec.backoffLimit`.
const DEFAULT_BACKOFF_LIMIT: i32 = 2;
/// The backoffLimit of a continuous backup's worker: restarted for as long as it is wanted.
const CONTINUOUS_BACKOFF_LIMIT: i32 = i32::MAX;
/// Kubernetes' limit on names of objects that become label values (Job names do).
const NAME_MAX: usize = 63;

/// Which step of the backup an action is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    PreBackup(usize),
    BackupData,
    /// VolumeSnapshots of the target volumes (a `snapshotVolumes` method); runs no Job.
    CreateVolumeSnapshot,
    PostBackup(usize),
}

/// One action of the plan: what runs, for which target pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedAction {
    /// `status.actions[].name`.
    pub name: String,
    pub kind: ActionKind,
    /// Index of the pod in the request's target pods.
    pub pod_index: usize,
    pub pod: String,
}

impl PlannedAction {
    /// The Job running this action: `dp-backup-<n>-<backup>-<uid8>` and the like, at most 63
    /// characters; `None` for the snapshot action, which runs none.
    pub fn job_name(&self, backup: &Backup) -> Option<String> {
        let n = self.pod_index;
        let prefix = match self.kind {
            ActionKind::PreBackup(i) => format!("dp-prebackup-{n}-{i}"),
            ActionKind::BackupData => format!("dp-backup-{n}"),
            ActionKind::CreateVolumeSnapshot => return None,
            ActionKind::PostBackup(i) => format!("dp-postbackup-{n}-{i}"),
        };
        Some(bounded_name(&prefix, backup))
    }

    /// `status.actions[].actionType`: `""` for the snapshot action, as upstream.
    pub fn action_type(&self) -> ActionType {
        match self.kind {
            ActionKind::CreateVolumeSnapshot => ActionType::None,
            _ => ActionType::Job,
        }
    }

    /// For messages: `backupData on pod pg-0`.
    pub fn describe(&self) -> String {
        match self.kind {
            ActionKind::PreBackup(i) => format!("preBackup[{i}] on pod {}", self.pod),
            ActionKind::BackupData => format!("backupData on pod {}", self.pod),
            ActionKind::CreateVolumeSnapshot => {
                format!("createVolumeSnapshot on pod {}", self.pod)
            }
            ActionKind::PostBackup(i) => format!("postBackup[{i}] on pod {}", self.pod),
        }
    }
}

/// The actions of a backup, in the order they run: per target pod, preBackup hooks, backupData,
/// createVolumeSnapshot (a `snapshotVolumes` method), postBackup hooks. Without ActionSet backup
/// actions (a snapshot method may have none) there are no hooks and no backupData.
pub fn plan(req: &Request) -> Vec<PlannedAction> {
    let actions = req.actions.as_ref();
    let pre = actions.and_then(|a| a.pre_backup.as_ref()).map_or(0, Vec::len);
    let post = actions.and_then(|a| a.post_backup.as_ref()).map_or(0, Vec::len);
    let mut plan = Vec::new();
    for (pod_index, pod) in req.pods.iter().enumerate() {
        let pod = pod.name_any();
        let mut add = |kind: ActionKind, name: String| {
            plan.push(PlannedAction { name, kind, pod_index, pod: pod.clone() });
        };
        for i in 0..pre {
            add(ActionKind::PreBackup(i), format!("prebackup-{i}-{pod}"));
        }
        if actions.is_some() {
            add(ActionKind::BackupData, format!("backupdata-{pod}"));
        }
        if req.method.takes_snapshots() {
            add(ActionKind::CreateVolumeSnapshot, super::volume_snapshot::action_name(&pod));
        }
        for i in 0..post {
            add(ActionKind::PostBackup(i), format!("postbackup-{i}-{pod}"));
        }
    }
    plan
}

/// `<prefix>-<backup>-<uid8>`, shortening the backup's name (never the uid) to fit 63
/// characters.
pub fn bounded_name(prefix: &str, backup: &Backup) -> String {
    let uid: String = backup.uid().unwrap_or_default().chars().take(8).collect();
    let name = backup.name_any();
    let room = NAME_MAX.saturating_sub(prefix.len() + uid.len() + 2);
    let mut cut: String = name.chars().take(room).collect();
    while cut.ends_with(['-', '.']) {
        cut.pop();
    }
    format!("{prefix}-{cut}-{uid}")
}

/// A name as a label value (at most 63 characters, ending alphanumeric).
pub fn label_value(name: &str) -> String {
    let mut cut: String = name.chars().take(NAME_MAX).collect();
    while cut.ends_with(['-', '.', '_']) {
        cut.pop();
    }
    cut
}

/// Builds the Job of one planned action.
///
/// # Errors
/// A failureReason when the action cannot be built (pod gone, volume or container missing).
pub fn build_action_job(
    ctx: &Context,
    req: &Request,
    planned: &PlannedAction,
) -> Result<Job, String> {
    let pod = req.pods.get(planned.pod_index).filter(|p| p.spec.is_some()).ok_or_else(|| {
        format!("target pod {} is gone, so {} cannot run", planned.pod, planned.describe())
    })?;
    let (Some(job_name), Some(actions)) = (planned.job_name(&req.backup), req.actions.as_ref())
    else {
        return Err(format!("{} runs no Job", planned.describe()));
    };
    match planned.kind {
        ActionKind::BackupData => {
            job_action_job(ctx, req, pod, &job_name, &actions.backup_data.job, true)
        }
        ActionKind::CreateVolumeSnapshot => Err(format!("{} runs no Job", planned.describe())),
        ActionKind::PreBackup(i) | ActionKind::PostBackup(i) => {
            let hooks = match planned.kind {
                ActionKind::PreBackup(_) => actions.pre_backup.as_deref(),
                _ => actions.post_backup.as_deref(),
            };
            match hooks.and_then(|h| h.get(i)) {
                Some(ActionSpec { job: Some(job), .. }) => {
                    job_action_job(ctx, req, pod, &job_name, job, false)
                }
                Some(ActionSpec { exec: Some(exec), .. }) => {
                    exec_job(req, pod, &job_name, exec, planned)
                }
                _ => Err(format!(
                    "{} in actionset {} has neither job nor exec",
                    planned.describe(),
                    req.action_set.as_ref().map(ResourceExt::name_any).unwrap_or_default()
                )),
            }
        }
    }
}

/// A job action (backupData or a `job` hook): the ActionSet's image and command with the full
/// backup environment, the manager emptyDir and the repo's tool config.
fn job_action_job(
    ctx: &Context,
    req: &Request,
    pod: &Pod,
    job_name: &str,
    spec: &JobActionSpec,
    backup_data: bool,
) -> Result<Job, String> {
    let (env, env_from) = env::backup_env(ctx, req, pod);
    let mut volumes = vec![manager_volume()];
    volumes.extend(req.repo_access.volumes());
    let mut mounts = vec![manager_mount()];
    mounts.extend(req.repo_access.mounts());
    let mut pod_spec = PodSpec::default();
    if spec.run_on_target_pod_node == Some(true) {
        // Physical tools read the database's files: the job mounts the target volumes and runs
        // where the target pod runs.
        let target_volumes = req.method.target_volumes.clone().unwrap_or_default();
        let source = pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default();
        // A mount names its volume: upstream's methods often list only `volumeMounts` (the
        // PostgreSQL addon's `archive-wal` does), and the volume comes with it.
        let mut names = target_volumes.volumes.clone().unwrap_or_default();
        for mount in target_volumes.volume_mounts.iter().flatten() {
            if !names.contains(&mount.name) {
                names.push(mount.name.clone());
            }
        }
        for name in names {
            let volume = source.iter().find(|v| v.name == name).cloned().ok_or_else(|| {
                format!(
                    "target volume {name} of backupMethod {} is not a volume of pod {}",
                    req.method.name,
                    pod.name_any()
                )
            })?;
            volumes.push(volume);
        }
        mounts.extend(target_volumes.volume_mounts.unwrap_or_default());
        let target = pod.spec.as_ref();
        if let Some(node) = target.and_then(|s| s.node_name.clone()) {
            pod_spec.node_selector =
                Some(BTreeMap::from([("kubernetes.io/hostname".to_string(), node)]));
        }
        pod_spec.tolerations = target.and_then(|s| s.tolerations.clone());
    }
    let name = if backup_data { BACKUP_DATA_CONTAINER } else { "action" };
    let container = Container {
        name: name.into(),
        image: Some(expand_vars(&spec.base.image, &env)),
        command: Some(spec.base.command.clone()),
        env: Some(env),
        env_from: (!env_from.is_empty()).then_some(env_from),
        volume_mounts: Some(mounts),
        resources: req.method.runtime_settings.as_ref().and_then(|r| r.resources.clone()),
        security_context: Some(root_security_context()),
        termination_message_path: backup_data.then(|| BACKUP_INFO_FILE.to_string()),
        ..Container::default()
    };
    pod_spec.containers = vec![container];
    pod_spec.volumes = Some(volumes);
    let mut job = job(req, job_name, pod_spec, None);
    if backup_data
        && req.continuous.is_some()
        && let Some(spec) = job.spec.as_mut()
    {
        // A continuous worker runs until its schedule entry is disabled, restarted whenever it
        // stops (upstream runs it as a StatefulSet, which restarts it forever).
        spec.backoff_limit = Some(CONTINUOUS_BACKOFF_LIMIT);
    }
    Ok(job)
}

/// An `exec` hook. Upstream runs `kubectl exec` into the target container; embedded pods are
/// descriptions of processes on this host, so the command runs as a Job with what the container
/// would have: its env, envFrom and volume mounts (the pod's volumes), bounded by `timeout`.
fn exec_job(
    req: &Request,
    pod: &Pod,
    job_name: &str,
    exec: &ExecActionSpec,
    planned: &PlannedAction,
) -> Result<Job, String> {
    let container = target_pod::container(pod, exec.container.as_deref()).ok_or_else(|| {
        format!(
            "{}: container {} not found in pod {}",
            planned.describe(),
            exec.container.as_deref().unwrap_or("(first)"),
            pod.name_any()
        )
    })?;
    let mounts = container.volume_mounts.clone().unwrap_or_default();
    let source = pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default();
    let volumes: Vec<Volume> =
        source.into_iter().filter(|v| mounts.iter().any(|m| m.name == v.name)).collect();
    let deadline = match exec.timeout.as_deref().filter(|t| !t.is_empty()) {
        Some(t) => Some(
            deadline_seconds(t)
                .map_err(|e| format!("{}: exec timeout: {e}", planned.describe()))?,
        ),
        None => None,
    };
    let pod_spec = PodSpec {
        containers: vec![Container {
            name: "exec".into(),
            image: container.image.clone(),
            command: Some(exec.command.clone()),
            env: container.env.clone(),
            env_from: container.env_from.clone(),
            volume_mounts: Some(mounts),
            working_dir: container.working_dir.clone(),
            ..Container::default()
        }],
        volumes: Some(volumes),
        ..PodSpec::default()
    };
    Ok(job(req, job_name, pod_spec, deadline))
}

/// A preDelete Job for one target pod (the pod may be gone by now).
pub fn build_pre_delete_job(
    ctx: &Context,
    req: &Request,
    pod_index: usize,
    pod_name: &str,
    spec: &BaseJobActionSpec,
) -> Job {
    let pod = req.pods.get(pod_index).filter(|p| p.spec.is_some());
    let env = env::pre_delete_env(ctx, req, pod, pod_name);
    let pod_spec = PodSpec {
        containers: vec![Container {
            name: "predelete".into(),
            image: Some(expand_vars(&spec.image, &env)),
            command: Some(spec.command.clone()),
            env: Some(env),
            volume_mounts: Some(req.repo_access.mounts()),
            security_context: Some(root_security_context()),
            ..Container::default()
        }],
        volumes: Some(req.repo_access.volumes()),
        ..PodSpec::default()
    };
    let name = bounded_name(&format!("dp-predelete-{pod_index}"), &req.backup);
    job(req, &name, pod_spec, None)
}

/// The script of the delete Job: refuses an empty path or one without the backup's name (the
/// upstream safety rule), removes the data, then the parent directories it left empty.
const DELETE_SCRIPT: &str = r#"set -eu
path="$1"
name="$2"
case "$path" in
  ""|"/") echo "refusing to delete: the backup path is empty" >&2; exit 1 ;;
esac
case "$path" in
  *"$name"*) ;;
  *) echo "refusing to delete $path: it does not contain the backup name $name" >&2; exit 1 ;;
esac
datasafed rm -r "$path"
dir=$(dirname "$path")
while [ "$dir" != "/" ] && [ "$dir" != "." ]; do
  if [ -n "$(datasafed list "$dir" 2>/dev/null || true)" ]; then break; fi
  datasafed rmdir "$dir" >/dev/null 2>&1 || true
  dir=$(dirname "$dir")
done
echo "deleted $path"
"#;

/// The Job that deletes a backup's data: `datasafed rm -r <status.path>` through the repo.
pub fn build_delete_job(
    ctx: &Context,
    backup: &Backup,
    repo: &RepoAccess,
    path: &str,
    backoff_limit: i32,
) -> Job {
    let pod_spec = PodSpec {
        containers: vec![Container {
            name: "delete".into(),
            image: Some("holdfast".into()),
            command: Some(vec![
                "sh".into(),
                "-c".into(),
                DELETE_SCRIPT.into(),
                "dp-delete".into(),
                path.into(),
                backup.name_any(),
            ]),
            env: Some(
                [
                    kubeblocks_env::var("DATASAFED_KOPIA_MAINTENANCE", "true"),
                    kubeblocks_env::var("DP_BACKUP_NAME", backup.name_any()),
                    kubeblocks_env::var("DP_DATASAFED_BIN_PATH", ctx.bin_dir().to_string_lossy()),
                ]
                .into_iter()
                .chain(repo.env())
                .collect(),
            ),
            volume_mounts: Some(repo.mounts()),
            security_context: Some(root_security_context()),
            ..Container::default()
        }],
        volumes: Some(repo.volumes()),
        restart_policy: Some("Never".into()),
        ..PodSpec::default()
    };
    let name = bounded_name("dp-delete", backup);
    job_object(backup, &name, pod_spec, backoff_limit, None)
}

fn job(req: &Request, name: &str, mut pod_spec: PodSpec, deadline: Option<i64>) -> Job {
    let sa = req.target.service_account_name.clone();
    pod_spec.service_account_name = (!sa.is_empty()).then_some(sa);
    let backoff = req.policy.spec.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT);
    job_object(&req.backup, name, pod_spec, backoff, deadline)
}

fn job_object(
    backup: &Backup,
    name: &str,
    mut pod_spec: PodSpec,
    backoff_limit: i32,
    deadline: Option<i64>,
) -> Job {
    let labels = BTreeMap::from([
        (LABEL_BACKUP_NAME.to_string(), label_value(&backup.name_any())),
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
    ]);
    pod_spec.restart_policy = Some("Never".into());
    Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: backup.namespace(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner::controller_reference(backup)]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(backoff_limit),
            active_deadline_seconds: deadline,
            ttl_seconds_after_finished: Some(crate::job_runner::FINISHED_JOB_TTL_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..ObjectMeta::default() }),
                spec: Some(pod_spec),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

fn manager_volume() -> Volume {
    Volume {
        name: MANAGER_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

fn manager_mount() -> VolumeMount {
    VolumeMount {
        name: MANAGER_VOLUME.into(),
        mount_path: MANAGER_MOUNT.into(),
        ..VolumeMount::default()
    }
}

/// Upstream runs backup containers as root without privilege escalation.
fn root_security_context() -> SecurityContext {
    SecurityContext {
        run_as_user: Some(0),
        allow_privilege_escalation: Some(false),
        ..SecurityContext::default()
    }
}

/// `$(VAR)` in an image string, from the literal env values (as upstream expands images).
fn expand_vars(text: &str, env: &[EnvVar]) -> String {
    let mut out = text.to_string();
    for var in env {
        if let Some(value) = &var.value {
            out = out.replace(&format!("$({})", var.name), value);
        }
    }
    out
}

/// `activeDeadlineSeconds` of a Go duration such as an exec action's `timeout`: whole seconds,
/// rounded up (`500ms` still gets one).
///
/// # Errors
/// The text is not a Go duration.
pub fn deadline_seconds(text: &str) -> Result<i64, GoDurationError> {
    let secs = whole_seconds_up(parse_go_duration(text.trim())?);
    Ok(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// Where a Job is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Running,
    Complete,
    /// With the condition's reason and message (the runner puts the log tail there).
    Failed(String),
}

/// A Job's state from its conditions.
pub fn state(job: &Job) -> JobState {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    let is_true = |t: &str| conditions.iter().find(|c| c.type_ == t && c.status == "True");
    if is_true("Complete").is_some() {
        return JobState::Complete;
    }
    if let Some(c) = is_true("Failed") {
        let reason = c.reason.clone().unwrap_or_else(|| "Failed".into());
        return JobState::Failed(match c.message.as_deref().filter(|m| !m.is_empty()) {
            Some(message) => format!("{reason}: {message}"),
            None => reason,
        });
    }
    JobState::Running
}

/// A reference to a Job for `status.actions[].objectRef`.
pub fn object_ref(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// The termination message of the backupData container of the Job's succeeded Pod: the
/// `backup.info` the script wrote.
pub async fn termination_message(
    ctx: &Context,
    ns: &str,
    job_name: &str,
) -> Result<Option<String>, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut list =
        pods.list(&ListParams::default().labels(&format!("job-name={job_name}"))).await?.items;
    list.retain(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"));
    list.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let message = list.last().and_then(|pod| {
        let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
        let status = statuses.iter().find(|c| c.name == BACKUP_DATA_CONTAINER)?;
        status.state.as_ref()?.terminated.as_ref()?.message.clone()
    });
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(name: &str) -> Backup {
        let mut b = Backup::new(name, Default::default());
        b.metadata.uid = Some("0123abcd-ffff-4444-8888-000000000000".into());
        b
    }

    #[test]
    fn job_names_keep_the_uid_within_63_characters() {
        assert_eq!(bounded_name("dp-backup-0", &backup("b1")), "dp-backup-0-b1-0123abcd");
        let long = "x".repeat(80);
        let name = bounded_name("dp-postbackup-1-2", &backup(&long));
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("-0123abcd"), "{name}");
        let dashed = format!("{}-y", "a".repeat(35));
        let name = bounded_name("dp-backup-0", &backup(&dashed));
        assert!(!name.contains("--"), "{name}");
    }

    #[test]
    fn deadlines_are_go_durations_in_whole_seconds() {
        assert_eq!(deadline_seconds("30s"), Ok(30));
        assert_eq!(deadline_seconds("1h30m"), Ok(5400));
        assert_eq!(deadline_seconds("1.5m"), Ok(90));
        assert_eq!(deadline_seconds("500ms"), Ok(1));
        assert!(deadline_seconds("5 minutes").is_err());
        assert!(deadline_seconds("10").is_err());
    }

    #[test]
    fn images_expand_env_references() {
        let env = vec![kubeblocks_env::var("IMAGE_TAG", "16.4")];
        assert_eq!(expand_vars("postgres:$(IMAGE_TAG)", &env), "postgres:16.4");
    }
}
