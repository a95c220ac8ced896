//! The official Python `kubernetes` client against the server over real HTTPS, through the
//! kubeconfig the server writes: custom objects (create, list with a selector, merge patch, watch
//! from a list's resourceVersion), Secrets from stringData, ConfigMaps, typed watches, Pod logs,
//! deletes and the `ApiException`s the client raises. The script is tests/python/
//! kubernetes_client.py. `scripts/install-deps.sh` installs the client; without python3 or the
//! package this test fails saying so.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use holdfast_testkit::HttpsApi;
use holdfast_testkit::process::require_tool;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_kubernetes_client_round_trip() -> Result<()> {
    require_tool(
        "python3 with the `kubernetes` package",
        std::process::Command::new("python3").args(["-c", "import kubernetes"]),
    )?;
    let server = HttpsApi::start().await?;
    // The Pod the script creates already has output, as if the job runner had run it.
    let log = server.server().pod_log_path("py", "runner", "main").context("log dir")?;
    std::fs::create_dir_all(log.parent().context("parent")?)?;
    std::fs::write(&log, "starting\nrestored 3 files\n")?;
    let path = server.kubeconfig_path();

    // The directory at run time (cargo sets it for tests): a binary cargo reuses from a clone at
    // another path, through a shared target directory, would carry that clone's path.
    let script = format!(
        "{}/tests/python/kubernetes_client.py",
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
    );
    let run = tokio::process::Command::new("python3")
        .arg(script)
        .arg(path)
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
    server.shutdown().await?;
    Ok(())
}
