//! DataUpload and DataDownload (`velero.io/v2alpha1`): the data mover's backup of a CSI snapshot
//! into a repository, and its restore into a new volume (Velero's v2alpha1 API reference;
//! upstream Velero for the upload).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::pod_volume::immutable_except_cancel;
use super::{
    DataMovePhase, DataMoveProgress, NodeOs, check_progress, require_non_empty,
    require_non_negative,
};
use crate::field::FieldError;
use crate::go_duration::check_go_duration;
use crate::resource::Admit;

/// A data mover backup of one volume snapshot.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "velero.io",
    version = "v2alpha1",
    kind = "DataUpload",
    namespaced,
    status = "DataUploadStatus",
    shortname = "du",
    category = "velero",
    doc = "DataUpload acts as the protocol between data mover plugins and data mover controller for the datamover backup operation",
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.phase",
        description = "DataUpload status such as New/InProgress"
    ),
    printcolumn(
        name = "Started",
        type_ = "date",
        json_path = ".status.startTimestamp",
        description = "Time duration since this DataUpload was started"
    ),
    printcolumn(
        name = "Bytes Done",
        type_ = "integer",
        format = "int64",
        json_path = ".status.progress.bytesDone",
        description = "Completed bytes"
    ),
    printcolumn(
        name = "Total Bytes",
        type_ = "integer",
        format = "int64",
        json_path = ".status.progress.totalBytes",
        description = "Total bytes"
    ),
    printcolumn(
        name = "Storage Location",
        type_ = "string",
        json_path = ".spec.backupStorageLocation",
        description = "Name of the Backup Storage Location where this backup should be stored"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "Time duration since this DataUpload was created"
    ),
    printcolumn(
        name = "Node",
        type_ = "string",
        json_path = ".status.node",
        description = "Name of the node where the DataUpload is processed"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DataUploadSpec {
    /// The kind of snapshot to back up.
    pub snapshot_type: SnapshotType,
    /// The CSI snapshot to back up, when `snapshotType` is `CSI`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csi_snapshot: Option<CsiSnapshotSpec>,
    /// The PVC the snapshot was taken of.
    #[serde(rename = "sourcePVC")]
    pub source_pvc: String,
    /// The data mover to use; empty or `velero` means the built-in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datamover: Option<String>,
    /// The BackupStorageLocation whose repository receives the data.
    pub backup_storage_location: String,
    /// The namespace of the source PVC and its snapshot.
    pub source_namespace: String,
    /// Data-mover settings, e.g. `ParallelFilesUpload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_mover_config: Option<BTreeMap<String, String>>,
    /// Asks the data mover to cancel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<bool>,
    /// How long internal waits may take before failing (a Go duration); not the transfer itself.
    pub operation_timeout: String,
}

/// The kinds of snapshot a DataUpload can back up.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SnapshotType {
    /// A CSI VolumeSnapshot.
    #[serde(rename = "CSI")]
    Csi,
}

/// The CSI snapshot a DataUpload backs up.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CsiSnapshotSpec {
    /// The VolumeSnapshot, in the source namespace.
    pub volume_snapshot: String,
    /// The StorageClass of the PVC the snapshot was taken of.
    pub storage_class: String,
    /// The VolumeSnapshotClass the snapshot was taken with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_class: Option<String>,
    /// The CSI driver of the VolumeSnapshotContent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
}

/// Observed state of a DataUpload.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataUploadStatus {
    /// Where the upload is in its lifecycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<DataMovePhase>,
    /// The path of the snapshot volume as the data mover saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The repository snapshot holding the data.
    #[serde(default, rename = "snapshotID", skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// Data-mover-specific results a DataDownload needs later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_mover_result: Option<BTreeMap<String, String>>,
    /// What happened, when the upload ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When data started moving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Time>,
    /// When the upload ended, successfully or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timestamp: Option<Time>,
    /// Bytes uploaded out of the total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<DataMoveProgress>,
    /// Bytes new or changed since the parent snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental_bytes: Option<i64>,
    /// The node that moves the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The operating system of that node.
    #[serde(default, rename = "nodeOS", skip_serializing_if = "Option::is_none")]
    pub node_os: Option<NodeOs>,
    /// The node whose agent accepted the upload and exposed the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_by_node: Option<String>,
    /// When the upload was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_timestamp: Option<Time>,
}

/// A data mover restore of one repository snapshot into a new volume.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "velero.io",
    version = "v2alpha1",
    kind = "DataDownload",
    namespaced,
    status = "DataDownloadStatus",
    shortname = "dd",
    category = "velero",
    doc = "DataDownload acts as the protocol between data mover plugins and data mover controller for the datamover restore operation",
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.phase",
        description = "DataDownload status such as New/InProgress"
    ),
    printcolumn(
        name = "Started",
        type_ = "date",
        json_path = ".status.startTimestamp",
        description = "Time duration since this DataDownload was started"
    ),
    printcolumn(
        name = "Bytes Done",
        type_ = "integer",
        format = "int64",
        json_path = ".status.progress.bytesDone",
        description = "Completed bytes"
    ),
    printcolumn(
        name = "Total Bytes",
        type_ = "integer",
        format = "int64",
        json_path = ".status.progress.totalBytes",
        description = "Total bytes"
    ),
    printcolumn(
        name = "Storage Location",
        type_ = "string",
        json_path = ".spec.backupStorageLocation",
        description = "Name of the Backup Storage Location where the backup data is stored"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "Time duration since this DataDownload was created"
    ),
    printcolumn(
        name = "Node",
        type_ = "string",
        json_path = ".status.node",
        description = "Name of the node where the DataDownload is processed"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DataDownloadSpec {
    /// The PVC and PV to restore into.
    pub target_volume: TargetVolumeSpec,
    /// The BackupStorageLocation whose repository holds the snapshot.
    pub backup_storage_location: String,
    /// The data mover to use; empty or `velero` means the built-in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datamover: Option<String>,
    /// The repository snapshot to restore.
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
    /// The namespace the volume was backed up from; may differ from the target's after mapping.
    pub source_namespace: String,
    /// Data-mover settings, e.g. `WriteSparseFiles`, `ParallelFilesDownload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_mover_config: Option<BTreeMap<String, String>>,
    /// Asks the data mover to cancel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<bool>,
    /// How long internal waits may take before failing (a Go duration); not the transfer itself.
    pub operation_timeout: String,
    /// The operating system of the node to restore on.
    #[serde(default, rename = "nodeOS", skip_serializing_if = "Option::is_none")]
    pub node_os: Option<NodeOs>,
    /// The logical size of the snapshot in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_size: Option<i64>,
}

/// The volume a DataDownload restores into.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct TargetVolumeSpec {
    /// The target PVC, created by the restore.
    pub pvc: String,
    /// The target PV; empty until one is bound.
    pub pv: String,
    /// The target namespace.
    pub namespace: String,
}

/// Observed state of a DataDownload.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataDownloadStatus {
    /// Where the download is in its lifecycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<DataMovePhase>,
    /// What happened, when the download ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When data started moving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Time>,
    /// When the download ended; recorded on failures too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timestamp: Option<Time>,
    /// Bytes restored out of the snapshot's total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<DataMoveProgress>,
    /// The node that moves the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The node whose agent accepted the download and exposed the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_by_node: Option<String>,
    /// When the download was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_timestamp: Option<Time>,
}

impl Admit for DataUpload {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let spec = &self.spec;
        require_non_empty(&mut errors, "spec.sourcePVC", &spec.source_pvc);
        require_non_empty(&mut errors, "spec.backupStorageLocation", &spec.backup_storage_location);
        require_non_empty(&mut errors, "spec.sourceNamespace", &spec.source_namespace);
        check_go_duration(&mut errors, "spec.operationTimeout", &spec.operation_timeout);
        match (spec.snapshot_type, &spec.csi_snapshot) {
            (SnapshotType::Csi, None) => {
                errors.push(FieldError::required(
                    "spec.csiSnapshot",
                    "required when snapshotType is CSI",
                ));
            }
            (SnapshotType::Csi, Some(csi)) => {
                require_non_empty(
                    &mut errors,
                    "spec.csiSnapshot.volumeSnapshot",
                    &csi.volume_snapshot,
                );
                require_non_empty(&mut errors, "spec.csiSnapshot.storageClass", &csi.storage_class);
            }
        }
        if let Some(status) = &self.status {
            check_progress(&mut errors, "status.progress", status.progress.as_ref());
            require_non_negative(&mut errors, "status.incrementalBytes", status.incremental_bytes);
        }
        errors
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        immutable_except_cancel(self, old, |k| &mut k.spec.cancel, |k| &k.spec)
    }
}

impl Admit for DataDownload {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let spec = &self.spec;
        require_non_empty(&mut errors, "spec.targetVolume.pvc", &spec.target_volume.pvc);
        require_non_empty(
            &mut errors,
            "spec.targetVolume.namespace",
            &spec.target_volume.namespace,
        );
        require_non_empty(&mut errors, "spec.backupStorageLocation", &spec.backup_storage_location);
        require_non_empty(&mut errors, "spec.snapshotID", &spec.snapshot_id);
        require_non_empty(&mut errors, "spec.sourceNamespace", &spec.source_namespace);
        check_go_duration(&mut errors, "spec.operationTimeout", &spec.operation_timeout);
        require_non_negative(&mut errors, "spec.snapshotSize", spec.snapshot_size);
        if let Some(status) = &self.status {
            check_progress(&mut errors, "status.progress", status.progress.as_ref());
        }
        errors
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        immutable_except_cancel(self, old, |k| &mut k.spec.cancel, |k| &k.spec)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    /// A field path, a change that breaks it, and the error kind expected.
    type Case = (&'static str, fn(&mut Value), FieldErrorKind);

    use super::*;
    use crate::field::FieldErrorKind;
    use crate::resource::ResourceDef;

    fn dd() -> Value {
        json!({
            "apiVersion": "velero.io/v2alpha1", "kind": "DataDownload",
            "metadata": {"name": "restore-1-xyz12", "namespace": "velero"},
            "spec": {
                "targetVolume": {"pvc": "data-web-0", "pv": "", "namespace": "shop"},
                "backupStorageLocation": "default", "datamover": "velero",
                "snapshotID": "e3a9c5fd539c87e59011efe573f72c7a", "sourceNamespace": "shop",
                "operationTimeout": "10m0s", "dataMoverConfig": {"WriteSparseFiles": "true"}
            },
            "status": {"phase": "Completed", "node": "node-1", "startTimestamp": "2026-11-21T10:00:00Z",
                       "completionTimestamp": "2026-11-21T10:05:00Z",
                       "progress": {"totalBytes": 1073741824, "bytesDone": 1073741824}}
        })
    }

    fn du() -> Value {
        json!({
            "apiVersion": "velero.io/v2alpha1", "kind": "DataUpload",
            "metadata": {"name": "backup-1-abc12", "namespace": "velero"},
            "spec": {
                "snapshotType": "CSI",
                "csiSnapshot": {"volumeSnapshot": "velero-data-web-0-abc12", "storageClass": "standard",
                                "snapshotClass": "csi-hostpath-snapclass", "driver": "hostpath.csi.k8s.io"},
                "sourcePVC": "data-web-0", "backupStorageLocation": "default", "sourceNamespace": "shop",
                "operationTimeout": "10m0s"
            }
        })
    }

    #[test]
    fn realistic_objects_admit() {
        let mut obj = dd();
        ResourceDef::custom::<DataDownload>().admit(&mut obj, None).unwrap();
        assert_eq!(obj["spec"]["snapshotID"], "e3a9c5fd539c87e59011efe573f72c7a");
        let mut obj = du();
        ResourceDef::custom::<DataUpload>().admit(&mut obj, None).unwrap();
        assert_eq!(obj["spec"]["sourcePVC"], "data-web-0");
    }

    #[test]
    fn download_rules_name_their_fields() {
        let def = ResourceDef::custom::<DataDownload>();
        let cases: [Case; 7] = [
            (
                "spec.targetVolume.pvc",
                |o| o["spec"]["targetVolume"]["pvc"] = json!(""),
                FieldErrorKind::Required,
            ),
            ("spec.snapshotID", |o| o["spec"]["snapshotID"] = json!(""), FieldErrorKind::Required),
            (
                "spec.operationTimeout",
                |o| o["spec"]["operationTimeout"] = json!("10 minutes"),
                FieldErrorKind::Invalid,
            ),
            (
                "spec.operationTimeout",
                |o| o["spec"]["operationTimeout"] = json!("-1m"),
                FieldErrorKind::Invalid,
            ),
            ("spec.nodeOS", |o| o["spec"]["nodeOS"] = json!("macos"), FieldErrorKind::Invalid),
            ("status.phase", |o| o["status"]["phase"] = json!("Done"), FieldErrorKind::Invalid),
            (
                "status.progress.totalBytes",
                |o| o["status"]["progress"]["totalBytes"] = json!(-1),
                FieldErrorKind::Invalid,
            ),
        ];
        for (field, change, kind) in cases {
            let mut obj = dd();
            change(&mut obj);
            let errs = def.admit(&mut obj, None).unwrap_err();
            assert_eq!((errs[0].field.as_str(), errs[0].kind), (field, kind), "{errs:?}");
        }
    }

    #[test]
    fn upload_rules_name_their_fields() {
        let def = ResourceDef::custom::<DataUpload>();
        let cases: [Case; 5] = [
            (
                "spec.csiSnapshot",
                |o| {
                    o["spec"].as_object_mut().unwrap().remove("csiSnapshot");
                },
                FieldErrorKind::Required,
            ),
            (
                "spec.csiSnapshot.volumeSnapshot",
                |o| o["spec"]["csiSnapshot"]["volumeSnapshot"] = json!(""),
                FieldErrorKind::Required,
            ),
            (
                "spec.snapshotType",
                |o| o["spec"]["snapshotType"] = json!("EBS"),
                FieldErrorKind::Invalid,
            ),
            ("spec.sourcePVC", |o| o["spec"]["sourcePVC"] = json!(""), FieldErrorKind::Required),
            (
                "status.nodeOS",
                |o| o["status"] = json!({"nodeOS": "plan9"}),
                FieldErrorKind::Invalid,
            ),
        ];
        for (field, change, kind) in cases {
            let mut obj = du();
            change(&mut obj);
            let errs = def.admit(&mut obj, None).unwrap_err();
            assert_eq!((errs[0].field.as_str(), errs[0].kind), (field, kind), "{errs:?}");
        }
    }

    #[test]
    fn only_cancel_may_change() {
        let def = ResourceDef::custom::<DataDownload>();
        let old = dd();
        let mut new = dd();
        new["spec"]["cancel"] = json!(true);
        def.admit(&mut new, Some(&old)).unwrap();
        let mut new = dd();
        new["spec"]["targetVolume"]["pvc"] = json!("other");
        assert_eq!(def.admit(&mut new, Some(&old)).unwrap_err()[0].kind, FieldErrorKind::Forbidden);

        let def = ResourceDef::custom::<DataUpload>();
        let old = du();
        let mut new = du();
        new["spec"]["sourcePVC"] = json!("other");
        assert_eq!(def.admit(&mut new, Some(&old)).unwrap_err()[0].field, "spec");
    }

    #[test]
    fn columns_and_names_match_velero() {
        let def = ResourceDef::custom::<DataDownload>();
        let names: Vec<_> = def.printer_columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["Status", "Started", "Bytes Done", "Total Bytes", "Storage Location", "Age", "Node"]
        );
        assert_eq!((def.plural.as_str(), def.version.as_str()), ("datadownloads", "v2alpha1"));
        assert_eq!(ResourceDef::custom::<DataUpload>().short_names, ["du"]);
        let crd = def.crd().unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let required = |schema: &Value| {
            let mut names: Vec<String> = schema["required"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            names.sort_unstable();
            names
        };
        assert_eq!(
            required(spec),
            [
                "backupStorageLocation",
                "operationTimeout",
                "snapshotID",
                "sourceNamespace",
                "targetVolume"
            ]
        );
        assert_eq!(required(&spec["properties"]["targetVolume"]), ["namespace", "pv", "pvc"]);
    }
}
