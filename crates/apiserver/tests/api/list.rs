//! Lists: paging with limit/continue, label and field selectors, reads at a revision, and the stored rows they return.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::fixture::{config_map, fixture, raw, rv, status_of};

#[tokio::test]
async fn list_paging_with_limit_and_continue() -> Result<()> {
    let f = fixture()?;
    let api: Api<ConfigMap> = Api::namespaced(f.client.clone(), "default");
    for i in 0..5 {
        api.create(&PostParams::default(), &config_map(&format!("c{i}"), &[])).await?;
    }
    let first = api.list(&ListParams::default().limit(2)).await?;
    assert_eq!(first.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(), ["c0", "c1"]);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().context("continue token")?;
    let second = api.list(&ListParams::default().limit(2).continue_token(&token)).await?;
    assert_eq!(second.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(), ["c2", "c3"]);
    assert_eq!(
        second.metadata.resource_version, first.metadata.resource_version,
        "pages share the first page's RV"
    );
    let third = api
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(second.metadata.continue_.as_deref().unwrap_or("")),
        )
        .await?;
    assert_eq!(third.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(), ["c4"]);
    assert!(third.metadata.continue_.as_deref().unwrap_or("").is_empty());

    // Across namespaces.
    f.server.ensure_namespace("other").await?;
    Api::<ConfigMap>::namespaced(f.client.clone(), "other")
        .create(&PostParams::default(), &config_map("x", &[]))
        .await?;
    let all = Api::<ConfigMap>::all(f.client.clone()).list(&ListParams::default()).await?;
    assert_eq!(all.items.len(), 6);

    // A token older than the compacted revision has expired.
    for i in 0..3 {
        api.patch(
            "c0",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"i": i.to_string()}})),
        )
        .await?;
    }
    let store = f.server.store().clone();
    tokio::task::spawn_blocking(move || store.compact(0, Duration::ZERO)).await??;
    let s = status_of(api.list(&ListParams::default().limit(2).continue_token(&token)).await)?;
    assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
    Ok(())
}

#[tokio::test]
async fn label_and_field_selectors() -> Result<()> {
    let f = fixture()?;
    let api: Api<ConfigMap> = Api::namespaced(f.client.clone(), "default");
    for (name, app) in [("a", "web"), ("b", "db"), ("c", "web")] {
        let mut cm = config_map(name, &[]);
        cm.metadata.labels = Some([("app".to_string(), app.to_string())].into());
        api.create(&PostParams::default(), &cm).await?;
    }
    let names = |l: kube::core::ObjectList<ConfigMap>| {
        l.items.iter().map(|c| c.name_any()).collect::<Vec<_>>()
    };
    assert_eq!(names(api.list(&ListParams::default().labels("app=web")).await?), ["a", "c"]);
    assert_eq!(names(api.list(&ListParams::default().labels("app in (db,x)")).await?), ["b"]);
    assert_eq!(names(api.list(&ListParams::default().labels("app!=web")).await?), ["b"]);
    assert_eq!(names(api.list(&ListParams::default().fields("metadata.name=c")).await?), ["c"]);
    assert_eq!(
        names(api.list(&ListParams::default().fields("metadata.name!=c").labels("app=web")).await?),
        ["a"]
    );
    // Paging with a selector still returns every match once.
    let page = api.list(&ListParams::default().labels("app=web").limit(1)).await?;
    assert_eq!(names(page.clone()), ["a"]);
    let rest = api
        .list(
            &ListParams::default()
                .labels("app=web")
                .limit(1)
                .continue_token(page.metadata.continue_.as_deref().unwrap_or("")),
        )
        .await?;
    assert_eq!(names(rest), ["c"]);

    let s = status_of(api.list(&ListParams::default().fields("spec.foo=x")).await)?;
    assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
    assert!(s.message.contains("\"spec.foo\" is not a known field selector"), "{}", s.message);
    let s = status_of(api.list(&ListParams::default().labels("app in (")).await)?;
    assert_eq!(s.code, 400);

    // deletecollection honours selectors.
    api.delete_collection(&DeleteParams::default(), &ListParams::default().labels("app=web"))
        .await?;
    assert_eq!(names(api.list(&ListParams::default()).await?), ["b"]);
    Ok(())
}

/// The data of the ConfigMaps in a list, by name.
fn names_and_data(list: &kube::core::ObjectList<ConfigMap>) -> Vec<(String, Option<String>)> {
    list.items
        .iter()
        .map(|c| (c.name_any(), c.data.as_ref().and_then(|d| d.get("v").cloned())))
        .collect()
}

#[tokio::test]
async fn list_at_exact_and_not_older_than_revisions() -> Result<()> {
    let f = fixture()?;
    let api: Api<ConfigMap> = Api::namespaced(f.client.clone(), "default");
    let a = api.create(&PostParams::default(), &config_map("a", &[("v", "1")])).await?;
    let b = api.create(&PostParams::default(), &config_map("b", &[("v", "1")])).await?;
    api.patch("a", &PatchParams::default(), &Patch::Merge(json!({"data": {"v": "2"}}))).await?;
    api.delete("b", &DeleteParams::default()).await?;
    api.create(&PostParams::default(), &config_map("c", &[("v", "1")])).await?;
    let exact = |rv: &str| ListParams::default().at(rv).matching(kube::api::VersionMatch::Exact);

    // Exact: the state at that revision, rebuilt from the log (a before its patch, b before its
    // deletion, c not yet created), with the list RV being the requested one.
    let at_b = api.list(&exact(&rv(&b))).await?;
    assert_eq!(
        names_and_data(&at_b),
        [("a".into(), Some("1".into())), ("b".into(), Some("1".into()))]
    );
    assert_eq!(at_b.metadata.resource_version.as_deref(), Some(rv(&b).as_str()));
    assert_eq!(at_b.items[0].metadata.resource_version.as_deref(), Some(rv(&a).as_str()));
    let at_a = api.list(&exact(&rv(&a))).await?;
    assert_eq!(names_and_data(&at_a), [("a".into(), Some("1".into()))]);

    // NotOlderThan: the latest state.
    let latest = api
        .list(&ListParams::default().at(&rv(&a)).matching(kube::api::VersionMatch::NotOlderThan))
        .await?;
    assert_eq!(
        names_and_data(&latest),
        [("a".into(), Some("2".into())), ("c".into(), Some("1".into()))]
    );

    // A limit with resourceVersion=N and no match is exact too (the legacy paged semantics), and
    // every continue page reads the same snapshot, whatever is written in between.
    let page1 = api.list(&ListParams::default().at(&rv(&b)).limit(1)).await?;
    assert_eq!(names_and_data(&page1), [("a".into(), Some("1".into()))]);
    assert_eq!(page1.metadata.remaining_item_count, Some(1));
    api.create(&PostParams::default(), &config_map("aa", &[("v", "1")])).await?;
    let token = page1.metadata.continue_.clone().context("continue token")?;
    let page2 = api.list(&ListParams::default().limit(1).continue_token(&token)).await?;
    assert_eq!(names_and_data(&page2), [("b".into(), Some("1".into()))]);
    assert!(page2.metadata.continue_.as_deref().unwrap_or("").is_empty());

    // A revision the store has not reached: 504 Timeout, as the apiserver answers.
    let s = status_of(api.list(&exact("999999")).await)?;
    assert_eq!((s.code, s.reason.as_str()), (504, "Timeout"));
    let s = status_of(
        api.list(
            &ListParams::default().at("999999").matching(kube::api::VersionMatch::NotOlderThan),
        )
        .await,
    )?;
    assert_eq!(s.code, 504);

    // Contradictory options are refused, never ignored.
    for (query, code) in [
        ("resourceVersionMatch=Exact", 422),
        ("resourceVersionMatch=Exact&resourceVersion=0", 422),
        ("resourceVersionMatch=Newest&resourceVersion=1", 422),
        ("resourceVersion=abc", 400),
        (&*format!("resourceVersion={}&continue={token}", rv(&a)), 400),
    ] {
        let (got, _, body) = raw(
            &f.client,
            "GET",
            &format!("/api/v1/namespaces/default/configmaps?{query}"),
            &[],
            b"",
        )
        .await?;
        assert_eq!(got, code, "{query}: {body}");
    }

    // Once the log no longer reaches back to the revision: 410 Expired instead of a silently
    // different state; the current revision stays readable exactly.
    let store = f.server.store().clone();
    tokio::task::spawn_blocking(move || store.compact(0, Duration::ZERO)).await??;
    let s = status_of(api.list(&exact(&rv(&b))).await)?;
    assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
    assert!(
        s.message.starts_with(&format!("too old resource version: {}", rv(&b))),
        "{}",
        s.message
    );
    let now = api.list(&ListParams::default()).await?;
    let again = api.list(&exact(now.metadata.resource_version.as_deref().unwrap_or(""))).await?;
    assert_eq!(names_and_data(&again), names_and_data(&now));
    Ok(())
}

#[tokio::test]
async fn list_copies_stored_rows_and_fills_missing_type_meta() -> Result<()> {
    let f = fixture()?;
    let api: Api<ConfigMap> = Api::namespaced(f.client.clone(), "default");
    let mut cm = config_map("a", &[("v", "1")]);
    cm.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
    api.create(&PostParams::default(), &cm).await?;
    // A row written by something other than the API (no apiVersion/kind) is served with them.
    f.server
        .store()
        .create(
            holdfast_apiserver::store::Key::new("/configmaps", "default", "b"),
            json!({"metadata": {"name": "b", "namespace": "default", "labels": {"app": "db"}},
                   "data": {"v": "2"}}),
        )
        .await?;
    let (code, _, body) =
        raw(&f.client, "GET", "/api/v1/namespaces/default/configmaps", &[], b"").await?;
    assert_eq!(code, 200);
    let list: Value = serde_json::from_str(&body)?;
    assert_eq!(list["kind"], "ConfigMapList");
    assert_eq!(list["apiVersion"], "v1");
    let items = list["items"].as_array().context("items")?;
    assert_eq!(items.len(), 2, "{body}");
    for item in items {
        assert_eq!(
            (item["apiVersion"].as_str(), item["kind"].as_str()),
            (Some("v1"), Some("ConfigMap"))
        );
    }
    assert_eq!(items[1]["data"]["v"], "2");
    // Label selectors work on the unparsed rows too.
    let web = api.list(&ListParams::default().labels("app=web")).await?;
    assert_eq!(names_and_data(&web), [("a".into(), Some("1".into()))]);
    let db = api.list(&ListParams::default().labels("app in (db)")).await?;
    assert_eq!(names_and_data(&db), [("b".into(), Some("2".into()))]);
    Ok(())
}
