//! The PostgresBackup controller (`middleware.alauda.io/v1`): a base backup of the named
//! cluster's primary into a BackupRepo's repository, with the facts a point-in-time restore
//! needs in the status (docs/postgres.md).
//!
//! The cluster is found the way CloudNativePG lays one out, so the clusters people already run
//! work as they are: its pods carry `cnpg.io/cluster=<cluster>`, the primary also
//! `cnpg.io/instanceRole=primary` (older releases: `role=primary`); the superuser's credentials
//! are the Secret `<cluster>-superuser` (`username`, `password`, and `host`/`port` where present;
//! else the primary pod's IP, else the `<cluster>-rw` Service, and 5432). The repository is the
//! BackupRepo named by the annotation `holdfast.io/backup-repo`, else the default BackupRepo.
//!
//! The backup runs here, in the process that reconciles (`pg_basebackup` reaches the server
//! over the network), and `status.executeNode` says which node that is. State goes `running`,
//! then `succeeded` or `failed` with `error`; a backup found `running` that this process is not
//! running (the process restarted) is taken again from the start. Deleting a PostgresBackup
//! deletes its snapshot; the blobs only it used go at the repository's next prune, and the WAL
//! archive is left alone (other backups' restores need it). A failed deletion is `deleteFailed`
//! with the reason and is retried.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_api::alauda::{ConfigBackupStorage, PostgresBackup, PostgresBackupState};
use holdfast_api::kubeblocks::BackupRepo;
use holdfast_postgres::base_backup::{self, BaseBackup};
use holdfast_postgres::server::Connection;
use holdfast_postgres::tools::Tools;
use holdfast_postgres::wal_expiry;
use holdfast_repository::Repository;
use holdfast_repository::location::Location;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use serde_json::json;

use crate::events::{EventType, publish};
use crate::{Context, Error, backup_repo, finalizer, reconciler};

/// Keeps the object until its snapshot is deleted.
pub const FINALIZER: &str = "holdfast.io/postgres-backup";
/// Names the BackupRepo to use instead of the default.
pub const REPO_ANNOTATION: &str = "holdfast.io/backup-repo";
/// CloudNativePG's labels.
pub const CLUSTER_LABEL: &str = "cnpg.io/cluster";
/// The role label of CloudNativePG 1.18 and later, and the one before it.
pub const ROLE_LABELS: [&str; 2] = ["cnpg.io/instanceRole", "role"];
const PRIMARY: &str = "primary";
const DEFAULT_PORT: u16 = 5432;

/// How often a running backup's object is looked at.
const RUNNING_POLL: Duration = Duration::from_secs(10);

/// Uids of the backups this process is taking now.
static RUNNING: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn running(uid: &str) -> bool {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashSet::new).contains(uid)
}

fn set_running(uid: &str, on: bool) {
    let mut guard = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    let set = guard.get_or_insert_with(HashSet::new);
    if on {
        set.insert(uid.to_string());
    } else {
        set.remove(uid);
    }
}

/// Runs the controller.
pub async fn run(ctx: Arc<Context>) -> Result<(), Error> {
    let api = Api::<PostgresBackup>::all(ctx.client.clone());
    let controller = Controller::new(api, watcher::Config::default());
    reconciler::run("postgres-backup", controller, ctx, reconcile).await
}

fn now(ctx: &Context) -> Time {
    Time(ctx.clock.now())
}

async fn patch_status(
    ctx: &Context,
    pb: &PostgresBackup,
    status: serde_json::Value,
) -> Result<(), Error> {
    let api: Api<PostgresBackup> =
        Api::namespaced(ctx.client.clone(), &pb.namespace().unwrap_or_default());
    let mut status = status;
    status["lastModified"] = serde_json::to_value(now(ctx))?;
    api.patch_status(
        &pb.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await?;
    Ok(())
}

async fn reconcile(obj: Arc<PostgresBackup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<PostgresBackup> = Api::namespaced(ctx.client.clone(), &ns);
    // The cached object may predate this controller's own last status patch: a stale `Running`
    // of a backup that has since finished would take it again.
    let Some(pb) = api.get_opt(&obj.name_any()).await?.map(Arc::new) else {
        return Ok(Action::await_change());
    };
    if pb.metadata.deletion_timestamp.is_some() {
        return delete(&ctx, &pb, &api).await;
    }
    if finalizer::add(&api, &pb, FINALIZER).await? {
        // The watch brings the object back with the finalizer on.
        return Ok(Action::await_change());
    }
    let status = pb.status.clone().unwrap_or_default();
    let uid = pb.uid().unwrap_or_default();
    match status.state {
        Some(PostgresBackupState::Succeeded | PostgresBackupState::Failed) => {
            return Ok(Action::await_change());
        }
        Some(PostgresBackupState::DeleteFailed) => return Ok(Action::await_change()),
        Some(PostgresBackupState::Running) if running(&uid) => {
            return Ok(Action::requeue(RUNNING_POLL));
        }
        Some(PostgresBackupState::Running) => {
            tracing::info!(postgresbackup = %format!("{ns}/{}", pb.name_any()), "taking again a backup that was running when this process stopped");
        }
        Some(PostgresBackupState::Pending) | None => {}
    }
    let prepared = match prepare(&ctx, &pb).await {
        Ok(p) => p,
        Err(Error::Invalid(reason)) => {
            fail(&ctx, &pb, &reason).await?;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e),
    };
    set_running(&uid, true);
    patch_status(
        &ctx,
        &pb,
        json!({
            "state": "running",
            "startTime": now(&ctx),
            "executeNode": prepared.node,
            "configBackupStorage": prepared.storage,
            "error": null,
        }),
    )
    .await
    .inspect_err(|_| set_running(&uid, false))?;
    publish(
        &ctx,
        &*pb,
        EventType::Normal,
        "BackupStarted",
        "Backup",
        &format!("base backup of {} started", prepared.connection.describe()),
    )
    .await;
    tokio::spawn(take(ctx.clone(), pb.clone(), prepared));
    Ok(Action::requeue(RUNNING_POLL))
}

async fn fail(ctx: &Context, pb: &PostgresBackup, reason: &str) -> Result<(), Error> {
    patch_status(ctx, pb, json!({"state": "failed", "error": reason, "finishTime": now(ctx)}))
        .await?;
    publish(ctx, pb, EventType::Warning, "BackupFailed", "Backup", reason).await;
    Ok(())
}

/// What a backup needs, found before it starts.
struct Prepared {
    connection: Connection,
    location: Location,
    key: String,
    node: String,
    storage: ConfigBackupStorage,
}

/// The cluster's primary pod: labelled so, else the only pod.
fn primary(pods: Vec<Pod>, cluster: &str, ns: &str) -> Result<Pod, Error> {
    let is_primary =
        |p: &Pod| ROLE_LABELS.iter().any(|l| p.labels().get(*l).is_some_and(|v| v == PRIMARY));
    let total = pods.len();
    let mut primaries: Vec<Pod> = pods.iter().filter(|p| is_primary(p)).cloned().collect();
    match (primaries.len(), total) {
        (1, _) => Ok(primaries.remove(0)),
        (0, 0) => Err(Error::Invalid(format!(
            "no pods labelled {CLUSTER_LABEL}={cluster} in namespace {ns}: is the cluster named \
             right and running?"
        ))),
        (0, 1) => pods.into_iter().next().ok_or_else(|| Error::Invalid("no pod".into())),
        (0, n) => Err(Error::Invalid(format!(
            "{n} pods of cluster {cluster} and none labelled {}={PRIMARY}: cannot tell the primary",
            ROLE_LABELS[0]
        ))),
        (n, _) => Err(Error::Invalid(format!(
            "{n} pods of cluster {cluster} are labelled {PRIMARY}; a cluster has one primary"
        ))),
    }
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| String::from_utf8_lossy(&v.0).trim().to_string())
        .or_else(|| secret.string_data.as_ref().and_then(|d| d.get(key)).cloned())
        .filter(|v| !v.is_empty())
}

async fn prepare(ctx: &Context, pb: &PostgresBackup) -> Result<Prepared, Error> {
    let ns = pb.namespace().unwrap_or_default();
    let cluster = &pb.spec.cluster;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let listed =
        pods.list(&ListParams::default().labels(&format!("{CLUSTER_LABEL}={cluster}"))).await?;
    let primary = primary(listed.items, cluster, &ns)?;
    let secret_name = format!("{cluster}-superuser");
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let secret = secrets.get_opt(&secret_name).await?.ok_or_else(|| {
        Error::Invalid(format!(
            "the Secret {ns}/{secret_name} with the cluster's superuser credentials (username, \
             password) does not exist"
        ))
    })?;
    let host = secret_value(&secret, "host")
        .or_else(|| primary.status.as_ref().and_then(|s| s.pod_ip.clone()))
        .unwrap_or_else(|| format!("{cluster}-rw.{ns}.svc"));
    let port = match secret_value(&secret, "port") {
        Some(p) => p.parse().map_err(|_| {
            Error::Invalid(format!("Secret {ns}/{secret_name}: port {p:?} is not a port number"))
        })?,
        None => DEFAULT_PORT,
    };
    let connection = Connection {
        host: Some(host),
        port: Some(port),
        user: Some(secret_value(&secret, "username").unwrap_or_else(|| "postgres".into())),
        dbname: None,
        password: secret_value(&secret, "password"),
    };
    let this_node = crate::job_runner::pod::node_name();
    let node = match pb.spec.execute_node.as_deref().filter(|n| !n.is_empty()) {
        Some(n) if n == this_node => n.to_string(),
        Some(n) => {
            return Err(Error::Invalid(format!(
                "spec.executeNode {n} is not a node holdfast runs on (this one is {this_node})"
            )));
        }
        None => this_node,
    };
    let named = pb
        .annotations()
        .get(REPO_ANNOTATION)
        .map(|n| (n.clone(), format!("the annotation {REPO_ANNOTATION}")));
    let how = format!("annotate the PostgresBackup with {REPO_ANNOTATION}=<backuprepo>");
    let repo: BackupRepo = backup_repo::named_or_default(ctx, named, &how).await?;
    let (location, key) = backup_repo::open_location(ctx, &repo).await?;
    let bucket = match &location {
        Location::S3(o) => o.bucket.clone(),
        Location::Local(dir) => dir.display().to_string(),
    };
    let storage = ConfigBackupStorage {
        bucket,
        name: repo.name_any(),
        namespace: ctx.system_namespace.clone(),
    };
    Ok(Prepared { connection, location, key, node, storage })
}

/// Takes the backup and records how it went.
async fn take(ctx: Arc<Context>, pb: Arc<PostgresBackup>, prepared: Prepared) {
    let uid = pb.uid().unwrap_or_default();
    let Prepared { connection, location, key, .. } = prepared;
    let work = tokio::task::spawn_blocking(move || -> Result<(String, BaseBackup), String> {
        let backend = location.open_existing().map_err(|e| e.to_string())?;
        let repo = Repository::open(backend, key.as_bytes()).map_err(|e| e.to_string())?;
        // A prune or a WAL expiry holding the repository briefly is waited out, not a failure.
        repo.set_lock_wait(crate::repository_access::DATA_PATH_LOCK_WAIT);
        let opts = base_backup::Options {
            connection,
            tools: Tools::new(None),
            tags: vec!["postgresbackup".into()],
            ..Default::default()
        };
        let (result, backup) = base_backup::run(&repo, &opts).map_err(|e| e.to_string())?;
        Ok((result.id.to_hex(), backup))
    });
    let outcome = match work.await {
        Ok(r) => r,
        Err(join) => Err(format!("the backup task crashed: {join}")),
    };
    let recorded = match outcome {
        Ok((snapshot, b)) => {
            let lsn = |l: holdfast_postgres::Lsn| i64::try_from(l.0).unwrap_or(i64::MAX);
            let status = json!({
                "state": "succeeded",
                "backupName": snapshot,
                "clusterUid": b.system_identifier.to_string(),
                "pgVersion": b.version,
                "startLsn": lsn(b.start_lsn),
                "finishLsn": lsn(b.finish_lsn),
                "startTime": Time(b.start_time),
                "finishTime": Time(b.finish_time),
                "error": null,
            });
            let done = patch_status(&ctx, &pb, status).await;
            if done.is_ok() {
                let note = format!(
                    "base backup {} stored: WAL {} to {} on timeline {}",
                    &snapshot[..8],
                    b.start_lsn,
                    b.finish_lsn,
                    b.timeline
                );
                publish(&ctx, &*pb, EventType::Normal, "BackupSucceeded", "Backup", &note).await;
            }
            done
        }
        Err(reason) => fail(&ctx, &pb, &reason).await,
    };
    if let Err(e) = recorded {
        // The object may be gone meanwhile; a restart takes the backup again otherwise.
        tracing::warn!(error = %e, "could not record the outcome of a PostgresBackup");
    }
    set_running(&uid, false);
}

/// Deletes the backup's snapshot, then lets the object go.
async fn delete(
    ctx: &Context,
    pb: &PostgresBackup,
    api: &Api<PostgresBackup>,
) -> Result<Action, Error> {
    if !finalizer::has(pb, FINALIZER) {
        return Ok(Action::await_change());
    }
    let status = pb.status.clone().unwrap_or_default();
    if running(&pb.uid().unwrap_or_default()) {
        // Its snapshot is not written yet; deleting now would leave it behind.
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    if let (Some(snapshot), Some(storage)) = (&status.backup_name, &status.config_backup_storage)
        && let Err(e) = forget(ctx, snapshot, status.cluster_uid.as_deref(), storage).await
    {
        let reason = format!("deleting snapshot {snapshot}: {e}");
        patch_status(ctx, pb, json!({"state": "deleteFailed", "error": reason})).await?;
        publish(ctx, pb, EventType::Warning, "DeleteFailed", "Delete", &reason).await;
        return Err(e);
    }
    finalizer::remove(api, pb, FINALIZER).await?;
    Ok(Action::await_change())
}

/// Forgets the backup's snapshot, then expires the WAL of `cluster` (its system identifier) that
/// only this backup still needed. Expiry is best effort: a backup holding the repository's lock,
/// or a refusal, leaves the WAL for the next expiry, and the deletion goes on.
async fn forget(
    ctx: &Context,
    snapshot: &str,
    cluster: Option<&str>,
    storage: &ConfigBackupStorage,
) -> Result<(), Error> {
    let repos: Api<BackupRepo> = Api::all(ctx.client.clone());
    let Some(repo) = repos.get_opt(&storage.name).await? else {
        // The repository went with its BackupRepo: nothing is left to delete.
        return Ok(());
    };
    let (location, key) = backup_repo::open_location(ctx, &repo).await?;
    let snapshot = snapshot.to_string();
    let cluster = cluster.and_then(|c| c.parse::<u64>().ok());
    tokio::task::spawn_blocking(move || -> Result<(), Error> {
        let backend = location.open_existing().map_err(|e| Error::Invalid(e.to_string()))?;
        let repo = Repository::open(backend, key.as_bytes())?;
        match repo.find_snapshot_id(&snapshot) {
            Ok(id) => holdfast_repository::forget::remove_snapshots(&repo, &[id])?,
            Err(holdfast_repository::Error::SnapshotNotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(id) = cluster {
            let opts = wal_expiry::Options { system_identifier: Some(id), dry_run: false };
            match wal_expiry::expire(&repo, &opts) {
                Ok(done) => {
                    let files: usize = done.iter().map(|e| e.deleted.len()).sum();
                    tracing::info!(cluster = id, files, "expired WAL no base backup needs");
                }
                Err(e) => tracing::info!(cluster = id, error = %e, "WAL left for the next expiry"),
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| Error::Invalid(format!("the deletion task crashed: {e}")))?
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn pod(name: &str, role: Option<(&str, &str)>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        let mut labels = BTreeMap::from([(CLUSTER_LABEL.to_string(), "pg".to_string())]);
        if let Some((k, v)) = role {
            labels.insert(k.into(), v.into());
        }
        p.metadata.labels = Some(labels);
        p
    }

    #[test]
    fn the_primary_is_the_labelled_pod_or_the_only_one() {
        let pods = vec![
            pod("pg-1", Some(("cnpg.io/instanceRole", "replica"))),
            pod("pg-2", Some(("cnpg.io/instanceRole", "primary"))),
        ];
        assert_eq!(primary(pods, "pg", "ns").unwrap().name_any(), "pg-2");
        let old = vec![pod("pg-1", Some(("role", "primary"))), pod("pg-2", None)];
        assert_eq!(primary(old, "pg", "ns").unwrap().name_any(), "pg-1");
        assert_eq!(primary(vec![pod("pg-1", None)], "pg", "ns").unwrap().name_any(), "pg-1");
        let e = primary(vec![pod("a", None), pod("b", None)], "pg", "ns").unwrap_err();
        assert!(e.to_string().contains("cannot tell the primary"), "{e}");
        let e = primary(Vec::new(), "pg", "ns").unwrap_err();
        assert!(e.to_string().contains("no pods labelled cnpg.io/cluster=pg"), "{e}");
    }
}
