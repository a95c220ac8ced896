//! Restore: puts a Backup's data back into volumes, then runs the post-ready actions.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, PersistentVolumeClaimSpec, ResourceRequirements, Toleration,
    TopologySpreadConstraint, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, ObjectMeta, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::backup_policy::ConnectionCredential;
use super::{check_non_empty, check_range, check_reference_name, check_unchanged};
use crate::field::{FieldError, index, path};
use crate::resource::Admit;

/// A request to restore one backup.
// kube's attribute repeats `category` and `printcolumn` keys by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "dataprotection.kubeblocks.io",
    version = "v1alpha1",
    kind = "Restore",
    namespaced,
    status = "RestoreStatus",
    category = "kubeblocks",
    category = "dataprotection",
    category = "all",
    printcolumn(name = "BACKUP", type_ = "string", json_path = ".spec.backup.name"),
    printcolumn(
        name = "RESTORE-TIME",
        type_ = "string",
        json_path = ".spec.restoreTime",
        description = "Point in time for restoring"
    ),
    printcolumn(
        name = "STATUS",
        type_ = "string",
        json_path = ".status.phase",
        description = "Restore Status."
    ),
    printcolumn(name = "DURATION", type_ = "string", json_path = ".status.duration"),
    printcolumn(
        name = "CREATION-TIME",
        type_ = "string",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "COMPLETION-TIME",
        type_ = "string",
        json_path = ".status.completionTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// The backup to restore. Immutable.
    pub backup: BackupRef,
    /// The point in time to restore to, RFC 3339 in UTC (`2026-11-21T10:00:00Z`). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_time: Option<String>,
    /// Kubernetes objects to restore. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<RestoreKubeResources>,
    /// The volumes to restore into and how the restore pods are scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare_data_config: Option<PrepareDataConfig>,
    /// The service account of the restore pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// How the post-ready actions run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_config: Option<ReadyConfig>,
    /// Environment of the restore containers; wins over the Backup's and the ActionSet's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    /// Resources of the restore job's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_resources: Option<ResourceRequirements>,
    /// Retries before the restore is marked failed (0 to 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_limit: Option<i32>,
}

/// The backup to restore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRef {
    /// The Backup's name.
    pub name: String,
    /// The Backup's namespace.
    pub namespace: String,
}

/// Kubernetes objects to restore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreKubeResources {
    /// The resources to restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub included: Option<Vec<IncludeResource>>,
}

/// One resource type to restore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncludeResource {
    /// `resource.group`, e.g. `configmaps` or `deployments.apps`.
    pub group_resource: String,
    /// Restore only objects with these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
}

/// The `prepareData` stage: which volumes, and how the restore pods are scheduled.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrepareDataConfig {
    /// Restore through `persistentVolumeClaim.spec.dataSourceRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_source_ref: Option<VolumeConfig>,
    /// Claims to restore into, created if missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_claims: Option<Vec<RestoreVolumeClaim>>,
    /// A template of claims, one set per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_claims_template: Option<RestoreVolumeClaimsTemplate>,
    /// `Parallel` or `Serial`; `Parallel` when unset (upstream default).
    #[serde(default)]
    pub volume_claim_restore_policy: VolumeClaimRestorePolicy,
    /// Scheduling of the restore pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling_spec: Option<SchedulingSpec>,
}

/// Whether claims are restored together or one after another.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum VolumeClaimRestorePolicy {
    // All claims at once.
    #[default]
    Parallel,
    // One claim at a time, each after the previous finished.
    Serial,
}

/// Which backed-up volume a claim is restored from, and where it is mounted.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeConfig {
    /// The volume of the backup's targetVolumes to restore from (needed for snapshots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_source: Option<String>,
    /// Where the volume is mounted in the restore container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
}

impl VolumeConfig {
    fn is_empty(&self) -> bool {
        self.volume_source.as_deref().unwrap_or_default().is_empty()
            && self.mount_path.as_deref().unwrap_or_default().is_empty()
    }
}

/// A claim to restore into.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreVolumeClaim {
    /// The claim's metadata; `name` is needed.
    #[schemars(schema_with = "super::free_form_object")]
    pub metadata: ObjectMeta,
    /// The claim's spec.
    pub volume_claim_spec: PersistentVolumeClaimSpec,
    /// Source volume and mount path (fields embedded, as upstream inlines `VolumeConfig`).
    #[serde(flatten)]
    pub volume_config: VolumeConfig,
}

/// Claims built from templates, one set per replica, named `<template>-<index>`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreVolumeClaimsTemplate {
    /// The claim templates.
    pub templates: Vec<RestoreVolumeClaim>,
    /// How many replicas (at least 1).
    pub replicas: i32,
    /// The first index (at least 0); 0 when unset.
    #[serde(default)]
    pub starting_index: i32,
}

/// Scheduling of the restore pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Tolerations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Node labels the pod's node must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// A node to run on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Affinity rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Topology spread constraints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// The scheduler; the default scheduler when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_name: Option<String>,
}

/// The `postReady` stage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadyConfig {
    /// Run post-ready Jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_action: Option<JobAction>,
    /// Run post-ready commands in pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_action: Option<ExecAction>,
    /// The connection credential template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_credential: Option<ConnectionCredential>,
    /// Wait for readiness before the post-ready actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<ReadinessProbe>,
}

/// Post-ready Job configuration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobAction {
    /// The pod whose volumes and env the Job is built from.
    pub target: JobActionTarget,
}

/// Post-ready exec configuration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecAction {
    /// The pods to run in; all that match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ExecActionTarget>,
}

/// Pods a post-ready command runs in.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecActionTarget {
    /// Selects the pods.
    pub pod_selector: LabelSelector,
}

/// The pod a post-ready Job is built from.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobActionTarget {
    /// Selects one pod.
    pub pod_selector: LabelSelector,
    /// Volumes of that pod mounted into the restore pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Vec<VolumeMount>>,
}

/// A readiness probe run before the post-ready actions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessProbe {
    /// Seconds before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i32>,
    /// Seconds before a probe times out; 30 when unset, at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    /// Seconds between probes; 5 when unset, at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i32>,
    /// The probe command.
    pub exec: ReadinessProbeExecAction,
}

/// The probe command.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessProbeExecAction {
    /// The image.
    pub image: String,
    /// The command.
    pub command: Vec<String>,
}

/// Where a restore is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RestorePhase {
    // Restoring.
    Running,
    // Done.
    Completed,
    // Stopped by an error.
    Failed,
    // The claims are filled by a volume populator through dataSourceRef.
    AsDataSource,
}

/// Observed state of a Restore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// Where the restore is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RestorePhase>,
    /// When the restore started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Time>,
    /// When the restore finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timestamp: Option<Time>,
    /// How long the restore took, as a Go duration (`1h2m0.5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Every action run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<RestoreStatusActions>,
    /// Conditions, e.g. warnings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}

/// The actions of each stage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatusActions {
    /// Actions of the prepareData stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare_data: Option<Vec<RestoreStatusAction>>,
    /// Actions of the postReady stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_ready: Option<Vec<RestoreStatusAction>>,
}

/// One restore action.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatusAction {
    /// The action's name.
    pub name: String,
    /// The backup it restores.
    pub backup_name: String,
    /// The object running it.
    pub object_key: String,
    /// Details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Processing, Completed or Failed.
    pub status: RestoreActionStatus,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
}

/// The state of one restore action.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RestoreActionStatus {
    // Running.
    #[default]
    Processing,
    // Done.
    Completed,
    // Stopped by an error.
    Failed,
}

/// The two stages of a restore (the spec's `RestoreStage`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RestoreStage {
    // Putting the data into volumes.
    #[serde(rename = "prepareData")]
    PrepareData,
    // After the cluster is ready.
    #[serde(rename = "postReady")]
    PostReady,
}

/// Checks an RFC 3339 time in UTC with second precision, the only form upstream accepts
/// (`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$`), and that it is a real instant.
///
/// # Errors
/// What is wrong with the value.
pub fn parse_restore_time(value: &str) -> Result<jiff::Timestamp, String> {
    let b = value.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.into_iter().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    let shape = b.len() == 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'Z';
    if !shape {
        return Err(
            "must be RFC 3339 in UTC with second precision, like 2026-11-21T10:00:00Z".into()
        );
    }
    value.parse::<jiff::Timestamp>().map_err(|e| format!("not a valid time: {e}"))
}

fn validate_claim(claim: &RestoreVolumeClaim, field: &str, errors: &mut Vec<FieldError>) {
    check_non_empty(
        errors,
        &path(field, "metadata.name"),
        claim.metadata.name.as_deref().unwrap_or_default(),
    );
    if claim.volume_config.is_empty() {
        errors.push(FieldError::required(
            field,
            "at least one of volumeSource and mountPath must be set",
        ));
    }
}

impl Admit for Restore {
    fn default_fields(&mut self) {
        if let Some(probe) =
            self.spec.ready_config.as_mut().and_then(|r| r.readiness_probe.as_mut())
        {
            probe.timeout_seconds.get_or_insert(30);
            probe.period_seconds.get_or_insert(5);
        }
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let spec = &self.spec;
        check_reference_name(&mut errors, "spec.backup.name", &spec.backup.name);
        check_reference_name(&mut errors, "spec.backup.namespace", &spec.backup.namespace);
        if let Some(time) = &spec.restore_time
            && let Err(e) = parse_restore_time(time)
        {
            errors.push(FieldError::invalid("spec.restoreTime", time, e));
        }
        for (i, res) in spec.resources.iter().flat_map(|r| r.included.iter().flatten()).enumerate()
        {
            check_non_empty(
                &mut errors,
                &path(&index("spec.resources.included", i), "groupResource"),
                &res.group_resource,
            );
        }
        if let Some(prepare) = &spec.prepare_data_config {
            if prepare.data_source_ref.as_ref().is_some_and(VolumeConfig::is_empty) {
                errors.push(FieldError::required(
                    "spec.prepareDataConfig.dataSourceRef",
                    "at least one of volumeSource and mountPath must be set",
                ));
            }
            for (i, claim) in prepare.volume_claims.iter().flatten().enumerate() {
                validate_claim(
                    claim,
                    &index("spec.prepareDataConfig.volumeClaims", i),
                    &mut errors,
                );
            }
            if let Some(template) = &prepare.volume_claims_template {
                let field = "spec.prepareDataConfig.volumeClaimsTemplate";
                if template.templates.is_empty() {
                    errors.push(FieldError::required(
                        path(field, "templates"),
                        "at least one template is needed",
                    ));
                }
                for (i, claim) in template.templates.iter().enumerate() {
                    validate_claim(claim, &index(&path(field, "templates"), i), &mut errors);
                }
                check_range(
                    &mut errors,
                    &path(field, "replicas"),
                    template.replicas.into(),
                    1,
                    None,
                );
                check_range(
                    &mut errors,
                    &path(field, "startingIndex"),
                    template.starting_index.into(),
                    0,
                    None,
                );
            }
        }
        if let Some(ready) = &spec.ready_config {
            if ready.job_action.is_none() && ready.exec_action.is_none() {
                errors.push(FieldError::required(
                    "spec.readyConfig",
                    "at least one of jobAction and execAction must be set",
                ));
            }
            if let Some(cred) = &ready.connection_credential {
                cred.validate("spec.readyConfig.connectionCredential", &mut errors);
            }
            if let Some(probe) = &ready.readiness_probe {
                let field = "spec.readyConfig.readinessProbe";
                if let Some(s) = probe.initial_delay_seconds {
                    check_range(
                        &mut errors,
                        &path(field, "initialDelaySeconds"),
                        s.into(),
                        0,
                        None,
                    );
                }
                if let Some(s) = probe.timeout_seconds {
                    check_range(&mut errors, &path(field, "timeoutSeconds"), s.into(), 1, None);
                }
                if let Some(s) = probe.period_seconds {
                    check_range(&mut errors, &path(field, "periodSeconds"), s.into(), 1, None);
                }
                check_non_empty(&mut errors, &path(field, "exec.image"), &probe.exec.image);
                if probe.exec.command.is_empty() {
                    errors.push(FieldError::required(
                        path(field, "exec.command"),
                        "at least one item is needed",
                    ));
                }
            }
        }
        if let Some(limit) = spec.backoff_limit {
            check_range(&mut errors, "spec.backoffLimit", limit.into(), 0, Some(10));
        }
        errors
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        // Upstream's `self == oldSelf` rules.
        let mut errors = Vec::new();
        let (new, old) = (&self.spec, &old.spec);
        check_unchanged(&mut errors, "spec.backup", &new.backup, &old.backup);
        check_unchanged(&mut errors, "spec.restoreTime", &new.restore_time, &old.restore_time);
        check_unchanged(&mut errors, "spec.resources", &new.resources, &old.resources);
        let (np, op) = (new.prepare_data_config.as_ref(), old.prepare_data_config.as_ref());
        let field = "spec.prepareDataConfig";
        check_unchanged(
            &mut errors,
            &path(field, "dataSourceRef"),
            &np.and_then(|p| p.data_source_ref.as_ref()),
            &op.and_then(|p| p.data_source_ref.as_ref()),
        );
        check_unchanged(
            &mut errors,
            &path(field, "volumeClaims"),
            &np.and_then(|p| p.volume_claims.as_ref()),
            &op.and_then(|p| p.volume_claims.as_ref()),
        );
        check_unchanged(
            &mut errors,
            &path(field, "volumeClaimsTemplate"),
            &np.and_then(|p| p.volume_claims_template.as_ref()),
            &op.and_then(|p| p.volume_claims_template.as_ref()),
        );
        check_unchanged(
            &mut errors,
            &path(field, "schedulingSpec"),
            &np.and_then(|p| p.scheduling_spec.as_ref()),
            &op.and_then(|p| p.scheduling_spec.as_ref()),
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

    /// A field path and an edit that changes it.
    type Change = (&'static str, fn(&mut Value));

    fn restore() -> Value {
        json!({
            "apiVersion": API, "kind": "Restore",
            "metadata": {"name": "pg-cluster-restore", "namespace": "default"},
            "spec": {
                "backup": {"name": "pg-cluster-backup-20261121", "namespace": "default"},
                "restoreTime": "2026-11-21T10:00:00Z",
                "prepareDataConfig": {
                    "volumeClaimsTemplate": {
                        "templates": [{
                            "metadata": {"name": "data-pg-restored-postgresql", "labels": {"app": "pg"}},
                            "volumeClaimSpec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}},
                            "volumeSource": "data",
                            "mountPath": "/home/postgres/pgdata"
                        }],
                        "replicas": 2
                    },
                    "schedulingSpec": {"nodeSelector": {"kubernetes.io/os": "linux"}, "tolerations": [{"operator": "Exists"}]}
                },
                "readyConfig": {
                    "execAction": {"target": {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "pg-restored"}}}},
                    "readinessProbe": {"exec": {"image": "docker.io/apecloud/spilo:14.8.0", "command": ["pg_isready"]}}
                },
                "env": [{"name": "RESTORE_MODE", "value": "full"}],
                "backoffLimit": 3
            }
        })
    }

    #[test]
    fn admits_a_restore_and_fills_defaults() {
        let mut obj = restore();
        admit(&mut obj, None).unwrap();
        let spec = &obj["spec"];
        assert_eq!(spec["prepareDataConfig"]["volumeClaimRestorePolicy"], "Parallel");
        assert_eq!(spec["prepareDataConfig"]["volumeClaimsTemplate"]["startingIndex"], 0);
        assert_eq!(spec["readyConfig"]["readinessProbe"]["timeoutSeconds"], 30);
        assert_eq!(spec["readyConfig"]["readinessProbe"]["periodSeconds"], 5);
        let claim = &spec["prepareDataConfig"]["volumeClaimsTemplate"]["templates"][0];
        assert_eq!(claim["volumeSource"], "data");
        assert_eq!(claim["metadata"]["labels"]["app"], "pg");
    }

    #[test]
    fn restore_time_must_be_rfc3339_utc() {
        parse_restore_time("2026-11-21T10:00:00Z").unwrap();
        for bad in [
            "2026-11-21T10:00:00+08:00",
            "2026-11-21 10:00:00",
            "2026-11-21T10:00:00.5Z",
            "2026-02-30T10:00:00Z",
            "yesterday",
        ] {
            assert!(parse_restore_time(bad).is_err(), "{bad} accepted");
            let mut obj = restore();
            obj["spec"]["restoreTime"] = json!(bad);
            assert_eq!(refused_fields(obj), ["spec.restoreTime"], "{bad}");
        }
    }

    #[test]
    fn rules_name_their_fields() {
        let mut obj = restore();
        obj["spec"]["backup"]["name"] = json!("");
        obj["spec"]["resources"] = json!({"included": [{"groupResource": ""}]});
        obj["spec"]["prepareDataConfig"]["dataSourceRef"] = json!({});
        obj["spec"]["prepareDataConfig"]["volumeClaims"] =
            json!([{"metadata": {}, "volumeClaimSpec": {}}]);
        obj["spec"]["prepareDataConfig"]["volumeClaimsTemplate"]["replicas"] = json!(0);
        obj["spec"]["readyConfig"] =
            json!({"readinessProbe": {"periodSeconds": 0, "exec": {"image": "i", "command": []}}});
        obj["spec"]["backoffLimit"] = json!(-1);
        assert_eq!(
            refused_fields(obj),
            [
                "spec.backup.name",
                "spec.resources.included[0].groupResource",
                "spec.prepareDataConfig.dataSourceRef",
                "spec.prepareDataConfig.volumeClaims[0].metadata.name",
                "spec.prepareDataConfig.volumeClaims[0]",
                "spec.prepareDataConfig.volumeClaimsTemplate.replicas",
                "spec.readyConfig",
                "spec.readyConfig.readinessProbe.periodSeconds",
                "spec.readyConfig.readinessProbe.exec.command",
                "spec.backoffLimit",
            ]
        );
    }

    #[test]
    fn backup_ref_needs_namespace_and_policy_is_an_enum() {
        let mut obj = restore();
        obj["spec"]["backup"] = json!({"name": "b"});
        assert_eq!(refused_fields(obj), ["spec.backup"]);
        let mut obj = restore();
        obj["spec"]["prepareDataConfig"]["volumeClaimRestorePolicy"] = json!("Random");
        assert_eq!(refused_fields(obj), ["spec.prepareDataConfig.volumeClaimRestorePolicy"]);
        let schema =
            &def(API, "Restore").schema["properties"]["spec"]["properties"]["prepareDataConfig"];
        assert_eq!(
            schema["properties"]["volumeClaimRestorePolicy"]["enum"],
            json!(["Parallel", "Serial"])
        );
    }

    #[test]
    fn immutable_fields_refused_on_update() {
        let mut old = restore();
        admit(&mut old, None).unwrap();
        let changes: [Change; 4] = [
            ("spec.backup", |o| o["spec"]["backup"]["name"] = json!("other")),
            ("spec.restoreTime", |o| o["spec"]["restoreTime"] = json!("2026-11-21T11:00:00Z")),
            ("spec.prepareDataConfig.volumeClaimsTemplate", |o| {
                o["spec"]["prepareDataConfig"]["volumeClaimsTemplate"]["replicas"] = json!(3)
            }),
            ("spec.prepareDataConfig.schedulingSpec", |o| {
                o["spec"]["prepareDataConfig"]["schedulingSpec"]["nodeName"] = json!("node-1")
            }),
        ];
        for (field, change) in changes {
            let mut new = old.clone();
            change(&mut new);
            let errors = admit(&mut new, Some(&old)).unwrap_err();
            assert_eq!(errors[0].field, field);
        }
        let mut ok = old.clone();
        ok["spec"]["backoffLimit"] = json!(5);
        admit(&mut ok, Some(&old)).unwrap();
    }

    #[test]
    fn crd_is_structural_with_upstream_columns() {
        assert_structural_crd(API, "Restore");
        let d = def(API, "Restore");
        let names: Vec<_> = d.printer_columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["BACKUP", "RESTORE-TIME", "STATUS", "DURATION", "CREATION-TIME", "COMPLETION-TIME"]
        );
        assert!(d.categories.contains(&"all".to_string()));
    }

    #[test]
    fn example_admits() {
        let objs = admit_example("kubeblocks-restore.yaml");
        assert_eq!(objs[0]["spec"]["backup"]["name"], "pg-prod-backup");
    }
}
