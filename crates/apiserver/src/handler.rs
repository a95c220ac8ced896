//! The HTTP face of the API server: routing, discovery and the plain endpoints, and dispatch of
//! every resource request to the object semantics in the submodules.
//!
//! Routing parses the path by hand rather than through axum routes: the Kubernetes path grammar
//! (`/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}/status`) is driven by the registry,
//! and every miss must still answer a `Status` (404 or 405) instead of an empty body.

mod delete;
mod dependents;
mod events;
mod job;
mod list;
mod pod_log;
mod request;
mod write;

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use holdfast_api::ResourceDef;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::store::{Key, Store, StoreError};
use crate::{discovery, openapi};

pub(crate) use events::from_storage;
pub(crate) use list::{Filter, ensure_type_meta};
pub(crate) use request::Params;
pub(crate) use write::now_seconds;

/// Largest request body accepted (the apiserver's limit is 3 MiB too).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Namespaces that exist from the start, as in every cluster.
const INITIAL_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];

/// The embedded Kubernetes API server: the registry of kinds it serves over one store.
#[derive(Clone)]
pub struct ApiServer {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    defs: Vec<ResourceDef>,
    /// Set once the initial namespaces exist; every request awaits it first.
    bootstrapped: tokio::sync::OnceCell<()>,
    /// Where Pod container logs are read from (`<dir>/<ns>/<pod>/<container>.log`).
    pod_log_dir: RwLock<Option<PathBuf>>,
    /// The requests the router answered, and the stored objects, for `/metrics`.
    metrics: crate::metrics::RequestMetrics,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer").field("kinds", &self.inner.defs.len()).finish_non_exhaustive()
    }
}

/// Where a resource request points.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Index into the registry.
    pub def: usize,
    /// The namespace from the URL; `None` for cluster-scoped kinds and cross-namespace lists.
    pub namespace: Option<String>,
    /// The object name, for item requests.
    pub name: Option<String>,
    /// Whether the request is for the `/status` subresource.
    pub status: bool,
}

enum Route {
    CoreVersions,
    Groups,
    Group(String),
    Resources(String, String),
    OpenApiIndex,
    OpenApiGroupVersion(String, String),
    OpenApiV2,
    Version,
    Health,
    Resource(Target),
    PodLog(String, String),
}

impl ApiServer {
    /// Serves `defs` over `store`. The initial namespaces (`default`, `kube-system`,
    /// `kube-public`) and the shipped RBAC roles and bindings exist when this returns; namespaces left terminating by an earlier run get
    /// their deletion finished (when called inside a tokio runtime).
    pub fn new(store: Store, defs: Vec<ResourceDef>) -> ApiServer {
        let server = ApiServer {
            inner: Arc::new(Inner {
                store,
                defs,
                bootstrapped: tokio::sync::OnceCell::new(),
                pod_log_dir: RwLock::new(None),
                metrics: crate::metrics::RequestMetrics::new(),
            }),
        };
        // The store's writer is its own thread, so waiting for these writes here needs no
        // runtime and cannot deadlock one; a failure is retried before the first request.
        if let Err(e) = futures::executor::block_on(server.bootstrap()) {
            tracing::warn!("creating the initial namespaces failed: {e}");
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            server.resume_namespace_deletions();
            crate::rbac::spawn_aggregation(server.store().clone());
        }
        server
    }

    /// Serves `GET /api/v1/namespaces/{ns}/pods/{pod}/log?container=C` from the file
    /// `<dir>/<ns>/<pod>/<C>.log` (what `kubectl logs` reads). Applies to every clone of this
    /// server. Without it, log requests answer 404.
    #[must_use]
    pub fn with_pod_log_dir(self, dir: PathBuf) -> ApiServer {
        *self.inner.pod_log_dir.write().unwrap_or_else(PoisonError::into_inner) = Some(dir);
        self
    }

    /// The file the log of `container` of Pod `namespace/pod` is served from, if a log
    /// directory is configured.
    pub fn pod_log_path(&self, namespace: &str, pod: &str, container: &str) -> Option<PathBuf> {
        self.pod_log_dir().map(|dir| pod_log::log_path(&dir, namespace, pod, container))
    }

    fn pod_log_dir(&self) -> Option<PathBuf> {
        self.inner.pod_log_dir.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The store objects are kept in.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The kinds served.
    pub fn defs(&self) -> &[ResourceDef] {
        &self.inner.defs
    }

    /// Every API route, without authentication (the serving layer adds it), each request
    /// counted in [`ApiServer::request_metrics`]. The router also works in-process:
    /// `kube::Client::new(server.router(), "default")`.
    pub fn router(&self) -> Router {
        Router::new().fallback(dispatch).with_state(self.clone()).layer(
            axum::middleware::from_fn_with_state(
                self.inner.metrics.clone(),
                crate::metrics::instrument,
            ),
        )
    }

    /// The request and storage metrics of this server (and every clone of it).
    pub fn request_metrics(&self) -> &crate::metrics::RequestMetrics {
        &self.inner.metrics
    }

    /// Creates the namespace `name` unless it exists.
    ///
    /// # Errors
    /// The store failed.
    pub async fn ensure_namespace(&self, name: &str) -> Result<(), ApiError> {
        let key = namespace_key(name);
        if self.store().get(&key).map_err(store_error)?.is_some() {
            return Ok(());
        }
        let ns = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {
                "name": name,
                "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": write::now_seconds(),
                "labels": {"kubernetes.io/metadata.name": name},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        match self.store().create(key, ns).await {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(store_error(e)),
        }
    }

    /// Compacts the store's event log every 5 minutes, keeping at least the newest 1000
    /// revisions and everything younger than 5 minutes (what kine and the apiserver keep).
    pub fn spawn_compactor(&self) -> tokio::task::JoinHandle<()> {
        let store = self.store().clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(300));
            tick.tick().await;
            loop {
                tick.tick().await;
                let s = store.clone();
                let done = tokio::task::spawn_blocking(move || {
                    s.compact(1000, std::time::Duration::from_secs(300))
                })
                .await;
                match done {
                    Ok(Ok(rev)) => tracing::debug!("store compacted to revision {rev}"),
                    Ok(Err(e)) => tracing::warn!("store compaction failed: {e}"),
                    Err(e) => tracing::warn!("store compaction task failed: {e}"),
                }
            }
        })
    }

    async fn bootstrap(&self) -> Result<(), ApiError> {
        self.inner
            .bootstrapped
            .get_or_try_init(|| async {
                for ns in INITIAL_NAMESPACES {
                    self.ensure_namespace(ns).await?;
                }
                crate::rbac::reconcile_defaults(self).await
            })
            .await
            .map(|_| ())
    }

    pub(crate) fn def(&self, i: usize) -> &ResourceDef {
        &self.inner.defs[i]
    }

    fn find(&self, group: &str, version: &str, plural: &str) -> Option<usize> {
        self.inner
            .defs
            .iter()
            .position(|d| d.group == group && d.version == version && d.plural == plural)
    }

    fn route(&self, path: &str) -> Option<Route> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
        let has_gv =
            |g: &str, v: &str| self.inner.defs.iter().any(|d| d.group == g && d.version == v);
        match segs.as_slice() {
            ["version"] => Some(Route::Version),
            ["healthz" | "livez" | "readyz", ..] => Some(Route::Health),
            ["openapi", "v2"] => Some(Route::OpenApiV2),
            ["openapi", "v3"] => Some(Route::OpenApiIndex),
            ["openapi", "v3", "api", v] => {
                Some(Route::OpenApiGroupVersion(String::new(), (*v).into()))
            }
            ["openapi", "v3", "apis", g, v] => {
                Some(Route::OpenApiGroupVersion((*g).into(), (*v).into()))
            }
            ["api"] => Some(Route::CoreVersions),
            ["api", "v1", "namespaces", ns, "pods", name, "log"] if has_gv("", "v1") => {
                Some(Route::PodLog((*ns).into(), (*name).into()))
            }
            ["api", v] if has_gv("", v) => Some(Route::Resources(String::new(), (*v).into())),
            ["api", v, rest @ ..] if has_gv("", v) => {
                self.resource_route("", v, rest).map(Route::Resource)
            }
            ["apis"] => Some(Route::Groups),
            ["apis", g]
                if self.inner.defs.iter().any(|d| d.group == *g)
                    || discovery::serves_review_group(g, None) =>
            {
                Some(Route::Group((*g).into()))
            }
            ["apis", g, v] if has_gv(g, v) || discovery::serves_review_group(g, Some(v)) => {
                Some(Route::Resources((*g).into(), (*v).into()))
            }
            ["apis", g, v, rest @ ..] if has_gv(g, v) => {
                self.resource_route(g, v, rest).map(Route::Resource)
            }
            _ => None,
        }
    }

    fn resource_route(&self, group: &str, version: &str, rest: &[&str]) -> Option<Target> {
        let target =
            |def: usize, namespace: Option<&str>, name: Option<&str>, status: bool| Target {
                def,
                namespace: namespace.map(str::to_string),
                name: name.map(str::to_string),
                status,
            };
        let namespaced =
            |plural: &str| self.find(group, version, plural).filter(|&i| self.def(i).namespaced);
        let cluster =
            |plural: &str| self.find(group, version, plural).filter(|&i| !self.def(i).namespaced);
        let with_status = |t: Target| (self.def(t.def).status_subresource).then_some(t);
        match rest {
            // `namespaces/{ns}/status` is the Namespace's own subresource, not a kind called "status".
            ["namespaces", name, "status"] if namespaced("status").is_none() => {
                cluster("namespaces")
                    .map(|i| target(i, None, Some(name), true))
                    .and_then(with_status)
            }
            ["namespaces", ns, plural] if namespaced(plural).is_some() => {
                namespaced(plural).map(|i| target(i, Some(ns), None, false))
            }
            ["namespaces", ns, plural, name] => {
                namespaced(plural).map(|i| target(i, Some(ns), Some(name), false))
            }
            ["namespaces", ns, plural, name, "status"] => namespaced(plural)
                .map(|i| target(i, Some(ns), Some(name), true))
                .and_then(with_status),
            [plural] => self.find(group, version, plural).map(|i| target(i, None, None, false)),
            [plural, name] => cluster(plural).map(|i| target(i, None, Some(name), false)),
            [plural, name, "status"] => {
                cluster(plural).map(|i| target(i, None, Some(name), true)).and_then(with_status)
            }
            _ => None,
        }
    }

    fn resume_namespace_deletions(&self) {
        let Ok((items, _, _)) = self.store().list("/namespaces", None, None, None) else { return };
        for ns in items {
            if ns.object.pointer("/metadata/deletionTimestamp").is_some() {
                delete::spawn_namespace_finalizer(self.clone(), ns.key.name.clone());
            }
        }
    }
}

/// The store key of the namespace `name`.
pub(crate) fn namespace_key(name: &str) -> Key {
    Key { resource: "/namespaces".into(), namespace: String::new(), name: name.into() }
}

/// The store resource a kind is kept under: `<group>/<plural>`. events.k8s.io Events share the
/// core Events' rows (one event, two views).
pub(crate) fn storage_resource(def: &ResourceDef) -> String {
    if events::is_event_v1(def) {
        "/events".into()
    } else {
        format!("{}/{}", def.group, def.plural)
    }
}

/// Maps a store failure to the `Status` a client sees; callers handle the expected cases
/// (not found, already exists, conflict) themselves where they know the object's name.
pub(crate) fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Compacted { requested, compacted } => {
            ApiError::expired(format!("too old resource version: {requested} ({compacted})"))
        }
        StoreError::FutureRevision { requested, current } => {
            ApiError::too_large_resource_version(requested, current)
        }
        StoreError::Closed => ApiError::unavailable("the store is shutting down"),
        other => ApiError::internal(format!("storage error: {other}")),
    }
}

/// A JSON response.
pub(crate) fn json_response(code: StatusCode, body: &Value) -> Response {
    json_response_typed(code, body, "application/json")
}

fn json_response_typed(code: StatusCode, body: &Value, content_type: &'static str) -> Response {
    let mut resp = (code, body.to_string()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

async fn dispatch(State(server): State<ApiServer>, req: Request) -> Response {
    match handle(server, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(server: ApiServer, req: Request) -> Result<Response, ApiError> {
    let route = server.route(req.uri().path()).ok_or_else(ApiError::path_not_found)?;
    let method = req.method().clone();
    let accept =
        req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let get_only = |m: &Method| {
        if m == Method::GET || m == Method::HEAD {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed())
        }
    };
    let defs = server.defs();
    match route {
        Route::Version => {
            get_only(&method)?;
            Ok(json_response(StatusCode::OK, &version_info()))
        }
        Route::Health => {
            get_only(&method)?;
            Ok((StatusCode::OK, "ok").into_response())
        }
        Route::OpenApiV2 => Err(ApiError::path_not_found()),
        Route::OpenApiIndex => {
            get_only(&method)?;
            Ok(json_response(StatusCode::OK, &openapi::v3_index(defs)))
        }
        Route::OpenApiGroupVersion(g, v) => {
            get_only(&method)?;
            let doc =
                openapi::v3_group_version(defs, &g, &v).ok_or_else(ApiError::path_not_found)?;
            Ok(json_response(StatusCode::OK, &doc))
        }
        Route::CoreVersions | Route::Groups => {
            get_only(&method)?;
            let core = matches!(route, Route::CoreVersions);
            if discovery::wants_aggregated(&accept) {
                let body = discovery::aggregated(defs, core);
                Ok(json_response_typed(StatusCode::OK, &body, discovery::AGGREGATED_CONTENT_TYPE))
            } else if core {
                Ok(json_response(StatusCode::OK, &discovery::api_versions()))
            } else {
                Ok(json_response(StatusCode::OK, &discovery::api_group_list(defs)))
            }
        }
        Route::Group(g) => {
            get_only(&method)?;
            let list = discovery::api_group_list(defs);
            let group = list["groups"]
                .as_array()
                .and_then(|gs| gs.iter().find(|x| x["name"] == g.as_str()))
                .cloned()
                .ok_or_else(ApiError::path_not_found)?;
            let mut group = group;
            if let Some(o) = group.as_object_mut() {
                o.insert("kind".into(), "APIGroup".into());
                o.insert("apiVersion".into(), "v1".into());
            }
            Ok(json_response(StatusCode::OK, &group))
        }
        Route::Resources(g, v) => {
            get_only(&method)?;
            let list =
                discovery::api_resource_list(defs, &g, &v).ok_or_else(ApiError::path_not_found)?;
            Ok(json_response(StatusCode::OK, &list))
        }
        Route::PodLog(ns, name) => {
            get_only(&method)?;
            server.bootstrap().await?;
            let params = Params::parse(req.uri())?;
            pod_log::serve(&server, server.pod_log_dir(), &ns, &name, &params).await
        }
        Route::Resource(target) => {
            server.bootstrap().await?;
            resource(server, target, req, accept).await
        }
    }
}

async fn resource(
    server: ApiServer,
    t: Target,
    req: Request,
    accept: String,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let params = Params::parse(&parts.uri)?;
    let user = parts
        .extensions
        .get::<crate::auth::User>()
        .map(|u| u.name.clone())
        .unwrap_or_else(|| "system:admin".to_string());
    let method = parts.method;
    let headers: HeaderMap = parts.headers;
    let def = server.def(t.def).clone();
    let item = t.name.is_some();
    // Only methods that carry a body read it, so a GET with a stray body still works.
    let body = if matches!(method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
        request::read_body(body, MAX_BODY_BYTES).await?
    } else {
        bytes::Bytes::new()
    };
    let rq = write::Req {
        server: server.clone(),
        target: t.clone(),
        def,
        params,
        headers,
        user,
        accept,
        body,
    };
    match (method, item, t.status) {
        (Method::GET, false, false) => {
            if rq.params.watch {
                crate::watch::serve(
                    &rq.server,
                    &rq.def,
                    rq.target.namespace.clone(),
                    &rq.params,
                    &rq.accept,
                )
                .await
            } else {
                list::list(&rq).await
            }
        }
        (Method::POST, false, false) => {
            if rq.def.namespaced && rq.target.namespace.is_none() {
                return Err(ApiError::method_not_allowed());
            }
            write::create(&rq).await
        }
        (Method::DELETE, false, false) => delete::delete_collection(&rq).await,
        (Method::GET, true, _) => write::get(&rq).await,
        (Method::PUT, true, _) => write::replace(&rq).await,
        (Method::PATCH, true, _) => write::patch(&rq).await,
        (Method::DELETE, true, false) => delete::delete(&rq).await,
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// `/version`: kubectl, kube-rs and the Python client read the major/minor to pick behaviour.
fn version_info() -> Value {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": format!("v1.32.0-holdfast+{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{arch}", std::env::consts::OS),
    })
}

/// Builds a response with the given body and a `Warning` header per warning.
pub(crate) fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}
