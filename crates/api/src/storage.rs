//! `storage.kubeblocks.io/v1alpha1`: StorageProvider (KubeBlocks' published API reference,
//! last section). A StorageProvider tells a BackupRepo how to reach one kind of storage: through a
//! CSI driver (templates for a Secret, a StorageClass and a PVC) or through the datasafed tool
//! (a template for its configuration). Templates are Go `text/template` with sprig, rendered by
//! the BackupRepo controller; here they are only stored and checked for emptiness.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::field::{FieldError, index};
use crate::resource::{Admit, ResourceDef};

/// Definitions of the kinds in this module.
pub fn definitions() -> Vec<ResourceDef> {
    vec![ResourceDef::custom::<StorageProvider>()]
}

/// How to reach one kind of storage (cluster-scoped).
// kube's attribute repeats `category` and `printcolumn` keys by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "storage.kubeblocks.io",
    version = "v1alpha1",
    kind = "StorageProvider",
    status = "StorageProviderStatus",
    category = "kubeblocks",
    printcolumn(name = "STATUS", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "CSIDRIVER", type_ = "string", json_path = ".spec.csiDriverName"),
    printcolumn(name = "AGE", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct StorageProviderSpec {
    /// The CSI driver for Mount access; empty when the storage has no CSI driver.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "csiDriverName")]
    pub csi_driver_name: Option<String>,
    /// Template of the Secret the CSI driver reads (e.g. S3 keys).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "csiDriverSecretTemplate")]
    pub csi_driver_secret_template: Option<String>,
    /// Template of the StorageClass that uses the CSI driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_template: Option<String>,
    /// Template of the PVC backups are written to under Mount access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_template: Option<String>,
    /// Template of datasafed's configuration, for Tool access; empty when the tool cannot reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datasafed_config_template: Option<String>,
    /// The parameters the templates use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters_schema: Option<ParametersSchema>,
}

/// The parameters of a storage, as an OpenAPI v3 schema.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParametersSchema {
    /// The parameters, in OpenAPI v3 (kept as written).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "openAPIV3Schema")]
    #[schemars(schema_with = "crate::kubeblocks::free_form_object")]
    pub open_api_v3_schema: Option<serde_json::Value>,
    /// Parameters that are credentials, kept in a Secret rather than a ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_fields: Option<Vec<String>>,
}

/// Whether a StorageProvider can be used.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum StorageProviderPhase {
    // Not usable, usually because its CSI driver is not installed.
    #[default]
    NotReady,
    // Usable.
    Ready,
}

/// Observed state of a StorageProvider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageProviderStatus {
    /// NotReady or Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<StorageProviderPhase>,
    /// Conditions, e.g. `CSIDriverInstalled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}

impl StorageProvider {
    /// The names of the parameters declared in `parametersSchema.openAPIV3Schema.properties`.
    pub fn parameter_names(&self) -> Vec<String> {
        self.spec
            .parameters_schema
            .as_ref()
            .and_then(|p| p.open_api_v3_schema.as_ref())
            .and_then(|s| s.get("properties"))
            .and_then(serde_json::Value::as_object)
            .map(|props| props.keys().cloned().collect())
            .unwrap_or_default()
    }
}

impl Admit for StorageProvider {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let Some(params) = &self.spec.parameters_schema else {
            return errors;
        };
        if let Some(schema) = &params.open_api_v3_schema {
            if !schema.is_object() {
                errors.push(FieldError::invalid(
                    "spec.parametersSchema.openAPIV3Schema",
                    schema,
                    "must be an OpenAPI v3 schema object",
                ));
            } else if let Some(props) = schema.get("properties")
                && !props.is_object()
            {
                errors.push(FieldError::invalid(
                    "spec.parametersSchema.openAPIV3Schema.properties",
                    props,
                    "must map parameter names to schemas",
                ));
            }
        }
        let declared = self.parameter_names();
        for (i, field) in params.credential_fields.iter().flatten().enumerate() {
            let at = index("spec.parametersSchema.credentialFields", i);
            if field.is_empty() {
                errors.push(FieldError::required(at, "may not be empty"));
            } else if !declared.is_empty() && !declared.contains(field) {
                // A credential the schema does not declare could never be filled in.
                errors.push(FieldError::invalid(
                    at,
                    field,
                    "is not a parameter of openAPIV3Schema.properties",
                ));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubeblocks::testing::{
        admit, admit_example, assert_structural_crd, def, refused_fields,
    };
    use serde_json::{Value, json};

    const API: &str = "storage.kubeblocks.io/v1alpha1";

    fn s3() -> Value {
        json!({
            "apiVersion": API, "kind": "StorageProvider", "metadata": {"name": "s3"},
            "spec": {
                "csiDriverName": "ru.yandex.s3.csi",
                "csiDriverSecretTemplate": "accessKeyID: {{ index .Parameters \"accessKeyId\" }}\n",
                "storageClassTemplate": "provisioner: ru.yandex.s3.csi\nparameters:\n  bucket: {{ index .Parameters \"bucket\" }}\n",
                "datasafedConfigTemplate": "[storage]\ntype=s3\nbucket={{ index .Parameters \"bucket\" }}\n",
                "parametersSchema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "bucket": {"type": "string"},
                            "accessKeyId": {"type": "string"},
                            "secretAccessKey": {"type": "string"}
                        },
                        "required": ["bucket"]
                    },
                    "credentialFields": ["accessKeyId", "secretAccessKey"]
                }
            }
        })
    }

    #[test]
    fn admits_a_provider_and_keeps_its_schema_as_written() {
        let mut obj = s3();
        let schema = obj["spec"]["parametersSchema"]["openAPIV3Schema"].clone();
        admit(&mut obj, None).unwrap();
        assert_eq!(obj["spec"]["parametersSchema"]["openAPIV3Schema"], schema);
        let typed: StorageProvider = serde_json::from_value(obj).unwrap();
        assert_eq!(typed.parameter_names(), ["bucket", "accessKeyId", "secretAccessKey"]);
    }

    #[test]
    fn rules_name_their_fields() {
        let mut obj = s3();
        obj["spec"]["parametersSchema"]["credentialFields"] = json!(["", "token"]);
        assert_eq!(
            refused_fields(obj),
            [
                "spec.parametersSchema.credentialFields[0]",
                "spec.parametersSchema.credentialFields[1]"
            ]
        );
        let mut obj = s3();
        obj["spec"]["parametersSchema"]["openAPIV3Schema"] = json!("a string");
        assert_eq!(refused_fields(obj)[0], "spec.parametersSchema.openAPIV3Schema");
    }

    #[test]
    fn status_phase_is_an_enum() {
        let mut obj = s3();
        obj["status"] = json!({"phase": "Ready"});
        admit(&mut obj, None).unwrap();
        let mut obj = s3();
        obj["status"] = json!({"phase": "Sleeping"});
        assert_eq!(refused_fields(obj), ["status.phase"]);
    }

    #[test]
    fn crd_is_structural_and_cluster_scoped() {
        assert_structural_crd(API, "StorageProvider");
        let d = def(API, "StorageProvider");
        assert!(!d.namespaced);
        let params = &d.schema["properties"]["spec"]["properties"]["parametersSchema"]["properties"]
            ["openAPIV3Schema"];
        assert_eq!(params["x-kubernetes-preserve-unknown-fields"], json!(true));
        let names: Vec<_> = d.printer_columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["STATUS", "CSIDRIVER", "AGE"]);
    }

    #[test]
    fn example_admits() {
        let objs = admit_example("storage-storageprovider.yaml");
        assert_eq!(objs[0]["metadata"]["name"], "local-path");
    }
}
