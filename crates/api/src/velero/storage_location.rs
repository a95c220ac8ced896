//! BackupStorageLocation (`velero.io/v1`): the object storage (bucket and prefix) that backups and
//! repositories live in, as upstream Velero defines it.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::SecretKeySelector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::require_non_empty;
use crate::field::{FieldError, path};
use crate::go_duration::check_go_duration;
use crate::resource::Admit;

/// Where Velero stores backup objects and repositories.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "velero.io",
    version = "v1",
    kind = "BackupStorageLocation",
    plural = "backupstoragelocations",
    namespaced,
    status = "BackupStorageLocationStatus",
    shortname = "bsl",
    category = "velero",
    doc = "BackupStorageLocation is a location where Velero stores backup objects",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Backup Storage Location status such as Available/Unavailable"
    ),
    printcolumn(
        name = "Last Validated",
        type_ = "date",
        json_path = ".status.lastValidationTime",
        description = "LastValidationTime is the last time the backup store location was validated"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Default",
        type_ = "boolean",
        json_path = ".spec.default",
        description = "Default backup storage location"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BackupStorageLocationSpec {
    /// The storage provider, e.g. `aws`, `velero.io/aws`, `azure`, `gcp`, or holdfast's `local`.
    pub provider: String,
    /// Provider-specific settings: `region`, `s3Url`, `s3ForcePathStyle`, `insecureSkipTLSVerify`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<BTreeMap<String, String>>,
    /// The Secret key holding credentials for this location; unset means the server's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<SecretKeySelector>,
    /// The bucket and prefix.
    pub object_storage: ObjectStorageLocation,
    /// Whether this is the default location for backups that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<bool>,
    /// Whether backups may be written here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_mode: Option<AccessMode>,
    /// How often backups in storage are synced into the cluster (a Go duration; `0` disables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_sync_period: Option<String>,
    /// How often the storage is validated (a Go duration; `0` disables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_frequency: Option<String>,
}

/// The object storage settings of a location.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStorageLocation {
    /// The bucket to use.
    pub bucket: String,
    /// The path inside the bucket; optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// A CA bundle (base64) for the provider's TLS. Deprecated upstream in favour of `caCertRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", extend("format" = "byte"))]
    pub ca_cert: Option<ByteString>,
    /// A Secret key in the location's namespace holding the CA bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_ref: Option<SecretKeySelector>,
}

/// Whether a location accepts new backups.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AccessMode {
    /// Backups are only read (restores, sync); nothing is written and no maintenance runs.
    ReadOnly,
    /// Backups are read and written.
    ReadWrite,
}

/// Whether the location was reachable when last validated.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupStorageLocationPhase {
    /// The last validation succeeded.
    Available,
    /// The last validation failed.
    Unavailable,
}

/// Observed state of a BackupStorageLocation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStorageLocationStatus {
    /// Whether the location is usable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupStorageLocationPhase>,
    /// When backups were last synced from the location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_synced_time: Option<Time>,
    /// Deprecated upstream; kept so existing objects still decode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_synced_revision: Option<String>,
    /// When the location was last validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_validation_time: Option<Time>,
    /// Why the location is unavailable, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Deprecated upstream (the spec carries the access mode); kept so existing objects decode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_mode: Option<AccessMode>,
}

impl BackupStorageLocation {
    /// Whether backups may be written to this location.
    pub fn is_read_only(&self) -> bool {
        self.spec.access_mode == Some(AccessMode::ReadOnly)
    }
}

impl Admit for BackupStorageLocation {
    fn default_fields(&mut self) {
        // Velero documents ReadWrite as the access mode of a location that names none.
        self.spec.access_mode.get_or_insert(AccessMode::ReadWrite);
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let spec = &self.spec;
        require_non_empty(&mut errors, "spec.provider", &spec.provider);
        let storage = &spec.object_storage;
        require_non_empty(&mut errors, "spec.objectStorage.bucket", &storage.bucket);
        if storage.bucket.contains('/') {
            errors.push(FieldError::invalid(
                "spec.objectStorage.bucket",
                &storage.bucket,
                "a bucket name may not contain '/'; put the path in objectStorage.prefix",
            ));
        }
        if storage.ca_cert.is_some() && storage.ca_cert_ref.is_some() {
            errors.push(FieldError::forbidden(
                "spec.objectStorage.caCertRef",
                "caCert and caCertRef may not both be set; use caCertRef",
            ));
        }
        for (field, selector) in [
            ("spec.credential", &spec.credential),
            ("spec.objectStorage.caCertRef", &storage.ca_cert_ref),
        ] {
            if let Some(selector) = selector {
                require_non_empty(&mut errors, &path(field, "name"), selector.name.as_str());
                require_non_empty(&mut errors, &path(field, "key"), &selector.key);
            }
        }
        for (field, value) in [
            ("spec.backupSyncPeriod", &spec.backup_sync_period),
            ("spec.validationFrequency", &spec.validation_frequency),
        ] {
            if let Some(value) = value {
                check_go_duration(&mut errors, field, value);
            }
        }
        errors
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

    fn bsl() -> Value {
        json!({
            "apiVersion": "velero.io/v1", "kind": "BackupStorageLocation",
            "metadata": {"name": "default", "namespace": "velero"},
            "spec": {
                "provider": "aws",
                "objectStorage": {"bucket": "velero-backups", "prefix": "cluster-a"},
                "config": {"region": "us-east-1", "s3Url": "http://minio:9000", "s3ForcePathStyle": "true"},
                "credential": {"name": "cloud-credentials", "key": "cloud"},
                "default": true,
                "backupSyncPeriod": "1m0s",
                "validationFrequency": "1m"
            }
        })
    }

    fn def() -> ResourceDef {
        ResourceDef::custom::<BackupStorageLocation>()
    }

    #[test]
    fn realistic_location_admits_with_read_write_default() {
        let mut obj = bsl();
        def().admit(&mut obj, None).unwrap();
        assert_eq!(obj["spec"]["accessMode"], "ReadWrite");
        let mut obj = bsl();
        obj["spec"]["accessMode"] = json!("ReadOnly");
        def().admit(&mut obj, None).unwrap();
        assert_eq!(obj["spec"]["accessMode"], "ReadOnly");
    }

    #[test]
    fn rules_name_their_fields() {
        let cases: [Case; 7] = [
            (
                "spec.objectStorage.bucket",
                |o| o["spec"]["objectStorage"]["bucket"] = json!(""),
                FieldErrorKind::Required,
            ),
            (
                "spec.objectStorage.bucket",
                |o| o["spec"]["objectStorage"]["bucket"] = json!("a/b"),
                FieldErrorKind::Invalid,
            ),
            ("spec.provider", |o| o["spec"]["provider"] = json!(""), FieldErrorKind::Required),
            (
                "spec.backupSyncPeriod",
                |o| o["spec"]["backupSyncPeriod"] = json!("1 minute"),
                FieldErrorKind::Invalid,
            ),
            (
                "spec.credential.key",
                |o| o["spec"]["credential"]["key"] = json!(""),
                FieldErrorKind::Required,
            ),
            (
                "spec.objectStorage.caCertRef",
                |o| {
                    o["spec"]["objectStorage"]["caCert"] = json!("LS0tLS1CRUdJTg==");
                    o["spec"]["objectStorage"]["caCertRef"] =
                        json!({"name": "ca", "key": "ca.crt"});
                },
                FieldErrorKind::Forbidden,
            ),
            (
                "spec.objectStorage.caCert",
                |o| o["spec"]["objectStorage"]["caCert"] = json!("not base64!"),
                FieldErrorKind::Invalid,
            ),
        ];
        for (field, change, kind) in cases {
            let mut obj = bsl();
            change(&mut obj);
            let errs = def().admit(&mut obj, None).unwrap_err();
            assert_eq!((errs[0].field.as_str(), errs[0].kind), (field, kind), "{errs:?}");
        }
    }

    #[test]
    fn enums_are_enforced() {
        let mut obj = bsl();
        obj["spec"]["accessMode"] = json!("WriteOnly");
        assert_eq!(def().admit(&mut obj, None).unwrap_err()[0].field, "spec.accessMode");
        let mut obj = bsl();
        obj["status"] = json!({"phase": "Ready"});
        assert_eq!(def().admit(&mut obj, None).unwrap_err()[0].field, "status.phase");
    }

    #[test]
    fn names_and_columns_match_velero() {
        let d = def();
        assert_eq!(
            (d.plural.as_str(), d.short_names.clone()),
            ("backupstoragelocations", vec!["bsl".to_string()])
        );
        let names: Vec<_> = d.printer_columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Phase", "Last Validated", "Age", "Default"]);
    }
}
