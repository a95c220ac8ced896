//! Backup: one backup of a cluster, taken by a method of a BackupPolicy.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::backup_policy::{BackupMethod, BackupTarget};
use super::{check_reference_name, check_retention_period, check_unchanged};
use crate::field::FieldError;
use crate::resource::Admit;

/// A request for one backup.
// kube's attribute repeats `category` and `printcolumn` keys by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "dataprotection.kubeblocks.io",
    version = "v1alpha1",
    kind = "Backup",
    namespaced,
    status = "BackupStatus",
    category = "kubeblocks",
    category = "dataprotection",
    printcolumn(name = "POLICY", type_ = "string", json_path = ".spec.backupPolicyName"),
    printcolumn(name = "METHOD", type_ = "string", json_path = ".spec.backupMethod"),
    printcolumn(name = "REPO", type_ = "string", json_path = ".status.backupRepoName"),
    printcolumn(name = "STATUS", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "TOTAL-SIZE", type_ = "string", json_path = ".status.totalSize"),
    printcolumn(name = "DURATION", type_ = "string", json_path = ".status.duration"),
    printcolumn(name = "DELETION-POLICY", type_ = "string", json_path = ".spec.deletionPolicy"),
    printcolumn(
        name = "CREATION-TIME",
        type_ = "string",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "COMPLETION-TIME",
        type_ = "string",
        json_path = ".status.completionTimestamp"
    ),
    printcolumn(name = "EXPIRATION-TIME", type_ = "string", json_path = ".status.expiration")
)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// The BackupPolicy this backup follows. Immutable.
    pub backup_policy_name: String,
    /// The name of a method of that policy. Immutable.
    pub backup_method: String,
    /// Whether deleting the Backup deletes its data; `Delete` when unset (upstream default).
    #[serde(default)]
    pub deletion_policy: BackupDeletionPolicy,
    /// How long to keep the backup (`7d`, `30d12h`, `1y`); forever when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_period: Option<String>,
    /// The parent of an incremental or differential backup. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_backup_name: Option<String>,
}

/// What happens to the data in the repo when the Backup is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BackupDeletionPolicy {
    // The data and its snapshots are deleted.
    #[default]
    Delete,
    // The data and its snapshots are kept.
    Retain,
}

/// Where a backup is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupPhase {
    // Created, not yet picked up.
    New,
    // Taking the backup.
    Running,
    // Done without errors.
    Completed,
    // Stopped by an error.
    Failed,
    // The backup and its data are being deleted.
    Deleting,
}

/// Observed state of a Backup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// Backup format version (`major.minor.patch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format_version: Option<String>,
    /// Where the backup is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// When the backup may be garbage-collected; unset means never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<Time>,
    /// When the backup started (server time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Time>,
    /// When the backup finished, also on failure (server time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timestamp: Option<Time>,
    /// How long the backup took, as a Go duration (`1h2m0.5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Size of the backed-up data (`1Gi`; bytes when there is no unit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size: Option<String>,
    /// The error that failed the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// The BackupRepo the data went to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_repo_name: Option<String>,
    /// The directory of the data inside the repo (absolute in the repo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The path of the Kopia repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kopia_repo_path: Option<String>,
    /// The PVC the data was stored on (Mount access).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_name: Option<String>,
    /// The time range of the data; for PITR, the recoverable range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_range: Option<BackupTimeRange>,
    /// The target as it was when the backup ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<BackupTarget>,
    /// The method as it was when the backup ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_method: Option<BackupMethod>,
    /// Each action of the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<ActionStatus>>,
    /// The volume snapshots taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshots: Option<Vec<VolumeSnapshotStatus>>,
    /// Extra information about the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extras: Option<Vec<String>>,
}

/// The time range of backed-up data.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupTimeRange {
    /// Zone offset, `-12:59` to `+13:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Start, in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Time>,
    /// End, in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Time>,
}

/// The state of one action of a backup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionStatus {
    /// The action's name.
    pub name: String,
    /// Where the action is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ActionPhase>,
    /// When the action started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Time>,
    /// When the action finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timestamp: Option<Time>,
    /// The error that failed the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Job, StatefulSet or empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_type: Option<ActionType>,
    /// Available replicas of a StatefulSet action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,
    /// The object running the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectReference>,
    /// Size of the data this action backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size: Option<String>,
    /// Time range of the data this action backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_range: Option<BackupTimeRange>,
    /// Volume snapshots this action took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshots: Option<Vec<VolumeSnapshotStatus>>,
}

/// Where an action is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ActionPhase {
    // Created, not yet picked up.
    New,
    // Running.
    Running,
    // Done without errors.
    Completed,
    // Stopped by an error.
    Failed,
}

/// What runs an action.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ActionType {
    // A Job.
    Job,
    // A StatefulSet (continuous backups).
    StatefulSet,
    // Nothing (e.g. a snapshot).
    #[serde(rename = "")]
    None,
}

/// One volume snapshot of a backup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotStatus {
    /// The VolumeSnapshot's name.
    pub name: String,
    /// The VolumeSnapshotContent's name.
    pub content_name: String,
    /// The volume snapshotted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_name: Option<String>,
    /// The snapshot's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
}

impl Backup {
    /// How long to keep this backup: `None` means forever (unset, empty or unparsable).
    pub fn retention(&self) -> Option<std::time::Duration> {
        let period = self.spec.retention_period.as_deref()?;
        crate::duration::parse_retention_period(period).ok().flatten()
    }
}

impl Admit for Backup {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let spec = &self.spec;
        check_reference_name(&mut errors, "spec.backupPolicyName", &spec.backup_policy_name);
        check_reference_name(&mut errors, "spec.backupMethod", &spec.backup_method);
        if let Some(period) = &spec.retention_period {
            check_retention_period(&mut errors, "spec.retentionPeriod", period);
        }
        if let Some(parent) = &spec.parent_backup_name {
            check_reference_name(&mut errors, "spec.parentBackupName", parent);
        }
        errors
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        // Upstream's `self == oldSelf` rules; deletionPolicy and retentionPeriod may change.
        let mut errors = Vec::new();
        let (new, old) = (&self.spec, &old.spec);
        check_unchanged(
            &mut errors,
            "spec.backupPolicyName",
            &new.backup_policy_name,
            &old.backup_policy_name,
        );
        check_unchanged(&mut errors, "spec.backupMethod", &new.backup_method, &old.backup_method);
        check_unchanged(
            &mut errors,
            "spec.parentBackupName",
            &new.parent_backup_name,
            &old.parent_backup_name,
        );
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubeblocks::testing::{
        admit, admit_example, assert_structural_crd, def, refused_fields,
    };
    use serde_json::{Value, json};

    const API: &str = "dataprotection.kubeblocks.io/v1alpha1";

    fn backup() -> Value {
        json!({
            "apiVersion": API, "kind": "Backup",
            "metadata": {"name": "pg-cluster-backup-20261121", "namespace": "default"},
            "spec": {
                "backupPolicyName": "pg-cluster-postgresql-backup-policy",
                "backupMethod": "pg-basebackup",
                "retentionPeriod": "30d12h"
            }
        })
    }

    #[test]
    fn admits_a_backup_and_defaults_deletion_policy() {
        let mut obj = backup();
        admit(&mut obj, None).unwrap();
        assert_eq!(obj["spec"]["deletionPolicy"], "Delete");
        let typed: Backup = serde_json::from_value(obj).unwrap();
        assert_eq!(typed.retention(), Some(std::time::Duration::from_secs((30 * 24 + 12) * 3600)));
    }

    #[test]
    fn rules_name_their_fields() {
        let mut obj = backup();
        obj["spec"]["backupPolicyName"] = json!("");
        obj["spec"]["backupMethod"] = json!("PG basebackup");
        obj["spec"]["retentionPeriod"] = json!("7 days");
        assert_eq!(
            refused_fields(obj),
            ["spec.backupPolicyName", "spec.backupMethod", "spec.retentionPeriod"]
        );
    }

    #[test]
    fn deletion_policy_is_an_enum() {
        let mut obj = backup();
        obj["spec"]["deletionPolicy"] = json!("Keep");
        assert_eq!(refused_fields(obj), ["spec.deletionPolicy"]);
        let schema = &def(API, "Backup").schema["properties"]["spec"];
        assert_eq!(schema["properties"]["deletionPolicy"]["enum"], json!(["Delete", "Retain"]));
        assert_eq!(schema["required"], json!(["backupMethod", "backupPolicyName"]));
    }

    #[test]
    fn policy_method_and_parent_are_immutable() {
        let mut old = backup();
        admit(&mut old, None).unwrap();
        for (field, value) in [
            ("backupPolicyName", "other-policy"),
            ("backupMethod", "volume-snapshot"),
            ("parentBackupName", "b0"),
        ] {
            let mut new = old.clone();
            new["spec"][field] = json!(value);
            let errors = admit(&mut new, Some(&old)).unwrap_err();
            assert_eq!(errors[0].field, format!("spec.{field}"));
        }
        let mut retained = old.clone();
        retained["spec"]["deletionPolicy"] = json!("Retain");
        retained["spec"]["retentionPeriod"] = json!("1y");
        admit(&mut retained, Some(&old)).unwrap();
    }

    #[test]
    fn status_round_trips() {
        let mut obj = backup();
        obj["status"] = json!({
            "phase": "Completed", "totalSize": "1234567", "duration": "1m3s",
            "startTimestamp": "2026-11-21T10:00:00Z", "completionTimestamp": "2026-11-21T10:01:03Z",
            "timeRange": {"start": "2026-11-21T10:00:01Z", "end": "2026-11-21T10:01:02Z", "timeZone": "+00:00"},
            "actions": [{"name": "dp-backup-0", "phase": "Completed", "actionType": "Job"}],
            "backupRepoName": "local-repo", "path": "/default/pg-cluster-backup-20261121"
        });
        let expected = obj["status"].clone();
        admit(&mut obj, None).unwrap();
        assert_eq!(obj["status"], expected);
        let mut bad = backup();
        bad["status"] = json!({"phase": "Exploded"});
        assert_eq!(refused_fields(bad), ["status.phase"]);
    }

    #[test]
    fn crd_is_structural_with_upstream_columns() {
        assert_structural_crd(API, "Backup");
        let names: Vec<_> =
            def(API, "Backup").printer_columns.iter().map(|c| c.name.clone()).collect();
        assert_eq!(
            names,
            [
                "POLICY",
                "METHOD",
                "REPO",
                "STATUS",
                "TOTAL-SIZE",
                "DURATION",
                "DELETION-POLICY",
                "CREATION-TIME",
                "COMPLETION-TIME",
                "EXPIRATION-TIME"
            ]
        );
    }

    #[test]
    fn example_admits() {
        let objs = admit_example("kubeblocks-backup.yaml");
        assert_eq!(objs[0]["spec"]["deletionPolicy"], "Delete");
    }
}
