//! `snapshot.storage.k8s.io/v1`: VolumeSnapshot, VolumeSnapshotContent, VolumeSnapshotClass
//! (`spec/volumesnapshot-v1.md`; the upstream CSI snapshot API where the spec is silent).

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::field::FieldError;
use crate::resource::{Admit, ResourceDef};

/// Definitions of the snapshot kinds.
pub fn definitions() -> Vec<ResourceDef> {
    vec![ResourceDef::custom::<VolumeSnapshot>()]
}

/// A user's request for a point-in-time snapshot of a PVC, or a binding to an existing snapshot.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "snapshot.storage.k8s.io",
    version = "v1",
    kind = "VolumeSnapshot",
    namespaced,
    status = "VolumeSnapshotStatus",
    shortname = "vs",
    category = "all",
    category = "snapshot",
    printcolumn(name = "ReadyToUse", type_ = "boolean", json_path = ".status.readyToUse", description = "whether the snapshot can restore a volume"),
    printcolumn(name = "SourcePVC", type_ = "string", json_path = ".spec.source.persistentVolumeClaimName"),
    printcolumn(name = "SourceSnapshotContent", type_ = "string", json_path = ".spec.source.volumeSnapshotContentName"),
    printcolumn(name = "RestoreSize", type_ = "string", json_path = ".status.restoreSize"),
    printcolumn(name = "SnapshotClass", type_ = "string", json_path = ".spec.volumeSnapshotClassName"),
    printcolumn(name = "SnapshotContent", type_ = "string", json_path = ".status.boundVolumeSnapshotContentName"),
    printcolumn(name = "CreationTime", type_ = "date", json_path = ".status.creationTime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSpec {
    /// Where the snapshot is taken from. Immutable after creation.
    pub source: VolumeSnapshotSource,
    /// The VolumeSnapshotClass asked for; unset means the default class of the source's driver.
    /// The empty string is not allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
}

/// Exactly one of the two fields must be set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSource {
    /// A PVC in the same namespace, to snapshot dynamically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_name: Option<String>,
    /// A pre-existing VolumeSnapshotContent to bind to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_content_name: Option<String>,
}

/// Observed state of a VolumeSnapshot.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotStatus {
    /// The VolumeSnapshotContent this snapshot is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_volume_snapshot_content_name: Option<String>,
    /// When the storage system took the snapshot (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<String>,
    /// The last error seen while creating the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<VolumeSnapshotError>,
    /// Whether the snapshot can be used to restore a volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// The minimum size of a volume restored from this snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<Quantity>,
}

/// An error seen while creating a snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct VolumeSnapshotError {
    /// Details of the error; must not carry sensitive data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the error was seen (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

impl Admit for VolumeSnapshot {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let src = &self.spec.source;
        match (&src.persistent_volume_claim_name, &src.volume_snapshot_content_name) {
            (Some(_), Some(_)) => errors.push(FieldError::forbidden(
                "spec.source",
                "exactly one of persistentVolumeClaimName or volumeSnapshotContentName may be set",
            )),
            (None, None) => errors.push(FieldError::required(
                "spec.source",
                "exactly one of persistentVolumeClaimName or volumeSnapshotContentName must be set",
            )),
            _ => {}
        }
        for (field, value) in [
            ("spec.source.persistentVolumeClaimName", &src.persistent_volume_claim_name),
            ("spec.source.volumeSnapshotContentName", &src.volume_snapshot_content_name),
        ] {
            if value.as_deref() == Some("") {
                errors.push(FieldError::required(field, "may not be empty"));
            }
        }
        if self.spec.volume_snapshot_class_name.as_deref() == Some("") {
            errors.push(FieldError::invalid(
                "spec.volumeSnapshotClassName",
                "",
                "may not be the empty string; leave it unset to use the default class",
            ));
        }
        errors
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        if self.spec.source != old.spec.source {
            vec![FieldError::forbidden("spec.source", "source is immutable after creation")]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::ResourceDef;
    use serde_json::json;

    fn def() -> ResourceDef {
        ResourceDef::custom::<VolumeSnapshot>()
    }

    #[test]
    fn exactly_one_source() {
        let mut both = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "s"},
            "spec": {"source": {"persistentVolumeClaimName": "a", "volumeSnapshotContentName": "b"}}});
        let errs = def().admit(&mut both, None).unwrap_err();
        assert_eq!(errs[0].field, "spec.source");
        let mut none = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "s"}, "spec": {"source": {}}});
        assert_eq!(def().admit(&mut none, None).unwrap_err()[0].field, "spec.source");
        let mut ok = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "s"}, "spec": {"source": {"persistentVolumeClaimName": "data"}}});
        def().admit(&mut ok, None).unwrap();
    }

    #[test]
    fn empty_class_name_refused() {
        let mut vs = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "s"},
            "spec": {"source": {"persistentVolumeClaimName": "a"}, "volumeSnapshotClassName": ""}});
        let errs = def().admit(&mut vs, None).unwrap_err();
        assert_eq!(errs[0].field, "spec.volumeSnapshotClassName");
    }

    #[test]
    fn wrong_type_names_the_field() {
        let mut vs = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "s"}, "spec": {"source": {"persistentVolumeClaimName": 5}}});
        let errs = def().admit(&mut vs, None).unwrap_err();
        assert_eq!(errs[0].field, "spec.source.persistentVolumeClaimName");
    }

    #[test]
    fn source_is_immutable() {
        let old = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "s"}, "spec": {"source": {"persistentVolumeClaimName": "a"}}});
        let mut new = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "s"}, "spec": {"source": {"persistentVolumeClaimName": "b"}}});
        assert_eq!(def().admit(&mut new, Some(&old)).unwrap_err()[0].field, "spec.source");
    }

    #[test]
    fn crd_has_columns_short_names_and_status() {
        let d = def();
        assert_eq!(d.plural, "volumesnapshots");
        assert!(d.namespaced && d.status_subresource);
        assert_eq!(d.short_names, vec!["vs"]);
        assert!(d.printer_columns.iter().any(|c| c.name == "ReadyToUse"));
        let crd = d.crd().unwrap();
        assert_eq!(crd["metadata"]["name"], "volumesnapshots.snapshot.storage.k8s.io");
        assert_eq!(crd["spec"]["versions"][0]["subresources"], json!({"status": {}}));
    }
}
