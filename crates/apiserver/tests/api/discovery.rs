//! The plain endpoints (version, health, discovery, OpenAPI) and their errors.

use anyhow::{Context, Result};
use serde_json::Value;

use crate::fixture::{fixture, raw};

#[tokio::test]
async fn plain_endpoints_discovery_and_errors() -> Result<()> {
    let f = fixture()?;
    let v = f.client.apiserver_version().await?;
    assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "32"));
    assert!(v.git_version.starts_with("v1.32.0-holdfast"));
    for p in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(raw(&f.client, "GET", p, &[], b"").await?.0, 200, "{p}");
    }

    let (code, _, text) =
        raw(&f.client, "GET", "/apis/nope.example.com/v1/things", &[], b"").await?;
    assert_eq!(code, 404);
    let s: Value = serde_json::from_str(&text)?;
    assert_eq!(s["message"], "the server could not find the requested resource");
    assert_eq!(s["status"], "Failure");
    let (code, _, text) =
        raw(&f.client, "PUT", "/api/v1/namespaces/default/configmaps", &[], b"{}").await?;
    assert_eq!(code, 405);
    assert_eq!(serde_json::from_str::<Value>(&text)?["reason"], "MethodNotAllowed");
    assert_eq!(raw(&f.client, "GET", "/openapi/v2", &[], b"").await?.0, 404);

    let (code, _, text) = raw(&f.client, "GET", "/openapi/v3", &[], b"").await?;
    assert_eq!(code, 200);
    let index: Value = serde_json::from_str(&text)?;
    let url = index["paths"]["apis/snapshot.storage.k8s.io/v1"]["serverRelativeURL"]
        .as_str()
        .context("gv url")?
        .to_string();
    let (code, _, _) = raw(&f.client, "GET", &url, &[], b"").await?;
    assert_eq!(code, 200);

    let (_, headers, text) = raw(
        &f.client,
        "GET",
        "/apis",
        &[(
            "accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )],
        b"",
    )
    .await?;
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
    );
    assert_eq!(serde_json::from_str::<Value>(&text)?["kind"], "APIGroupDiscoveryList");

    // kube-rs legacy discovery finds the custom kinds and the status subresource.
    let discovery = kube::Discovery::new(f.client.clone()).run().await?;
    let group = discovery.get("snapshot.storage.k8s.io").context("snapshot group")?;
    let (ar, caps) = group.recommended_kind("VolumeSnapshot").context("VolumeSnapshot")?;
    assert_eq!(ar.plural, "volumesnapshots");
    assert!(
        caps.subresources
            .iter()
            .any(|(s, _)| s.plural == "volumesnapshots/status" || s.plural == "status")
    );
    Ok(())
}
