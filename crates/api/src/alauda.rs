//! `middleware.alauda.io/v1`: PostgresBackup (Alauda's published API reference), a base backup
//! of one PostgreSQL cluster's primary, recording the LSNs and version a point-in-time restore needs.
//!
//! No public source of the upstream CRD exists, so the published reference is the whole
//! contract; columns and rules beyond it are holdfast's own.

// kube's `printcolumn(...)` repeats keys such as `type_ = "string"` across columns, which clippy's
// duplicated_attributes lint takes for duplicate attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::field::FieldError;
use crate::resource::{Admit, ResourceDef};

/// Definitions of the Alauda kinds.
pub fn definitions() -> Vec<ResourceDef> {
    vec![ResourceDef::custom::<PostgresBackup>()]
}

/// PostgresBackupSpec defines the desired state of PostgresBackup
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "middleware.alauda.io",
    version = "v1",
    kind = "PostgresBackup",
    namespaced,
    status = "PostgresBackupStatus",
    doc = "PostgresBackup is the Schema for the postgresbackups API",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.cluster",
        description = "The PostgreSQL cluster backed up"
    ),
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.state",
        description = "running, succeeded, failed or deleteFailed"
    ),
    printcolumn(
        name = "PG Version",
        type_ = "string",
        json_path = ".status.pgVersion",
        priority = 1
    ),
    printcolumn(
        name = "Start LSN",
        type_ = "integer",
        format = "int64",
        json_path = ".status.startLsn",
        priority = 1
    ),
    printcolumn(
        name = "Finish LSN",
        type_ = "integer",
        format = "int64",
        json_path = ".status.finishLsn",
        priority = 1
    ),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.executeNode", priority = 1),
    printcolumn(name = "Started", type_ = "date", json_path = ".status.startTime"),
    printcolumn(name = "Finished", type_ = "date", json_path = ".status.finishTime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct PostgresBackupSpec {
    /// Cluster is the name of the PostgreSQL cluster to backup
    pub cluster: String,
    /// ExecuteNode specifies the node where the backup job should run. If empty, the backup
    /// controller will automatically select a node
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execute_node: Option<String>,
}

/// The state of a backup operation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PostgresBackupState {
    /// Not started yet.
    #[serde(rename = "")]
    Pending,
    /// The base backup is being taken.
    #[serde(rename = "running")]
    Running,
    /// The backup failed; see `error`.
    #[serde(rename = "failed")]
    Failed,
    /// The backup is complete and restorable.
    #[serde(rename = "succeeded")]
    Succeeded,
    /// Deleting the backup's data failed; see `error`.
    #[serde(rename = "deleteFailed")]
    DeleteFailed,
}

/// PostgresBackupStatus defines the observed state of PostgresBackup
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresBackupStatus {
    /// BackupName is the unique name of this backup instance
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_name: Option<String>,
    /// ClusterUid is the unique identifier of the PostgreSQL cluster
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_uid: Option<String>,
    /// ConfigBackupStorage contains the configuration for the backup storage
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_backup_storage: Option<ConfigBackupStorage>,
    /// Error contains any error messages from the backup operation
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// ExecuteNode is the node where the backup job is running
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execute_node: Option<String>,
    /// FinishLsn is the log sequence number when the backup finished
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_lsn: Option<i64>,
    /// FinishTime is when the backup operation completed
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<Time>,
    /// LastModified is the timestamp when the backup was last modified
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<Time>,
    /// PGVersion is the PostgreSQL version of the cluster being backed up
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_version: Option<String>,
    /// StartLsn is the log sequence number when the backup started
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_lsn: Option<i64>,
    /// StartTime is when the backup operation began
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// State represents the current state of the backup operation
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<PostgresBackupState>,
}

/// ConfigBackupStorage contains the configuration for the backup storage
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ConfigBackupStorage {
    /// The bucket the backup is stored in.
    pub bucket: String,
    /// The name of the storage configuration.
    pub name: String,
    /// The namespace of the storage configuration.
    pub namespace: String,
}

/// A cluster or node name must be a DNS-1123 subdomain, as Kubernetes object names are.
fn dns_subdomain_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("may not be empty");
    }
    if name.len() > 253 {
        return Some("must be no more than 253 characters");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.split('.').all(label_ok) {
        None
    } else {
        Some(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        )
    }
}

impl Admit for PostgresBackup {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        match dns_subdomain_problem(&self.spec.cluster) {
            Some(_) if self.spec.cluster.is_empty() => {
                errors.push(FieldError::required(
                    "spec.cluster",
                    "the PostgreSQL cluster to back up",
                ));
            }
            Some(problem) => {
                errors.push(FieldError::invalid("spec.cluster", &self.spec.cluster, problem))
            }
            None => {}
        }
        if let Some(node) = self.spec.execute_node.as_deref().filter(|n| !n.is_empty())
            && let Some(problem) = dns_subdomain_problem(node)
        {
            errors.push(FieldError::invalid("spec.executeNode", node, problem));
        }
        if let Some(status) = &self.status {
            for (field, lsn) in
                [("status.startLsn", status.start_lsn), ("status.finishLsn", status.finish_lsn)]
            {
                if let Some(v) = lsn.filter(|v| *v < 0) {
                    errors.push(FieldError::invalid(field, v, "an LSN is never negative"));
                }
            }
            if let (Some(start), Some(finish)) = (status.start_lsn, status.finish_lsn)
                && finish < start
            {
                errors.push(FieldError::invalid(
                    "status.finishLsn",
                    finish,
                    "must not be before status.startLsn",
                ));
            }
            if let Some(storage) = &status.config_backup_storage {
                for (child, value) in [
                    ("bucket", &storage.bucket),
                    ("name", &storage.name),
                    ("namespace", &storage.namespace),
                ] {
                    if value.is_empty() {
                        errors.push(FieldError::required(
                            format!("status.configBackupStorage.{child}"),
                            "may not be empty",
                        ));
                    }
                }
            }
        }
        errors
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        // A backup is of one cluster: pointing it at another would mislabel the data it holds.
        if self.spec.cluster != old.spec.cluster {
            vec![FieldError::forbidden("spec.cluster", "field is immutable")]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    /// A field path, a change that breaks it, and the error kind expected.
    type Case = (&'static str, fn(&mut Value), FieldErrorKind);

    use super::*;
    use crate::field::FieldErrorKind;

    fn backup() -> Value {
        json!({
            "apiVersion": "middleware.alauda.io/v1", "kind": "PostgresBackup",
            "metadata": {"name": "orders-20261121", "namespace": "default"},
            "spec": {"cluster": "orders-pg", "executeNode": "node-1"},
            "status": {"backupName": "orders-20261121-0a1b", "clusterUid": "1f7d3c52-6a1e-4f44-9a5e-0f6b6d2e9c11",
                       "configBackupStorage": {"bucket": "pg-backups", "name": "s3-config", "namespace": "default"},
                       "executeNode": "node-1", "pgVersion": "16.4", "state": "succeeded",
                       "startLsn": 50331688, "finishLsn": 50332000,
                       "startTime": "2026-11-21T02:00:00Z", "finishTime": "2026-11-21T02:03:10Z",
                       "lastModified": "2026-11-21T02:03:10Z"}
        })
    }

    fn def() -> ResourceDef {
        ResourceDef::custom::<PostgresBackup>()
    }

    #[test]
    fn realistic_backup_admits() {
        let mut obj = backup();
        def().admit(&mut obj, None).unwrap();
        assert_eq!(obj["status"]["state"], "succeeded");
        let d = def();
        assert!(d.namespaced && d.status_subresource);
        assert_eq!(d.plural, "postgresbackups");
    }

    #[test]
    fn rules_name_their_fields() {
        let cases: [Case; 8] = [
            ("spec.cluster", |o| o["spec"]["cluster"] = json!(""), FieldErrorKind::Required),
            (
                "spec.cluster",
                |o| o["spec"]["cluster"] = json!("Orders_PG"),
                FieldErrorKind::Invalid,
            ),
            (
                "spec.executeNode",
                |o| o["spec"]["executeNode"] = json!("-node"),
                FieldErrorKind::Invalid,
            ),
            ("status.state", |o| o["status"]["state"] = json!("done"), FieldErrorKind::Invalid),
            ("status.finishLsn", |o| o["status"]["finishLsn"] = json!(1), FieldErrorKind::Invalid),
            ("status.startLsn", |o| o["status"]["startLsn"] = json!(-1), FieldErrorKind::Invalid),
            (
                "status.startTime",
                |o| o["status"]["startTime"] = json!("2026-11-21 02:00"),
                FieldErrorKind::Invalid,
            ),
            (
                "status.configBackupStorage.bucket",
                |o| o["status"]["configBackupStorage"]["bucket"] = json!(""),
                FieldErrorKind::Required,
            ),
        ];
        for (field, change, kind) in cases {
            let mut obj = backup();
            change(&mut obj);
            let errs = def().admit(&mut obj, None).unwrap_err();
            assert_eq!((errs[0].field.as_str(), errs[0].kind), (field, kind), "{errs:?}");
        }
    }

    #[test]
    fn enum_values_match_the_spec() {
        let crd = def().crd().unwrap();
        let state = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"]["state"];
        assert_eq!(state["enum"], json!(["", "running", "failed", "succeeded", "deleteFailed"]));
        let mut obj = backup();
        obj["status"]["state"] = json!("");
        def().admit(&mut obj, None).unwrap();
    }

    #[test]
    fn cluster_is_immutable() {
        let old = backup();
        let mut new = backup();
        new["spec"]["cluster"] = json!("billing-pg");
        let errs = def().admit(&mut new, Some(&old)).unwrap_err();
        assert_eq!(
            (errs[0].field.as_str(), errs[0].kind),
            ("spec.cluster", FieldErrorKind::Forbidden)
        );
        let mut new = backup();
        new["spec"]["executeNode"] = json!("node-2");
        def().admit(&mut new, Some(&old)).unwrap();
    }
}
