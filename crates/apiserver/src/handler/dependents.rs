//! Cascading deletion: what happens to the objects whose `metadata.ownerReferences` name a
//! deleted object (DeleteOptions `propagationPolicy`).
//!
//! There is no garbage collector running beside the server, so the cascade runs in the DELETE
//! request itself, synchronously: `Foreground` deletes the dependents (recursively) before the
//! owner, `Background` after it, `Orphan` removes the owner's reference from them and keeps them.
//! Dependents of a namespaced owner are looked for in its namespace only (upstream forbids
//! cross-namespace owner references); those of a cluster-scoped owner everywhere. A dependent
//! that still has another owner loses only the reference to the deleted one, as the garbage
//! collector keeps an object while any owner remains.

use std::collections::{HashSet, VecDeque};

use holdfast_api::ResourceDef;
use serde_json::Value;

use super::delete::delete_stored;
use super::events::{from_storage, to_storage};
use super::{ApiServer, storage_resource, store_error};
use crate::error::ApiError;
use crate::store::{StoreError, Stored};

/// What a delete does to the owned objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Propagation {
    Foreground,
    Background,
    Orphan,
}

impl Propagation {
    /// The policy of a request: the one asked for, else the kind's default. Upstream defaults
    /// to deleting dependents, except batch/v1 Jobs, which keep their Pods unless told otherwise
    /// (the Job strategy's `DefaultGarbageCollectionPolicy`); kubectl always sends `Background`.
    ///
    /// # Errors
    /// 400 for a value that is not a policy.
    pub fn of(asked: Option<&str>, def: &ResourceDef) -> Result<Propagation, ApiError> {
        match asked {
            Some("Foreground") => Ok(Propagation::Foreground),
            Some("Background") => Ok(Propagation::Background),
            Some("Orphan") => Ok(Propagation::Orphan),
            None if def.group == "batch" && def.kind == "Job" => Ok(Propagation::Orphan),
            None => Ok(Propagation::Background),
            Some(other) => Err(ApiError::bad_request(format!(
                "DeletionPropagation: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            ))),
        }
    }
}

/// The uid an object's owner references must carry to point at `obj`.
pub(crate) fn uid_of(obj: &Value) -> Option<String> {
    obj.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
}

/// Applies `policy` to the dependents of the deleted owner with `uid`, in `namespace` (`None`:
/// a cluster-scoped owner, dependents anywhere). For `Foreground`/`Background` the dependents
/// are deleted, and theirs in turn.
///
/// # Errors
/// The store failed; objects already handled stay handled.
pub(crate) async fn cascade(
    server: &ApiServer,
    namespace: Option<&str>,
    uid: String,
    policy: Propagation,
) -> Result<(), ApiError> {
    let mut owners = VecDeque::from([uid]);
    let mut seen = HashSet::new();
    while let Some(owner) = owners.pop_front() {
        if !seen.insert(owner.clone()) {
            continue;
        }
        for (def, stored) in dependents_of(server, namespace, &owner)? {
            let refs = owner_refs(&stored.object);
            let others = refs.iter().filter(|r| r.as_str() != owner).count();
            if policy == Propagation::Orphan || others > 0 {
                drop_reference(server, &def, stored, &owner).await?;
                continue;
            }
            let dependent_uid = uid_of(&stored.object);
            match delete_stored(server, &def, stored, false).await {
                Ok(_) => owners.extend(dependent_uid),
                // Deleted or changed meanwhile by someone else: theirs now.
                Err(e) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// The uids an object's `ownerReferences` point at.
fn owner_refs(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Every object (with the kind it is served as) that names `owner` in its `ownerReferences`.
fn dependents_of(
    server: &ApiServer,
    namespace: Option<&str>,
    owner: &str,
) -> Result<Vec<(ResourceDef, Stored)>, ApiError> {
    let store = server.store();
    let mut found = Vec::new();
    // The uid is random: only rows whose bytes contain it can reference it, and SQLite finds
    // those without handing every row of the namespace over.
    for key in store.keys_containing(namespace, owner).map_err(store_error)? {
        // Served kinds sharing a store resource (the two Event views) are the same object:
        // the first definition stands for it.
        let Some(def) = server.defs().iter().find(|d| storage_resource(d) == key.resource) else {
            continue;
        };
        let Some(stored) = store.get(&key).map_err(store_error)? else { continue };
        if owner_refs(&stored.object).iter().any(|r| r == owner) {
            found.push((def.clone(), stored));
        }
    }
    Ok(found)
}

/// Removes the reference to `owner` from a dependent (it is orphaned or keeps other owners).
async fn drop_reference(
    server: &ApiServer,
    def: &ResourceDef,
    stored: Stored,
    owner: &str,
) -> Result<(), ApiError> {
    let mut obj = from_storage(def, stored.object);
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let left: Vec<Value> = meta
            .get("ownerReferences")
            .and_then(Value::as_array)
            .map(|refs| {
                refs.iter()
                    .filter(|r| r.get("uid").and_then(Value::as_str) != Some(owner))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if left.is_empty() {
            meta.remove("ownerReferences");
        } else {
            meta.insert("ownerReferences".into(), Value::Array(left));
        }
    }
    match server.store().update(stored.key, to_storage(def, obj), stored.mod_rev).await {
        // Changed or gone meanwhile: whoever changed it saw the owner gone too.
        Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => Ok(()),
        Err(e) => Err(store_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn policies_and_defaults() {
        let defs = holdfast_api::registry();
        let job = defs.iter().find(|d| d.group == "batch" && d.kind == "Job").unwrap();
        let pod = defs.iter().find(|d| d.group.is_empty() && d.kind == "Pod").unwrap();
        assert_eq!(Propagation::of(None, job).unwrap(), Propagation::Orphan);
        assert_eq!(Propagation::of(None, pod).unwrap(), Propagation::Background);
        assert_eq!(Propagation::of(Some("Foreground"), job).unwrap(), Propagation::Foreground);
        assert_eq!(Propagation::of(Some("Nope"), pod).unwrap_err().code, 400);
    }

    #[test]
    fn owner_refs_reads_uids() {
        let obj = json!({"metadata": {"ownerReferences": [{"uid": "u1"}, {"uid": "u2"}]}});
        assert_eq!(owner_refs(&obj), ["u1", "u2"]);
        assert!(owner_refs(&json!({"metadata": {}})).is_empty());
    }
}
