//! Cluster mode end to end. `holdfast server --no-controllers` stands in for a cluster's API
//! server; this test process plays its node (the embedded Job runner as kubelet and Job
//! controller, the local-path provisioner as its storage), and two `holdfast operator` replicas,
//! authenticated as `deploy/rbac.yaml`'s ServiceAccount, run every controller. A real PostgreSQL
//! is backed up with the shipped `postgresql-basebackup` ActionSet into S3 (moto), its leader is
//! killed while the backup's Job runs, the other replica finishes the backup, and a Restore
//! brings the backup-time data back into a new claim: every step a Job the cluster executor
//! built. The server's audit log then shows every call the operator made, which must match the
//! shipped Roles: nothing refused, nothing granted that the code does not use.

mod common;
#[path = "common/kubeblocks.rs"]
mod kubeblocks;
#[allow(dead_code)]
#[path = "common/operator.rs"]
mod operator;
#[path = "common/poll.rs"]
mod poll;
#[path = "common/tree.rs"]
mod tree;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use holdfast_api::kubeblocks::backup::BackupPhase;
use holdfast_api::kubeblocks::{Backup, BackupRepo};
use holdfast_controllers::Context;
use holdfast_testkit::{HoldfastServer, Moto, Postgres};
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};

use common::{claim_dir, create};
use kubeblocks::{
    JobHost, checksums, create_policy, describe_database, job_logs, restored, wait_for,
};
use operator::{NAMESPACE, OPERATOR_USER, Operator, holder};
use poll::poll;

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");
const NS: &str = "default";
const LEASE: Duration = Duration::from_secs(3);
const BACKUP: &str = "pg-cluster-backup-1";

/// The tests share two CPU cores; one cluster at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The cluster's node, played by this process: what kubelets, the Job controller and a volume
/// provisioner do, by holdfast's embedded implementations, as the cluster's admin.
struct Node {
    client: Client,
    ctx: Arc<Context>,
    task: tokio::task::JoinHandle<()>,
}

impl Node {
    fn start(client: Client, data_dir: PathBuf) -> Result<Node> {
        std::fs::create_dir_all(&data_dir)?;
        let ctx = Arc::new(Context::new(client.clone(), data_dir, BIN));
        let run = ctx.clone();
        let task = tokio::spawn(async move {
            if let Err(error) = holdfast_controllers::run_node(run).await {
                eprintln!("the node stopped: {error}");
            }
        });
        Ok(Node { client, ctx, task })
    }
}

impl JobHost for Node {
    fn client(&self) -> &Client {
        &self.client
    }

    fn logs_dir(&self) -> PathBuf {
        self.ctx.logs_dir()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Grants of `deploy/rbac.yaml` a call of the operator does not exercise in this run, each with
/// the code that needs it. The test fails when one of them is used (remove it here) and when a
/// grant is neither used nor listed (remove it from the Role, or list it with its reason).
const NOT_EXERCISED: NotExercised = &[
    (
        "",
        "persistentvolumeclaims",
        &["delete"],
        "backup_repo/mount.rs: a Mount repo's pre-check claim",
    ),
    (
        "",
        "persistentvolumeclaims",
        &["patch"],
        "snapshot/source_claim.rs: the source claim's finalizer",
    ),
    ("", "persistentvolumes", &["get"], "snapshot/volume_snapshot.rs: a dynamic snapshot's volume"),
    ("", "secrets", &["delete"], "backup_repo.rs: a deleted BackupRepo's tool configuration"),
    ("", "secrets", &["patch"], "backup_repo.rs: a changed BackupRepo's tool configuration"),
    (
        "dataprotection.kubeblocks.io",
        "backups",
        &["create"],
        "backup_schedule.rs: scheduled Backups",
    ),
    ("dataprotection.kubeblocks.io", "backups", &["delete"], "retention.rs: expired Backups"),
    (
        "dataprotection.kubeblocks.io",
        "actionsets",
        &["update"],
        "shipped_action_sets.rs: an untouched shipped ActionSet replaced on upgrade",
    ),
    ("dataprotection.kubeblocks.io", "backupschedules", &["get"], "backup_schedule.rs"),
    ("dataprotection.kubeblocks.io", "backupschedules/status", &["patch"], "backup_schedule.rs"),
    (
        "dataprotection.kubeblocks.io",
        "backups/finalizers",
        &["update"],
        "blockOwnerDeletion under OwnerReferencesPermissionEnforcement, not enforced here",
    ),
    (
        "dataprotection.kubeblocks.io",
        "backuprepos/finalizers",
        &["update"],
        "as backups/finalizers",
    ),
    ("dataprotection.kubeblocks.io", "restores/finalizers", &["update"], "as backups/finalizers"),
    ("events.k8s.io", "events", &["patch"], "events.rs: the count of a repeated event"),
    ("middleware.alauda.io", "postgresbackups", &["get", "patch"], "postgres_backup.rs"),
    ("middleware.alauda.io", "postgresbackups/status", &["patch"], "postgres_backup.rs"),
    (
        "snapshot.storage.k8s.io",
        "volumesnapshots",
        &["create", "delete", "get", "patch"],
        "backup/volume_snapshot.rs and snapshot/: snapshot backups, the snapshot controller",
    ),
    (
        "snapshot.storage.k8s.io",
        "volumesnapshots/status",
        &["patch"],
        "snapshot/volume_snapshot.rs",
    ),
    (
        "snapshot.storage.k8s.io",
        "volumesnapshotcontents",
        &["create", "delete", "get", "patch"],
        "snapshot/volume_snapshot.rs, snapshot/content.rs",
    ),
    ("snapshot.storage.k8s.io", "volumesnapshotcontents/status", &["patch"], "snapshot/content.rs"),
    ("snapshot.storage.k8s.io", "volumesnapshotclasses", &["get"], "snapshot/volume_snapshot.rs"),
    ("storage.k8s.io", "csidrivers", &["get"], "snapshot/volume_snapshot.rs, storage_provider.rs"),
    ("storage.k8s.io", "storageclasses", &["create", "delete", "get"], "backup_repo/mount.rs"),
    ("velero.io", "backupstoragelocations", &["get"], "velero/repository.rs"),
    ("velero.io", "backupstoragelocations/status", &["patch"], "velero/storage_location.rs"),
    ("velero.io", "backuprepositories/status", &["patch"], "velero/repository.rs"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_replicas_back_up_and_restore_postgres_through_jobs() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let exe = Path::new(BIN);
    let dir = tempfile::tempdir()?;
    // As a node's /var/lib: the accounts Jobs and the restored database run as pass through.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))?;
    let audit = dir.path().join("audit.log");
    let audit_arg = audit.to_str().context("utf-8")?;
    let server = HoldfastServer::start_with(
        exe,
        &dir.path().join("server"),
        &["--no-controllers", "--audit-log-path", audit_arg],
    )
    .await?;
    let client = server.client().await?;
    let kubeconfig = operator::install(&server.kubeconfig_path(), dir.path()).await?;
    let node = Node::start(client.clone(), dir.path().join("node"))?;
    let mut replicas = [
        Operator::start(exe, &kubeconfig, "replica-a", dir.path().join("a"), LEASE).await?,
        Operator::start(exe, &kubeconfig, "replica-b", dir.path().join("b"), LEASE).await?,
    ];
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let first =
        poll(Duration::from_secs(30), "a leader", || async { holder(&leases).await }).await?;
    let (leader, follower) = if first == "replica-a" { (0, 1) } else { (1, 0) };

    let moto = Moto::start()?;
    moto.create_bucket("holdfast-cluster")?;
    s3_repo(&client, &moto, "cluster-s3").await?;
    let repos: Api<BackupRepo> = Api::all(client.clone());
    wait_for(&repos, "cluster-s3", "backuprepo", |r| {
        match r.status.as_ref()?.phase.map(|p| format!("{p:?}")).as_deref() {
            Some("Ready") => Some(Ok(())),
            Some("Failed") => Some(Err("Failed".into())),
            _ => None,
        }
    })
    .await?;

    let pg = Postgres::start()?;
    pg.pgbench(&["-i", "-s", "5", "-q"])?;
    describe_database(&client, &pg, "pg-cluster", pg.data_dir(), json!([])).await?;
    create_policy(
        &client,
        "cluster-s3",
        json!([{"name": "pg-basebackup", "actionSetName": "postgresql-basebackup"}]),
    )
    .await?;
    let backups: Api<Backup> = Api::namespaced(client.clone(), NS);
    let backup = create(
        &backups,
        json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Backup",
            "metadata": {"name": BACKUP},
            "spec": {"backupPolicyName": kubeblocks::POLICY, "backupMethod": "pg-basebackup"}
        }),
    )
    .await?;
    let uid = backup.uid().context("uid")?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let owned_by_backup = |j: &Job| j.owner_references().iter().any(|o| o.uid == uid);

    // The leader dies while the backup's Job runs; the other replica takes the backup over.
    poll(Duration::from_secs(60), "the backup's Job", || async {
        Ok(jobs.list(&ListParams::default()).await?.items.into_iter().find(|j| owned_by_backup(j)))
    })
    .await?;
    replicas[leader].child.start_kill()?;
    replicas[leader].child.wait().await?;
    let killed = Instant::now();
    let status = backups.get(BACKUP).await?.status;
    assert_eq!(
        status.as_ref().and_then(|s| s.phase),
        Some(BackupPhase::Running),
        "the leader died in the middle of the backup: {status:#?}\n{}",
        job_logs(&node)
    );
    let second = poll(Duration::from_secs(30), "a new leader", || async {
        Ok(holder(&leases).await?.filter(|h| *h != first))
    })
    .await?;
    let took = killed.elapsed();
    assert!(took <= LEASE + LEASE / 3 + Duration::from_secs(2), "took over after {took:?}");
    assert_ne!(second, first);
    poll(Duration::from_secs(10), "the new leader's metrics", || async {
        Ok(replicas[follower].leading().await?.then_some(()))
    })
    .await?;
    let backup = wait_for(&backups, BACKUP, "backup", |b| match b.status.as_ref()?.phase? {
        BackupPhase::Completed => Some(Ok(())),
        BackupPhase::Failed => Some(Err(format!("Failed; job logs:\n{}", job_logs(&node)))),
        _ => None,
    })
    .await?;
    let at_backup = checksums(&pg)?;
    let status = backup.status.clone().context("backup status")?;
    let size: u64 = status.total_size.as_deref().context("totalSize")?.parse()?;
    assert!(size > 10 * 1024 * 1024, "totalSize {size} is too small for pgbench -s 5");
    let range = status.time_range.context("timeRange")?;
    assert!(range.start.context("start")? <= range.end.context("end")?);

    // One Job did the backup, built by the cluster executor: the tools copied in from the
    // operator's image, kept after it finished for its logs.
    let backup_jobs: Vec<Job> = jobs
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(owned_by_backup)
        .collect();
    assert_eq!(backup_jobs.len(), 1, "one Job per backup, whichever replica led");
    let spec = backup_jobs[0].spec.clone().context("job spec")?;
    assert!(spec.ttl_seconds_after_finished.is_some_and(|t| t > 0));
    let pod = spec.template.spec.context("pod spec")?;
    let init = pod.init_containers.unwrap_or_default();
    assert_eq!(init.len(), 1, "{init:?}");
    assert_eq!(init[0].image.as_deref(), Some(operator::IMAGE));
    assert_eq!(
        init[0].command.clone().unwrap_or_default(),
        ["holdfast", "install-tools", "/holdfast/bin"]
    );

    // Changed after the backup: the restore must not see this.
    pg.pgbench(&["-t", "200", "-c", "2", "--no-vacuum"])?;
    let changed = checksums(&pg)?;
    assert_ne!(changed, at_backup);
    let restore = restored(
        &node,
        "pg-cluster-restore-1",
        json!({
            "backup": {"name": BACKUP, "namespace": NS},
            "prepareDataConfig": {
                "volumeClaims": [{
                    "metadata": {"name": "data-pg-restored-postgresql-0"},
                    "volumeClaimSpec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                    "mountPath": "/home/postgres/pgdata"
                }],
                "volumeClaimRestorePolicy": "Serial"
            },
            "backoffLimit": 0
        }),
    )
    .await?;
    let restore_uid = restore.uid().context("uid")?;
    let leftover: Vec<String> = jobs
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|j| j.owner_references().iter().any(|o| o.uid == restore_uid))
        .map(|j| j.name_any())
        .collect();
    assert!(leftover.is_empty(), "a Serial restore deletes its finished Jobs: {leftover:?}");
    drop(pg);
    let data_dir =
        claim_dir(&client, NS, "data-pg-restored-postgresql-0").await?.join("pgroot/data");
    let restored_pg = Postgres::start_in_place(&data_dir)?;
    assert_eq!(checksums(&restored_pg)?, at_backup, "the restored database is the backup's");

    // The operator told what it did.
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let reasons: BTreeSet<(String, String)> = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|e| Some((e.regarding?.name?, e.reason?)))
        .collect();
    for (object, reason) in [
        (BACKUP, "BackupStarted"),
        (BACKUP, "BackupCompleted"),
        ("pg-cluster-restore-1", "Completed"),
    ] {
        assert!(
            reasons.contains(&(object.to_string(), reason.to_string())),
            "no {reason} event about {object}: {reasons:?}"
        );
    }

    // Every call the operator made was one deploy/rbac.yaml grants, and every grant was used
    // (or is listed with the code that needs it).
    rbac_matches_calls(&audit, OPERATOR_USER, "rbac.yaml", NOT_EXERCISED)?;
    Ok(())
}

/// The user the node agent's ServiceAccount token authenticates as.
const AGENT_USER: &str = "system:serviceaccount:holdfast-system:holdfast-agent";
const NODE: &str = "node-1";
const APPS: &str = "apps";
const VELERO: &str = "velero";

/// Grants of `deploy/agent.yaml` this run does not exercise (see [`NOT_EXERCISED`]).
const AGENT_NOT_EXERCISED: NotExercised =
    &[("events.k8s.io", "events", &["patch"], "events.rs: the count of a repeated event")];

/// A pod of `NODE` as the API has it, with a claim `data` (bound to the CSI volume `pv`) and an
/// emptyDir `cache`; returns its uid.
async fn kubelet_pod(client: &Client, name: &str, pvc: &str, pv: &str) -> Result<String> {
    kubelet_pod_on(client, name, pvc, pv, Some(NODE), false).await
}

/// [`kubelet_pod`] scheduled to `node`, or not yet.
async fn kubelet_pod_on(
    client: &Client,
    name: &str,
    pvc: &str,
    pv: &str,
    node: Option<&str>,
    restore_wait: bool,
) -> Result<String> {
    Api::<k8s_openapi::api::core::v1::PersistentVolume>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": pv}, "spec": {
                "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                "csi": {"driver": "csi.example.com", "volumeHandle": pv},
                "claimRef": {"namespace": APPS, "name": pvc}
            }}))?,
        )
        .await?;
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(client.clone(), APPS);
    claims
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": pvc}, "spec": {
                "accessModes": ["ReadWriteOnce"], "volumeName": pv,
                "resources": {"requests": {"storage": "1Gi"}}
            }}))?,
        )
        .await?;
    claims
        .patch_status(
            pvc,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"phase": "Bound"}})),
        )
        .await?;
    // Velero's restore prepends this to a pod whose volumes it restores.
    let init = restore_wait.then(|| {
        json!([{"name": "restore-wait", "image": "velero/velero:v1.14.0",
                "command": ["/velero-restore-helper"], "args": ["r-2"],
                "volumeMounts": [{"name": "cache", "mountPath": "/restores/cache"}]}])
    });
    let pod = create(
        &Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), APPS),
        json!({"metadata": {"name": name}, "spec": {
            "nodeName": node,
            "initContainers": init,
            "containers": [{"name": "app", "image": "app:1", "volumeMounts": [
                {"name": "data", "mountPath": "/data"}, {"name": "cache", "mountPath": "/cache"}]}],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": pvc}},
                {"name": "cache", "emptyDir": {}},
                {"name": "host", "hostPath": {"path": "/etc"}}
            ]
        }}),
    )
    .await?;
    pod.uid().context("the API server gives pods a uid")
}

/// Where a kubelet mounts volume `dir` of plugin `plugin` of pod `uid` (created).
fn mounted(kubelet: &Path, uid: &str, plugin: &str, dir: &str) -> Result<PathBuf> {
    let path = kubelet.join("pods").join(uid).join("volumes").join(plugin).join(dir);
    std::fs::create_dir_all(&path)?;
    Ok(path)
}

/// 100 files of 10 B to 20 KiB in 5 directories.
fn write_tree(dir: &Path, seed: u64) -> Result<()> {
    for d in 0..5u64 {
        let sub = dir.join(format!("d{d}"));
        std::fs::create_dir_all(&sub)?;
        for f in 0..20u64 {
            let body = tree::random_bytes(seed * 1000 + d * 20 + f, (f * 1021 + 10) as usize);
            std::fs::write(sub.join(format!("f{f}")), body)?;
        }
    }
    Ok(())
}

async fn finished<K>(api: &Api<K>, name: &str) -> Result<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    wait_for(api, name, "data move", |o| {
        let phase = serde_json::to_value(o).ok()?["status"]["phase"].as_str()?.to_string();
        match phase.as_str() {
            "Completed" | "Failed" | "Canceled" => Some(Ok(())),
            _ => None,
        }
    })
    .await
}

/// That the restore `name` is still unclaimed after two of the agent's 2 s looks at it (a claim
/// would show as a phase); `when` says at what point.
async fn unclaimed(
    pvrs: &Api<holdfast_api::velero::PodVolumeRestore>,
    name: &str,
    when: &str,
) -> Result<()> {
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (phase, _) = phase_and_message(&pvrs.get(name).await?);
    assert!(matches!(phase.as_str(), "" | "New"), "claimed {when}: {phase}");
    Ok(())
}

fn phase_and_message<K: serde::Serialize>(o: &K) -> (String, String) {
    let v = serde_json::to_value(o).unwrap_or_default();
    let text = |k: &str| v["status"][k].as_str().unwrap_or_default().to_string();
    (text("phase"), text("message"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_node_agent_moves_pod_volumes_where_the_kubelet_mounted_them() -> Result<()> {
    use holdfast_api::velero::{BackupStorageLocation, PodVolumeBackup, PodVolumeRestore};
    let _serial = SERIAL.lock().await;
    let exe = Path::new(BIN);
    let dir = tempfile::tempdir()?;
    let audit = dir.path().join("audit.log");
    let audit_arg = audit.to_str().context("utf-8")?;
    let server = HoldfastServer::start_with(
        exe,
        &dir.path().join("server"),
        &["--no-controllers", "--audit-log-path", audit_arg],
    )
    .await?;
    let client = server.client().await?;
    let operator_config = operator::install(&server.kubeconfig_path(), dir.path()).await?;
    let agent_config = operator::install_agent(&server.kubeconfig_path(), dir.path()).await?;
    let _operator =
        Operator::start(exe, &operator_config, "replica-a", dir.path().join("a"), LEASE).await?;
    let kubelet = dir.path().join("kubelet");
    std::fs::create_dir_all(kubelet.join("pods"))?;
    for node in [NODE, "node-2"] {
        create(
            &Api::<k8s_openapi::api::core::v1::Node>::all(client.clone()),
            json!({"metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}}}),
        )
        .await?;
    }
    // Velero's node-agent ConfigMap: a rule for this node sets its concurrency.
    create(
        &Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), NAMESPACE),
        json!({"metadata": {"name": "node-agent-config"}, "data": {"node-agent-config.json":
            json!({"loadConcurrency": {"globalConfig": 1, "perNodeConfig": [
                {"nodeSelector": {"matchLabels": {"kubernetes.io/hostname": NODE}}, "number": 3},
                {"nodeSelector": {"matchLabels": {"kubernetes.io/hostname": "node-2"}}, "number": 5}
            ]}}).to_string()}}),
    )
    .await?;
    let start_agent = || {
        operator::start_agent(
            exe,
            &agent_config,
            NODE,
            &kubelet,
            dir.path().join("agent"),
            &["--node-agent-configmap", "node-agent-config"],
        )
    };
    // A ConfigMap that is named but not there stops the agent with the reason.
    let missing = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(exe)
            .args(["agent", "--health-listen", "127.0.0.1:0", "--node-name", NODE])
            .arg("--kubeconfig")
            .arg(&agent_config)
            .arg("--kubelet-dir")
            .arg(&kubelet)
            .arg("--data-dir")
            .arg(dir.path().join("agent"))
            .args(["--node-agent-configmap", "no-such-config"])
            .output(),
    )
    .await
    .context("the agent did not stop")??;
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success()
            && err.contains(
                "ConfigMap holdfast-system/no-such-config (--node-agent-configmap) does not exist"
            ),
        "{err}"
    );
    let mut agent = start_agent().await?;
    let (_, metrics) = agent.get("/metrics").await?;
    assert!(
        metrics
            .lines()
            .any(|l| l == format!("holdfast_node_agent_concurrency{{node=\"{NODE}\"}} 3")),
        "{metrics}"
    );
    for ns in [APPS, VELERO] {
        create(
            &Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone()),
            json!({"metadata": {"name": ns}}),
        )
        .await?;
    }
    let moto = Moto::start()?;
    moto.create_bucket("velero")?;
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
    let status =
        poll(Duration::from_secs(120), "the location validated by the operator", || async {
            Ok(bsls.get("s3").await?.status.filter(|s| s.phase.is_some()))
        })
        .await?;
    assert_eq!(format!("{:?}", status.phase), "Some(Available)", "{status:?}");

    // The source pod's volumes, laid out as a kubelet mounts them: the CSI claim's data under
    // `<pv>/mount` (beside the kubelet's own vol_data.json, which must not be backed up).
    let uid = kubelet_pod(&client, "app", "data-a", "pv-a").await?;
    let csi = mounted(&kubelet, &uid, "kubernetes.io~csi", "pv-a/mount")?;
    std::fs::write(csi.parent().context("parent")?.join("vol_data.json"), b"{\"kubelet\":1}")?;
    write_tree(&csi, 7)?;
    let cache = mounted(&kubelet, &uid, "kubernetes.io~empty-dir", "cache")?;
    write_tree(&cache, 13)?;

    let pvbs: Api<PodVolumeBackup> = Api::namespaced(client.clone(), VELERO);
    let pvb = |name: &str, node: &str, volume: &str| {
        json!({"metadata": {"name": name}, "spec": {
            "node": node, "pod": {"kind": "Pod", "namespace": APPS, "name": "app"},
            "volume": volume, "backupStorageLocation": "s3", "repoIdentifier": "",
            "uploaderType": "kopia", "tags": {"backup": "nightly", "volume": volume}
        }})
    };
    create(&pvbs, pvb("other-node", "node-2", "data")).await?;
    create(&pvbs, pvb("data", NODE, "data")).await?;
    create(&pvbs, pvb("cache", NODE, "cache")).await?;
    create(&pvbs, pvb("host", NODE, "host")).await?;
    let mut snapshots = BTreeMap::new();
    for name in ["data", "cache"] {
        let done = finished(&pvbs, name).await?;
        let (phase, message) = phase_and_message(&done);
        assert_eq!(phase, "Completed", "{name}: {message}");
        let id = done.status.and_then(|s| s.snapshot_id).context("snapshotID")?;
        snapshots.insert(name, id);
    }
    let (phase, message) = phase_and_message(&finished(&pvbs, "host").await?);
    assert_eq!(phase, "Failed");
    assert!(message.contains("hostPath"), "{message}");
    // Work of another node is that node's agent's: this one never takes it.
    let other = pvbs.get("other-node").await?;
    assert!(matches!(phase_and_message(&other).0.as_str(), "" | "New"), "{other:?}");

    // Restored into a new pod's volumes, with Velero's done marker for its restore-wait.
    let uid2 = kubelet_pod(&client, "app-restored", "data-b", "pv-b").await?;
    let csi2 = mounted(&kubelet, &uid2, "kubernetes.io~csi", "pv-b/mount")?;
    let cache2 = mounted(&kubelet, &uid2, "kubernetes.io~empty-dir", "cache")?;
    let pvrs: Api<PodVolumeRestore> = Api::namespaced(client.clone(), VELERO);
    for (name, volume) in [("data", "data"), ("cache", "cache")] {
        create(
            &pvrs,
            json!({"metadata": {"name": name, "labels": {"velero.io/restore-uid": "r-1"}}, "spec": {
                "pod": {"kind": "Pod", "namespace": APPS, "name": "app-restored"},
                "volume": volume, "backupStorageLocation": "s3", "repoIdentifier": "",
                "snapshotID": snapshots[name], "sourceNamespace": APPS, "uploaderType": "kopia"
            }}),
        )
        .await?;
        let (phase, message) = phase_and_message(&finished(&pvrs, name).await?);
        assert_eq!(phase, "Completed", "{name}: {message}");
    }
    for (src, restored) in [(&csi, &csi2), (&cache, &cache2)] {
        let marker = restored.join(".velero").join("r-1");
        assert!(marker.is_file(), "no done marker {}", marker.display());
        std::fs::remove_dir_all(restored.join(".velero"))?;
        tree::assert_same_tree(src, restored);
    }
    assert!(!csi2.parent().context("parent")?.join("vol_data.json").exists());

    // A restore asked for before its pod is scheduled is no agent's yet; once the pod is on
    // this node it is not taken before Velero's restore-wait init container runs (as Velero's
    // node agent does); then it waits for the kubelet to mount the volume rather than make the
    // directory.
    let uid3 = kubelet_pod_on(&client, "app-late", "data-c", "pv-c", None, true).await?;
    create(
        &pvrs,
        json!({"metadata": {"name": "late", "labels": {"velero.io/restore-uid": "r-2"}}, "spec": {
            "pod": {"kind": "Pod", "namespace": APPS, "name": "app-late"},
            "volume": "cache", "backupStorageLocation": "s3", "repoIdentifier": "",
            "snapshotID": snapshots["cache"], "sourceNamespace": APPS, "uploaderType": "kopia"
        }}),
    )
    .await?;
    unclaimed(&pvrs, "late", "before its pod was scheduled").await?;
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), APPS)
        .patch(
            "app-late",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"nodeName": NODE}})),
        )
        .await?;
    unclaimed(&pvrs, "late", "before restore-wait ran").await?;
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), APPS)
        .patch_status(
            "app-late",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"initContainerStatuses": [{
                "name": "restore-wait", "ready": false, "restartCount": 0,
                "image": "velero/velero:v1.14.0", "imageID": "",
                "state": {"running": {"startedAt": "2026-12-07T00:00:00Z"}}
            }]}})),
        )
        .await?;
    let waiting = poll(Duration::from_secs(60), "the agent to wait for the mount", || async {
        let (phase, message) = phase_and_message(&pvrs.get("late").await?);
        Ok((phase == "Accepted" && message.contains("not mounted") || message.contains("no "))
            .then_some(message))
    })
    .await?;
    let pods_dir = kubelet.join("pods").join(&uid3);
    assert!(!pods_dir.exists(), "the agent made {}: {waiting}", pods_dir.display());
    let cache3 = mounted(&kubelet, &uid3, "kubernetes.io~empty-dir", "cache")?;
    let (phase, message) = phase_and_message(&finished(&pvrs, "late").await?);
    assert_eq!(phase, "Completed", "{message}");
    std::fs::remove_dir_all(cache3.join(".velero"))?;
    tree::assert_same_tree(&cache, &cache3);

    // The agent is stopped (SIGTERM, as the kubelet stops a pod) in the middle of a move: it
    // exits without waiting for the move to end, and the one it restarts as ends that move
    // Failed with the reason (as Velero's node agent does); a new request succeeds.
    for i in 0..3u64 {
        std::fs::write(csi.join(format!("big-{i}")), tree::random_bytes(100 + i, 100 << 20))?;
    }
    let mut slow = pvb("interrupted", NODE, "data");
    slow["spec"]["uploaderSettings"] = json!({"ParallelFilesUpload": "1"});
    create(&pvbs, slow).await?;
    poll(Duration::from_secs(120), "the move to start", || async {
        Ok((phase_and_message(&pvbs.get("interrupted").await?).0 == "InProgress").then_some(()))
    })
    .await?;
    let snapshots_of = || -> Result<usize> {
        let keys = moto.keys("velero", "prod/")?;
        Ok(keys.iter().filter(|k| k.contains("/snapshots/")).count())
    };
    let before = snapshots_of()?;
    ensure!(before > 0, "the earlier backups' snapshots are not listed");
    let pid = agent.pid()?;
    let term = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    ensure!(term.success(), "kill -TERM {pid}");
    let status = tokio::time::timeout(Duration::from_secs(30), agent.child.wait())
        .await
        .context("the agent did not exit within 30 s of SIGTERM")??;
    assert!(status.success(), "the agent exited with {status}");
    let (phase, _) = phase_and_message(&pvbs.get("interrupted").await?);
    assert_eq!(phase, "InProgress", "the stopped agent wrote no end to the move it stopped");
    // It stopped the move rather than waiting for it to end: no snapshot was saved.
    assert_eq!(snapshots_of()?, before, "the stopped agent finished the move before exiting");
    let _agent = start_agent().await?;
    let (phase, message) = phase_and_message(&finished(&pvbs, "interrupted").await?);
    assert_eq!(phase, "Failed", "{message}");
    assert!(message.contains("restarted while data was moving"), "{message}");
    create(&pvbs, pvb("retry", NODE, "data")).await?;
    let (phase, message) = phase_and_message(&finished(&pvbs, "retry").await?);
    assert_eq!(phase, "Completed", "{message}");

    rbac_matches_calls(&audit, AGENT_USER, "agent.yaml", AGENT_NOT_EXERCISED)?;
    Ok(())
}

/// A Secret with moto's keys and the BackupRepo `name` on holdfast's S3 provider.
async fn s3_repo(client: &Client, moto: &Moto, name: &str) -> Result<()> {
    let mut data = BTreeMap::new();
    data.insert("accessKeyId".into(), ByteString(holdfast_testkit::moto::ACCESS_KEY_ID.into()));
    data.insert(
        "secretAccessKey".into(),
        ByteString(holdfast_testkit::moto::SECRET_ACCESS_KEY.into()),
    );
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{name}-credential")),
            ..Default::default()
        },
        data: Some(data),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), NS).create(&PostParams::default(), &secret).await?;
    create(
        &Api::<BackupRepo>::all(client.clone()),
        json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "BackupRepo",
            "metadata": {"name": name},
            "spec": {
                "storageProviderRef": "holdfast-s3", "accessMethod": "Tool", "pvReclaimPolicy": "Retain",
                "config": {
                    "bucket": "holdfast-cluster", "endpoint": moto.endpoint(),
                    "region": holdfast_testkit::moto::REGION, "prefix": "kubeblocks"
                },
                "credential": {"name": format!("{name}-credential"), "namespace": NS}
            }
        }),
    )
    .await?;
    Ok(())
}

/// One grant or call: API group, resource (with `/subresource`), verb.
type Access = (String, String, String);

/// Grants listed as used by code this run does not reach: API group, resource, verbs, where.
type NotExercised<'a> = &'a [(&'a str, &'a str, &'a [&'a str], &'a str)];

/// Compares the calls of `user` in the audit log with the ClusterRole and Role rules of
/// `deploy/<rbac>`, apart from `not_exercised`.
fn rbac_matches_calls(
    audit: &Path,
    user: &str,
    rbac: &str,
    not_exercised: NotExercised,
) -> Result<()> {
    let mut used = BTreeSet::new();
    let mut refused = Vec::new();
    for line in std::fs::read_to_string(audit)?.lines() {
        let event: Value = serde_json::from_str(line)?;
        if event["user"]["username"] != user {
            continue;
        }
        let object = &event["objectRef"];
        let Some(resource) = object["resource"].as_str() else { continue };
        let resource = match object["subresource"].as_str() {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_string(),
        };
        let access: Access = (
            object["apiGroup"].as_str().unwrap_or_default().to_string(),
            resource,
            event["verb"].as_str().context("verb")?.to_string(),
        );
        if event["responseStatus"]["code"] == 403 {
            refused.push(access);
        } else {
            used.insert(access);
        }
    }
    assert!(refused.is_empty(), "calls deploy/{rbac} does not grant: {refused:?}");
    assert!(!used.is_empty(), "the audit log holds no call of {user}");
    let granted = granted(rbac)?;
    let beyond: Vec<&Access> = used.difference(&granted).collect();
    assert!(beyond.is_empty(), "calls that only passed through another grant: {beyond:?}");
    let listed: BTreeSet<Access> = not_exercised
        .iter()
        .flat_map(|(group, resource, verbs, _why)| {
            verbs.iter().map(|v| (group.to_string(), resource.to_string(), v.to_string()))
        })
        .collect();
    let listed_but_used: Vec<&Access> = listed.intersection(&used).collect();
    assert!(
        listed_but_used.is_empty(),
        "exercised now; drop them from NOT_EXERCISED: {listed_but_used:?}"
    );
    let unused: Vec<&Access> =
        granted.iter().filter(|a| !used.contains(*a) && !listed.contains(*a)).collect();
    if !unused.is_empty() {
        let mut by_resource: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
        for (group, resource, verb) in unused {
            by_resource.entry((group, resource)).or_default().push(verb);
        }
        let lines: Vec<String> =
            by_resource.iter().map(|((g, r), verbs)| format!("{g:?} {r}: {verbs:?}")).collect();
        bail!("deploy/{rbac} grants what {user} never called:\n{}", lines.join("\n"));
    }
    Ok(())
}

/// Every (group, resource, verb) the ClusterRoles and Roles of `deploy/<rbac>` grant.
fn granted(rbac: &str) -> Result<BTreeSet<Access>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy").join(rbac);
    let text = std::fs::read_to_string(&path)?;
    let mut out = BTreeSet::new();
    for doc in text.split("\n---") {
        let doc: Value =
            serde_saphyr::from_str(doc).with_context(|| format!("{}", path.display()))?;
        if !matches!(doc["kind"].as_str(), Some("ClusterRole" | "Role")) {
            continue;
        }
        for rule in doc["rules"].as_array().context("rules")? {
            let strings = |key: &str| -> Vec<String> {
                rule[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            };
            for group in strings("apiGroups") {
                for resource in strings("resources") {
                    for verb in strings("verbs") {
                        out.insert((group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    Ok(out)
}
