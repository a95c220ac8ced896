//! Finalizers, added and removed in one place. An object gets its finalizer with the first write
//! that leaves something to clean up (a Backup only once it is about to write data), and loses
//! it when the cleanup is done; every edit carries the object's `resourceVersion`, so an edit
//! based on a stale copy fails (and is retried) instead of dropping someone else's finalizer.

use std::fmt::Debug;

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::Error;

/// The finalizer of every dataprotection object (Backup, BackupRepo), as upstream names it.
pub const DATA_PROTECTION: &str = "dataprotection.kubeblocks.io/finalizer";

/// Whether `obj` carries `finalizer`.
pub fn has<K: Resource>(obj: &K, finalizer: &str) -> bool {
    obj.finalizers().iter().any(|f| f == finalizer)
}

/// The finalizers of `obj` with `finalizer` added, for a patch that writes other metadata too.
pub fn added<K: Resource>(obj: &K, finalizer: &str) -> Vec<String> {
    let mut finalizers = obj.finalizers().to_vec();
    if !has(obj, finalizer) {
        finalizers.push(finalizer.to_owned());
    }
    finalizers
}

/// Adds `finalizer` to `obj` unless it has it; whether a patch was sent.
///
/// # Errors
/// [`Error::Finalizer`] when the API refuses the edit (the object changed meanwhile).
pub async fn add<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<bool, Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    if has(obj, finalizer) {
        return Ok(false);
    }
    patch(api, obj, added(obj, finalizer).into()).await?;
    Ok(true)
}

/// Removes `finalizer` from `obj`, which lets the API server delete it once no other finalizer
/// is left. An object already gone is fine.
///
/// # Errors
/// [`Error::Finalizer`] when the API refuses the edit (the object changed meanwhile).
pub async fn remove<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    remove_each(api, obj, &[finalizer]).await
}

/// Removes every one of `finalizers` from `obj` in one edit (several edits in a row would each
/// need the `resourceVersion` the one before made). An object already gone is fine.
///
/// # Errors
/// [`Error::Finalizer`] when the API refuses the edit (the object changed meanwhile).
pub async fn remove_each<K>(api: &Api<K>, obj: &K, finalizers: &[&str]) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    if !finalizers.iter().any(|f| has(obj, f)) {
        return Ok(());
    }
    let rest: Vec<&String> =
        obj.finalizers().iter().filter(|f| !finalizers.contains(&f.as_str())).collect();
    match patch(api, obj, json!(rest)).await {
        Err(Error::Finalizer { source: kube::Error::Api(status), .. }) if status.code == 404 => {
            Ok(())
        }
        other => other,
    }
}

async fn patch<K>(api: &Api<K>, obj: &K, finalizers: Value) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let name = obj.name_any();
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": obj.resource_version(),
    }});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|source| Error::Finalizer { object: name, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    #[test]
    fn adding_keeps_the_others_and_never_doubles() {
        let mut obj = ConfigMap::default();
        obj.metadata.finalizers = Some(vec!["other/keep".into()]);
        assert!(!has(&obj, DATA_PROTECTION));
        let once = added(&obj, DATA_PROTECTION);
        assert_eq!(once, ["other/keep", DATA_PROTECTION]);
        obj.metadata.finalizers = Some(once.clone());
        assert!(has(&obj, DATA_PROTECTION));
        assert_eq!(added(&obj, DATA_PROTECTION), once);
    }
}
