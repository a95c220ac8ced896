//! `GET /api/v1/namespaces/{ns}/pods/{name}/log`: the output of a Pod's container, so
//! `kubectl logs` works for the Pods the embedded job runner creates.
//!
//! The runner writes each container's output to `<log dir>/<namespace>/<pod>/<container>.log`;
//! this serves that file as `text/plain`. `follow=true` returns what is there now (the stream
//! ends instead of waiting for more), `previous` and `timestamps` are ignored.

use std::path::{Path, PathBuf};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::request::Params;
use super::{ApiServer, store_error};
use crate::error::ApiError;
use crate::store::Key;

/// Whether `s` can be one path component under the log directory: a Kubernetes name (DNS
/// label or subdomain characters), so no `/`, `..` or empty name reaches the file system.
fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// The containers of a Pod, regular ones first (init containers also have logs).
fn containers(pod: &Value) -> Vec<String> {
    ["/spec/containers", "/spec/initContainers", "/spec/ephemeralContainers"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// The container a request without `container` means: the one named by the
/// `kubectl.kubernetes.io/default-container` annotation, else the first.
fn default_container(pod: &Value) -> Option<String> {
    pod.pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| containers(pod).into_iter().next())
}

/// The last `n` lines of `text` (a trailing newline does not start another line).
fn tail(text: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &[];
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    match body.iter().enumerate().rev().filter(|(_, b)| **b == b'\n').nth(n - 1) {
        Some((i, _)) => &text[i + 1..],
        None => text,
    }
}

/// Serves the log of container `params.container` of Pod `ns/name`.
///
/// # Errors
/// 404 when the Pod or its log file does not exist (or no log directory is configured), 400
/// for a container the Pod does not have.
pub(crate) async fn serve(
    server: &ApiServer,
    log_dir: Option<PathBuf>,
    ns: &str,
    name: &str,
    params: &Params,
) -> Result<Response, ApiError> {
    let pod_not_found =
        || ApiError::new(404, "NotFound", format!("pods \"{name}\" not found")).with_pod(name);
    let key = Key::new("/pods", ns, name);
    let pod = server.store().get(&key).map_err(store_error)?.ok_or_else(pod_not_found)?.object;
    let container = match params.container.clone().or_else(|| default_container(&pod)) {
        Some(c) => c,
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}"
            )));
        }
    };
    if !containers(&pod).contains(&container) {
        return Err(ApiError::bad_request(format!(
            "container {container} is not valid for pod {name}"
        )));
    }
    let no_log = || {
        ApiError::new(
            404,
            "NotFound",
            format!("no log for container \"{container}\" in pod \"{name}\" (namespace {ns})"),
        )
        .with_pod(name)
    };
    let Some(dir) = log_dir else { return Err(no_log()) };
    if ![ns, name, container.as_str()].iter().all(|s| is_safe_name(s)) {
        return Err(no_log());
    }
    let path = log_path(&dir, ns, name, &container);
    let text = match tokio::fs::read(&path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(no_log()),
        Err(e) => {
            return Err(ApiError::internal(format!("reading {}: {e}", path.display())));
        }
    };
    let mut out: &[u8] = &text;
    if let Some(n) = params.tail_lines {
        out = tail(out, usize::try_from(n).unwrap_or(usize::MAX));
    }
    if let Some(limit) = params.limit_bytes {
        out = &out[..out.len().min(usize::try_from(limit).unwrap_or(usize::MAX))];
    }
    let mut resp = (StatusCode::OK, out.to_vec()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}

/// Where the log of `container` of Pod `ns/pod` is kept under `dir`.
pub(crate) fn log_path(dir: &Path, ns: &str, pod: &str, container: &str) -> PathBuf {
    dir.join(ns).join(pod).join(format!("{container}.log"))
}

trait WithPod {
    fn with_pod(self, name: &str) -> Self;
}

impl WithPod for ApiError {
    fn with_pod(mut self, name: &str) -> Self {
        self.details = Some(Box::new(serde_json::json!({"name": name, "kind": "pods"})));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tail_counts_lines_from_the_end() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(tail(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail(b"a\nb\n", 0), b"");
    }

    #[test]
    fn containers_defaults_and_names() {
        let pod = json!({"spec": {"containers": [{"name": "main"}, {"name": "side"}],
                                   "initContainers": [{"name": "init"}]}});
        assert_eq!(containers(&pod), ["main", "side", "init"]);
        assert_eq!(default_container(&pod).as_deref(), Some("main"));
        let annotated = json!({"metadata": {"annotations": {"kubectl.kubernetes.io/default-container": "side"}},
                               "spec": {"containers": [{"name": "main"}, {"name": "side"}]}});
        assert_eq!(default_container(&annotated).as_deref(), Some("side"));
        assert!(is_safe_name("job-1.x"));
        for bad in ["", "..", "a/b", ".hidden", "A"] {
            assert!(!is_safe_name(bad), "{bad}");
        }
    }
}
