//! Unit tests of the store against real SQLite files (temporary directories).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, future::join_all};
use serde_json::{Value, json};

use super::*;

const PODS: &str = "/pods";

fn pod(ns: &str, name: &str, label: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "labels": {"l": label}},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
}

fn rv(object: &Value) -> &str {
    object["metadata"]["resourceVersion"].as_str().expect("resourceVersion is a string")
}

/// Bounds a test that would otherwise hang if an event never came.
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

#[tokio::test]
async fn create_get_update_conflict_and_not_found() {
    let store = Store::open_in_memory().unwrap();
    assert_eq!(store.current_rev(), 1, "a fresh store starts at revision 1");
    let key = Key::new(PODS, "default", "p1");

    let created = store.create(key.clone(), pod("default", "p1", "a")).await.unwrap();
    assert_eq!(created.mod_rev, 2);
    assert_eq!(created.create_rev, 2);
    assert_eq!(rv(&created.object), "2");
    assert_eq!(store.current_rev(), 2);
    assert_eq!(store.get(&key).unwrap(), Some(created.clone()));

    match store.create(key.clone(), pod("default", "p1", "b")).await {
        Err(StoreError::AlreadyExists(k)) => assert_eq!(k, key),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }

    let updated = store.update(key.clone(), pod("default", "p1", "b"), 2).await.unwrap();
    assert_eq!((updated.mod_rev, updated.create_rev), (3, 2));
    assert_eq!(rv(&updated.object), "3");
    assert_eq!(updated.object["metadata"]["labels"]["l"], "b");

    match store.update(key.clone(), pod("default", "p1", "c"), 2).await {
        Err(StoreError::Conflict { key: k, expected: 2, actual: 3 }) => assert_eq!(k, key),
        other => panic!("expected Conflict, got {other:?}"),
    }
    // The failed write changed nothing.
    assert_eq!(store.get(&key).unwrap().unwrap().object["metadata"]["labels"]["l"], "b");
    assert_eq!(store.current_rev(), 3);

    let missing = Key::new(PODS, "default", "nope");
    assert!(matches!(
        store.update(missing.clone(), pod("default", "nope", "a"), 1).await,
        Err(StoreError::NotFound(k)) if k == missing
    ));
    assert!(matches!(
        store.delete(missing.clone(), None).await,
        Err(StoreError::NotFound(k)) if k == missing
    ));
    assert_eq!(store.get(&missing).unwrap(), None);

    assert!(matches!(
        store.create(Key::new(PODS, "default", "bad"), json!([1, 2])).await,
        Err(StoreError::NotAnObject { .. })
    ));
    assert!(matches!(
        store.create(Key::new(PODS, "default", "bad"), json!({"metadata": 5})).await,
        Err(StoreError::NotAnObject { .. })
    ));
    assert_eq!(store.current_rev(), 3, "failed writes spend no revision");
}

#[tokio::test]
async fn no_op_update_keeps_the_revision() {
    let store = Store::open_in_memory().unwrap();
    let key = Key::new(PODS, "default", "p");
    let created = store.create(key.clone(), pod("default", "p", "a")).await.unwrap();
    // The client's copy carries the old resourceVersion; only that differs: nothing to write.
    let same = store.update(key.clone(), created.object.clone(), created.mod_rev).await.unwrap();
    assert_eq!(same, created);
    assert_eq!(store.current_rev(), created.mod_rev);
    let mut events = store.watch(PODS, created.mod_rev).unwrap();
    let changed = store.update(key, pod("default", "p", "b"), created.mod_rev).await.unwrap();
    let event = within("modified event", events.next()).await.unwrap().unwrap();
    assert_eq!(event.rev, changed.mod_rev, "the no-op write produced no event");
    assert_eq!(event.kind, EventType::Modified);
    assert_eq!(event.prev.as_ref(), Some(&created.object));
}

#[tokio::test]
async fn delete_reports_last_state_at_the_deletion_revision() {
    let store = Store::open_in_memory().unwrap();
    let key = Key::new(PODS, "ns", "p");
    let created = store.create(key.clone(), pod("ns", "p", "a")).await.unwrap();
    let mut events = store.watch(PODS, created.mod_rev).unwrap();

    assert!(matches!(
        store.delete(key.clone(), Some(created.mod_rev + 7)).await,
        Err(StoreError::Conflict { expected, actual, .. }) if expected == created.mod_rev + 7 && actual == created.mod_rev
    ));
    let deleted = store.delete(key.clone(), Some(created.mod_rev)).await.unwrap();
    assert_eq!(deleted.mod_rev, created.mod_rev + 1);
    assert_eq!(deleted.create_rev, created.create_rev);
    assert_eq!(rv(&deleted.object), deleted.mod_rev.to_string());
    assert_eq!(deleted.object["metadata"]["labels"]["l"], "a");
    assert_eq!(store.get(&key).unwrap(), None);

    let event = within("deleted event", events.next()).await.unwrap().unwrap();
    assert_eq!(event.kind, EventType::Deleted);
    assert_eq!(event.rev, deleted.mod_rev);
    assert_eq!(event.key, key);
    assert_eq!(event.object, deleted.object);
    assert_eq!(event.prev.as_ref(), Some(&created.object));

    // The name is free again; the new object has a new create revision.
    let again = store.create(key.clone(), pod("ns", "p", "z")).await.unwrap();
    assert_eq!(again.create_rev, deleted.mod_rev + 1);
}

#[tokio::test]
async fn list_pages_in_key_order_with_remaining_count_and_namespace_filter() {
    let store = Store::open_in_memory().unwrap();
    let mut expected = Vec::new();
    for ns in ["b", "a"] {
        for i in (0..5).rev() {
            let name = format!("p{i}");
            store.create(Key::new(PODS, ns, &name), pod(ns, &name, "x")).await.unwrap();
            expected.push((ns.to_owned(), name));
        }
    }
    // Another resource and a cluster-scoped one must not show up.
    store.create(Key::new("/configmaps", "a", "p0"), pod("a", "p0", "x")).await.unwrap();
    store.create(Key::new("/nodes", "", "n1"), json!({"metadata": {"name": "n1"}})).await.unwrap();
    expected.sort();

    let (all, rev, remaining) = store.list(PODS, None, None, None).unwrap();
    assert_eq!(rev, store.current_rev());
    assert_eq!(remaining, 0);
    let keys: Vec<_> = all.iter().map(|s| (s.key.namespace.clone(), s.key.name.clone())).collect();
    assert_eq!(keys, expected);
    for s in &all {
        assert_eq!(rv(&s.object), s.mod_rev.to_string());
    }

    let mut paged = Vec::new();
    let mut after: Option<(String, String)> = None;
    let mut remainders = Vec::new();
    loop {
        let (page, _, remaining) = store
            .list(PODS, None, after.as_ref().map(|(n, m)| (n.as_str(), m.as_str())), Some(3))
            .unwrap();
        remainders.push(remaining);
        let Some(last) = page.last() else { break };
        after = Some((last.key.namespace.clone(), last.key.name.clone()));
        paged.extend(page.into_iter().map(|s| (s.key.namespace, s.key.name)));
        if remaining == 0 {
            break;
        }
    }
    assert_eq!(paged, expected);
    assert_eq!(remainders, vec![7, 4, 1, 0]);

    let (in_a, _, remaining) = store.list(PODS, Some("a"), None, Some(2)).unwrap();
    assert_eq!(remaining, 3);
    assert_eq!(in_a.iter().map(|s| s.key.name.as_str()).collect::<Vec<_>>(), vec!["p0", "p1"]);
    let (rest, _, remaining) = store.list(PODS, Some("a"), Some(("a", "p1")), None).unwrap();
    assert_eq!(remaining, 0);
    assert_eq!(
        rest.iter().map(|s| s.key.name.as_str()).collect::<Vec<_>>(),
        vec!["p2", "p3", "p4"]
    );
    assert!(rest.iter().all(|s| s.key.namespace == "a"));

    let (nodes, _, _) = store.list("/nodes", None, None, None).unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].key.namespace, "");
    let (none, rev_empty, remaining) = store.list("/secrets", None, None, Some(10)).unwrap();
    assert!(none.is_empty());
    assert_eq!((rev_empty, remaining), (store.current_rev(), 0));
}

/// 8 writers × 200 writes while watchers start before, during and after: each watcher sees every
/// revision of its resource exactly once, in order, across the replay → live switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_replays_then_follows_live_without_gap_or_duplicate() {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 200;
    let store = Store::open_in_memory().unwrap();
    let start = store.current_rev();
    let early = store.watch(PODS, start).unwrap();

    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..PER_WRITER {
                let name = format!("w{w}-{i}");
                // Every fourth write goes to another resource the watchers must filter out.
                let resource = if i % 4 == 3 { "/configmaps" } else { PODS };
                let created = store
                    .create(Key::new(resource, "ns", &name), pod("ns", &name, "a"))
                    .await
                    .unwrap();
                if resource == PODS {
                    let updated = store
                        .update(created.key.clone(), pod("ns", &name, "b"), created.mod_rev)
                        .await
                        .unwrap();
                    revs.push(created.mod_rev);
                    revs.push(updated.mod_rev);
                }
            }
            revs
        }));
    }
    // A watcher that starts from the beginning while the writers are busy: it replays the log,
    // then switches to live events mid-stream.
    within("writers to get going", async {
        while store.current_rev() < start + 300 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let middle = store.watch(PODS, 0).unwrap();

    let mut expected = Vec::new();
    for task in tasks {
        expected.extend(task.await.unwrap());
    }
    expected.sort_unstable();
    let late = store.watch(PODS, 0).unwrap();

    for (name, watch) in [("early", early), ("middle", middle), ("late", late)] {
        let events: Vec<_> = within(name, watch.take(expected.len()).collect::<Vec<_>>()).await;
        let revs: Vec<u64> = events.iter().map(|e| e.as_ref().unwrap().rev).collect();
        assert_eq!(revs, expected, "{name} watcher: every pod revision once, in order");
        for e in &events {
            let e = e.as_ref().unwrap();
            assert_eq!(e.key.resource, PODS);
            assert_eq!(rv(&e.object), e.rev.to_string());
        }
    }
    // All revisions are accounted for: pods plus configmaps.
    let configmaps = (WRITERS * PER_WRITER / 4) as u64;
    assert_eq!(store.current_rev(), start + expected.len() as u64 + configmaps);
}

/// A watcher that stops reading overflows the live channel; it must catch up from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_watcher_recovers_from_the_log() {
    let store = Store::open_in_memory().unwrap();
    let from = store.current_rev();
    let mut watch = store.watch(PODS, from).unwrap();
    // Read one event so the stream is in its live phase before it falls behind.
    store.create(Key::new(PODS, "ns", "first"), pod("ns", "first", "a")).await.unwrap();
    assert_eq!(within("first event", watch.next()).await.unwrap().unwrap().rev, from + 1);

    let total = BROADCAST_CAPACITY + 600;
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in (t..total).step_by(16) {
                    let name = format!("p{i}");
                    store.create(Key::new(PODS, "ns", &name), pod("ns", &name, "a")).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let revs: Vec<u64> = within("lagged events", watch.take(total).collect::<Vec<_>>())
        .await
        .into_iter()
        .map(|e| e.unwrap().rev)
        .collect();
    let expected: Vec<u64> = (from + 2..=from + 1 + total as u64).collect();
    assert_eq!(revs, expected);
}

#[tokio::test]
async fn concurrent_creates_of_one_name_admit_exactly_one() {
    let store = Store::open_in_memory().unwrap();
    let key = Key::new(PODS, "ns", "same");
    let other = Key::new(PODS, "ns", "other");
    let mut writes = Vec::new();
    for i in 0..20 {
        writes.push(store.create(key.clone(), pod("ns", "same", &i.to_string())));
    }
    let results =
        join_all(writes.into_iter().chain([store.create(other.clone(), pod("ns", "other", "a"))]))
            .await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let exists = results.iter().filter(|r| matches!(r, Err(StoreError::AlreadyExists(_)))).count();
    assert_eq!((ok, exists), (2, 19));
    assert!(store.get(&other).unwrap().is_some());
    // The failures spent no revision: the two creates hold revisions 2 and 3.
    let mut revs: Vec<u64> =
        results.iter().filter_map(|r| r.as_ref().ok()).map(|s| s.mod_rev).collect();
    revs.sort_unstable();
    assert_eq!(revs, vec![2, 3]);
}

#[tokio::test]
async fn compaction_expires_old_revisions() {
    let store = Store::open_in_memory().unwrap();
    for i in 0..20 {
        let name = format!("p{i}");
        store.create(Key::new(PODS, "ns", &name), pod("ns", &name, "a")).await.unwrap();
    }
    let current = store.current_rev();
    // Started before compaction but not yet read: its replay must not silently skip.
    let mut overtaken = store.watch(PODS, 1).unwrap();

    // Everything is younger than an hour: nothing may go.
    assert_eq!(store.compact(0, Duration::from_secs(3600)).unwrap(), 0);
    assert_eq!(store.compacted_rev(), 0);
    let compacted = store.compact(5, Duration::ZERO).unwrap();
    assert_eq!(compacted, current - 5);
    assert_eq!(store.compacted_rev(), compacted);
    // Compacting again to a lower bound changes nothing.
    assert_eq!(store.compact(10, Duration::ZERO).unwrap(), compacted);

    match store.watch(PODS, compacted - 1) {
        Err(StoreError::Compacted { requested, compacted: c }) => {
            assert_eq!((requested, c), (compacted - 1, compacted));
        }
        Err(e) => panic!("expected Compacted, got {e}"),
        Ok(_) => panic!("expected Compacted, got a stream"),
    }
    match within("overtaken watch", overtaken.next()).await {
        Some(Err(StoreError::Compacted { requested: 1, compacted: c })) => assert_eq!(c, compacted),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(overtaken.next().await.is_none(), "the stream ends after Compacted");

    let tail = store.watch(PODS, compacted).unwrap();
    let revs: Vec<u64> = within("tail", tail.take(5).collect::<Vec<_>>())
        .await
        .into_iter()
        .map(|e| e.unwrap().rev)
        .collect();
    assert_eq!(revs, (compacted + 1..=current).collect::<Vec<_>>());

    // Objects are never compacted.
    let (items, _, _) = store.list(PODS, None, None, None).unwrap();
    assert_eq!(items.len(), 20);

    // Compacting the whole log keeps the revision counter.
    assert_eq!(store.compact(0, Duration::ZERO).unwrap(), current);
    let next = store.create(Key::new(PODS, "ns", "after"), pod("ns", "after", "a")).await.unwrap();
    assert_eq!(next.mod_rev, current + 1);
}

#[tokio::test]
async fn reopen_keeps_objects_revisions_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("store.db");
    let mut acked = BTreeMap::new();
    let compacted;
    {
        let store = Store::open(&path).unwrap();
        assert!(matches!(Store::open(&path), Err(StoreError::Locked { .. })));
        for i in 0..30 {
            let name = format!("p{i}");
            let s = store.create(Key::new(PODS, "ns", &name), pod("ns", &name, "a")).await.unwrap();
            acked.insert(name, s.mod_rev);
        }
        let s = store
            .update(Key::new(PODS, "ns", "p3"), pod("ns", "p3", "b"), acked["p3"])
            .await
            .unwrap();
        acked.insert("p3".into(), s.mod_rev);
        let d = store.delete(Key::new(PODS, "ns", "p4"), None).await.unwrap();
        acked.remove("p4");
        assert_eq!(d.mod_rev, store.current_rev());
        compacted = store.compact(10, Duration::ZERO).unwrap();
        assert!(compacted > 1);
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.compacted_rev(), compacted);
    assert_eq!(store.current_rev(), 2 + 30 + 1);
    let (items, rev, _) = store.list(PODS, None, None, None).unwrap();
    assert_eq!(rev, store.current_rev());
    let found: BTreeMap<String, u64> = items.into_iter().map(|s| (s.key.name, s.mod_rev)).collect();
    assert_eq!(found, acked);

    let events = store.watch(PODS, compacted).unwrap();
    let replayed: Vec<_> = within("replay", events.take(10).collect::<Vec<_>>()).await;
    let revs: Vec<u64> = replayed.iter().map(|e| e.as_ref().unwrap().rev).collect();
    assert_eq!(revs, (compacted + 1..=store.current_rev()).collect::<Vec<_>>());
    let last = replayed.last().unwrap().as_ref().unwrap();
    assert_eq!((last.kind, last.key.name.as_str()), (EventType::Deleted, "p4"));

    let next = store.create(Key::new(PODS, "ns", "new"), pod("ns", "new", "a")).await.unwrap();
    assert_eq!(next.mod_rev, 2 + 30 + 2);
    assert!(matches!(store.watch(PODS, 1), Err(StoreError::Compacted { .. })));
}

/// (namespace, name, label) of raw rows.
fn raw_rows(rows: &[RawObject]) -> Vec<(String, String, String)> {
    rows.iter()
        .map(|o| {
            let v: Value = serde_json::from_slice(&o.raw).unwrap();
            (
                o.namespace.clone(),
                o.name.clone(),
                v["metadata"]["labels"]["l"].as_str().unwrap().into(),
            )
        })
        .collect()
}

#[tokio::test]
async fn list_raw_at_every_past_revision_matches_what_was_current_then() {
    let store = Store::open_in_memory().unwrap();
    // Another resource's writes interleave: they move the revision but are no part of the list.
    let other = |n: usize| Key::new("/configmaps", "a", format!("cm{n}"));
    let mut snapshots = BTreeMap::new();
    let record = |store: &Store, snapshots: &mut BTreeMap<u64, Vec<(String, String, String)>>| {
        let (rows, rev, _) = store.list_raw(PODS, None, None, None, None).unwrap();
        snapshots.insert(rev, raw_rows(&rows));
    };
    record(&store, &mut snapshots);
    for i in 0..6 {
        let ns = if i % 2 == 0 { "a" } else { "b" };
        store
            .create(Key::new(PODS, ns, format!("p{i}")), pod(ns, &format!("p{i}"), "v0"))
            .await
            .unwrap();
        record(&store, &mut snapshots);
        store.create(other(i), json!({"metadata": {"name": format!("cm{i}")}})).await.unwrap();
        record(&store, &mut snapshots);
    }
    for (i, step) in ["v1", "v2"].iter().enumerate() {
        let key = Key::new(PODS, "a", format!("p{}", i * 2));
        let cur = store.get(&key).unwrap().unwrap();
        store.update(key, pod("a", &format!("p{}", i * 2), step), cur.mod_rev).await.unwrap();
        record(&store, &mut snapshots);
    }
    store.delete(Key::new(PODS, "b", "p1"), None).await.unwrap();
    record(&store, &mut snapshots);
    store.create(Key::new(PODS, "b", "p1"), pod("b", "p1", "again")).await.unwrap();
    record(&store, &mut snapshots);

    for (&rev, expected) in &snapshots {
        let (rows, at, _) = store.list_raw(PODS, None, None, None, Some(rev)).unwrap();
        assert_eq!(at, rev);
        assert_eq!(&raw_rows(&rows), expected, "at revision {rev}");
        // Paged two at a time, with the remaining count, the same rows come back.
        let mut paged = Vec::new();
        let mut after: Option<(String, String)> = None;
        loop {
            let a = after.as_ref().map(|(n, m)| (n.as_str(), m.as_str()));
            let (rows, _, remaining) = store.list_raw(PODS, None, a, Some(2), Some(rev)).unwrap();
            paged.extend(raw_rows(&rows));
            assert_eq!(remaining as usize, expected.len() - paged.len(), "at {rev}");
            match rows.last() {
                Some(last) if remaining > 0 => {
                    after = Some((last.namespace.clone(), last.name.clone()))
                }
                _ => break,
            }
        }
        assert_eq!(&paged, expected, "paged at revision {rev}");
        // One namespace.
        let (rows, _, _) = store.list_raw(PODS, Some("b"), None, None, Some(rev)).unwrap();
        let only_b: Vec<_> = expected.iter().filter(|r| r.0 == "b").cloned().collect();
        assert_eq!(raw_rows(&rows), only_b, "namespace b at {rev}");
    }

    let current = store.current_rev();
    assert!(matches!(
        store.list_raw(PODS, None, None, None, Some(current + 1)),
        Err(StoreError::FutureRevision { requested, current: c }) if requested == current + 1 && c == current
    ));
    store.compact(0, Duration::ZERO).unwrap();
    assert!(matches!(
        store.list_raw(PODS, None, None, None, Some(current - 1)),
        Err(StoreError::Compacted { .. })
    ));
    assert_eq!(store.list_raw(PODS, None, None, None, Some(current)).unwrap().1, current);
}

#[tokio::test]
async fn keys_containing_finds_rows_by_bytes() {
    let store = Store::open_in_memory().unwrap();
    let mut owned = pod("a", "p1", "x");
    owned["metadata"]["ownerReferences"] = json!([{"uid": "1f0e-owner"}]);
    store.create(Key::new(PODS, "a", "p1"), owned.clone()).await.unwrap();
    store.create(Key::new(PODS, "b", "p1"), owned).await.unwrap();
    store.create(Key::new(PODS, "a", "p2"), pod("a", "p2", "x")).await.unwrap();
    assert_eq!(
        store.keys_containing(Some("a"), "1f0e-owner").unwrap(),
        [Key::new(PODS, "a", "p1")]
    );
    assert_eq!(store.keys_containing(None, "1f0e-owner").unwrap().len(), 2);
    assert!(store.keys_containing(None, "no-such-uid").unwrap().is_empty());
}
