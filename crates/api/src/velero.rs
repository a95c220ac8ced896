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
pub(crate) mod tests {
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
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
    }

    fn def_for(obj: &Value) -> ResourceDef {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        crate::registry()
            .into_iter()
            .find(|d| d.api_version() == api_version && d.kind == kind)
            .unwrap_or_else(|| panic!("no definition for {api_version} {kind}"))
    }

    /// Checks `value` against a structural schema the way the API server does before admission:
    /// types, enums, required fields, and no field the schema would prune.
    pub(crate) fn conforms(value: &Value, schema: &Value, at: &str) -> Result<(), String> {
        if value.is_null() {
            return if schema["nullable"] == true { Ok(()) } else { Err(format!("{at}: null")) };
        }
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(value)
        {
            return Err(format!("{at}: {value} not in {allowed:?}"));
        }
        if schema["x-kubernetes-int-or-string"] == true {
            return if value.is_i64() || value.is_u64() || value.is_string() {
                Ok(())
            } else {
                Err(format!("{at}: not int-or-string"))
            };
        }
        let ty = schema["type"].as_str().unwrap_or("");
        let ok = match ty {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !ok {
            return Err(format!("{at}: expected {ty}, got {value}"));
        }
        if let Some(obj) = value.as_object() {
            for req in schema["required"].as_array().into_iter().flatten() {
                let req = req.as_str().unwrap_or_default();
                if !obj.contains_key(req) {
                    return Err(format!("{at}.{req}: required"));
                }
            }
            let props = schema["properties"].as_object();
            for (k, v) in obj {
                let child = format!("{at}.{k}");
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    conforms(v, s, &child)?;
                } else if schema["additionalProperties"].is_object() {
                    conforms(v, &schema["additionalProperties"], &child)?;
                } else if schema["x-kubernetes-preserve-unknown-fields"] != true
                    && !(at.is_empty() && ["apiVersion", "kind", "metadata"].contains(&k.as_str()))
                {
                    return Err(format!("{child}: unknown field (would be pruned)"));
                }
            }
        }
        if let Some(items) = value.as_array() {
            for (i, item) in items.iter().enumerate() {
                conforms(item, &schema["items"], &format!("{at}[{i}]"))?;
            }
        }
        Ok(())
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
            conforms(&obj, &def.schema, "").unwrap_or_else(|e| panic!("{name}: {e}"));
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
