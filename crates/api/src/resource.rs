//! Resource definitions: everything the API server needs to serve one kind, and nothing it does not.
//!
//! A [`ResourceDef`] is built either from a CRD (the custom kinds, generated from their Rust types
//! by `kube::CustomResource`) or by hand for the built-in core kinds. The apiserver is generic over
//! these: it validates against `schema`, prints `printer_columns`, serves `/status` when
//! `status_subresource` is set, and calls [`ResourceDef::admit`] to apply the kind's own defaults
//! and rules — so a kind's behaviour lives next to its type, here, and the server stays one engine.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition,
};
use kube::CustomResourceExt;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::field::FieldError;

/// A kind's own defaults and semantic rules, on its typed form.
///
/// Structural checks (types, required fields, enums, unknown fields) come from the schema and are
/// done by the server before this is called; `validate` covers what a schema cannot say, such as
/// "exactly one of" or "RFC 3339 in UTC".
pub trait Admit {
    /// Fills in defaults the way the upstream project's API server or webhook does.
    fn default_fields(&mut self) {}
    /// Returns every rule the object breaks; empty when it is valid.
    fn validate(&self) -> Vec<FieldError> {
        Vec::new()
    }
    /// Rules on a change from `old` to `self` (immutable fields). Called after `validate`.
    fn validate_update(&self, _old: &Self) -> Vec<FieldError> {
        Vec::new()
    }
}

/// One printer column, as in a CRD's `additionalPrinterColumns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    /// A simple JSONPath such as `.status.phase`.
    pub json_path: String,
    /// Shown only with `-o wide` when above zero.
    pub priority: i32,
    /// Text for `kubectl explain` and Table column definitions.
    pub description: String,
}

type AdmitFn = fn(&mut Value, Option<&Value>) -> Result<(), Vec<FieldError>>;

/// Everything needed to serve one kind.
#[derive(Clone)]
pub struct ResourceDef {
    /// API group; empty for the core group.
    pub group: String,
    /// Version within the group.
    pub version: String,
    /// `Kind`, e.g. `Backup`.
    pub kind: String,
    /// Plural resource name used in URLs, e.g. `backups`.
    pub plural: String,
    /// Singular resource name, e.g. `backup`.
    pub singular: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names for kubectl, e.g. `vs`.
    pub short_names: Vec<String>,
    /// Categories for kubectl, e.g. `all`, `velero`.
    pub categories: Vec<String>,
    /// Columns for Table output. The server adds `Name` first (and `Namespace` is kubectl's).
    pub printer_columns: Vec<PrinterColumn>,
    /// Whether `/status` is a separate subresource.
    pub status_subresource: bool,
    /// The structural `openAPIV3Schema` of the whole object.
    pub schema: Value,
    /// A built-in kind (core, batch, storage, events): strategic merge patch allowed, no CRD printed.
    pub builtin: bool,
    admit: AdmitFn,
}

impl std::fmt::Debug for ResourceDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceDef")
            .field("group", &self.group)
            .field("version", &self.version)
            .field("kind", &self.kind)
            .field("plural", &self.plural)
            .finish_non_exhaustive()
    }
}

impl ResourceDef {
    /// The `apiVersion` string: `group/version`, or just `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` (or just `plural` in the core group), as used in error messages:
    /// `backups.velero.io "b1" not found`.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Kind.group` as used in `422 Invalid` messages: `Backup.velero.io "b1" is invalid: …`.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Applies the kind's defaults and rules to `obj` (already pruned and schema-checked).
    ///
    /// `old` is the stored object on an update. On success `obj` holds the canonical, defaulted
    /// form of the object, exactly as it will be stored.
    ///
    /// # Errors
    /// Every rule the object breaks, with field paths.
    pub fn admit(&self, obj: &mut Value, old: Option<&Value>) -> Result<(), Vec<FieldError>> {
        (self.admit)(obj, old)
    }

    /// Builds the definition of a custom kind from its `kube::CustomResource` type.
    pub fn custom<K>() -> Self
    where
        K: CustomResourceExt + Admit + Serialize + DeserializeOwned,
    {
        Self::from_crd(&K::crd(), admit_typed::<K>)
    }

    /// Builds the definition of a custom kind from a hand-written CRD (for kinds whose fields
    /// sit at the top level, like VolumeSnapshotClass) and its typed admission.
    pub fn from_crd(crd: &CustomResourceDefinition, admit: AdmitFn) -> Self {
        let spec = &crd.spec;
        let version = spec.versions.iter().find(|v| v.storage).unwrap_or(&spec.versions[0]);
        let schema = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
            .unwrap_or_else(|| serde_json::json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
        let columns = version
            .additional_printer_columns
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(column_from_crd)
            .collect();
        Self {
            group: spec.group.clone(),
            version: version.name.clone(),
            kind: spec.names.kind.clone(),
            plural: spec.names.plural.clone(),
            singular: spec.names.singular.clone().unwrap_or_else(|| spec.names.kind.to_lowercase()),
            namespaced: spec.scope == "Namespaced",
            short_names: spec.names.short_names.clone().unwrap_or_default(),
            categories: spec.names.categories.clone().unwrap_or_default(),
            printer_columns: columns,
            status_subresource: version.subresources.as_ref().is_some_and(|s| s.status.is_some()),
            schema,
            builtin: false,
            admit,
        }
    }

    /// Builds the definition of a built-in kind, admitted through its k8s-openapi type `K`.
    #[allow(clippy::too_many_arguments)]
    pub fn builtin<K>(
        plural: &str,
        namespaced: bool,
        short_names: &[&str],
        categories: &[&str],
        status_subresource: bool,
        printer_columns: Vec<PrinterColumn>,
    ) -> Self
    where
        K: k8s_openapi::Resource + Serialize + DeserializeOwned + Admit,
    {
        Self {
            group: K::GROUP.to_string(),
            version: K::VERSION.to_string(),
            kind: K::KIND.to_string(),
            plural: plural.to_string(),
            singular: K::KIND.to_lowercase(),
            namespaced,
            short_names: short_names.iter().map(|s| s.to_string()).collect(),
            categories: categories.iter().map(|s| s.to_string()).collect(),
            printer_columns,
            status_subresource,
            schema: serde_json::json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
            builtin: true,
            admit: admit_typed::<K>,
        }
    }

    /// The CRD for this kind, for `holdfast crds` and cluster mode. `None` for built-in kinds.
    pub fn crd(&self) -> Option<Value> {
        if self.builtin {
            return None;
        }
        let columns: Vec<Value> = self
            .printer_columns
            .iter()
            .map(|c| {
                let mut col =
                    serde_json::json!({"name": c.name, "type": c.type_, "jsonPath": c.json_path});
                if c.priority != 0 {
                    col["priority"] = c.priority.into();
                }
                if !c.description.is_empty() {
                    col["description"] = c.description.clone().into();
                }
                col
            })
            .collect();
        let mut names = serde_json::json!({
            "kind": self.kind, "listKind": format!("{}List", self.kind),
            "plural": self.plural, "singular": self.singular,
        });
        if !self.short_names.is_empty() {
            names["shortNames"] = serde_json::json!(self.short_names);
        }
        if !self.categories.is_empty() {
            names["categories"] = serde_json::json!(self.categories);
        }
        let mut version = serde_json::json!({
            "name": self.version, "served": true, "storage": true,
            "schema": {"openAPIV3Schema": self.schema},
            "additionalPrinterColumns": columns,
        });
        if self.status_subresource {
            version["subresources"] = serde_json::json!({"status": {}});
        }
        Some(serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{}.{}", self.plural, self.group)},
            "spec": {
                "group": self.group,
                "names": names,
                "scope": if self.namespaced { "Namespaced" } else { "Cluster" },
                "versions": [version],
            }
        }))
    }
}

fn column_from_crd(c: &CustomResourceColumnDefinition) -> PrinterColumn {
    PrinterColumn {
        name: c.name.clone(),
        type_: c.type_.clone(),
        json_path: c.json_path.clone(),
        priority: c.priority.unwrap_or(0),
        description: c.description.clone().unwrap_or_default(),
    }
}

/// A printer column, for the hand-written tables of built-in kinds.
pub fn column(name: &str, type_: &str, json_path: &str, priority: i32) -> PrinterColumn {
    PrinterColumn {
        name: name.into(),
        type_: type_.into(),
        json_path: json_path.into(),
        priority,
        description: String::new(),
    }
}

/// Typed admission: decode into `K` (a type error names its field path), default, validate,
/// and write the canonical form back.
fn admit_typed<K>(obj: &mut Value, old: Option<&Value>) -> Result<(), Vec<FieldError>>
where
    K: Admit + Serialize + DeserializeOwned,
{
    let mut typed: K = decode(obj)?;
    typed.default_fields();
    let mut errors = typed.validate();
    if let Some(old) = old {
        // The stored object decoded before; if it no longer does, only the new one is judged.
        if let Ok(old) = serde_json::from_value::<K>(old.clone()) {
            errors.extend(typed.validate_update(&old));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    *obj = serde_json::to_value(&typed)
        .map_err(|e| vec![FieldError::invalid("", "", e.to_string())])?;
    Ok(())
}

/// Decodes `obj` into `K`, turning a serde error into a field error with the path it failed at.
///
/// # Errors
/// One `FieldError` naming the field whose value has the wrong type or shape.
pub fn decode<K: DeserializeOwned>(obj: &Value) -> Result<K, Vec<FieldError>> {
    serde_path_to_error::deserialize(obj).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        vec![FieldError {
            field,
            kind: crate::field::FieldErrorKind::Invalid,
            value: None,
            detail: e.into_inner().to_string(),
        }]
    })
}
