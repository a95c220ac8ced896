//! Field errors: what is wrong with an object, and where, in the shape the Kubernetes API reports it.
//!
//! The apiserver turns a list of these into a `422 Invalid` `Status` whose `details.causes` carry
//! one entry per error, so kubectl prints `spec.source: Required value` exactly as it would for a
//! real cluster.

use std::fmt;

/// The kind of a field error, named as Kubernetes names them (`k8s.io/apimachinery/pkg/util/validation/field`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// A required field is missing or empty.
    Required,
    /// A value is malformed or out of range.
    Invalid,
    /// A value is not one of an enum's members.
    NotSupported,
    /// A value may not be set here (or may not change).
    Forbidden,
    /// A value repeats one that must be unique.
    Duplicate,
    /// A string or list is longer than allowed.
    TooLong,
}

impl FieldErrorKind {
    /// The `reason` Kubernetes puts into `details.causes[].reason`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::Duplicate => "FieldValueDuplicate",
            Self::TooLong => "FieldValueTooLong",
        }
    }

    fn phrase(self) -> &'static str {
        match self {
            Self::Required => "Required value",
            Self::Invalid => "Invalid value",
            Self::NotSupported => "Unsupported value",
            Self::Forbidden => "Forbidden",
            Self::Duplicate => "Duplicate value",
            Self::TooLong => "Too long",
        }
    }
}

/// One thing wrong with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path with list indexes, e.g. `spec.schedules[0].cronExpression`.
    pub field: String,
    /// What kind of error.
    pub kind: FieldErrorKind,
    /// The offending value rendered as JSON, when there is one worth showing.
    pub value: Option<String>,
    /// What is wrong and, where possible, what to do about it.
    pub detail: String,
}

impl FieldError {
    /// A required field is missing.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Required,
            value: None,
            detail: detail.into(),
        }
    }

    /// A value is malformed; `value` is shown as JSON.
    pub fn invalid(
        field: impl Into<String>,
        value: impl serde::Serialize,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Invalid,
            value: serde_json::to_string(&value).ok(),
            detail: detail.into(),
        }
    }

    /// A value is not one of `supported`.
    pub fn not_supported(
        field: impl Into<String>,
        value: impl serde::Serialize,
        supported: &[&str],
    ) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        Self {
            field: field.into(),
            kind: FieldErrorKind::NotSupported,
            value: serde_json::to_string(&value).ok(),
            detail: format!("supported values: {}", list.join(", ")),
        }
    }

    /// A value may not be set or changed.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Forbidden,
            value: None,
            detail: detail.into(),
        }
    }

    /// A value must be unique but is not.
    pub fn duplicate(field: impl Into<String>, value: impl serde::Serialize) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Duplicate,
            value: serde_json::to_string(&value).ok(),
            detail: String::new(),
        }
    }

    /// The message Kubernetes puts into `details.causes[].message` (without the field).
    pub fn message(&self) -> String {
        let mut m = self.kind.phrase().to_string();
        if let Some(v) = &self.value {
            m.push_str(": ");
            m.push_str(v);
        }
        if !self.detail.is_empty() {
            m.push_str(": ");
            m.push_str(&self.detail);
        }
        m
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message())
    }
}

impl std::error::Error for FieldError {}

/// Joins a parent path and a child field name: `path("spec", "source")` is `spec.source`.
pub fn path(parent: &str, child: &str) -> String {
    if parent.is_empty() { child.to_string() } else { format!("{parent}.{child}") }
}

/// A list index under a parent path: `index("spec.schedules", 0)` is `spec.schedules[0]`.
pub fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_like_kubernetes() {
        let e = FieldError::not_supported("spec.deletionPolicy", "Keep", &["Delete", "Retain"]);
        assert_eq!(
            e.to_string(),
            r#"spec.deletionPolicy: Unsupported value: "Keep": supported values: "Delete", "Retain""#
        );
        assert_eq!(e.kind.reason(), "FieldValueNotSupported");
        let e = FieldError::required(
            "spec.source",
            "exactly one of persistentVolumeClaimName or volumeSnapshotContentName",
        );
        assert_eq!(
            e.to_string(),
            "spec.source: Required value: exactly one of persistentVolumeClaimName or volumeSnapshotContentName"
        );
        assert_eq!(index(&path("spec", "schedules"), 2), "spec.schedules[2]");
    }
}
