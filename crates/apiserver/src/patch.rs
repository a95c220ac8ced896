//! PATCH semantics: RFC 7386 merge patch, RFC 6902 JSON patch, strategic merge
//! patch for the built-in kinds, and a minimal server-side apply with `managedFields`.
//!
//! Everything here is a pure function over `serde_json::Value`; the engine decides which one to run
//! from the request's `Content-Type` and maps [`PatchError`] onto a `Status`.

mod apply;
mod json;
mod managed;
mod strategic;

use serde_json::Value;

pub use apply::{apply, apply_subresource};
pub use json::json;
pub use managed::record_update;
pub use strategic::strategic;

/// The four PATCH flavours the apiserver accepts, named by their `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/strategic-merge-patch+json` (built-in kinds only).
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchKind {
    /// Maps a `Content-Type` header to a patch kind, ignoring parameters such as `; charset=utf-8`
    /// and letter case. `None` means the engine answers 415.
    pub fn from_content_type(ct: &str) -> Option<PatchKind> {
        let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/json-patch+json" => Some(Self::Json),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" => Some(Self::Apply),
            _ => None,
        }
    }

    /// The canonical `Content-Type` of this kind.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Merge => "application/merge-patch+json",
            Self::Json => "application/json-patch+json",
            Self::Strategic => "application/strategic-merge-patch+json",
            Self::Apply => "application/apply-patch+yaml",
        }
    }
}

/// One field that another manager owns with a different value (server-side apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldConflict {
    /// The manager that owns the field, e.g. `kubectl-client-side-apply`.
    pub manager: String,
    /// The apiVersion that manager used.
    pub api_version: String,
    /// The field as Kubernetes prints it: `.spec.replicas`, `.status.conditions[type="Ready"].status`.
    pub field: String,
}

impl FieldConflict {
    /// `details.causes[].message` as the apiserver writes it.
    pub fn message(&self) -> String {
        format!("conflict with \"{}\" using {}", self.manager, self.api_version)
    }
}

/// Why a patch could not be applied.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum PatchError {
    /// The patch document itself is malformed (→ 400 BadRequest).
    #[error("{0}")]
    Malformed(String),
    /// A JSON-patch operation failed against the object (→ 422).
    #[error("json patch operation {index} ({op} {path}) failed: {reason}")]
    Operation {
        /// Zero-based index of the failing operation.
        index: usize,
        /// `add`, `remove`, `replace`, `move`, `copy` or `test`.
        op: String,
        /// The operation's `path`.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A strategic merge patch does not fit the object (→ 422), e.g. a list element lacks its merge key.
    #[error("strategic merge patch failed at {path}: {reason}")]
    Strategic {
        /// Dotted path of the offending field.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Server-side apply found fields owned by other managers with different values (→ 409 Conflict,
    /// `details.causes[].reason` = `FieldManagerConflict`).
    #[error("{}", conflict_message(.0))]
    Conflict(Vec<FieldConflict>),
}

impl PatchError {
    /// The HTTP status the apiserver answers with for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Malformed(_) => 400,
            Self::Operation { .. } | Self::Strategic { .. } => 422,
            Self::Conflict(_) => 409,
        }
    }
}

fn conflict_message(conflicts: &[FieldConflict]) -> String {
    let n = conflicts.len();
    let mut m = format!("Apply failed with {n} conflict{}: ", if n == 1 { "" } else { "s" });
    let parts: Vec<String> = conflicts
        .iter()
        .map(|c| format!("conflict with \"{}\" using {}: {}", c.manager, c.api_version, c.field))
        .collect();
    m.push_str(&parts.join("\n"));
    m
}

/// RFC 7386 JSON merge patch: objects merge recursively, `null` deletes a key, anything else
/// (including arrays) replaces the target value.
pub fn merge(target: &Value, patch: &Value) -> Value {
    let mut out = target.clone();
    json_patch::merge(&mut out, patch);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn content_types_map_to_kinds_with_parameters_and_case_ignored() {
        assert_eq!(
            PatchKind::from_content_type("application/merge-patch+json"),
            Some(PatchKind::Merge)
        );
        assert_eq!(
            PatchKind::from_content_type("application/json-patch+json; charset=utf-8"),
            Some(PatchKind::Json)
        );
        assert_eq!(
            PatchKind::from_content_type("Application/Strategic-Merge-Patch+JSON;charset=UTF-8"),
            Some(PatchKind::Strategic)
        );
        assert_eq!(
            PatchKind::from_content_type("application/apply-patch+yaml"),
            Some(PatchKind::Apply)
        );
        assert_eq!(PatchKind::from_content_type("application/json"), None);
        assert_eq!(PatchKind::from_content_type(""), None);
        for k in [PatchKind::Merge, PatchKind::Json, PatchKind::Strategic, PatchKind::Apply] {
            assert_eq!(PatchKind::from_content_type(k.content_type()), Some(k));
        }
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let target = json!({"metadata":{"labels":{"a":"1","b":"2"}},"spec":{"list":[1,2],"x":1}});
        let patch = json!({"metadata":{"labels":{"a":null,"c":"3"}},"spec":{"list":[3]}});
        assert_eq!(
            merge(&target, &patch),
            json!({"metadata":{"labels":{"b":"2","c":"3"}},"spec":{"list":[3],"x":1}})
        );
        // A non-object patch replaces the whole document (RFC 7386 §2).
        assert_eq!(merge(&target, &json!([1])), json!([1]));
    }

    #[test]
    fn json_patch_finalizer_helper_sequence_works() {
        // kube-runtime finalizer(): add the first finalizer when none exist.
        let obj = json!({"metadata":{"name":"b1"}});
        let add = json!([{"op":"test","path":"/metadata/finalizers","value":null},
            {"op":"add","path":"/metadata/finalizers","value":["x"]}]);
        let with = json(&obj, &add).expect("test null on a missing path succeeds");
        assert_eq!(with["metadata"]["finalizers"], json!(["x"]));
        // ... and remove it again with test + remove on the index.
        let remove = json!([{"op":"test","path":"/metadata/finalizers/0","value":"x"},
            {"op":"remove","path":"/metadata/finalizers/0"}]);
        let without = json(&with, &remove).expect("remove");
        assert_eq!(without["metadata"]["finalizers"], json!([]));
        // The null test does fail when the path holds a value.
        let err = json(&with, &add).expect_err("finalizers exist");
        assert_eq!(
            err.to_string(),
            "json patch operation 0 (test /metadata/finalizers) failed: value did not match (expected null)"
        );
        assert_eq!(err.http_status(), 422);
    }

    #[test]
    fn json_patch_errors_name_the_failing_operation() {
        let obj = json!({"spec":{"a":1}});
        let err = json(&obj, &json!([{"op":"replace","path":"/spec/a","value":2},{"op":"remove","path":"/spec/zzz"}]))
            .expect_err("missing path");
        assert_eq!(
            err.to_string(),
            "json patch operation 1 (remove /spec/zzz) failed: path is invalid"
        );
        let err = json(&obj, &json!({"op":"add"})).expect_err("not a list");
        assert_eq!(err.http_status(), 400);
        let err = json(&obj, &json!([{"op":"frobnicate","path":"/a"}])).expect_err("bad op");
        assert!(err.to_string().starts_with("json patch operation 0 is invalid"), "{err}");
        // Successful ops see each other's effects, and the input is untouched.
        let out = json(&obj, &json!([{"op":"add","path":"/spec/b","value":2},{"op":"copy","from":"/spec/b","path":"/spec/c"}]))
            .expect("patch");
        assert_eq!(out, json!({"spec":{"a":1,"b":2,"c":2}}));
        assert_eq!(obj, json!({"spec":{"a":1}}));
    }
}
