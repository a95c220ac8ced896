//! Continuous backups in KubeBlocks' model, driven only through the API (kube-rs against an
//! embedded holdfast server, every controller running) against a real PostgreSQL:
//!
//! - holdfast's shipped `postgresql-wal` ActionSet, run by a BackupSchedule's continuous method,
//!   streams WAL while a `postgresql-basebackup` Full backup is taken; the continuous Backup's
//!   `timeRange` grows as rows are committed; a Restore with `restoreTime` picks that base,
//!   replays to the moment, and the server started on the restored claim holds exactly the rows
//!   committed before it. Disabling the schedule's entry completes the Backup and stops the
//!   worker.
//! - KubeBlocks' own PostgreSQL addon ActionSet `postgresql-for-pitr` (a fixture, rendered from
//!   the addon's chart) runs unchanged: its archiver reads `pg_wal/archive_status` on the target
//!   volume (`runOnTargetPodNode`), pushes segments with datasafed, purges by `DP_TTL_SECONDS`,
//!   and its `timeRange` grows as WAL is archived.

mod common;
#[allow(dead_code)]
#[path = "common/kubeblocks.rs"]
mod kubeblocks;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use common::{claim_dir, create};
use holdfast_api::kubeblocks::actionset::BackupType;
use holdfast_api::kubeblocks::backup::{BackupPhase, BackupTimeRange};
use holdfast_api::kubeblocks::restore::RestorePhase;
use holdfast_api::kubeblocks::{ActionSet, Backup, BackupRepo, BackupSchedule, Restore};
use holdfast_testkit::{EmbeddedServer, Postgres};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use kubeblocks::{POLICY, create_policy, describe_database, job_logs, restored, wait_for};
use serde_json::json;

/// The binary job processes run as `datasafed` and `holdfast`, built by Cargo for this test.
const BIN: &str = env!("CARGO_BIN_EXE_holdfast");
const NS: &str = "default";
const SCHEDULE: &str = "pg-cluster-backup-schedule";
/// How long WAL may take to reach the Backup's status on a loaded two-core machine.
const WAL_TIMEOUT: Duration = Duration::from_secs(240);

/// The tests share two CPU cores with everything else; one database at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A server with a Ready local BackupRepo named `repo`.
async fn server_with_repo(repo: &str) -> Result<EmbeddedServer> {
    let server = EmbeddedServer::start(Path::new(BIN)).await?;
    let dir = server.scratch_dir("repo")?;
    create(
        &Api::<BackupRepo>::all(server.client.clone()),
        json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "BackupRepo",
            "metadata": {"name": repo},
            "spec": {
                "storageProviderRef": "holdfast-local", "accessMethod": "Tool", "pvReclaimPolicy": "Retain",
                "config": {"path": dir.display().to_string()}
            }
        }),
    )
    .await?;
    wait_for(&Api::<BackupRepo>::all(server.client.clone()), repo, "backuprepo", |r| {
        match r.status.as_ref()?.phase.map(|p| format!("{p:?}")).as_deref() {
            Some("Ready") => Some(Ok(())),
            Some("Failed") => Some(Err("Failed".into())),
            _ => None,
        }
    })
    .await?;
    Ok(server)
}

/// A schedule whose only entry is the continuous `method`, enabled.
async fn create_schedule(client: &Client, method: &str, retention: &str) -> Result<()> {
    create(
        &Api::<BackupSchedule>::namespaced(client.clone(), NS),
        json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "BackupSchedule",
            "metadata": {"name": SCHEDULE},
            "spec": {
                "backupPolicyName": POLICY,
                "schedules": [{
                    "backupMethod": method, "enabled": true,
                    "cronExpression": "*/5 * * * *", "retentionPeriod": retention
                }]
            }
        }),
    )
    .await?;
    Ok(())
}

/// The schedule's continuous Backup once its worker runs: named as upstream names it.
async fn running_continuous_backup(server: &EmbeddedServer, method: &str) -> Result<Backup> {
    let client = &server.client;
    let schedule = Api::<BackupSchedule>::namespaced(client.clone(), NS).get(SCHEDULE).await?;
    let uid8: String = schedule.uid().context("uid")?.chars().take(8).collect();
    let mut base = format!("{uid8}-{SCHEDULE}-{NS}");
    base.truncate(30);
    let name = format!("{}-{method}", base.trim_end_matches('-'));
    let backups: Api<Backup> = Api::namespaced(client.clone(), NS);
    let deadline = Instant::now() + WAL_TIMEOUT;
    while backups.get_opt(&name).await?.is_none() {
        if Instant::now() > deadline {
            let schedule =
                Api::<BackupSchedule>::namespaced(client.clone(), NS).get(SCHEDULE).await?;
            let all = backups.list(&ListParams::default()).await?;
            bail!(
                "the schedule created no continuous backup {name}: {:?}; backups: {:?}",
                schedule.status,
                all.items.iter().map(|b| b.name_any()).collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wait_for(&backups, &name, "continuous backup", |b| {
        let st = b.status.as_ref()?;
        match st.phase? {
            BackupPhase::Running => {
                let action = st.actions.as_ref()?.first()?;
                (action.available_replicas == Some(1)).then_some(Ok(()))
            }
            BackupPhase::Failed | BackupPhase::Completed => {
                Some(Err(format!("not running; job logs:\n{}", job_logs(server))))
            }
            _ => None,
        }
    })
    .await
}

fn range_end(backup: &Backup) -> Option<Timestamp> {
    backup.status.as_ref()?.time_range.as_ref()?.end.as_ref().map(|t| t.0)
}

/// Commits a row and completes the WAL segment (as a busy server would fill it) until the
/// Backup's `timeRange.end` reaches `at_least`; returns the Backup.
async fn commit_until_range_reaches(
    server: &EmbeddedServer,
    pg: &Postgres,
    name: &str,
    at_least: Timestamp,
) -> Result<Backup> {
    let backups: Api<Backup> = Api::namespaced(server.client.clone(), NS);
    let deadline = Instant::now() + WAL_TIMEOUT;
    loop {
        let backup = backups.get(name).await?;
        if range_end(&backup).is_some_and(|end| end >= at_least) {
            return Ok(backup);
        }
        if Instant::now() > deadline {
            bail!(
                "timeRange of {name} never reached {at_least}: {:?}; job logs:\n{}",
                backup.status.and_then(|s| s.time_range),
                job_logs(server)
            );
        }
        pg.psql("INSERT INTO events (phase) VALUES ('filler'); SELECT pg_switch_wal()")?;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The server's clock, to the microsecond.
fn server_now(pg: &Postgres) -> Result<Timestamp> {
    let text = pg.psql(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )?;
    text.parse().with_context(|| format!("server time {text:?}"))
}

/// Waits until the server's clock is past `t`.
async fn server_clock_past(pg: &Postgres, t: Timestamp) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while server_now(pg)? <= t {
        if Instant::now() > deadline {
            bail!("the server's clock did not pass {t}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Disables the schedule's entry; the continuous Backup completes and its worker Job goes.
async fn disable_and_complete(server: &EmbeddedServer, method: &str, name: &str) -> Result<()> {
    let client = &server.client;
    let patch = json!({"spec": {"schedules": [{
        "backupMethod": method, "enabled": false,
        "cronExpression": "*/5 * * * *"
    }]}});
    Api::<BackupSchedule>::namespaced(client.clone(), NS)
        .patch(SCHEDULE, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let backups: Api<Backup> = Api::namespaced(client.clone(), NS);
    let done =
        wait_for(&backups, name, "continuous backup", |b| match b.status.as_ref()?.phase? {
            BackupPhase::Completed => Some(Ok(())),
            BackupPhase::Failed => Some(Err("Failed".into())),
            _ => None,
        })
        .await?;
    let st = done.status.context("status")?;
    let action = st.actions.as_ref().and_then(|a| a.first()).context("action")?;
    assert_eq!(action.available_replicas, Some(0));
    assert!(st.completion_timestamp.is_some() && st.duration.is_some());
    assert!(st.time_range.as_ref().and_then(|r| r.end.as_ref()).is_some(), "the range is kept");
    let jobs = Api::<Job>::namespaced(client.clone(), NS).list(&ListParams::default()).await?;
    let worker = jobs.items.iter().find(|j| {
        j.owner_references().iter().any(|o| Some(&o.uid) == done.metadata.uid.as_ref())
            && j.metadata.deletion_timestamp.is_none()
    });
    assert!(worker.is_none(), "the worker Job is still there: {:?}", worker.map(|j| j.name_any()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streamed_wal_restores_to_a_point_in_time_through_the_kubeblocks_api() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let server = server_with_repo("pitr-local").await?;
    let client = &server.client;
    let mut pg = Postgres::init()?;
    pg.configure(&[("wal_level", "replica")])?;
    pg.start_server()?;
    pg.psql(
        "CREATE TABLE events (id serial PRIMARY KEY, phase text NOT NULL, \
         at timestamptz NOT NULL DEFAULT clock_timestamp())",
    )?;
    describe_database(client, &pg, "pg-cluster", pg.data_dir(), json!([])).await?;
    create_policy(
        client,
        "pitr-local",
        json!([
            {"name": "pg-basebackup", "actionSetName": "postgresql-basebackup"},
            {"name": "wal", "actionSetName": "postgresql-wal"}
        ]),
    )
    .await?;
    create_schedule(client, "wal", "7d").await?;
    let backup = running_continuous_backup(&server, "wal").await?;
    let name = backup.name_any();
    let job = Api::<Job>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|j| j.owner_references().iter().any(|o| Some(&o.uid) == backup.metadata.uid.as_ref()))
        .context("the worker Job")?;
    let env = job.spec.and_then(|s| s.template.spec).map(|s| s.containers[0].clone());
    let env = env.and_then(|c| c.env).unwrap_or_default();
    let value = |n: &str| env.iter().find(|e| e.name == n).and_then(|e| e.value.clone());
    assert_eq!(value("DP_ARCHIVE_INTERVAL").as_deref(), Some("300s"));
    assert_eq!(value("DP_TTL_SECONDS").as_deref(), Some("604800"));

    // WAL flows: the range appears once a committed transaction is archived.
    let first = server_now(&pg)?;
    let backup = commit_until_range_reaches(&server, &pg, &name, first).await?;
    let first_end = range_end(&backup).context("end")?;

    // A base backup inside the continuous range.
    create(
        &Api::<Backup>::namespaced(client.clone(), NS),
        json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Backup",
            "metadata": {"name": "pg-base-1"},
            "spec": {"backupPolicyName": POLICY, "backupMethod": "pg-basebackup"}
        }),
    )
    .await?;
    let backups: Api<Backup> = Api::namespaced(client.clone(), NS);
    wait_for(&backups, "pg-base-1", "backup", |b| match b.status.as_ref()?.phase? {
        BackupPhase::Completed => Some(Ok(())),
        BackupPhase::Failed => Some(Err(format!("Failed; job logs:\n{}", job_logs(&server)))),
        _ => None,
    })
    .await?;

    // Rows before T, then T (a whole second, as restoreTime is), then rows after it.
    pg.psql("INSERT INTO events (phase) SELECT 'before' FROM generate_series(1, 3)")?;
    let now = server_now(&pg)?;
    let t = Timestamp::from_second(now.as_second() + 1)?;
    server_clock_past(&pg, t).await?;
    pg.psql("INSERT INTO events (phase) SELECT 'after' FROM generate_series(1, 3)")?;
    let after = server_now(&pg)?;
    let expected_before: i64 =
        pg.psql(&format!("SELECT count(*) FROM events WHERE at < '{t}'"))?.parse()?;
    let backup = commit_until_range_reaches(&server, &pg, &name, after).await?;
    let grown = range_end(&backup).context("end")?;
    assert!(grown > first_end, "timeRange.end grew from {first_end} to {grown}");
    let BackupTimeRange { start, .. } =
        backup.status.and_then(|s| s.time_range).context("range")?;
    assert!(start.context("start")?.0 <= t);

    let restore_time = t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let restore = restored(
        &server,
        "pg-pitr-restore",
        json!({
                "backup": {"name": name, "namespace": NS},
                "restoreTime": restore_time,
                "prepareDataConfig": {
                    "volumeClaims": [{
                        "metadata": {"name": "data-pg-pitr-postgresql-0"},
                        "volumeClaimSpec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                        "mountPath": "/home/postgres/pgdata"
                    }],
                    "volumeClaimRestorePolicy": "Serial"
                },
                "backoffLimit": 0
            }),
    )
    .await?;
    let prepared = restore.status.and_then(|s| s.actions).and_then(|a| a.prepare_data);
    let order: Vec<String> =
        prepared.unwrap_or_default().into_iter().map(|a| a.backup_name).collect();
    assert_eq!(order, ["pg-base-1".to_string(), name.clone()], "base first, then the WAL");

    // A time the archive does not reach is refused before any claim or Job is made.
    let beyond = Timestamp::from_second(grown.as_second() + 3600)?;
    let restores: Api<Restore> = Api::namespaced(client.clone(), NS);
    create(
        &restores,
        json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Restore",
            "metadata": {"name": "pg-pitr-beyond"},
            "spec": {
                "backup": {"name": name, "namespace": NS},
                "restoreTime": beyond.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "prepareDataConfig": {"volumeClaims": [{
                    "metadata": {"name": "data-pg-beyond-0"},
                    "volumeClaimSpec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                    "mountPath": "/home/postgres/pgdata"
                }]}
            }
        }),
    )
    .await?;
    let refused =
        wait_for(&restores, "pg-pitr-beyond", "restore", |r| match r.status.as_ref()?.phase? {
            RestorePhase::Failed => Some(Ok(())),
            RestorePhase::Completed => Some(Err("restored beyond the archive".into())),
            _ => None,
        })
        .await?;
    let conditions = refused.status.and_then(|s| s.conditions).unwrap_or_default();
    let validation = conditions.iter().find(|c| c.type_ == "ValidationPassed");
    let message = validation.map(|c| c.message.clone()).unwrap_or_default();
    assert!(message.contains("outside the recoverable range"), "{message}");
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(client.clone(), NS);
    assert!(claims.get_opt("data-pg-beyond-0").await?.is_none(), "nothing was created");

    disable_and_complete(&server, "wal", &name).await?;
    pg.stop()?;
    let data_dir = claim_dir(client, NS, "data-pg-pitr-postgresql-0").await?.join("pgroot/data");
    let restored = Postgres::start_in_place(&data_dir)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while restored.psql("SELECT pg_is_in_recovery()")? != "f" {
        if Instant::now() > deadline {
            bail!(
                "the restored server never promoted; log:\n{}",
                std::fs::read_to_string(restored.log_file())?
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before: i64 = restored.psql("SELECT count(*) FROM events")?.parse()?;
    assert_eq!(before, expected_before, "exactly the rows committed before {restore_time}");
    assert_eq!(restored.psql("SELECT count(*) FROM events WHERE phase = 'after'")?, "0");
    assert_eq!(restored.psql("SELECT count(*) FROM events WHERE phase = 'before'")?, "3");
    assert!(server.controllers_running());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubeblocks_postgresql_for_pitr_runs_unchanged() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let server = server_with_repo("pitr-addon").await?;
    let client = &server.client;
    let mut pg = Postgres::init()?;
    // What the addon's `reconfigure-ref` sets when archive-wal is enabled: archiving on, with an
    // empty command, so segments wait in archive_status/*.ready for the archiver Job.
    pg.configure(&[("wal_level", "replica"), ("archive_mode", "on"), ("archive_command", "''")])?;
    pg.start_server()?;
    pg.psql("CREATE TABLE events (id serial PRIMARY KEY, phase text NOT NULL)")?;
    // The addon's pods mount the volume at /home/postgres/pgdata with the cluster at
    // pgroot/data.
    let volume = server.scratch_dir("pg-volume")?;
    std::fs::create_dir_all(volume.join("pgroot"))?;
    std::os::unix::fs::symlink(pg.data_dir(), volume.join("pgroot/data"))?;
    let bin = holdfast_testkit::postgres::server_bin_dir()?;
    let env = json!([
        // The addon's scripts connect with `psql -h $DP_DB_HOST -U $DP_DB_USER`: the port comes
        // from the container's libpq environment, as in the addon's pods.
        {"name": "PGPORT", "value": pg.port().to_string()},
        {"name": "PATH", "value": format!("{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", bin.display())}
    ]);
    describe_database(client, &pg, "pg-cluster", &volume, env).await?;

    let fixture = include_str!("fixtures/postgresql-for-pitr.yaml");
    let action_set: ActionSet = serde_saphyr::from_str(fixture)?;
    let created =
        Api::<ActionSet>::all(client.clone()).create(&PostParams::default(), &action_set).await?;
    assert_eq!(created.spec.backup_type, BackupType::Continuous);
    create_policy(
        client,
        "pitr-addon",
        json!([{
            "name": "archive-wal", "actionSetName": "postgresql-for-pitr",
            "target": {
                "podSelector": {"matchLabels": {"app.kubernetes.io/instance": "pg-cluster"}},
                "role": "primary",
                "connectionCredential": {
                    "secretName": "pg-cluster-conn-credential",
                    "usernameKey": "username", "passwordKey": "password",
                    "hostKey": "host", "portKey": "port"
                },
                "serviceAccountName": "default"
            },
            "targetVolumes": {"volumeMounts": [{"name": "data", "mountPath": "/home/postgres/pgdata"}]}
        }]),
    )
    .await?;
    create_schedule(client, "archive-wal", "8d").await?;
    let backup = running_continuous_backup(&server, "archive-wal").await?;
    let name = backup.name_any();

    let first = server_now(&pg)?;
    let backup = commit_until_range_reaches(&server, &pg, &name, first).await?;
    let first_end = range_end(&backup).context("end")?;
    let first_size: u64 =
        backup.status.as_ref().and_then(|s| s.total_size.clone()).context("size")?.parse()?;
    // timeRange is in whole seconds: the next commits land in a later one.
    server_clock_past(&pg, Timestamp::from_second(first_end.as_second() + 1)?).await?;
    let later = server_now(&pg)?;
    let backup = commit_until_range_reaches(&server, &pg, &name, later).await?;
    let grown = range_end(&backup).context("end")?;
    assert!(grown > first_end, "timeRange.end grew from {first_end} to {grown}");
    let size: u64 =
        backup.status.as_ref().and_then(|s| s.total_size.clone()).context("size")?.parse()?;
    assert!(size > first_size, "totalSize grew from {first_size} to {size}");
    let start = backup.status.and_then(|s| s.time_range).and_then(|r| r.start).context("start")?;
    assert!(start.0 <= first_end);

    disable_and_complete(&server, "archive-wal", &name).await?;
    assert!(server.controllers_running());
    Ok(())
}
