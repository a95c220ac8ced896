//! PostgresBackup (`middleware.alauda.io/v1`) through the API of an embedded server, against a
//! real PostgreSQL described the way CloudNativePG lays a cluster out: pods labelled
//! `cnpg.io/cluster`, the primary by `cnpg.io/instanceRole`, credentials in `<cluster>-superuser`.
//! A backup reaches `succeeded` with LSNs inside what the server reported around it, its version
//! and system identifier, and a snapshot in the default BackupRepo's repository; deleting it
//! deletes that snapshot and the archived WAL no other base backup needs. A cluster that does
//! not exist fails with the reason.

#[allow(dead_code)]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use common::create;
use holdfast_api::alauda::{PostgresBackup, PostgresBackupState};
use holdfast_api::kubeblocks::BackupRepo;
use holdfast_repository::Repository;
use holdfast_repository::location::Location;
use holdfast_testkit::{EmbeddedServer, Postgres};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");
const NS: &str = "default";
const TIMEOUT: Duration = Duration::from_secs(300);

async fn wait_state(api: &Api<PostgresBackup>, name: &str) -> Result<PostgresBackup> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let pb = api.get(name).await?;
        let state = pb.status.as_ref().and_then(|s| s.state);
        if matches!(state, Some(PostgresBackupState::Succeeded | PostgresBackupState::Failed)) {
            return Ok(pb);
        }
        ensure!(Instant::now() < deadline, "{name} stuck: {:?}", pb.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deletes a PostgresBackup and waits until its finalizer has let it go.
async fn delete(api: &Api<PostgresBackup>, name: &str) -> Result<()> {
    api.delete(name, &DeleteParams::default()).await?;
    let deadline = Instant::now() + TIMEOUT;
    while api.get_opt(name).await?.is_some() {
        ensure!(Instant::now() < deadline, "PostgresBackup {name} was never deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

fn lsn_number(pg: &Postgres) -> Result<i64> {
    Ok(pg.psql("SELECT pg_current_wal_lsn() - '0/0'")?.parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_backup_of_a_cloudnativepg_style_cluster() -> Result<()> {
    let server = EmbeddedServer::start(Path::new(BIN)).await?;
    let client = server.client.clone();
    let repo_dir = server.scratch_dir("repo")?;
    create(
        &Api::<BackupRepo>::all(client.clone()),
        json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "BackupRepo",
            "metadata": {"name": "pg-repo", "annotations": {"dataprotection.kubeblocks.io/is-default-repo": "true"}},
            "spec": {
                "storageProviderRef": "holdfast-local", "accessMethod": "Tool", "pvReclaimPolicy": "Retain",
                "config": {"path": repo_dir.display().to_string()}
            }
        }),
    )
    .await?;
    let pg = Postgres::start()?;
    pg.pgbench(&["-i", "-s", "1", "-q"])?;
    for (name, role) in [("pg-1", "replica"), ("pg-2", "primary")] {
        create(
            &Api::<Pod>::namespaced(client.clone(), NS),
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": {"cnpg.io/cluster": "pg", "cnpg.io/instanceRole": role}},
                "spec": {"containers": [{"name": "postgres", "image": "ghcr.io/cloudnative-pg/postgresql:15"}]}
            }),
        )
        .await?;
    }
    create(
        &Api::<Secret>::namespaced(client.clone(), NS),
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "pg-superuser"},
            "stringData": {"username": "postgres", "password": "trust-auth-ignores-it",
                           "host": "127.0.0.1", "port": pg.port().to_string()}
        }),
    )
    .await?;
    let repos: Api<BackupRepo> = Api::all(client.clone());
    let deadline = Instant::now() + TIMEOUT;
    while repos.get("pg-repo").await?.status.and_then(|s| s.phase).map(|p| format!("{p:?}"))
        != Some("Ready".into())
    {
        ensure!(Instant::now() < deadline, "the BackupRepo never became Ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let api: Api<PostgresBackup> = Api::namespaced(client.clone(), NS);
    let before = lsn_number(&pg)?;
    create(
        &api,
        json!({
            "apiVersion": "middleware.alauda.io/v1", "kind": "PostgresBackup",
            "metadata": {"name": "nightly"}, "spec": {"cluster": "pg"}
        }),
    )
    .await?;
    let pb = wait_state(&api, "nightly").await?;
    let after = lsn_number(&pg)?;
    let status = pb.status.clone().context("status")?;
    if status.state != Some(PostgresBackupState::Succeeded) {
        bail!("the backup failed: {status:?}");
    }
    let (start, finish) =
        (status.start_lsn.context("startLsn")?, status.finish_lsn.context("finishLsn")?);
    ensure!(
        before <= start && start < finish && finish <= after,
        "{before} {start} {finish} {after}"
    );
    let version = pg.psql("SHOW server_version")?;
    assert_eq!(status.pg_version.as_deref(), version.split_whitespace().next());
    let sysid = pg.psql("SELECT system_identifier FROM pg_control_system()")?;
    assert_eq!(status.cluster_uid.as_deref(), Some(sysid.as_str()));
    let (t0, t1) =
        (status.start_time.context("startTime")?.0, status.finish_time.context("finishTime")?.0);
    ensure!(t0 <= t1, "{t0} > {t1}");
    assert!(status.last_modified.is_some());
    assert!(status.execute_node.as_deref().is_some_and(|n| !n.is_empty()));
    let storage = status.config_backup_storage.clone().context("configBackupStorage")?;
    assert_eq!(storage.name, "pg-repo");
    assert_eq!(storage.bucket, repo_dir.display().to_string());
    assert_eq!(status.error, None);

    // The snapshot is in the BackupRepo's repository, labelled with the same facts.
    let key_secret: Api<Secret> = Api::namespaced(client.clone(), &server.ctx.system_namespace);
    let key = key_secret.get("pg-repo-repository-key").await?;
    let key = String::from_utf8(key.data.context("key data")?["password"].0.clone())?;
    // The repository engine runs its own runtime: block this worker, not the test's runtime.
    let open = || -> Result<Repository> {
        tokio::task::block_in_place(|| {
            let backend = Location::Local(repo_dir.clone()).open_existing()?;
            Ok(Repository::open(backend, key.as_bytes())?)
        })
    };
    let snapshot = status.backup_name.clone().context("backupName")?;
    let repo = open()?;
    let entry = tokio::task::block_in_place(|| repo.find_snapshot(&snapshot))?;
    assert_eq!(entry.snapshot.labels.get("postgres.system-identifier"), Some(&sysid));

    // A later backup, in a later WAL segment, and the cluster's WAL archive around both (names
    // stored as archive files, as `wal-push` leaves them; expiry goes by name only).
    pg.psql("SELECT pg_switch_wal()")?;
    create(
        &api,
        json!({
            "apiVersion": "middleware.alauda.io/v1", "kind": "PostgresBackup",
            "metadata": {"name": "later"}, "spec": {"cluster": "pg"}
        }),
    )
    .await?;
    let later = wait_state(&api, "later").await?.status.context("status")?;
    let segment =
        |lsn: Option<i64>| -> Result<u64> { Ok(u64::try_from(lsn.context("lsn")?)? >> 24) };
    let (first, second) = (segment(Some(start))?, segment(later.start_lsn)?);
    ensure!(first < second, "both backups start in segment {first}");
    let wal: Vec<String> = [first - 1, first, second, second + 1]
        .map(|n| format!("{:08X}{:08X}{:08X}", 1, n >> 8, n & 0xFF))
        .into();
    let sysid_n: u64 = sysid.parse()?;
    tokio::task::block_in_place(|| -> Result<()> {
        for name in &wal {
            let archived = holdfast_postgres::wal_archive::archive_name(sysid_n, name);
            holdfast_repository::archive::store(&repo, &archived, name.as_bytes(), json!({}))?;
        }
        Ok(())
    })?;
    let archived = || -> Result<Vec<String>> {
        tokio::task::block_in_place(|| {
            let prefix = format!("pg-{sysid}-");
            Ok(holdfast_repository::archive::list(&open()?)?
                .into_iter()
                .filter_map(|o| o.name.strip_prefix(&prefix).map(str::to_string))
                .collect())
        })
    };
    assert_eq!(archived()?, wal);

    // Deleting the PostgresBackup deletes its snapshot, then the object, and the WAL that only
    // it needed; what the later backup needs stays.
    delete(&api, "nightly").await?;
    let gone = tokio::task::block_in_place(|| open().map(|r| r.find_snapshot(&snapshot).is_err()))?;
    assert!(gone, "the snapshot outlived its PostgresBackup");
    assert_eq!(archived()?, wal[2..].to_vec());

    // The last base backup goes: its WAL stays (the cluster's next base backup may be on its
    // way, and a restore could still use it with one restored by other means).
    delete(&api, "later").await?;
    assert_eq!(archived()?, wal[2..].to_vec());

    // A cluster with no pods fails with the reason.
    create(
        &api,
        json!({
            "apiVersion": "middleware.alauda.io/v1", "kind": "PostgresBackup",
            "metadata": {"name": "wrong"}, "spec": {"cluster": "no-such-cluster"}
        }),
    )
    .await?;
    let pb = wait_state(&api, "wrong").await?;
    let status = pb.status.context("status")?;
    assert_eq!(status.state, Some(PostgresBackupState::Failed));
    let error = status.error.unwrap_or_default();
    assert!(error.contains("no pods labelled cnpg.io/cluster=no-such-cluster"), "{error}");
    assert!(server.controllers_running());
    Ok(())
}
