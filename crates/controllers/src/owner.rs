//! Owner references: the objects a controller creates for another (Jobs for a Backup or a
//! Restore, Pods for a Job) name it as their controller, so watches map them back and their
//! deletion follows it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

/// A reference marking `owner` as the controller of the object that carries it.
pub fn controller_reference<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `obj` names the object with `uid` among its owners.
pub fn is_owned_by<K: Resource>(obj: &K, uid: &str) -> bool {
    obj.owner_references().iter().any(|o| o.uid == uid)
}

/// Whether `obj` names the object with `uid` as its controller.
pub fn is_controlled_by<K: Resource>(obj: &K, uid: &str) -> bool {
    obj.owner_references().iter().any(|o| o.uid == uid && o.controller == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::Pod;

    #[test]
    fn a_controller_reference_names_kind_name_and_uid() {
        let mut job = Job::default();
        job.metadata.name = Some("dp-backup-0-b1".into());
        job.metadata.uid = Some("u-1".into());
        let reference = controller_reference(&job);
        assert_eq!(
            (reference.api_version.as_str(), reference.kind.as_str(), reference.name.as_str()),
            ("batch/v1", "Job", "dp-backup-0-b1")
        );
        let mut pod = Pod::default();
        pod.metadata.owner_references = Some(vec![reference.clone()]);
        assert!(is_controlled_by(&pod, "u-1") && is_owned_by(&pod, "u-1"));
        pod.metadata.owner_references =
            Some(vec![OwnerReference { controller: None, ..reference }]);
        assert!(!is_controlled_by(&pod, "u-1") && is_owned_by(&pod, "u-1"));
        assert!(!is_owned_by(&pod, "u-2"));
    }
}
