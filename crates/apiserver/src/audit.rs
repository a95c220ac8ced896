//! The audit log (`holdfast server --audit-log-path FILE`): one JSON line per request, in
//! kube-apiserver's `audit.k8s.io/v1` `Event` format at level `Metadata` (who did what to which
//! object, and the answer's code; never bodies), so the tools that read a cluster's audit log
//! read this one. docs/api.md §Audit log.
//!
//! Authenticated requests are recorded once their answer's head is ready (stage
//! `ResponseComplete`, or `ResponseStarted` for watches and streams, which go on after it),
//! refused ones (401, 403) too. Each line is written with one `write` on a file opened for
//! appending, so concurrent requests never interleave inside a line.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::auth::{RequestInfo, User};

/// An open audit log. Cheap to clone: clones append to the same file.
#[derive(Clone, Debug)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    file: Mutex<File>,
}

#[derive(thiserror::Error, Debug)]
#[error("cannot open the audit log {path}: {source}")]
pub struct AuditError {
    path: PathBuf,
    source: std::io::Error,
}

/// One request, as the log records it.
#[derive(Debug)]
pub struct Entry<'a> {
    pub info: &'a RequestInfo,
    /// `None`: the request carried no valid credentials.
    pub user: Option<&'a User>,
    /// Path and query, as the client sent them.
    pub uri: &'a str,
    pub user_agent: Option<&'a str>,
    pub code: u16,
    pub received: Timestamp,
}

impl AuditLog {
    /// Opens `path` for appending (owner-only when created: it names every user and object).
    ///
    /// # Errors
    /// The file cannot be opened or created.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| AuditError { path: path.to_path_buf(), source })?;
        Ok(AuditLog { inner: Arc::new(Inner { path: path.to_path_buf(), file: Mutex::new(file) }) })
    }

    /// Appends the event of one request. A failed write is logged, never fails the request (as
    /// upstream's log backend does).
    pub fn record(&self, entry: &Entry<'_>) {
        let mut line = event(entry).to_string();
        line.push('\n');
        let mut file = self.inner.file.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(error) = file.write_all(line.as_bytes()) {
            tracing::warn!(%error, path = %self.inner.path.display(), "cannot write the audit log");
        }
    }
}

/// The `audit.k8s.io/v1` Event of a request.
fn event(entry: &Entry<'_>) -> Value {
    let info = entry.info;
    let long_running = crate::metrics::is_long_running(info);
    let user = match entry.user {
        Some(u) => json!({"username": u.name, "uid": u.uid, "groups": u.groups}),
        None => json!({"username": "system:anonymous", "groups": ["system:unauthenticated"]}),
    };
    let mut event = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": uuid::Uuid::new_v4().to_string(),
        "stage": if long_running { "ResponseStarted" } else { "ResponseComplete" },
        "requestURI": entry.uri,
        "verb": info.verb,
        "user": user,
        "responseStatus": {"metadata": {}, "code": entry.code},
        "requestReceivedTimestamp": micros(entry.received),
        "stageTimestamp": micros(Timestamp::now()),
    });
    if let Some(agent) = entry.user_agent {
        event["userAgent"] = agent.into();
    }
    if info.resource_request {
        let mut object = Map::new();
        let mut put = |key: &str, value: &str| {
            if !value.is_empty() {
                object.insert(key.to_string(), value.into());
            }
        };
        put("resource", &info.resource);
        put("namespace", &info.namespace);
        put("name", &info.name);
        put("apiGroup", &info.group);
        put("apiVersion", crate::metrics::api_version(&info.path));
        put("subresource", &info.subresource);
        event["objectRef"] = Value::Object(object);
    }
    event
}

/// RFC 3339 with microseconds, as upstream's `MicroTime`.
fn micros(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;

    fn user() -> User {
        User {
            name: "system:serviceaccount:holdfast-system:holdfast-operator".into(),
            uid: "u-1".into(),
            groups: vec!["system:serviceaccounts".into(), "system:authenticated".into()],
        }
    }

    fn read_events(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_request_is_one_metadata_event_with_its_object_and_code() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        let uri = "/apis/dataprotection.kubeblocks.io/v1alpha1/namespaces/db/backups/b1/status";
        let info = RequestInfo::from_request(&Method::PATCH, uri, None);
        let user = user();
        let received = Timestamp::now();
        log.record(&Entry {
            info: &info,
            user: Some(&user),
            uri,
            user_agent: Some("holdfast/0.1"),
            code: 200,
            received,
        });
        let watch = RequestInfo::from_request(&Method::GET, "/api/v1/pods", Some("watch=true"));
        log.record(&Entry {
            info: &watch,
            user: None,
            uri: "/api/v1/pods?watch=true",
            user_agent: None,
            code: 401,
            received,
        });
        let events = read_events(&path);
        assert_eq!(events.len(), 2);
        let e = &events[0];
        assert_eq!(e["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(e["level"], "Metadata");
        assert_eq!(e["stage"], "ResponseComplete");
        assert_eq!(e["verb"], "patch");
        assert_eq!(e["user"]["username"], user.name);
        assert_eq!(e["user"]["groups"][1], "system:authenticated");
        assert_eq!(
            e["objectRef"],
            json!({"resource": "backups", "namespace": "db", "name": "b1",
                   "apiGroup": "dataprotection.kubeblocks.io", "apiVersion": "v1alpha1",
                   "subresource": "status"})
        );
        assert_eq!(e["responseStatus"]["code"], 200);
        assert_eq!(e["userAgent"], "holdfast/0.1");
        let stamp: Timestamp = e["stageTimestamp"].as_str().unwrap().parse().unwrap();
        assert!(stamp >= received);
        let w = &events[1];
        assert_eq!(
            (w["verb"].as_str(), w["stage"].as_str()),
            (Some("watch"), Some("ResponseStarted"))
        );
        assert_eq!(w["user"]["username"], "system:anonymous");
        assert_eq!(w["objectRef"], json!({"resource": "pods", "apiVersion": "v1"}));
        assert_ne!(e["auditID"], w["auditID"]);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn reopening_appends_and_an_unwritable_path_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let info = RequestInfo::non_resource("get", "/version");
        let entry = Entry {
            info: &info,
            user: None,
            uri: "/version",
            user_agent: None,
            code: 200,
            received: Timestamp::now(),
        };
        AuditLog::open(&path).unwrap().record(&entry);
        AuditLog::open(&path).unwrap().record(&entry);
        let events = read_events(&path);
        assert_eq!(events.len(), 2);
        assert!(events[0].get("objectRef").is_none(), "a non-resource path names no object");
        let err = AuditLog::open(&dir.path().join("missing/audit.log")).unwrap_err();
        assert!(err.to_string().contains("missing/audit.log"), "{err}");
    }
}
