//! The Pod of one Job attempt, as the Kubernetes Job controller builds it.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::{Error, owner};

/// Label holding the Job's uid on its pods (both spellings Kubernetes sets).
pub const CONTROLLER_UID: &str = "controller-uid";
pub const BATCH_CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// Label holding the Job's name on its pods (both spellings Kubernetes sets).
pub const JOB_NAME: &str = "job-name";
pub const BATCH_JOB_NAME: &str = "batch.kubernetes.io/job-name";

/// Characters of generated name suffixes: Kubernetes' alphabet without vowels and look-alikes.
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `<job>-<5 random>`.
pub fn pod_name(job: &str) -> String {
    let suffix: String = (0..5)
        .map(|_| {
            let i = rand::random_range(0..SUFFIX_ALPHABET.len());
            char::from(SUFFIX_ALPHABET[i])
        })
        .collect();
    // A pod name is at most 253 characters; Kubernetes trims the job part to leave room.
    let keep = job.len().min(57);
    format!("{}-{suffix}", &job[..floor_char_boundary(job, keep)])
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A new Pod for an attempt of `job`, from its template.
pub fn new_pod(job: &Job, node_name: &str) -> Result<Pod, Error> {
    let ns = job.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job
        .metadata
        .uid
        .clone()
        .ok_or_else(|| Error::Invalid(format!("Job {ns}/{name} has no uid")))?;
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .ok_or_else(|| Error::Invalid(format!("Job {ns}/{name} has no spec")))?;
    let template_meta = template.metadata.unwrap_or_default();
    let mut labels: BTreeMap<String, String> = template_meta.labels.unwrap_or_default();
    labels.insert(JOB_NAME.into(), name.clone());
    labels.insert(BATCH_JOB_NAME.into(), name.clone());
    labels.insert(CONTROLLER_UID.into(), uid.clone());
    labels.insert(BATCH_CONTROLLER_UID.into(), uid);
    let mut spec: PodSpec = template.spec.ok_or_else(|| {
        Error::Invalid(format!("Job {ns}/{name}: spec.template.spec is required"))
    })?;
    if spec.restart_policy.is_none() {
        spec.restart_policy = Some("Never".into());
    }
    spec.node_name = Some(node_name.to_string());
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(&name)),
            namespace: Some(ns),
            labels: Some(labels),
            annotations: template_meta.annotations,
            owner_references: Some(vec![owner::controller_reference(job)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// The pod's phase ("Pending" when unset).
pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

/// When the pod's last container finished, if it did.
pub fn finished_at(pod: &Pod) -> Option<Time> {
    let status = pod.status.as_ref()?;
    status
        .container_statuses
        .iter()
        .chain(status.init_container_statuses.iter())
        .flatten()
        .filter_map(|c: &ContainerStatus| {
            c.state.as_ref()?.terminated.as_ref()?.finished_at.clone()
        })
        .max_by_key(|t| t.0)
}

/// The first container of the pod that failed (init containers first), if any.
pub fn failed_container(pod: &Pod) -> Option<&ContainerStatus> {
    let status = pod.status.as_ref()?;
    status.init_container_statuses.iter().chain(status.container_statuses.iter()).flatten().find(
        |c| c.state.as_ref().and_then(|s| s.terminated.as_ref()).is_some_and(|t| t.exit_code != 0),
    )
}

/// The host's name, which embedded pods report as their node.
pub fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "holdfast".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_have_a_five_character_suffix() {
        let name = pod_name("backup-1");
        let suffix = name.strip_prefix("backup-1-").expect(&name);
        assert_eq!(suffix.len(), 5);
        assert!(suffix.bytes().all(|b| SUFFIX_ALPHABET.contains(&b)));
        assert!(pod_name(&"x".repeat(100)).len() <= 63);
    }
}
