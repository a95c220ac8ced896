//! BackupPolicy: what to back up (the target pods), where to (the repo), and how (the methods).
//! Also the target and credential types that Backup and Restore reuse.

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Phase, check_non_empty, check_range, check_reference_name};
use crate::field::{FieldError, index, path};
use crate::resource::Admit;

/// The policy for backing up one database cluster.
// kube's attribute repeats `category` and `printcolumn` keys by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "dataprotection.kubeblocks.io",
    version = "v1alpha1",
    kind = "BackupPolicy",
    namespaced,
    status = "BackupPolicyStatus",
    shortname = "bp",
    category = "kubeblocks",
    category = "dataprotection",
    printcolumn(name = "BACKUP-REPO", type_ = "string", json_path = ".spec.backupRepoName"),
    printcolumn(name = "STATUS", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "AGE", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicySpec {
    /// The BackupRepo to store into; the default repo when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_repo_name: Option<String>,
    /// A directory inside the repo, relative to the repo's own path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Retries before a backup is marked failed; 2 when unset, at most 10 (upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_limit: Option<i32>,
    /// What to back up.
    pub target: BackupTarget,
    /// The ways this cluster can be backed up.
    pub backup_methods: Vec<BackupMethod>,
    /// Store into a Kopia repository; `false` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_kopia: Option<bool>,
}

/// What a backup reads from.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupTarget {
    /// Finds the target pod(s); their volumes are what is backed up.
    pub pod_selector: PodSelector,
    /// How to connect to the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_credential: Option<ConnectionCredential>,
    /// Kubernetes objects to back up alongside the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<KubeResources>,
    /// The service account the backup workload runs as.
    pub service_account_name: String,
}

/// A label selector (fields embedded) and what to do when it matches several pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSelector {
    /// `matchLabels` / `matchExpressions`, at this level as upstream inlines them.
    #[serde(flatten)]
    pub label_selector: LabelSelector,
    /// `Any` (one matching pod) or `All`; `Any` when unset (upstream default).
    #[serde(default)]
    pub strategy: PodSelectionStrategy,
}

/// Which of several matching pods a backup reads from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PodSelectionStrategy {
    // Every matching pod.
    All,
    // Any one matching pod.
    #[default]
    Any,
}

/// Where the database credentials are, as keys of a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionCredential {
    /// The Secret in the policy's namespace.
    pub secret_name: String,
    /// The key of the user name; `username` when unset (upstream default).
    #[serde(default = "default_username_key")]
    pub username_key: String,
    /// The key of the password; `password` when unset (upstream default).
    #[serde(default = "default_password_key")]
    pub password_key: String,
    /// The key of the host, if the Secret has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// The key of the port, if the Secret has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_key: Option<String>,
}

fn default_username_key() -> String {
    "username".into()
}

fn default_password_key() -> String {
    "password".into()
}

/// Kubernetes objects to back up.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeResources {
    /// Selects the objects.
    pub selector: LabelSelector,
    /// Namespaced resource types to include; all (`*`) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub included: Option<Vec<String>>,
    /// Namespaced resource types to leave out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded: Option<Vec<String>>,
}

/// One way of backing up: an ActionSet, or CSI volume snapshots.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupMethod {
    /// The method's name, which Backups and schedules refer to.
    pub name: String,
    /// Take CSI snapshots of the target's volumes instead of running an ActionSet; `false` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_volumes: Option<bool>,
    /// The ActionSet whose backup action runs; not needed for snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_set_name: Option<String>,
    /// Which target volumes the backup workload mounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_volumes: Option<TargetVolumeInfo>,
    /// Environment of the backup workload; overrides the ActionSet's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    /// Resources of the backup container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_settings: Option<RuntimeSettings>,
    /// Overrides the policy's target for this method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<BackupTarget>,
}

/// Target volumes mounted into the backup workload.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetVolumeInfo {
    /// Names of the target pod's volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<String>>,
    /// Where those volumes are mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Vec<VolumeMount>>,
}

/// Runtime settings of the backup container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeSettings {
    /// CPU and memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Observed state of a BackupPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicyStatus {
    /// Available or Unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Why the policy is in this phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The generation the controller last saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Phases a BackupPolicy's controller may report (the spec's `BackupPolicyPhase`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupPolicyPhase {
    // Usable.
    Available,
    // Broken.
    Failed,
}

impl BackupTarget {
    pub(crate) fn validate(&self, field: &str, errors: &mut Vec<FieldError>) {
        if let Some(cred) = &self.connection_credential {
            cred.validate(&path(field, "connectionCredential"), errors);
        }
    }
}

impl ConnectionCredential {
    pub(crate) fn validate(&self, field: &str, errors: &mut Vec<FieldError>) {
        check_reference_name(errors, &path(field, "secretName"), &self.secret_name);
        check_non_empty(errors, &path(field, "usernameKey"), &self.username_key);
        check_non_empty(errors, &path(field, "passwordKey"), &self.password_key);
    }
}

impl BackupMethod {
    /// Whether this method takes CSI snapshots rather than running an ActionSet.
    pub fn takes_snapshots(&self) -> bool {
        self.snapshot_volumes == Some(true)
    }
}

impl Admit for BackupPolicy {
    fn default_fields(&mut self) {
        let spec = &mut self.spec;
        spec.backoff_limit.get_or_insert(2);
        spec.use_kopia.get_or_insert(false);
        for method in &mut spec.backup_methods {
            method.snapshot_volumes.get_or_insert(false);
        }
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let spec = &self.spec;
        if let Some(repo) = &spec.backup_repo_name {
            check_reference_name(&mut errors, "spec.backupRepoName", repo);
        }
        if let Some(limit) = spec.backoff_limit {
            check_range(&mut errors, "spec.backoffLimit", limit.into(), 0, Some(10));
        }
        spec.target.validate("spec.target", &mut errors);
        if spec.backup_methods.is_empty() {
            errors.push(FieldError::required(
                "spec.backupMethods",
                "at least one backup method is needed",
            ));
        }
        let mut seen: Vec<&str> = Vec::new();
        for (i, method) in spec.backup_methods.iter().enumerate() {
            let field = index("spec.backupMethods", i);
            check_reference_name(&mut errors, &path(&field, "name"), &method.name);
            if seen.contains(&method.name.as_str()) {
                errors.push(FieldError::duplicate(path(&field, "name"), &method.name));
            }
            seen.push(&method.name);
            match method.action_set_name.as_deref() {
                Some(name) => {
                    check_reference_name(&mut errors, &path(&field, "actionSetName"), name)
                }
                // The controller refuses such a method at backup time; saying so now is kinder.
                None if !method.takes_snapshots() => errors.push(FieldError::required(
                    path(&field, "actionSetName"),
                    "a method needs an actionSetName unless snapshotVolumes is true",
                )),
                None => {}
            }
            if let Some(target) = &method.target {
                target.validate(&path(&field, "target"), &mut errors);
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use crate::kubeblocks::testing::{
        admit, admit_example, assert_structural_crd, def, refused_fields,
    };
    use serde_json::{Value, json};

    const API: &str = "dataprotection.kubeblocks.io/v1alpha1";

    fn policy() -> Value {
        json!({
            "apiVersion": API, "kind": "BackupPolicy",
            "metadata": {"name": "pg-cluster-postgresql-backup-policy", "namespace": "default"},
            "spec": {
                "backupRepoName": "local-repo",
                "pathPrefix": "/default/pg-cluster/postgresql",
                "target": {
                    "podSelector": {"matchLabels": {"app.kubernetes.io/instance": "pg-cluster", "kubeblocks.io/role": "secondary"}},
                    "connectionCredential": {"secretName": "pg-cluster-conn-credential", "hostKey": "host", "portKey": "port"},
                    "serviceAccountName": "kb-pg-cluster"
                },
                "backupMethods": [
                    {"name": "pg-basebackup", "actionSetName": "postgresql-basebackup",
                     "targetVolumes": {"volumeMounts": [{"name": "data", "mountPath": "/home/postgres/pgdata"}]},
                     "env": [{"name": "IMAGE_TAG", "value": "14.8.0"}],
                     "runtimeSettings": {"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}},
                    {"name": "volume-snapshot", "snapshotVolumes": true, "targetVolumes": {"volumes": ["data"]}}
                ]
            }
        })
    }

    #[test]
    fn admits_a_policy_and_fills_defaults() {
        let mut obj = policy();
        admit(&mut obj, None).unwrap();
        let spec = &obj["spec"];
        assert_eq!(spec["backoffLimit"], 2);
        assert_eq!(spec["useKopia"], false);
        assert_eq!(spec["backupMethods"][0]["snapshotVolumes"], false);
        assert_eq!(spec["target"]["podSelector"]["strategy"], "Any");
        assert_eq!(spec["target"]["podSelector"]["matchLabels"]["kubeblocks.io/role"], "secondary");
        assert_eq!(spec["target"]["connectionCredential"]["usernameKey"], "username");
        assert_eq!(spec["target"]["connectionCredential"]["passwordKey"], "password");
    }

    #[test]
    fn rules_name_their_fields() {
        let mut obj = policy();
        obj["spec"]["backupRepoName"] = json!("Local_Repo");
        obj["spec"]["backoffLimit"] = json!(11);
        obj["spec"]["target"]["connectionCredential"]["secretName"] = json!("");
        obj["spec"]["backupMethods"][1]["name"] = json!("pg-basebackup");
        obj["spec"]["backupMethods"][1]["snapshotVolumes"] = json!(false);
        assert_eq!(
            refused_fields(obj),
            [
                "spec.backupRepoName",
                "spec.backoffLimit",
                "spec.target.connectionCredential.secretName",
                "spec.backupMethods[1].name",
                "spec.backupMethods[1].actionSetName",
            ]
        );
        let mut none = policy();
        none["spec"]["backupMethods"] = json!([]);
        assert_eq!(refused_fields(none), ["spec.backupMethods"]);
    }

    #[test]
    fn required_fields_and_enums_are_enforced() {
        let mut no_target = policy();
        no_target["spec"].as_object_mut().unwrap().remove("target");
        assert_eq!(refused_fields(no_target), ["spec"]);
        let mut no_sa = policy();
        no_sa["spec"]["target"].as_object_mut().unwrap().remove("serviceAccountName");
        assert_eq!(refused_fields(no_sa), ["spec.target"]);
        let mut strategy = policy();
        strategy["spec"]["target"]["podSelector"]["strategy"] = json!("First");
        assert!(refused_fields(strategy)[0].starts_with("spec.target.podSelector"));
        let schema = &def(API, "BackupPolicy").schema["properties"]["spec"]["properties"]["target"];
        assert_eq!(
            schema["properties"]["podSelector"]["properties"]["strategy"]["enum"],
            json!(["All", "Any"])
        );
        assert!(schema["required"].as_array().unwrap().contains(&json!("serviceAccountName")));
    }

    #[test]
    fn crd_is_structural() {
        assert_structural_crd(API, "BackupPolicy");
        let d = def(API, "BackupPolicy");
        assert!(d.namespaced);
        assert_eq!(d.short_names, ["bp"]);
    }

    #[test]
    fn example_admits() {
        let objs = admit_example("kubeblocks-backuppolicy.yaml");
        assert_eq!(objs[0]["metadata"]["namespace"], "default");
        assert_eq!(
            objs[0]["spec"]["backupMethods"][0]["actionSetName"],
            "spilo-postgresql-basebackup"
        );
    }
}
