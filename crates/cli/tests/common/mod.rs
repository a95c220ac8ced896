//! Helpers the end-to-end tests of this crate share (a module of each test binary that needs
//! them, not a test of its own).

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::ResourceExt as _;
use kube::api::{Api, PostParams};
use serde_json::Value;

/// Creates `obj` (a JSON manifest of kind `K`) through `api`.
pub async fn create<K>(api: &Api<K>, obj: Value) -> Result<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    let obj: K = serde_json::from_value(obj).context("the test manifest matches the type")?;
    api.create(&PostParams::default(), &obj)
        .await
        .with_context(|| format!("create {}", obj.name_any()))
}

/// The host directory of the bound claim `namespace/claim` (its PV's hostPath or local path).
pub async fn claim_dir(client: &kube::Client, namespace: &str, claim: &str) -> Result<PathBuf> {
    let pvc =
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace).get(claim).await?;
    let volume = pvc.spec.and_then(|s| s.volume_name).context("the claim is not bound")?;
    let spec = Api::<PersistentVolume>::all(client.clone())
        .get(&volume)
        .await?
        .spec
        .context("the volume has no spec")?;
    let path = spec
        .host_path
        .map(|h| h.path)
        .or(spec.local.map(|l| l.path))
        .context("the volume is neither hostPath nor local")?;
    Ok(PathBuf::from(path))
}
