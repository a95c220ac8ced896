//! Bearer-token authentication, RBAC authorization and the endpoints about the caller, in front
//! of every route of the HTTPS server.
//!
//! Tokens are of two sorts. Static tokens live in `<data-dir>/tokens` in the kube-apiserver
//! static token file format (`token,user,uid,"group1,group2"`), so an operator can add one by
//! hand; the file is created with an admin token (user `admin`, group `system:masters`) and a
//! view token (user `viewer`, bound to the `view` ClusterRole) on first start. ServiceAccount
//! tokens are minted by `kubectl create token` ([`crate::service_account_token`]). Every
//! authenticated user is in `system:authenticated`.
//!
//! Every request is then authorized by [`crate::rbac`]; `system:masters` may do everything.
//!
//! Error bodies follow the apiserver byte for byte: kubectl turns a 401
//! into "You must be logged in to the server" and prints a 403's message as it is.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::ApiServer;
use crate::access_review::{self, Review};
use crate::error::ApiError;
use crate::rbac::{AUTHENTICATED, Authorizer};
use crate::service_account_token::{self, Issuer};
use crate::tls::write_private_file;

/// The authenticated user of a request, stored as a request extension by the auth layer.
/// Handlers use it for managedFields and audit; absent (in-process clients) means
/// `system:admin`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    /// Every group, `system:authenticated` included.
    pub groups: Vec<String>,
}

/// The group that grants every verb, as in Kubernetes' default RBAC.
pub const ADMIN_GROUP: &str = "system:masters";
/// The user name of the generated read-only token.
pub const VIEWER_USER: &str = "viewer";
/// The user name of the generated admin token.
pub const ADMIN_USER: &str = "admin";

/// Which of the generated tokens an entry is like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// In `system:masters`: every verb on every path.
    Admin,
    /// Anything else: what the RBAC bindings of its user and groups allow.
    View,
}

/// One line of the token file.
#[derive(Clone, Debug)]
pub struct TokenEntry {
    pub token: String,
    pub user: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl TokenEntry {
    pub fn role(&self) -> Role {
        if self.groups.iter().any(|g| g == ADMIN_GROUP) { Role::Admin } else { Role::View }
    }

    /// The user this token authenticates as.
    pub fn user(&self) -> User {
        let mut groups = self.groups.clone();
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.into());
        }
        User { name: self.user.clone(), uid: self.uid.clone(), groups }
    }
}

#[derive(thiserror::Error, Debug)]
pub enum TokenError {
    #[error("cannot read or write token file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("token file {path} line {line}: {message}")]
    Parse { path: PathBuf, line: usize, message: String },
    #[error("token file {path} has no token of user {user:?} in group {ADMIN_GROUP:?}")]
    NoAdmin { path: PathBuf, user: &'static str },
    #[error("cannot generate a random token: {0}")]
    Random(String),
}

/// The tokens the server accepts. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Tokens {
    entries: Arc<Vec<TokenEntry>>,
}

impl Tokens {
    pub fn new(entries: Vec<TokenEntry>) -> Tokens {
        Tokens { entries: Arc::new(entries) }
    }

    pub fn entries(&self) -> &[TokenEntry] {
        &self.entries
    }

    /// The first token with every right (the one written into the kubeconfig).
    pub fn admin_token(&self) -> Option<&str> {
        self.entries.iter().find(|e| e.role() == Role::Admin).map(|e| e.token.as_str())
    }

    /// The first token outside `system:masters` (the generated `viewer` one).
    pub fn view_token(&self) -> Option<&str> {
        self.entries.iter().find(|e| e.role() == Role::View).map(|e| e.token.as_str())
    }

    /// The entry whose token equals `presented`. Every entry is compared in constant time so the
    /// answer's timing does not leak how much of a token matched.
    pub fn lookup(&self, presented: &str) -> Option<&TokenEntry> {
        let mut found = None;
        for entry in self.entries.iter() {
            if constant_time_eq(entry.token.as_bytes(), presented.as_bytes()) {
                found = Some(entry);
            }
        }
        found
    }

    /// Parses a static token file (`token,user,uid,"groups"`; `#` comments and blank lines
    /// are skipped).
    pub fn parse(path: &Path, text: &str) -> Result<Tokens, TokenError> {
        let mut entries = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: &str| TokenError::Parse {
                path: path.to_path_buf(),
                line: index + 1,
                message: message.to_string(),
            };
            let fields = split_csv(line).map_err(|m| err(&m))?;
            if fields.len() < 2 {
                return Err(err("expected token,user[,uid[,\"groups\"]]"));
            }
            let token = fields[0].clone();
            if token.is_empty() {
                return Err(err("empty token"));
            }
            let user = fields[1].clone();
            if user.is_empty() {
                return Err(err("empty user name"));
            }
            let uid = fields.get(2).cloned().unwrap_or_else(|| user.clone());
            let groups = fields
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            entries.push(TokenEntry { token, user, uid, groups });
        }
        Ok(Tokens::new(entries))
    }

    /// Renders the token file.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# holdfast bearer tokens: token,user,uid,\"groups\" (kube-apiserver static token file format).\n\
             # Group system:masters may do everything; any other token what RBAC bindings of its user\n\
             # and groups allow (user viewer: ClusterRole view, through ClusterRoleBinding holdfast:viewer).\n",
        );
        for e in self.entries.iter() {
            let _ = writeln!(out, "{},{},{},\"{}\"", e.token, e.user, e.uid, e.groups.join(","));
        }
        out
    }
}

/// Reads `<dir>/tokens`, or creates it (mode 0600) with a fresh admin and view token.
pub fn load_or_create_tokens(dir: &Path) -> Result<Tokens, TokenError> {
    let path = dir.join("tokens");
    let io_err = |source| TokenError::Io { path: path.clone(), source };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let tokens = Tokens::parse(&path, &text)?;
            if tokens.admin_token().is_none() {
                return Err(TokenError::NoAdmin { path, user: ADMIN_USER });
            }
            Ok(tokens)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io_err)?;
            let tokens = Tokens::new(vec![
                TokenEntry {
                    token: random_token()?,
                    user: ADMIN_USER.into(),
                    uid: ADMIN_USER.into(),
                    groups: vec![ADMIN_GROUP.into()],
                },
                TokenEntry {
                    token: random_token()?,
                    user: VIEWER_USER.into(),
                    uid: VIEWER_USER.into(),
                    groups: vec!["system:authenticated".into()],
                },
            ]);
            write_private_file(&path, tokens.render().as_bytes()).map_err(io_err)?;
            Ok(tokens)
        }
        Err(e) => Err(io_err(e)),
    }
}

/// 32 random bytes from the operating system, hex encoded.
pub fn random_token() -> Result<String, TokenError> {
    use rand::TryRngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
    let mut out = String::with_capacity(64);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    Ok(out)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Splits one CSV line with optional double-quoted fields (`""` inside quotes is a quote).
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut in_quotes = false;
    while let Some(c) = chars.next() {
        match (c, in_quotes) {
            ('"', false) if field.is_empty() => in_quotes = true,
            ('"', true) => {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    in_quotes = false;
                }
            }
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    if in_quotes {
        return Err("unterminated quote".into());
    }
    fields.push(field);
    Ok(fields.into_iter().map(|f| f.trim().to_string()).collect())
}

/// What a request asks to do, derived from its method and path as the apiserver's
/// `RequestInfoFactory` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    pub verb: String,
    /// False for discovery, OpenAPI, /version and other non-resource paths.
    pub resource_request: bool,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    pub path: String,
}

/// Subresources of a namespace itself (`/api/v1/namespaces/{name}/status`), which must not be
/// mistaken for a resource inside the namespace.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

impl RequestInfo {
    /// A request for a path outside the resource tree (discovery, `/healthz`, …).
    pub fn non_resource(verb: &str, path: &str) -> RequestInfo {
        RequestInfo {
            verb: verb.to_string(),
            resource_request: false,
            group: String::new(),
            resource: String::new(),
            subresource: String::new(),
            namespace: String::new(),
            name: String::new(),
            path: path.to_string(),
        }
    }

    pub fn from_request(method: &Method, path: &str, query: Option<&str>) -> RequestInfo {
        let http_verb = method.as_str().to_ascii_lowercase();
        let non_resource = RequestInfo::non_resource(&http_verb, path);
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let mut rest: &[&str] = match parts.as_slice() {
            ["api", _version, rest @ ..] => rest,
            ["apis", _group, _version, rest @ ..] => rest,
            _ => return non_resource,
        };
        if rest.is_empty() {
            return non_resource;
        }
        let group = match parts.as_slice() {
            ["apis", group, ..] => (*group).to_string(),
            _ => String::new(),
        };

        let mut watch_path = false;
        if rest[0] == "watch" {
            watch_path = true;
            rest = &rest[1..];
        }
        let mut namespace = String::new();
        if rest.first() == Some(&"namespaces") && rest.len() > 1 {
            namespace = rest[1].to_string();
            if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
                rest = &rest[2..];
            }
        }
        let resource = rest.first().copied().unwrap_or_default().to_string();
        let name = rest.get(1).copied().unwrap_or_default().to_string();
        let subresource = rest.get(2).copied().unwrap_or_default().to_string();
        // `/api/v1/namespaces/foo` keeps namespace `foo`, as upstream's RequestInfoFactory does: a
        // RoleBinding in `foo` that grants reading namespaces lets its subject read `foo` itself.

        let watch_param = query.is_some_and(|q| {
            q.split('&').any(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                k == "watch" && (v == "true" || v == "1")
            })
        });
        let verb = match *method {
            Method::GET | Method::HEAD if watch_path || watch_param => "watch",
            Method::GET | Method::HEAD if name.is_empty() => "list",
            Method::GET | Method::HEAD => "get",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE if name.is_empty() => "deletecollection",
            Method::DELETE => "delete",
            _ => http_verb.as_str(),
        }
        .to_string();
        RequestInfo {
            verb,
            resource_request: true,
            group,
            resource,
            subresource,
            namespace,
            name,
            path: path.to_string(),
        }
    }

    /// The apiserver's `forbiddenMessage` and `NewForbidden` wording.
    pub fn forbidden(&self, user: &str) -> Value {
        let reason = if !self.resource_request {
            format!("User {user:?} cannot {} path {:?}", self.verb, self.path)
        } else {
            let resource = if self.subresource.is_empty() {
                self.resource.clone()
            } else {
                format!("{}/{}", self.resource, self.subresource)
            };
            let scope = if self.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace {:?}", self.namespace)
            };
            format!(
                "User {user:?} cannot {} resource {resource:?} in API group {:?} {scope}",
                self.verb, self.group
            )
        };
        let qualified = if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        };
        let message = if !self.resource_request || qualified.is_empty() {
            format!("forbidden: {reason}")
        } else if self.name.is_empty() {
            format!("{qualified} is forbidden: {reason}")
        } else {
            format!("{qualified} {:?} is forbidden: {reason}", self.name)
        };
        let mut details = Map::new();
        if !self.name.is_empty() {
            details.insert("name".into(), Value::String(self.name.clone()));
        }
        if !self.group.is_empty() {
            details.insert("group".into(), Value::String(self.group.clone()));
        }
        if !self.resource.is_empty() {
            details.insert("kind".into(), Value::String(self.resource.clone()));
        }
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "Forbidden",
            "details": details,
            "code": 403
        })
    }
}

/// Paths served without a token, as the apiserver allows anonymous health checks.
fn is_anonymous_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
        || ["/healthz/", "/livez/", "/readyz/"].iter().any(|p| path.starts_with(p))
}

/// The 401 body, as the Kubernetes API server writes it.
pub fn unauthorized_body() -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401
    })
}

fn status_response(code: StatusCode, body: &Value) -> Response {
    let mut response = (code, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn bearer(request: &Request<Body>) -> Option<&str> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

/// What the authentication layer needs: the static tokens, the ServiceAccount token issuer, the
/// RBAC authorizer and the server whose store they read. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Authenticator {
    inner: Arc<AuthenticatorInner>,
}

#[derive(Debug)]
struct AuthenticatorInner {
    tokens: Tokens,
    issuer: Issuer,
    authorizer: Authorizer,
    server: ApiServer,
    audit: std::sync::OnceLock<crate::audit::AuditLog>,
}

impl Authenticator {
    pub fn new(tokens: Tokens, issuer: Issuer, server: &ApiServer) -> Authenticator {
        let authorizer = Authorizer::new(server.store().clone());
        Authenticator {
            inner: Arc::new(AuthenticatorInner {
                tokens,
                issuer,
                authorizer,
                server: server.clone(),
                audit: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Records every request this layer sees in `log` from now on (once; a later call is
    /// ignored and returns false).
    pub fn set_audit_log(&self, log: crate::audit::AuditLog) -> bool {
        self.inner.audit.set(log).is_ok()
    }

    /// The static tokens of `<dir>/tokens` and the ServiceAccount key `<dir>/pki/sa.key`, each
    /// created on first use.
    ///
    /// # Errors
    /// A file cannot be read, parsed or created.
    pub fn load_or_create(dir: &Path, server: &ApiServer) -> Result<Authenticator, TokenError> {
        let tokens = load_or_create_tokens(dir)?;
        let issuer = Issuer::load_or_create(dir)?;
        Ok(Authenticator::new(tokens, issuer, server))
    }

    /// The static tokens.
    pub fn tokens(&self) -> &Tokens {
        &self.inner.tokens
    }

    /// The RBAC authorizer.
    pub fn authorizer(&self) -> &Authorizer {
        &self.inner.authorizer
    }

    /// The user `token` authenticates as: a static token, or a valid ServiceAccount token.
    pub fn authenticate_token(&self, token: &str) -> Option<User> {
        if let Some(entry) = self.inner.tokens.lookup(token) {
            return Some(entry.user());
        }
        self.inner.issuer.authenticate(self.inner.server.store(), token)
    }
}

fn is_protobuf(request: &Request<Body>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().starts_with(crate::protobuf::MEDIA_TYPE))
}

/// The requests answered here rather than by the router, because their answer is about the
/// caller: the reviews and the TokenRequest subresource. Every other request is handed back.
async fn about_the_caller(
    auth: &Authenticator,
    user: &User,
    info: &RequestInfo,
    request: Request<Body>,
) -> Result<Response, Request<Body>> {
    let review = Review::from_path(request.uri().path());
    let token_request = info.resource_request
        && info.group.is_empty()
        && info.resource == "serviceaccounts"
        && info.subresource == "token"
        && !info.namespace.is_empty()
        && !info.name.is_empty();
    if review.is_none() && !token_request {
        return Err(request);
    }
    if request.method() != Method::POST {
        return Ok(ApiError::method_not_allowed().into_response());
    }
    let protobuf = is_protobuf(&request);
    let body = match axum::body::to_bytes(request.into_body(), crate::handler::MAX_BODY_BYTES).await
    {
        Ok(body) => body,
        Err(_) => return Ok(ApiError::too_large(crate::handler::MAX_BODY_BYTES).into_response()),
    };
    let answer = match review {
        Some(review) => {
            access_review::answer(review, &auth.inner.authorizer, user, &body, protobuf)
        }
        None => service_account_token::create(
            &auth.inner.issuer,
            auth.inner.server.store(),
            &info.namespace,
            &info.name,
            &body,
            protobuf,
        ),
    };
    Ok(match answer {
        Ok(body) => status_response(StatusCode::CREATED, &body),
        Err(e) => e.into_response(),
    })
}

/// The axum middleware: authenticate the bearer token, authorize the request with RBAC, answer
/// the requests about the caller, and hand the [`User`] to the handlers. Use with
/// `axum::middleware::from_fn_with_state(authenticator, authenticate)`.
pub async fn authenticate(
    State(auth): State<Authenticator>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let received = jiff::Timestamp::now();
    let info =
        RequestInfo::from_request(request.method(), request.uri().path(), request.uri().query());
    let uri = request.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let user_agent =
        request.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string);
    let audit = |user: Option<&User>, response: &Response| {
        if let Some(log) = auth.inner.audit.get() {
            log.record(&crate::audit::Entry {
                info: &info,
                user,
                uri: &uri,
                user_agent: user_agent.as_deref(),
                code: response.status().as_u16(),
                received,
            });
        }
    };
    let user = bearer(&request).and_then(|t| auth.authenticate_token(t));
    let Some(user) = user else {
        let response = if is_anonymous_path(request.uri().path()) {
            next.run(request).await
        } else {
            tracing::debug!(path = %request.uri().path(), "rejected request without a valid bearer token");
            status_response(StatusCode::UNAUTHORIZED, &unauthorized_body())
        };
        audit(None, &response);
        return response;
    };
    let decision = auth.inner.authorizer.authorize(&user, &info);
    if !decision.allowed {
        tracing::debug!(user = %user.name, verb = %info.verb, path = %info.path, "forbidden");
        let response = status_response(StatusCode::FORBIDDEN, &info.forbidden(&user.name));
        audit(Some(&user), &response);
        return response;
    }
    let response = match about_the_caller(&auth, &user, &info, request).await {
        Ok(response) => response,
        Err(mut request) => {
            request.extensions_mut().insert(user.clone());
            next.run(request).await
        }
    };
    audit(Some(&user), &response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(method: Method, path: &str, query: Option<&str>) -> RequestInfo {
        RequestInfo::from_request(&method, path, query)
    }

    #[test]
    fn forbidden_message_matches_the_apiserver() {
        let i = info(Method::DELETE, "/apis/velero.io/v1/namespaces/default/backups/b1", None);
        let body = i.forbidden("alice");
        assert_eq!(
            body["message"],
            r#"backups.velero.io "b1" is forbidden: User "alice" cannot delete resource "backups" in API group "velero.io" in the namespace "default""#
        );
        assert_eq!(body["details"], json!({"name": "b1", "group": "velero.io", "kind": "backups"}));
        assert_eq!(body["code"], 403);
        assert_eq!(body["reason"], "Forbidden");
    }

    #[test]
    fn forbidden_create_core_and_cluster_scope() {
        let i = info(Method::POST, "/api/v1/namespaces/default/pods", None);
        assert_eq!(
            i.forbidden("viewer")["message"],
            r#"pods is forbidden: User "viewer" cannot create resource "pods" in API group "" in the namespace "default""#
        );
        // A namespace is named inside itself, as upstream's RequestInfoFactory has it.
        let i = info(Method::DELETE, "/api/v1/namespaces/ns1", None);
        assert_eq!(
            i.forbidden("viewer")["message"],
            r#"namespaces "ns1" is forbidden: User "viewer" cannot delete resource "namespaces" in API group "" in the namespace "ns1""#
        );
        let i = info(Method::GET, "/api/v1/namespaces", None);
        assert_eq!(
            i.forbidden("viewer")["message"],
            r#"namespaces is forbidden: User "viewer" cannot list resource "namespaces" in API group "" at the cluster scope"#
        );
        let i = info(
            Method::PATCH,
            "/apis/snapshot.storage.k8s.io/v1/namespaces/x/volumesnapshots/s/status",
            None,
        );
        assert_eq!(
            i.forbidden("viewer")["message"],
            r#"volumesnapshots.snapshot.storage.k8s.io "s" is forbidden: User "viewer" cannot patch resource "volumesnapshots/status" in API group "snapshot.storage.k8s.io" in the namespace "x""#
        );
        let i = info(Method::POST, "/apis", None);
        assert_eq!(
            i.forbidden("viewer")["message"],
            r#"forbidden: User "viewer" cannot post path "/apis""#
        );
    }

    #[test]
    fn verbs_from_method_and_path() {
        assert_eq!(info(Method::GET, "/api/v1/pods", None).verb, "list");
        assert_eq!(
            info(Method::GET, "/api/v1/namespaces/a/pods", Some("watch=true")).verb,
            "watch"
        );
        assert_eq!(info(Method::GET, "/api/v1/watch/namespaces/a/pods", None).verb, "watch");
        assert_eq!(info(Method::GET, "/api/v1/namespaces/a/pods/p", None).verb, "get");
        assert_eq!(
            info(Method::DELETE, "/api/v1/namespaces/a/pods", None).verb,
            "deletecollection"
        );
        let ns_status = info(Method::PUT, "/api/v1/namespaces/a/status", None);
        assert_eq!(
            (ns_status.resource.as_str(), ns_status.name.as_str(), ns_status.subresource.as_str()),
            ("namespaces", "a", "status")
        );
        assert!(!info(Method::GET, "/openapi/v3", None).resource_request);
        assert!(!info(Method::GET, "/apis/velero.io/v1", None).resource_request);
    }

    #[test]
    fn token_users_are_authenticated() {
        let t = Tokens::parse(Path::new("t"), "t1,bob,7,\"dev\"\n").unwrap();
        let user = t.lookup("t1").unwrap().user();
        assert_eq!(user.groups, ["dev", "system:authenticated"]);
        assert_eq!((user.name.as_str(), user.uid.as_str()), ("bob", "7"));
    }

    #[test]
    fn token_file_round_trip_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_tokens(dir.path()).unwrap();
        let admin = first.admin_token().unwrap().to_string();
        let view = first.view_token().unwrap().to_string();
        assert_eq!(admin.len(), 64);
        assert!(admin.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(admin, view);
        let again = load_or_create_tokens(dir.path()).unwrap();
        assert_eq!(again.admin_token(), Some(admin.as_str()));
        assert_eq!(again.lookup(&view).unwrap().user, VIEWER_USER);
        assert_eq!(again.lookup(&admin).unwrap().role(), Role::Admin);
        assert!(again.lookup("nope").is_none());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tokens")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn token_file_errors_name_the_line() {
        let err = Tokens::parse(Path::new("t"), "abc\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        let err = Tokens::parse(Path::new("t"), "# c\n\nabc,u,u,\"x\n").unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        let t = Tokens::parse(Path::new("t"), "t1,bob,7,\"system:masters,dev\"\n").unwrap();
        assert_eq!(t.entries()[0].groups, vec!["system:masters", "dev"]);
        assert_eq!(t.entries()[0].role(), Role::Admin);
    }
}
