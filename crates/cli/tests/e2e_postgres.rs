//! The acceptance test of the KubeBlocks data-protection path, driven only through the API
//! (kube-rs against an embedded holdfast server, every controller running): a real PostgreSQL
//! loaded with pgbench is backed up with the shipped `postgresql-basebackup` ActionSet into a
//! BackupRepo, changed, restored into a new volume claim, and a second PostgreSQL started on the
//! restored directory must hold exactly the data of backup time.
//!
//! Three repositories: a local directory (`holdfast-local`), S3 on a moto server
//! (`holdfast-s3`), and a claim of the local-path provisioner mounted into the Jobs
//! (`holdfast-pvc`, `accessMethod: Mount`). Without PostgreSQL or `moto_server` the tests fail,
//! naming the install script.

mod common;
#[path = "common/kubeblocks.rs"]
mod kubeblocks;

use common::{claim_dir, create};
use kubeblocks::{checksums, create_policy, describe_database, job_logs, restored, wait_for};
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, Result};
use holdfast_api::kubeblocks::backup::BackupPhase;
use holdfast_api::kubeblocks::restore::RestorePhase;
use holdfast_api::kubeblocks::{Backup, BackupRepo, Restore};
use holdfast_testkit::{EmbeddedServer, Moto, Postgres};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::{Api, PostParams};
use serde_json::json;

/// The binary job processes run as `datasafed`, built by Cargo for this test.
const BIN: &str = env!("CARGO_BIN_EXE_holdfast");
const NS: &str = "default";

/// The tests share two CPU cores with everything else; one database round trip at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The policy's methods: both PostgreSQL ActionSets holdfast ships for full backups.
fn both_methods() -> serde_json::Value {
    json!([
        {"name": "pg-basebackup", "actionSetName": "postgresql-basebackup"},
        {"name": "pgdump", "actionSetName": "postgresql-pgdump"}
    ])
}

/// Backup → change → Restore → start on the restored directory → same data as at backup time.
async fn round_trip(server: &EmbeddedServer, repo: &str) -> Result<()> {
    let client = &server.client;
    let pg = Postgres::start()?;
    pg.pgbench(&["-i", "-s", "5", "-q"])?;
    describe_database(client, &pg, "pg-cluster", pg.data_dir(), json!([])).await?;

    let repos: Api<BackupRepo> = Api::all(client.clone());
    wait_for(&repos, repo, "backuprepo", |r| {
        let status = r.status.as_ref()?;
        match status.phase.map(|p| format!("{p:?}")).as_deref() {
            Some("Ready") => Some(Ok(())),
            Some("Failed") => Some(Err("Failed".into())),
            _ => None,
        }
    })
    .await?;

    create_policy(client, repo, both_methods()).await?;

    create(
        &Api::<Backup>::namespaced(client.clone(), NS),
        json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Backup",
            "metadata": {"name": "pg-cluster-backup-1"},
            "spec": {"backupPolicyName": "pg-cluster-postgresql-backup-policy", "backupMethod": "pg-basebackup"}
        }),
    )
    .await?;
    let backups: Api<Backup> = Api::namespaced(client.clone(), NS);
    let backup =
        wait_for(&backups, "pg-cluster-backup-1", "backup", |b| match b.status.as_ref()?.phase? {
            BackupPhase::Completed => Some(Ok(())),
            BackupPhase::Failed => Some(Err(format!("Failed; job logs:\n{}", job_logs(server)))),
            _ => None,
        })
        .await?;
    // The backup-time data, read right after the backup completed and before any change.
    let at_backup = checksums(&pg)?;

    let status = backup.status.clone().context("backup status")?;
    let size: u64 =
        status.total_size.as_deref().context("totalSize")?.parse().context("totalSize is bytes")?;
    // pgbench scale 5 is ~75 MiB of table data; the tar holds at least the 500k account rows.
    assert!(
        size > 10 * 1024 * 1024,
        "totalSize {size} is too small for a pgbench -s 5 base backup"
    );
    let range = status.time_range.clone().context("timeRange")?;
    let (start, end) = (range.start.context("start")?.0, range.end.context("end")?.0);
    assert!(start <= end, "timeRange {start}..{end}");
    let created = backup.metadata.creation_timestamp.clone().context("creationTimestamp")?.0;
    assert!(
        start.as_second() >= created.as_second() - 1,
        "timeRange starts before the Backup existed"
    );
    assert_eq!(status.backup_repo_name.as_deref(), Some(repo));

    // Change the data after the backup: the restore must not see this.
    pg.pgbench(&["-t", "200", "-c", "2", "--no-vacuum"])?;
    pg.psql("UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid % 1000 = 0")?;
    let changed = checksums(&pg)?;
    assert_ne!(
        changed["pgbench_accounts"], at_backup["pgbench_accounts"],
        "the change did not change the data"
    );

    let restore = restored(
        server,
        "pg-cluster-restore-1",
        json!({
                "backup": {"name": "pg-cluster-backup-1", "namespace": NS},
                "prepareDataConfig": {
                    "volumeClaims": [{
                        "metadata": {"name": "data-pg-restored-postgresql-0", "labels": {"app.kubernetes.io/instance": "pg-restored"}},
                        "volumeClaimSpec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                        "mountPath": "/home/postgres/pgdata"
                    }],
                    "volumeClaimRestorePolicy": "Serial"
                },
                "backoffLimit": 0
            }),
    )
    .await?;
    let rs = restore.status.clone().context("restore status")?;
    for condition in ["ValidationPassed", "CheckBackupRepo", "PrepareData"] {
        let c = rs.conditions.iter().flatten().find(|c| c.type_ == condition);
        assert_eq!(c.map(|c| c.status.as_str()), Some("True"), "{condition}: {c:?}");
    }
    let prepared = rs.actions.as_ref().and_then(|a| a.prepare_data.clone()).unwrap_or_default();
    assert_eq!(prepared.len(), 1, "{prepared:?}");
    assert_eq!(prepared[0].backup_name, "pg-cluster-backup-1");
    assert_eq!(format!("{:?}", prepared[0].status), "Completed");
    assert!(rs.duration.is_some() && rs.completion_timestamp.is_some());

    // The source server is not needed any more; its disk space is.
    drop(pg);
    let data_dir =
        claim_dir(client, NS, "data-pg-restored-postgresql-0").await?.join("pgroot/data");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&data_dir)?.permissions());
    assert_eq!(mode & 0o777, 0o700, "the restored data directory must be private");
    // It starts where the restore put it, as the account PostgreSQL runs as, with no chown or
    // copy: the restore gave the files the archive's owner, and that account can reach them.
    let restored = Postgres::start_in_place(&data_dir)?;
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&data_dir)?);
    assert_eq!(owner, restored.server_uid()?, "the restored cluster's owner");
    let after_restore = checksums(&restored)?;
    assert_eq!(after_restore, at_backup, "the restored database differs from the backup-time data");
    assert_ne!(after_restore, changed);
    Ok(())
}

/// Requests the controller must refuse with a clear reason.
async fn refused_restores(server: &EmbeddedServer) -> Result<()> {
    let client = &server.client;
    let restores: Api<Restore> = Api::namespaced(client.clone(), NS);
    let cases = [
        (
            "restore-missing-backup",
            json!({"name": "no-such-backup", "namespace": NS}),
            None,
            "not found",
        ),
        (
            "restore-time-on-full",
            json!({"name": "pg-cluster-backup-1", "namespace": NS}),
            Some("2026-11-21T10:00:00Z"),
            "only valid for a Continuous backup",
        ),
    ];
    for (name, backup, time, expected) in cases {
        let mut spec = json!({
            "backup": backup,
            "prepareDataConfig": {"volumeClaims": [{
                "metadata": {"name": format!("{name}-data")},
                "volumeClaimSpec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                "mountPath": "/data"
            }]}
        });
        if let Some(t) = time {
            spec["restoreTime"] = json!(t);
        }
        create(
        &Api::<Restore>::namespaced(client.clone(), NS),
            json!({"apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Restore", "metadata": {"name": name}, "spec": spec}),
        )
        .await?;
        let r = wait_for(&restores, name, "restore", |r| match r.status.as_ref()?.phase? {
            RestorePhase::Failed => Some(Ok(())),
            RestorePhase::Completed => Some(Err("completed but must fail".into())),
            _ => None,
        })
        .await?;
        let c = r.status.and_then(|s| s.conditions).unwrap_or_default();
        let validation =
            c.iter().find(|c| c.type_ == "ValidationPassed").context("ValidationPassed")?;
        assert_eq!(validation.status, "False");
        assert!(validation.message.contains(expected), "{name}: {}", validation.message);
        // Nothing was created for a refused restore.
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
        assert!(pvcs.get_opt(&format!("{name}-data")).await?.is_none());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn basebackup_round_trip_through_a_local_repo() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let server = EmbeddedServer::start(Path::new(BIN)).await?;
    let repo_dir = server.scratch_dir("repo")?;
    create(
        &Api::<BackupRepo>::all(server.client.clone()),
        json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "BackupRepo",
            "metadata": {"name": "e2e-local"},
            "spec": {
                "storageProviderRef": "holdfast-local", "accessMethod": "Tool", "pvReclaimPolicy": "Retain",
                "config": {"path": repo_dir.display().to_string()}
            }
        }),
    )
    .await?;
    round_trip(&server, "e2e-local").await?;
    refused_restores(&server).await?;
    assert!(server.controllers_running());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn basebackup_round_trip_through_an_s3_repo() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let moto = Moto::start()?;
    moto.create_bucket("holdfast-e2e")?;
    let server = EmbeddedServer::start(Path::new(BIN)).await?;
    let mut data = BTreeMap::new();
    data.insert(
        "accessKeyId".to_string(),
        ByteString(holdfast_testkit::moto::ACCESS_KEY_ID.into()),
    );
    data.insert(
        "secretAccessKey".to_string(),
        ByteString(holdfast_testkit::moto::SECRET_ACCESS_KEY.into()),
    );
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("e2e-s3-credential".into()),
            ..Default::default()
        },
        data: Some(data),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(server.client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await?;
    create(
        &Api::<BackupRepo>::all(server.client.clone()),
        json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "BackupRepo",
            "metadata": {"name": "e2e-s3"},
            "spec": {
                "storageProviderRef": "holdfast-s3", "accessMethod": "Tool", "pvReclaimPolicy": "Retain",
                "config": {
                    "bucket": "holdfast-e2e", "endpoint": moto.endpoint(),
                    "region": holdfast_testkit::moto::REGION, "prefix": "kubeblocks"
                },
                "credential": {"name": "e2e-s3-credential", "namespace": NS}
            }
        }),
    )
    .await?;
    round_trip(&server, "e2e-s3").await?;
    assert!(server.controllers_running());
    Ok(())
}

/// Mount access: the repository lives on the repo's claim in the backup's namespace, which the
/// backup and restore Jobs mount and reach through datasafed's local backend; it is encrypted
/// with the repo's key. A Mount repo whose provider describes no volume is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn basebackup_round_trip_through_a_mount_repo() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let server = EmbeddedServer::start(Path::new(BIN)).await?;
    let repos: Api<BackupRepo> = Api::all(server.client.clone());
    let mount_repo = |name: &str, provider: &str, config: serde_json::Value| {
        json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "BackupRepo",
            "metadata": {"name": name},
            "spec": {
                "storageProviderRef": provider, "accessMethod": "Mount", "pvReclaimPolicy": "Retain",
                "volumeCapacity": "5Gi", "config": config
            }
        })
    };
    create(&repos, mount_repo("e2e-unmountable", "holdfast-local", json!({"path": "/srv/x"})))
        .await?;
    create(&repos, mount_repo("e2e-mount", "holdfast-pvc", json!({}))).await?;
    let refused = wait_for(&repos, "e2e-unmountable", "backuprepo", |r| {
        let status = r.status.as_ref()?;
        match status.phase.map(|p| format!("{p:?}")).as_deref() {
            Some("Failed") => Some(Ok(())),
            Some("Ready") => Some(Err("Ready but must fail".into())),
            _ => None,
        }
    })
    .await?;
    let conditions = refused.status.and_then(|s| s.conditions).unwrap_or_default();
    let failed = conditions.first().context("a condition")?;
    assert_eq!(
        (failed.type_.as_str(), failed.status.as_str(), failed.reason.as_str()),
        ("StorageProviderReady", "False", "InvalidStorageProvider")
    );
    assert_eq!(
        failed.message,
        "storage provider holdfast-local has neither storageClassTemplate nor \
         persistentVolumeClaimTemplate, so it cannot serve accessMethod Mount (it serves \
         accessMethod Tool: set spec.accessMethod: Tool)"
    );

    round_trip(&server, "e2e-mount").await?;

    let status = repos.get("e2e-mount").await?.status.context("repo status")?;
    assert_eq!(status.backup_pvc_name.as_deref(), Some("pvc-e2e-mount"));
    assert_eq!(status.generated_storage_class_name.as_deref(), Some("sc-e2e-mount"));
    // The backup is in the repository on the claim, which opens with the repo's key only.
    let dir = claim_dir(&server.client, NS, "pvc-e2e-mount").await?;
    let key = Api::<Secret>::namespaced(server.client.clone(), "holdfast-system")
        .get("e2e-mount-repository-key")
        .await?
        .data
        .and_then(|d| d.get("password").cloned())
        .context("the repo's key")?;
    let list = |password: &[u8]| {
        std::process::Command::new(BIN)
            .args(["datasafed", "-c", "/nonexistent/datasafed.conf", "list", "-r", "/"])
            .env("DATASAFED_LOCAL_BACKEND_PATH", &dir)
            .env("HOLDFAST_PASSWORD", String::from_utf8_lossy(password).as_ref())
            .output()
    };
    let listed = list(&key.0)?;
    let files = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success()
            && files.contains("default/pg-cluster-backup-1/pg-cluster-backup-1.tar"),
        "{files} {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(!list(b"not-the-key")?.status.success(), "another key must not open the repository");
    assert!(server.controllers_running());
    Ok(())
}

/// The logical path: a pg_dump backup restored by the ActionSet's postReady Job into another,
/// running server chosen by `readyConfig.jobAction` and reached through its connection Secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pgdump_round_trip_restores_into_a_running_server() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let server = EmbeddedServer::start(Path::new(BIN)).await?;
    let client = &server.client;
    let repo_dir = server.scratch_dir("repo")?;
    create(
        &Api::<BackupRepo>::all(client.clone()),
        json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "BackupRepo",
            "metadata": {"name": "e2e-dump"},
            "spec": {
                "storageProviderRef": "holdfast-local", "accessMethod": "Tool", "pvReclaimPolicy": "Retain",
                "config": {"path": repo_dir.display().to_string()}
            }
        }),
    )
    .await?;
    let source = Postgres::start()?;
    source.pgbench(&["-i", "-s", "1", "-q"])?;
    describe_database(client, &source, "pg-cluster", source.data_dir(), json!([])).await?;
    create_policy(client, "e2e-dump", both_methods()).await?;
    create(
        &Api::<Backup>::namespaced(client.clone(), NS),
        json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Backup",
            "metadata": {"name": "pg-cluster-dump-1"},
            "spec": {"backupPolicyName": "pg-cluster-postgresql-backup-policy", "backupMethod": "pgdump"}
        }),
    )
    .await?;
    let backups: Api<Backup> = Api::namespaced(client.clone(), NS);
    wait_for(&backups, "pg-cluster-dump-1", "backup", |b| match b.status.as_ref()?.phase? {
        BackupPhase::Completed => Some(Ok(())),
        BackupPhase::Failed => Some(Err(format!("Failed; job logs:\n{}", job_logs(&server)))),
        _ => None,
    })
    .await?;
    let at_backup = checksums(&source)?;
    source.psql("DELETE FROM pgbench_history; UPDATE pgbench_branches SET bbalance = 99")?;

    let target = Postgres::start()?;
    describe_database(client, &target, "pg-restored", target.data_dir(), json!([])).await?;
    create(
        &Api::<Restore>::namespaced(client.clone(), NS),
        json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Restore",
            "metadata": {"name": "pg-restored-from-dump"},
            "spec": {
                "backup": {"name": "pg-cluster-dump-1", "namespace": NS},
                "readyConfig": {
                    "jobAction": {"target": {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "pg-restored"}}}},
                    "connectionCredential": {
                        "secretName": "pg-restored-conn-credential",
                        "usernameKey": "username", "passwordKey": "password",
                        "hostKey": "host", "portKey": "port"
                    }
                },
                "backoffLimit": 0
            }
        }),
    )
    .await?;
    let restores: Api<Restore> = Api::namespaced(client.clone(), NS);
    let restore = wait_for(&restores, "pg-restored-from-dump", "restore", |r| {
        match r.status.as_ref()?.phase? {
            RestorePhase::Completed => Some(Ok(())),
            RestorePhase::Failed => Some(Err(format!("Failed; job logs:\n{}", job_logs(&server)))),
            _ => None,
        }
    })
    .await?;
    let rs = restore.status.context("restore status")?;
    let post_ready = rs.conditions.iter().flatten().find(|c| c.type_ == "PostReady");
    assert_eq!(post_ready.map(|c| c.status.as_str()), Some("True"), "{post_ready:?}");
    let actions = rs.actions.and_then(|a| a.post_ready).unwrap_or_default();
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(format!("{:?}", actions[0].status), "Completed");
    assert_eq!(checksums(&target)?, at_backup, "the restored database differs from the dump");
    assert_ne!(checksums(&source)?, at_backup);
    Ok(())
}
