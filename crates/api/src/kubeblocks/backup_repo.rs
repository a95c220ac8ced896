//! BackupRepo: a place backups are stored, reached through a StorageProvider (cluster-scoped).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::SecretReference;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{check_non_empty, check_reference_name, check_unchanged};
use crate::field::FieldError;
use crate::resource::Admit;

/// The annotation that makes a BackupRepo the default one (mirrored to `status.isDefault`).
pub const DEFAULT_REPO_ANNOTATION: &str = "dataprotection.kubeblocks.io/is-default-repo";

/// A repository for backup data.
// kube's attribute repeats `category` and `printcolumn` keys by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "dataprotection.kubeblocks.io",
    version = "v1alpha1",
    kind = "BackupRepo",
    status = "BackupRepoStatus",
    category = "kubeblocks",
    category = "dataprotection",
    printcolumn(name = "STATUS", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "STORAGEPROVIDER",
        type_ = "string",
        json_path = ".spec.storageProviderRef"
    ),
    printcolumn(name = "ACCESSMETHOD", type_ = "string", json_path = ".spec.accessMethod"),
    printcolumn(name = "DEFAULT", type_ = "boolean", json_path = ".status.isDefault"),
    printcolumn(name = "AGE", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct BackupRepoSpec {
    /// The StorageProvider this repo uses. Immutable.
    pub storage_provider_ref: String,
    /// `Mount` (a PVC) or `Tool` (datasafed); `Mount` when unset (upstream default).
    #[serde(default)]
    pub access_method: AccessMethod,
    /// Capacity of the PVC the repo creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_capacity: Option<Quantity>,
    /// Reclaim policy of the PV the repo creates.
    pub pv_reclaim_policy: PvReclaimPolicy,
    /// Non-secret parameters for the StorageProvider's templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<BTreeMap<String, String>>,
    /// The Secret holding the StorageProvider's credential parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<SecretReference>,
}

/// How backup workloads reach the repo.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AccessMethod {
    // The storage is mounted as a volume.
    #[default]
    Mount,
    // The datasafed command-line tool talks to the storage.
    Tool,
}

/// Reclaim policy of the repo's PV: the two values upstream's CRD allows of
/// `core/v1.PersistentVolumeReclaimPolicy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PvReclaimPolicy {
    // The PV is deleted with its claim.
    Delete,
    // The PV is kept.
    #[default]
    Retain,
}

/// Where a BackupRepo is in its reconciliation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupRepoPhase {
    // Being checked by a real write, read and delete.
    PreChecking,
    // The pre-check failed.
    Failed,
    // Ready for use.
    Ready,
    // Being deleted.
    Deleting,
}

/// Observed state of a BackupRepo.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRepoStatus {
    /// PreChecking, Failed, Ready or Deleting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupRepoPhase>,
    /// Conditions of the reconciliation steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// The generation the controller last saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Secret generated for the CSI driver.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "generatedCSIDriverSecret")]
    pub generated_csi_driver_secret: Option<SecretReference>,
    /// The StorageClass generated for the CSI driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_storage_class_name: Option<String>,
    /// The PVC holding backup data (Mount access).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "backupPVCName")]
    pub backup_pvc_name: Option<String>,
    /// The Secret holding datasafed's configuration (Tool access).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_config_secret_name: Option<String>,
    /// Whether this is the default repo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_default: Option<bool>,
}

impl BackupRepo {
    /// Whether the default-repo annotation is set to `"true"`.
    pub fn is_annotated_default(&self) -> bool {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DEFAULT_REPO_ANNOTATION))
            .is_some_and(|v| v == "true")
    }
}

impl Admit for BackupRepo {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let spec = &self.spec;
        check_reference_name(&mut errors, "spec.storageProviderRef", &spec.storage_provider_ref);
        if let Some(capacity) = &spec.volume_capacity {
            check_non_empty(&mut errors, "spec.volumeCapacity", &capacity.0);
        }
        if let Some(credential) = &spec.credential {
            match credential.name.as_deref() {
                Some(name) => check_reference_name(&mut errors, "spec.credential.name", name),
                None => errors.push(FieldError::required(
                    "spec.credential.name",
                    "the Secret's name is needed",
                )),
            }
            match credential.namespace.as_deref() {
                // The repo is cluster-scoped, so there is no namespace to fall back on.
                Some(ns) => check_reference_name(&mut errors, "spec.credential.namespace", ns),
                None => errors.push(FieldError::required(
                    "spec.credential.namespace",
                    "a cluster-scoped BackupRepo must say which namespace the Secret is in",
                )),
            }
        }
        for key in spec.config.iter().flat_map(BTreeMap::keys) {
            if key.is_empty() {
                errors.push(FieldError::invalid("spec.config", key, "keys may not be empty"));
            }
        }
        errors
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_unchanged(
            &mut errors,
            "spec.storageProviderRef",
            &self.spec.storage_provider_ref,
            &old.spec.storage_provider_ref,
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

    fn repo() -> Value {
        json!({
            "apiVersion": API, "kind": "BackupRepo",
            "metadata": {"name": "local-repo", "annotations": {DEFAULT_REPO_ANNOTATION: "true"}},
            "spec": {
                "storageProviderRef": "local-path",
                "pvReclaimPolicy": "Retain",
                "volumeCapacity": "20Gi",
                "config": {"path": "/var/lib/holdfast/backups"},
                "credential": {"name": "local-repo-credential", "namespace": "kb-system"}
            }
        })
    }

    #[test]
    fn admits_a_repo_and_defaults_access_method() {
        let mut obj = repo();
        admit(&mut obj, None).unwrap();
        assert_eq!(obj["spec"]["accessMethod"], "Mount");
        assert_eq!(obj["spec"]["volumeCapacity"], "20Gi");
        let typed: BackupRepo = serde_json::from_value(obj).unwrap();
        assert!(typed.is_annotated_default());
    }

    #[test]
    fn rules_name_their_fields() {
        let mut obj = repo();
        obj["spec"]["storageProviderRef"] = json!("");
        obj["spec"]["credential"] = json!({"name": "creds"});
        assert_eq!(refused_fields(obj), ["spec.storageProviderRef", "spec.credential.namespace"]);
    }

    #[test]
    fn enums_and_required_fields_are_enforced() {
        let mut obj = repo();
        obj["spec"]["accessMethod"] = json!("Ftp");
        assert_eq!(refused_fields(obj), ["spec.accessMethod"]);
        let mut obj = repo();
        obj["spec"]["pvReclaimPolicy"] = json!("Recycle");
        assert_eq!(refused_fields(obj), ["spec.pvReclaimPolicy"]);
        let mut obj = repo();
        obj["spec"].as_object_mut().unwrap().remove("pvReclaimPolicy");
        assert_eq!(refused_fields(obj), ["spec"]);
        let spec = &def(API, "BackupRepo").schema["properties"]["spec"];
        assert_eq!(spec["properties"]["accessMethod"]["enum"], json!(["Mount", "Tool"]));
        assert_eq!(spec["properties"]["pvReclaimPolicy"]["enum"], json!(["Delete", "Retain"]));
        assert_eq!(spec["properties"]["volumeCapacity"]["x-kubernetes-int-or-string"], json!(true));
    }

    #[test]
    fn storage_provider_is_immutable() {
        let mut old = repo();
        admit(&mut old, None).unwrap();
        let mut new = old.clone();
        new["spec"]["storageProviderRef"] = json!("s3");
        assert_eq!(admit(&mut new, Some(&old)).unwrap_err()[0].field, "spec.storageProviderRef");
        let mut config = old.clone();
        config["spec"]["config"]["path"] = json!("/srv/backups");
        admit(&mut config, Some(&old)).unwrap();
    }

    #[test]
    fn crd_is_structural_and_cluster_scoped() {
        assert_structural_crd(API, "BackupRepo");
        let d = def(API, "BackupRepo");
        assert!(!d.namespaced);
        let names: Vec<_> = d.printer_columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["STATUS", "STORAGEPROVIDER", "ACCESSMETHOD", "DEFAULT", "AGE"]);
    }

    #[test]
    fn example_admits() {
        let objs = admit_example("kubeblocks-backuprepo.yaml");
        assert_eq!(objs[0]["spec"]["storageProviderRef"], "local-path");
    }
}
