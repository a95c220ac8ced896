//! DELETE of one object, of a collection, and of a namespace (with everything in it).
//!
//! An object with finalizers is only marked (`deletionTimestamp`), and goes when its controllers
//! remove the last finalizer; one without goes at once. A namespace turns `Terminating`, then a
//! background task deletes every object in it and, once they are all gone, the namespace itself,
//! as the namespace controller does.

use std::collections::HashSet;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use holdfast_api::ResourceDef;
use serde::Deserialize;
use serde_json::{Value, json};

use super::dependents::{Propagation, cascade, uid_of};
use super::events::{from_storage, to_storage};
use super::list::{Filter, ensure_type_meta, list_body};
use super::write::{Req, has_finalizers, is_deleting, now_seconds};
use super::{ApiServer, json_response, namespace_key, storage_resource, store_error};
use crate::error::ApiError;
use crate::store::{StoreError, Stored};

/// How often a deleting namespace is checked for what is left in it.
const NAMESPACE_POLL: Duration = Duration::from_millis(500);
/// How often a delete is retried when the object changed between reading and deleting it.
const DELETE_RETRIES: usize = 5;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Preconditions {
    uid: Option<String>,
    resource_version: Option<String>,
}

/// DeleteOptions, from the body (kubectl, kube-rs) or the query (Python sends no body).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteOptions {
    #[serde(default)]
    dry_run: Vec<String>,
    propagation_policy: Option<String>,
    preconditions: Option<Preconditions>,
}

impl DeleteOptions {
    fn parse(rq: &Req) -> Result<DeleteOptions, ApiError> {
        let mut opts: DeleteOptions = if rq.body.iter().all(u8::is_ascii_whitespace) {
            DeleteOptions::default()
        } else {
            let v = super::request::decode(&rq.body, &super::request::content_type(&rq.headers))?;
            serde_json::from_value(v)
                .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
        };
        if let Some(d) = opts.dry_run.iter().find(|d| d.as_str() != "All") {
            return Err(ApiError::bad_request(format!("unsupported dry run value: {d:?}")));
        }
        if rq.params.dry_run {
            opts.dry_run = vec!["All".into()];
        }
        if opts.propagation_policy.is_none() {
            opts.propagation_policy = rq.params.propagation_policy.clone();
        }
        Propagation::of(opts.propagation_policy.as_deref(), &rq.def)?;
        Ok(opts)
    }

    fn propagation(&self, def: &ResourceDef) -> Propagation {
        Propagation::of(self.propagation_policy.as_deref(), def).unwrap_or(Propagation::Background)
    }

    fn dry_run(&self) -> bool {
        !self.dry_run.is_empty()
    }

    fn pins_version(&self) -> bool {
        self.preconditions.as_ref().is_some_and(|p| p.resource_version.is_some())
    }

    fn check(&self, def: &ResourceDef, current: &Stored) -> Result<(), ApiError> {
        let Some(p) = &self.preconditions else { return Ok(()) };
        let name = &current.key.name;
        if let Some(uid) = &p.uid {
            let actual =
                current.object.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("");
            if uid != actual {
                return Err(ApiError::conflict_because(
                    def,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                    ),
                ));
            }
        }
        if let Some(rv) = &p.resource_version
            && *rv != current.mod_rev.to_string()
        {
            return Err(ApiError::conflict_because(
                def,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    current.mod_rev
                ),
            ));
        }
        Ok(())
    }
}

/// Deletes (or, with finalizers, marks for deletion) a stored object of kind `def`.
/// Returns 200 and the last state when it is gone, 202 and the marked object when it waits
/// for its finalizers.
pub(crate) async fn delete_stored(
    server: &ApiServer,
    def: &ResourceDef,
    current: Stored,
    dry_run: bool,
) -> Result<(StatusCode, Value), ApiError> {
    let mut obj = from_storage(def, current.object.clone());
    ensure_type_meta(def, &mut obj);
    let name = current.key.name.clone();
    let store = server.store();
    if has_finalizers(&obj) {
        if is_deleting(&obj) {
            return Ok((StatusCode::ACCEPTED, obj));
        }
        let generation =
            obj.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0) + 1;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("deletionTimestamp".into(), now_seconds().into());
            meta.insert("deletionGracePeriodSeconds".into(), 0.into());
            meta.insert("generation".into(), generation.into());
        }
        if dry_run {
            return Ok((StatusCode::ACCEPTED, obj));
        }
        return match store.update(current.key, to_storage(def, obj), current.mod_rev).await {
            Ok(s) => Ok((StatusCode::ACCEPTED, from_storage(def, s.object))),
            Err(StoreError::Conflict { .. }) => Err(ApiError::conflict(def, &name)),
            Err(StoreError::NotFound(_)) => Err(ApiError::not_found(def, &name)),
            Err(e) => Err(store_error(e)),
        };
    }
    if dry_run {
        return Ok((StatusCode::OK, obj));
    }
    match store.delete(current.key, Some(current.mod_rev)).await {
        Ok(d) => {
            let mut obj = from_storage(def, d.object);
            ensure_type_meta(def, &mut obj);
            Ok((StatusCode::OK, obj))
        }
        Err(StoreError::Conflict { .. }) => Err(ApiError::conflict(def, &name)),
        Err(StoreError::NotFound(_)) => Err(ApiError::not_found(def, &name)),
        Err(e) => Err(store_error(e)),
    }
}

fn is_namespace(def: &ResourceDef) -> bool {
    def.group.is_empty() && def.kind == "Namespace"
}

/// DELETE of one object.
pub(crate) async fn delete(rq: &Req) -> Result<Response, ApiError> {
    let opts = DeleteOptions::parse(rq)?;
    let name = rq.name().to_string();
    let mut attempt = 0;
    loop {
        let current = rq
            .server
            .store()
            .get(&rq.key(&name))
            .map_err(store_error)?
            .ok_or_else(|| ApiError::not_found(&rq.def, &name))?;
        opts.check(&rq.def, &current)?;
        let result = if is_namespace(&rq.def) {
            delete_namespace(&rq.server, current, opts.dry_run()).await
        } else {
            delete_owner(rq, &opts, current).await
        };
        match result {
            Err(e)
                if e.reason == "Conflict" && !opts.pins_version() && attempt < DELETE_RETRIES =>
            {
                attempt += 1
            }
            Err(e) => return Err(e),
            Ok((code, obj)) => return Ok(json_response(code, &obj)),
        }
    }
}

/// Deletes one object of the request's kind and applies the propagation policy to its
/// dependents: `Foreground` deletes them first, the others handle them once the owner is
/// deleted (or marked, when finalizers hold it).
async fn delete_owner(
    rq: &Req,
    opts: &DeleteOptions,
    current: Stored,
) -> Result<(StatusCode, Value), ApiError> {
    let policy = opts.propagation(&rq.def);
    let owner = uid_of(&current.object).filter(|_| !opts.dry_run());
    let namespace = rq.def.namespaced.then(|| current.key.namespace.clone());
    let namespace = namespace.as_deref();
    if let Some(uid) = owner.clone().filter(|_| policy == Propagation::Foreground) {
        cascade(&rq.server, namespace, uid, policy).await?;
    }
    let result = delete_stored(&rq.server, &rq.def, current, opts.dry_run()).await?;
    if let Some(uid) = owner.filter(|_| policy != Propagation::Foreground) {
        cascade(&rq.server, namespace, uid, policy).await?;
    }
    Ok(result)
}

/// DELETE of a collection: every object in scope that matches the selectors.
pub(crate) async fn delete_collection(rq: &Req) -> Result<Response, ApiError> {
    let opts = DeleteOptions::parse(rq)?;
    let filter = Filter::new(&rq.def, &rq.params)?;
    let store = rq.server.store();
    let (items, rev, _) = store
        .list(&storage_resource(&rq.def), rq.target.namespace.as_deref(), None, None)
        .map_err(store_error)?;
    let mut deleted = Vec::new();
    for item in items {
        let view = from_storage(&rq.def, item.object.clone());
        if !filter.matches(&item.object, &view) {
            continue;
        }
        let name = item.key.name.clone();
        let result = if is_namespace(&rq.def) {
            delete_namespace(&rq.server, item, opts.dry_run()).await
        } else {
            delete_owner(rq, &opts, item).await
        };
        match result {
            Ok((_, obj)) => deleted.push(obj),
            // Someone else changed or removed it meanwhile; it is theirs now.
            Err(e) if e.code == 404 || e.code == 409 => {
                tracing::debug!("deletecollection skipped {name}: {}", e.message)
            }
            Err(e) => return Err(e),
        }
    }
    let meta = json!({"resourceVersion": rev.to_string()});
    Ok(json_response(StatusCode::OK, &list_body(&rq.def, deleted, meta)))
}

/// Marks a namespace `Terminating` and starts deleting what is in it.
async fn delete_namespace(
    server: &ApiServer,
    current: Stored,
    dry_run: bool,
) -> Result<(StatusCode, Value), ApiError> {
    let mut obj = current.object.clone();
    if is_deleting(&obj) {
        return Ok((StatusCode::OK, obj));
    }
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("deletionTimestamp".into(), now_seconds().into());
        meta.insert("deletionGracePeriodSeconds".into(), 0.into());
    }
    obj["status"] = json!({"phase": "Terminating"});
    if dry_run {
        return Ok((StatusCode::OK, obj));
    }
    let name = current.key.name.clone();
    let stored = match server.store().update(current.key, obj, current.mod_rev).await {
        Ok(s) => s,
        Err(StoreError::Conflict { .. }) => {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on namespaces \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                ),
            ));
        }
        Err(StoreError::NotFound(_)) => return Err(ApiError::namespace_not_found(&name)),
        Err(e) => return Err(store_error(e)),
    };
    spawn_namespace_finalizer(server.clone(), name);
    Ok((StatusCode::OK, stored.object))
}

/// Deletes everything in the namespace `ns`, then the namespace, in the background.
pub(crate) fn spawn_namespace_finalizer(server: ApiServer, ns: String) {
    tokio::spawn(async move {
        loop {
            match finalize_namespace(&server, &ns).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!("deleting the contents of namespace {ns}: {}", e.message),
            }
            tokio::time::sleep(NAMESPACE_POLL).await;
        }
    });
}

/// One pass: deletes (or marks) what is left in `ns`; when nothing is left, deletes `ns`.
/// Returns whether the namespace is gone.
async fn finalize_namespace(server: &ApiServer, ns: &str) -> Result<bool, ApiError> {
    let store = server.store();
    let mut left = 0;
    let mut seen = HashSet::new();
    for def in server.defs().iter().filter(|d| d.namespaced) {
        let resource = storage_resource(def);
        if !seen.insert(resource.clone()) {
            continue;
        }
        let (items, _, _) = store.list(&resource, Some(ns), None, None).map_err(store_error)?;
        left += items.len();
        for item in items {
            if is_deleting(&item.object) {
                continue;
            }
            match delete_stored(server, def, item, false).await {
                Ok(_) => {}
                Err(e) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
    }
    if left > 0 {
        return Ok(false);
    }
    let key = namespace_key(ns);
    let Some(current) = store.get(&key).map_err(store_error)? else { return Ok(true) };
    if !is_deleting(&current.object) {
        return Ok(true);
    }
    if has_finalizers(&current.object) {
        return Ok(false);
    }
    match store.delete(key, Some(current.mod_rev)).await {
        Ok(_) | Err(StoreError::NotFound(_)) => Ok(true),
        Err(StoreError::Conflict { .. }) => Ok(false),
        Err(e) => Err(store_error(e)),
    }
}
