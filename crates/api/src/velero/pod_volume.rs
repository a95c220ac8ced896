//! PodVolumeBackup and PodVolumeRestore (`velero.io/v1`): file-system backup of one volume of one
//! pod, and its restore (Velero's v1 API reference; upstream Velero for the backup).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    DataMovePhase, DataMoveProgress, UploaderType, check_progress, require_non_empty,
    require_non_negative, require_pod_ref,
};
use crate::field::FieldError;
use crate::resource::Admit;

/// The backup of one pod volume, taken by the node agent on the pod's node.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "velero.io",
    version = "v1",
    kind = "PodVolumeBackup",
    namespaced,
    status = "PodVolumeBackupStatus",
    shortname = "pvb",
    category = "velero",
    doc = "The backup of one volume of one pod by the node agent.",
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.phase",
        description = "PodVolumeBackup status such as New/InProgress"
    ),
    printcolumn(
        name = "Started",
        type_ = "date",
        json_path = ".status.startTimestamp",
        description = "Time duration since this PodVolumeBackup was started"
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
        description = "Time duration since this PodVolumeBackup was created"
    ),
    printcolumn(
        name = "Node",
        type_ = "string",
        json_path = ".spec.node",
        description = "Name of the node where the PodVolumeBackup is processed"
    ),
    printcolumn(
        name = "Uploader Type",
        type_ = "string",
        json_path = ".spec.uploaderType",
        description = "The type of the uploader to handle data transfer"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PodVolumeBackupSpec {
    /// The node the pod runs on; only that node's agent takes the backup.
    pub node: String,
    /// The pod whose volume is backed up.
    pub pod: ObjectReference,
    /// The volume's name within the pod.
    pub volume: String,
    /// The BackupStorageLocation whose repository receives the data.
    pub backup_storage_location: String,
    /// The legacy repository identifier; empty today, the repository is found from the location.
    pub repo_identifier: String,
    /// The uploader that moves the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploader_type: Option<UploaderType>,
    /// Informational tags recorded with the snapshot (`backup`, `pod`, `ns`, `volume`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Uploader settings, e.g. `ParallelFilesUpload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploader_settings: Option<BTreeMap<String, String>>,
    /// Asks the node agent to cancel the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<bool>,
}

/// Observed state of a PodVolumeBackup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodVolumeBackupStatus {
    /// Where the backup is in its lifecycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<DataMovePhase>,
    /// The full path of the volume as the data mover saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The repository snapshot holding the volume's data.
    #[serde(default, rename = "snapshotID", skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// What happened, when the backup ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the backup was accepted by a node agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_timestamp: Option<Time>,
    /// When data started moving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Time>,
    /// When the backup ended, successfully or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timestamp: Option<Time>,
    /// Bytes backed up out of the total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<DataMoveProgress>,
    /// Bytes new or changed since the parent snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental_bytes: Option<i64>,
}

/// The restore of one pod volume from a snapshot, by the node agent on the pod's node.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "velero.io",
    version = "v1",
    kind = "PodVolumeRestore",
    namespaced,
    status = "PodVolumeRestoreStatus",
    shortname = "pvr",
    category = "velero",
    doc = "PodVolumeRestore is the restore of one volume of one pod from a repository snapshot.",
    printcolumn(
        name = "Namespace",
        type_ = "string",
        json_path = ".spec.pod.namespace",
        description = "Namespace of the pod containing the volume to be restored"
    ),
    printcolumn(
        name = "Pod",
        type_ = "string",
        json_path = ".spec.pod.name",
        description = "Name of the pod containing the volume to be restored"
    ),
    printcolumn(
        name = "Uploader Type",
        type_ = "string",
        json_path = ".spec.uploaderType",
        description = "The type of the uploader to handle data transfer"
    ),
    printcolumn(
        name = "Volume",
        type_ = "string",
        json_path = ".spec.volume",
        description = "Name of the volume to be restored"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pod Volume Restore status such as New/InProgress"
    ),
    printcolumn(
        name = "TotalBytes",
        type_ = "integer",
        format = "int64",
        json_path = ".status.progress.totalBytes",
        description = "Total bytes"
    ),
    printcolumn(
        name = "BytesDone",
        type_ = "integer",
        format = "int64",
        json_path = ".status.progress.bytesDone",
        description = "Completed bytes"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct PodVolumeRestoreSpec {
    /// The pod containing the volume to be restored.
    pub pod: ObjectReference,
    /// The volume's name within the pod.
    pub volume: String,
    /// The BackupStorageLocation whose repository holds the snapshot.
    pub backup_storage_location: String,
    /// The legacy repository identifier; may be empty.
    pub repo_identifier: String,
    /// The repository snapshot to restore.
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
    /// The namespace the volume was backed up from (before namespace mapping).
    pub source_namespace: String,
    /// The uploader that moves the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploader_type: Option<UploaderType>,
    /// Uploader settings, e.g. `WriteSparseFiles`, `ParallelFilesDownload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploader_settings: Option<BTreeMap<String, String>>,
    /// Asks the node agent to cancel the restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<bool>,
    /// The logical size of the snapshot in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_size: Option<i64>,
}

/// Observed state of a PodVolumeRestore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodVolumeRestoreStatus {
    /// Where the restore is in its lifecycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<DataMovePhase>,
    /// What happened, when the restore ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the restore was accepted by a node agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_timestamp: Option<Time>,
    /// When data started moving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Time>,
    /// When the restore ended; recorded on failures too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timestamp: Option<Time>,
    /// Bytes restored out of the snapshot's total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<DataMoveProgress>,
    /// The node that restores the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl Admit for PodVolumeBackup {
    fn default_fields(&mut self) {
        // Velero's server writes its --uploader-type (kopia) into every PodVolumeBackup it makes.
        self.spec.uploader_type.get_or_insert(UploaderType::Kopia);
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let spec = &self.spec;
        require_non_empty(&mut errors, "spec.node", &spec.node);
        require_pod_ref(&mut errors, "spec.pod", &spec.pod);
        require_non_empty(&mut errors, "spec.volume", &spec.volume);
        require_non_empty(&mut errors, "spec.backupStorageLocation", &spec.backup_storage_location);
        if let Some(status) = &self.status {
            check_progress(&mut errors, "status.progress", status.progress.as_ref());
            require_non_negative(&mut errors, "status.incrementalBytes", status.incremental_bytes);
        }
        errors
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        // Only `cancel` may change: the node agent works from the spec it accepted.
        immutable_except_cancel(self, old, |k| &mut k.spec.cancel, |k| &k.spec)
    }
}

impl Admit for PodVolumeRestore {
    fn default_fields(&mut self) {
        // As for backups: Velero's server always names the uploader, kopia by default.
        self.spec.uploader_type.get_or_insert(UploaderType::Kopia);
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let spec = &self.spec;
        require_pod_ref(&mut errors, "spec.pod", &spec.pod);
        require_non_empty(&mut errors, "spec.volume", &spec.volume);
        require_non_empty(&mut errors, "spec.backupStorageLocation", &spec.backup_storage_location);
        require_non_empty(&mut errors, "spec.snapshotID", &spec.snapshot_id);
        require_non_empty(&mut errors, "spec.sourceNamespace", &spec.source_namespace);
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

/// Only `spec.cancel` may change after creation: the node agent works from the spec it accepted.
/// The old object is defaulted first, so a default filled in since it was stored is no change.
pub(super) fn immutable_except_cancel<K, S>(
    new: &K,
    old: &K,
    cancel: fn(&mut K) -> &mut Option<bool>,
    spec: fn(&K) -> &S,
) -> Vec<FieldError>
where
    K: Admit + Clone,
    S: PartialEq,
{
    let (mut old, mut new) = (old.clone(), new.clone());
    old.default_fields();
    *cancel(&mut old) = None;
    *cancel(&mut new) = None;
    if spec(&old) == spec(&new) {
        Vec::new()
    } else {
        vec![FieldError::forbidden("spec", "only spec.cancel may change after creation")]
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::field::FieldErrorKind;
    use crate::resource::ResourceDef;

    fn pvr() -> Value {
        json!({
            "apiVersion": "velero.io/v1", "kind": "PodVolumeRestore",
            "metadata": {"name": "restore-1-abcde", "namespace": "velero"},
            "spec": {
                "pod": {"kind": "Pod", "name": "web-0", "namespace": "shop", "uid": "6b1c7f6e-1111-4c5e-9d7a-0d2c5d0e0a01"},
                "volume": "data", "backupStorageLocation": "default", "repoIdentifier": "",
                "snapshotID": "e3a9c5fd539c87e59011efe573f72c7a", "sourceNamespace": "shop",
                "uploaderSettings": {"WriteSparseFiles": "false"}
            },
            "status": {"phase": "InProgress", "startTimestamp": "2026-11-21T10:00:00Z",
                       "progress": {"totalBytes": 1000, "bytesDone": 10}}
        })
    }

    fn pvb() -> Value {
        json!({
            "apiVersion": "velero.io/v1", "kind": "PodVolumeBackup",
            "metadata": {"name": "backup-1-abcde", "namespace": "velero"},
            "spec": {
                "node": "node-1", "pod": {"kind": "Pod", "name": "web-0", "namespace": "shop"},
                "volume": "data", "backupStorageLocation": "default", "repoIdentifier": "",
                "tags": {"backup": "backup-1", "ns": "shop"}
            }
        })
    }

    fn admit(
        def: &ResourceDef,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), Vec<FieldError>> {
        def.admit(obj, old)
    }

    #[test]
    fn realistic_restore_admits_with_defaults() {
        let def = ResourceDef::custom::<PodVolumeRestore>();
        let mut obj = pvr();
        admit(&def, &mut obj, None).unwrap();
        assert_eq!(obj["spec"]["uploaderType"], "kopia");
        assert_eq!(obj["status"]["phase"], "InProgress");
        // An explicit empty uploader type is kept as written: it means the same as kopia.
        let mut obj = pvr();
        obj["spec"]["uploaderType"] = json!("");
        admit(&def, &mut obj, None).unwrap();
        assert_eq!(obj["spec"]["uploaderType"], "");
    }

    #[test]
    fn restore_rules_name_their_fields() {
        let def = ResourceDef::custom::<PodVolumeRestore>();
        for (field, value) in [
            ("spec.snapshotID", json!("")),
            ("spec.volume", json!("")),
            ("spec.sourceNamespace", json!("")),
            ("spec.backupStorageLocation", json!("")),
        ] {
            let mut obj = pvr();
            obj["spec"][field.trim_start_matches("spec.")] = value;
            let errs = admit(&def, &mut obj, None).unwrap_err();
            assert_eq!(errs[0].field, field);
            assert_eq!(errs[0].kind, FieldErrorKind::Required);
        }
        let mut obj = pvr();
        obj["spec"]["pod"]["name"] = json!(null);
        assert_eq!(admit(&def, &mut obj, None).unwrap_err()[0].field, "spec.pod.name");
        let mut obj = pvr();
        obj["spec"]["snapshotSize"] = json!(-1);
        assert_eq!(admit(&def, &mut obj, None).unwrap_err()[0].field, "spec.snapshotSize");
        let mut obj = pvr();
        obj["status"]["progress"]["bytesDone"] = json!(-5);
        assert_eq!(admit(&def, &mut obj, None).unwrap_err()[0].field, "status.progress.bytesDone");
        let mut obj = pvr();
        obj["status"]["startTimestamp"] = json!("yesterday");
        assert_eq!(admit(&def, &mut obj, None).unwrap_err()[0].field, "status.startTimestamp");
    }

    #[test]
    fn enums_are_enforced() {
        let def = ResourceDef::custom::<PodVolumeRestore>();
        let mut obj = pvr();
        obj["spec"]["uploaderType"] = json!("restic");
        assert_eq!(admit(&def, &mut obj, None).unwrap_err()[0].field, "spec.uploaderType");
        let mut obj = pvr();
        obj["status"]["phase"] = json!("Running");
        assert_eq!(admit(&def, &mut obj, None).unwrap_err()[0].field, "status.phase");
        let crd = def.crd().unwrap();
        let phase = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"]["phase"];
        assert_eq!(
            phase["enum"],
            json!([
                "New",
                "Accepted",
                "Prepared",
                "InProgress",
                "Canceling",
                "Canceled",
                "Completed",
                "Failed"
            ])
        );
        let uploader = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["uploaderType"];
        assert_eq!(uploader["enum"], json!(["kopia", ""]));
    }

    #[test]
    fn only_cancel_may_change() {
        let def = ResourceDef::custom::<PodVolumeRestore>();
        let old = pvr();
        let mut new = pvr();
        new["spec"]["cancel"] = json!(true);
        admit(&def, &mut new, Some(&old)).unwrap();
        let mut new = pvr();
        new["spec"]["snapshotID"] = json!("ffff");
        let errs = admit(&def, &mut new, Some(&old)).unwrap_err();
        assert_eq!((errs[0].field.as_str(), errs[0].kind), ("spec", FieldErrorKind::Forbidden));

        let def = ResourceDef::custom::<PodVolumeBackup>();
        let old = pvb();
        let mut new = pvb();
        new["spec"]["volume"] = json!("logs");
        assert_eq!(admit(&def, &mut new, Some(&old)).unwrap_err()[0].field, "spec");
        let mut new = pvb();
        new["spec"]["cancel"] = json!(true);
        admit(&def, &mut new, Some(&old)).unwrap();
    }

    #[test]
    fn realistic_backup_admits_and_rules_fire() {
        let def = ResourceDef::custom::<PodVolumeBackup>();
        let mut obj = pvb();
        admit(&def, &mut obj, None).unwrap();
        assert_eq!(obj["spec"]["uploaderType"], "kopia");
        let mut obj = pvb();
        obj["spec"]["node"] = json!("");
        assert_eq!(admit(&def, &mut obj, None).unwrap_err()[0].field, "spec.node");
        let mut obj = pvb();
        obj["spec"]["pod"] = json!({"name": "web-0"});
        assert_eq!(admit(&def, &mut obj, None).unwrap_err()[0].field, "spec.pod.namespace");
        let mut obj = pvb();
        obj["status"] = json!({"incrementalBytes": -1});
        assert_eq!(admit(&def, &mut obj, None).unwrap_err()[0].field, "status.incrementalBytes");
    }

    #[test]
    fn columns_match_velero() {
        let names =
            |def: ResourceDef| def.printer_columns.into_iter().map(|c| c.name).collect::<Vec<_>>();
        assert_eq!(
            names(ResourceDef::custom::<PodVolumeRestore>()),
            [
                "Namespace",
                "Pod",
                "Uploader Type",
                "Volume",
                "Status",
                "TotalBytes",
                "BytesDone",
                "Age"
            ]
        );
        let def = ResourceDef::custom::<PodVolumeBackup>();
        assert_eq!(
            (def.short_names.clone(), def.categories.clone()),
            (vec!["pvb".into()], vec!["velero".into()])
        );
        assert_eq!(names(def)[..4], ["Status", "Started", "Bytes Done", "Total Bytes"]);
    }
}
