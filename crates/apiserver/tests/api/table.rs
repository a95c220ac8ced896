//! Table output (`as=Table`) for list, get and watch, as kubectl asks for it.

use anyhow::{Context, Result};
use holdfast_api::snapshot::VolumeSnapshot;
use kube::api::{Api, PostParams};
use serde_json::Value;

use crate::fixture::{fixture, raw, snapshot};

const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

#[tokio::test]
async fn table_output_for_list_get_and_watch() -> Result<()> {
    let f = fixture()?;
    let api: Api<VolumeSnapshot> = Api::namespaced(f.client.clone(), "default");
    api.create(&PostParams::default(), &snapshot("s1", "data")).await?;
    let (code, _, body) = raw(
        &f.client,
        "GET",
        "/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots?limit=500",
        &[("accept", TABLE_ACCEPT)],
        b"",
    )
    .await?;
    assert_eq!(code, 200);
    let t: Value = serde_json::from_str(&body)?;
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .context("columns")?
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(cols[0], "Name");
    assert!(cols.contains(&"ReadyToUse") && cols.contains(&"SourcePVC"), "{cols:?}");
    assert_eq!(t["rows"][0]["cells"][0], "s1");
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(t["rows"][0]["object"]["metadata"]["namespace"], "default");
    assert!(!t["metadata"]["resourceVersion"].as_str().unwrap_or("").is_empty());

    let (_, _, body) = raw(
        &f.client,
        "GET",
        "/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots/s1",
        &[("accept", TABLE_ACCEPT)],
        b"",
    )
    .await?;
    let t: Value = serde_json::from_str(&body)?;
    assert_eq!(t["rows"].as_array().map(Vec::len), Some(1));

    let (_, _, body) = raw(
        &f.client,
        "GET",
        "/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots?watch=true&timeoutSeconds=1",
        &[("accept", TABLE_ACCEPT)],
        b"",
    )
    .await?;
    let first: Value = serde_json::from_str(body.lines().next().context("one event")?)?;
    assert_eq!(first["type"], "ADDED");
    assert_eq!(first["object"]["kind"], "Table");
    assert_eq!(first["object"]["rows"][0]["cells"][0], "s1");
    Ok(())
}
