//! API server throughput and latency over real HTTPS with kube-rs clients (not a timed test: a
//! benchmark binary that prints a table). Run: `cargo bench -p holdfast-apiserver --bench api`.
//!
//! Measures, against the server in-process on 127.0.0.1 with a durable SQLite store in a temp
//! dir: creates/s and updates/s with 8 concurrent writers, the latency of one unpaged list of
//! 10,000 objects, and watch event delivery latency (write request start → event received)
//! across 100 concurrent watchers. Sizes can be scaled with HOLDFAST_BENCH_SCALE (default 1.0).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures::{StreamExt as _, TryStreamExt as _};
use holdfast_testkit::HttpsApi;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};

const WRITERS: usize = 8;
const WATCHERS: usize = 100;

fn config_map(name: &str) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.to_string());
    cm.data = Some([("payload".to_string(), "x".repeat(200))].into());
    cm
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn run_writers<F, Fut>(total: usize, op: F) -> Result<f64>
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..total).step_by(WRITERS) {
                op(w, i).await?;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let scale: f64 =
        std::env::var("HOLDFAST_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let n_writes = ((4000.0 * scale) as usize).max(WRITERS);
    let n_list = ((10_000.0 * scale) as usize).max(n_writes);
    let n_watch_events = ((200.0 * scale) as usize).max(10);

    // The same HTTPS server and kubeconfig client the tests use; it answers before this returns.
    let server = HttpsApi::start().await?;
    let client = server.admin().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    // 1. Creates with 8 concurrent writers.
    let c = cms.clone();
    let creates = run_writers(n_writes, move |_, i| {
        let c = c.clone();
        async move {
            c.create(&PostParams::default(), &config_map(&format!("cm-{i:06}"))).await?;
            Ok(())
        }
    })
    .await?;

    // 2. Updates (merge patches) of those objects with 8 concurrent writers.
    let c = cms.clone();
    let updates = run_writers(n_writes, move |_, i| {
        let c = c.clone();
        async move {
            let patch = serde_json::json!({"data": {"updated": i.to_string()}});
            c.patch(&format!("cm-{i:06}"), &PatchParams::default(), &Patch::Merge(&patch)).await?;
            Ok(())
        }
    })
    .await?;

    // 3. Fill to n_list objects, then time full (unpaged) lists.
    let c = cms.clone();
    run_writers(n_list - n_writes, move |_, i| {
        let c = c.clone();
        async move {
            c.create(&PostParams::default(), &config_map(&format!("fill-{i:06}"))).await?;
            Ok(())
        }
    })
    .await?;
    let mut list_times = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let list = cms.list(&ListParams::default()).await?;
        list_times.push(started.elapsed());
        anyhow::ensure!(list.items.len() == n_list, "listed {} of {n_list}", list.items.len());
    }
    list_times.sort();

    // 4. Watch latency: 100 watchers from the current revision; writes one at a time.
    let rv =
        cms.list(&ListParams::default().limit(1)).await?.metadata.resource_version.context("rv")?;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let stream = cms.watch(&WatchParams::default(), &rv).await?;
        let sent = sent.clone();
        let latencies = latencies.clone();
        watchers.push(tokio::spawn(async move {
            let mut stream = stream.boxed();
            let mut seen = 0;
            while seen < n_watch_events {
                match stream.try_next().await? {
                    Some(WatchEvent::Added(cm)) => {
                        let now = Instant::now();
                        let name = cm.metadata.name.unwrap_or_default();
                        if let Some(t) = sent.lock().expect("lock").get(&name) {
                            latencies.lock().expect("lock").push(now - *t);
                        }
                        seen += 1;
                    }
                    Some(_) => {}
                    None => anyhow::bail!("watch ended"),
                }
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for i in 0..n_watch_events {
        let name = format!("watched-{i:05}");
        sent.lock().expect("lock").insert(name.clone(), Instant::now());
        cms.create(&PostParams::default(), &config_map(&name)).await?;
        // Space the writes so each event's latency is measured on its own, not in a burst.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for w in watchers {
        tokio::time::timeout(Duration::from_secs(60), w).await.context("watchers stalled")???;
    }
    let mut lat = latencies.lock().expect("lock").clone();
    lat.sort();

    println!("holdfast API server benchmark (HTTPS, kube-rs, SQLite store, 127.0.0.1)");
    println!("| measurement | result | target |");
    println!("|---|---|---|");
    println!("| creates/s, {WRITERS} writers, {n_writes} ConfigMaps | {creates:.0} | >= 2000 |");
    println!("| updates/s (merge patch), {WRITERS} writers | {updates:.0} | >= 2000 |");
    println!(
        "| list of {n_list} objects, unpaged (p50 / min / max of 10) | {} / {} / {} | < 150 ms |",
        ms(percentile(&list_times, 0.5)),
        ms(list_times[0]),
        ms(list_times[list_times.len() - 1])
    );
    println!(
        "| watch delivery, {WATCHERS} watchers x {n_watch_events} events (p50 / p99 / max) | {} / {} / {} | p99 < 50 ms |",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default())
    );
    server.shutdown().await?;
    Ok(())
}
