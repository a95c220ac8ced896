//! The official Python `kubernetes` client against the server over real HTTPS, through the
//! kubeconfig the server writes: custom objects (create, list with a selector, merge patch, watch
//! from a list's resourceVersion), Secrets from stringData, ConfigMaps, typed watches, Pod logs,
//! deletes and the `ApiException`s the client raises. The script is tests/python/
//! kubernetes_client.py. `scripts/install-deps.sh` installs the client; without python3 or the
//! package this test prints a notice and passes.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use holdfast_apiserver::auth::load_or_create_tokens;
use holdfast_apiserver::kubeconfig::{kubeconfig, write_kubeconfig};
use holdfast_apiserver::serve::spawn;
use holdfast_apiserver::tls::load_or_create_tls;
use holdfast_apiserver::{ApiServer, Store};

fn python_client_installed() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import kubernetes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_kubernetes_client_round_trip() -> Result<()> {
    if !python_client_installed() {
        eprintln!(
            "NOTICE: python3 with the `kubernetes` package is not installed; skipping \
             (scripts/install-deps.sh installs it)"
        );
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("store.db"))?;
    let logs = dir.path().join("logs");
    let api = ApiServer::new(store, holdfast_api::registry()).with_pod_log_dir(logs.clone());
    // The Pod the script creates already has output, as if the job runner had run it.
    let log = api.pod_log_path("py", "runner", "main").context("log dir")?;
    std::fs::create_dir_all(log.parent().context("parent")?)?;
    std::fs::write(&log, "starting\nrestored 3 files\n")?;
    let tls = load_or_create_tls(dir.path(), &[])?;
    let tokens = load_or_create_tokens(dir.path())?;
    let running = spawn(api.router(), tokens.clone(), tls.clone(), "127.0.0.1:0".parse()?).await?;
    let path = dir.path().join("kubeconfig");
    let admin = tokens.admin_token().context("admin token")?;
    write_kubeconfig(&path, &kubeconfig(&running.url(), &tls.ca_pem, admin))?;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/kubernetes_client.py");
    let run = tokio::process::Command::new("python3")
        .arg(script)
        .arg(&path)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .context("the Python client did not finish in 120 s")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "the script failed:\n{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let expected = [
        "version v1.32.0",
        "namespace Active",
        "created r1 1",
        "listed r1 PodVolumeRestoreList",
        "patched True 2",
        "watched MODIFIED True True",
        "secret Opaque hunter2",
        "configmaps [('c1', 'v2')]",
        "configmap-event MODIFIED V1ConfigMap v2",
        "log 'restored 3 files\\n'",
        "gone 404 Not Found",
        "conflict 409 AlreadyExists",
        "done",
    ];
    assert_eq!(lines, expected, "stderr:\n{stderr}");
    running.shutdown().await?;
    Ok(())
}
