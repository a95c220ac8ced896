//! What a Restore restores: the backup, its ActionSet, and the chain of
//! backups whose prepareData runs, in order.
//!
//! - Full: the backup itself.
//! - Incremental: only the newest backup's prepareData runs, once, with `DP_BASE_BACKUP_NAME` and
//!   `DP_ANCESTOR_INCREMENTAL_BACKUP_NAMES` (oldest first) so the script walks the chain.
//! - Differential: the parent (Full) first, then the backup.
//! - Continuous: the newest Completed Full or Incremental of the same policy that ends inside
//!   [continuous start, restoreTime], then the continuous backup with `DP_RESTORE_TIME`.

use holdfast_api::kubeblocks::actionset::BackupType;
use holdfast_api::kubeblocks::backup::BackupPhase;
use holdfast_api::kubeblocks::restore::parse_restore_time;
use holdfast_api::kubeblocks::{ActionSet, Backup, Restore};
use k8s_openapi::api::core::v1::EnvVar;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::backup::chain::{backup_type, end_time};
use crate::backup::volume_snapshot;
use crate::backup::{ANNOTATION_BASE, ANNOTATION_PARENT, LABEL_BACKUP_POLICY, annotation, label};
use crate::kubeblocks_env::var;
use crate::{Context, Error, backup_method};

/// One backup whose restore actions run, with the env only it gets.
#[derive(Debug, Clone)]
pub struct BackupSet {
    pub backup: Backup,
    /// The ActionSet it was taken with; none for a volume-snapshot backup taken without one.
    pub action_set: Option<ActionSet>,
    pub backup_type: BackupType,
    /// `DP_*` variables specific to this step of the chain.
    pub env: Vec<EnvVar>,
}

/// Everything a Restore's Jobs are built from.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The backup named by `spec.backup`.
    pub backup: Backup,
    /// The backups whose prepareData runs, in order; the last is `backup`.
    pub sets: Vec<BackupSet>,
}

impl Plan {
    /// The set whose postReady actions run: the backup named by the Restore.
    pub fn last(&self) -> &BackupSet {
        // `resolve` never returns an empty chain.
        &self.sets[self.sets.len() - 1]
    }
}

/// Resolves and validates what `restore` restores.
///
/// # Errors
/// [`Error::Invalid`] when the restore cannot go on (the message says what to fix),
/// [`Error::NotReady`] while its backup has still to complete; API errors.
pub async fn resolve(ctx: &Context, restore: &Restore) -> Result<Plan, Error> {
    let spec = &restore.spec;
    let backups: Api<Backup> = Api::namespaced(ctx.client.clone(), &spec.backup.namespace);
    let Some(backup) = backups.get_opt(&spec.backup.name).await? else {
        return Err(Error::Invalid(format!(
            "backup {}/{} not found; spec.backup must name an existing Backup",
            spec.backup.namespace, spec.backup.name
        )));
    };
    let phase = backup.status.as_ref().and_then(|s| s.phase);
    // A Restore applied together with its Backup waits for it to finish (and says so) instead of
    // failing: only a backup that can no longer complete refuses the restore.
    let waiting = |phase: Option<BackupPhase>| {
        Error::NotReady(format!(
            "waiting for backup {} to complete (it is {})",
            backup.name_any(),
            phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "not started".into())
        ))
    };
    if matches!(phase, None | Some(BackupPhase::New)) {
        return Err(waiting(phase));
    }
    let action_set = action_set_of(ctx, &backup).await?;
    let kind = kind_of(action_set.as_ref());
    let usable = match kind {
        BackupType::Continuous => {
            matches!(phase, Some(BackupPhase::Completed | BackupPhase::Running))
        }
        _ => phase == Some(BackupPhase::Completed),
    };
    if !usable && phase == Some(BackupPhase::Running) {
        return Err(waiting(phase));
    }
    if !usable {
        return Err(Error::Invalid(format!(
            "backup {} is {}; only a Completed backup can be restored",
            backup.name_any(),
            phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "not started".into())
        )));
    }
    let snapshots = volume_snapshot::took_snapshots(&backup);
    // A snapshot backup restores by provisioning claims from its snapshots, actions or not.
    if let Some(set) = action_set.as_ref().filter(|s| s.spec.restore.is_none() && !snapshots) {
        return Err(Error::Invalid(format!(
            "actionset {} of backup {} has no spec.restore actions, so it cannot restore",
            set.name_any(),
            backup.name_any()
        )));
    }
    let ns = restore.namespace().unwrap_or_default();
    if snapshots && spec.backup.namespace != ns {
        return Err(Error::Invalid(format!(
            "backup {} took volume snapshots in namespace {}, and a claim can only be restored \
             from a VolumeSnapshot of its own namespace; create the Restore in namespace {}",
            backup.name_any(),
            spec.backup.namespace,
            spec.backup.namespace
        )));
    }
    let restore_time = match (&spec.restore_time, kind) {
        (Some(time), BackupType::Continuous) => Some(
            parse_restore_time(time)
                .map_err(|e| Error::Invalid(format!("spec.restoreTime {time:?}: {e}")))?,
        ),
        (Some(_), other) => {
            return Err(Error::Invalid(format!(
                "spec.restoreTime is only valid for a Continuous backup; backup {} is {other:?}",
                backup.name_any()
            )));
        }
        (None, BackupType::Continuous) => {
            return Err(Error::Invalid(format!(
                "backup {} is Continuous; set spec.restoreTime to the point in time to restore",
                backup.name_any()
            )));
        }
        (None, _) => None,
    };
    let sets = match kind {
        BackupType::Full => vec![set(backup.clone(), action_set, kind, Vec::new())],
        BackupType::Incremental => vec![incremental(ctx, backup.clone(), action_set).await?],
        BackupType::Differential => {
            let parent_name = chain_link(&backup, ANNOTATION_PARENT)?;
            let parent = completed(ctx, &backup, &parent_name).await?;
            let parent_set = action_set_of(ctx, &parent).await?;
            let parent_kind = kind_of(parent_set.as_ref());
            vec![
                set(parent, parent_set, parent_kind, Vec::new()),
                set(
                    backup.clone(),
                    action_set,
                    kind,
                    vec![
                        var("DP_BASE_BACKUP_NAME", parent_name.clone()),
                        var("DP_PARENT_BACKUP_NAME", parent_name),
                    ],
                ),
            ]
        }
        BackupType::Continuous => {
            // `restore_time` is Some for Continuous (checked above).
            let at = restore_time.unwrap_or_else(|| ctx.clock.now());
            continuous(ctx, &backup, action_set, at, spec.restore_time.clone().unwrap_or_default())
                .await?
        }
    };
    Ok(Plan { backup, sets })
}

/// The ActionSet `backup` was taken with: none for a backup of volume snapshots only.
async fn action_set_of(ctx: &Context, backup: &Backup) -> Result<Option<ActionSet>, Error> {
    if volume_snapshot::snapshot_only(backup) {
        return Ok(None);
    }
    backup_method::recorded_action_set(ctx, backup).await.map(Some)
}

/// The backup type its ActionSet gives a backup; a snapshot backup without one is Full.
fn kind_of(action_set: Option<&ActionSet>) -> BackupType {
    action_set.map_or(BackupType::Full, |a| a.spec.backup_type)
}

fn set(
    backup: Backup,
    action_set: Option<ActionSet>,
    backup_type: BackupType,
    env: Vec<EnvVar>,
) -> BackupSet {
    BackupSet { backup, action_set, backup_type, env }
}

fn chain_link(backup: &Backup, key: &str) -> Result<String, Error> {
    annotation(backup, key).filter(|v| !v.is_empty()).map(str::to_string).ok_or_else(|| {
        Error::Invalid(format!(
            "backup {} has no {key} annotation; its chain is unknown",
            backup.name_any()
        ))
    })
}

/// A Completed backup of the chain, by name, in `of`'s namespace.
async fn completed(ctx: &Context, of: &Backup, name: &str) -> Result<Backup, Error> {
    let ns = of.namespace().unwrap_or_default();
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(found) = api.get_opt(name).await? else {
        return Err(Error::Invalid(format!(
            "backup {name}, in the chain of backup {}, not found; the chain cannot be restored",
            of.name_any()
        )));
    };
    if found.status.as_ref().and_then(|s| s.phase) != Some(BackupPhase::Completed) {
        return Err(Error::Invalid(format!(
            "backup {name}, in the chain of backup {}, is not Completed",
            of.name_any()
        )));
    }
    Ok(found)
}

/// The newest backup's set with its ancestors named for the script.
async fn incremental(
    ctx: &Context,
    backup: Backup,
    action_set: Option<ActionSet>,
) -> Result<BackupSet, Error> {
    let base = chain_link(&backup, ANNOTATION_BASE)?;
    let mut ancestors = Vec::new();
    let mut parent = chain_link(&backup, ANNOTATION_PARENT)?;
    // Walk parents up to the base; a cycle or a chain longer than any real one is a corrupt chain.
    while parent != base {
        if ancestors.contains(&parent) || ancestors.len() > 10_000 {
            return Err(Error::Invalid(format!("the chain of backup {} loops", backup.name_any())));
        }
        let p = completed(ctx, &backup, &parent).await?;
        ancestors.push(parent);
        parent = chain_link(&p, ANNOTATION_PARENT)?;
    }
    completed(ctx, &backup, &base).await?;
    ancestors.reverse();
    let env = vec![
        var("DP_BASE_BACKUP_NAME", base),
        var("DP_ANCESTOR_INCREMENTAL_BACKUP_NAMES", ancestors.join(",")),
    ];
    Ok(set(backup, action_set, BackupType::Incremental, env))
}

/// The base backup and the continuous one for a point-in-time restore.
async fn continuous(
    ctx: &Context,
    backup: &Backup,
    action_set: Option<ActionSet>,
    at: Timestamp,
    at_text: String,
) -> Result<Vec<BackupSet>, Error> {
    let st = backup.status.clone().unwrap_or_default();
    let start = st
        .time_range
        .as_ref()
        .and_then(|r| r.start.as_ref())
        .or(st.start_timestamp.as_ref())
        .map(|t| t.0);
    let end = end_time(backup);
    if start.is_none_or(|s| at < s) || end.is_none_or(|e| at > e) {
        return Err(Error::Invalid(format!(
            "spec.restoreTime {at_text} is outside the recoverable range of backup {} ({} to {})",
            backup.name_any(),
            start.map(|t| t.to_string()).unwrap_or_else(|| "?".into()),
            end.map(|t| t.to_string()).unwrap_or_else(|| "?".into()),
        )));
    }
    let ns = backup.namespace().unwrap_or_default();
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &ns);
    let policy = label(backup, LABEL_BACKUP_POLICY).unwrap_or_default().to_string();
    let params = ListParams::default().labels(&format!("{LABEL_BACKUP_POLICY}={policy}"));
    let mut candidates: Vec<(Timestamp, Backup)> = api
        .list(&params)
        .await?
        .items
        .into_iter()
        .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Completed))
        .filter(|b| matches!(backup_type(b), Some(BackupType::Full | BackupType::Incremental)))
        .filter_map(|b| end_time(&b).map(|e| (e, b)))
        .filter(|(e, _)| *e <= at && start.is_none_or(|s| *e >= s))
        .collect();
    candidates.sort_by_key(|(e, _)| *e);
    let Some((base_end, base)) = candidates.pop() else {
        return Err(Error::Invalid(format!(
            "no Completed Full or Incremental backup of policy {policy} ends between the start of \
             backup {} and spec.restoreTime {at_text}; take a full backup first",
            backup.name_any()
        )));
    };
    let base_set_spec = action_set_of(ctx, &base).await?;
    let base_set = match kind_of(base_set_spec.as_ref()) {
        BackupType::Incremental => incremental(ctx, base.clone(), base_set_spec).await?,
        kind => set(base.clone(), base_set_spec, kind, Vec::new()),
    };
    let env = vec![
        var("DP_RESTORE_TIME", at_text),
        var("DP_RESTORE_TIMESTAMP", at.as_second().to_string()),
        var("DP_BASE_BACKUP_NAME", base.name_any()),
        var("DP_BASE_BACKUP_STOP_TIME", base_end.to_string()),
        var("DP_BASE_BACKUP_STOP_TIMESTAMP", base_end.as_second().to_string()),
    ];
    Ok(vec![base_set, set(backup.clone(), action_set, BackupType::Continuous, env)])
}
