//! Writes of API objects that may already have happened: an earlier attempt of the same
//! reconcile, another holdfast instance, or a user got there first. Each helper treats that
//! outcome as success, so reconciles stay idempotent.

use std::fmt::Debug;

use kube::Resource;
use kube::api::{Api, DeleteParams, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// Creates `obj`, or returns the stored object of that name when it already exists.
///
/// # Errors
/// API errors other than "already exists".
pub async fn create_or_get<K>(api: &Api<K>, obj: &K) -> Result<K, Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(created) => Ok(created),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let name = obj.meta().name.clone().unwrap_or_default();
            Ok(api.get(&name).await?)
        }
        Err(error) => Err(error.into()),
    }
}

/// Creates `obj` unless an object of that name exists (which is left as it is); whether this
/// call created it.
///
/// # Errors
/// API errors other than "already exists".
pub async fn create_unless_exists<K>(api: &Api<K>, obj: &K) -> Result<bool, Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    Ok(create_if_absent(api, obj).await?.is_some())
}

/// Like [`create_unless_exists`], returning the object as the API server stored it when this
/// call created it.
///
/// # Errors
/// API errors other than "already exists".
pub async fn create_if_absent<K>(api: &Api<K>, obj: &K) -> Result<Option<K>, Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(created) => Ok(Some(created)),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// Deletes the object `name` unless it is gone already; whether it was there.
///
/// # Errors
/// API errors other than "not found".
pub async fn delete_if_exists<K>(
    api: &Api<K>,
    name: &str,
    params: &DeleteParams,
) -> Result<bool, Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(error.into()),
    }
}
