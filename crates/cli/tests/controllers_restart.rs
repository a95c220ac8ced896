//! The real `holdfast server` binary killed with SIGKILL in the middle of a Backup and of a
//! Restore, then restarted on the same data directory ("restarting the server in the
//! middle of a backup or restore neither loses the object nor leaves it stuck: it resumes or
//! fails clearly").
//!
//! The first attempt of each workload paces itself (a loop of short sleeps, as a slow dump
//! would), so the kill lands while its Job pod is running; the retry after the restart runs at
//! full speed (the attempt that claimed a marker directory first is the paced one). After the restart the pod must be marked Failed with
//! reason `NodeRestart`, the killed server's job processes must be gone by then (an orphan
//! writing into the repository or the restore volume beside the retry would corrupt them), the
//! Job retries, and the Backup/Restore completes with its status intact. The repository must
//! then pass `holdfast repo check`, and the restored file must be the whole backed-up file.

mod common;
#[path = "common/poll.rs"]
mod poll;
use poll::poll;

use common::{claim_dir, create};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use holdfast_api::kubeblocks::backup::BackupPhase;
use holdfast_api::kubeblocks::restore::RestorePhase;
use holdfast_api::kubeblocks::{ActionSet, Backup, BackupPolicy, BackupRepo, Restore};
use holdfast_testkit::HoldfastServer;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");
const NS: &str = "default";
const REPO: &str = "restart-repo";
/// Generous: two CPU cores are shared with parallel builds.
const TIMEOUT: Duration = Duration::from_secs(180);
/// The backup pushes CHUNKS x CHUNK_BYTES bytes (its first attempt a chunk every quarter second).
const CHUNKS: u64 = 60;
const CHUNK_BYTES: u64 = 100_000;

/// The ActionSet: a backupData that streams into the repository, and a prepareData that pulls the
/// file into the restore volume. The first attempt of each (the one that creates its marker
/// directory under `markers`) is slow, a chunk or a wait every quarter second, so the kill lands
/// mid-run; later attempts do the same work without the pauses.
fn action_set(markers: &Path) -> Value {
    let markers = markers.display();
    let backup = format!(
        r#"set -euo pipefail
export DATASAFED_BACKEND_BASE_PATH="$DP_BACKUP_BASE_PATH"
pace=0; if mkdir "{markers}/backup" 2>/dev/null; then pace=0.25; fi
for i in $(seq 1 {CHUNKS}); do head -c {CHUNK_BYTES} /dev/urandom; sleep $pace; done \
  | datasafed push - /data.bin
echo '{{"totalSize":"{}"}}' > "$DP_BACKUP_INFO_FILE"
echo "pushed {0} bytes for $DP_BACKUP_NAME"
"#,
        CHUNKS * CHUNK_BYTES
    );
    let restore = format!(
        r#"set -euo pipefail
export DATASAFED_BACKEND_BASE_PATH="$DP_BACKUP_BASE_PATH"
if mkdir "{markers}/restore" 2>/dev/null; then
  for i in $(seq 1 {CHUNKS}); do sleep 0.25; done
fi
datasafed pull /data.bin /restore-data/data.bin.part
mv /restore-data/data.bin.part /restore-data/data.bin
echo restored
"#
    );
    json!({
        "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "ActionSet",
        "metadata": {"name": "slow-file"},
        "spec": {
            "backupType": "Full",
            "backup": {"backupData": {
                "image": "busybox", "runOnTargetPodNode": false,
                "command": ["bash", "-c", backup]
            }},
            "restore": {"prepareData": {"image": "busybox", "command": ["bash", "-c", restore]}}
        }
    })
}

/// Pids of live processes started for pod `pod` (the runner sets HOSTNAME to the pod name).
fn pod_processes(pod: &str) -> Vec<u32> {
    let needle = format!("HOSTNAME={pod}");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        // A zombie has an empty environ: it runs nothing and writes nothing.
        if environ.split(|b| *b == 0).any(|var| var == needle.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// The name of a running job pod (not the workload's own description) whose processes run.
async fn running_job_pod(client: &kube::Client) -> Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    poll(TIMEOUT, "a running job pod with live processes", || async {
        let list = pods.list(&ListParams::default().labels("job-name")).await?;
        Ok(list
            .items
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .map(|p| p.name_any())
            .find(|name| !pod_processes(name).is_empty()))
    })
    .await
}

/// SIGKILLs the server (no shutdown path runs), restarts it on the same data directory, then
/// waits until the old pod is marked Failed for the restart and checks that none of its
/// processes outlived that.
async fn kill_and_restart(
    server: &mut HoldfastServer,
    data_dir: &Path,
    old_pod: &str,
) -> Result<(HoldfastServer, kube::Client)> {
    server.kill_9().await?;
    ensure!(!pod_processes(old_pod).is_empty(), "the workload of {old_pod} ended before the kill");
    let restarted = HoldfastServer::start(Path::new(BIN), data_dir).await?;
    let client = restarted.client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let status = poll(TIMEOUT, "the interrupted pod to be marked failed", || async {
        let pod = pods.get(old_pod).await?;
        let status = pod.status.unwrap_or_default();
        Ok((status.phase.as_deref() == Some("Failed")).then_some(status))
    })
    .await?;
    assert_eq!(status.reason.as_deref(), Some("NodeRestart"), "{status:?}");
    let message = status.message.unwrap_or_default();
    ensure!(message.contains("restart"), "the failure must say why: {message:?}");
    let left = pod_processes(old_pod);
    ensure!(left.is_empty(), "processes of {old_pod} outlived the restart: {left:?}");
    // The Job counts the interrupted attempt as failed and goes on (it retries).
    let job = pods.get(old_pod).await?.labels().get("job-name").cloned().context("job-name")?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    poll(TIMEOUT, "the Job to count the interrupted attempt", || async {
        let status = jobs.get(&job).await?.status.unwrap_or_default();
        Ok((status.failed.unwrap_or(0) >= 1).then_some(()))
    })
    .await?;
    Ok((restarted, client))
}

fn logs(data_dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![data_dir.join("logs")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                out.push_str(&format!("--- {}\n{text}\n", path.display()));
            }
        }
    }
    out
}

async fn setup(client: &kube::Client, repo_dir: &Path, markers: &Path) -> Result<()> {
    create(
        &Api::<BackupRepo>::all(client.clone()),
        json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "BackupRepo",
            "metadata": {"name": REPO},
            "spec": {
                "storageProviderRef": "holdfast-local", "accessMethod": "Tool",
                "pvReclaimPolicy": "Retain", "config": {"path": repo_dir.display().to_string()}
            }
        }),
    )
    .await?;
    let repos: Api<BackupRepo> = Api::all(client.clone());
    poll(TIMEOUT, "the BackupRepo to be Ready", || async {
        let phase = repos.get(REPO).await?.status.and_then(|s| s.phase);
        match phase.map(|p| format!("{p:?}")).as_deref() {
            Some("Ready") => Ok(Some(())),
            Some("Failed") => bail!("BackupRepo failed"),
            _ => Ok(None),
        }
    })
    .await?;
    create(&Api::<ActionSet>::all(client.clone()), action_set(markers)).await?;
    create(
        &Api::<Pod>::namespaced(client.clone(), NS),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "app-0", "labels": {"app": "restart-test"}},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]}
        }),
    )
    .await?;
    create(
        &Api::<BackupPolicy>::namespaced(client.clone(), NS),
        json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "app-policy"},
            "spec": {
                "backupRepoName": REPO,
                "backoffLimit": 2,
                "target": {
                    "podSelector": {"matchLabels": {"app": "restart-test"}},
                    "serviceAccountName": "default"
                },
                "backupMethods": [{"name": "slow", "actionSetName": "slow-file"}]
            }
        }),
    )
    .await?;
    Ok(())
}

/// A Backup `name` of the policy's `slow` method.
async fn create_backup(kube: &kube::Client, name: &str) -> Result<()> {
    create(
        &Api::<Backup>::namespaced(kube.clone(), NS),
        json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Backup",
            "metadata": {"name": name},
            "spec": {"backupPolicyName": "app-policy", "backupMethod": "slow"}
        }),
    )
    .await?;
    Ok(())
}

/// The repository's password, from the Secret the BackupRepo controller generated.
async fn repository_password(client: &kube::Client) -> Result<String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "holdfast-system");
    let secret = secrets.get(&format!("{REPO}-repository-key")).await?;
    let bytes = secret.data.and_then(|d| d.get("password").cloned()).context("password key")?;
    Ok(String::from_utf8(bytes.0)?)
}

async fn repo_check(repo_dir: &Path, password: &str) -> Result<()> {
    let out = Command::new(BIN)
        .args(["repo", "check", "--quiet", "--read-data", "-r"])
        .arg(repo_dir)
        .env("HOLDFAST_PASSWORD", password)
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "holdfast repo check failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_backup_and_mid_restore_then_both_complete() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let repo_dir = dir.path().join("repo");
    let markers = dir.path().join("attempts");
    std::fs::create_dir_all(&repo_dir)?;
    std::fs::create_dir_all(&markers)?;
    let mut server = HoldfastServer::start(Path::new(BIN), &data_dir).await?;
    let kube = server.client().await?;
    setup(&kube, &repo_dir, &markers).await?;

    // --- Backup, killed while backupData streams.
    create_backup(&kube, "b1").await?;
    let backups: Api<Backup> = Api::namespaced(kube.clone(), NS);
    poll(TIMEOUT, "the Backup to be Running", || async {
        let phase = backups.get("b1").await?.status.and_then(|s| s.phase);
        Ok((phase == Some(BackupPhase::Running)).then_some(()))
    })
    .await?;
    let old_pod = running_job_pod(&kube).await?;
    let (mut server2, kube) = kill_and_restart(&mut server, &data_dir, &old_pod).await?;

    let backups: Api<Backup> = Api::namespaced(kube.clone(), NS);
    let backup = poll(TIMEOUT, "the Backup to finish after the restart", || async {
        let b = backups.get("b1").await?;
        match b.status.as_ref().and_then(|s| s.phase) {
            Some(BackupPhase::Completed) => Ok(Some(b)),
            Some(BackupPhase::Failed) => {
                bail!("backup failed after the restart: {:?}\n{}", b.status, logs(&data_dir))
            }
            _ => Ok(None),
        }
    })
    .await?;
    let status = backup.status.context("backup status")?;
    assert_eq!(status.total_size.as_deref(), Some((CHUNKS * CHUNK_BYTES).to_string().as_str()));
    assert_eq!(status.backup_repo_name.as_deref(), Some(REPO));
    ensure!(status.path.is_some(), "the status lost its path: {status:?}");
    let password = repository_password(&kube).await?;
    repo_check(&repo_dir, &password).await?;

    // --- Restore of that backup, killed while prepareData runs.
    create(
        &Api::<Restore>::namespaced(kube.clone(), NS),
        json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Restore",
            "metadata": {"name": "r1"},
            "spec": {
                "backup": {"name": "b1", "namespace": NS},
                "prepareDataConfig": {
                    "volumeClaims": [{
                        "metadata": {"name": "restored-data"},
                        "volumeClaimSpec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                        "mountPath": "/restore-data"
                    }],
                    "volumeClaimRestorePolicy": "Serial"
                },
                "backoffLimit": 2
            }
        }),
    )
    .await?;
    let restores: Api<Restore> = Api::namespaced(kube.clone(), NS);
    poll(TIMEOUT, "the Restore to be Running", || async {
        let phase = restores.get("r1").await?.status.and_then(|s| s.phase);
        Ok((phase == Some(RestorePhase::Running)).then_some(()))
    })
    .await?;
    let old_pod = running_job_pod(&kube).await?;
    let (_server3, kube) = kill_and_restart(&mut server2, &data_dir, &old_pod).await?;

    let restores: Api<Restore> = Api::namespaced(kube.clone(), NS);
    let restore = poll(TIMEOUT, "the Restore to finish after the restart", || async {
        let r = restores.get("r1").await?;
        match r.status.as_ref().and_then(|s| s.phase) {
            Some(RestorePhase::Completed) => Ok(Some(r)),
            Some(RestorePhase::Failed) => {
                bail!("restore failed after the restart: {:?}\n{}", r.status, logs(&data_dir))
            }
            _ => Ok(None),
        }
    })
    .await?;
    let status = restore.status.context("restore status")?;
    ensure!(status.completion_timestamp.is_some(), "{status:?}");
    let restored = claim_dir(&kube, NS, "restored-data").await?.join("data.bin");
    let size = std::fs::metadata(&restored)
        .with_context(|| format!("restored file {}", restored.display()))?
        .len();
    assert_eq!(size, CHUNKS * CHUNK_BYTES, "the restored file is not the backed-up file");
    repo_check(&repo_dir, &password).await?;
    Ok(())
}

/// `kubectl logs job/<name>` with the kubeconfig the server wrote.
async fn kubectl_logs(data_dir: &Path, job: &str) -> Result<String> {
    let kubeconfig = data_dir.join("kubeconfig");
    let out = holdfast_testkit::kubeconfig::kubectl(
        &kubeconfig,
        &data_dir.join("kubectl-cache"),
        &["logs", &format!("job/{job}"), "-n", NS],
    )
    .output()
    .await?;
    ensure!(out.status.success(), "kubectl logs failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_backups_job_logs_stay_readable_across_a_restart() -> Result<()> {
    holdfast_testkit::kubeconfig::require_kubectl()?;
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let repo_dir = dir.path().join("repo");
    let markers = dir.path().join("attempts");
    std::fs::create_dir_all(&repo_dir)?;
    // The marker exists: the first attempt runs at full speed.
    std::fs::create_dir_all(markers.join("backup"))?;
    let mut server = HoldfastServer::start(Path::new(BIN), &data_dir).await?;
    let kube = server.client().await?;
    setup(&kube, &repo_dir, &markers).await?;
    create_backup(&kube, "kept").await?;
    let backups: Api<Backup> = Api::namespaced(kube.clone(), NS);
    poll(TIMEOUT, "the Backup to complete", || async {
        let b = backups.get("kept").await?;
        match b.status.as_ref().and_then(|s| s.phase) {
            Some(BackupPhase::Completed) => Ok(Some(())),
            Some(BackupPhase::Failed) => {
                bail!("backup failed: {:?}\n{}", b.status, logs(&data_dir))
            }
            _ => Ok(None),
        }
    })
    .await?;
    let jobs: Api<Job> = Api::namespaced(kube.clone(), NS);
    let job = jobs
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|j| j.owner_references().iter().any(|o| o.kind == "Backup" && o.name == "kept"))
        .context("the backup's Job was removed when the backup completed")?;
    let ttl = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished);
    assert_eq!(ttl, Some(7 * 24 * 3600));
    let expected = format!("pushed {} bytes for kept", CHUNKS * CHUNK_BYTES);
    let before = kubectl_logs(&data_dir, &job.name_any()).await?;
    ensure!(before.contains(&expected), "kubectl logs job/{}: {before:?}", job.name_any());

    server.kill_9().await?;
    let restarted = HoldfastServer::start(Path::new(BIN), &data_dir).await?;
    restarted.client().await?;
    let after = kubectl_logs(&data_dir, &job.name_any()).await?;
    ensure!(after.contains(&expected), "after the restart: {after:?}");
    let out = Command::new(BIN)
        .args(["logs", &format!("job/{}", job.name_any()), "-n", NS, "--data-dir"])
        .arg(&data_dir)
        .output()
        .await?;
    ensure!(out.status.success(), "holdfast logs: {}", String::from_utf8_lossy(&out.stderr));
    ensure!(String::from_utf8_lossy(&out.stdout).contains(&expected));
    Ok(())
}
