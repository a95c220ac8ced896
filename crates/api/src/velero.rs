//! `velero.io`: the Velero kinds holdfast serves.
//!
//! - `v1`: PodVolumeRestore (Velero's published v1 API reference) and its twins PodVolumeBackup,
//!   BackupStorageLocation and BackupRepository (upstream Velero's CRDs).
//! - `v2alpha1`: DataDownload (Velero's published v2alpha1 API reference) and its twin DataUpload.
//!
//! Where the spec is silent, upstream Velero's behaviour is followed.

// kube's `printcolumn(...)` repeats keys such as `type_ = "string"` across columns, which clippy's
// duplicated_attributes lint takes for duplicate attributes.
#![allow(clippy::duplicated_attributes)]

pub mod data_mover;
pub mod pod_volume;
pub mod repository;
pub mod storage_location;

use k8s_openapi::api::core::v1::ObjectReference;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use data_mover::{DataDownload, DataUpload};
pub use pod_volume::{PodVolumeBackup, PodVolumeRestore};
pub use repository::BackupRepository;
pub use storage_location::BackupStorageLocation;

use crate::field::FieldError;
use crate::resource::ResourceDef;

/// Definitions of the Velero kinds.
pub fn definitions() -> Vec<ResourceDef> {
    vec![
        ResourceDef::custom::<PodVolumeBackup>(),
        ResourceDef::custom::<PodVolumeRestore>(),
        ResourceDef::custom::<BackupStorageLocation>(),
        ResourceDef::custom::<BackupRepository>(),
        ResourceDef::custom::<DataUpload>(),
        ResourceDef::custom::<DataDownload>(),
    ]
}

/// The lifecycle phase shared by PodVolumeBackup, PodVolumeRestore, DataUpload and DataDownload.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DataMovePhase {
    /// Created, not yet picked up by a node agent.
    New,
    /// A node agent took it and is preparing the data path.
    Accepted,
    /// The data path is ready on the node that will move the data.
    Prepared,
    /// Data is moving.
    InProgress,
    /// A cancel was asked for while data was moving.
    Canceling,
    /// Cancelled; terminal.
    Canceled,
    /// Done; terminal.
    Completed,
    /// Failed; terminal.
    Failed,
}

impl DataMovePhase {
    /// Whether nothing more will happen to an object in this phase.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Canceled | Self::Completed | Self::Failed)
    }
}

/// Bytes moved so far out of the total (Velero's `DataMoveOperationProgress`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataMoveProgress {
    /// Total bytes to move; may grow while the source is walked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<i64>,
    /// Bytes moved so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_done: Option<i64>,
}

/// The uploader that moves file-system data. Restic is gone upstream; kopia is the only one.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum UploaderType {
    /// Kopia's uploader (the only one Velero still ships).
    #[serde(rename = "kopia")]
    Kopia,
    /// Unset: the server's default, kopia.
    #[serde(rename = "")]
    Unset,
}

/// The operating system of the node that moves the data.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum NodeOs {
    /// Whichever the scheduler picks.
    #[serde(rename = "auto")]
    Auto,
    /// A Linux node.
    #[serde(rename = "linux")]
    Linux,
    /// A Windows node.
    #[serde(rename = "windows")]
    Windows,
}

/// `field` must be a non-empty string.
fn require_non_empty(errors: &mut Vec<FieldError>, field: &str, value: &str) {
    if value.is_empty() {
        errors.push(FieldError::required(field, "may not be empty"));
    }
}

/// A pod reference must name the pod and its namespace: the node agent looks the pod up by both.
fn require_pod_ref(errors: &mut Vec<FieldError>, field: &str, pod: &ObjectReference) {
    for (child, value) in [("name", &pod.name), ("namespace", &pod.namespace)] {
        if value.as_deref().is_none_or(str::is_empty) {
            errors.push(FieldError::required(
                crate::field::path(field, child),
                "the pod must be named",
            ));
        }
    }
}

/// Byte counts are never negative.
fn require_non_negative(errors: &mut Vec<FieldError>, field: &str, value: Option<i64>) {
    if let Some(v) = value.filter(|v| *v < 0) {
        errors.push(FieldError::invalid(field, v, "must be greater than or equal to 0"));
    }
}

fn check_progress(errors: &mut Vec<FieldError>, field: &str, progress: Option<&DataMoveProgress>) {
    if let Some(p) = progress {
        require_non_negative(errors, &crate::field::path(field, "totalBytes"), p.total_bytes);
        require_non_negative(errors, &crate::field::path(field, "bytesDone"), p.bytes_done);
    }
}

#[cfg(test)]
mod tests {
    //! Checks over every kind this crate's Velero, snapshot and Alauda modules define: the example
    //! manifests admit, and every CRD is one a real API server accepts.

    use std::path::PathBuf;

    use serde_json::Value;

    use crate::resource::ResourceDef;

    /// The groups whose kinds these modules own.
    const GROUPS: [&str; 3] = ["velero.io", "snapshot.storage.k8s.io", "middleware.alauda.io"];
    /// The example files these modules own.
    const PREFIXES: [&str; 3] = ["velero-", "snapshot-", "alauda-"];

    fn examples_dir() -> PathBuf {
        // The directory at run time (cargo sets it for tests): a binary cargo reuses from a clone at
        // another path, through a shared target directory, would carry that clone's path.
        PathBuf::from(
            std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
        )
        .join("../../examples/reference")
    }

    fn def_for(obj: &Value) -> ResourceDef {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        crate::registry()
            .into_iter()
            .find(|d| d.api_version() == api_version && d.kind == kind)
            .unwrap_or_else(|| panic!("no definition for {api_version} {kind}"))
    }

    #[test]
    fn owned_examples_conform_and_admit() {
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(examples_dir()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if !PREFIXES.iter().any(|p| name.starts_with(p)) || !name.ends_with(".yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let mut obj: Value =
                serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let def = def_for(&obj);
            // The CRD's own schema, as a real API server checks the object against it. Fields a
            // server would prune are its concern: the API server's schema tests hold every
            // shipped example to having none.
            let crd = def.crd().unwrap();
            let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
            crate::schema::validate(schema, &obj, "").unwrap_or_else(|errors| {
                let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                panic!("{name}: {}", errors.join("; "))
            });
            let namespace = obj["metadata"]["namespace"].as_str();
            if def.namespaced {
                assert_eq!(
                    namespace,
                    Some("default"),
                    "{name}: namespaced examples live in default"
                );
            } else {
                assert_eq!(namespace, None, "{name}: {} is cluster-scoped", def.kind);
            }
            def.admit(&mut obj, None).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            seen.push((def.kind.clone(), obj["metadata"]["name"].as_str().unwrap().to_string()));
        }
        // One example per kind, with unique names.
        let mut kinds: Vec<_> = seen.iter().map(|(k, _)| k.clone()).collect();
        kinds.sort();
        let mut expected: Vec<String> = crate::registry()
            .into_iter()
            .filter(|d| GROUPS.contains(&d.group.as_str()))
            .map(|d| d.kind)
            .collect();
        expected.sort();
        assert_eq!(kinds, expected);
        let mut names: Vec<_> = seen.iter().map(|(_, n)| n.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), seen.len(), "example names must be unique");
    }

    /// The validator reads the generated CRDs as a real API server does: a bad example is
    /// refused with the field's path and the Kubernetes reason.
    #[test]
    fn crd_schemas_refuse_bad_objects_naming_the_field() {
        let text =
            std::fs::read_to_string(examples_dir().join("velero-backupstoragelocation.yaml"))
                .unwrap();
        let mut obj: Value = serde_saphyr::from_str(&text).unwrap();
        obj["spec"]["accessMode"] = "WriteOnly".into();
        obj["spec"]["objectStorage"]["bucket"] = 7.into();
        obj["spec"]["config"]["extra"] = true.into();
        obj["spec"].as_object_mut().unwrap().remove("provider");
        let crd = def_for(&obj).crd().unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let errors = crate::schema::validate(schema, &obj, "").unwrap_err();
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "spec.accessMode: Unsupported value: \"WriteOnly\": supported values: \"ReadOnly\", \"ReadWrite\"",
                "spec.objectStorage.bucket: Invalid value: \"integer\": spec.objectStorage.bucket in body must be of type string: \"integer\"",
                "spec.config[extra]: Invalid value: \"boolean\": spec.config[extra] in body must be of type string: \"boolean\"",
                "spec.provider: Required value",
            ]
        );
        assert_eq!(errors[0].kind.reason(), "FieldValueNotSupported");
    }

    /// Every node of a structural schema says its type (or is int-or-string / preserve-unknown),
    /// and uses none of the constructs a real API server refuses.
    fn assert_structural(schema: &Value, at: &str) {
        let obj = schema.as_object().unwrap_or_else(|| panic!("{at}: schema is not an object"));
        for banned in ["$ref", "oneOf", "anyOf", "allOf", "not", "definitions", "$defs", "const"] {
            // anyOf is legal only under int-or-string, where kube writes none.
            assert!(!obj.contains_key(banned), "{at}: uses {banned}");
        }
        let typed = obj.contains_key("type")
            || obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
            || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        assert!(typed, "{at}: no type");
        if obj.get("additionalProperties") == Some(&Value::Bool(false)) {
            panic!("{at}: additionalProperties: false");
        }
        if obj.contains_key("properties") {
            assert!(
                !obj.contains_key("additionalProperties"),
                "{at}: properties with additionalProperties"
            );
        }
        if let Some(values) = obj.get("enum").and_then(Value::as_array) {
            assert!(!values.contains(&Value::Null), "{at}: null in enum");
        }
        for (k, v) in obj.get("properties").and_then(Value::as_object).into_iter().flatten() {
            assert_structural(v, &format!("{at}.{k}"));
        }
        if let Some(items) = obj.get("items") {
            assert_structural(items, &format!("{at}[]"));
        }
        if let Some(extra) = obj.get("additionalProperties").filter(|v| v.is_object()) {
            assert_structural(extra, &format!("{at}{{}}"));
        }
    }

    #[test]
    fn owned_crds_are_structural_with_status_and_columns() {
        let defs: Vec<_> =
            crate::registry().into_iter().filter(|d| GROUPS.contains(&d.group.as_str())).collect();
        assert_eq!(defs.len(), 10, "{defs:?}");
        for def in defs {
            let crd = def.crd().unwrap();
            let version = &crd["spec"]["versions"][0];
            let schema = &version["schema"]["openAPIV3Schema"];
            assert_structural(schema, &def.kind);
            assert_eq!(schema["type"], "object");
            let has_status = schema["properties"].get("status").is_some();
            assert_eq!(def.status_subresource, has_status, "{}: status subresource", def.kind);
            let columns = version["additionalPrinterColumns"].as_array().unwrap();
            assert!(columns.iter().any(|c| c["name"] == "Age"), "{}: no Age column", def.kind);
            for c in columns {
                let path = c["jsonPath"].as_str().unwrap();
                assert!(path.starts_with('.'), "{}: column path {path}", def.kind);
            }
        }
    }
}
