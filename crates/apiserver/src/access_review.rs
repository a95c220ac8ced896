//! What kubectl asks about the caller: SelfSubjectAccessReview (`kubectl auth can-i VERB
//! RESOURCE`), SelfSubjectRulesReview (`kubectl auth can-i --list`) and SelfSubjectReview
//! (`kubectl auth whoami`). They are create-only and never stored: the answer is computed from
//! the authenticated user and the RBAC objects, as the apiserver does.

use serde_json::{Value, json};

use crate::auth::{RequestInfo, User};
use crate::error::ApiError;
use crate::protobuf::fields::Message;
use crate::rbac::Authorizer;

/// Which review a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Review {
    Access,
    Rules,
    Subject,
}

impl Review {
    /// The review served at `path`, if any.
    pub fn from_path(path: &str) -> Option<Review> {
        match path.trim_end_matches('/') {
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" => Some(Review::Access),
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews" => Some(Review::Rules),
            "/apis/authentication.k8s.io/v1/selfsubjectreviews" => Some(Review::Subject),
            _ => None,
        }
    }
}

fn decode(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

/// The `spec` of a protobuf-encoded review, in its JSON shape.
fn protobuf_spec(review: Review, body: &[u8]) -> Result<Value, ApiError> {
    let object = Message::from_envelope(body)
        .filter(Message::is_valid)
        .ok_or_else(|| ApiError::bad_request("the request body is not a valid protobuf object"))?;
    let Some(spec) = object.message(2) else { return Ok(json!({})) };
    Ok(match review {
        Review::Access => {
            let mut out = serde_json::Map::new();
            if let Some(r) = spec.message(1) {
                out.insert(
                    "resourceAttributes".into(),
                    json!({"namespace": r.string(1), "verb": r.string(2), "group": r.string(3),
                        "version": r.string(4), "resource": r.string(5),
                        "subresource": r.string(6), "name": r.string(7)}),
                );
            }
            if let Some(n) = spec.message(2) {
                out.insert(
                    "nonResourceAttributes".into(),
                    json!({"path": n.string(1), "verb": n.string(2)}),
                );
            }
            Value::Object(out)
        }
        Review::Rules => json!({"namespace": spec.string(1)}),
        Review::Subject => json!({}),
    })
}

fn invalid(kind: &str, group: &str, field: &str, detail: &str) -> ApiError {
    let mut e = ApiError::new(
        422,
        "Invalid",
        format!("{kind}.{group} \"\" is invalid: {field}: Invalid value: \"null\": {detail}"),
    );
    e.details = Some(Box::new(json!({"group": group, "kind": kind, "causes": [
        {"reason": "FieldValueInvalid", "message": format!("Invalid value: \"null\": {detail}"),
         "field": field}]})));
    e
}

fn text(v: &Value, field: &str) -> String {
    v.get(field).and_then(Value::as_str).unwrap_or_default().to_string()
}

/// What a SelfSubjectAccessReview spec asks about, as the request it describes.
fn attributes(spec: &Value) -> Result<RequestInfo, ApiError> {
    let resource = spec.get("resourceAttributes").filter(|v| v.is_object());
    let non_resource = spec.get("nonResourceAttributes").filter(|v| v.is_object());
    match (resource, non_resource) {
        (Some(r), None) => Ok(RequestInfo {
            verb: text(r, "verb"),
            resource_request: true,
            group: text(r, "group"),
            resource: text(r, "resource"),
            subresource: text(r, "subresource"),
            namespace: text(r, "namespace"),
            name: text(r, "name"),
            path: String::new(),
        }),
        (None, Some(n)) => Ok(RequestInfo::non_resource(&text(n, "verb"), &text(n, "path"))),
        _ => Err(invalid(
            "SelfSubjectAccessReview",
            "authorization.k8s.io",
            "spec.resourceAttributes",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
    }
}

/// Answers a review for `user` (the body of a 201 Created).
///
/// # Errors
/// A body that does not decode (400), a spec that asks nothing (422), or the store failed.
pub fn answer(
    review: Review,
    authorizer: &Authorizer,
    user: &User,
    body: &[u8],
    protobuf: bool,
) -> Result<Value, ApiError> {
    let spec = if protobuf {
        protobuf_spec(review, body)?
    } else {
        decode(body)?.get("spec").cloned().unwrap_or_else(|| json!({}))
    };
    let created = json!({"creationTimestamp": null});
    match review {
        Review::Access => {
            let decision = authorizer.authorize(user, &attributes(&spec)?);
            let mut status = json!({"allowed": decision.allowed});
            if !decision.reason.is_empty() {
                status["reason"] = decision.reason.into();
            }
            Ok(json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                "metadata": created, "spec": spec, "status": status}))
        }
        Review::Rules => {
            let namespace = text(&spec, "namespace");
            let rules = authorizer
                .rules_for(user, &namespace)
                .map_err(|e| ApiError::internal(format!("storage error: {e}")))?;
            let mut resource_rules = Vec::new();
            let mut non_resource_rules = Vec::new();
            for r in rules {
                if let Some(urls) = r.non_resource_urls.filter(|u| !u.is_empty()) {
                    non_resource_rules.push(json!({"verbs": r.verbs, "nonResourceURLs": urls}));
                } else {
                    let mut rule = json!({"verbs": r.verbs, "apiGroups": r.api_groups,
                        "resources": r.resources});
                    if let Some(names) = r.resource_names.filter(|n| !n.is_empty()) {
                        rule["resourceNames"] = json!(names);
                    }
                    resource_rules.push(rule);
                }
            }
            Ok(json!({"kind": "SelfSubjectRulesReview", "apiVersion": "authorization.k8s.io/v1",
                "metadata": created, "spec": spec,
                "status": {"resourceRules": resource_rules, "nonResourceRules": non_resource_rules,
                    "incomplete": false}}))
        }
        Review::Subject => Ok(json!({"kind": "SelfSubjectReview",
            "apiVersion": "authentication.k8s.io/v1", "metadata": created,
            "status": {"userInfo": {"username": user.name, "uid": user.uid,
                "groups": user.groups}}})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_kubectl_auth_can_i_sends() {
        // `kubectl auth can-i get pods/log -n ns1` (v1.32): resource pods, name log.
        let body: &[u8] =
            b"k8s\x00\x0a\x32\x0a\x17authorization.k8s.io/v1\x12\x17SelfSubjectAccessReview\
            \x12\x3c\x0a\x10\x0a\x00\x12\x00\x1a\x00\x22\x00\x2a\x00\x32\x00\x38\x00\x42\x00\
            \x12\x1e\x0a\x1c\x0a\x03ns1\x12\x03get\x1a\x00\x22\x00\x2a\x04pods\x32\x01x\x3a\x03log\
            \x1a\x08\x08\x00\x12\x00\x1a\x00\x20\x00\x1a\x00\x22\x00";
        let spec = protobuf_spec(Review::Access, body).unwrap();
        let info = attributes(&spec).unwrap();
        assert_eq!(
            (info.namespace.as_str(), info.verb.as_str(), info.resource.as_str()),
            ("ns1", "get", "pods")
        );
        assert_eq!((info.subresource.as_str(), info.name.as_str()), ("x", "log"));
        // `kubectl auth can-i get /healthz`.
        let body: &[u8] =
            b"k8s\x00\x0a\x32\x0a\x17authorization.k8s.io/v1\x12\x17SelfSubjectAccessReview\
            \x12\x2f\x0a\x10\x0a\x00\x12\x00\x1a\x00\x22\x00\x2a\x00\x32\x00\x38\x00\x42\x00\
            \x12\x11\x12\x0f\x0a\x08/healthz\x12\x03get\x1a\x08\x08\x00\x12\x00\x1a\x00\x20\x00\
            \x1a\x00\x22\x00";
        let info = attributes(&protobuf_spec(Review::Access, body).unwrap()).unwrap();
        assert!(!info.resource_request);
        assert_eq!((info.path.as_str(), info.verb.as_str()), ("/healthz", "get"));
    }

    #[test]
    fn a_review_must_ask_one_thing() {
        let err = attributes(&json!({})).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(err.message.contains("exactly one of nonResourceAttributes"), "{}", err.message);
    }
}
