//! Velero's file-system backup through the API only (kube-rs against the embedded server): a
//! BackupStorageLocation, PodVolumeBackups of a pod's two claims holding about 1 GiB of mixed
//! files (many small, a few large, a symlink, a sparse file), the data damaged, then
//! PodVolumeRestores into a new pod's claims: the restored trees are byte-identical and carry
//! Velero's done marker. Around it: progress that has its total before bytes move and never goes
//! back, incremental backups, cancel, and the clear failures of impossible work. Then the data
//! mover: VolumeSnapshot → DataUpload → DataDownload into a new claim.

mod common;
#[path = "common/poll.rs"]
mod poll;
#[path = "common/tree.rs"]
mod tree;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use common::{claim_dir, create};
use holdfast_api::snapshot::VolumeSnapshot;
use holdfast_api::velero::storage_location::BackupStorageLocationPhase;
use holdfast_api::velero::{
    BackupRepository, BackupStorageLocation, DataDownload, DataMovePhase, DataUpload,
    PodVolumeBackup, PodVolumeRestore,
};
use holdfast_testkit::{EmbeddedServer, HoldfastServer, Moto};
use k8s_openapi::api::core::v1::{Event, Namespace, Node, PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use poll::poll;
use serde_json::{Value, json};
use tree::{assert_same_tree, random_bytes};

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");
const VELERO: &str = "velero";
const APPS: &str = "apps";
const TIMEOUT: Duration = Duration::from_secs(300);
const MIB: usize = 1 << 20;

/// The name of the one node the server's agent serves, once it is registered and Ready.
async fn ready_node(client: &kube::Client) -> Result<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    poll(TIMEOUT, "the node to register", || async {
        let list = nodes.list(&ListParams::default()).await?;
        Ok(list.items.first().and_then(|n| {
            let conditions = n.status.as_ref()?.conditions.as_ref()?;
            let ready = conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then(|| n.metadata.name.clone()).flatten()
        }))
    })
    .await
}

/// Fills a volume: `small` files of 1–16 KiB in 40 directories, `large` incompressible files of
/// `large_mib` MiB, a symlink and a sparse file of `sparse_mib` MiB with data at both ends.
fn fill(
    dir: &Path,
    seed: u64,
    small: usize,
    large: usize,
    large_mib: usize,
    sparse_mib: u64,
) -> Result<u64> {
    let mut bytes = 0u64;
    for i in 0..small {
        let sub = dir.join(format!("d{:02}", i % 40));
        fs::create_dir_all(&sub)?;
        let len = 1024 + (i * 7919) % (15 * 1024);
        fs::write(sub.join(format!("f{i:05}.dat")), random_bytes(seed + i as u64, len))?;
        bytes += len as u64;
    }
    for i in 0..large {
        let len = large_mib * MIB + i * 4099;
        fs::write(dir.join(format!("large-{i}.bin")), random_bytes(seed * 1000 + i as u64, len))?;
        bytes += len as u64;
    }
    std::os::unix::fs::symlink("d00/f00000.dat", dir.join("link"))?;
    let sparse = fs::File::create(dir.join("sparse.img"))?;
    let size = sparse_mib * MIB as u64;
    sparse.set_len(size)?;
    use std::os::unix::fs::FileExt as _;
    sparse.write_all_at(b"head", 0)?;
    sparse.write_all_at(b"tail", size - 4)?;
    Ok(bytes + size)
}

/// A location `name` in a directory, validated only on change.
async fn local_location(client: &kube::Client, name: &str, store: &Path) -> Result<()> {
    create(
        &Api::<BackupStorageLocation>::namespaced(client.clone(), VELERO),
        json!({"metadata": {"name": name}, "spec": {
            "provider": "local", "objectStorage": {"bucket": "b"},
            "config": {"fspath": store.display().to_string()}
        }}),
    )
    .await?;
    Ok(())
}

async fn namespace(client: &kube::Client, name: &str) -> Result<()> {
    create(&Api::<Namespace>::all(client.clone()), json!({"metadata": {"name": name}})).await?;
    Ok(())
}

async fn bound_claim(client: &kube::Client, name: &str) -> Result<std::path::PathBuf> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), APPS);
    create(
        &claims,
        json!({"metadata": {"name": name}, "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "2Gi"}}
        }}),
    )
    .await?;
    poll(TIMEOUT, &format!("claim {name} to be bound"), || async {
        let pvc = claims.get(name).await?;
        Ok((pvc.status.and_then(|s| s.phase).as_deref() == Some("Bound")).then_some(()))
    })
    .await?;
    claim_dir(client, APPS, name).await
}

async fn pod(client: &kube::Client, name: &str, claims: [&str; 2]) -> Result<()> {
    create(
        &Api::<Pod>::namespaced(client.clone(), APPS),
        json!({"metadata": {"name": name}, "spec": {
            "containers": [{"name": "app", "image": "busybox",
                "volumeMounts": [{"name": "data-a", "mountPath": "/a"}, {"name": "data-b", "mountPath": "/b"}]}],
            "volumes": [
                {"name": "data-a", "persistentVolumeClaim": {"claimName": claims[0]}},
                {"name": "data-b", "persistentVolumeClaim": {"claimName": claims[1]}}
            ]
        }}),
    )
    .await?;
    Ok(())
}

fn pvb(name: &str, node: &str, pod: &str, volume: &str, bsl: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"velero.io/backup-name": "nightly"}}, "spec": {
        "node": node, "pod": {"kind": "Pod", "namespace": APPS, "name": pod},
        "volume": volume, "backupStorageLocation": bsl, "repoIdentifier": "",
        "uploaderType": "kopia", "tags": {"backup": "nightly", "volume": volume},
        "uploaderSettings": {"ParallelFilesUpload": "2"}
    }})
}

fn pvr(name: &str, pod: &str, volume: &str, snapshot: &str, restore_uid: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"velero.io/restore-uid": restore_uid}}, "spec": {
        "pod": {"kind": "Pod", "namespace": APPS, "name": pod},
        "volume": volume, "backupStorageLocation": "local", "repoIdentifier": "",
        "snapshotID": snapshot, "sourceNamespace": APPS, "uploaderType": "kopia",
        "uploaderSettings": {"WriteSparseFiles": "true", "ParallelFilesDownload": "4"}
    }})
}

/// Every (totalBytes, bytesDone) seen while polling, to check progress afterwards.
type Samples = Arc<Mutex<Vec<(Option<i64>, Option<i64>)>>>;

/// Waits for a terminal phase, sampling progress on the way.
async fn finished<K>(api: &Api<K>, name: &str, samples: &Samples) -> Result<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
{
    poll(TIMEOUT, &format!("{name} to finish"), || async {
        let obj = api.get(name).await?;
        let status = serde_json::to_value(&obj)?["status"].clone();
        let progress = &status["progress"];
        samples
            .lock()
            .unwrap()
            .push((progress["totalBytes"].as_i64(), progress["bytesDone"].as_i64()));
        let phase: Option<DataMovePhase> = serde_json::from_value(status["phase"].clone()).ok();
        Ok(phase.filter(|p| p.is_terminal()).map(|_| obj))
    })
    .await
}

fn assert_progress_honest(samples: &Samples, final_bytes: i64) {
    let samples = samples.lock().unwrap();
    let mut last_done = 0;
    for &(total, done) in samples.iter() {
        if let Some(done) = done {
            assert!(total.is_some(), "bytesDone {done} shown without a total: {samples:?}");
            assert!(
                done >= last_done,
                "bytesDone went back from {last_done} to {done}: {samples:?}"
            );
            assert!(done <= total.unwrap(), "bytesDone {done} past totalBytes {total:?}");
            last_done = done;
        }
    }
    assert_eq!(
        samples.last().copied(),
        Some((Some(final_bytes), Some(final_bytes))),
        "{samples:?}"
    );
}

/// The restored tree equals the source, apart from the done marker it must carry.
fn assert_restored(src: &Path, restored: &Path, restore_uid: &str) -> Result<()> {
    let marker = restored.join(".velero").join(restore_uid);
    ensure!(marker.is_file(), "no done marker {}", marker.display());
    fs::remove_dir_all(restored.join(".velero"))?;
    assert_same_tree(src, restored);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_volume_backup_and_restore_round_trip_through_the_api() -> Result<()> {
    let server = EmbeddedServer::start(Path::new(BIN)).await?;
    let client = server.client.clone();
    namespace(&client, VELERO).await?;
    namespace(&client, APPS).await?;
    let store = server.scratch_dir("bsl")?;

    // The node the in-process agent serves is listed, Ready.
    let node = ready_node(&client).await?;

    let bsls: Api<BackupStorageLocation> = Api::namespaced(client.clone(), VELERO);
    create(
        &bsls,
        json!({"metadata": {"name": "local"}, "spec": {
            "provider": "local", "objectStorage": {"bucket": "backups", "prefix": "cluster-a"},
            "config": {"fspath": store.display().to_string()}, "validationFrequency": "30s"
        }}),
    )
    .await?;
    // A read-only location whose directory does not exist is Unavailable, saying why.
    create(
        &bsls,
        json!({"metadata": {"name": "gone"}, "spec": {
            "provider": "local", "accessMode": "ReadOnly", "objectStorage": {"bucket": "b"},
            "config": {"fspath": store.join("absent").display().to_string()}
        }}),
    )
    .await?;
    for (name, want) in [
        ("local", BackupStorageLocationPhase::Available),
        ("gone", BackupStorageLocationPhase::Unavailable),
    ] {
        let status = poll(TIMEOUT, &format!("location {name} to be validated"), || async {
            Ok(bsls.get(name).await?.status.filter(|s| s.phase.is_some()))
        })
        .await?;
        assert_eq!(status.phase, Some(want), "{status:?}");
        assert!(status.last_validation_time.is_some());
        if want == BackupStorageLocationPhase::Unavailable {
            let message = status.message.unwrap_or_default();
            assert!(message.contains("does not exist"), "{message}");
        }
    }

    let dir_a = bound_claim(&client, "data-a").await?;
    let dir_b = bound_claim(&client, "data-b").await?;
    let bytes_a = fill(&dir_a, 1, 20_000, 2, 200, 200)?;
    let bytes_b = fill(&dir_b, 2, 4_000, 3, 100, 100)?;
    ensure!(bytes_a + bytes_b >= 1 << 30, "the data set is {} bytes", bytes_a + bytes_b);
    pod(&client, "app", ["data-a", "data-b"]).await?;

    let pvbs: Api<PodVolumeBackup> = Api::namespaced(client.clone(), VELERO);
    create(&pvbs, pvb("nightly-a", &node, "app", "data-a", "local")).await?;
    create(&pvbs, pvb("nightly-b", &node, "app", "data-b", "local")).await?;
    let mut snapshots = BTreeMap::new();
    for (name, dir, bytes) in [("nightly-a", &dir_a, bytes_a), ("nightly-b", &dir_b, bytes_b)] {
        let samples = Samples::default();
        let done = finished(&pvbs, name, &samples).await?;
        let status = done.status.context("status")?;
        assert_eq!(status.phase, Some(DataMovePhase::Completed), "{status:?}");
        assert_progress_honest(&samples, bytes as i64);
        assert!(status.start_timestamp.is_some() && status.completion_timestamp.is_some());
        assert_eq!(status.path.as_deref(), Some(dir.to_str().unwrap()));
        assert!(status.incremental_bytes.unwrap_or(0) > 0, "{status:?}");
        snapshots.insert(name, status.snapshot_id.context("snapshotID")?);
    }
    // One repository per (namespace, location, type), created on first use, Ready.
    let repos: Api<BackupRepository> = Api::namespaced(client.clone(), VELERO);
    let repo = poll(TIMEOUT, "the repository to be Ready", || async {
        let repo = repos.get_opt("apps-local-kopia").await?;
        Ok(repo.filter(|r| {
            r.status.as_ref().and_then(|s| s.phase).map(|p| format!("{p:?}"))
                == Some("Ready".into())
        }))
    })
    .await?;
    assert_eq!(repo.spec.volume_namespace, APPS);
    ensure!(
        store.join("cluster-a/kopia/apps/config").is_file(),
        "the repository is not where Velero puts it"
    );

    // A second backup of an unchanged volume adds (almost) nothing: it is incremental.
    create(&pvbs, pvb("again-b", &node, "app", "data-b", "local")).await?;
    let again = finished(&pvbs, "again-b", &Samples::default()).await?.status.context("status")?;
    assert_eq!(again.phase, Some(DataMovePhase::Completed), "{again:?}");
    assert!(again.incremental_bytes.unwrap_or(i64::MAX) < 1 << 20, "{again:?}");
    maintenance_waits_for_a_running_backup(&client, &repos, &store.join("cluster-a/kopia/apps"))
        .await?;

    // Keep pristine copies to compare with, then damage the volumes.
    let pristine = server.scratch_dir("pristine")?;
    for (dir, name) in [(&dir_a, "a"), (&dir_b, "b")] {
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(dir)
            .arg(pristine.join(name))
            .status()?;
        ensure!(st.success(), "cp -a");
    }
    fs::remove_dir_all(dir_a.join("d07"))?;
    fs::write(dir_a.join("large-0.bin"), b"overwritten")?;
    fs::remove_file(dir_b.join("link"))?;

    // Restores into a new pod's claims.
    let new_a = bound_claim(&client, "restore-a").await?;
    let new_b = bound_claim(&client, "restore-b").await?;
    pod(&client, "app-restored", ["restore-a", "restore-b"]).await?;
    let pvrs: Api<PodVolumeRestore> = Api::namespaced(client.clone(), VELERO);
    create(&pvrs, pvr("restore-a", "app-restored", "data-a", &snapshots["nightly-a"], "r-1"))
        .await?;
    create(&pvrs, pvr("restore-b", "app-restored", "data-b", &snapshots["nightly-b"], "r-1"))
        .await?;
    for (name, bytes) in [("restore-a", bytes_a), ("restore-b", bytes_b)] {
        let samples = Samples::default();
        let done = finished(&pvrs, name, &samples).await?.status.context("status")?;
        assert_eq!(done.phase, Some(DataMovePhase::Completed), "{done:?}");
        assert_eq!(done.node.as_deref(), Some(node.as_str()));
        assert_progress_honest(&samples, bytes as i64);
    }
    assert_restored(&pristine.join("a"), &new_a, "r-1")?;
    assert_restored(&pristine.join("b"), &new_b, "r-1")?;

    // Cancelling a running restore ends Canceled promptly.
    create(&pvrs, pvr("cancel-me", "app-restored", "data-a", &snapshots["nightly-a"], "r-2"))
        .await?;
    poll(TIMEOUT, "the restore to move data", || async {
        let phase = pvrs.get("cancel-me").await?.status.and_then(|s| s.phase);
        Ok((phase == Some(DataMovePhase::InProgress)).then_some(()))
    })
    .await?;
    pvrs.patch(
        "cancel-me",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"cancel": true}})),
    )
    .await?;
    let canceled = poll(Duration::from_secs(20), "the restore to be canceled", || async {
        Ok(pvrs.get("cancel-me").await?.status.filter(|s| s.phase.is_some_and(|p| p.is_terminal())))
    })
    .await?;
    assert_eq!(canceled.phase, Some(DataMovePhase::Canceled), "{canceled:?}");
    ensure!(!new_a.join(".velero/r-2").exists(), "a canceled restore wrote the done marker");

    // Impossible work fails at once, saying why.
    create(&pvrs, pvr("no-such-snapshot", "app-restored", "data-a", "0123456789abcdef", "r-3"))
        .await?;
    create(&pvbs, pvb("no-location", &node, "app", "data-a", "missing")).await?;
    create(&pvbs, pvb("elsewhere", "node-that-does-not-exist", "app", "data-a", "local")).await?;
    create(&pvbs, pvb("read-only", &node, "app", "data-a", "gone")).await?;
    for (name, why) in [
        ("no-location", "BackupStorageLocation velero/missing does not exist"),
        ("elsewhere", "node-that-does-not-exist"),
        ("read-only", "gone"),
    ] {
        let status = finished(&pvbs, name, &Samples::default()).await?.status.context("status")?;
        assert_eq!(status.phase, Some(DataMovePhase::Failed), "{name}: {status:?}");
        let message = status.message.unwrap_or_default();
        assert!(message.contains(why), "{name}: {message}");
    }
    let status =
        finished(&pvrs, "no-such-snapshot", &Samples::default()).await?.status.context("status")?;
    assert_eq!(status.phase, Some(DataMovePhase::Failed), "{status:?}");
    assert!(status.message.unwrap_or_default().contains("0123456789abcdef"));

    // Deleting finished work lets it go (the finalizer is removed).
    pvbs.delete("nightly-a", &Default::default()).await?;
    poll(TIMEOUT, "the backup to be deleted", || async {
        Ok(pvbs.get_opt("nightly-a").await?.is_none().then_some(()))
    })
    .await?;
    Ok(())
}

/// Maintenance that comes due while another process backs up into the repository (a real
/// `holdfast repo backup --stdin` still reading) is postponed, not recorded as failed, and runs
/// once that backup has finished.
async fn maintenance_waits_for_a_running_backup(
    client: &kube::Client,
    repos: &Api<BackupRepository>,
    path: &Path,
) -> Result<()> {
    let secret =
        Api::<Secret>::namespaced(client.clone(), VELERO).get("velero-repo-credentials").await?;
    let password = secret
        .data
        .and_then(|d| d.get("repository-password").cloned())
        .context("the repository password")?;
    let password_file = tempfile::NamedTempFile::new()?;
    fs::write(password_file.path(), password.0)?;
    let mut writer = std::process::Command::new(BIN)
        .args(["repo", "--repo"])
        .arg(path)
        .arg("--password-file")
        .arg(password_file.path())
        .args(["backup", "--stdin", "--stdin-filename", "dump.sql"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let mut stdin = writer.stdin.take().context("stdin")?;
    std::io::Write::write_all(&mut stdin, b"-- still dumping\n")?;
    poll(TIMEOUT, "the backup to hold its lock", || async {
        Ok((fs::read_dir(path.join("locks"))?.count() > 0).then_some(()))
    })
    .await?;

    let before = repos.get("apps-local-kopia").await?.status.unwrap_or_default();
    assert!(before.last_maintenance_time.is_some(), "a ready repository counts as maintained");
    repos
        .patch(
            "apps-local-kopia",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"maintenanceFrequency": "1s"}})),
        )
        .await?;
    let events: Api<Event> = Api::namespaced(client.clone(), VELERO);
    let postponed = poll(TIMEOUT, "maintenance to be postponed", || async {
        let list = events.list(&ListParams::default()).await?;
        Ok(list.items.into_iter().find(|e| e.reason.as_deref() == Some("MaintenancePostponed")))
    })
    .await?;
    let message = postponed.message.unwrap_or_default();
    assert!(message.contains("in use") && message.contains("backup"), "{message}");
    let status = repos.get("apps-local-kopia").await?.status.unwrap_or_default();
    assert!(
        status.recent_maintenance.unwrap_or_default().is_empty(),
        "a postponed maintenance is not a run"
    );

    drop(stdin);
    ensure!(writer.wait()?.success(), "the stdin backup failed");
    let maintained = poll(TIMEOUT, "maintenance to run after the backup", || async {
        let status = repos.get("apps-local-kopia").await?.status;
        Ok(status.filter(|s| s.recent_maintenance.as_ref().is_some_and(|r| !r.is_empty())))
    })
    .await?;
    let runs = maintained.recent_maintenance.unwrap_or_default();
    assert_eq!(serde_json::to_value(runs[0].result)?, json!("Succeeded"), "{runs:?}");
    // Back to Velero's hourly default, so maintenance stays out of the rest of the test.
    repos
        .patch(
            "apps-local-kopia",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"maintenanceFrequency": "1h"}})),
        )
        .await?;
    Ok(())
}

/// `kill -9` of the real server while a PodVolumeBackup moves data: after the restart the work
/// does not stay InProgress, it ends Failed saying why, and a new backup of the volume completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_interrupted_by_a_server_kill_ends_failed_with_the_reason() -> Result<()> {
    let data = tempfile::tempdir()?;
    let mut server = HoldfastServer::start(Path::new(BIN), data.path()).await?;
    let client = server.client().await?;
    namespace(&client, VELERO).await?;
    namespace(&client, APPS).await?;
    let node = ready_node(&client).await?;
    local_location(&client, "local", &data.path().join("bsl")).await?;
    let dir = bound_claim(&client, "data-a").await?;
    fill(&dir, 3, 2_000, 4, 200, 1)?;
    bound_claim(&client, "data-b").await?;
    pod(&client, "app", ["data-a", "data-b"]).await?;
    let pvbs: Api<PodVolumeBackup> = Api::namespaced(client.clone(), VELERO);
    // One worker, so the move takes long enough for the kill to land in it.
    let mut slow = pvb("interrupted", &node, "app", "data-a", "local");
    slow["spec"]["uploaderSettings"]["ParallelFilesUpload"] = json!("1");
    create(&pvbs, slow).await?;
    poll(TIMEOUT, "the backup to move data", || async {
        let phase = pvbs.get("interrupted").await?.status.and_then(|s| s.phase);
        Ok((phase == Some(DataMovePhase::InProgress)).then_some(()))
    })
    .await?;
    server.kill_9().await?;

    let server = HoldfastServer::start(Path::new(BIN), data.path()).await?;
    let client = server.client().await?;
    let pvbs: Api<PodVolumeBackup> = Api::namespaced(client.clone(), VELERO);
    let status =
        finished(&pvbs, "interrupted", &Samples::default()).await?.status.context("status")?;
    assert_eq!(status.phase, Some(DataMovePhase::Failed), "{status:?}");
    let message = status.message.unwrap_or_default();
    assert!(message.contains("restarted while data was moving"), "{message}");
    assert!(status.completion_timestamp.is_some());

    create(&pvbs, pvb("retry", &node, "app", "data-a", "local")).await?;
    let retry = finished(&pvbs, "retry", &Samples::default()).await?.status.context("status")?;
    assert_eq!(retry.phase, Some(DataMovePhase::Completed), "{retry:?}");
    Ok(())
}

fn data_upload(name: &str, snapshot: &str, pvc: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"velero.io/backup-name": "weekly"}}, "spec": {
        "snapshotType": "CSI",
        "csiSnapshot": {"volumeSnapshot": snapshot, "storageClass": "local-path",
                        "snapshotClass": "local-path", "driver": "holdfast.io/local-path"},
        "sourcePVC": pvc, "datamover": "velero", "backupStorageLocation": "local",
        "sourceNamespace": APPS, "operationTimeout": "10m0s",
        "dataMoverConfig": {"ParallelFilesUpload": "2"}
    }})
}

fn data_download(name: &str, snapshot_id: &str, pvc: &str, timeout: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {
        "targetVolume": {"pvc": pvc, "pv": "", "namespace": APPS},
        "backupStorageLocation": "local", "datamover": "", "snapshotID": snapshot_id,
        "sourceNamespace": APPS, "operationTimeout": timeout,
        "dataMoverConfig": {"WriteSparseFiles": "true", "ParallelFilesDownload": "4"}
    }})
}

/// Takes VolumeSnapshot `name` of claim `pvc` and waits until it is ready to use.
async fn ready_snapshot(client: &kube::Client, name: &str, pvc: &str) -> Result<()> {
    let snapshots: Api<VolumeSnapshot> = Api::namespaced(client.clone(), APPS);
    create(
        &snapshots,
        json!({"metadata": {"name": name}, "spec": {"source": {"persistentVolumeClaimName": pvc}}}),
    )
    .await?;
    poll(TIMEOUT, &format!("snapshot {name} ready"), || async {
        let vs = snapshots.get(name).await?;
        Ok((vs.status.and_then(|s| s.ready_to_use) == Some(true)).then_some(()))
    })
    .await
}

/// The CSI data mover through the API: a VolumeSnapshot's data is uploaded (DataUpload) and
/// downloaded into a new claim (DataDownload), byte-identical to the volume when the snapshot was
/// taken and blind to what was written after; a claim made straight from the snapshot matches
/// too; a second upload of the claim is incremental; other movers' work is left alone; impossible
/// work fails saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_snapshot_data_upload_and_download_round_trip_through_the_api() -> Result<()> {
    let server = EmbeddedServer::start(Path::new(BIN)).await?;
    let client = server.client.clone();
    namespace(&client, VELERO).await?;
    namespace(&client, APPS).await?;
    let node = ready_node(&client).await?;
    local_location(&client, "local", &server.scratch_dir("bsl")?).await?;

    let src = bound_claim(&client, "db-data").await?;
    let bytes = fill(&src, 7, 3_000, 3, 40, 64)?;
    ready_snapshot(&client, "db-snap-1", "db-data").await?;
    // The volume as the snapshot saw it; then writes the snapshot must not see.
    let at_snapshot = server.scratch_dir("at-snapshot")?.join("tree");
    ensure!(
        std::process::Command::new("cp").arg("-a").arg(&src).arg(&at_snapshot).status()?.success()
    );
    fs::write(src.join("written-after.bin"), random_bytes(99, 3 * MIB))?;
    fs::write(src.join("d03/f00003.dat"), b"changed after the snapshot")?;

    let uploads: Api<DataUpload> = Api::namespaced(client.clone(), VELERO);
    create(&uploads, data_upload("weekly-db", "db-snap-1", "db-data")).await?;
    // Work for another data mover is not ours to touch.
    let mut foreign = data_upload("for-another-mover", "db-snap-1", "db-data");
    foreign["spec"]["datamover"] = json!("acme.io/mover");
    create(&uploads, foreign).await?;
    let samples = Samples::default();
    let up = finished(&uploads, "weekly-db", &samples).await?.status.context("status")?;
    assert_eq!(up.phase, Some(DataMovePhase::Completed), "{up:?}");
    assert_progress_honest(&samples, bytes as i64);
    assert_eq!(up.node.as_deref(), Some(node.as_str()));
    assert_eq!(up.accepted_by_node.as_deref(), Some(node.as_str()));
    assert!(up.start_timestamp.is_some() && up.accepted_timestamp.is_some());
    assert!(up.incremental_bytes.unwrap_or(0) > 0, "{up:?}");
    assert!(up.path.as_deref().is_some_and(|p| !p.is_empty()), "{up:?}");
    let snapshot_id = up.snapshot_id.context("snapshotID")?;
    let foreign = uploads.get("for-another-mover").await?;
    assert!(foreign.status.and_then(|s| s.phase).is_none(), "another mover's work was touched");
    assert!(foreign.metadata.finalizers.is_none(), "another mover's work got our finalizer");

    // Downloaded into a new claim: the volume as it was at the snapshot.
    bound_claim(&client, "db-restored").await?;
    let downloads: Api<DataDownload> = Api::namespaced(client.clone(), VELERO);
    create(&downloads, data_download("weekly-db-restore", &snapshot_id, "db-restored", "10m"))
        .await?;
    let samples = Samples::default();
    let down =
        finished(&downloads, "weekly-db-restore", &samples).await?.status.context("status")?;
    assert_eq!(down.phase, Some(DataMovePhase::Completed), "{down:?}");
    assert_eq!(down.node.as_deref(), Some(node.as_str()));
    assert_progress_honest(&samples, bytes as i64);
    assert_same_tree(&at_snapshot, &claim_dir(&client, APPS, "db-restored").await?);

    // A claim made straight from the snapshot holds the same.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), APPS);
    create(
        &claims,
        json!({"metadata": {"name": "db-from-snap"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}},
            "dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "db-snap-1"}
        }}),
    )
    .await?;
    poll(TIMEOUT, "the claim from the snapshot to be bound", || async {
        let pvc = claims.get("db-from-snap").await?;
        Ok((pvc.status.and_then(|s| s.phase).as_deref() == Some("Bound")).then_some(()))
    })
    .await?;
    assert_same_tree(&at_snapshot, &claim_dir(&client, APPS, "db-from-snap").await?);

    // The next upload of the claim is incremental: about what was written since.
    ready_snapshot(&client, "db-snap-2", "db-data").await?;
    create(&uploads, data_upload("weekly-db-2", "db-snap-2", "db-data")).await?;
    let second =
        finished(&uploads, "weekly-db-2", &Samples::default()).await?.status.context("status")?;
    assert_eq!(second.phase, Some(DataMovePhase::Completed), "{second:?}");
    let added = second.incremental_bytes.unwrap_or(i64::MAX);
    assert!(added < 8 * MIB as i64, "the second upload added {added} bytes, not incremental");

    // Impossible work fails, saying why; a claim that never comes fails once its
    // operationTimeout has passed.
    create(&uploads, data_upload("no-snapshot", "missing-snap", "db-data")).await?;
    create(&downloads, data_download("no-such-id", "0123456789abcdef", "db-restored", "10m"))
        .await?;
    create(&downloads, data_download("no-claim", &snapshot_id, "never-created", "3s")).await?;
    let failed =
        finished(&uploads, "no-snapshot", &Samples::default()).await?.status.context("status")?;
    assert_eq!(failed.phase, Some(DataMovePhase::Failed), "{failed:?}");
    let message = failed.message.unwrap_or_default();
    assert!(message.contains("VolumeSnapshot apps/missing-snap does not exist"), "{message}");
    for (name, why) in [
        ("no-such-id", "0123456789abcdef"),
        ("no-claim", "timeout on preparing: still not ready after 3 seconds"),
    ] {
        let status =
            finished(&downloads, name, &Samples::default()).await?.status.context("status")?;
        assert_eq!(status.phase, Some(DataMovePhase::Failed), "{name}: {status:?}");
        let message = status.message.unwrap_or_default();
        assert!(message.contains(why), "{name}: {message}");
    }

    // Finished work goes when deleted.
    downloads.delete("weekly-db-restore", &Default::default()).await?;
    poll(TIMEOUT, "the download to be deleted", || async {
        Ok(downloads.get_opt("weekly-db-restore").await?.is_none().then_some(()))
    })
    .await?;
    Ok(())
}

/// A location in an S3-compatible bucket (moto) with Velero's credential Secret (an AWS
/// credentials file): it validates Available, a backup and a restore go through it, and the
/// repository's maintenance runs on its `maintenanceFrequency` and is recorded in its status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_location_backs_up_restores_and_maintains_its_repository() -> Result<()> {
    let moto = Moto::start()?;
    moto.create_bucket("velero")?;
    let server = EmbeddedServer::start(Path::new(BIN)).await?;
    let client = server.client.clone();
    namespace(&client, VELERO).await?;
    namespace(&client, APPS).await?;
    let node = ready_node(&client).await?;
    let credentials = format!(
        "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        holdfast_testkit::moto::ACCESS_KEY_ID,
        holdfast_testkit::moto::SECRET_ACCESS_KEY
    );
    create(
        &Api::<Secret>::namespaced(client.clone(), VELERO),
        json!({"metadata": {"name": "cloud-credentials"}, "stringData": {"cloud": credentials}}),
    )
    .await?;
    let bsls: Api<BackupStorageLocation> = Api::namespaced(client.clone(), VELERO);
    create(
        &bsls,
        json!({"metadata": {"name": "s3"}, "spec": {
            "provider": "aws", "objectStorage": {"bucket": "velero", "prefix": "prod"},
            "config": {"region": "us-east-1", "s3Url": moto.endpoint(), "s3ForcePathStyle": "true"},
            "credential": {"name": "cloud-credentials", "key": "cloud"}
        }}),
    )
    .await?;
    let status = poll(TIMEOUT, "the S3 location to be validated", || async {
        Ok(bsls.get("s3").await?.status.filter(|s| s.phase.is_some()))
    })
    .await?;
    assert_eq!(status.phase, Some(BackupStorageLocationPhase::Available), "{status:?}");

    let dir = bound_claim(&client, "data-a").await?;
    let bytes = fill(&dir, 11, 300, 1, 8, 4)?;
    bound_claim(&client, "data-b").await?;
    pod(&client, "app", ["data-a", "data-b"]).await?;
    let pvbs: Api<PodVolumeBackup> = Api::namespaced(client.clone(), VELERO);
    create(&pvbs, pvb("to-s3", &node, "app", "data-a", "s3")).await?;
    let samples = Samples::default();
    let done = finished(&pvbs, "to-s3", &samples).await?.status.context("status")?;
    assert_eq!(done.phase, Some(DataMovePhase::Completed), "{done:?}");
    assert_progress_honest(&samples, bytes as i64);
    let snapshot = done.snapshot_id.context("snapshotID")?;

    // Maintenance on the repository's own frequency, recorded as Velero records it.
    let repos: Api<BackupRepository> = Api::namespaced(client.clone(), VELERO);
    repos
        .patch(
            "apps-s3-kopia",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"maintenanceFrequency": "2s"}})),
        )
        .await?;
    let maintained = poll(TIMEOUT, "maintenance to be recorded", || async {
        let status = repos.get("apps-s3-kopia").await?.status;
        Ok(status.filter(|s| {
            s.last_maintenance_time.is_some()
                && s.recent_maintenance.as_ref().is_some_and(|r| !r.is_empty())
        }))
    })
    .await?;
    let last = maintained.recent_maintenance.unwrap_or_default().pop().context("a maintenance")?;
    assert_eq!(serde_json::to_value(last.result)?, json!("Succeeded"), "{:?}", last.message);

    // The data comes back from the bucket, byte-identical.
    let restored = bound_claim(&client, "restore-a").await?;
    bound_claim(&client, "restore-b").await?;
    pod(&client, "app-restored", ["restore-a", "restore-b"]).await?;
    let pvrs: Api<PodVolumeRestore> = Api::namespaced(client.clone(), VELERO);
    let mut from_s3 = pvr("from-s3", "app-restored", "data-a", &snapshot, "r-s3");
    from_s3["spec"]["backupStorageLocation"] = json!("s3");
    create(&pvrs, from_s3).await?;
    let back = finished(&pvrs, "from-s3", &Samples::default()).await?.status.context("status")?;
    assert_eq!(back.phase, Some(DataMovePhase::Completed), "{back:?}");
    assert_restored(&dir, &restored, "r-s3")?;
    Ok(())
}
