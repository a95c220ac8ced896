//! `dataprotection.kubeblocks.io/v1alpha1`: ActionSet, Backup, BackupPolicy, BackupRepo,
//! BackupSchedule and Restore (KubeBlocks' published API reference; upstream
//! KubeBlocks' kubebuilder markers for defaults, ranges and immutability where the spec is silent).
//!
//! One module per kind; the types several kinds share (targets, credentials, phases) live in
//! the module of the kind that owns them and are re-exported here.

pub mod actionset;
pub mod backup;
pub mod backup_policy;
pub mod backup_repo;
pub mod backup_schedule;
pub mod restore;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::parse_retention_period;
use crate::field::FieldError;
use crate::resource::ResourceDef;

pub use actionset::ActionSet;
pub use backup::Backup;
pub use backup_policy::BackupPolicy;
pub use backup_repo::BackupRepo;
pub use backup_schedule::BackupSchedule;
pub use restore::Restore;

/// The API group of every kind here.
pub const GROUP: &str = "dataprotection.kubeblocks.io";

/// Definitions of the six dataprotection kinds.
pub fn definitions() -> Vec<ResourceDef> {
    vec![
        ResourceDef::custom::<ActionSet>(),
        ResourceDef::custom::<Backup>(),
        ResourceDef::custom::<BackupPolicy>(),
        ResourceDef::custom::<BackupRepo>(),
        ResourceDef::custom::<BackupSchedule>(),
        ResourceDef::custom::<Restore>(),
    ]
}

/// `.status.phase` of a BackupPolicy or an ActionSet.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    // The object can be used.
    Available,
    // The object is broken; `status.message` says why.
    Unavailable,
}

/// Whether an error from an action fails the whole operation. Upstream implements only `Fail`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ActionErrorMode {
    // The error is logged and the operation goes on.
    Continue,
    // The error fails the operation.
    #[default]
    Fail,
}

/// The pattern upstream puts on names that refer to other objects (policies, repos, methods,
/// secrets): a lower-case DNS subdomain.
const REFERENCE_NAME_RULE: &str = "must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

fn is_reference_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 253
        && bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && bytes.iter().all(|b| edge(b) || *b == b'-' || *b == b'.')
}

/// A required name of another object: non-empty and a lower-case DNS subdomain.
pub(crate) fn check_reference_name(errors: &mut Vec<FieldError>, field: &str, value: &str) {
    if value.is_empty() {
        errors.push(FieldError::required(field, "may not be empty"));
    } else if !is_reference_name(value) {
        errors.push(FieldError::invalid(field, value, REFERENCE_NAME_RULE));
    }
}

/// A required string that has no format of its own.
pub(crate) fn check_non_empty(errors: &mut Vec<FieldError>, field: &str, value: &str) {
    if value.trim().is_empty() {
        errors.push(FieldError::required(field, "may not be empty"));
    }
}

/// A KubeBlocks retention period such as `7d` or `30d12h30m`.
pub(crate) fn check_retention_period(errors: &mut Vec<FieldError>, field: &str, value: &str) {
    if let Err(e) = parse_retention_period(value) {
        errors.push(FieldError::invalid(
            field,
            value,
            format!("{e}; expected a duration like 7d, 12h, 30d12h30m or 1y2mo3w4d5h6m"),
        ));
    }
}

/// An integer inside `[min, max]` (upstream's `Minimum`/`Maximum` markers).
pub(crate) fn check_range(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: i64,
    min: i64,
    max: Option<i64>,
) {
    let too_small = value < min;
    let too_big = max.is_some_and(|m| value > m);
    if too_small || too_big {
        let detail = match max {
            Some(max) => format!("must be between {min} and {max}, inclusive"),
            None => format!("must be greater than or equal to {min}"),
        };
        errors.push(FieldError::invalid(field, value, detail));
    }
}

/// `field` may not change once the object exists (upstream's `self == oldSelf` rules).
pub(crate) fn check_unchanged<T: PartialEq>(
    errors: &mut Vec<FieldError>,
    field: &str,
    new: &T,
    old: &T,
) {
    if new != old {
        errors.push(FieldError::forbidden(field, format!("{field} is immutable after creation")));
    }
}

/// The schema of a field the spec types as a free-form object: kept as written, not pruned.
pub(crate) fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers shared by the tests of every kind here: admission through the registry, the
    //! structural-schema walk, and the example manifests.

    use serde_json::Value;

    use crate::field::FieldError;
    use crate::resource::ResourceDef;

    /// The registered definition of `apiVersion`/`kind`, as the apiserver would find it.
    pub fn def(api_version: &str, kind: &str) -> ResourceDef {
        crate::registry()
            .into_iter()
            .find(|d| d.api_version() == api_version && d.kind == kind)
            .unwrap_or_else(|| panic!("{api_version} {kind} is not in the registry"))
    }

    /// Admits `obj` (creation when `old` is `None`) through its registered definition.
    pub fn admit(obj: &mut Value, old: Option<&Value>) -> Result<(), Vec<FieldError>> {
        let api_version = obj["apiVersion"].as_str().expect("apiVersion").to_string();
        let kind = obj["kind"].as_str().expect("kind").to_string();
        def(&api_version, &kind).admit(obj, old)
    }

    /// The field paths of the errors `obj` is refused with; panics if it is admitted.
    pub fn refused_fields(mut obj: Value) -> Vec<String> {
        match admit(&mut obj, None) {
            Ok(()) => panic!("admitted, but should have been refused: {obj}"),
            Err(errors) => errors.into_iter().map(|e| e.field).collect(),
        }
    }

    /// Every problem that would make a real apiserver reject `schema` as non-structural: a node
    /// without `type` (unless it preserves unknown fields or is int-or-string), `$ref`,
    /// `oneOf`/`anyOf`/`allOf` that carry types, or `additionalProperties` beside `properties`.
    pub fn structural_problems(schema: &Value, path: &str, out: &mut Vec<String>) {
        let Some(node) = schema.as_object() else {
            out.push(format!("{path}: schema is not an object"));
            return;
        };
        if node.contains_key("$ref") {
            out.push(format!("{path}: $ref"));
        }
        let free = node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
            || node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
        if !node.contains_key("type") && !free {
            out.push(format!("{path}: no type"));
        }
        for key in ["oneOf", "anyOf", "allOf", "not"] {
            if node.contains_key(key) {
                out.push(format!("{path}: {key}"));
            }
        }
        if node.contains_key("properties") && node.contains_key("additionalProperties") {
            out.push(format!("{path}: properties and additionalProperties together"));
        }
        if let Some(Value::Object(props)) = node.get("properties") {
            for (name, child) in props {
                structural_problems(child, &format!("{path}.{name}"), out);
            }
        }
        if let Some(items) = node.get("items") {
            structural_problems(items, &format!("{path}[]"), out);
        }
        if let Some(extra @ Value::Object(_)) = node.get("additionalProperties") {
            structural_problems(extra, &format!("{path}{{}}"), out);
        }
    }

    /// Asserts that the CRD of `api_version`/`kind` is structural and has its status subresource.
    pub fn assert_structural_crd(api_version: &str, kind: &str) {
        let crd = def(api_version, kind).crd().expect("a custom kind has a CRD");
        let version = &crd["spec"]["versions"][0];
        let schema = &version["schema"]["openAPIV3Schema"];
        let mut problems = Vec::new();
        structural_problems(schema, kind, &mut problems);
        assert!(problems.is_empty(), "{kind} CRD is not structural:\n{}", problems.join("\n"));
        assert_eq!(
            version["subresources"]["status"],
            serde_json::json!({}),
            "{kind} has no status subresource"
        );
        assert!(schema["properties"]["spec"]["type"] == "object", "{kind} spec is not an object");
    }

    /// Parses `examples/reference/<file>` (relative to the workspace root) into JSON objects, one per
    /// YAML document.
    pub fn example(file: &str) -> Vec<Value> {
        // The directory at run time (cargo sets it for tests): a binary cargo reuses from a clone at
        // another path, through a shared target directory, would carry that clone's path.
        let path = std::path::PathBuf::from(
            std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
        )
        .join("../../examples/reference")
        .join(file);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        docs.into_iter().filter(|d| !d.is_null()).collect()
    }

    /// Every example file, parsed and admitted through its registered definition; returns the
    /// admitted (defaulted) objects.
    pub fn admit_example(file: &str) -> Vec<Value> {
        let docs = example(file);
        assert!(!docs.is_empty(), "{file} has no objects");
        docs.into_iter()
            .map(|mut doc| {
                if let Err(errors) = admit(&mut doc, None) {
                    let msgs: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    panic!("{file} refused: {}", msgs.join("; "));
                }
                doc
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_names_follow_the_upstream_pattern() {
        for ok in ["pg", "pg-cluster-postgresql-backup-policy", "a.b-c", "0"] {
            assert!(is_reference_name(ok), "{ok}");
        }
        for bad in ["", "Pg", "-pg", "pg-", "pg_policy", "pg policy", ".pg"] {
            assert!(!is_reference_name(bad), "{bad}");
        }
    }

    #[test]
    fn every_kind_is_registered_once() {
        let kinds: Vec<String> =
            crate::registry().iter().filter(|d| d.group == GROUP).map(|d| d.kind.clone()).collect();
        assert_eq!(
            kinds,
            ["ActionSet", "Backup", "BackupPolicy", "BackupRepo", "BackupSchedule", "Restore"]
        );
    }
}
