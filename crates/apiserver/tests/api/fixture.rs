//! What every test of the binary shares: a fresh server, objects to create, raw requests, polling.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use holdfast_api::snapshot::{VolumeSnapshot, VolumeSnapshotSource, VolumeSnapshotSpec};
use holdfast_testkit::InProcessApi;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use serde_json::{Value, json};

/// A server on a fresh store in a temporary directory, with a client that calls its router
/// directly, the way controllers do.
pub fn fixture() -> Result<InProcessApi> {
    Ok(InProcessApi::start()?)
}

pub fn snapshot(name: &str, pvc: &str) -> VolumeSnapshot {
    VolumeSnapshot::new(
        name,
        VolumeSnapshotSpec {
            source: VolumeSnapshotSource {
                persistent_volume_claim_name: Some(pvc.into()),
                volume_snapshot_content_name: None,
            },
            volume_snapshot_class_name: None,
        },
    )
}

pub fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.data = Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    cm
}

/// The `Status` of a failed call.
pub fn status_of<T: std::fmt::Debug>(r: kube::Result<T>) -> Result<Box<kube::core::Status>> {
    match r {
        Err(kube::Error::Api(s)) => Ok(s),
        other => bail!("expected an API error, got {other:?}"),
    }
}

/// A raw request; returns status, headers and body text.
pub async fn raw(
    client: &Client,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, http::HeaderMap, String)> {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client.send(b.body(kube::client::Body::from(body.to_vec()))?).await?;
    let (parts, body) = resp.into_parts();
    let bytes = body.collect_bytes().await?;
    Ok((parts.status.as_u16(), parts.headers, String::from_utf8(bytes.to_vec())?))
}

/// Polls `check` until it holds, failing after 20 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

pub fn rv(obj: &impl kube::Resource) -> String {
    obj.meta().resource_version.clone().unwrap_or_default()
}

pub fn pod(
    name: &str,
    owners: &[(&str, &str, &str)],
    containers: &[&str],
) -> Result<k8s_openapi::api::core::v1::Pod> {
    let refs: Vec<Value> = owners
        .iter()
        .map(|(kind, owner, uid)| {
            json!({"apiVersion": if *kind == "Job" { "batch/v1" } else { "v1" }, "kind": kind, "name": owner, "uid": uid})
        })
        .collect();
    let containers: Vec<Value> =
        containers.iter().map(|c| json!({"name": c, "image": "busybox"})).collect();
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "ownerReferences": refs},
        "spec": {"containers": containers, "restartPolicy": "Never"},
    }))?)
}

pub fn job(name: &str) -> Result<Job> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [{"name": "main", "image": "busybox"}],
                                       "restartPolicy": "Never"}}},
    }))?)
}
