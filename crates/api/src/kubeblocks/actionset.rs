//! ActionSet: the commands that back up and restore one kind of database (cluster-scoped).

use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionErrorMode, Phase, check_non_empty, check_range};
use crate::field::{FieldError, index, path};
use crate::go_duration::check_go_duration;
use crate::resource::Admit;

/// How the backup is taken, and so how it is restored.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BackupType {
    // Everything.
    #[default]
    Full,
    // What changed since the last backup of any type.
    Incremental,
    // What changed since the last full backup.
    Differential,
    // The transaction log, continuously; with a full backup it allows point-in-time recovery.
    Continuous,
}

/// The commands of one kind of backup and its restore.
// kube's attribute repeats `category` and `printcolumn` keys by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "dataprotection.kubeblocks.io",
    version = "v1alpha1",
    kind = "ActionSet",
    status = "ActionSetStatus",
    shortname = "as",
    category = "kubeblocks",
    category = "dataprotection",
    printcolumn(name = "BACKUP-TYPE", type_ = "string", json_path = ".spec.backupType"),
    printcolumn(name = "STATUS", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "AGE", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ActionSetSpec {
    /// Full, Incremental, Differential or Continuous; `Full` when unset (upstream default).
    #[serde(default)]
    pub backup_type: BackupType,
    /// Environment of the backup and restore containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    /// Sources of environment variables for the containers. Cannot be updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_from: Option<Vec<EnvFromSource>>,
    /// The backup action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupActionSpec>,
    /// The restore action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreActionSpec>,
}

/// Observed state of an ActionSet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionSetStatus {
    /// Available or Unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Why the ActionSet is in this phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The generation the controller last saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// How to back up.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupActionSpec {
    /// The job that copies the data out.
    pub backup_data: BackupDataActionSpec,
    /// Hooks run before the backup, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_backup: Option<Vec<ActionSpec>>,
    /// Hooks run after the backup, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_backup: Option<Vec<ActionSpec>>,
    /// A job run before the backup's files are deleted; it gets no env/envFrom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_delete: Option<BaseJobActionSpec>,
}

/// The backup data job, and whether it reports progress.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupDataActionSpec {
    /// The job itself (fields embedded, as upstream inlines `JobActionSpec`).
    #[serde(flatten)]
    pub job: JobActionSpec,
    /// Whether a sidecar syncs the backup's progress into the Backup's status, and how often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_progress: Option<SyncProgress>,
}

/// Progress reporting of a backup data job.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncProgress {
    /// Whether a sidecar syncs progress into the Backup's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Seconds between syncs; 60 when unset (upstream default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<i32>,
}

/// How to restore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreActionSpec {
    /// The job that puts the data back into the volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare_data: Option<JobActionSpec>,
    /// Actions run once the restored cluster is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_ready: Option<Vec<ActionSpec>>,
}

/// One action: exactly one of `exec` and `job`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionSpec {
    /// Run a command in a container of the target pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecActionSpec>,
    /// Run a command in a Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobActionSpec>,
}

/// A command run through the pod exec API.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecActionSpec {
    /// The container; the pod's first container when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The command and its arguments (at least one item).
    pub command: Vec<String>,
    /// What an error means; `Fail` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<ActionErrorMode>,
    /// How long to wait before the command counts as failed, as a Go duration (`30s`, `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// A command run by a Job.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobActionSpec {
    /// Image and command (fields embedded, as upstream inlines `BaseJobActionSpec`).
    #[serde(flatten)]
    pub base: BaseJobActionSpec,
    /// Run on the target pod's node, mounting its volumes; `false` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_on_target_pod_node: Option<bool>,
    /// What an error means; `Fail` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<ActionErrorMode>,
}

/// The image and command of a Job.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BaseJobActionSpec {
    /// The container image.
    pub image: String,
    /// The command.
    pub command: Vec<String>,
}

impl JobActionSpec {
    fn default_fields(&mut self) {
        self.run_on_target_pod_node.get_or_insert(false);
        self.on_error.get_or_insert(ActionErrorMode::Fail);
    }

    fn validate(&self, field: &str, errors: &mut Vec<FieldError>) {
        self.base.validate(field, errors);
    }
}

impl BaseJobActionSpec {
    fn validate(&self, field: &str, errors: &mut Vec<FieldError>) {
        check_non_empty(errors, &path(field, "image"), &self.image);
        if self.command.is_empty() {
            errors
                .push(FieldError::required(path(field, "command"), "at least one item is needed"));
        }
    }
}

impl ActionSpec {
    fn default_fields(&mut self) {
        if let Some(exec) = &mut self.exec {
            exec.on_error.get_or_insert(ActionErrorMode::Fail);
        }
        if let Some(job) = &mut self.job {
            job.default_fields();
        }
    }

    fn validate(&self, field: &str, errors: &mut Vec<FieldError>) {
        match (&self.exec, &self.job) {
            (Some(_), Some(_)) => {
                errors.push(FieldError::forbidden(field, "exactly one of exec or job may be set"));
            }
            (None, None) => {
                errors.push(FieldError::required(field, "exactly one of exec or job must be set"))
            }
            _ => {}
        }
        if let Some(exec) = &self.exec {
            let field = path(field, "exec");
            if exec.command.is_empty() {
                errors.push(FieldError::required(
                    path(&field, "command"),
                    "at least one item is needed",
                ));
            }
            if let Some(timeout) = &exec.timeout {
                check_go_duration(errors, &path(&field, "timeout"), timeout);
            }
        }
        if let Some(job) = &self.job {
            job.validate(&path(field, "job"), errors);
        }
    }
}

fn validate_actions(actions: Option<&[ActionSpec]>, field: &str, errors: &mut Vec<FieldError>) {
    for (i, action) in actions.unwrap_or_default().iter().enumerate() {
        action.validate(&index(field, i), errors);
    }
}

impl Admit for ActionSet {
    fn default_fields(&mut self) {
        if let Some(backup) = &mut self.spec.backup {
            backup.backup_data.job.default_fields();
            if let Some(sync) = &mut backup.backup_data.sync_progress {
                sync.interval_seconds.get_or_insert(60);
            }
            for action in
                backup.pre_backup.iter_mut().chain(backup.post_backup.iter_mut()).flatten()
            {
                action.default_fields();
            }
        }
        if let Some(restore) = &mut self.spec.restore {
            if let Some(job) = &mut restore.prepare_data {
                job.default_fields();
            }
            for action in restore.post_ready.iter_mut().flatten() {
                action.default_fields();
            }
        }
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let spec = &self.spec;
        for (i, env) in spec.env.iter().flatten().enumerate() {
            check_non_empty(&mut errors, &path(&index("spec.env", i), "name"), &env.name);
        }
        if let Some(backup) = &spec.backup {
            backup.backup_data.job.validate("spec.backup.backupData", &mut errors);
            if let Some(seconds) =
                backup.backup_data.sync_progress.as_ref().and_then(|s| s.interval_seconds)
            {
                check_range(
                    &mut errors,
                    "spec.backup.backupData.syncProgress.intervalSeconds",
                    seconds.into(),
                    1,
                    None,
                );
            }
            validate_actions(backup.pre_backup.as_deref(), "spec.backup.preBackup", &mut errors);
            validate_actions(backup.post_backup.as_deref(), "spec.backup.postBackup", &mut errors);
            if let Some(pre_delete) = &backup.pre_delete {
                pre_delete.validate("spec.backup.preDelete", &mut errors);
            }
        }
        if let Some(restore) = &spec.restore {
            if let Some(job) = &restore.prepare_data {
                job.validate("spec.restore.prepareData", &mut errors);
            }
            validate_actions(restore.post_ready.as_deref(), "spec.restore.postReady", &mut errors);
        }
        if spec.backup.is_none() && spec.restore.is_none() {
            errors.push(FieldError::required(
                "spec",
                "at least one of backup or restore must be set",
            ));
        }
        errors
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        // The spec says envFrom "cannot be updated".
        let mut errors = Vec::new();
        super::check_unchanged(
            &mut errors,
            "spec.envFrom",
            &self.spec.env_from,
            &old.spec.env_from,
        );
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

    fn basebackup() -> Value {
        json!({
            "apiVersion": API, "kind": "ActionSet", "metadata": {"name": "postgresql-basebackup"},
            "spec": {
                "backupType": "Full",
                "env": [{"name": "DATA_DIR", "value": "/home/postgres/pgdata/pgroot/data"}],
                "backup": {
                    "preBackup": [],
                    "postBackup": [],
                    "backupData": {
                        "image": "docker.io/apecloud/spilo:14.8.0",
                        "runOnTargetPodNode": false,
                        "command": ["bash", "-c", "pg_basebackup -Ft -Pv -c fast -Xf -D - | datasafed push - /$DP_BACKUP_NAME.tar"],
                        "syncProgress": {"enabled": true}
                    }
                },
                "restore": {
                    "prepareData": {"image": "docker.io/apecloud/spilo:14.8.0", "command": ["bash", "-c", "datasafed pull /$DP_BACKUP_NAME.tar - | tar -xf - -C $DATA_DIR"]},
                    "postReady": [{"exec": {"command": ["psql", "-c", "select 1"], "timeout": "30s"}}]
                }
            }
        })
    }

    #[test]
    fn admits_a_basebackup_actionset_and_fills_defaults() {
        let mut obj = basebackup();
        admit(&mut obj, None).unwrap();
        assert_eq!(obj["spec"]["backup"]["backupData"]["onError"], "Fail");
        assert_eq!(obj["spec"]["backup"]["backupData"]["syncProgress"]["intervalSeconds"], 60);
        assert_eq!(obj["spec"]["restore"]["prepareData"]["runOnTargetPodNode"], false);
        assert_eq!(obj["spec"]["restore"]["postReady"][0]["exec"]["onError"], "Fail");
        // Flattened fields stay at the level upstream puts them.
        assert_eq!(obj["spec"]["backup"]["backupData"]["image"], "docker.io/apecloud/spilo:14.8.0");
    }

    #[test]
    fn backup_type_defaults_to_full_and_is_an_enum() {
        let mut obj = basebackup();
        obj["spec"].as_object_mut().unwrap().remove("backupType");
        admit(&mut obj, None).unwrap();
        assert_eq!(obj["spec"]["backupType"], "Full");
        let mut bad = basebackup();
        bad["spec"]["backupType"] = json!("Snapshot");
        assert_eq!(refused_fields(bad), ["spec.backupType"]);
        let schema = &def(API, "ActionSet").schema;
        assert_eq!(
            schema["properties"]["spec"]["properties"]["backupType"]["enum"],
            json!(["Full", "Incremental", "Differential", "Continuous"])
        );
    }

    #[test]
    fn rules_name_their_fields() {
        let mut obj = basebackup();
        obj["spec"]["backup"]["backupData"]["image"] = json!("");
        obj["spec"]["backup"]["backupData"]["command"] = json!([]);
        obj["spec"]["backup"]["preBackup"] = json!([{}]);
        obj["spec"]["backup"]["postBackup"] =
            json!([{"exec": {"command": ["true"]}, "job": {"image": "i", "command": ["c"]}}]);
        obj["spec"]["restore"]["postReady"][0]["exec"]["timeout"] = json!("half an hour");
        obj["spec"]["backup"]["backupData"]["syncProgress"]["intervalSeconds"] = json!(0);
        assert_eq!(
            refused_fields(obj),
            [
                "spec.backup.backupData.image",
                "spec.backup.backupData.command",
                "spec.backup.backupData.syncProgress.intervalSeconds",
                "spec.backup.preBackup[0]",
                "spec.backup.postBackup[0]",
                "spec.restore.postReady[0].exec.timeout",
            ]
        );
    }

    #[test]
    fn missing_backup_data_names_the_field() {
        let mut obj = basebackup();
        obj["spec"]["backup"].as_object_mut().unwrap().remove("backupData");
        assert_eq!(refused_fields(obj), ["spec.backup"]);
        let mut empty = basebackup();
        empty["spec"] = json!({"backupType": "Full"});
        assert_eq!(refused_fields(empty), ["spec"]);
    }

    #[test]
    fn env_from_is_immutable() {
        let mut old = basebackup();
        admit(&mut old, None).unwrap();
        let mut new = old.clone();
        new["spec"]["envFrom"] = json!([{"secretRef": {"name": "s3-credentials"}}]);
        let errors = admit(&mut new, Some(&old)).unwrap_err();
        assert_eq!(errors[0].field, "spec.envFrom");
        let mut same = old.clone();
        same["spec"]["env"] = json!([{"name": "X", "value": "1"}]);
        admit(&mut same, Some(&old)).unwrap();
    }

    #[test]
    fn crd_is_structural_and_cluster_scoped() {
        assert_structural_crd(API, "ActionSet");
        let d = def(API, "ActionSet");
        assert!(!d.namespaced);
        assert_eq!(d.short_names, ["as"]);
        let names: Vec<_> = d.printer_columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["BACKUP-TYPE", "STATUS", "AGE"]);
    }

    #[test]
    fn example_admits() {
        let objs = admit_example("kubeblocks-actionset.yaml");
        assert_eq!(objs[0]["kind"], "ActionSet");
        assert!(objs[0]["metadata"].get("namespace").is_none(), "ActionSet is cluster-scoped");
    }
}
