//! The API server's own Prometheus metrics, under kube-apiserver's names so its dashboards and
//! alerts work unchanged: `apiserver_request_total`, `apiserver_request_duration_seconds` and
//! `apiserver_storage_objects` (docs/metrics.md).
//!
//! Every request the router answers is counted, the controllers' in-process ones included (on a
//! cluster they are network clients of the apiserver too). Requests refused by authentication or
//! authorization never reach the router, as upstream's handler chain counts only the requests
//! its REST handlers serve. Long-running requests (watches, logs, exec, …) are counted but not
//! timed: their duration says nothing about latency, which is why upstream leaves them out of
//! its latency SLO too.
//!
//! Exposition is Prometheus' text format 0.0.4; other parts of the process (the controllers)
//! add their families through an [`ExpositionSource`] so one `/metrics` shows everything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::header;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::auth::RequestInfo;
use crate::store::{Store, StoreError};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Another part of the process that renders its own families in the text format (the
/// controllers' registry, handed in by the binary so this crate does not depend on it).
pub type ExpositionSource = Arc<dyn Fn() -> String + Send + Sync>;

/// kube-apiserver's buckets for `apiserver_request_duration_seconds`.
const DURATION_BUCKETS: [f64; 23] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// Verbs and subresources upstream's `BasicLongRunningRequestCheck` treats as long-running.
const LONG_RUNNING_VERBS: [&str; 2] = ["watch", "proxy"];
const LONG_RUNNING_SUBRESOURCES: [&str; 5] = ["attach", "exec", "proxy", "log", "portforward"];

#[derive(thiserror::Error, Debug)]
pub enum MetricsError {
    #[error("cannot count the stored objects: {0}")]
    Store(#[from] StoreError),
    #[error("cannot encode the metrics: {0}")]
    Encode(#[from] prometheus::Error),
}

/// The request and storage metrics of one server. Cheap to clone.
#[derive(Clone)]
pub struct RequestMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    storage_objects: IntGaugeVec,
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics").finish_non_exhaustive()
    }
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics::new()
    }
}

/// The labels one request is counted under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLabels {
    /// Upstream's reported verb: GET, LIST, WATCH, POST, PUT, PATCH, APPLY, DELETE,
    /// DELETECOLLECTION; the HTTP method for non-resource paths.
    pub verb: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    /// `resource` (one named object), `namespace`, `cluster`, or empty for non-resource paths.
    pub scope: &'static str,
    /// Watches and streams: counted, not timed.
    pub long_running: bool,
}

impl RequestLabels {
    /// The labels of a request, as upstream's `CleanVerb` and `CleanScope` report them.
    pub fn of(info: &RequestInfo, content_type: Option<&str>) -> RequestLabels {
        let long_running = is_long_running(info);
        if !info.resource_request {
            return RequestLabels {
                verb: info.verb.to_ascii_uppercase(),
                group: String::new(),
                version: String::new(),
                resource: String::new(),
                subresource: String::new(),
                scope: "",
                long_running,
            };
        }
        let apply = content_type.is_some_and(|c| c.trim().starts_with("application/apply-patch"));
        let verb = match info.verb.as_str() {
            "create" => "POST",
            "update" => "PUT",
            "patch" if apply => "APPLY",
            other => {
                return RequestLabels::with_verb(info, other.to_ascii_uppercase(), long_running);
            }
        };
        RequestLabels::with_verb(info, verb.to_string(), long_running)
    }

    fn with_verb(info: &RequestInfo, verb: String, long_running: bool) -> RequestLabels {
        let scope = if !info.name.is_empty() {
            "resource"
        } else if !info.namespace.is_empty() {
            "namespace"
        } else {
            "cluster"
        };
        RequestLabels {
            verb,
            group: info.group.clone(),
            version: api_version(&info.path).to_string(),
            resource: info.resource.clone(),
            subresource: info.subresource.clone(),
            scope,
            long_running,
        }
    }
}

/// Whether `info` is a watch or a stream: its answer goes on after the head.
pub(crate) fn is_long_running(info: &RequestInfo) -> bool {
    LONG_RUNNING_VERBS.contains(&info.verb.as_str())
        || LONG_RUNNING_SUBRESOURCES.contains(&info.subresource.as_str())
}

/// The version segment of `/api/<v>/…` or `/apis/<group>/<v>/…`.
pub(crate) fn api_version(path: &str) -> &str {
    let mut parts = path.trim_start_matches('/').split('/');
    match parts.next() {
        Some("api") => parts.next().unwrap_or_default(),
        Some("apis") => parts.nth(1).unwrap_or_default(),
        _ => "",
    }
}

/// A family whose name and labels are constants of this module: building it cannot fail.
fn built<T>(family: Result<T, prometheus::Error>) -> T {
    family.unwrap_or_else(|e| unreachable!("a constant metric definition is invalid: {e}"))
}

impl RequestMetrics {
    pub fn new() -> RequestMetrics {
        let registry = Registry::new();
        let requests = built(IntCounterVec::new(
            Opts::new(
                "apiserver_request_total",
                "Counter of apiserver requests broken out for each verb, group, version, \
                 resource, subresource, scope and HTTP response code.",
            ),
            &["verb", "group", "version", "resource", "subresource", "scope", "code"],
        ));
        let duration = built(HistogramVec::new(
            HistogramOpts::new(
                "apiserver_request_duration_seconds",
                "Response latency distribution in seconds for each verb, group, version, \
                 resource, subresource and scope; long-running requests (watch, logs) are not \
                 included.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["verb", "group", "version", "resource", "subresource", "scope"],
        ));
        let storage_objects = built(IntGaugeVec::new(
            Opts::new(
                "apiserver_storage_objects",
                "Number of stored objects at the time of last check split by kind.",
            ),
            &["resource"],
        ));
        for family in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(storage_objects.clone()),
        ] {
            built(registry.register(family));
        }
        RequestMetrics { inner: Arc::new(Inner { registry, requests, duration, storage_objects }) }
    }

    /// Counts one answered request; `elapsed` is observed unless the request is long-running.
    pub fn record(&self, labels: &RequestLabels, code: u16, elapsed: Duration) {
        let l = labels;
        let code = code.to_string();
        // The duration's labels are the counter's without the code.
        let values = [
            l.verb.as_str(),
            l.group.as_str(),
            l.version.as_str(),
            l.resource.as_str(),
            l.subresource.as_str(),
            l.scope,
            code.as_str(),
        ];
        self.inner.requests.with_label_values(&values).inc();
        if !l.long_running {
            self.inner
                .duration
                .with_label_values(&values[..values.len() - 1])
                .observe(elapsed.as_secs_f64());
        }
    }

    /// Counts the objects in `store` per resource (one indexed query), then renders every family
    /// of this registry. Blocks on SQLite: call it from `spawn_blocking` in async code.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn render(&self, store: &Store) -> Result<String, MetricsError> {
        let counts = store.count_by_resource()?;
        let gauge = &self.inner.storage_objects;
        // Kinds whose last object went away disappear rather than linger at their old count.
        gauge.reset();
        for (resource, count) in counts {
            gauge
                .with_label_values(&[&storage_label(&resource)])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        prometheus::TextEncoder::new().encode_utf8(&self.inner.registry.gather(), &mut out)?;
        Ok(out)
    }
}

/// Upstream's `resource` label of `apiserver_storage_objects`: `<plural>.<group>`, or the plural
/// alone for the core group. Store keys are `<group>/<plural>`.
fn storage_label(resource: &str) -> String {
    match resource.split_once('/') {
        Some(("", plural)) => plural.to_string(),
        Some((group, plural)) => format!("{plural}.{group}"),
        None => resource.to_string(),
    }
}

/// The axum middleware counting every request the router answers. Use with
/// `axum::middleware::from_fn_with_state(metrics, instrument)`.
pub async fn instrument(
    State(metrics): State<RequestMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let info =
        RequestInfo::from_request(request.method(), request.uri().path(), request.uri().query());
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let labels = RequestLabels::of(&info, content_type);
    let started = Instant::now();
    // A watch's answer is its head: the stream that follows is not part of the request's count.
    let response = next.run(request).await;
    metrics.record(&labels, response.status().as_u16(), started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;

    fn labels(method: Method, path: &str, query: Option<&str>) -> RequestLabels {
        RequestLabels::of(&RequestInfo::from_request(&method, path, query), None)
    }

    #[test]
    fn verbs_and_scopes_are_reported_as_upstream_does() {
        let l = labels(Method::GET, "/apis/velero.io/v1/namespaces/velero/backups", None);
        assert_eq!(
            (l.verb.as_str(), l.group.as_str(), l.version.as_str(), l.resource.as_str(), l.scope),
            ("LIST", "velero.io", "v1", "backups", "namespace")
        );
        let l = labels(Method::GET, "/api/v1/pods", Some("watch=true"));
        assert_eq!((l.verb.as_str(), l.version.as_str(), l.scope), ("WATCH", "v1", "cluster"));
        assert!(l.long_running);
        let l = labels(Method::PUT, "/api/v1/namespaces/a/pods/p/status", None);
        assert_eq!(
            (l.verb.as_str(), l.subresource.as_str(), l.scope),
            ("PUT", "status", "resource")
        );
        let l = labels(Method::GET, "/api/v1/namespaces/a/pods/p/log", None);
        assert!(l.long_running, "logs stream, so they are not timed");
        let l = labels(Method::DELETE, "/api/v1/namespaces/a/configmaps", None);
        assert_eq!(l.verb, "DELETECOLLECTION");
        let l = labels(Method::POST, "/api/v1/namespaces/a/configmaps", None);
        assert_eq!(l.verb, "POST");
        let info =
            RequestInfo::from_request(&Method::PATCH, "/api/v1/namespaces/a/configmaps/c", None);
        assert_eq!(RequestLabels::of(&info, Some("application/apply-patch+yaml")).verb, "APPLY");
        assert_eq!(RequestLabels::of(&info, Some("application/merge-patch+json")).verb, "PATCH");
        let l = labels(Method::GET, "/openapi/v3", None);
        assert_eq!((l.verb.as_str(), l.resource.as_str(), l.scope), ("GET", "", ""));
    }

    #[test]
    fn watches_are_counted_but_not_timed() {
        let metrics = RequestMetrics::new();
        let store = Store::open_in_memory().unwrap();
        metrics.record(
            &labels(Method::GET, "/api/v1/pods", Some("watch=1")),
            200,
            Duration::from_secs(90),
        );
        metrics.record(&labels(Method::GET, "/api/v1/pods", None), 200, Duration::from_millis(30));
        let text = metrics.render(&store).unwrap();
        assert!(text.contains(
            r#"apiserver_request_total{code="200",group="",resource="pods",scope="cluster",subresource="",verb="WATCH",version="v1"} 1"#
        ), "{text}");
        assert!(!text.contains(r#"verb="WATCH",version="v1",le="#), "{text}");
        assert!(text.contains(
            r#"apiserver_request_duration_seconds_bucket{group="",resource="pods",scope="cluster",subresource="",verb="LIST",version="v1",le="0.05"} 1"#
        ), "{text}");
        assert!(text.contains(r#"le="+Inf"} 1"#), "{text}");
        assert!(text.contains("# TYPE apiserver_request_duration_seconds histogram"), "{text}");
    }

    #[test]
    fn storage_objects_use_upstream_resource_names() {
        assert_eq!(storage_label("/pods"), "pods");
        assert_eq!(
            storage_label("dataprotection.kubeblocks.io/backups"),
            "backups.dataprotection.kubeblocks.io"
        );
    }
}
