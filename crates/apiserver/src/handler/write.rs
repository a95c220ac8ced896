//! GET, POST, PUT and PATCH of one object: the object semantics of the Kubernetes API server
//! in the order it applies them.
//!
//! A write is decoded, patched onto the current object (PATCH), pruned and checked against the
//! kind's schema (custom kinds), admitted by the kind's own rules, given its server-owned
//! metadata and managedFields, and stored — unless it changes nothing (then nothing is written
//! and no event is sent) or it is a dry run.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use holdfast_api::{FieldError, FieldErrorKind, ResourceDef};
use rand::Rng;
use serde_json::{Map, Value, json};

use super::events::{from_storage, to_storage};
use super::list::ensure_type_meta;
use super::request::{self, FieldValidation, Params, content_type};
use super::{
    ApiServer, Target, json_response, namespace_key, storage_resource, store_error, with_warnings,
};
use crate::error::{ApiError, SMP_UNSUPPORTED};
use crate::patch::{self, PatchKind};
use crate::store::{Key, StoreError, Stored};
use crate::{schema, table};

/// etcd's default `--max-request-bytes` (1.5 MiB): the largest object the apiserver can store.
/// Counted here on the stored JSON, which for built-in kinds is larger than the protobuf
/// upstream stores, so this is a little stricter for them.
pub(crate) const MAX_STORED_BYTES: usize = 1536 * 1024;

/// How often a patch is retried when the object changed between reading and writing it.
const PATCH_RETRIES: usize = 5;

/// One resource request, parsed.
pub(crate) struct Req {
    pub server: ApiServer,
    pub target: Target,
    pub def: ResourceDef,
    pub params: Params,
    pub headers: HeaderMap,
    /// The authenticated user; the default field manager.
    pub user: String,
    pub accept: String,
    pub body: Bytes,
}

impl Req {
    pub fn name(&self) -> &str {
        self.target.name.as_deref().unwrap_or("")
    }

    pub fn key(&self, name: &str) -> Key {
        Key {
            resource: storage_resource(&self.def),
            namespace: self.target.namespace.clone().unwrap_or_default(),
            name: name.to_string(),
        }
    }

    fn manager(&self) -> String {
        self.params.field_manager.clone().unwrap_or_else(|| self.user.clone())
    }

    fn get_current(&self) -> Result<Option<Stored>, ApiError> {
        self.server.store().get(&self.key(self.name())).map_err(store_error)
    }
}

/// Whether to record an `Update` in managedFields (server-side apply records its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Managed {
    Update,
    Applied,
}

/// The result of a write.
pub(crate) struct Written {
    pub code: StatusCode,
    pub object: Value,
    pub warnings: Vec<String>,
}

fn respond(w: Written) -> Response {
    with_warnings(json_response(w.code, &w.object), &w.warnings)
}

/// Now, as Kubernetes stamps `creationTimestamp`: RFC 3339 in UTC, whole seconds.
pub(crate) fn now_seconds() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        // Unreachable: metadata was made an object just above.
        _ => unreachable!("metadata is an object"),
    }
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

pub(crate) fn has_finalizers(obj: &Value) -> bool {
    !finalizers(obj).is_empty()
}

pub(crate) fn is_deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null())
}

/// Checks `apiVersion` and `kind` against the URL's kind, filling them in when absent, and makes
/// sure `metadata` is an object.
fn check_type_meta(def: &ResourceDef, obj: &mut Value) -> Result<(), ApiError> {
    let Some(o) = obj.as_object_mut() else {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    };
    let expected_av = def.api_version();
    match o.get("apiVersion") {
        None | Some(Value::Null) => {
            o.insert("apiVersion".into(), expected_av.into());
        }
        Some(Value::String(av)) if av.is_empty() => {
            o.insert("apiVersion".into(), expected_av.into());
        }
        Some(Value::String(av)) if *av == expected_av => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({expected_av})",
                other.as_str().unwrap_or(&other.to_string())
            )));
        }
    }
    match o.get("kind") {
        None | Some(Value::Null) => {
            o.insert("kind".into(), def.kind.clone().into());
        }
        Some(Value::String(k)) if k.is_empty() => {
            o.insert("kind".into(), def.kind.clone().into());
        }
        Some(Value::String(k)) if *k == def.kind => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({}) does not match the expected kind ({})",
                other.as_str().unwrap_or(&other.to_string()),
                def.kind
            )));
        }
    }
    match o.get("metadata") {
        None | Some(Value::Null) => {
            o.insert("metadata".into(), json!({}));
        }
        Some(Value::Object(_)) => {}
        Some(_) => return Err(ApiError::bad_request("metadata must be an object")),
    }
    Ok(())
}

/// Puts the URL's namespace on the object (or removes it for cluster-scoped kinds).
fn place(rq: &Req, obj: &mut Value) -> Result<(), ApiError> {
    let ns = rq.target.namespace.clone();
    let meta = meta_mut(obj);
    match ns {
        Some(ns) if rq.def.namespaced => {
            match meta.get("namespace").and_then(Value::as_str) {
                Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {}
            }
            meta.insert("namespace".into(), ns.into());
        }
        _ => {
            meta.remove("namespace");
        }
    }
    Ok(())
}

/// Returns `value` without the members that are `null` (clients send `creationTimestamp: null`;
/// a typed round trip drops them, and that is not an unknown field).
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Schema processing (custom kinds), the kind's admission, and the unknown-field policy.
/// Returns the warnings to send.
fn admit(rq: &Req, obj: &mut Value, old: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let def = &rq.def;
    let name = meta_str(obj, "name").unwrap_or("").to_string();
    let mut unknown = Vec::new();
    if !def.builtin {
        let report = schema::process(&def.schema, obj)
            .map_err(|errs| ApiError::invalid(def, &name, &errs))?;
        unknown = report.unknown_fields;
    }
    let before = def.builtin.then(|| without_nulls(obj));
    def.admit(obj, old).map_err(|errs| ApiError::invalid(def, &name, &errs))?;
    if let Some(before) = before {
        unknown = schema::removed_paths(&before, obj);
        // stringData is write-only: admission folds it into data, it is not unknown.
        if def.kind == "Secret" && def.group.is_empty() {
            unknown.retain(|p| p != "stringData" && !p.starts_with("stringData."));
        }
    }
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    match rq.params.field_validation {
        FieldValidation::Strict => {
            let fields: Vec<String> =
                unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
            Err(ApiError::bad_request(format!(
                "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: {}",
                fields.join(", "),
                kind = def.kind,
                v = def.version,
            )))
        }
        FieldValidation::Warn => {
            Ok(unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect())
        }
        FieldValidation::Ignore => Ok(Vec::new()),
    }
}

/// The object without what does not count for "did anything change": its resourceVersion and
/// the times of its managedFields entries (a re-apply of the same object is a no-op).
fn normalized(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        if let Some(Value::Array(entries)) = m.get_mut("managedFields") {
            for e in entries {
                if let Some(e) = e.as_object_mut() {
                    e.remove("time");
                }
            }
        }
    }
    v
}

/// Whether anything counted by `metadata.generation` changed: everything but metadata, and but
/// status where status is a separate subresource.
fn spec_changed(def: &ResourceDef, old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut m = v.as_object().cloned().unwrap_or_default();
        m.remove("metadata");
        if def.status_subresource {
            m.remove("status");
        }
        m
    };
    strip(old) != strip(new)
}

fn random_suffix() -> String {
    // The apiserver's alphabet: no vowels (no words) and no look-alike characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// Counts the bytes written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Makes sure `obj` fits in one write of the store, as the apiserver does for etcd: an object
/// over the limit is tried again without its managedFields (they can be large, and it is safe
/// to drop them), and refused when it still does not fit.
fn fit_for_storage(key: &Key, obj: &mut Value) -> Result<(), ApiError> {
    let size = |obj: &Value| {
        let mut bytes = ByteCount(key.resource.len() + key.namespace.len() + key.name.len());
        // Writing to a counter cannot fail.
        let _ = serde_json::to_writer(&mut bytes, obj);
        bytes.0
    };
    if size(obj) <= MAX_STORED_BYTES {
        return Ok(());
    }
    meta_mut(obj).remove("managedFields");
    if size(obj) <= MAX_STORED_BYTES {
        Ok(())
    } else {
        Err(ApiError::request_too_large_for_storage())
    }
}

/// Refuses a create in a namespace that does not exist or is being deleted.
fn check_namespace(rq: &Req, name: &str) -> Result<(), ApiError> {
    let Some(ns) = rq.target.namespace.as_deref() else { return Ok(()) };
    let stored = rq.server.store().get(&namespace_key(ns)).map_err(store_error)?;
    match stored {
        None => Err(ApiError::namespace_not_found(ns)),
        Some(s) if is_deleting(&s.object) => Err(ApiError::forbidden(
            &rq.def,
            name,
            &format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// GET of one object (or of its status, which is the same object).
pub(crate) async fn get(rq: &Req) -> Result<Response, ApiError> {
    let name = rq.name();
    let stored = rq.get_current()?.ok_or_else(|| ApiError::not_found(&rq.def, name))?;
    let mut obj = from_storage(&rq.def, stored.object);
    ensure_type_meta(&rq.def, &mut obj);
    if table::wants_table(&rq.accept) {
        let meta = json!({"resourceVersion": stored.mod_rev.to_string()});
        let t = table::table(&rq.def, &[obj], meta, true, jiff::Timestamp::now());
        return Ok(json_response(StatusCode::OK, &t));
    }
    Ok(json_response(StatusCode::OK, &obj))
}

/// POST to a collection.
pub(crate) async fn create(rq: &Req) -> Result<Response, ApiError> {
    let obj = request::decode_object(&rq.body, &content_type(&rq.headers), &rq.def)?;
    create_object(rq, obj, Managed::Update).await.map(respond)
}

async fn create_object(rq: &Req, mut obj: Value, managed: Managed) -> Result<Written, ApiError> {
    let def = &rq.def;
    check_type_meta(def, &mut obj)?;
    place(rq, &mut obj)?;
    let generate = meta_str(&obj, "generateName").map(str::to_string);
    let mut name = meta_str(&obj, "name").unwrap_or("").to_string();
    let generated = name.is_empty() && generate.is_some();
    if let Some(prefix) = generate.as_deref().filter(|_| generated) {
        name = format!("{prefix}{}", random_suffix());
    }
    if name.is_empty() {
        return Err(ApiError::invalid(
            def,
            "",
            &[FieldError::required("metadata.name", "name or generateName is required")],
        ));
    }
    meta_mut(&mut obj).insert("name".into(), name.clone().into());
    if def.namespaced {
        check_namespace(rq, &name)?;
    }
    let is_namespace = def.group.is_empty() && def.kind == "Namespace";
    if def.status_subresource
        && !is_namespace
        && let Some(o) = obj.as_object_mut()
    {
        // The status of a new object is the controllers' to write (the CRD strategy drops it).
        o.remove("status");
    }
    {
        let meta = meta_mut(&mut obj);
        // Server-owned fields: a client cannot choose them.
        for f in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
        ] {
            meta.remove(f);
        }
        if is_namespace {
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), name.clone().into());
            }
        }
    }
    let warnings = admit(rq, &mut obj, None)?;
    let now = now_seconds();
    let uid = uuid::Uuid::new_v4().to_string();
    {
        let meta = meta_mut(&mut obj);
        meta.insert("uid".into(), uid.clone().into());
        meta.insert("creationTimestamp".into(), now.clone().into());
        meta.insert("generation".into(), 1.into());
    }
    if def.group == "batch" && def.kind == "Job" {
        super::job::generate_selector(&mut obj, &name, &uid);
    }
    if managed == Managed::Update {
        patch::record_update(&mut obj, None, &rq.manager(), None, &def.api_version(), &now);
    }
    if rq.params.dry_run {
        return Ok(Written { code: StatusCode::CREATED, object: obj, warnings });
    }
    fit_for_storage(&rq.key(&name), &mut obj)?;
    let mut attempt = 0;
    loop {
        match rq.server.store().create(rq.key(&name), to_storage(def, obj.clone())).await {
            Ok(s) => {
                let object = from_storage(def, s.object);
                return Ok(Written { code: StatusCode::CREATED, object, warnings });
            }
            // A generated name that collides is drawn again, as the apiserver does.
            Err(StoreError::AlreadyExists(_)) if generated && attempt < 8 => {
                attempt += 1;
                name = format!("{}{}", generate.as_deref().unwrap_or(""), random_suffix());
                meta_mut(&mut obj).insert("name".into(), name.clone().into());
            }
            Err(StoreError::AlreadyExists(_)) => return Err(ApiError::already_exists(def, &name)),
            Err(e) => return Err(store_error(e)),
        }
    }
}

/// PUT of an object or of its status.
pub(crate) async fn replace(rq: &Req) -> Result<Response, ApiError> {
    let def = &rq.def;
    let mut obj = request::decode_object(&rq.body, &content_type(&rq.headers), &rq.def)?;
    check_type_meta(def, &mut obj)?;
    place(rq, &mut obj)?;
    let name = rq.name().to_string();
    match meta_str(&obj, "name") {
        Some(body_name) if body_name != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        _ => {}
    }
    let current = rq.get_current()?.ok_or_else(|| ApiError::not_found(def, &name))?;
    match meta_str(&obj, "resourceVersion") {
        Some(rv) => {
            let rv: u64 = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?;
            if rv != current.mod_rev {
                return Err(ApiError::conflict(def, &name));
            }
        }
        // Custom kinds refuse unconditional updates (AllowUnconditionalUpdate=false).
        None if !def.builtin => {
            return Err(ApiError::invalid(
                def,
                &name,
                &[FieldError {
                    field: "metadata.resourceVersion".into(),
                    kind: FieldErrorKind::Invalid,
                    value: Some("0x0".into()),
                    detail: "must be specified for an update".into(),
                }],
            ));
        }
        None => {}
    }
    update_object(rq, obj, current, Managed::Update).await.map(respond)
}

/// Applies an update to `current`: status-subresource rules, immutable metadata, admission,
/// finalizer rules, generation, managedFields, no-op detection, then the store write (or the
/// delete, when the last finalizer of a deleting object goes).
async fn update_object(
    rq: &Req,
    mut obj: Value,
    current: Stored,
    managed: Managed,
) -> Result<Written, ApiError> {
    let def = &rq.def;
    check_type_meta(def, &mut obj)?;
    let old = from_storage(def, current.object.clone());
    let name = current.key.name.clone();
    if rq.target.status {
        // A status write copies only status (and managedFields) onto the stored object.
        let status = obj.get("status").cloned();
        let managed_fields = obj.pointer("/metadata/managedFields").cloned();
        let mut merged = old.clone();
        if let Some(o) = merged.as_object_mut() {
            match status {
                Some(s) => o.insert("status".into(), s),
                None => o.remove("status"),
            };
        }
        if managed == Managed::Applied {
            let meta = meta_mut(&mut merged);
            match managed_fields {
                Some(mf) => meta.insert("managedFields".into(), mf),
                None => meta.remove("managedFields"),
            };
        }
        obj = merged;
    } else if def.status_subresource
        && let Some(o) = obj.as_object_mut()
    {
        // A write to the main resource keeps the stored status.
        match old.get("status") {
            Some(s) => o.insert("status".into(), s.clone()),
            None => o.remove("status"),
        };
    }
    {
        let old_meta = old.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default();
        let meta = meta_mut(&mut obj);
        for f in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old_meta.get(f) {
                Some(v) => meta.insert(f.into(), v.clone()),
                None => meta.remove(f),
            };
        }
        meta.remove("resourceVersion");
        meta.remove("selfLink");
    }
    let warnings = admit(rq, &mut obj, Some(&old))?;
    let deleting = is_deleting(&old);
    if deleting {
        let before = finalizers(&old);
        if finalizers(&obj).iter().any(|f| !before.contains(f)) {
            return Err(ApiError::invalid(
                def,
                &name,
                &[FieldError::forbidden(
                    "metadata.finalizers",
                    "no new finalizers can be added if the object is being deleted",
                )],
            ));
        }
    }
    if spec_changed(def, &old, &obj) {
        let generation =
            old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0) + 1;
        meta_mut(&mut obj).insert("generation".into(), generation.into());
    }
    if managed == Managed::Update {
        let sub = rq.target.status.then_some("status");
        patch::record_update(
            &mut obj,
            Some(&old),
            &rq.manager(),
            sub,
            &def.api_version(),
            &now_seconds(),
        );
    }
    if normalized(&obj) == normalized(&old) {
        // Nothing changed: no new revision, no event (the apiserver compares the bytes).
        return Ok(Written { code: StatusCode::OK, object: old, warnings });
    }
    let key = current.key.clone();
    let store = rq.server.store();
    if deleting && has_finalizers(&old) && finalizers(&obj).is_empty() {
        // The last finalizer is gone: the object goes, carrying the state the update gave it.
        if !rq.params.dry_run {
            let deleted = match store.delete(key, Some(current.mod_rev)).await {
                Ok(d) => d,
                Err(StoreError::Conflict { .. }) => return Err(ApiError::conflict(def, &name)),
                Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(def, &name)),
                Err(e) => return Err(store_error(e)),
            };
            meta_mut(&mut obj).insert("resourceVersion".into(), deleted.mod_rev.to_string().into());
        }
        return Ok(Written { code: StatusCode::OK, object: obj, warnings });
    }
    if rq.params.dry_run {
        meta_mut(&mut obj).insert("resourceVersion".into(), current.mod_rev.to_string().into());
        return Ok(Written { code: StatusCode::OK, object: obj, warnings });
    }
    fit_for_storage(&key, &mut obj)?;
    match store.update(key, to_storage(def, obj), current.mod_rev).await {
        Ok(s) => {
            Ok(Written { code: StatusCode::OK, object: from_storage(def, s.object), warnings })
        }
        Err(StoreError::Conflict { .. }) => Err(ApiError::conflict(def, &name)),
        Err(StoreError::NotFound(_)) => Err(ApiError::not_found(def, &name)),
        Err(e) => Err(store_error(e)),
    }
}

/// Whether a patch body pins `metadata.resourceVersion` (then it is a precondition and a
/// conflict is the client's to resolve, not retried).
fn pins_resource_version(kind: &PatchKind, body: &Value) -> bool {
    match kind {
        PatchKind::Json => body.as_array().is_some_and(|ops| {
            ops.iter().any(|op| op["path"].as_str() == Some("/metadata/resourceVersion"))
        }),
        _ => body.pointer("/metadata/resourceVersion").is_some_and(|v| !v.is_null()),
    }
}

fn patch_error(def: &ResourceDef, name: &str, e: patch::PatchError) -> ApiError {
    match e.http_status() {
        400 => ApiError::bad_request(e.to_string()),
        409 => {
            let causes: Vec<Value> = match &e {
                patch::PatchError::Conflict(conflicts) => conflicts
                    .iter()
                    .map(|c| json!({"reason": "FieldManagerConflict", "message": c.message(), "field": c.field}))
                    .collect(),
                _ => Vec::new(),
            };
            let mut err = ApiError::new(409, "Conflict", e.to_string());
            err.details = Some(Box::new(
                json!({"name": name, "group": def.group, "kind": def.plural, "causes": causes}),
            ));
            err
        }
        // A patch that cannot be applied to this object (a failed json-patch `test`, a
        // strategic patch that does not fit): 422 as upstream.
        code => {
            let mut err = ApiError::new(code, "Invalid", e.to_string());
            err.details =
                Some(Box::new(json!({"name": name, "group": def.group, "kind": def.kind})));
            err
        }
    }
}

/// PATCH of an object or of its status, in any of the four patch types.
pub(crate) async fn patch(rq: &Req) -> Result<Response, ApiError> {
    let def = &rq.def;
    let ct = content_type(&rq.headers);
    let kind = PatchKind::from_content_type(&ct).ok_or_else(|| {
        ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml{}",
            if def.builtin { ", application/strategic-merge-patch+json" } else { "" }
        ))
    })?;
    if matches!(kind, PatchKind::Strategic) && !def.builtin {
        return Err(ApiError::unsupported_media_type(SMP_UNSUPPORTED));
    }
    let body = request::decode(&rq.body, &ct)?;
    let name = rq.name().to_string();
    let pinned = pins_resource_version(&kind, &body);
    let manager = rq.manager();
    let av = def.api_version();
    if matches!(kind, PatchKind::Apply) {
        let mut check = body.clone();
        check_type_meta(def, &mut check)?;
    }
    let mut attempt = 0;
    loop {
        let Some(current) = rq.get_current()? else {
            if matches!(kind, PatchKind::Apply) && !rq.target.status {
                // Server-side apply creates what does not exist yet.
                let mut obj =
                    patch::apply(None, &body, &manager, rq.params.force, &av, &now_seconds())
                        .map_err(|e| patch_error(def, &name, e))?;
                meta_mut(&mut obj).insert("name".into(), name.clone().into());
                return create_object(rq, obj, Managed::Applied).await.map(respond);
            }
            return Err(ApiError::not_found(def, &name));
        };
        let old = from_storage(def, current.object.clone());
        let patched = match kind {
            PatchKind::Merge => Ok(patch::merge(&old, &body)),
            PatchKind::Json => patch::json(&old, &body),
            PatchKind::Strategic => patch::strategic(&old, &body, &def.kind),
            PatchKind::Apply => patch::apply_subresource(
                Some(&old),
                &body,
                &manager,
                rq.target.status.then_some("status"),
                rq.params.force,
                &av,
                &now_seconds(),
            ),
        }
        .map_err(|e| patch_error(def, &name, e))?;
        if pinned {
            let want = match kind {
                PatchKind::Json => meta_str(&patched, "resourceVersion"),
                _ => body.pointer("/metadata/resourceVersion").and_then(Value::as_str),
            };
            if want.is_some_and(|rv| rv != current.mod_rev.to_string()) {
                return Err(ApiError::conflict(def, &name));
            }
        }
        let managed =
            if matches!(kind, PatchKind::Apply) { Managed::Applied } else { Managed::Update };
        match update_object(rq, patched, current, managed).await {
            Err(e) if e.reason == "Conflict" && !pinned && attempt < PATCH_RETRIES => attempt += 1,
            other => return other.map(respond),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_op_ignores_managed_field_times_and_rv() {
        let a = json!({"metadata": {"resourceVersion": "5", "managedFields": [{"manager": "m", "time": "2026-01-01T00:00:00Z"}]}, "spec": {"x": 1}});
        let b = json!({"metadata": {"managedFields": [{"manager": "m", "time": "2026-02-01T00:00:00Z"}]}, "spec": {"x": 1}});
        assert_eq!(normalized(&a), normalized(&b));
        let c = json!({"metadata": {}, "spec": {"x": 2}});
        assert_ne!(normalized(&a), normalized(&c));
    }

    #[test]
    fn generated_names_use_the_apiserver_alphabet() {
        let s = random_suffix();
        assert_eq!(s.len(), 5);
        assert!(s.bytes().all(|c| b"bcdfghjklmnpqrstvwxz2456789".contains(&c)));
    }

    #[test]
    fn nulls_are_not_unknown_fields() {
        let v =
            json!({"metadata": {"creationTimestamp": null, "name": "a"}, "spec": [{"x": null}]});
        assert_eq!(without_nulls(&v), json!({"metadata": {"name": "a"}, "spec": [{}]}));
    }
}
