//! Built-in kinds with behaviour of their own: ConfigMaps and Secrets, Events in both API versions, Pod logs.

use anyhow::{Context, Result};
use holdfast_apiserver::{ApiServer, Store};
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Secret};
use k8s_openapi::api::events::v1::Event as EventV1;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use crate::fixture::{config_map, fixture, pod, raw, rv, status_of};

#[tokio::test]
async fn configmaps_and_secrets() -> Result<()> {
    let f = fixture()?;
    let cms: Api<ConfigMap> = Api::namespaced(f.client.clone(), "default");
    let cm = cms.create(&PostParams::default(), &config_map("c1", &[("a", "1")])).await?;
    let mut cm2 = cm.clone();
    cm2.data = Some([("a".to_string(), "2".to_string())].into());
    let cm2 = cms.replace("c1", &PostParams::default(), &cm2).await?;
    assert_eq!(cm2.data.as_ref().and_then(|d| d.get("a")).map(String::as_str), Some("2"));
    assert_ne!(rv(&cm), rv(&cm2));
    // Built-in kinds accept unconditional updates.
    let mut cm3 = cm2.clone();
    cm3.metadata.resource_version = None;
    cm3.data = Some([("a".to_string(), "3".to_string())].into());
    cms.replace("c1", &PostParams::default(), &cm3).await?;
    cms.delete("c1", &DeleteParams::default()).await?;
    assert!(cms.get_opt("c1").await?.is_none());

    let secrets: Api<Secret> = Api::namespaced(f.client.clone(), "default");
    let mut s = Secret::default();
    s.metadata.name = Some("creds".into());
    s.string_data = Some([("password".to_string(), "hunter2".to_string())].into());
    let s = secrets.create(&PostParams::default(), &s).await?;
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    assert!(s.string_data.is_none());
    let data = s.data.context("data")?;
    assert_eq!(data.get("password").map(|b| b.0.as_slice()), Some(b"hunter2".as_slice()));
    Ok(())
}

#[tokio::test]
async fn events_are_served_in_both_api_versions() -> Result<()> {
    let f = fixture()?;
    let cms: Api<ConfigMap> = Api::namespaced(f.client.clone(), "default");
    let cm = cms.create(&PostParams::default(), &config_map("subject", &[])).await?;
    let recorder = kube::runtime::events::Recorder::new(
        f.client.clone(),
        kube::runtime::events::Reporter { controller: "holdfast-test".into(), instance: None },
    );
    let ev = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Normal,
        reason: "Tested".into(),
        note: Some("it works".into()),
        action: "Test".into(),
        secondary: None,
    };
    let reference = kube::Resource::object_ref(&cm, &());
    // The first publish POSTs events.k8s.io/v1; the second merge-patches the series.
    recorder.publish(&ev, &reference).await?;
    recorder.publish(&ev, &reference).await?;

    let v1: Api<EventV1> = Api::namespaced(f.client.clone(), "default");
    let list = v1.list(&ListParams::default()).await?;
    assert_eq!(list.items.len(), 1);
    let e = &list.items[0];
    assert_eq!(e.note.as_deref(), Some("it works"));
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(2));
    assert_eq!(e.reporting_controller.as_deref(), Some("holdfast-test"));

    let core: Api<CoreEvent> = Api::namespaced(f.client.clone(), "default");
    let described = core
        .list(
            &ListParams::default()
                .fields("involvedObject.name=subject,involvedObject.kind=ConfigMap"),
        )
        .await?;
    assert_eq!(described.items.len(), 1);
    let c = &described.items[0];
    assert_eq!(c.message.as_deref(), Some("it works"));
    assert_eq!(c.reason.as_deref(), Some("Tested"));
    assert_eq!(c.involved_object.uid, cm.metadata.uid);
    Ok(())
}

#[tokio::test]
async fn pod_logs_are_served_from_the_log_directory() -> Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("store.db"))?;
    let logs = dir.path().join("logs");
    let server = ApiServer::new(store, holdfast_api::registry()).with_pod_log_dir(logs.clone());
    let client = Client::new(server.router(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("p", &[], &["main", "side"])?).await?;
    let path = server.pod_log_path("default", "p", "main").context("log dir set")?;
    assert_eq!(path, logs.join("default/p/main.log"));
    std::fs::create_dir_all(path.parent().context("parent")?)?;
    std::fs::write(&path, "one\ntwo\nthree\n")?;

    // kube-rs (what `kubectl logs` asks for): the first container by default, tailLines.
    assert_eq!(pods.logs("p", &kube::api::LogParams::default()).await?, "one\ntwo\nthree\n");
    let tail = kube::api::LogParams { tail_lines: Some(2), ..Default::default() };
    assert_eq!(pods.logs("p", &tail).await?, "two\nthree\n");
    let (code, headers, body) = raw(
        &client,
        "GET",
        "/api/v1/namespaces/default/pods/p/log?container=main&follow=false&limitBytes=3",
        &[],
        b"",
    )
    .await?;
    assert_eq!((code, body.as_str()), (200, "one"));
    assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some("text/plain"));

    // A container without a log yet, a pod that does not exist: 404; a container the pod does
    // not have: 400.
    let side = kube::api::LogParams { container: Some("side".into()), ..Default::default() };
    let s = status_of(pods.logs("p", &side).await)?;
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
    let s = status_of(pods.logs("nope", &kube::api::LogParams::default()).await)?;
    assert_eq!(s.code, 404);
    assert_eq!(s.message, "pods \"nope\" not found");
    let bad = kube::api::LogParams { container: Some("other".into()), ..Default::default() };
    assert_eq!(status_of(pods.logs("p", &bad).await)?.code, 400);
    let (code, _, _) =
        raw(&client, "POST", "/api/v1/namespaces/default/pods/p/log", &[], b"{}").await?;
    assert_eq!(code, 405);
    Ok(())
}
