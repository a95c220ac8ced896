//! The Backup, BackupSchedule and retention controllers against the real in-process API server,
//! with every controller running (Job runner, BackupRepo, Backup, …), a `holdfast-local`
//! BackupRepo in a temporary directory, and ActionSets whose commands are real shell pipelines
//! writing through `datasafed` (the holdfast binary), or methods taking VolumeSnapshots of the
//! local-path claims of the embedded provisioner.

mod common;
#[path = "common/tree.rs"]
mod tree;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use holdfast_api::kubeblocks::backup::{ActionPhase, ActionType, BackupPhase};
use holdfast_api::kubeblocks::backup_repo::BackupRepoPhase;
use holdfast_api::kubeblocks::restore::RestorePhase;
use holdfast_api::kubeblocks::{
    ActionSet, Backup, BackupPolicy, BackupRepo, BackupSchedule, Restore,
};
use holdfast_api::quantity::parse_bytes;
use holdfast_api::snapshot::VolumeSnapshot;
use holdfast_controllers::backup::{FINALIZER, LABEL_BACKUP_SCHEDULE};
use holdfast_controllers::{AdjustableClock, Clock, Context};
use holdfast_testkit::EmbeddedServer;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The binary job processes run as `datasafed`, built by Cargo for this test.
const BIN: &str = env!("CARGO_BIN_EXE_holdfast");
const NS: &str = "default";
const REPO: &str = "local-repo";
const POLICY: &str = "pg-policy";

/// Polls `check` every 200 ms until it yields a value or `timeout` passes.
async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn create<K>(api: Api<K>, obj: Value) -> Result<K>
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let typed: K = serde_json::from_value(obj)?;
    Ok(api.create(&PostParams::default(), &typed).await?)
}

/// A server with a Ready `holdfast-local` repo, a database pod and its credential Secret, and a
/// policy with the methods the tests use.
struct Setup {
    server: EmbeddedServer,
    repo_dir: std::path::PathBuf,
}

impl Setup {
    async fn start() -> Result<Setup> {
        Self::start_with(|ctx| ctx).await
    }

    /// A setup whose controllers' context is adjusted first (another clock).
    async fn start_with(configure: impl FnOnce(Context) -> Context) -> Result<Setup> {
        let server = EmbeddedServer::start_with(Path::new(BIN), configure).await?;
        let repo_dir = server.scratch_dir("repo")?;
        let client = server.client.clone();
        create(
            Api::<BackupRepo>::all(client.clone()),
            json!({
                "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "BackupRepo",
                "metadata": {"name": REPO},
                "spec": {
                    "storageProviderRef": "holdfast-local", "accessMethod": "Tool",
                    "pvReclaimPolicy": "Retain",
                    "config": {"path": repo_dir.to_string_lossy()}
                }
            }),
        )
        .await?;
        create(Api::<Secret>::namespaced(client.clone(), NS),
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "pg-account"},
                "stringData": {"username": "postgres", "password": "s3cret", "host": "127.0.0.1", "port": "5432"}
            }),
        )
        .await?;
        create(
            Api::<Pod>::namespaced(client.clone(), NS),
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "pg-0", "labels": {"app": "pg"}},
                "spec": {"containers": [{
                    "name": "postgres", "image": "postgres:16",
                    "env": [{"name": "PGDATA", "value": "/var/lib/postgresql/data"}]
                }]}
            }),
        )
        .await?;
        let repos: Api<BackupRepo> = Api::all(client.clone());
        wait_for("the BackupRepo to be Ready", Duration::from_secs(120), || async {
            let repo = repos.get(REPO).await?;
            let phase = repo.status.as_ref().and_then(|s| s.phase);
            if phase == Some(BackupRepoPhase::Failed) {
                bail!("the BackupRepo failed its pre-check: {:?}", repo.status);
            }
            Ok((phase == Some(BackupRepoPhase::Ready)).then_some(()))
        })
        .await?;
        Ok(Setup { server, repo_dir })
    }

    fn client(&self) -> Client {
        self.server.client.clone()
    }

    async fn action_set(&self, name: &str, backup_data: &str, extra: Value) -> Result<()> {
        let mut spec = json!({
            "backupType": "Full",
            "env": [{"name": "ACTIONSET_VAR", "value": "from-actionset"}],
            "backup": {"backupData": {"image": "busybox", "command": ["sh", "-c", backup_data]}}
        });
        if let (Value::Object(backup), Value::Object(more)) = (&mut spec["backup"], extra) {
            backup.extend(more);
        }
        create(
            Api::<ActionSet>::all(self.client()),
            json!({
                "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "ActionSet",
                "metadata": {"name": name}, "spec": spec
            }),
        )
        .await?;
        Ok(())
    }

    async fn policy(&self, methods: Value) -> Result<()> {
        self.named_policy(POLICY, methods).await
    }

    async fn named_policy(&self, name: &str, methods: Value) -> Result<()> {
        create(Api::<BackupPolicy>::namespaced(self.client(), NS),
            json!({
                "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "BackupPolicy",
                "metadata": {"name": name},
                "spec": {
                    "backupRepoName": REPO,
                    "pathPrefix": "pg",
                    "backoffLimit": 0,
                    "target": {
                        "podSelector": {"matchLabels": {"app": "pg"}},
                        "connectionCredential": {"secretName": "pg-account", "hostKey": "host", "portKey": "port"},
                        "serviceAccountName": "default"
                    },
                    "backupMethods": methods
                }
            }),
        )
        .await?;
        Ok(())
    }

    async fn backup(&self, name: &str, method: &str, deletion: &str) -> Result<Backup> {
        create(Api::<Backup>::namespaced(self.client(), NS),
            json!({
                "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Backup",
                "metadata": {"name": name},
                "spec": {"backupPolicyName": POLICY, "backupMethod": method, "deletionPolicy": deletion}
            }),
        )
        .await
    }

    /// Waits until the backup is Completed or Failed.
    async fn finished(&self, name: &str) -> Result<Backup> {
        let api: Api<Backup> = Api::namespaced(self.client(), NS);
        wait_for(&format!("backup {name} to finish"), Duration::from_secs(120), || async {
            let b = api.get(name).await?;
            let phase = b.status.as_ref().and_then(|s| s.phase);
            Ok(matches!(phase, Some(BackupPhase::Completed | BackupPhase::Failed)).then_some(b))
        })
        .await
    }

    async fn gone(&self, name: &str) -> Result<()> {
        let api: Api<Backup> = Api::namespaced(self.client(), NS);
        wait_for(&format!("backup {name} to disappear"), Duration::from_secs(120), || async {
            Ok(api.get_opt(name).await?.is_none().then_some(()))
        })
        .await
    }

    /// `datasafed list -r /` under `base` with the repo's tool config, as a Job would run it.
    async fn list(&self, base: &str) -> Result<String> {
        let secrets: Api<Secret> = Api::namespaced(self.client(), NS);
        let secret = secrets.get(&format!("tool-config-{REPO}")).await?;
        let conf = secret
            .data
            .as_ref()
            .and_then(|d| d.get("datasafed.conf"))
            .context("the tool-config Secret has no datasafed.conf")?;
        let conf_path = self.server.scratch_dir("conf")?.join("datasafed.conf");
        std::fs::write(&conf_path, &conf.0)?;
        datasafed(&conf_path, base, &["list", "-r", "/"])
    }
}

fn datasafed(conf: &Path, base: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(BIN)
        .arg("datasafed")
        .arg("-c")
        .arg(conf)
        .args(args)
        .env("DATASAFED_BACKEND_BASE_PATH", base)
        .output()?;
    if !out.status.success() {
        bail!("datasafed {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The backupData script of the happy path: 4 MB of random data and the job's DP_* env pushed
/// through datasafed, and a backup.info with size and time range.
const DUMP: &str = r#"set -e
start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
head -c 4000000 /dev/urandom | datasafed push - /data.bin
env | grep -E '^(DP_|DATASAFED_BACKEND|ACTIONSET_VAR|METHOD_VAR|PGDATA|KB_)' | sort | datasafed push - /env.txt
end=$(date -u +%Y-%m-%dT%H:%M:%SZ)
echo "{\"totalSize\":\"4000000\",\"timeRange\":{\"start\":\"$start\",\"end\":\"$end\",\"timeZone\":\"+00:00\"},\"extras\":[{\"tool\":\"dump\"}]}" > "$DP_BACKUP_INFO_FILE"
"#;

async fn dump_setup() -> Result<Setup> {
    let setup = Setup::start().await?;
    setup.action_set("as-dump", DUMP, json!({})).await?;
    setup
        .action_set(
            "as-broken",
            "echo 'pg_dump: error: connection to server failed: Connection refused' >&2; exit 3",
            json!({}),
        )
        .await?;
    setup
        .policy(json!([
            {"name": "dump", "actionSetName": "as-dump",
             "env": [{"name": "METHOD_VAR", "value": "from-method"}, {"name": "ACTIONSET_VAR", "value": "method-wins"}]},
            {"name": "broken", "actionSetName": "as-broken"},
            {"name": "snap", "snapshotVolumes": true}
        ]))
        .await?;
    Ok(setup)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_runs_its_actionset_records_backup_info_and_delete_removes_the_data() -> Result<()>
{
    let setup = dump_setup().await?;
    setup.backup("b1", "dump", "Delete").await?;
    let b = setup.finished("b1").await?;
    let st = b.status.clone().context("status")?;
    assert_eq!(st.phase, Some(BackupPhase::Completed), "{:?}", st.failure_reason);
    assert_eq!(st.total_size.as_deref(), Some("4000000"));
    assert_eq!(st.path.as_deref(), Some("/default/pg/b1"));
    assert_eq!(st.backup_repo_name.as_deref(), Some(REPO));
    assert_eq!(st.format_version.as_deref(), Some("0.1.0"));
    let range = st.time_range.clone().context("timeRange")?;
    assert!(range.start.is_some() && range.end.is_some() && range.start <= range.end);
    assert_eq!(range.time_zone.as_deref(), Some("+00:00"));
    assert_eq!(st.extras, Some(vec![r#"{"tool":"dump"}"#.to_string()]));
    let duration = st.duration.clone().context("duration")?;
    assert!(duration.ends_with('s') && !duration.contains('.'), "{duration}");
    assert!(st.start_timestamp.is_some() && st.completion_timestamp.is_some());
    assert_eq!(st.expiration, None, "no retentionPeriod: kept forever");
    assert_eq!(st.backup_method.as_ref().map(|m| m.name.as_str()), Some("dump"));
    let actions = st.actions.clone().context("actions")?;
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].phase, Some(ActionPhase::Completed));
    assert_eq!(actions[0].total_size.as_deref(), Some("4000000"));
    assert!(b.finalizers().contains(&FINALIZER.to_string()));
    assert_eq!(
        b.labels().get("dataprotection.kubeblocks.io/backup-repo-name").map(String::as_str),
        Some(REPO)
    );
    assert_eq!(
        b.labels().get("dataprotection.kubeblocks.io/backup-type").map(String::as_str),
        Some("Full")
    );

    // The data and the job's environment are in the repo under status.path.
    let listing = setup.list("/default/pg/b1").await?;
    assert!(listing.contains("data.bin") && listing.contains("env.txt"), "{listing}");
    let conf = setup.server.scratch_dir("conf")?.join("datasafed.conf");
    let env = datasafed(&conf, "/default/pg/b1", &["pull", "/env.txt", "-"])?;
    for expected in [
        "DP_BACKUP_NAME=b1",
        "DP_TARGET_POD_NAME=pg-0",
        "DP_BACKUP_BASE_PATH=/default/pg/b1",
        "DATASAFED_BACKEND_BASE_PATH=/default/pg/b1",
        "DP_BACKUP_INFO_FILE=/dp-manager/backup.info",
        "DP_DB_HOST=127.0.0.1",
        "DP_DB_PORT=5432",
        "DP_DB_USER=postgres",
        "DP_DB_PASSWORD=s3cret",
        "PGDATA=/var/lib/postgresql/data",
        "ACTIONSET_VAR=method-wins",
        "METHOD_VAR=from-method",
        "KB_NAMESPACE=default",
    ] {
        assert!(env.lines().any(|l| l == expected), "{expected} missing from:\n{env}");
    }
    assert!(
        !env.lines().any(|l| l.starts_with("DP_TTL=")),
        "no retentionPeriod, no DP_TTL:\n{env}"
    );

    // The worker Job stays once the backup is Completed, so its logs can be read, until its
    // TTL or the Backup's deletion removes it.
    let jobs: Api<Job> = Api::namespaced(setup.client(), NS);
    let worker = jobs
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|j| j.name_any().starts_with("dp-backup-"))
        .context("the worker Job of a completed backup")?;
    let ttl = worker.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished);
    assert_eq!(ttl, Some(holdfast_controllers::job_runner::FINISHED_JOB_TTL_SECONDS));

    // Delete: the data goes, then the object, and its Job with it.
    let api: Api<Backup> = Api::namespaced(setup.client(), NS);
    api.delete("b1", &DeleteParams::default()).await?;
    setup.gone("b1").await?;
    wait_for("the worker Job to be removed", Duration::from_secs(30), || async {
        let left = jobs.list(&ListParams::default()).await?.items;
        Ok(left.iter().all(|j| !j.name_any().starts_with("dp-backup-")).then_some(()))
    })
    .await?;
    let listing = setup.list("/default/pg/b1").await?;
    assert!(!listing.contains("data.bin"), "data left after Delete: {listing}");
    assert!(setup.repo_dir.exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn retain_keeps_the_data_and_the_backup_object_goes() -> Result<()> {
    let setup = dump_setup().await?;
    setup.backup("kept", "dump", "Retain").await?;
    let b = setup.finished("kept").await?;
    assert_eq!(b.status.as_ref().and_then(|s| s.phase), Some(BackupPhase::Completed));
    let api: Api<Backup> = Api::namespaced(setup.client(), NS);
    api.delete("kept", &DeleteParams::default()).await?;
    setup.gone("kept").await?;
    let listing = setup.list("/default/pg/kept").await?;
    assert!(listing.contains("data.bin"), "Retain must keep the data: {listing}");
    Ok(())
}

/// The value of the sample of `name` whose labels include every pair of `labels`, from the
/// controllers' exposition parsed as a scraper would.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).ok()?;
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .and_then(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            prometheus_parse::Value::Histogram(ref buckets) => {
                buckets.iter().map(|b| b.count).reduce(f64::max)
            }
            prometheus_parse::Value::Summary(_) => None,
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn backups_move_their_metrics_once_on_completion_and_on_failure() -> Result<()> {
    let setup = dump_setup().await?;
    setup.backup("counted", "dump", "Delete").await?;
    setup.backup("counted-fails", "broken", "Delete").await?;
    let ok = setup.finished("counted").await?;
    assert_eq!(ok.status.as_ref().and_then(|s| s.phase), Some(BackupPhase::Completed));
    let failed = setup.finished("counted-fails").await?;
    assert_eq!(failed.status.as_ref().and_then(|s| s.phase), Some(BackupPhase::Failed));

    // A finished Backup reconciled again (any edit wakes its controller) counts nothing more.
    let api: Api<Backup> = Api::namespaced(setup.client(), NS);
    for name in ["counted", "counted-fails"] {
        let touch = json!({"metadata": {"labels": {"touched": "yes"}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&touch)).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let text = setup.server.ctx.metrics.render();
    for line in text.lines() {
        assert!(
            !matches!(prometheus_parse::LineInfo::parse(line), prometheus_parse::LineInfo::Ignored),
            "a line a scraper cannot read: {line:?}"
        );
    }
    let labels = [("namespace", NS), ("backup_policy", POLICY), ("schedule", "")];
    let value = |name: &str| sample(&text, name, &labels);
    assert_eq!(value("holdfast_backup_attempt_total"), Some(2.0), "{text}");
    assert_eq!(value("holdfast_backup_success_total"), Some(1.0), "{text}");
    assert_eq!(value("holdfast_backup_failure_total"), Some(1.0), "{text}");
    assert_eq!(value("holdfast_backup_bytes_written_total"), Some(4_000_000.0), "{text}");
    assert_eq!(value("holdfast_backup_size_bytes"), Some(4_000_000.0), "{text}");
    assert_eq!(value("holdfast_backup_duration_seconds"), Some(2.0), "both are timed: {text}");
    let completed =
        ok.status.as_ref().and_then(|s| s.completion_timestamp.clone()).context("completion")?;
    let last = value("holdfast_backup_last_successful_timestamp").context("last success")?;
    assert!((last - completed.0.as_second() as f64).abs() < 1.0, "{last} vs {completed:?}");
    assert_eq!(
        sample(&text, "holdfast_backup_repo_size_bytes", &[("backup_repo", REPO)]),
        Some(4_000_000.0),
        "{text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_say_what_went_wrong() -> Result<()> {
    let setup = dump_setup().await?;
    setup.backup("fails", "broken", "Delete").await?;
    // A policy naming a missing ActionSet (its controller marks it Unavailable for that).
    setup
        .named_policy(
            "other-policy",
            json!([{"name": "missing", "actionSetName": "does-not-exist"}]),
        )
        .await?;
    create(
        Api::<Backup>::namespaced(setup.client(), NS),
        json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Backup",
            "metadata": {"name": "no-actionset"},
            "spec": {"backupPolicyName": "other-policy", "backupMethod": "missing"}
        }),
    )
    .await?;
    setup.backup("snapshot", "snap", "Delete").await?;
    create(
        Api::<Backup>::namespaced(setup.client(), NS),
        json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Backup",
            "metadata": {"name": "no-policy"},
            "spec": {"backupPolicyName": "nope", "backupMethod": "dump"}
        }),
    )
    .await?;

    let reason =
        |b: &Backup| b.status.as_ref().and_then(|s| s.failure_reason.clone()).unwrap_or_default();
    let b = setup.finished("fails").await?;
    assert_eq!(b.status.as_ref().and_then(|s| s.phase), Some(BackupPhase::Failed));
    assert!(reason(&b).contains("Connection refused"), "log tail expected: {}", reason(&b));
    assert!(reason(&b).contains("backupData on pod pg-0"), "{}", reason(&b));
    let action = &b.status.as_ref().and_then(|s| s.actions.clone()).unwrap_or_default()[0];
    assert_eq!(action.phase, Some(ActionPhase::Failed));

    let b = setup.finished("no-actionset").await?;
    assert_eq!(b.status.as_ref().and_then(|s| s.phase), Some(BackupPhase::Failed));
    assert!(reason(&b).contains("actionset does-not-exist not found"), "{}", reason(&b));
    assert!(b.finalizers().is_empty(), "nothing was written, so no finalizer");

    let b = setup.finished("snapshot").await?;
    assert!(
        reason(&b).contains(
            "backupMethod snap of backuppolicy pg-policy sets snapshotVolumes but names no \
             targetVolumes.volumes"
        ),
        "{}",
        reason(&b)
    );
    // A Backup whose policy does not exist yet waits for it, saying so, and is not Failed.
    let api: Api<Backup> = Api::namespaced(setup.client(), NS);
    let waiting =
        wait_for("the backup to wait for its policy", Duration::from_secs(60), || async {
            let b = api.get("no-policy").await?;
            let label =
                b.labels().get("dataprotection.kubeblocks.io/wait-repo-preparation").cloned();
            Ok((label.as_deref() == Some("true")).then_some(b))
        })
        .await?;
    assert_ne!(waiting.status.as_ref().and_then(|s| s.phase), Some(BackupPhase::Failed));

    // A failed backup with data in the repo still deletes cleanly (nothing to remove is fine).
    for name in ["fails", "no-actionset", "snapshot", "no-policy"] {
        api.delete(name, &DeleteParams::default()).await?;
    }
    for name in ["fails", "no-actionset", "snapshot", "no-policy"] {
        setup.gone(name).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn incremental_backups_chain_to_the_latest_full() -> Result<()> {
    let setup = Setup::start().await?;
    setup.action_set("as-full", "echo full | datasafed push - /full.txt", json!({})).await?;
    create(Api::<ActionSet>::all(setup.client()),
        json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "ActionSet",
            "metadata": {"name": "as-inc"},
            "spec": {"backupType": "Incremental", "backup": {"backupData": {"image": "busybox", "command": ["sh", "-c",
                "set -e; [ -n \"$DP_PARENT_BACKUP_NAME\" ]; DATASAFED_BACKEND_BASE_PATH=$DP_BACKUP_ROOT_PATH/$DP_PARENT_BACKUP_NAME/$DP_TARGET_RELATIVE_PATH datasafed list / | grep -q txt; echo \"$DP_PARENT_BACKUP_NAME $DP_BASE_BACKUP_NAME\" | datasafed push - /inc.txt"]}}}
        }),
    )
    .await?;
    setup
        .policy(json!([
            {"name": "full", "actionSetName": "as-full"},
            {"name": "inc", "actionSetName": "as-inc"}
        ]))
        .await?;
    // No Full yet: the incremental backup cannot start.
    setup.backup("inc0", "inc", "Delete").await?;
    let b = setup.finished("inc0").await?;
    let reason = b.status.as_ref().and_then(|s| s.failure_reason.clone()).unwrap_or_default();
    assert!(reason.contains("take a Full backup first"), "{reason}");

    setup.backup("full1", "full", "Delete").await?;
    assert_eq!(
        setup.finished("full1").await?.status.and_then(|s| s.phase),
        Some(BackupPhase::Completed)
    );
    setup.backup("inc1", "inc", "Delete").await?;
    let inc1 = setup.finished("inc1").await?;
    assert_eq!(
        inc1.status.as_ref().and_then(|s| s.phase),
        Some(BackupPhase::Completed),
        "{:?}",
        inc1.status
    );
    let ann = |b: &Backup, k: &str| b.annotations().get(k).cloned();
    assert_eq!(
        ann(&inc1, "dataprotection.kubeblocks.io/parent-backup-name").as_deref(),
        Some("full1")
    );
    assert_eq!(
        ann(&inc1, "dataprotection.kubeblocks.io/base-backup-name").as_deref(),
        Some("full1")
    );
    setup.backup("inc2", "inc", "Delete").await?;
    let inc2 = setup.finished("inc2").await?;
    assert_eq!(
        inc2.status.as_ref().and_then(|s| s.phase),
        Some(BackupPhase::Completed),
        "{:?}",
        inc2.status
    );
    assert_eq!(
        ann(&inc2, "dataprotection.kubeblocks.io/parent-backup-name").as_deref(),
        Some("inc1")
    );
    assert_eq!(
        ann(&inc2, "dataprotection.kubeblocks.io/base-backup-name").as_deref(),
        Some("full1")
    );
    let conf = {
        setup.list("/default/pg/inc2").await?;
        setup.server.scratch_dir("conf")?.join("datasafed.conf")
    };
    assert_eq!(
        datasafed(&conf, "/default/pg/inc2", &["pull", "/inc.txt", "-"])?.trim(),
        "inc1 full1"
    );

    // Deleting the Full takes its chain with it.
    let api: Api<Backup> = Api::namespaced(setup.client(), NS);
    api.delete("full1", &DeleteParams::default()).await?;
    for name in ["full1", "inc1", "inc2"] {
        setup.gone(name).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_backs_up_on_the_minute_and_expired_backups_are_collected_with_their_data()
-> Result<()> {
    // The controllers go by a clock this test moves forward: the minute of cron and the minute
    // of retention pass in a moment of real time. The API server keeps the system clock, so its
    // timestamps are read in the controllers' time by adding the clock's offset.
    let clock = Arc::new(AdjustableClock::new());
    let controllers_clock: Arc<dyn Clock> = clock.clone();
    let setup = Setup::start_with(|ctx| ctx.with_clock(controllers_clock)).await?;
    setup.action_set("as-dump", "echo hello | datasafed push - /hello.txt", json!({})).await?;
    setup.policy(json!([{"name": "dump", "actionSetName": "as-dump"}])).await?;
    create(Api::<BackupSchedule>::namespaced(setup.client(), NS),
        json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "BackupSchedule",
            "metadata": {"name": "every-minute"},
            "spec": {
                "backupPolicyName": POLICY,
                "schedules": [{"enabled": true, "backupMethod": "dump", "cronExpression": "*/1 * * * *", "retentionPeriod": "1m"}]
            }
        }),
    )
    .await?;
    let api: Api<Backup> = Api::namespaced(setup.client(), NS);
    let selector = format!("{LABEL_BACKUP_SCHEDULE}=every-minute");
    // Move to the next minute (at least a few seconds ahead, so it is not reached by itself).
    let soon = clock.now().as_second() + 5;
    clock.advance_to(Timestamp::from_second(soon + 60 - soon.rem_euclid(60))?);
    let first = wait_for("the schedule to create a backup", Duration::from_secs(15), || async {
        let items = api.list(&ListParams::default().labels(&selector)).await?.items;
        Ok(items.into_iter().next())
    })
    .await?;
    let name = first.name_any();
    let created = first.creation_timestamp().context("creationTimestamp")?.0 + clock.offset();
    // Named for its scheduled minute, created right at it.
    let stamp = name.strip_prefix("every-minute-dump-").context("name pattern")?;
    assert_eq!(stamp.len(), 14, "{name}");
    assert!(stamp.ends_with("00"), "runs on the minute: {name}");
    // creationTimestamp has whole seconds and the offset does not, so "at the minute" may read
    // as up to a second before it.
    let past_the_minute = (created.as_second() + 1).rem_euclid(60);
    assert!(past_the_minute <= 10, "created {created} for {name}");
    assert_eq!(
        first.labels().get("dataprotection.kubeblocks.io/autobackup").map(String::as_str),
        Some("true")
    );
    assert_eq!(first.spec.retention_period.as_deref(), Some("1m"));

    let done = setup.finished(&name).await?;
    let st = done.status.clone().context("status")?;
    assert_eq!(st.phase, Some(BackupPhase::Completed), "{:?}", st.failure_reason);
    let expiration = st.expiration.clone().context("expiration")?.0;
    let completed = st.completion_timestamp.clone().context("completion")?.0;
    assert_eq!(expiration.as_second() - completed.as_second(), 60);
    assert!(setup.list(st.path.as_deref().context("path")?).await?.contains("hello.txt"));

    let schedules: Api<BackupSchedule> = Api::namespaced(setup.client(), NS);
    let sched = schedules.get("every-minute").await?;
    let sst = sched.status.context("schedule status")?;
    assert_eq!(format!("{:?}", sst.phase), "Some(Available)");
    let entry = sst.schedules.as_ref().and_then(|m| m.get("dump")).context("entry status")?;
    assert!(entry.last_schedule_time.is_some());

    // Stop the schedule so no more backups appear, then let the retention period and the GC
    // interval (60 s each) pass: the GC deletes the expired backup and its data.
    let patch = json!({"spec": {"schedules": [{"enabled": false, "backupMethod": "dump", "cronExpression": "*/1 * * * *", "retentionPeriod": "1m"}]}});
    schedules.patch("every-minute", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    clock.advance(Duration::from_secs(61));
    let api2 = api.clone();
    let name2 = name.clone();
    wait_for("the expired backup to be collected", Duration::from_secs(60), || {
        let api = api2.clone();
        let name = name2.clone();
        async move { Ok(api.get_opt(&name).await?.is_none().then_some(())) }
    })
    .await?;
    let listing = setup.list(st.path.as_deref().context("path")?).await?;
    assert!(!listing.contains("hello.txt"), "GC must delete the data too: {listing}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_pre_delete_is_reported_and_retain_still_lets_the_backup_go() -> Result<()> {
    let setup = Setup::start().await?;
    setup
        .action_set(
            "as-guarded",
            "echo data | datasafed push - /data.txt",
            json!({"preDelete": {"image": "busybox", "command": ["sh", "-c",
                "echo \"wal-g: cannot reach storage for $DP_BACKUP_NAME\" >&2; exit 1"]}}),
        )
        .await?;
    setup.policy(json!([{"name": "guarded", "actionSetName": "as-guarded"}])).await?;
    setup.backup("guarded", "guarded", "Delete").await?;
    let b = setup.finished("guarded").await?;
    assert_eq!(b.status.as_ref().and_then(|s| s.phase), Some(BackupPhase::Completed));

    let api: Api<Backup> = Api::namespaced(setup.client(), NS);
    api.delete("guarded", &DeleteParams::default()).await?;
    let stuck =
        wait_for("the preDelete failure to be reported", Duration::from_secs(60), || async {
            let b = api.get("guarded").await?;
            let reason =
                b.status.as_ref().and_then(|s| s.failure_reason.clone()).unwrap_or_default();
            Ok(reason.contains("cannot reach storage for guarded").then_some(b))
        })
        .await?;
    let st = stuck.status.clone().context("status")?;
    assert_eq!(st.phase, Some(BackupPhase::Deleting));
    let reason = st.failure_reason.unwrap_or_default();
    assert!(
        reason.contains("preDelete for pod pg-0 failed") && reason.contains("to retry"),
        "{reason}"
    );
    assert!(setup.list("/default/pg/guarded").await?.contains("data.txt"), "nothing deleted yet");

    // The user gives up on deleting the data: Retain lets the Backup go and keeps the data.
    let patch = json!({"spec": {"deletionPolicy": "Retain"}});
    api.patch("guarded", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    setup.gone("guarded").await?;
    assert!(setup.list("/default/pg/guarded").await?.contains("data.txt"));
    let jobs: Api<Job> = Api::namespaced(setup.client(), NS);
    wait_for("the backup's Jobs to be removed", Duration::from_secs(30), || async {
        let left = jobs.list(&ListParams::default()).await?.items;
        Ok(left.iter().all(|j| !j.name_any().contains("guarded")).then_some(()))
    })
    .await?;
    Ok(())
}

/// A claim of `size` in the test namespace.
fn claim_manifest(name: &str, size: &str) -> Value {
    json!({"metadata": {"name": name},
           "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}})
}

/// A Restore of `backup` into claims `restored-<volume>`, each from the backed-up `<volume>`.
fn snapshot_restore(name: &str, backup: &str, volumes: &[&str]) -> Value {
    let claims: Vec<Value> = volumes
        .iter()
        .map(|v| {
            json!({"metadata": {"name": format!("{name}-{v}")},
                   "volumeClaimSpec": claim_manifest("", "1Gi")["spec"],
                   "volumeSource": v, "mountPath": format!("/{v}")})
        })
        .collect();
    json!({
        "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Restore",
        "metadata": {"name": name},
        "spec": {"backup": {"name": backup, "namespace": NS},
                 "prepareDataConfig": {"volumeClaims": claims}}
    })
}

/// Waits until restore `name` is Completed or Failed.
async fn restore_finished(client: &Client, name: &str) -> Result<Restore> {
    let api: Api<Restore> = Api::namespaced(client.clone(), NS);
    wait_for(&format!("restore {name} to finish"), Duration::from_secs(120), || async {
        let r = api.get(name).await?;
        let phase = r.status.as_ref().and_then(|s| s.phase);
        Ok(matches!(phase, Some(RestorePhase::Completed | RestorePhase::Failed)).then_some(r))
    })
    .await
}

/// Logical bytes of the regular files under `dir` (what a snapshot's restoreSize counts).
fn file_bytes(dir: &Path) -> Result<u128> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            total += file_bytes(&path)?;
        } else if meta.is_file() {
            total += u128::from(meta.len());
        }
    }
    Ok(total)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_snapshot_method_backs_up_claims_and_restores_them_byte_identical() -> Result<()> {
    let setup = Setup::start().await?;
    let client = setup.client();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    common::create(&claims, claim_manifest("db-data", "1Gi")).await?;
    common::create(&claims, claim_manifest("db-log", "1Gi")).await?;
    for name in ["db-data", "db-log"] {
        wait_for(&format!("claim {name} bound"), Duration::from_secs(60), || async {
            let phase = claims.get(name).await?.status.and_then(|s| s.phase);
            Ok((phase.as_deref() == Some("Bound")).then_some(()))
        })
        .await?;
    }
    let data = common::claim_dir(&client, NS, "db-data").await?;
    let log = common::claim_dir(&client, NS, "db-log").await?;
    // Many small files, a large one, a symlink and a sparse file; a WAL-like volume beside it.
    for d in 0..5 {
        let dir = data.join(format!("base/{d}"));
        std::fs::create_dir_all(&dir)?;
        for f in 0..40 {
            std::fs::write(
                dir.join(format!("{f}")),
                tree::random_bytes(d * 100 + f, 300 * f as usize),
            )?;
        }
    }
    std::fs::write(data.join("large"), tree::random_bytes(7, 6 << 20))?;
    std::os::unix::fs::symlink("large", data.join("link"))?;
    let sparse = std::fs::File::create(data.join("sparse"))?;
    sparse.set_len(64 << 20)?;
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"middle", 32 << 20)?;
    std::fs::write(log.join("000000010000000000000001"), tree::random_bytes(9, 1 << 20))?;
    let data_at_backup = tree::describe(&data);
    let bytes = file_bytes(&data)? + file_bytes(&log)?;

    common::create(
        &Api::<Pod>::namespaced(client.clone(), NS),
        json!({"metadata": {"name": "db-0", "labels": {"app": "db"}},
               "spec": {"containers": [{"name": "db", "image": "postgres:16"}],
                        "volumes": [
                            {"name": "data", "persistentVolumeClaim": {"claimName": "db-data"}},
                            {"name": "log", "persistentVolumeClaim": {"claimName": "db-log"}},
                            {"name": "scratch", "emptyDir": {}}]}}),
    )
    .await?;
    let target =
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "serviceAccountName": "default"});
    setup
        .policy(json!([
            {"name": "snap", "snapshotVolumes": true, "target": target,
             "targetVolumes": {"volumes": ["data", "log"]}},
            {"name": "wrong", "snapshotVolumes": true, "target": target,
             "targetVolumes": {"volumes": ["data", "wal"]}}
        ]))
        .await?;

    // The backup: one VolumeSnapshot per volume, recorded with the sum of their sizes.
    setup.backup("snap1", "snap", "Delete").await?;
    let b = setup.finished("snap1").await?;
    let st = b.status.clone().context("status")?;
    assert_eq!(st.phase, Some(BackupPhase::Completed), "{:?}", st.failure_reason);
    let actions = st.actions.clone().context("actions")?;
    assert_eq!(actions.len(), 1, "no ActionSet: only the snapshot action: {actions:?}");
    let action = &actions[0];
    assert_eq!(action.name, "createVolumeSnapshot-db-0");
    assert_eq!(
        (action.phase, action.action_type),
        (Some(ActionPhase::Completed), Some(ActionType::None))
    );
    let taken = action.volume_snapshots.clone().context("volumeSnapshots")?;
    let names: Vec<(&str, Option<&str>)> =
        taken.iter().map(|s| (s.name.as_str(), s.volume_name.as_deref())).collect();
    assert_eq!(names, [("snap1-data", Some("data")), ("snap1-log", Some("log"))]);
    assert!(taken.iter().all(|s| s.content_name.starts_with("snapcontent-") && s.size.is_some()));
    let total = st.total_size.clone().context("totalSize")?;
    assert_eq!(parse_bytes(&total)?, bytes, "totalSize {total} is the sum of the restoreSizes");
    assert_eq!(st.volume_snapshots.as_ref(), Some(&taken));
    assert_eq!(
        b.labels().get("dataprotection.kubeblocks.io/backup-type").map(String::as_str),
        Some("Full")
    );
    let snapshots: Api<VolumeSnapshot> = Api::namespaced(client.clone(), NS);
    for s in &taken {
        let vs = snapshots.get(&s.name).await?;
        assert_eq!(
            vs.labels().get("dataprotection.kubeblocks.io/backup-name").map(String::as_str),
            Some("snap1")
        );
        assert!(vs.owner_references().iter().any(|o| Some(&o.uid) == b.uid().as_ref()));
    }

    // Written after the backup: not in the restore.
    std::fs::write(data.join("large"), b"overwritten after the backup")?;
    std::fs::write(data.join("after"), b"new")?;

    create(
        Api::<Restore>::namespaced(client.clone(), NS),
        snapshot_restore("r1", "snap1", &["data", "log"]),
    )
    .await?;
    let r = restore_finished(&client, "r1").await?;
    let rst = r.status.clone().context("restore status")?;
    assert_eq!(rst.phase, Some(RestorePhase::Completed), "{rst:?}");
    let restored = claims.get("r1-data").await?;
    let source = restored.spec.and_then(|s| s.data_source).context("dataSource")?;
    assert_eq!((source.kind.as_str(), source.name.as_str()), ("VolumeSnapshot", "snap1-data"));
    let restored_data = common::claim_dir(&client, NS, "r1-data").await?;
    assert!(
        tree::describe(&restored_data) == data_at_backup,
        "the restored data volume is not the data at backup time"
    );
    tree::assert_same_tree(&log, &common::claim_dir(&client, NS, "r1-log").await?);

    // A volume the backup has no snapshot of fails the Restore, naming it.
    create(
        Api::<Restore>::namespaced(client.clone(), NS),
        snapshot_restore("r2", "snap1", &["wal"]),
    )
    .await?;
    let r = restore_finished(&client, "r2").await?;
    let rst = r.status.clone().context("restore status")?;
    assert_eq!(rst.phase, Some(RestorePhase::Failed));
    let message = rst
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "PrepareData")
        .map(|c| c.message)
        .unwrap_or_default();
    assert!(message.contains("no volume snapshot of volume wal of pod db-0"), "{message}");

    // A method naming a volume the pod does not have fails, before any snapshot is taken.
    setup.backup("wrong1", "wrong", "Delete").await?;
    let b = setup.finished("wrong1").await?;
    let reason = b.status.as_ref().and_then(|s| s.failure_reason.clone()).unwrap_or_default();
    assert_eq!(b.status.as_ref().and_then(|s| s.phase), Some(BackupPhase::Failed));
    assert!(
        reason.contains("target volume wal of backupMethod wrong is not a volume of pod db-0"),
        "{reason}"
    );
    assert!(snapshots.get_opt("wrong1-data").await?.is_none(), "no snapshot left behind");

    // Deleting the Backup deletes its VolumeSnapshots; the restored claims keep their data.
    let api: Api<Backup> = Api::namespaced(client.clone(), NS);
    for name in ["snap1", "wrong1"] {
        api.delete(name, &DeleteParams::default()).await?;
        setup.gone(name).await?;
    }
    wait_for("the backup's VolumeSnapshots to go", Duration::from_secs(60), || async {
        let left = snapshots.list(&ListParams::default()).await?.items;
        Ok(left.is_empty().then_some(()))
    })
    .await?;
    assert!(tree::describe(&restored_data) == data_at_backup);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_replaces_untouched_shipped_action_sets_and_keeps_edited_ones() -> Result<()> {
    use holdfast_controllers::shipped_action_sets::{
        self, SHIPPED_SOURCE, SHIPPED_SPEC, spec_hash,
    };
    const TIMEOUT: Duration = Duration::from_secs(60);
    let server = EmbeddedServer::start(Path::new(BIN)).await?;
    let api: Api<ActionSet> = Api::all(server.client.clone());
    let annotated = |name: &'static str| {
        let api = api.clone();
        move || {
            let api = api.clone();
            async move {
                let set = api.get_opt(name).await?;
                Ok(set.filter(|s| s.annotations().contains_key(SHIPPED_SPEC)))
            }
        }
    };
    let wal = wait_for("postgresql-wal installed", TIMEOUT, annotated("postgresql-wal")).await?;
    let dump =
        wait_for("postgresql-pgdump installed", TIMEOUT, annotated("postgresql-pgdump")).await?;
    assert_eq!(wal.annotations()[SHIPPED_SPEC], spec_hash(&wal)?);
    let current = wal.spec.clone();

    // An older release's postgresql-wal, untouched since: its worker had no expiry.
    let old_script = "exec holdfast pg wal-stream --spool /dp-manager/wal-spool";
    let set_script = |set: &mut ActionSet, script: &str| -> Result<()> {
        let backup = set.spec.backup.as_mut().context("backup")?;
        backup.backup_data.job.base.command[2] = script.to_string();
        Ok(())
    };
    let mut older = wal.clone();
    set_script(&mut older, old_script)?;
    let older = api.replace("postgresql-wal", &PostParams::default(), &older).await?;
    let hash = spec_hash(&older)?;
    let patch = json!({"metadata": {"annotations": {SHIPPED_SPEC: hash, SHIPPED_SOURCE: "older"}}});
    api.patch("postgresql-wal", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    // A shipped one the user edited after it was installed.
    let mut edited = dump.clone();
    set_script(&mut edited, "set -o pipefail; echo mine | datasafed push - /x")?;
    api.replace("postgresql-pgdump", &PostParams::default(), &edited).await?;

    let changed = shipped_action_sets::install(&server.client).await?;
    assert_eq!(changed, ["postgresql-wal"]);
    let now = api.get("postgresql-wal").await?;
    assert_eq!(now.spec, current, "the untouched one is this release's again");
    let script = &now.spec.backup.as_ref().context("backup")?.backup_data.job.base.command[2];
    assert!(script.contains("--expire-every"), "{script}");
    assert_eq!(now.annotations()[SHIPPED_SPEC], spec_hash(&now)?);
    let kept = api.get("postgresql-pgdump").await?;
    let script = &kept.spec.backup.as_ref().context("backup")?.backup_data.job.base.command[2];
    assert!(script.contains("echo mine"), "the user's edit was undone: {script}");
    // Nothing to do the next time.
    assert!(shipped_action_sets::install(&server.client).await?.is_empty());
    Ok(())
}
