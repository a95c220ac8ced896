//! The Jobs of a Restore: prepareData (one per replica of claims, per backup of the chain), the
//! readiness probe, and the postReady actions. Built like upstream's restore builder: the restore
//! claims mounted at their mountPath, the repo's tool-config Secret at /etc/datasafed (and a
//! Mount repo's claim at /backupdata), env merged ActionSet < Backup (its method's env) < Restore,
//! then what the repo's access method adds.

use std::collections::BTreeMap;

use holdfast_api::kubeblocks::backup_policy::PodSelectionStrategy;
use holdfast_api::kubeblocks::restore::{PrepareDataConfig, RestoreVolumeClaim};
use holdfast_api::kubeblocks::{Backup, Restore};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, PersistentVolumeClaimVolumeSource, Pod, PodSpec,
    PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::plan::BackupSet;
use crate::backup::job::label_value;
use crate::backup::status::join_path;
use crate::backup::{LABEL_MANAGED_BY, MANAGED_BY, target_pods};
use crate::kubeblocks_env::{RepoAccess, data_env, merge, var};
use crate::{owner, target_pod};

/// On restore Jobs: the Restore they work for.
pub const LABEL_RESTORE: &str = "dataprotection.kubeblocks.io/restore";

/// One prepareData Job's worth of claims: the `volumeClaims`, or one replica of the template.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    /// Which target pod's data this unit gets (strategy All backups keep one directory per pod).
    pub pod_index: usize,
    /// The claims, with their final names.
    pub claims: Vec<RestoreVolumeClaim>,
}

/// The units of `cfg`, in order: the `volumeClaims` (if any), then each replica of the
/// template from `startingIndex`, its claims named `<template>-<index>`.
pub fn units(cfg: &PrepareDataConfig) -> Vec<Unit> {
    let mut units = Vec::new();
    if let Some(claims) = cfg.volume_claims.as_ref().filter(|c| !c.is_empty()) {
        units.push(Unit { pod_index: 0, claims: claims.clone() });
    }
    if let Some(template) = &cfg.volume_claims_template {
        let start = usize::try_from(template.starting_index).unwrap_or(0);
        let replicas = usize::try_from(template.replicas).unwrap_or(0);
        for (n, index) in (start..start + replicas).enumerate() {
            let claims = template
                .templates
                .iter()
                .map(|t| {
                    let mut claim = t.clone();
                    let base = t.metadata.name.clone().unwrap_or_default();
                    claim.metadata.name = Some(format!("{base}-{index}"));
                    claim
                })
                .collect();
            units.push(Unit { pod_index: n, claims });
        }
    }
    units
}

/// The first 8 characters of the Restore's uid: Job names stay unique per Restore and short.
pub fn uid8(restore: &Restore) -> String {
    restore.uid().unwrap_or_default().chars().filter(|c| *c != '-').take(8).collect()
}

/// `restore-preparedata-<uid8>-<backup index>-<unit index>`.
pub fn prepare_data_job_name(restore: &Restore, set: usize, unit: usize) -> String {
    format!("restore-preparedata-{}-{set}-{unit}", uid8(restore))
}

/// `restore-postready-<uid8>-<action index>[-<pod index>]`.
pub fn post_ready_job_name(restore: &Restore, action: usize, pod: Option<usize>) -> String {
    match pod {
        Some(p) => format!("restore-postready-{}-{action}-{p}", uid8(restore)),
        None => format!("restore-postready-{}-{action}", uid8(restore)),
    }
}

/// `restore-probe-<uid8>`.
pub fn probe_job_name(restore: &Restore) -> String {
    format!("restore-probe-{}", uid8(restore))
}

/// Where a backup's data is in the repo: `status.path`, plus the pod directory for strategy All.
pub fn base_path(backup: &Backup, pod_index: usize) -> String {
    let st = backup.status.as_ref();
    let path = st.and_then(|s| s.path.clone()).unwrap_or_default();
    let all = st
        .and_then(|s| s.target.as_ref())
        .is_some_and(|t| t.pod_selector.strategy == PodSelectionStrategy::All);
    if !all {
        return join_path(&[&path]);
    }
    let pods = target_pods(backup);
    let pod = pods.get(pod_index).or(pods.first()).cloned().unwrap_or_default();
    join_path(&[&path, &pod])
}

/// The `DP_*` variables of one backup of the chain, then the ActionSet's, the Backup method's and
/// the Restore's env (later wins).
pub fn restore_env(
    bin_dir: &std::path::Path,
    restore: &Restore,
    set: &BackupSet,
    pod_index: usize,
) -> Vec<EnvVar> {
    let backup = &set.backup;
    let base = base_path(backup, pod_index);
    let root = base.rsplit_once('/').map(|(r, _)| r).filter(|r| !r.is_empty()).unwrap_or("/");
    let mut env = data_env(&backup.name_any(), &base, bin_dir);
    env.push(var("DP_BACKUP_ROOT_PATH", root));
    let range = backup.status.as_ref().and_then(|s| s.time_range.as_ref());
    if let Some(start) = range.and_then(|r| r.start.as_ref()) {
        env.push(var("DP_BACKUP_START_TIME", start.0.to_string()));
    }
    if let Some(stop) = range.and_then(|r| r.end.as_ref()) {
        env.push(var("DP_BACKUP_STOP_TIME", stop.0.to_string()));
    }
    merge(&mut env, set.env.clone());
    merge(&mut env, set.action_set.as_ref().and_then(|a| a.spec.env.clone()).unwrap_or_default());
    let method_env =
        backup.status.as_ref().and_then(|s| s.backup_method.as_ref()).and_then(|m| m.env.clone());
    merge(&mut env, method_env.unwrap_or_default());
    merge(&mut env, restore.spec.env.clone().unwrap_or_default());
    env
}

/// The parts a restore Job differs in.
#[derive(Debug, Clone, Default)]
pub struct JobParts {
    pub name: String,
    pub container: String,
    pub image: String,
    pub command: Vec<String>,
    pub env: Vec<EnvVar>,
    pub env_from: Vec<EnvFromSource>,
    pub volumes: Vec<Volume>,
    pub mounts: Vec<VolumeMount>,
    /// How the Job reaches the repo, if the work needs it.
    pub repo_access: Option<RepoAccess>,
    pub backoff_limit: Option<i32>,
    pub active_deadline_seconds: Option<i64>,
}

/// The claims of `unit` as pod volumes and mounts (claims without a mountPath are restored by
/// other means, e.g. snapshots, and not mounted).
pub fn claim_volumes(unit: &Unit) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for (i, claim) in unit.claims.iter().enumerate() {
        let Some(path) = claim.volume_config.mount_path.clone().filter(|p| !p.is_empty()) else {
            continue;
        };
        let name = format!("dp-claim-{i}");
        volumes.push(Volume {
            name: name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.metadata.name.clone().unwrap_or_default(),
                read_only: None,
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount { name, mount_path: path, ..VolumeMount::default() });
    }
    (volumes, mounts)
}

/// The pod volumes named by `mounts`, with the mounts (for post-ready work on a pod's volumes).
pub fn pod_volumes(pod: &Pod, mounts: &[VolumeMount]) -> (Vec<Volume>, Vec<VolumeMount>) {
    let pod_volumes = pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default();
    let volumes =
        pod_volumes.into_iter().filter(|v| mounts.iter().any(|m| m.name == v.name)).collect();
    (volumes, mounts.to_vec())
}

/// The Job.
pub fn build(restore: &Restore, mut parts: JobParts) -> Job {
    let ns = restore.namespace().unwrap_or_default();
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_RESTORE.to_string(), label_value(&restore.name_any()));
    labels.insert(LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string());
    if let Some(access) = &parts.repo_access {
        parts.volumes.extend(access.volumes());
        parts.mounts.extend(access.mounts());
        merge(&mut parts.env, access.env());
    }
    let scheduling = restore
        .spec
        .prepare_data_config
        .as_ref()
        .and_then(|p| p.scheduling_spec.clone())
        .unwrap_or_default();
    let container = Container {
        name: parts.container,
        image: Some(parts.image),
        command: Some(parts.command),
        env: Some(parts.env),
        env_from: (!parts.env_from.is_empty()).then_some(parts.env_from),
        volume_mounts: Some(parts.mounts),
        resources: restore.spec.container_resources.clone(),
        ..Container::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(parts.name),
            namespace: Some(ns),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner::controller_reference(restore)]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: parts.backoff_limit,
            active_deadline_seconds: parts.active_deadline_seconds,
            ttl_seconds_after_finished: Some(crate::job_runner::FINISHED_JOB_TTL_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![container],
                    volumes: Some(parts.volumes),
                    service_account_name: restore.spec.service_account_name.clone(),
                    node_selector: scheduling.node_selector,
                    node_name: scheduling.node_name,
                    tolerations: scheduling.tolerations,
                    affinity: scheduling.affinity,
                    topology_spread_constraints: scheduling.topology_spread_constraints,
                    scheduler_name: scheduling.scheduler_name,
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// The container env and envFrom of `pod` (its `container`, or its first).
pub fn pod_env(
    pod: &Pod,
    container: Option<&str>,
) -> (Vec<EnvVar>, Vec<EnvFromSource>, Vec<VolumeMount>) {
    let c = target_pod::container(pod, container);
    (
        c.and_then(|c| c.env.clone()).unwrap_or_default(),
        c.and_then(|c| c.env_from.clone()).unwrap_or_default(),
        c.and_then(|c| c.volume_mounts.clone()).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_api::kubeblocks::restore::RestoreVolumeClaimsTemplate;

    fn claim(name: &str, mount: &str) -> RestoreVolumeClaim {
        let mut c = RestoreVolumeClaim::default();
        c.metadata.name = Some(name.into());
        c.volume_config.mount_path = Some(mount.into());
        c
    }

    #[test]
    fn template_claims_are_named_per_index_from_the_starting_index() {
        let cfg = PrepareDataConfig {
            volume_claims: Some(vec![claim("shared", "/shared")]),
            volume_claims_template: Some(RestoreVolumeClaimsTemplate {
                templates: vec![claim("data-pg", "/data"), claim("log-pg", "/log")],
                replicas: 2,
                starting_index: 3,
            }),
            ..PrepareDataConfig::default()
        };
        let units = units(&cfg);
        let names: Vec<Vec<String>> = units
            .iter()
            .map(|u| u.claims.iter().map(|c| c.metadata.name.clone().unwrap()).collect())
            .collect();
        assert_eq!(
            names,
            [vec!["shared"], vec!["data-pg-3", "log-pg-3"], vec!["data-pg-4", "log-pg-4"]]
        );
        assert_eq!(units.iter().map(|u| u.pod_index).collect::<Vec<_>>(), [0, 0, 1]);
        let (volumes, mounts) = claim_volumes(&units[1]);
        assert_eq!(volumes[1].persistent_volume_claim.as_ref().unwrap().claim_name, "log-pg-3");
        assert_eq!(mounts[1].mount_path, "/log");
    }

    #[test]
    fn restore_env_wins_over_backup_and_action_set_env() {
        use holdfast_api::kubeblocks::ActionSet;
        use holdfast_api::kubeblocks::actionset::ActionSetSpec;
        use holdfast_api::kubeblocks::backup::BackupStatus;
        use holdfast_api::kubeblocks::backup_policy::BackupMethod;
        use holdfast_api::kubeblocks::restore::RestoreSpec;
        let mut backup = Backup::new("b1", Default::default());
        backup.status = Some(BackupStatus {
            path: Some("/ns/b1".into()),
            backup_method: Some(BackupMethod {
                env: Some(vec![var("A", "backup"), var("B", "backup")]),
                ..BackupMethod::default()
            }),
            ..BackupStatus::default()
        });
        let action_set = ActionSet::new(
            "as",
            ActionSetSpec {
                env: Some(vec![var("A", "as"), var("B", "as"), var("C", "as")]),
                ..ActionSetSpec::default()
            },
        );
        let action_set = Some(action_set);
        let set = BackupSet { backup, action_set, backup_type: Default::default(), env: vec![] };
        let restore = Restore::new(
            "r",
            RestoreSpec { env: Some(vec![var("A", "restore")]), ..RestoreSpec::default() },
        );
        let env = restore_env(std::path::Path::new("/var/lib/holdfast/bin"), &restore, &set, 0);
        let get = |n: &str| env.iter().find(|e| e.name == n).and_then(|e| e.value.clone()).unwrap();
        assert_eq!(
            (get("A"), get("B"), get("C")),
            ("restore".into(), "backup".into(), "as".into())
        );
        assert_eq!(get("DP_BACKUP_NAME"), "b1");
        assert_eq!(get("DP_BACKUP_BASE_PATH"), "/ns/b1");
        assert_eq!(get("DP_BACKUP_ROOT_PATH"), "/ns");
    }
}
