//! `snapshot.storage.k8s.io/v1`: VolumeSnapshot, VolumeSnapshotContent, VolumeSnapshotClass
//! (the published v1 API reference; the upstream CSI snapshot API where the spec is silent).

// kube's `printcolumn(...)` repeats keys such as `type_ = "string"` across columns, which clippy's
// duplicated_attributes lint takes for duplicate attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::field::FieldError;
use crate::quantity::parse_quantity;
use crate::resource::{Admit, ResourceDef, decode};

/// The annotation that marks a VolumeSnapshotClass as its driver's default.
pub const IS_DEFAULT_CLASS_ANNOTATION: &str = "snapshot.storage.kubernetes.io/is-default-class";

/// Definitions of the snapshot kinds.
pub fn definitions() -> Vec<ResourceDef> {
    vec![
        ResourceDef::custom::<VolumeSnapshot>(),
        ResourceDef::custom::<VolumeSnapshotContent>(),
        ResourceDef::from_crd(&VolumeSnapshotClass::crd(), admit_class),
    ]
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
    doc = "VolumeSnapshot is a user's request for either creating a point-in-time snapshot of a persistent volume, or binding to a pre-existing snapshot.",
    printcolumn(
        name = "ReadyToUse",
        type_ = "boolean",
        json_path = ".status.readyToUse",
        description = "Indicates if the snapshot is ready to be used to restore a volume."
    ),
    printcolumn(
        name = "SourcePVC",
        type_ = "string",
        json_path = ".spec.source.persistentVolumeClaimName",
        description = "If a new snapshot needs to be created, this contains the name of the source PVC from which this snapshot was (or will be) created."
    ),
    printcolumn(
        name = "SourceSnapshotContent",
        type_ = "string",
        json_path = ".spec.source.volumeSnapshotContentName",
        description = "If a snapshot already exists, this contains the name of the existing VolumeSnapshotContent object representing the existing snapshot."
    ),
    printcolumn(
        name = "RestoreSize",
        type_ = "string",
        json_path = ".status.restoreSize",
        description = "Represents the minimum size of volume required to rehydrate from this snapshot."
    ),
    printcolumn(
        name = "SnapshotClass",
        type_ = "string",
        json_path = ".spec.volumeSnapshotClassName",
        description = "The name of the VolumeSnapshotClass requested by the VolumeSnapshot."
    ),
    printcolumn(
        name = "SnapshotContent",
        type_ = "string",
        json_path = ".status.boundVolumeSnapshotContentName",
        description = "Name of the VolumeSnapshotContent object to which the VolumeSnapshot object intends to bind to. Please note that verification of binding actually requires checking both VolumeSnapshot and VolumeSnapshotContent to ensure both are pointing at each other. Binding MUST be verified prior to usage of this object."
    ),
    printcolumn(
        name = "CreationTime",
        type_ = "date",
        json_path = ".status.creationTime",
        description = "Timestamp when the point-in-time snapshot was taken by the underlying storage system."
    ),
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
    pub creation_time: Option<Time>,
    /// The last error seen while creating the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<VolumeSnapshotError>,
    /// Whether the snapshot can be used to restore a volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// The minimum size of a volume restored from this snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<Quantity>,
    /// The VolumeGroupSnapshot this snapshot belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_group_snapshot_name: Option<String>,
}

/// An error seen while creating a snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct VolumeSnapshotError {
    /// Details of the error; must not carry sensitive data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the error was seen (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

/// What happens to the storage snapshot when its VolumeSnapshotContent goes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// The storage snapshot is deleted with the content.
    #[default]
    Delete,
    /// The storage snapshot (and the content, when its VolumeSnapshot goes) is kept.
    Retain,
}

/// A snapshot taken in the storage system, bound to one VolumeSnapshot. Cluster-scoped.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "snapshot.storage.k8s.io",
    version = "v1",
    kind = "VolumeSnapshotContent",
    status = "VolumeSnapshotContentStatus",
    shortname = "vsc",
    shortname = "vscs",
    category = "snapshot",
    doc = "VolumeSnapshotContent represents the actual \"on-disk\" snapshot object in the underlying storage system",
    printcolumn(
        name = "ReadyToUse",
        type_ = "boolean",
        json_path = ".status.readyToUse",
        description = "Indicates if the snapshot is ready to be used to restore a volume."
    ),
    printcolumn(
        name = "RestoreSize",
        type_ = "integer",
        format = "int64",
        json_path = ".status.restoreSize",
        description = "Represents the complete size of the snapshot in bytes"
    ),
    printcolumn(
        name = "DeletionPolicy",
        type_ = "string",
        json_path = ".spec.deletionPolicy",
        description = "Determines whether this VolumeSnapshotContent and its physical snapshot on the underlying storage system should be deleted when its bound VolumeSnapshot is deleted."
    ),
    printcolumn(
        name = "Driver",
        type_ = "string",
        json_path = ".spec.driver",
        description = "Name of the CSI driver used to create the physical snapshot on the underlying storage system."
    ),
    printcolumn(
        name = "VolumeSnapshotClass",
        type_ = "string",
        json_path = ".spec.volumeSnapshotClassName",
        description = "Name of the VolumeSnapshotClass to which this snapshot belongs."
    ),
    printcolumn(
        name = "VolumeSnapshot",
        type_ = "string",
        json_path = ".spec.volumeSnapshotRef.name",
        description = "Name of the VolumeSnapshot object to which this VolumeSnapshotContent object is bound."
    ),
    printcolumn(
        name = "VolumeSnapshotNamespace",
        type_ = "string",
        json_path = ".spec.volumeSnapshotRef.namespace",
        description = "Namespace of the VolumeSnapshot object to which this VolumeSnapshotContent object is bound."
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContentSpec {
    /// The VolumeSnapshot this content is bound to; name and namespace are required.
    pub volume_snapshot_ref: ObjectReference,
    /// Whether the storage snapshot is deleted when this content is.
    pub deletion_policy: DeletionPolicy,
    /// The CSI driver that took (or owns) the snapshot.
    pub driver: String,
    /// The VolumeSnapshotClass the snapshot was taken with; may be unset for pre-existing ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
    /// Where the snapshot comes from. Immutable after creation.
    pub source: VolumeSnapshotContentSource,
    /// The volume mode of the source volume. Immutable after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_volume_mode: Option<VolumeMode>,
}

/// Exactly one of the two fields must be set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContentSource {
    /// The CSI volume handle to snapshot dynamically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_handle: Option<String>,
    /// The CSI snapshot handle of a pre-existing snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
}

/// A persistent volume's mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum VolumeMode {
    /// A raw block device.
    Block,
    /// A mounted file system.
    Filesystem,
}

/// Observed state of a VolumeSnapshotContent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContentStatus {
    /// When the storage system took the snapshot, in nanoseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<i64>,
    /// The last error seen while creating the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<VolumeSnapshotError>,
    /// Whether the snapshot can be used to restore a volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// The snapshot's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub restore_size: Option<i64>,
    /// The CSI snapshot handle the storage system gave the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
    /// The group snapshot handle, when the snapshot was taken as part of a group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_group_snapshot_handle: Option<String>,
}

/// The parameters a driver uses to take snapshots. Cluster-scoped; its fields sit at the top
/// level of the object, not under `spec`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "snapshot.storage.k8s.io",
    version = "v1",
    kind = "VolumeSnapshotClass",
    plural = "volumesnapshotclasses",
    no_spec,
    shortname = "vsclass",
    shortname = "vsclasses",
    category = "snapshot",
    doc = "VolumeSnapshotClass specifies parameters that a underlying storage system uses when creating a volume snapshot.",
    printcolumn(name = "Driver", type_ = "string", json_path = ".driver"),
    printcolumn(
        name = "DeletionPolicy",
        type_ = "string",
        json_path = ".deletionPolicy",
        description = "Determines whether a VolumeSnapshotContent created through the VolumeSnapshotClass should be deleted when its bound VolumeSnapshot is deleted."
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotClassFields {
    /// The CSI driver this class is for.
    pub driver: String,
    /// Driver-specific parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BTreeMap<String, String>>,
    /// Whether contents made through this class keep their storage snapshot when deleted.
    pub deletion_policy: DeletionPolicy,
}

impl VolumeSnapshotClass {
    /// Whether the class carries the default-class annotation set to `"true"`.
    pub fn is_default(&self) -> bool {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(IS_DEFAULT_CLASS_ANNOTATION))
            .map(String::as_str)
            == Some("true")
    }
}

/// Exactly one of two optional names must be set, and not to the empty string.
fn exactly_one(errors: &mut Vec<FieldError>, parent: &str, members: [(&str, &Option<String>); 2]) {
    let [(a, va), (b, vb)] = members;
    match (va, vb) {
        (Some(_), Some(_)) => {
            errors.push(FieldError::forbidden(
                parent,
                format!("exactly one of {a} or {b} may be set"),
            ));
        }
        (None, None) => errors
            .push(FieldError::required(parent, format!("exactly one of {a} or {b} must be set"))),
        _ => {}
    }
    for (name, value) in members {
        if value.as_deref() == Some("") {
            errors.push(FieldError::required(crate::field::path(parent, name), "may not be empty"));
        }
    }
}

/// A class name, when given, may not be the empty string.
fn check_class_name(errors: &mut Vec<FieldError>, field: &str, value: &Option<String>) {
    if value.as_deref() == Some("") {
        errors.push(FieldError::invalid(
            field,
            "",
            "may not be the empty string; leave it unset to use the default class",
        ));
    }
}

impl Admit for VolumeSnapshot {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let src = &self.spec.source;
        exactly_one(
            &mut errors,
            "spec.source",
            [
                ("persistentVolumeClaimName", &src.persistent_volume_claim_name),
                ("volumeSnapshotContentName", &src.volume_snapshot_content_name),
            ],
        );
        check_class_name(
            &mut errors,
            "spec.volumeSnapshotClassName",
            &self.spec.volume_snapshot_class_name,
        );
        if let Some(size) = self.status.as_ref().and_then(|s| s.restore_size.as_ref()) {
            match parse_quantity(&size.0) {
                Ok(amount) if amount.units < 0 => {
                    errors.push(FieldError::invalid(
                        "status.restoreSize",
                        &size.0,
                        "must not be negative",
                    ));
                }
                Ok(_) => {}
                Err(e) => {
                    errors.push(FieldError::invalid("status.restoreSize", &size.0, e.to_string()))
                }
            }
        }
        errors
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        // As upstream's CEL rules: each source member is immutable and required once set.
        let mut errors = Vec::new();
        let (new, old) = (&self.spec.source, &old.spec.source);
        for (member, new, old) in [
            (
                "persistentVolumeClaimName",
                &new.persistent_volume_claim_name,
                &old.persistent_volume_claim_name,
            ),
            (
                "volumeSnapshotContentName",
                &new.volume_snapshot_content_name,
                &old.volume_snapshot_content_name,
            ),
        ] {
            immutable_member(&mut errors, "spec.source", member, new, old);
        }
        errors
    }
}

/// Upstream's pair of CEL rules for a member of a one-of source: "`<member>` is required once
/// set" (on the parent, when it was removed) and "`<member>` is immutable" (on the member, when
/// it changed).
fn immutable_member<T: PartialEq>(
    errors: &mut Vec<FieldError>,
    parent: &str,
    member: &str,
    new: &Option<T>,
    old: &Option<T>,
) {
    match (old, new) {
        (Some(_), None) => {
            errors.push(FieldError::required(parent, format!("{member} is required once set")));
        }
        (Some(old), Some(new)) if old != new => errors.push(FieldError::forbidden(
            crate::field::path(parent, member),
            format!("{member} is immutable"),
        )),
        _ => {}
    }
}

impl Admit for VolumeSnapshotContent {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let spec = &self.spec;
        exactly_one(
            &mut errors,
            "spec.source",
            [
                ("volumeHandle", &spec.source.volume_handle),
                ("snapshotHandle", &spec.source.snapshot_handle),
            ],
        );
        for (child, value) in [
            ("name", &spec.volume_snapshot_ref.name),
            ("namespace", &spec.volume_snapshot_ref.namespace),
        ] {
            if value.as_deref().is_none_or(str::is_empty) {
                errors.push(FieldError::required(
                    format!("spec.volumeSnapshotRef.{child}"),
                    "both spec.volumeSnapshotRef.name and spec.volumeSnapshotRef.namespace must be set",
                ));
            }
        }
        if spec.driver.is_empty() {
            errors.push(FieldError::required("spec.driver", "may not be empty"));
        }
        check_class_name(
            &mut errors,
            "spec.volumeSnapshotClassName",
            &spec.volume_snapshot_class_name,
        );
        if let Some(status) = &self.status {
            for (field, value) in [
                ("status.restoreSize", status.restore_size),
                ("status.creationTime", status.creation_time),
            ] {
                if let Some(v) = value.filter(|v| *v < 0) {
                    errors.push(FieldError::invalid(
                        field,
                        v,
                        "must be greater than or equal to 0",
                    ));
                }
            }
        }
        errors
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        // As upstream's CEL rules: each source member and the source volume mode are immutable
        // (which also makes them required once set).
        let mut errors = Vec::new();
        let (new, old) = (&self.spec, &old.spec);
        immutable_member(
            &mut errors,
            "spec.source",
            "volumeHandle",
            &new.source.volume_handle,
            &old.source.volume_handle,
        );
        immutable_member(
            &mut errors,
            "spec.source",
            "snapshotHandle",
            &new.source.snapshot_handle,
            &old.source.snapshot_handle,
        );
        immutable_member(
            &mut errors,
            "spec",
            "sourceVolumeMode",
            &new.source_volume_mode,
            &old.source_volume_mode,
        );
        errors
    }
}

impl Admit for VolumeSnapshotClass {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.spec.driver.is_empty() {
            errors.push(FieldError::required("driver", "may not be empty"));
        }
        errors
    }
}

/// Admission of a VolumeSnapshotClass. Its fields sit at the top level, flattened into the
/// generated root type; serde loses the field path through a flatten, so a type error is first
/// looked for by decoding the fields alone, where the path is kept. Upstream has no update rules
/// for a class: every field may change.
fn admit_class(obj: &mut Value, _old: Option<&Value>) -> Result<(), Vec<FieldError>> {
    decode::<VolumeSnapshotClassFields>(obj)?;
    let mut class: VolumeSnapshotClass = decode(obj)?;
    class.default_fields();
    let errors = class.validate();
    if !errors.is_empty() {
        return Err(errors);
    }
    *obj = serde_json::to_value(&class)
        .map_err(|e| vec![FieldError::invalid("", "", e.to_string())])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::FieldErrorKind;
    use crate::resource::ResourceDef;
    use serde_json::json;

    /// A field path, a change that breaks it, and the error kind expected.
    type Case = (&'static str, fn(&mut Value), FieldErrorKind);
    type Change = fn(&mut Value);

    fn def() -> ResourceDef {
        ResourceDef::custom::<VolumeSnapshot>()
    }

    fn vs_def(kind: &str) -> ResourceDef {
        definitions().into_iter().find(|d| d.kind == kind).unwrap()
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
    fn status_sizes_and_times_are_checked() {
        let base = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "s"}, "spec": {"source": {"persistentVolumeClaimName": "a"}},
            "status": {"readyToUse": true, "restoreSize": "1Gi", "creationTime": "2026-11-21T10:00:00Z",
                       "boundVolumeSnapshotContentName": "snapcontent-1"}});
        let mut ok = base.clone();
        def().admit(&mut ok, None).unwrap();
        for (field, value) in [
            ("restoreSize", json!("1 Gi")),
            ("restoreSize", json!("-1Gi")),
            ("creationTime", json!("21/11/2026")),
        ] {
            let mut bad = base.clone();
            bad["status"][field] = value;
            assert_eq!(
                def().admit(&mut bad, None).unwrap_err()[0].field,
                format!("status.{field}")
            );
        }
    }

    #[test]
    fn source_is_immutable() {
        let old = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "s"}, "spec": {"source": {"persistentVolumeClaimName": "a"}}});
        let mut new = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "s"}, "spec": {"source": {"persistentVolumeClaimName": "b"}}});
        let errs = def().admit(&mut new, Some(&old)).unwrap_err();
        assert_eq!(
            (errs[0].field.as_str(), errs[0].detail.as_str()),
            ("spec.source.persistentVolumeClaimName", "persistentVolumeClaimName is immutable")
        );
        // Switching to the other member: the one set before is required once set.
        let mut new = old.clone();
        new["spec"]["source"] = json!({"volumeSnapshotContentName": "c"});
        let errs = def().admit(&mut new, Some(&old)).unwrap_err();
        assert_eq!(
            (errs[0].field.as_str(), errs[0].kind, errs[0].detail.as_str()),
            (
                "spec.source",
                FieldErrorKind::Required,
                "persistentVolumeClaimName is required once set"
            )
        );
        // The class may change (upstream has no immutability rule for it).
        let mut new = old.clone();
        new["spec"]["volumeSnapshotClassName"] = json!("fast");
        def().admit(&mut new, Some(&old)).unwrap();
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

    fn vsc() -> Value {
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
            "metadata": {"name": "snapcontent-9a4b1c2d"},
            "spec": {"volumeSnapshotRef": {"name": "data-snap", "namespace": "shop"},
                     "deletionPolicy": "Delete", "driver": "hostpath.csi.k8s.io",
                     "volumeSnapshotClassName": "csi-hostpath-snapclass",
                     "source": {"volumeHandle": "pvc-0b3e"}, "sourceVolumeMode": "Filesystem"},
            "status": {"readyToUse": true, "restoreSize": 1073741824, "snapshotHandle": "snap-0b3e",
                       "creationTime": 1763719200000000000i64}})
    }

    #[test]
    fn content_admits_and_rules_fire() {
        let d = vs_def("VolumeSnapshotContent");
        assert!(!d.namespaced && d.status_subresource);
        assert_eq!(d.short_names, ["vsc", "vscs"]);
        let mut ok = vsc();
        d.admit(&mut ok, None).unwrap();
        let cases: [Case; 8] = [
            (
                "spec.source",
                |o| o["spec"]["source"]["snapshotHandle"] = json!("snap-1"),
                FieldErrorKind::Forbidden,
            ),
            ("spec.source", |o| o["spec"]["source"] = json!({}), FieldErrorKind::Required),
            (
                "spec.source.volumeHandle",
                |o| o["spec"]["source"]["volumeHandle"] = json!(""),
                FieldErrorKind::Required,
            ),
            (
                "spec.volumeSnapshotRef.namespace",
                |o| o["spec"]["volumeSnapshotRef"] = json!({"name": "x"}),
                FieldErrorKind::Required,
            ),
            (
                "spec.deletionPolicy",
                |o| o["spec"]["deletionPolicy"] = json!("Keep"),
                FieldErrorKind::Invalid,
            ),
            (
                "spec.sourceVolumeMode",
                |o| o["spec"]["sourceVolumeMode"] = json!("Raw"),
                FieldErrorKind::Invalid,
            ),
            ("spec.driver", |o| o["spec"]["driver"] = json!(""), FieldErrorKind::Required),
            (
                "status.restoreSize",
                |o| o["status"]["restoreSize"] = json!(-1),
                FieldErrorKind::Invalid,
            ),
        ];
        for (field, change, kind) in cases {
            let mut obj = vsc();
            change(&mut obj);
            let errs = d.admit(&mut obj, None).unwrap_err();
            assert_eq!((errs[0].field.as_str(), errs[0].kind), (field, kind), "{errs:?}");
        }
    }

    #[test]
    fn content_source_is_immutable() {
        let d = vs_def("VolumeSnapshotContent");
        let old = vsc();
        let mut new = vsc();
        new["spec"]["source"]["volumeHandle"] = json!("pvc-other");
        assert_eq!(d.admit(&mut new, Some(&old)).unwrap_err()[0].field, "spec.source.volumeHandle");
        let mut new = vsc();
        new["spec"]["sourceVolumeMode"] = json!("Block");
        assert_eq!(d.admit(&mut new, Some(&old)).unwrap_err()[0].field, "spec.sourceVolumeMode");
        let mut new = vsc();
        new["spec"].as_object_mut().unwrap().remove("sourceVolumeMode");
        let errs = d.admit(&mut new, Some(&old)).unwrap_err();
        assert_eq!(
            (errs[0].field.as_str(), errs[0].detail.as_str()),
            ("spec", "sourceVolumeMode is required once set")
        );
        // The deletion policy may change: Velero flips it to Retain while moving a snapshot.
        let mut new = vsc();
        new["spec"]["deletionPolicy"] = json!("Retain");
        d.admit(&mut new, Some(&old)).unwrap();
    }

    fn class() -> Value {
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
            "metadata": {"name": "csi-hostpath-snapclass",
                         "annotations": {IS_DEFAULT_CLASS_ANNOTATION: "true"}},
            "driver": "hostpath.csi.k8s.io", "deletionPolicy": "Delete", "parameters": {"tier": "fast"}})
    }

    #[test]
    fn class_is_flat_and_checked() {
        let d = vs_def("VolumeSnapshotClass");
        assert!(!d.namespaced && !d.status_subresource);
        assert_eq!(
            (d.plural.as_str(), d.short_names.clone()),
            ("volumesnapshotclasses", vec!["vsclass".into(), "vsclasses".into()])
        );
        assert!(d.schema["properties"].get("spec").is_none(), "fields sit at the top level");
        assert_eq!(d.schema["properties"]["deletionPolicy"]["enum"], json!(["Delete", "Retain"]));
        let mut ok = class();
        d.admit(&mut ok, None).unwrap();
        assert_eq!(ok["driver"], "hostpath.csi.k8s.io");
        assert!(ok.get("spec").is_none());
        let typed: VolumeSnapshotClass = serde_json::from_value(ok).unwrap();
        assert!(typed.is_default());
        let cases: [(&str, Change); 4] = [
            ("deletionPolicy", |o| o["deletionPolicy"] = json!("Keep")),
            ("driver", |o| o["driver"] = json!(7)),
            ("driver", |o| o["driver"] = json!("")),
            ("parameters.tier", |o| o["parameters"]["tier"] = json!(1)),
        ];
        for (field, change) in cases {
            let mut obj = class();
            change(&mut obj);
            assert_eq!(d.admit(&mut obj, None).unwrap_err()[0].field, field);
        }
        let old = class();
        let mut new = class();
        new["deletionPolicy"] = json!("Retain");
        d.admit(&mut new, Some(&old)).unwrap();
        assert_eq!(new["deletionPolicy"], "Retain");
    }
}
