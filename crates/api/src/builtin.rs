//! The built-in kinds the controllers need, stored as plain objects (nothing runs
//! containers). They are admitted through their k8s-openapi types, which checks field types and
//! prunes unknown fields, and get hand-written printer columns like kubectl shows for a cluster.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, Namespace, NamespaceStatus, Node, PersistentVolume, PersistentVolumeClaim,
    Pod, Secret, ServiceAccount,
};
use k8s_openapi::api::events::v1::Event as EventV1;
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};

use crate::resource::{Admit, ResourceDef, column};

impl Admit for Namespace {
    fn default_fields(&mut self) {
        // A namespace is Active until it is being deleted, as the namespace controller reports.
        let status = self.status.get_or_insert_with(NamespaceStatus::default);
        if status.phase.is_none() {
            status.phase = Some("Active".into());
        }
    }
}

impl Admit for Secret {
    fn default_fields(&mut self) {
        // As the apiserver does: stringData is write-only, merged into data, and type defaults to Opaque.
        if let Some(string_data) = self.string_data.take() {
            let data = self.data.get_or_insert_with(BTreeMap::new);
            for (k, v) in string_data {
                data.insert(k, ByteString(v.into_bytes()));
            }
        }
        if self.type_.as_deref().is_none_or(str::is_empty) {
            self.type_ = Some("Opaque".into());
        }
    }
}

impl Admit for ConfigMap {}
impl Admit for Node {}
impl Admit for Pod {}
impl Admit for PersistentVolumeClaim {}
impl Admit for PersistentVolume {}
impl Admit for Event {}
impl Admit for EventV1 {}
impl Admit for ServiceAccount {}
impl Admit for Job {}
impl Admit for StorageClass {}
impl Admit for CSIDriver {}
impl Admit for Lease {}

/// Definitions of every built-in kind served.
pub fn definitions() -> Vec<ResourceDef> {
    let age = || column("Age", "date", ".metadata.creationTimestamp", 0);
    vec![
        ResourceDef::builtin::<Namespace>(
            "namespaces",
            false,
            &["ns"],
            &[],
            true,
            vec![column("Status", "string", ".status.phase", 0), age()],
        ),
        // The node the embedded node agent serves registers itself here (kubectl get nodes).
        ResourceDef::builtin::<Node>(
            "nodes",
            false,
            &["no"],
            &[],
            true,
            vec![
                column("Status", "string", ".status.conditions[?(@.type==\"Ready\")].status", 0),
                age(),
                column("Version", "string", ".status.nodeInfo.kubeletVersion", 0),
                column("Internal-IP", "string", ".status.addresses[0].address", 1),
                column("OS-Image", "string", ".status.nodeInfo.osImage", 1),
            ],
        ),
        ResourceDef::builtin::<Secret>(
            "secrets",
            true,
            &[],
            &[],
            false,
            vec![column("Type", "string", ".type", 0), age()],
        ),
        ResourceDef::builtin::<ConfigMap>("configmaps", true, &["cm"], &[], false, vec![age()]),
        ResourceDef::builtin::<Pod>(
            "pods",
            true,
            &["po"],
            &["all"],
            true,
            vec![
                column("Status", "string", ".status.phase", 0),
                age(),
                column("IP", "string", ".status.podIP", 1),
                column("Node", "string", ".spec.nodeName", 1),
            ],
        ),
        ResourceDef::builtin::<PersistentVolumeClaim>(
            "persistentvolumeclaims",
            true,
            &["pvc"],
            &[],
            true,
            vec![
                column("Status", "string", ".status.phase", 0),
                column("Volume", "string", ".spec.volumeName", 0),
                column("Capacity", "string", ".status.capacity.storage", 0),
                column("Access Modes", "string", ".spec.accessModes", 0),
                column("StorageClass", "string", ".spec.storageClassName", 0),
                age(),
            ],
        ),
        ResourceDef::builtin::<PersistentVolume>(
            "persistentvolumes",
            false,
            &["pv"],
            &[],
            true,
            vec![
                column("Capacity", "string", ".spec.capacity.storage", 0),
                column("Reclaim Policy", "string", ".spec.persistentVolumeReclaimPolicy", 0),
                column("Status", "string", ".status.phase", 0),
                column("Claim", "string", ".spec.claimRef.name", 0),
                column("StorageClass", "string", ".spec.storageClassName", 0),
                age(),
            ],
        ),
        ResourceDef::builtin::<Event>(
            "events",
            true,
            &["ev"],
            &[],
            false,
            vec![
                column("Last Seen", "date", ".lastTimestamp", 0),
                column("Type", "string", ".type", 0),
                column("Reason", "string", ".reason", 0),
                column("Object", "string", ".involvedObject.name", 0),
                column("Message", "string", ".message", 0),
            ],
        ),
        ResourceDef::builtin::<EventV1>(
            "events",
            true,
            &["ev"],
            &[],
            false,
            vec![
                column("Type", "string", ".type", 0),
                column("Reason", "string", ".reason", 0),
                column("Object", "string", ".regarding.name", 0),
                column("Note", "string", ".note", 0),
                age(),
            ],
        ),
        ResourceDef::builtin::<ServiceAccount>(
            "serviceaccounts",
            true,
            &["sa"],
            &[],
            false,
            vec![age()],
        ),
        // Leader election of `holdfast operator` replicas.
        ResourceDef::builtin::<Lease>(
            "leases",
            true,
            &[],
            &[],
            false,
            vec![column("Holder", "string", ".spec.holderIdentity", 0), age()],
        ),
        ResourceDef::builtin::<Job>(
            "jobs",
            true,
            &[],
            &["all"],
            true,
            vec![
                column("Succeeded", "integer", ".status.succeeded", 0),
                column("Failed", "integer", ".status.failed", 0),
                age(),
            ],
        ),
        ResourceDef::builtin::<StorageClass>(
            "storageclasses",
            false,
            &["sc"],
            &[],
            false,
            vec![
                column("Provisioner", "string", ".provisioner", 0),
                column("ReclaimPolicy", "string", ".reclaimPolicy", 0),
                column("VolumeBindingMode", "string", ".volumeBindingMode", 0),
                age(),
            ],
        ),
        ResourceDef::builtin::<CSIDriver>(
            "csidrivers",
            false,
            &[],
            &[],
            false,
            vec![column("AttachRequired", "boolean", ".spec.attachRequired", 0), age()],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(kind: &str) -> ResourceDef {
        definitions().into_iter().find(|d| d.kind == kind).unwrap()
    }

    #[test]
    fn secret_string_data_is_merged_into_data() {
        let mut s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "stringData": {"password": "hunter2"}});
        def("Secret").admit(&mut s, None).unwrap();
        assert_eq!(s["data"]["password"], "aHVudGVyMg==");
        assert!(s.get("stringData").is_none());
        assert_eq!(s["type"], "Opaque");
    }

    #[test]
    fn pod_with_wrong_type_is_refused_with_its_path() {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": 7}]}});
        let errs = def("Pod").admit(&mut p, None).unwrap_err();
        assert_eq!(errs[0].field, "spec.containers[0].image");
    }
}
