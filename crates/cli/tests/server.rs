//! The real `holdfast server` binary: start-up, the one-line errors, and a `kill -9` in the
//! middle of a stream of writes followed by a restart on the same data directory, after which
//! every acknowledged write is there and a watch from before the crash misses no event.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");

/// Starts `holdfast server` on a free port and returns it with its URL (read from the banner).
async fn start(data_dir: &Path) -> Result<(Child, String)> {
    let mut child = Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .context("no banner from holdfast server")??
        .context("holdfast server exited before printing its banner")?;
    let url = first
        .strip_prefix("holdfast server listening on ")
        .with_context(|| format!("unexpected banner {first:?}"))?
        .to_string();
    // Keep draining stdout so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, url))
}

async fn client(data_dir: &Path) -> Result<kube::Client> {
    let text = std::fs::read_to_string(data_dir.join("kubeconfig"))?;
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::from_yaml(&text)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    let client = kube::Client::try_from(config)?;
    // Poll readiness (the default namespace exists once the server has bootstrapped).
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(_)) = namespaces.get_opt("default").await {
            return Ok(client);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("server never became ready");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn config_map(name: &str) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.to_string());
    cm.data = Some([("n".to_string(), name.to_string())].into());
    cm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_no_acknowledged_write_and_watch_resumes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut server, url) = start(dir.path()).await?;
    ensure!(url.starts_with("https://127.0.0.1:"), "{url}");
    let kube = client(dir.path()).await?;
    let cms: Api<ConfigMap> = Api::namespaced(kube.clone(), "default");
    let start_rv = cms
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .context("list has a resourceVersion")?;

    // Four writers create objects until the server dies; only acknowledged names are recorded.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let mut writers = Vec::new();
    for w in 0..4 {
        let cms = cms.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("w{w}-{i:05}");
                match cms.create(&PostParams::default(), &config_map(&name)).await {
                    Ok(_) => {
                        acked.lock().expect("lock").insert(name);
                    }
                    Err(_) => break,
                }
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().expect("lock").len() < 200 {
        ensure!(tokio::time::Instant::now() < deadline, "writes too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.start_kill()?; // SIGKILL: no shutdown path runs.
    server.wait().await?;
    for w in writers {
        w.await?;
    }
    let acked = acked.lock().expect("lock").clone();

    let (_server, _url) = start(dir.path()).await?;
    let kube = client(dir.path()).await?;
    let cms: Api<ConfigMap> = Api::namespaced(kube, "default");
    let list = cms.list(&ListParams::default()).await?;
    let stored: BTreeSet<String> =
        list.items.iter().filter_map(|c| c.metadata.name.clone()).collect();
    let missing: Vec<_> = acked.difference(&stored).collect();
    ensure!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    for cm in &list.items {
        let name = cm.metadata.name.as_deref().unwrap_or_default();
        assert_eq!(cm.data.as_ref().map(|d| d["n"].as_str()), Some(name));
    }

    // A watch from before the crash replays every stored object's ADDED event, in order, no gap.
    let mut events = cms.watch(&WatchParams::default(), &start_rv).await?.boxed();
    let mut added = BTreeSet::new();
    let mut last_rv = 0u64;
    while added.len() < stored.len() {
        let event = tokio::time::timeout(Duration::from_secs(20), events.try_next())
            .await
            .context("watch stalled")??
            .context("watch ended")?;
        match event {
            WatchEvent::Added(cm) => {
                let rv: u64 = cm.metadata.resource_version.context("rv")?.parse()?;
                ensure!(rv > last_rv, "events out of order");
                last_rv = rv;
                added.insert(cm.metadata.name.context("name")?);
            }
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) if e.code == 410 => {
                // The log was compacted: a relist (done above) is the client's recovery.
                return Ok(());
            }
            other => bail!("unexpected event {other:?}"),
        }
    }
    assert_eq!(added, stored);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taken_port_and_unusable_data_dir_exit_non_zero_with_one_line() -> Result<()> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?.to_string();
    let dir = tempfile::tempdir()?;
    let out = Command::new(BIN)
        .args(["server", "--listen", &addr, "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "off")
        .output()
        .await?;
    let stderr = String::from_utf8(out.stderr)?;
    ensure!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    ensure!(stderr.contains(&format!("cannot listen on {addr}")), "{stderr}");

    let file = dir.path().join("a-file");
    std::fs::write(&file, "")?;
    let out = Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(file.join("data"))
        .env("RUST_LOG", "off")
        .output()
        .await?;
    let stderr = String::from_utf8(out.stderr)?;
    ensure!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    ensure!(stderr.contains("cannot create data directory"), "{stderr}");
    Ok(())
}
