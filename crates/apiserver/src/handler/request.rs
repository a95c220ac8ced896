//! Request parsing: query parameters and bodies.
//!
//! Clients are loose in what they send (kube-rs builds `?&limit=500`, Python posts without a
//! Content-Type, kubectl encodes spaces as `+`), so parsing accepts all of that and answers a
//! `400 BadRequest` naming the problem for anything it cannot read.

use axum::body::Body;
use axum::extract::Query;
use axum::http::{HeaderMap, Uri, header};
use bytes::Bytes;
use holdfast_api::ResourceDef;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::Value;

use crate::error::ApiError;

/// How unknown fields are treated (`?fieldValidation=`; `Warn` when absent, as upstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum FieldValidation {
    Strict,
    #[default]
    Warn,
    Ignore,
}

/// The query parameters the server understands; others are ignored, as the apiserver does.
#[derive(Debug, Clone, Default)]
pub(crate) struct Params {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub field_validation: FieldValidation,
    pub force: bool,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub watch: bool,
    pub allow_watch_bookmarks: bool,
    pub timeout_seconds: Option<u64>,
    pub send_initial_events: bool,
    pub propagation_policy: Option<String>,
    /// Pod logs: which container, how many lines from the end, at most how many bytes.
    pub container: Option<String>,
    pub tail_lines: Option<u64>,
    pub limit_bytes: Option<u64>,
}

fn flag(v: &str) -> bool {
    matches!(v, "true" | "True" | "TRUE" | "t" | "1")
}

impl Params {
    /// Parses the query string of `uri`.
    ///
    /// # Errors
    /// 400 for a value of the wrong form (a non-numeric `limit`, an unknown `fieldValidation`).
    pub fn parse(uri: &Uri) -> Result<Params, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
        let mut p = Params::default();
        let number = |k: &str, v: &str| {
            v.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("invalid value for {k}: {v:?} is not a number"))
            })
        };
        for (k, v) in pairs {
            let non_empty = (!v.is_empty()).then(|| v.clone());
            match k.as_str() {
                "dryRun" => match v.as_str() {
                    "All" => p.dry_run = true,
                    "" => {}
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "unsupported dry run value: {other:?}"
                        )));
                    }
                },
                "fieldManager" => p.field_manager = non_empty,
                "fieldValidation" => {
                    p.field_validation = match v.as_str() {
                        "Strict" => FieldValidation::Strict,
                        "Warn" | "" => FieldValidation::Warn,
                        "Ignore" => FieldValidation::Ignore,
                        other => {
                            return Err(ApiError::bad_request(format!(
                                "invalid fieldValidation directive {other:?}: must be one of Ignore, Warn, Strict"
                            )));
                        }
                    }
                }
                "force" => p.force = flag(&v),
                "labelSelector" => p.label_selector = non_empty,
                "fieldSelector" => p.field_selector = non_empty,
                // limit=0 means "no limit", as upstream.
                "limit" if !v.is_empty() => {
                    p.limit = Some(usize::try_from(number(&k, &v)?).unwrap_or(usize::MAX))
                        .filter(|&l| l > 0);
                }
                "continue" => p.continue_token = non_empty,
                "resourceVersion" => p.resource_version = non_empty,
                "resourceVersionMatch" => p.resource_version_match = non_empty,
                "watch" => p.watch = flag(&v),
                "allowWatchBookmarks" => p.allow_watch_bookmarks = flag(&v),
                "timeoutSeconds" if !v.is_empty() => p.timeout_seconds = Some(number(&k, &v)?),
                "sendInitialEvents" => p.send_initial_events = flag(&v),
                "propagationPolicy" => p.propagation_policy = non_empty,
                "container" => p.container = non_empty,
                "tailLines" if !v.is_empty() => p.tail_lines = Some(number(&k, &v)?),
                "limitBytes" if !v.is_empty() => p.limit_bytes = Some(number(&k, &v)?),
                _ => {}
            }
        }
        Ok(p)
    }
}

/// Reads a body of at most `limit` bytes.
///
/// # Errors
/// 413 RequestEntityTooLarge over the limit; 400 when the body cannot be read.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::too_large(limit)),
        Err(e) => Err(ApiError::bad_request(format!("failed to read the request body: {e}"))),
    }
}

/// The media type of the request body without parameters, lower-cased; empty when absent.
pub(crate) fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The media types an object may be written in: JSON, YAML, and Kubernetes protobuf for the
/// built-in kinds it is decoded for (see [`crate::protobuf`]).
fn accepted_media_types(protobuf: bool) -> String {
    let mut types = vec!["application/json", "application/yaml"];
    if protobuf {
        types.push(crate::protobuf::MEDIA_TYPE);
    }
    types.join(", ")
}

/// 415 for a body in a media type (or a protobuf kind) not accepted, naming the ones that are,
/// in the apiserver's words.
pub(crate) fn unsupported_media_type(protobuf: bool) -> ApiError {
    ApiError::unsupported_media_type(format!(
        "the body of the request was in an unknown format - accepted media types include: {}",
        accepted_media_types(protobuf)
    ))
}

/// Whether `media_type` is JSON or YAML (also every `+json`/`+yaml` patch type, and a missing
/// Content-Type: Python posts without one).
fn is_text(media_type: &str) -> bool {
    media_type.is_empty()
        || media_type == "application/json"
        || media_type.ends_with("+json")
        || media_type.ends_with("yaml")
}

/// Decodes a body by its media type: JSON, YAML, or Kubernetes protobuf.
///
/// # Errors
/// 400 naming the parse error; 415 for another media type, and for a protobuf body of a kind or
/// with a field this server does not decode.
pub(crate) fn decode(body: &[u8], media_type: &str) -> Result<Value, ApiError> {
    if media_type == crate::protobuf::MEDIA_TYPE {
        return crate::protobuf::decode(body).map_err(|e| {
            if e.is_unsupported() {
                ApiError::unsupported_media_type(format!(
                    "{e}; send the object as application/json or application/yaml"
                ))
            } else {
                ApiError::bad_request(e.to_string())
            }
        });
    }
    if !is_text(media_type) {
        return Err(unsupported_media_type(true));
    }
    let yaml = media_type.ends_with("yaml");
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    if yaml {
        // JSON is valid YAML, and clients send JSON as apply-patch+yaml; the JSON parser is exact.
        if let Ok(v) = serde_json::from_slice::<Value>(body) {
            return Ok(v);
        }
        let v: Value = serde_saphyr::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid YAML: {e}"))
        })?;
        Ok(v)
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
    }
}

/// Decodes the object of a create or update of `def` objects: custom kinds are not accepted in
/// protobuf (as upstream, whose custom resource handler has no protobuf serializer).
///
/// # Errors
/// As [`decode`].
pub(crate) fn decode_object(
    body: &[u8],
    media_type: &str,
    def: &ResourceDef,
) -> Result<Value, ApiError> {
    let protobuf = def.builtin && crate::protobuf::decodes(&def.api_version(), &def.kind);
    let readable = is_text(media_type) || (protobuf && media_type == crate::protobuf::MEDIA_TYPE);
    if !readable {
        return Err(unsupported_media_type(protobuf));
    }
    decode(body, media_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_params_and_plus_spaces_parse() {
        let uri: Uri =
            "/apis/x/v1/things?&limit=500&labelSelector=a+in+(x,y)&watch=1".parse().unwrap();
        let p = Params::parse(&uri).unwrap();
        assert_eq!(p.limit, Some(500));
        assert_eq!(p.label_selector.as_deref(), Some("a in (x,y)"));
        assert!(p.watch);
        let bad: Uri = "/x?limit=ten".parse().unwrap();
        assert_eq!(Params::parse(&bad).unwrap_err().code, 400);
        let bad: Uri = "/x?fieldValidation=Loud".parse().unwrap();
        assert_eq!(Params::parse(&bad).unwrap_err().code, 400);
    }

    #[test]
    fn yaml_and_json_bodies_decode() {
        let v =
            decode(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n", "application/yaml")
                .unwrap();
        assert_eq!(v["metadata"]["name"], "a");
        let v = decode(br#"{"a":1}"#, "").unwrap();
        assert_eq!(v["a"], 1);
        let e = decode(b"{nope", "application/json").unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
    }
}
