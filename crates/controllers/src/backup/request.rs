//! Resolving a Backup into everything its actions need: policy → method → ActionSet (optional for
//! a volume-snapshot method) → repo → target pods (→ parent backup), with an error that says what
//! to fix when a link is missing.

use holdfast_api::kubeblocks::actionset::{BackupActionSpec, BackupType};
use holdfast_api::kubeblocks::backup_policy::{BackupMethod, BackupTarget, PodSelectionStrategy};
use holdfast_api::kubeblocks::backup_repo::BackupRepoPhase;
use holdfast_api::kubeblocks::{
    ActionSet, Backup, BackupPolicy, BackupRepo, BackupSchedule, Phase,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;

use super::chain::{self, Chain};
use super::volume_snapshot;
use super::{LABEL_BACKUP_REPO, LABEL_BACKUP_SCHEDULE, annotation, target_pods};
use crate::kubeblocks_env::RepoAccess;
use crate::{Context, Error, backup_method, target_pod};

/// How long a BackupRepo may stay Failed before the backups waiting for it fail too: a repo
/// that fails its pre-check is often fixed within moments (a credential typo), and a backup
/// should not be lost to that.
const REPO_FAILED_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// When the request is resolved: at the start, or again while the backup runs (the choices made
/// at the start, recorded on the Backup, are kept then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    New,
    Running,
}

/// Everything a backup's Jobs are built from.
#[derive(Debug, Clone)]
pub struct Request {
    pub backup: Backup,
    pub policy: BackupPolicy,
    pub method: BackupMethod,
    /// The method's ActionSet; a `snapshotVolumes` method may have none.
    pub action_set: Option<ActionSet>,
    /// Its backup actions (hooks, backupData, preDelete), if it has any.
    pub actions: Option<BackupActionSpec>,
    pub backup_type: BackupType,
    pub repo: BackupRepo,
    /// The method's target, or the policy's.
    pub target: BackupTarget,
    /// Target pods, in action order.
    pub pods: Vec<Pod>,
    /// How the Jobs (in the backup's namespace) reach the repo.
    pub repo_access: RepoAccess,
    /// Parent and base of an incremental or differential backup.
    pub chain: Option<Chain>,
    /// The schedule running a continuous backup.
    pub continuous: Option<Continuous>,
}

/// The schedule a continuous backup runs under.
#[derive(Debug, Clone)]
pub struct Continuous {
    /// The BackupSchedule's name.
    pub schedule: String,
    /// Its entry's cron expression for this method (`None` once the schedule is gone).
    pub cron: Option<String>,
    /// Whether the schedule still wants the backup: it exists, is not being deleted, and its
    /// entry for the method is enabled. Read once per reconcile, with `cron`.
    pub enabled: bool,
}

impl Continuous {
    /// `DP_ARCHIVE_INTERVAL` as upstream derives it from the cron expression: `*/N` minutes
    /// gives N×60 s, `*/N` hours N×3600 s, anything else 60 s.
    pub fn archive_interval(&self) -> String {
        let Some(cron) = self.cron.as_deref() else {
            return "60s".into();
        };
        let mut cron = cron.trim();
        if cron.starts_with("TZ=") || cron.starts_with("CRON_TZ=") {
            cron = cron.split_once(' ').map_or("", |(_, rest)| rest.trim());
        }
        if cron.starts_with('@') {
            return "60s".into();
        }
        let every = |field: Option<&str>| {
            field.and_then(|f| f.strip_prefix("*/")).map(|n| n.parse::<u64>().unwrap_or(0))
        };
        let mut fields = cron.split_whitespace();
        let seconds = match every(fields.next()) {
            Some(minutes) => minutes * 60,
            None => every(fields.next()).map_or(60, |hours| hours * 3600),
        };
        format!("{seconds}s")
    }
}

/// Resolves `backup`.
///
/// # Errors
/// [`Error::Invalid`] when the backup cannot go on (the message says what to fix),
/// [`Error::NotReady`] when something it needs is not ready yet, API errors.
pub async fn resolve(ctx: &Context, backup: &Backup, stage: Stage) -> Result<Request, Error> {
    let ns = backup.namespace().unwrap_or_default();
    let policy_name = &backup.spec.backup_policy_name;
    let policy = match backup_method::policy(ctx, &ns, policy_name).await {
        // Manifests are applied in any order (`kubectl apply -f dir/`): a Backup that arrives
        // before its policy waits for it rather than failing.
        Err(Error::Invalid(reason)) if stage == Stage::New => {
            return Err(Error::NotReady(format!("waiting for the policy: {reason}")));
        }
        other => other?,
    };
    if let Some(st) = &policy.status
        && st.phase == Some(Phase::Unavailable)
    {
        return Err(Error::Invalid(format!(
            "backuppolicy {policy_name} is Unavailable: {}",
            st.message.as_deref().unwrap_or("no reason given")
        )));
    }
    let method_name = &backup.spec.backup_method;
    let method = backup_method::method(&policy, method_name)?;
    let snapshots = method.takes_snapshots();
    let referrer = format!("backupMethod {method_name} of backuppolicy {policy_name}");
    if snapshots && volume_snapshot::target_volumes(&method).is_empty() {
        return Err(Error::Invalid(format!(
            "{referrer} sets snapshotVolumes but names no targetVolumes.volumes; list the pod \
             volumes to snapshot"
        )));
    }
    // A snapshot method needs no ActionSet; with one, its hooks (and backupData) run too.
    let action_set = match method.action_set_name.clone().filter(|n| !n.is_empty()) {
        Some(name) => Some(
            backup_method::action_set(
                ctx,
                &name,
                &referrer,
                "create it or fix the method's actionSetName",
            )
            .await?,
        ),
        None if snapshots => None,
        None => {
            return Err(Error::Invalid(format!(
                "{referrer} sets neither snapshotVolumes nor actionSetName"
            )));
        }
    };
    let actions = match &action_set {
        Some(set) => match set.spec.backup.clone() {
            Some(actions) => Some(actions),
            None if snapshots => None,
            None => {
                return Err(Error::Invalid(format!(
                    "actionset {} has no spec.backup actions, so it cannot take backups",
                    set.name_any()
                )));
            }
        },
        None => None,
    };
    // Upstream's rule: a snapshot backup without an ActionSet is Full.
    let backup_type = action_set.as_ref().map_or(BackupType::Full, |s| s.spec.backup_type);
    let continuous = match backup_type {
        BackupType::Continuous => Some(continuous(ctx, backup, action_set.as_ref()).await?),
        _ => None,
    };
    let target = method.target.clone().unwrap_or_else(|| policy.spec.target.clone());

    let repo = match stage {
        Stage::New => resolve_repo(ctx, backup, &policy).await?,
        Stage::Running => {
            let name =
                backup.status.as_ref().and_then(|s| s.backup_repo_name.clone()).unwrap_or_default();
            let repos: Api<BackupRepo> = Api::all(ctx.client.clone());
            repos.get_opt(&name).await?.ok_or_else(|| {
                Error::Invalid(format!("backuprepo {name} was deleted while the backup ran"))
            })?
        }
    };
    let repo_access = repo_access(ctx, &repo, &ns).await?;

    let pods = match stage {
        Stage::New => select_pods(ctx, &ns, &target, policy_name).await?,
        Stage::Running => recorded_pods(ctx, backup).await?,
    };

    let chain = match (backup_type, stage) {
        (BackupType::Incremental | BackupType::Differential, Stage::New) => {
            Some(chain::resolve(ctx, backup, &policy, &repo, backup_type, pods.len()).await?)
        }
        (BackupType::Incremental | BackupType::Differential, Stage::Running) => {
            match (
                annotation(backup, super::ANNOTATION_PARENT),
                annotation(backup, super::ANNOTATION_BASE),
            ) {
                (Some(parent), Some(base)) => {
                    Some(Chain { parent: parent.to_string(), base: base.to_string() })
                }
                _ => None,
            }
        }
        _ => None,
    };

    Ok(Request {
        backup: backup.clone(),
        policy,
        method,
        action_set,
        actions,
        backup_type,
        repo,
        target,
        pods,
        repo_access,
        chain,
        continuous,
    })
}

/// A continuous backup's schedule: upstream lets only a BackupSchedule create one (it runs
/// while the schedule's entry is enabled), and derives the archive interval from the entry's
/// cron expression.
async fn continuous(
    ctx: &Context,
    backup: &Backup,
    action_set: Option<&ActionSet>,
) -> Result<Continuous, Error> {
    let Some(schedule) = backup.labels().get(LABEL_BACKUP_SCHEDULE).cloned() else {
        return Err(Error::Invalid(format!(
            "actionset {} is of backupType Continuous, and a continuous backup is only created \
             by a BackupSchedule: enable method {} in a BackupSchedule instead of creating a \
             Backup",
            action_set.map(ResourceExt::name_any).unwrap_or_default(),
            backup.spec.backup_method
        )));
    };
    let ns = backup.namespace().unwrap_or_default();
    let schedules: Api<BackupSchedule> = Api::namespaced(ctx.client.clone(), &ns);
    let found = schedules.get_opt(&schedule).await?;
    let entry = found.as_ref().and_then(|s| {
        s.spec.schedules.iter().find(|e| e.backup_method == backup.spec.backup_method)
    });
    let live = found.as_ref().is_some_and(|s| s.metadata.deletion_timestamp.is_none());
    Ok(Continuous {
        cron: entry.map(|e| e.cron_expression.clone()),
        enabled: live && entry.is_some_and(|e| e.enabled == Some(true)),
        schedule,
    })
}

/// The repo: the Backup's label, else the policy's `backupRepoName`, else the single default.
async fn resolve_repo(
    ctx: &Context,
    backup: &Backup,
    policy: &BackupPolicy,
) -> Result<BackupRepo, Error> {
    let named =
        super::label(backup, LABEL_BACKUP_REPO)
            .map(|n| (n.to_string(), format!("the Backup's label {LABEL_BACKUP_REPO}")))
            .or_else(|| {
                policy.spec.backup_repo_name.clone().map(|n| {
                    (n, format!("spec.backupRepoName of backuppolicy {}", policy.name_any()))
                })
            });
    let how = format!("set spec.backupRepoName on backuppolicy {}", policy.name_any());
    let repo = crate::backup_repo::named_or_default(ctx, named, &how).await?;
    check_repo_ready(&repo, ctx.clock.now())?;
    Ok(repo)
}

/// Ready goes on; PreChecking waits; Failed waits a little, then fails the backup with the repo's
/// own explanation.
fn check_repo_ready(repo: &BackupRepo, now: Timestamp) -> Result<(), Error> {
    let name = repo.name_any();
    if repo.metadata.deletion_timestamp.is_some() {
        return Err(Error::Invalid(format!("backuprepo {name} is being deleted")));
    }
    let status = repo.status.clone().unwrap_or_default();
    match status.phase {
        Some(BackupRepoPhase::Ready) => Ok(()),
        Some(BackupRepoPhase::Failed) => {
            let conditions = status.conditions.unwrap_or_default();
            let failing = conditions.iter().find(|c| c.status == "False");
            let why = failing
                .map(|c| format!("{}: {}", c.type_, c.message))
                .unwrap_or_else(|| "no condition says why".into());
            let since = conditions.iter().map(|c| c.last_transition_time.0).max();
            let failed_for = since.map(|t| now.duration_since(t).unsigned_abs());
            if failed_for.is_some_and(|d| d >= REPO_FAILED_GRACE) || since.is_none() {
                Err(Error::Invalid(format!(
                    "backuprepo {name} is Failed ({why}); fix the BackupRepo and create a new \
                     Backup"
                )))
            } else {
                Err(Error::NotReady(format!("backuprepo {name} is Failed ({why}); waiting")))
            }
        }
        Some(BackupRepoPhase::Deleting) => {
            Err(Error::Invalid(format!("backuprepo {name} is being deleted")))
        }
        Some(BackupRepoPhase::PreChecking) | None => Err(Error::NotReady(format!(
            "waiting for backuprepo {name} to become Ready (it is {})",
            status.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "not checked yet".into())
        ))),
    }
}

/// How Jobs in `ns` reach `repo`: its tool-config Secret (and claim, for Mount access) there,
/// created (or brought up to date) by the BackupRepo controller's helper.
pub async fn repo_access(ctx: &Context, repo: &BackupRepo, ns: &str) -> Result<RepoAccess, Error> {
    crate::backup_repo::ensure_access(ctx, repo, ns).await.map_err(|e| match e {
        e @ Error::Kube(_) => e,
        // Whatever keeps the repo's configuration from this namespace, the repo's controller
        // is the one to fix it: the backup waits for it.
        other => Error::NotReady(format!(
            "the tool configuration of backuprepo {} is not ready in namespace {ns}: {other}",
            repo.name_any()
        )),
    })
}

/// Pods matching the target's selector that are running (or, being stored descriptions in
/// embedded mode, have no status): one for strategy Any, all for All; sorted by name.
async fn select_pods(
    ctx: &Context,
    ns: &str,
    target: &BackupTarget,
    policy_name: &str,
) -> Result<Vec<Pod>, Error> {
    let what = format!("the target podSelector of backuppolicy {policy_name}");
    let mut candidates: Vec<Pod> =
        target_pod::matching(ctx, ns, &target.pod_selector.label_selector, &what)
            .await?
            .into_iter()
            .filter(target_pod::is_usable)
            .collect();
    if candidates.is_empty() {
        return Err(Error::Invalid(format!(
            "no running pod in namespace {ns} matches the target podSelector of backuppolicy \
             {policy_name}; start the database pods or fix the selector"
        )));
    }
    if target.pod_selector.strategy == PodSelectionStrategy::Any {
        candidates.truncate(1);
    }
    Ok(candidates)
}

/// The pods chosen when the backup started.
async fn recorded_pods(ctx: &Context, backup: &Backup) -> Result<Vec<Pod>, Error> {
    let ns = backup.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut pods = Vec::new();
    for name in target_pods(backup) {
        // A pod that is gone only matters if an action still has to run for it; the Job
        // builder refuses a pod without a spec.
        let pod = api.get_opt(&name).await?.unwrap_or_else(|| {
            let mut gone = Pod::default();
            gone.metadata.name = Some(name.clone());
            gone
        });
        pods.push(pod);
    }
    Ok(pods)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_interval_follows_upstreams_reading_of_the_cron_expression() {
        let interval = |cron: Option<&str>| {
            Continuous { schedule: "s".into(), cron: cron.map(str::to_string), enabled: true }
                .archive_interval()
        };
        assert_eq!(interval(Some("*/5 * * * *")), "300s");
        assert_eq!(interval(Some("0 */2 * * *")), "7200s");
        assert_eq!(interval(Some("CRON_TZ=UTC */10 * * * *")), "600s");
        assert_eq!(interval(Some("0 3 * * *")), "60s");
        assert_eq!(interval(Some("@hourly")), "60s");
        assert_eq!(interval(None), "60s");
    }
}
