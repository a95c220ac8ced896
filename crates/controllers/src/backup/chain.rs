//! Incremental and differential chains: which backup a new one builds on.
//!
//! - An Incremental backup builds on the latest Incremental of the same policy and repo when that
//!   one is newer than the latest Full and belongs to it; otherwise on the latest Full.
//! - A Differential backup builds on the latest Full (upstream rejects the type at run time;
//!   here it runs as a Job like Incremental, with parent = base = that Full).
//! - `spec.parentBackupName` overrides the choice on on-demand backups only, and is validated.
//!
//! The base is the Full at the root: the parent itself when it is Full, else the parent's base.

use holdfast_api::kubeblocks::actionset::BackupType;
use holdfast_api::kubeblocks::backup::BackupPhase;
use holdfast_api::kubeblocks::{Backup, BackupPolicy, BackupRepo};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::{
    ANNOTATION_BASE, ANNOTATION_PARENT, LABEL_AUTOBACKUP, LABEL_BACKUP_POLICY, LABEL_BACKUP_REPO,
    LABEL_BACKUP_SCHEDULE, LABEL_BACKUP_TYPE, annotation, label, phase, target_pods,
};
use crate::{Context, Error};

/// The parent and the base (root Full) of a chained backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub parent: String,
    pub base: String,
}

/// The chain of `backup`, a `kind` (Incremental or Differential) backup with `targets` target
/// pods, in `repo`.
///
/// # Errors
/// [`Error::Invalid`] saying why no parent can be used; API errors.
pub async fn resolve(
    ctx: &Context,
    backup: &Backup,
    policy: &BackupPolicy,
    repo: &BackupRepo,
    kind: BackupType,
    targets: usize,
) -> Result<Chain, Error> {
    let ns = backup.namespace().unwrap_or_default();
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &ns);
    let parent = match backup.spec.parent_backup_name.as_deref().filter(|p| !p.is_empty()) {
        Some(name) => {
            if label(backup, LABEL_BACKUP_SCHEDULE).is_some()
                || label(backup, LABEL_AUTOBACKUP) == Some("true")
            {
                return Err(Error::Invalid(
                    "spec.parentBackupName is only allowed on on-demand backups, not on backups \
                     a BackupSchedule creates"
                        .into(),
                ));
            }
            api.get_opt(name).await?.ok_or_else(|| {
                Error::Invalid(format!(
                    "parent backup {name} (spec.parentBackupName) not found in namespace {ns}"
                ))
            })?
        }
        None => {
            let selector = format!(
                "{LABEL_BACKUP_POLICY}={},{LABEL_BACKUP_REPO}={}",
                policy.name_any(),
                repo.name_any()
            );
            let siblings = api.list(&ListParams::default().labels(&selector)).await?.items;
            pick_parent(backup, kind, siblings).ok_or_else(|| {
                Error::Invalid(format!(
                    "no Completed Full backup of backuppolicy {} in backuprepo {} to base this \
                     {kind:?} backup on; take a Full backup first",
                    policy.name_any(),
                    repo.name_any()
                ))
            })?
        }
    };
    validate(backup, &parent, policy, repo, kind, targets)?;
    let base = if backup_type(&parent) == Some(BackupType::Full) {
        parent.name_any()
    } else {
        annotation(&parent, ANNOTATION_BASE).map(str::to_string).ok_or_else(|| {
            Error::Invalid(format!(
                "parent backup {} is not Full and records no base backup",
                parent.name_any()
            ))
        })?
    };
    Ok(Chain { parent: parent.name_any(), base })
}

/// The automatic choice among the Completed backups of the same policy and repo.
pub fn pick_parent(backup: &Backup, kind: BackupType, siblings: Vec<Backup>) -> Option<Backup> {
    let mut done: Vec<Backup> = siblings
        .into_iter()
        .filter(|b| b.name_any() != backup.name_any())
        .filter(|b| b.metadata.deletion_timestamp.is_none())
        .filter(|b| phase(b) == Some(BackupPhase::Completed))
        .filter(|b| end_time(b).is_some())
        .collect();
    done.sort_by_key(|b| (end_time(b), b.name_any()));
    let latest_full = done.iter().rev().find(|b| backup_type(b) == Some(BackupType::Full))?;
    if kind == BackupType::Differential {
        return Some(latest_full.clone());
    }
    // The incrementals built on that Full were all taken after it, whatever their timestamps
    // say (times have one-second resolution, so a quick chain ties). The newest of them is the
    // chain's tip: the one no other incremental of the chain names as its parent; if the chain
    // ever branched, the latest-ending tip wins.
    let full_name = latest_full.name_any();
    let chain: Vec<&Backup> = done
        .iter()
        .filter(|b| backup_type(b) == Some(BackupType::Incremental))
        .filter(|b| annotation(*b, ANNOTATION_BASE) == Some(full_name.as_str()))
        .collect();
    let is_parent =
        |name: &str| chain.iter().any(|b| annotation(*b, ANNOTATION_PARENT) == Some(name));
    let tip = chain.iter().rev().find(|b| !is_parent(&b.name_any()));
    Some(tip.map_or_else(|| latest_full.clone(), |b| (*b).clone()))
}

fn validate(
    backup: &Backup,
    parent: &Backup,
    policy: &BackupPolicy,
    repo: &BackupRepo,
    kind: BackupType,
    targets: usize,
) -> Result<(), Error> {
    let name = parent.name_any();
    let invalid = |why: String| Err(Error::Invalid(format!("parent backup {name} {why}")));
    if phase(parent) != Some(BackupPhase::Completed) {
        return invalid(format!("is not Completed (it is {:?})", phase(parent)));
    }
    if label(parent, LABEL_BACKUP_POLICY) != Some(policy.name_any().as_str()) {
        return invalid(format!("does not belong to backuppolicy {}", policy.name_any()));
    }
    if label(parent, LABEL_BACKUP_REPO) != Some(repo.name_any().as_str()) {
        return invalid(format!("is not stored in backuprepo {}", repo.name_any()));
    }
    let parent_type = backup_type(parent);
    // This API version has no compatibleMethod: a Full of the same policy is compatible, and a
    // chained parent must have been taken with the same method.
    if parent_type != Some(BackupType::Full)
        && parent.spec.backup_method != backup.spec.backup_method
    {
        return invalid(format!(
            "was taken with method {}, not {}",
            parent.spec.backup_method, backup.spec.backup_method
        ));
    }
    if kind == BackupType::Differential && parent_type != Some(BackupType::Full) {
        return invalid("is not a Full backup; a Differential backup builds on a Full".into());
    }
    if end_time(parent).is_none() {
        return invalid("has no end time".into());
    }
    let parent_targets = target_pods(parent).len();
    if parent_targets != targets {
        return invalid(format!(
            "has {parent_targets} target pods and this backup {targets}; the shard counts must match"
        ));
    }
    Ok(())
}

/// The ActionSet type recorded on a backup.
pub fn backup_type(backup: &Backup) -> Option<BackupType> {
    match label(backup, LABEL_BACKUP_TYPE)? {
        "Full" => Some(BackupType::Full),
        "Incremental" => Some(BackupType::Incremental),
        "Differential" => Some(BackupType::Differential),
        "Continuous" => Some(BackupType::Continuous),
        _ => None,
    }
}

/// When the backed-up data ends: `timeRange.end`, else the completion time.
pub fn end_time(backup: &Backup) -> Option<Timestamp> {
    let st = backup.status.as_ref()?;
    st.time_range
        .as_ref()
        .and_then(|r| r.end.as_ref())
        .or(st.completion_timestamp.as_ref())
        .map(|t| t.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(name: &str, kind: &str, parent: Option<&str>, base: Option<&str>) -> Backup {
        let mut annotations = serde_json::Map::new();
        if let Some(p) = parent {
            annotations.insert(ANNOTATION_PARENT.into(), p.into());
        }
        if let Some(b) = base {
            annotations.insert(ANNOTATION_BASE.into(), b.into());
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1",
            "kind": "Backup",
            "metadata": {"name": name, "labels": {LABEL_BACKUP_TYPE: kind}, "annotations": annotations},
            "spec": {"backupPolicyName": "p", "backupMethod": "m"},
            // Every backup ends in the same second: a quick chain ties on timestamps.
            "status": {"phase": "Completed", "completionTimestamp": "2026-11-22T00:00:00Z"}
        }))
        .expect("a valid Backup")
    }

    #[test]
    fn the_chain_tip_is_picked_even_when_timestamps_tie() {
        let new = done("inc3", "Incremental", None, None);
        let siblings = vec![
            done("inc2", "Incremental", Some("inc1"), Some("full1")),
            done("full1", "Full", None, None),
            done("inc1", "Incremental", Some("full1"), Some("full1")),
        ];
        let parent = pick_parent(&new, BackupType::Incremental, siblings.clone());
        assert_eq!(parent.map(|b| b.name_any()).as_deref(), Some("inc2"));
        // A Differential always builds on the Full.
        let parent = pick_parent(&new, BackupType::Differential, siblings);
        assert_eq!(parent.map(|b| b.name_any()).as_deref(), Some("full1"));
        // Only the Full: it is the parent.
        let parent =
            pick_parent(&new, BackupType::Incremental, vec![done("full1", "Full", None, None)]);
        assert_eq!(parent.map(|b| b.name_any()).as_deref(), Some("full1"));
    }
}
