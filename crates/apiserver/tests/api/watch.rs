//! Watches: the kube-runtime watcher, 410 after compaction and the relist, raw watches with bookmarks, selectors and initial events.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::fixture::{config_map, fixture, raw, rv};

#[tokio::test]
async fn watcher_sees_added_modified_deleted_in_order() -> Result<()> {
    let f = fixture()?;
    let api: Api<ConfigMap> = Api::namespaced(f.client.clone(), "default");
    api.create(&PostParams::default(), &config_map("before", &[])).await?;
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    // The initial list.
    let mut initial = Vec::new();
    loop {
        match events.try_next().await?.context("stream ended")? {
            watcher::Event::Init => {}
            watcher::Event::InitApply(cm) => initial.push(cm.name_any()),
            watcher::Event::InitDone => break,
            other => bail!("unexpected {other:?} during init"),
        }
    }
    assert_eq!(initial, ["before"]);

    api.create(&PostParams::default(), &config_map("w", &[("a", "1")])).await?;
    api.patch("w", &PatchParams::default(), &Patch::Merge(json!({"data": {"a": "2"}}))).await?;
    api.delete("w", &DeleteParams::default()).await?;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(20), events.try_next())
            .await??
            .context("stream ended")?;
        match ev {
            watcher::Event::Apply(cm) => seen.push(format!(
                "apply {} {}",
                cm.name_any(),
                cm.data.unwrap_or_default().get("a").cloned().unwrap_or_default()
            )),
            watcher::Event::Delete(cm) => seen.push(format!("delete {}", cm.name_any())),
            other => bail!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["apply w 1", "apply w 2", "delete w"]);
    Ok(())
}

#[tokio::test]
async fn watch_from_a_compacted_revision_sends_410_and_the_watcher_relists() -> Result<()> {
    let f = fixture()?;
    let api: Api<ConfigMap> = Api::namespaced(f.client.clone(), "default");
    let first = api.create(&PostParams::default(), &config_map("a", &[])).await?;
    for i in 0..5 {
        api.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"i": i.to_string()}})),
        )
        .await?;
    }
    let store = f.server.store().clone();
    tokio::task::spawn_blocking(move || store.compact(0, Duration::ZERO)).await??;

    // A raw watch from the old revision: one ERROR event with a 410 Status, then the end.
    let mut stream = api.watch(&WatchParams::default(), &rv(&first)).await?.boxed();
    match stream.try_next().await?.context("one event")? {
        WatchEvent::Error(e) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
            assert!(
                e.message.starts_with(&format!("too old resource version: {}", rv(&first))),
                "{}",
                e.message
            );
        }
        other => bail!("expected ERROR, got {other:?}"),
    }
    assert!(stream.try_next().await?.is_none(), "the stream ends after the ERROR");

    // kube-runtime: a watcher whose watch ends (timeoutSeconds=1) re-watches from its last RV;
    // once that RV is compacted the 410 ERROR makes it relist (a second Init).
    let mut events = watcher(api.clone(), watcher::Config::default().timeout(1)).boxed();
    let mut inits = 0;
    let mut compacted = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while inits < 2 {
        if Instant::now() > deadline {
            bail!("the watcher never relisted");
        }
        match tokio::time::timeout(Duration::from_secs(20), events.next())
            .await?
            .context("stream ended")?
        {
            Ok(watcher::Event::Init) => inits += 1,
            Ok(watcher::Event::InitDone) if !compacted => {
                // Move the store past the list's revision with writes to another kind, and compact.
                let secrets: Api<Secret> = Api::namespaced(f.client.clone(), "default");
                for i in 0..3 {
                    let mut s = Secret::default();
                    s.metadata.name = Some(format!("s{i}"));
                    secrets.create(&PostParams::default(), &s).await?;
                }
                let store = f.server.store().clone();
                tokio::task::spawn_blocking(move || store.compact(0, Duration::ZERO)).await??;
                compacted = true;
            }
            _ => {}
        }
    }
    Ok(())
}

#[tokio::test]
async fn raw_watch_bookmarks_selectors_and_initial_events() -> Result<()> {
    let f = fixture()?;
    let api: Api<ConfigMap> = Api::namespaced(f.client.clone(), "default");
    let mut cm = config_map("a", &[]);
    cm.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
    let a = api.create(&PostParams::default(), &cm).await?;

    // From the creation RV, with a selector: relabelling away is a DELETED, back is an ADDED.
    let client = f.client.clone();
    let from = rv(&a);
    let watch = tokio::spawn(async move {
        raw(
            &client,
            "GET",
            &format!("/api/v1/namespaces/default/configmaps?watch=1&labelSelector=app%3Dweb&allowWatchBookmarks=true&timeoutSeconds=2&resourceVersion={from}"),
            &[],
            b"",
        )
        .await
    });
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})),
    )
    .await?;
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await?;
    let (code, headers, body) = watch.await??;
    assert_eq!(code, 200);
    assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));
    let events: Vec<Value> = body.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["DELETED", "ADDED", "BOOKMARK"], "{body}");
    let bookmark = &events[2]["object"];
    assert_eq!(bookmark["kind"], "ConfigMap");
    assert_eq!(bookmark["apiVersion"], "v1");
    assert_eq!(
        bookmark["metadata"]["resourceVersion"],
        events[1]["object"]["metadata"]["resourceVersion"]
    );

    // Streaming list: ADDED for what exists, then the initial-events-end bookmark.
    let (_, _, body) = raw(
        &f.client,
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1",
        &[],
        b"",
    )
    .await?;
    let events: Vec<Value> = body.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "a");
    assert_eq!(events[1]["type"], "BOOKMARK");
    assert_eq!(events[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");

    // Without NotOlderThan it is refused rather than ignored.
    let (code, _, _) = raw(
        &f.client,
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true",
        &[],
        b"",
    )
    .await?;
    assert_eq!(code, 422);
    Ok(())
}

/// The events of a finished raw watch.
async fn raw_watch(client: &Client, query: &str) -> Result<Vec<Value>> {
    let (code, _, body) = raw(
        client,
        "GET",
        &format!("/api/v1/namespaces/default/configmaps?watch=1&{query}"),
        &[],
        b"",
    )
    .await?;
    anyhow::ensure!(code == 200, "watch answered {code}: {body}");
    Ok(body.lines().map(serde_json::from_str).collect::<Result<_, _>>()?)
}

#[tokio::test]
async fn watch_bookmarks_carry_the_progress_and_only_when_allowed() -> Result<()> {
    let f = fixture()?;
    let api: Api<ConfigMap> = Api::namespaced(f.client.clone(), "default");
    let mut web = config_map("a", &[]);
    web.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
    let a = api.create(&PostParams::default(), &web).await?;
    let mut db = config_map("b", &[]);
    db.metadata.labels = Some([("app".to_string(), "db".to_string())].into());
    let b = api.create(&PostParams::default(), &db).await?;
    // Another kind's write moves the store past b; it is no event of this watch.
    let mut s = Secret::default();
    s.metadata.name = Some("s".into());
    let secret = api_secret(&f.client).create(&PostParams::default(), &s).await?;

    // From before a: a is delivered, b filtered out; the bookmark at the end says the watcher
    // has seen everything up to b (resuming from there misses nothing), not the store's newer
    // revision from the Secret.
    let from = (rv(&a).parse::<u64>()? - 1).to_string();
    let events = raw_watch(
        &f.client,
        &format!("labelSelector=app%3Dweb&allowWatchBookmarks=true&timeoutSeconds=1&resourceVersion={from}"),
    )
    .await?;
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["ADDED", "BOOKMARK"], "{events:?}");
    assert_eq!(events[1]["object"]["metadata"]["resourceVersion"], rv(&b).as_str());
    assert!(rv(&secret).parse::<u64>()? > rv(&b).parse::<u64>()?);

    // Without allowWatchBookmarks there is none.
    let events = raw_watch(&f.client, &format!("timeoutSeconds=1&resourceVersion={from}")).await?;
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["ADDED", "ADDED"], "{events:?}");

    // A revision from the future: one ERROR event (504), never a bookmark claiming it.
    let events =
        raw_watch(&f.client, "allowWatchBookmarks=true&timeoutSeconds=1&resourceVersion=999999")
            .await?;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 504);

    // Streaming lists need bookmarks allowed; resourceVersionMatch needs sendInitialEvents.
    for query in [
        "watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
        "watch=1&resourceVersionMatch=NotOlderThan&resourceVersion=1",
    ] {
        let (code, _, body) = raw(
            &f.client,
            "GET",
            &format!("/api/v1/namespaces/default/configmaps?{query}"),
            &[],
            b"",
        )
        .await?;
        assert_eq!(code, 422, "{query}: {body}");
    }
    Ok(())
}

fn api_secret(client: &Client) -> Api<Secret> {
    Api::namespaced(client.clone(), "default")
}
