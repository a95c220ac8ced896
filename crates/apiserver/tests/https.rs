//! The API server behind real HTTPS with bearer tokens, driven by kube-rs through the kubeconfig
//! the server writes: TLS (CA, SANs, ALPN), authentication and authorization bodies, health
//! endpoints without a token, robustness against bad clients, graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use holdfast_testkit::{HttpsApi, kubeconfig};
use http_body_util::BodyExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Sends one request and returns the status code and body text.
async fn raw(
    client: &kube::Client,
    method: http::Method,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, String)> {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(bytes))?;
    let response = client.send(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8(body.to_vec())?))
}

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"test": "https"}},
        "data": {"k": "v"}
    }))
    .expect("valid ConfigMap")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_over_https_creates_lists_and_watches() -> Result<()> {
    let server = HttpsApi::start().await?;
    let client = server.admin().await?;
    let version = client.apiserver_version().await?;
    assert_eq!(version.major, "1");

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = cms.create(&PostParams::default(), &config_map("a")).await?;
    let rv = created
        .metadata
        .resource_version
        .clone()
        .context("created object has a resourceVersion")?;
    assert_eq!(created.data.unwrap()["k"], "v");

    let list = cms.list(&ListParams::default().labels("test=https")).await?;
    let names: Vec<_> = list.items.iter().filter_map(|c| c.metadata.name.clone()).collect();
    assert_eq!(names, vec!["a"]);

    // A watch from the create's revision sees the next write, then a delete.
    let mut events = cms.watch(&WatchParams::default(), &rv).await?.boxed();
    cms.create(&PostParams::default(), &config_map("b")).await?;
    cms.delete("a", &Default::default()).await?;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .context("watch event did not arrive")??
            .context("watch stream ended")?;
        match event {
            WatchEvent::Added(cm) => seen.push(format!("ADDED {}", cm.metadata.name.unwrap())),
            WatchEvent::Deleted(cm) => seen.push(format!("DELETED {}", cm.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => {}
            other => bail!("unexpected event {other:?}"),
        }
    }
    assert_eq!(seen, vec!["ADDED b", "DELETED a"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_bad_token_gets_the_exact_401_status() -> Result<()> {
    let server = HttpsApi::start().await?;
    let expected = json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401});
    let bad = server.client("0123456789abcdef").await?;
    for path in [
        "/api",
        "/apis",
        "/api/v1/namespaces",
        "/apis/snapshot.storage.k8s.io/v1/volumesnapshots",
        "/openapi/v3",
    ] {
        let (status, body) = raw(&bad, http::Method::GET, path, None).await?;
        assert_eq!(status, 401, "{path}");
        assert_eq!(body, expected.to_string(), "{path}");
    }

    // No Authorization header at all: a kubeconfig without a user token.
    let kc = server.kubeconfig("x").replace("    token: \"x\"\n", "");
    let anonymous = kubeconfig::client(&kc).await?;
    let (status, body) = raw(&anonymous, http::Method::GET, "/api/v1/namespaces", None).await?;
    assert_eq!((status, body), (401, expected.to_string()));

    // kube-rs maps it to an API error with the Status fields.
    let cms: Api<ConfigMap> = Api::namespaced(bad, "default");
    match cms.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 401);
            assert_eq!(status.reason, "Unauthorized");
        }
        other => bail!("expected 401, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_reads_but_every_write_gets_the_exact_403_status() -> Result<()> {
    let server = HttpsApi::start().await?;
    let admin = server.admin().await?;
    Api::<ConfigMap>::namespaced(admin, "default")
        .create(&PostParams::default(), &config_map("seen"))
        .await?;

    let viewer = server.viewer().await?;
    let cms: Api<ConfigMap> = Api::namespaced(viewer.clone(), "default");
    assert_eq!(cms.get("seen").await?.metadata.name.as_deref(), Some("seen"));
    assert_eq!(cms.list(&ListParams::default()).await?.items.len(), 1);

    let (status, body) = raw(
        &viewer,
        http::Method::DELETE,
        "/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots/s1",
        None,
    )
    .await?;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "volumesnapshots.snapshot.storage.k8s.io \"s1\" is forbidden: User \"viewer\" cannot delete resource \"volumesnapshots\" in API group \"snapshot.storage.k8s.io\" in the namespace \"default\"",
            "reason": "Forbidden",
            "details": {"name": "s1", "group": "snapshot.storage.k8s.io", "kind": "volumesnapshots"},
            "code": 403
        })
        .to_string()
    );

    match cms.create(&PostParams::default(), &config_map("no")).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403);
            assert_eq!(status.reason, "Forbidden");
            assert_eq!(
                status.message,
                "configmaps is forbidden: User \"viewer\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"default\""
            );
        }
        other => bail!("expected 403, got {other:?}"),
    }
    // Nothing was written.
    assert!(cms.get_opt("no").await?.is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_version_need_no_token() -> Result<()> {
    let server = HttpsApi::start().await?;
    let bad = server.client("wrong").await?;
    for path in ["/healthz", "/livez", "/readyz"] {
        let (status, _) = raw(&bad, http::Method::GET, path, None).await?;
        assert_eq!(status, 200, "{path}");
    }
    let (status, body) = raw(&bad, http::Method::GET, "/version", None).await?;
    assert_eq!(status, 200);
    let version: Value = serde_json::from_str(&body)?;
    assert_eq!(version["major"], "1");
    Ok(())
}

/// A rustls client that trusts only the server's CA, offering `alpn`.
fn tls_client(ca_pem: &str, alpn: &[&[u8]]) -> Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes())?)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_covers_loopback_names_and_alpn_offers_h2() -> Result<()> {
    let server = HttpsApi::start().await?;
    let port = server.running().addr().port();
    for (name, alpn, expected) in [
        ("localhost", &[b"h2".as_slice(), b"http/1.1"][..], b"h2".as_slice()),
        ("127.0.0.1", &[b"http/1.1".as_slice()][..], b"http/1.1".as_slice()),
    ] {
        let connector = tls_client(&server.tls().ca_pem, alpn)?;
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string())?;
        let stream = connector.connect(server_name, tcp).await?;
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(expected), "{name}");
    }
    // ::1 is in the certificate too; the server listens on IPv4 only, so check the name alone.
    let connector = tls_client(&server.tls().ca_pem, &[])?;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let wrong = rustls::pki_types::ServerName::try_from("example.com")?;
    assert!(
        connector.connect(wrong, tcp).await.is_err(),
        "a name outside the certificate must fail verification"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_do_not_stop_the_server() -> Result<()> {
    let server = HttpsApi::start().await?;
    let addr = server.running().addr();
    // Plain HTTP on the TLS port.
    let mut plain = tokio::net::TcpStream::connect(addr).await?;
    plain.write_all(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut buf)).await;
    // A client that connects and hangs up at once, and one that sends garbage after TLS.
    drop(tokio::net::TcpStream::connect(addr).await?);
    let connector = tls_client(&server.tls().ca_pem, &[b"http/1.1"])?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls =
        connector.connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp).await?;
    tls.write_all(b"\x00\x01\x02 not http\r\n\r\n").await?;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut reply)).await;

    let client = server.admin().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.create(&PostParams::default(), &config_map("after")).await?;
    assert!(cms.get_opt("after").await?.is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_while_a_watch_is_open() -> Result<()> {
    let server = HttpsApi::start().await?;
    let client = server.admin().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let created = cms.create(&PostParams::default(), &config_map("w")).await?;
    let rv = created.metadata.resource_version.unwrap_or_default();
    let mut events = cms.watch(&WatchParams::default(), &rv).await?.boxed();
    tokio::time::timeout(Duration::from_secs(30), server.shutdown())
        .await
        .context("shutdown did not finish")??;
    // The open watch ends (or errors) once the server is gone.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = events.next().await {}
    })
    .await;
    assert!(end.is_ok(), "watch stream did not end after shutdown");
    Ok(())
}
