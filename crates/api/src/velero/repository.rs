//! BackupRepository (`velero.io/v1`): the repository of one (namespace, location, type), which
//! pod-volume and data-mover snapshots are stored in and which is maintained on a schedule.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::require_non_empty;
use crate::field::{FieldError, path};
use crate::go_duration::check_go_duration;
use crate::resource::Admit;

/// The maintenance period Velero gives a kopia repository that names none (`defaultMaintainCheckPeriod`).
pub const DEFAULT_KOPIA_MAINTENANCE_FREQUENCY: &str = "1h0m0s";
/// The maintenance period Velero gives a restic repository that names none (7 days).
pub const DEFAULT_RESTIC_MAINTENANCE_FREQUENCY: &str = "168h0m0s";

/// The repository of pod-volume and data-mover snapshots for one namespace in one location.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "velero.io",
    version = "v1",
    kind = "BackupRepository",
    plural = "backuprepositories",
    namespaced,
    status = "BackupRepositoryStatus",
    category = "velero",
    doc = "BackupRepository is the repository of one namespace's volume snapshots in one location.",
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Repository Type", type_ = "string", json_path = ".spec.repositoryType")
)]
#[serde(rename_all = "camelCase")]
pub struct BackupRepositorySpec {
    /// The namespace whose volumes this repository holds.
    pub volume_namespace: String,
    /// The BackupStorageLocation that holds the repository.
    pub backup_storage_location: String,
    /// The repository's format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_type: Option<RepositoryType>,
    /// The legacy restic identifier (`s3:<url>/<bucket>/<prefix>/restic/<ns>`); empty for kopia.
    pub restic_identifier: String,
    /// How often maintenance (prune) runs, as a Go duration.
    pub maintenance_frequency: String,
    /// Repository settings: `cacheLimitMB`, `fullMaintenanceInterval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_config: Option<BTreeMap<String, String>>,
}

/// A repository's format.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RepositoryType {
    /// A kopia repository (holdfast's repository answers for it).
    #[serde(rename = "kopia")]
    Kopia,
    /// A legacy restic repository.
    #[serde(rename = "restic")]
    Restic,
    /// Unset; treated as restic by old Velero.
    #[serde(rename = "")]
    Unset,
}

/// Whether a repository can be used.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupRepositoryPhase {
    /// Not yet checked.
    New,
    /// Initialised or connected; usable.
    Ready,
    /// Not usable; see the message.
    NotReady,
}

/// The outcome of one maintenance run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MaintenanceResult {
    /// The run finished.
    Succeeded,
    /// The run failed; see the message.
    Failed,
}

/// Observed state of a BackupRepository.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRepositoryStatus {
    /// Whether the repository is usable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupRepositoryPhase>,
    /// Why the repository is not ready, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When maintenance last ran successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_maintenance_time: Option<Time>,
    /// The latest maintenance runs, newest last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent_maintenance: Option<Vec<BackupRepositoryMaintenanceStatus>>,
}

/// One maintenance run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRepositoryMaintenanceStatus {
    /// How the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<MaintenanceResult>,
    /// When the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Time>,
    /// When the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete_timestamp: Option<Time>,
    /// What the run reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The values Velero accepts for `repositoryConfig.fullMaintenanceInterval`.
const FULL_MAINTENANCE_INTERVALS: [&str; 3] = ["normalGC", "fastGC", "eagerGC"];

impl Admit for BackupRepository {
    fn default_fields(&mut self) {
        if self.spec.maintenance_frequency.is_empty() {
            self.spec.maintenance_frequency = match self.spec.repository_type {
                Some(RepositoryType::Kopia) => DEFAULT_KOPIA_MAINTENANCE_FREQUENCY,
                _ => DEFAULT_RESTIC_MAINTENANCE_FREQUENCY,
            }
            .to_string();
        }
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let spec = &self.spec;
        require_non_empty(&mut errors, "spec.volumeNamespace", &spec.volume_namespace);
        require_non_empty(&mut errors, "spec.backupStorageLocation", &spec.backup_storage_location);
        check_go_duration(&mut errors, "spec.maintenanceFrequency", &spec.maintenance_frequency);
        let config = spec.repository_config.iter().flatten();
        for (key, value) in config {
            let field = path("spec.repositoryConfig", key);
            match key.as_str() {
                "cacheLimitMB" if value.parse::<u64>().is_err() => {
                    errors.push(FieldError::invalid(
                        field,
                        value,
                        "must be a whole number of megabytes",
                    ));
                }
                "fullMaintenanceInterval"
                    if !FULL_MAINTENANCE_INTERVALS.contains(&value.as_str()) =>
                {
                    errors.push(FieldError::not_supported(
                        field,
                        value,
                        &FULL_MAINTENANCE_INTERVALS,
                    ));
                }
                _ => {}
            }
        }
        errors
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        // Velero finds a repository by these three (its name and labels are made of them).
        let mut errors = Vec::new();
        if self.spec.volume_namespace != old.spec.volume_namespace {
            errors.push(FieldError::forbidden("spec.volumeNamespace", "field is immutable"));
        }
        if self.spec.backup_storage_location != old.spec.backup_storage_location {
            errors.push(FieldError::forbidden("spec.backupStorageLocation", "field is immutable"));
        }
        if self.spec.repository_type != old.spec.repository_type {
            errors.push(FieldError::forbidden("spec.repositoryType", "field is immutable"));
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    /// A field path, a change that breaks it, and the error kind expected.
    type Case = (&'static str, fn(&mut Value), FieldErrorKind);

    use super::*;
    use crate::field::FieldErrorKind;
    use crate::resource::ResourceDef;

    fn repo() -> Value {
        json!({
            "apiVersion": "velero.io/v1", "kind": "BackupRepository",
            "metadata": {"name": "shop-default-kopia", "namespace": "velero",
                         "labels": {"velero.io/volume-namespace": "shop", "velero.io/storage-location": "default",
                                    "velero.io/repository-type": "kopia"}},
            "spec": {"volumeNamespace": "shop", "backupStorageLocation": "default", "repositoryType": "kopia",
                     "resticIdentifier": "", "maintenanceFrequency": "1h0m0s",
                     "repositoryConfig": {"cacheLimitMB": "2048", "fullMaintenanceInterval": "fastGC"}},
            "status": {"phase": "Ready", "lastMaintenanceTime": "2026-11-21T09:00:00Z",
                       "recentMaintenance": [{"result": "Succeeded", "startTimestamp": "2026-11-21T08:59:00Z",
                                              "completeTimestamp": "2026-11-21T09:00:00Z"}]}
        })
    }

    fn def() -> ResourceDef {
        ResourceDef::custom::<BackupRepository>()
    }

    #[test]
    fn realistic_repository_admits_and_frequency_defaults() {
        let mut obj = repo();
        def().admit(&mut obj, None).unwrap();
        assert_eq!(obj["spec"]["maintenanceFrequency"], "1h0m0s");
        let mut obj = repo();
        obj["spec"]["maintenanceFrequency"] = json!("");
        def().admit(&mut obj, None).unwrap();
        assert_eq!(obj["spec"]["maintenanceFrequency"], DEFAULT_KOPIA_MAINTENANCE_FREQUENCY);
        let mut obj = repo();
        obj["spec"]["maintenanceFrequency"] = json!("");
        obj["spec"]["repositoryType"] = json!("restic");
        def().admit(&mut obj, None).unwrap();
        assert_eq!(obj["spec"]["maintenanceFrequency"], DEFAULT_RESTIC_MAINTENANCE_FREQUENCY);
    }

    #[test]
    fn rules_name_their_fields() {
        let cases: [Case; 5] = [
            (
                "spec.volumeNamespace",
                |o| o["spec"]["volumeNamespace"] = json!(""),
                FieldErrorKind::Required,
            ),
            (
                "spec.maintenanceFrequency",
                |o| o["spec"]["maintenanceFrequency"] = json!("daily"),
                FieldErrorKind::Invalid,
            ),
            (
                "spec.repositoryConfig.cacheLimitMB",
                |o| o["spec"]["repositoryConfig"]["cacheLimitMB"] = json!("5GB"),
                FieldErrorKind::Invalid,
            ),
            (
                "spec.repositoryConfig.fullMaintenanceInterval",
                |o| o["spec"]["repositoryConfig"]["fullMaintenanceInterval"] = json!("weekly"),
                FieldErrorKind::NotSupported,
            ),
            (
                "status.recentMaintenance[0].result",
                |o| o["status"]["recentMaintenance"][0]["result"] = json!("Ok"),
                FieldErrorKind::Invalid,
            ),
        ];
        for (field, change, kind) in cases {
            let mut obj = repo();
            change(&mut obj);
            let errs = def().admit(&mut obj, None).unwrap_err();
            assert_eq!((errs[0].field.as_str(), errs[0].kind), (field, kind), "{errs:?}");
        }
        let mut obj = repo();
        obj["spec"]["repositoryType"] = json!("borg");
        assert_eq!(def().admit(&mut obj, None).unwrap_err()[0].field, "spec.repositoryType");
    }

    #[test]
    fn identity_is_immutable() {
        let old = repo();
        for field in ["volumeNamespace", "backupStorageLocation", "repositoryType"] {
            let mut new = repo();
            new["spec"][field] = json!("restic");
            let errs = def().admit(&mut new, Some(&old)).unwrap_err();
            assert_eq!(errs[0].field, format!("spec.{field}"));
            assert_eq!(errs[0].kind, FieldErrorKind::Forbidden);
        }
        let mut new = repo();
        new["spec"]["maintenanceFrequency"] = json!("2h");
        def().admit(&mut new, Some(&old)).unwrap();
    }
}
