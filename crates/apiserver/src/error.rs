//! API errors as Kubernetes `Status` objects.
//!
//! Every failure the server reports is one [`ApiError`]; it renders as the `Status` JSON kubectl,
//! kube-rs and the Python client parse (`kind`, `apiVersion`, `metadata`, `status: Failure`,
//! `message`, `reason`, `details`, `code`), with the codes, reasons and messages of the real API
//! server, so clients print and branch on them exactly as they would for a cluster.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use holdfast_api::{FieldError, ResourceDef};
use serde_json::{Value, json};

/// The message of a request for a path nothing serves (the apiserver's wording).
pub const PATH_NOT_FOUND: &str = "the server could not find the requested resource";

/// The message of a strategic merge patch sent to a custom kind.
pub const SMP_UNSUPPORTED: &str = "the body of the request was in an unknown format - accepted media types include: \
     application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml";

/// One failed request, rendered as a `Status`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason} ({code}): {message}")]
pub struct ApiError {
    /// HTTP status code, also `Status.code`.
    pub code: u16,
    /// `Status.reason`, e.g. `NotFound`.
    pub reason: String,
    /// `Status.message`, the line kubectl prints after `Error from server (<reason>):`.
    pub message: String,
    /// `Status.details` (`name`, `group`, `kind`, `causes`), when there is an object to name.
    pub details: Option<Box<Value>>,
}

impl ApiError {
    /// An error with no details.
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self { code, reason: reason.to_string(), message: message.into(), details: None }
    }

    fn with_details(mut self, def: &ResourceDef, name: &str) -> Self {
        self.details =
            Some(Box::new(json!({"name": name, "group": def.group, "kind": def.plural})));
        self
    }

    /// 400 BadRequest: a malformed body, a bad selector, a strict-validation failure.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 404 for a path nothing serves.
    pub fn path_not_found() -> Self {
        Self::new(404, "NotFound", PATH_NOT_FOUND)
    }

    /// 404 for a missing object: `backups.velero.io "b9" not found`.
    pub fn not_found(def: &ResourceDef, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", def.qualified_plural()))
            .with_details(def, name)
    }

    /// 404 for a missing namespace: `namespaces "x" not found`.
    pub fn namespace_not_found(ns: &str) -> Self {
        let mut e = Self::new(404, "NotFound", format!("namespaces \"{ns}\" not found"));
        e.details = Some(Box::new(json!({"name": ns, "kind": "namespaces"})));
        e
    }

    /// 405 for a verb the path does not serve.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 409 AlreadyExists: `backups.velero.io "b1" already exists`.
    pub fn already_exists(def: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", def.qualified_plural()),
        )
        .with_details(def, name)
    }

    /// 409 Conflict on a stale resourceVersion (or a failed precondition).
    pub fn conflict(def: &ResourceDef, name: &str) -> Self {
        Self::conflict_because(
            def,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 Conflict with a specific cause: `Operation cannot be fulfilled on <plural> "<name>": <why>`.
    pub fn conflict_because(def: &ResourceDef, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                def.qualified_plural()
            ),
        )
        .with_details(def, name)
    }

    /// 403 Forbidden, e.g. creating in a namespace that is being deleted.
    pub fn forbidden(def: &ResourceDef, name: &str, why: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!("{} \"{name}\" is forbidden: {why}", def.qualified_plural()),
        )
        .with_details(def, name)
    }

    /// 410 Expired: a compacted resourceVersion or continue token.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 413 for a body over the size limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// What the apiserver answers when etcd refuses a write over its request limit: the etcd
    /// client's error passed through as a 500 with no reason (upstream maps no status to it).
    pub fn request_too_large_for_storage() -> Self {
        Self::new(500, "", "etcdserver: request is too large")
    }

    /// 415 for a patch type the kind does not accept.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// 422 Invalid with one cause per field error:
    /// `VolumeSnapshot.snapshot.storage.k8s.io "s1" is invalid: spec.source: Required value: …`.
    pub fn invalid(def: &ResourceDef, name: &str, errors: &[FieldError]) -> Self {
        let summary = errors.iter().map(ToString::to_string).collect::<Vec<_>>();
        let summary =
            if summary.len() == 1 { summary.concat() } else { format!("[{}]", summary.join(", ")) };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.kind.reason(), "message": e.message(), "field": e.field}))
            .collect();
        Self {
            code: 422,
            reason: "Invalid".into(),
            message: format!("{} \"{name}\" is invalid: {summary}", def.qualified_kind()),
            details: Some(Box::new(
                json!({"name": name, "group": def.group, "kind": def.kind, "causes": causes}),
            )),
        }
    }

    /// 422 for list/watch options that contradict each other, as the apiserver reports them
    /// (`ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: …`).
    pub fn invalid_list_options(errors: &[FieldError]) -> Self {
        let summary = errors.iter().map(ToString::to_string).collect::<Vec<_>>();
        let summary =
            if summary.len() == 1 { summary.concat() } else { format!("[{}]", summary.join(", ")) };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.kind.reason(), "message": e.message(), "field": e.field}))
            .collect();
        Self {
            code: 422,
            reason: "Invalid".into(),
            message: format!("ListOptions.meta.k8s.io \"\" is invalid: {summary}"),
            details: Some(Box::new(
                json!({"group": "meta.k8s.io", "kind": "ListOptions", "causes": causes}),
            )),
        }
    }

    /// 504 Timeout for a read at a revision the store has not reached; the apiserver answers
    /// the same after waiting for its cache (`storage.NewTooLargeResourceVersionError`).
    pub fn too_large_resource_version(requested: u64, current: u64) -> Self {
        Self {
            code: 504,
            reason: "Timeout".into(),
            message: format!(
                "Timeout: Too large resource version: {requested}, current: {current}"
            ),
            details: Some(Box::new(json!({
                "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                "retryAfterSeconds": 1,
            }))),
        }
    }

    /// 500 for a failure of the server itself (storage I/O); the message says what failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// 503 while the store is shutting down.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if self.reason.is_empty() {
            // `reason` is omitempty upstream; kubectl then prints `Error from server: <message>`.
            if let Some(o) = s.as_object_mut() {
                o.remove("reason");
            }
        }
        if let Some(d) = &self.details {
            s["details"] = (**d).clone();
        }
        s
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = self.status().to_string();
        let mut resp = (code, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_api::snapshot::VolumeSnapshot;

    #[test]
    fn invalid_names_kind_and_fields() {
        let def = ResourceDef::custom::<VolumeSnapshot>();
        let e =
            ApiError::invalid(&def, "s1", &[FieldError::required("spec.source", "must be set")]);
        assert_eq!(
            e.message,
            "VolumeSnapshot.snapshot.storage.k8s.io \"s1\" is invalid: spec.source: Required value: must be set"
        );
        let s = e.status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["details"]["causes"][0]["field"], "spec.source");
        assert_eq!(s["details"]["causes"][0]["reason"], "FieldValueRequired");
    }

    #[test]
    fn not_found_and_conflict_use_the_plural() {
        let def = ResourceDef::custom::<VolumeSnapshot>();
        assert_eq!(
            ApiError::not_found(&def, "b9").message,
            "volumesnapshots.snapshot.storage.k8s.io \"b9\" not found"
        );
        assert!(ApiError::conflict(&def, "b1").message.starts_with(
            "Operation cannot be fulfilled on volumesnapshots.snapshot.storage.k8s.io \"b1\": the object has been modified"
        ));
    }
}
