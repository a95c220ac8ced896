//! The examples as a newcomer meets them, on a fresh `holdfast server` process through the
//! kubeconfig it writes and the real kubectl:
//! - `kubectl apply -f examples/` (the README's step) creates the demo, changes no object holdfast
//!   ships, and every object it made ends healthy: claims bound, Jobs complete, the snapshot ready
//!   to use, the BackupRepo ready, the Backup and the Restore completed, the Velero location
//!   available and the DataUpload completed;
//! - the demo's manifests are a working pattern: a second Backup and Restore made from them restore
//!   the workload's files exactly;
//! - the README's KubeBlocks walk-through (`examples/kubeblocks-e2e`, with the connection and data
//!   directory edited as its README says) then backs up a real PostgreSQL and restores it into a
//!   new claim, where PostgreSQL starts as its own account and holds the data of backup time;
//! - none of the reference manifests collides with a shipped object, the demo or the walk-through.

// Shared with the other end-to-end tests; this one uses a part of each.
#[allow(dead_code)]
mod common;
#[path = "common/poll.rs"]
mod poll;
#[allow(unused_imports)]
#[path = "common/tree.rs"]
mod tree;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use common::claim_dir;
use holdfast_testkit::kubeconfig::{kubectl, require_kubectl};
use holdfast_testkit::{HoldfastServer, Postgres};
use poll::poll;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");
const TIMEOUT: Duration = Duration::from_secs(600);

fn examples() -> PathBuf {
    // The directory at run time (cargo sets it for tests): a binary cargo reuses from a clone at
    // another path, through a shared target directory, would carry that clone's path.
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("../../examples")
}

/// kubectl against one server, with its own cache directory.
struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    async fn run(&self, args: &[&str]) -> Result<String> {
        let out = kubectl(&self.kubeconfig, &self.cache, args).output().await?;
        ensure!(
            out.status.success(),
            "kubectl {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    async fn json(&self, args: &[&str]) -> Result<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.run(&all).await?)?)
    }

    async fn apply(&self, file: &Path) -> Result<String> {
        self.run(&["apply", "-f", file.to_str().context("utf-8 path")?]).await
    }
}

/// Whether `obj` is in the state its example promises: `Ok(true)` healthy, `Ok(false)` not yet,
/// `Err` broken for good (a failed phase). A kind without a rule fails the test, so a new example
/// comes with its promise.
fn healthy(obj: &Value) -> Result<bool> {
    let kind = obj["kind"].as_str().unwrap_or_default();
    let status = &obj["status"];
    let phase = status["phase"].as_str().unwrap_or_default();
    let failed = |bad: &[&str]| -> Result<()> {
        if bad.contains(&phase) {
            bail!("{kind} {} is {phase}: {}", obj["metadata"]["name"], status);
        }
        Ok(())
    };
    Ok(match kind {
        "Namespace" => phase == "Active",
        "PersistentVolumeClaim" => {
            failed(&["Lost"])?;
            phase == "Bound"
        }
        // An embedded Pod describes a workload on this host; nothing runs it, so nothing gives it
        // a status (a Job's pods do get one).
        "Pod" => status.is_null(),
        "Job" => {
            ensure!(status["failed"].as_i64().unwrap_or(0) == 0, "Job failed: {status}");
            status["succeeded"].as_i64().unwrap_or(0) >= 1
        }
        "VolumeSnapshot" => {
            ensure!(status["error"].is_null(), "VolumeSnapshot error: {status}");
            status["readyToUse"] == true
        }
        "BackupRepo" => {
            failed(&["Failed"])?;
            phase == "Ready"
        }
        "BackupPolicy" | "BackupSchedule" => {
            failed(&["Failed", "Unavailable"])?;
            phase == "Available"
        }
        "Backup" | "Restore" | "DataUpload" => {
            failed(&["Failed", "Canceled"])?;
            phase == "Completed"
        }
        "BackupStorageLocation" => phase == "Available",
        other => bail!("no health rule for the example kind {other}"),
    })
}

/// `examples/<name>` with every `from` replaced by its `to`, written into `dir`.
fn edited(dir: &Path, name: &str, edits: &[(&str, &str)]) -> Result<PathBuf> {
    let mut text = std::fs::read_to_string(examples().join(name))?;
    for (from, to) in edits {
        ensure!(text.contains(from), "{name} no longer contains {from:?}");
        text = text.replace(from, to);
    }
    let path = dir.join(name.replace('/', "-"));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Polls `what` (`kind/name`) in `namespace` until its phase is `phase`; Failed ends the wait.
async fn wait_phase(k: &Kubectl, namespace: &str, what: &str, phase: &str) -> Result<Value> {
    poll(TIMEOUT, &format!("{what} to be {phase}"), || async {
        let obj = k.json(&["get", what, "-n", namespace]).await?;
        let now = obj["status"]["phase"].as_str().unwrap_or_default();
        if now == "Failed" {
            bail!("{what} failed: {}", obj["status"]);
        }
        Ok((now == phase).then_some(obj))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_and_the_walk_through_work_on_a_fresh_server() -> Result<()> {
    require_kubectl()?;
    let dir = tempfile::tempdir()?;
    // Like /var/lib: the database account may pass through to the restored claim.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))?;
    let data_dir = dir.path().join("data");
    let server = HoldfastServer::start(Path::new(BIN), &data_dir).await?;
    server.client().await?;
    let k = Kubectl { kubeconfig: data_dir.join("kubeconfig"), cache: dir.path().join("cache") };

    let shipped = k.json(&["get", "actionsets,storageproviders,volumesnapshotclasses"]).await?;
    // What a user's edit would change: everything but the status and the bookkeeping metadata.
    let shipped_specs = |list: &Value| -> Vec<(String, Value)> {
        let items = list["items"].as_array().cloned().unwrap_or_default();
        items
            .into_iter()
            .map(|mut o| {
                let name = format!("{}/{}", o["kind"], o["metadata"]["name"]);
                let meta = o["metadata"].clone();
                let obj = o.as_object_mut().expect("an object");
                obj.remove("status");
                obj.insert(
                    "metadata".into(),
                    serde_json::json!({"labels": meta["labels"], "annotations": meta["annotations"]}),
                );
                (name, o)
            })
            .collect()
    };
    let before = shipped_specs(&shipped);
    ensure!(before.len() >= 7, "shipped objects: {before:?}");

    // The README's step, twice: the second changes nothing.
    let applied = k.apply(&examples()).await?;
    ensure!(
        applied.lines().all(|l| l.ends_with(" created")) && applied.lines().count() >= 14,
        "{applied}"
    );
    let again = k.apply(&examples()).await?;
    ensure!(again.lines().all(|l| l.ends_with(" unchanged")), "{again}");

    // Every object the examples made ends healthy.
    let files = examples();
    let files = files.to_str().context("utf-8 path")?;
    let objects = poll(TIMEOUT, "every example object to be healthy", || async {
        let list = k.json(&["get", "-f", files]).await?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        for obj in &items {
            if !healthy(obj)? {
                return Ok(None);
            }
        }
        Ok(Some(items))
    })
    .await?;
    ensure!(objects.len() >= 14, "{} objects", objects.len());
    let after = shipped_specs(
        &k.json(&["get", "actionsets,storageproviders,volumesnapshotclasses"]).await?,
    );
    assert_eq!(after, before, "applying the examples changed a shipped object");

    // The DataUpload moved the snapshot's data into the Velero location's repository.
    let upload = k.json(&["get", "dataupload", "data-snapshot-upload", "-n", "velero"]).await?;
    ensure!(upload["status"]["snapshotID"].as_str().is_some_and(|id| id.len() == 64), "{upload}");
    let repo = k.json(&["get", "backuprepository", "demo-default-kopia", "-n", "velero"]).await?;
    ensure!(repo["status"]["phase"] == "Ready", "{repo}");

    // The demo is a pattern: once web-content has written the site, a second Backup and Restore
    // made from the example files restore it exactly.
    let scratch = dir.path().join("edited");
    std::fs::create_dir_all(&scratch)?;
    let backup2 =
        edited(&scratch, "32-kubeblocks-backup.yaml", &[("name: web-data-1", "name: web-data-2")])?;
    k.apply(&backup2).await?;
    let backup = wait_phase(&k, "demo", "backup/web-data-2", "Completed").await?;
    let size: u64 = backup["status"]["totalSize"].as_str().context("totalSize")?.parse()?;
    ensure!(size > 0, "{backup}");
    let restore2 = edited(
        &scratch,
        "34-kubeblocks-restore.yaml",
        &[
            ("name: web-data-restore", "name: web-data-2-restore"),
            ("name: web-data-1", "name: web-data-2"),
            ("name: data-restored", "name: data-restored-2"),
        ],
    )?;
    k.apply(&restore2).await?;
    wait_phase(&k, "demo", "restore/web-data-2-restore", "Completed").await?;
    let client = server.client().await?;
    let source = claim_dir(&client, "demo", "data").await?;
    ensure!(source.join("articles/50.txt").is_file(), "web-content wrote nothing");
    tree::assert_same_tree(&source, &claim_dir(&client, "demo", "data-restored-2").await?);

    // The walk-through, next to the demo: 01 and 02 edited to point at a real server.
    let pg = Postgres::start()?;
    pg.pgbench(&["-i", "-s", "2", "-q"])?;
    let port = format!("port: \"{}\"", pg.port());
    let data = pg.data_dir().display().to_string();
    let walk = [
        edited(&scratch, "kubeblocks-e2e/01-connection-secret.yaml", &[("port: \"5432\"", &port)])?,
        edited(
            &scratch,
            "kubeblocks-e2e/02-database-pod.yaml",
            &[("path: /var/lib/postgresql/15/main", &format!("path: {data}"))],
        )?,
        examples().join("kubeblocks-e2e/03-backuprepo.yaml"),
    ];
    for file in &walk {
        k.apply(file).await?;
    }
    wait_phase(&k, "default", "backuprepo/local-repo", "Ready").await?;
    k.apply(&examples().join("kubeblocks-e2e/04-backuppolicy.yaml")).await?;
    k.apply(&examples().join("kubeblocks-e2e/05-backup.yaml")).await?;
    wait_phase(&k, "default", "backup/pg-cluster-backup", "Completed").await?;
    let at_backup = pg.psql("SELECT count(*), sum(abalance) FROM pgbench_accounts")?;
    pg.psql("UPDATE pgbench_accounts SET abalance = abalance + 5 WHERE aid % 100 = 0")?;
    k.apply(&examples().join("kubeblocks-e2e/06-restore.yaml")).await?;
    wait_phase(&k, "default", "restore/pg-cluster-restore", "Completed").await?;
    drop(pg);
    let restored =
        claim_dir(&client, "default", "data-pg-restored-postgresql-0").await?.join("pgroot/data");
    let restored_pg = Postgres::start_in_place(&restored)?;
    assert_eq!(
        std::fs::metadata(&restored)?.uid(),
        restored_pg.server_uid()?,
        "PostgreSQL runs as the restored directory's owner"
    );
    assert_eq!(
        restored_pg.psql("SELECT count(*), sum(abalance) FROM pgbench_accounts")?,
        at_backup,
        "the restored database holds the data of backup time"
    );

    // The reference manifests would all be new objects: no name of theirs is taken.
    let reference = examples().join("reference");
    let dry = k
        .run(&["apply", "--dry-run=server", "-f", reference.to_str().context("utf-8 path")?])
        .await?;
    ensure!(dry.lines().all(|l| l.ends_with(" created (server dry run)")), "{dry}");
    Ok(())
}
