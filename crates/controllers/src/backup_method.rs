//! How a backup is taken, found by following references: a Backup (or BackupSchedule) names a
//! BackupPolicy and one of its methods, the method names an ActionSet, and a finished Backup
//! records the ActionSet it ran. A reference that leads nowhere is an [`Error::Invalid`] whose
//! message says what to create or fix.

use holdfast_api::kubeblocks::backup_policy::BackupMethod;
use holdfast_api::kubeblocks::{ActionSet, Backup, BackupPolicy};
use kube::ResourceExt;
use kube::api::Api;

use crate::{Context, Error};

/// The BackupPolicy `name` in `ns`.
///
/// # Errors
/// [`Error::Invalid`] when it does not exist; API errors.
pub async fn policy(ctx: &Context, ns: &str, name: &str) -> Result<BackupPolicy, Error> {
    let policies: Api<BackupPolicy> = Api::namespaced(ctx.client.clone(), ns);
    policies.get_opt(name).await?.ok_or_else(|| {
        Error::Invalid(format!(
            "backuppolicy {name} not found in namespace {ns}; create it or set \
             spec.backupPolicyName to an existing BackupPolicy"
        ))
    })
}

/// The method `name` of `policy`.
///
/// # Errors
/// [`Error::Invalid`] listing the methods the policy has.
pub fn method(policy: &BackupPolicy, name: &str) -> Result<BackupMethod, Error> {
    policy.spec.backup_methods.iter().find(|m| m.name == name).cloned().ok_or_else(|| {
        let known: Vec<&str> = policy.spec.backup_methods.iter().map(|m| m.name.as_str()).collect();
        Error::Invalid(format!(
            "backupMethod {name} is not defined in backuppolicy {} (it has: {})",
            policy.name_any(),
            known.join(", ")
        ))
    })
}

/// The ActionSet `name`, which `referrer` names.
///
/// # Errors
/// [`Error::Invalid`] "actionset … not found (referenced by `referrer`); `remedy`"; API errors.
pub async fn action_set(
    ctx: &Context,
    name: &str,
    referrer: &str,
    remedy: &str,
) -> Result<ActionSet, Error> {
    let action_sets: Api<ActionSet> = Api::all(ctx.client.clone());
    action_sets.get_opt(name).await?.ok_or_else(|| {
        Error::Invalid(format!("actionset {name} not found (referenced by {referrer}); {remedy}"))
    })
}

/// The ActionSet a backup was taken with (`status.backupMethod.actionSetName`).
///
/// # Errors
/// [`Error::Invalid`] when the backup records none or it is gone; API errors.
pub async fn recorded_action_set(ctx: &Context, backup: &Backup) -> Result<ActionSet, Error> {
    let name = backup
        .status
        .as_ref()
        .and_then(|s| s.backup_method.as_ref())
        .and_then(|m| m.action_set_name.clone())
        .filter(|n| !n.is_empty());
    let Some(name) = name else {
        return Err(Error::Invalid(format!(
            "backup {} records no status.backupMethod.actionSetName; only backups taken with an \
             ActionSet or with volume snapshots can be restored by a Restore",
            backup.name_any()
        )));
    };
    let referrer = format!("status.backupMethod of backup {}", backup.name_any());
    action_set(ctx, &name, &referrer, "recreate it to restore this backup").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_method_lists_the_known_ones() {
        let policy: BackupPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "pg", "namespace": "default"},
            "spec": {
                "target": {"podSelector": {"matchLabels": {"app": "pg"}}, "serviceAccountName": "pg"},
                "backupMethods": [{"name": "dump", "actionSetName": "as-dump"}, {"name": "base", "actionSetName": "as-base"}]
            }
        }))
        .unwrap();
        assert_eq!(method(&policy, "base").unwrap().action_set_name.as_deref(), Some("as-base"));
        let error = method(&policy, "snap").unwrap_err();
        assert_eq!(
            error.to_string(),
            "backupMethod snap is not defined in backuppolicy pg (it has: dump, base)"
        );
        assert_eq!(error.kind(), crate::error::ErrorKind::Permanent);
    }
}
