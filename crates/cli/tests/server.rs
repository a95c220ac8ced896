//! The real `holdfast server` binary: start-up, the one-line errors, and a `kill -9` in the
//! middle of a stream of writes followed by a restart on the same data directory, after which
//! every acknowledged write is there and a watch from before the crash misses no event.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use futures::{StreamExt as _, TryStreamExt as _};
use holdfast_testkit::HoldfastServer;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");

fn config_map(name: &str) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.to_string());
    cm.data = Some([("n".to_string(), name.to_string())].into());
    cm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_no_acknowledged_write_and_watch_resumes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = HoldfastServer::start(Path::new(BIN), dir.path()).await?;
    let url = server.url();
    ensure!(url.starts_with("https://127.0.0.1:"), "{url}");
    let kube = server.client().await?;
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
    server.kill_9().await?; // SIGKILL: no shutdown path runs.
    for w in writers {
        w.await?;
    }
    let acked = acked.lock().expect("lock").clone();

    let server = HoldfastServer::start(Path::new(BIN), dir.path()).await?;
    let kube = server.client().await?;
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

/// Every path under the data directory `dir` whose mode lets group or others in. The workloads'
/// own entries (`volumes/`, `snapshots/`, `bin/`) are not the server's files and are not walked;
/// the data directory and `volumes/` may let others pass through (x) to a claim whose path they
/// know, never read, list or write them.
fn readable_by_others(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut open = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.file_type().is_symlink() || path == dir.join("bin") {
            continue;
        }
        let pass_through = path == dir || path == dir.join("volumes");
        let allowed = if pass_through { 0o011 } else { 0 };
        if path == dir.join("volumes") || path == dir.join("snapshots") {
            if meta.permissions().mode() & 0o077 & !allowed != 0 {
                open.push(format!("{} {:o}", path.display(), meta.permissions().mode() & 0o777));
            }
            continue;
        }
        if meta.permissions().mode() & 0o077 & !allowed != 0 {
            open.push(format!("{} {:o}", path.display(), meta.permissions().mode() & 0o777));
        }
        if meta.is_dir() {
            stack
                .extend(std::fs::read_dir(&path).into_iter().flatten().flatten().map(|e| e.path()));
        }
    }
    open
}

/// Whether any of the store's files holds `needle` as bytes.
fn store_contains(dir: &Path, needle: &str) -> bool {
    ["store.db", "store.db-wal"].iter().any(|f| {
        std::fs::read(dir.join(f))
            .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
    })
}

fn base64_of(value: &str) -> String {
    let json = serde_json::to_string(&k8s_openapi::ByteString(value.as_bytes().to_vec()))
        .expect("a ByteString serializes");
    json.trim_matches('"').to_string()
}

fn secret(name: &str, value: &str) -> k8s_openapi::api::core::v1::Secret {
    let mut s = k8s_openapi::api::core::v1::Secret::default();
    s.metadata.name = Some(name.into());
    s.string_data = Some([("password".to_string(), value.to_string())].into());
    s
}

async fn password(client: &kube::Client, name: &str) -> Result<String> {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "default");
    let s = secrets.get(name).await?;
    let bytes = s.data.and_then(|d| d.get("password").cloned()).context("no password")?;
    Ok(String::from_utf8(bytes.0)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_is_owner_only_and_secrets_are_encrypted_at_rest() -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    // A store written before encryption: a plaintext Secret, files readable by everyone.
    let old_value = "old-plaintext-9f3e1c";
    {
        let store = holdfast_apiserver::Store::open(&data.join("store.db"))?;
        let object = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "old", "namespace": "default", "uid": "u-old"},
            "type": "Opaque", "data": {"password": base64_of(old_value)}});
        store
            .create(holdfast_apiserver::store::Key::new("/secrets", "default", "old"), object)
            .await?;
    }
    ensure!(store_contains(&data, &base64_of(old_value)), "the old store is not plaintext");
    for path in [data.clone(), data.join("store.db")] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }

    let server = HoldfastServer::start(Path::new(BIN), &data).await?;
    let client = server.client().await?;
    ensure!(password(&client, "old").await? == old_value, "the migrated Secret is not served");
    let new_value = "new-secret-value-4b7d2a";
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "default");
    secrets.create(&PostParams::default(), &secret("new", new_value)).await?;
    ensure!(password(&client, "new").await? == new_value);

    for value in [old_value, new_value] {
        for needle in [value.to_string(), base64_of(value)] {
            ensure!(!store_contains(&data, &needle), "{needle:?} is readable in the store files");
        }
    }
    let open = readable_by_others(&data);
    ensure!(open.is_empty(), "readable by group or others: {open:?}");
    let key = std::fs::read_to_string(data.join("encryption.key"))?;
    ensure!(key.lines().any(|l| l.starts_with("key1:")), "{key}");
    Ok(())
}

/// `GET /metrics` with `client`'s token: the body, or the status code the server refused with.
async fn scrape(client: &kube::Client) -> Result<std::result::Result<String, u16>> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    match client.request_text(request).await {
        Ok(text) => Ok(Ok(text)),
        Err(kube::Error::Api(status)) => Ok(Err(status.code)),
        Err(other) => Err(other.into()),
    }
}

/// A client like the admin's kubeconfig, with `token` instead.
async fn client_with_token(data: &Path, token: &str) -> Result<kube::Client> {
    let admin = std::fs::read_to_string(data.join("tokens"))?
        .lines()
        .find(|l| l.contains("system:masters"))
        .and_then(|l| l.split(',').next())
        .context("no admin token")?
        .to_string();
    let yaml = std::fs::read_to_string(data.join("kubeconfig"))?.replace(&admin, token);
    Ok(holdfast_testkit::kubeconfig::client(&yaml).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_count_requests_and_need_the_monitoring_role() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    // The generated admin and view tokens, a user nobody bound yet, and a member of the group
    // upstream binds to `system:monitoring`.
    std::fs::write(
        data.join("tokens"),
        "admin-token-0123456789,admin,admin,\"system:masters\"\n\
         viewer-token-0123456789,viewer,viewer,\"\"\n\
         scraper-token-0123456789,scraper,scraper,\"\"\n\
         prom-token-0123456789,prometheus,prometheus,\"system:monitoring\"\n",
    )?;
    let server = HoldfastServer::start(Path::new(BIN), &data).await?;
    let admin = server.client().await?;
    let maps: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
    maps.create(&PostParams::default(), &config_map("scraped")).await?;
    // A Backup whose method names a missing ActionSet fails at once: the controllers' families
    // are served next to the API server's.
    let policy: holdfast_api::kubeblocks::BackupPolicy =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "empty-policy"},
            "spec": {"target": {"podSelector": {"matchLabels": {"app": "none"}},
                                "serviceAccountName": "default"},
                     "backupMethods": [{"name": "nothing", "actionSetName": "does-not-exist"}]}
        }))?;
    Api::namespaced(admin.clone(), "default").create(&PostParams::default(), &policy).await?;
    let backup: holdfast_api::kubeblocks::Backup = serde_json::from_value(serde_json::json!({
        "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Backup",
        "metadata": {"name": "fails-at-once"},
        "spec": {"backupPolicyName": "empty-policy", "backupMethod": "nothing"}
    }))?;
    let backups: Api<holdfast_api::kubeblocks::Backup> = Api::namespaced(admin.clone(), "default");
    backups.create(&PostParams::default(), &backup).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let b = backups.get("fails-at-once").await?;
        if b.status.and_then(|s| s.phase)
            == Some(holdfast_api::kubeblocks::backup::BackupPhase::Failed)
        {
            break;
        }
        ensure!(std::time::Instant::now() < deadline, "the backup did not fail");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let text = scrape(&admin).await?.map_err(|code| anyhow::anyhow!("admin got {code}"))?;
    for line in text.lines() {
        ensure!(
            !matches!(prometheus_parse::LineInfo::parse(line), prometheus_parse::LineInfo::Ignored),
            "a line a scraper cannot read: {line:?}"
        );
    }
    let scrape_lines = text.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(scrape_lines)?;
    let value = |name: &str, labels: &[(&str, &str)]| {
        parsed
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| s.value.clone())
    };
    let created = value(
        "apiserver_request_total",
        &[("verb", "POST"), ("resource", "configmaps"), ("version", "v1"), ("code", "201")],
    );
    ensure!(
        matches!(created, Some(prometheus_parse::Value::Counter(n)) if n >= 1.0),
        "the create is not counted: {created:?}\n{text}"
    );
    let latency = value(
        "apiserver_request_duration_seconds",
        &[("verb", "POST"), ("resource", "configmaps")],
    );
    ensure!(
        matches!(&latency, Some(prometheus_parse::Value::Histogram(b)) if b.iter().any(|b| b.less_than.is_infinite() && b.count >= 1.0)),
        "the create is not timed: {latency:?}"
    );
    let stored = value("apiserver_storage_objects", &[("resource", "configmaps")]);
    ensure!(matches!(stored, Some(prometheus_parse::Value::Gauge(n)) if n >= 1.0), "{stored:?}");
    let failed = value(
        "holdfast_backup_failure_total",
        &[("namespace", "default"), ("backup_policy", "empty-policy"), ("schedule", "")],
    );
    ensure!(
        matches!(failed, Some(prometheus_parse::Value::Counter(n)) if n == 1.0),
        "the failed backup is not counted once: {failed:?}\n{text}"
    );

    let viewer = client_with_token(&data, "viewer-token-0123456789").await?;
    ensure!(scrape(&viewer).await? == Err(403), "view must not read /metrics");
    let scraper = client_with_token(&data, "scraper-token-0123456789").await?;
    ensure!(scrape(&scraper).await? == Err(403), "an unbound user must not read /metrics");
    let prometheus = client_with_token(&data, "prom-token-0123456789").await?;
    ensure!(scrape(&prometheus).await?.is_ok(), "the system:monitoring group may scrape");

    // Binding the metrics role to the user lets the same token scrape.
    let binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding = serde_json::from_value(
        serde_json::json!({
            "metadata": {"name": "scraper-metrics"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:monitoring"},
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "scraper"}]
        }),
    )?;
    Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await?;
    ensure!(scrape(&scraper).await?.is_ok(), "a token bound to system:monitoring may scrape");
    Ok(())
}
