//! Helpers of the tests that drive KubeBlocks' data-protection API against a real PostgreSQL:
//! waiting for an object's state, the job logs to show when one failed, and the objects that
//! describe a database to the controllers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use holdfast_api::kubeblocks::Restore;
use holdfast_api::kubeblocks::restore::RestorePhase;
use holdfast_testkit::{EmbeddedServer, Postgres};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::common::create;

const NS: &str = "default";
/// The BackupPolicy the tests create.
pub const POLICY: &str = "pg-cluster-postgresql-backup-policy";
/// How long a backup or restore may take on a loaded two-core machine.
const TIMEOUT: Duration = Duration::from_secs(600);

/// Polls `name` until `done` says it is finished (Ok) or broken (Err), with the last state in
/// the timeout error.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    done: impl Fn(&K) -> Option<Result<(), String>>,
) -> Result<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let obj = api.get(name).await.with_context(|| format!("get {name}"))?;
        match done(&obj) {
            Some(Ok(())) => return Ok(obj),
            Some(Err(why)) => {
                bail!("{what} {name}: {why}\n{}", serde_json::to_string_pretty(&obj)?)
            }
            None => {}
        }
        if Instant::now() > deadline {
            bail!("{what} {name}: timed out; last state:\n{}", serde_json::to_string_pretty(&obj)?);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Where a test's Jobs run: the embedded server, or the node of a cluster-mode test.
pub trait JobHost {
    /// A client of the API server the Jobs are created on.
    fn client(&self) -> &Client;
    /// Where their containers' logs are written.
    fn logs_dir(&self) -> PathBuf;
}

impl JobHost for EmbeddedServer {
    fn client(&self) -> &Client {
        &self.client
    }

    fn logs_dir(&self) -> PathBuf {
        self.ctx.logs_dir()
    }
}

/// The tail of every job log the host wrote: what to read when a Job failed.
pub fn job_logs(host: &impl JobHost) -> String {
    let mut out = String::new();
    let mut stack = vec![host.logs_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                out.push_str(&format!("--- {}\n{tail}\n", path.display()));
            }
        }
    }
    out
}

/// The database side: a connection Secret and a Pod object describing the running server.
///
/// The pod's volume `data` (mounted at `/home/postgres/pgdata`, as in KubeBlocks' PostgreSQL
/// pods) is the host directory `volume`; `env` is its container's env.
pub async fn describe_database(
    client: &Client,
    pg: &Postgres,
    cluster: &str,
    volume: &Path,
    env: Value,
) -> Result<()> {
    let mut data = BTreeMap::new();
    for (k, v) in [
        ("host", "127.0.0.1".to_string()),
        ("port", pg.port().to_string()),
        ("username", "postgres".to_string()),
        ("password", "unused-with-trust-auth".to_string()),
    ] {
        data.insert(k.to_string(), ByteString(v.into_bytes()));
    }
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{cluster}-conn-credential")),
            ..Default::default()
        },
        data: Some(data),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), NS).create(&PostParams::default(), &secret).await?;
    create(
        &Api::<Pod>::namespaced(client.clone(), NS),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{cluster}-postgresql-0"), "labels": {
                "app.kubernetes.io/instance": cluster,
                "apps.kubeblocks.io/component-name": "postgresql",
                "kubeblocks.io/role": "primary"}},
            "spec": {
                "containers": [{
                    "name": "postgresql", "image": "docker.io/apecloud/spilo:14.8.0",
                    "ports": [{"name": "tcp-postgresql", "containerPort": pg.port()}],
                    "env": env,
                    "volumeMounts": [{"name": "data", "mountPath": "/home/postgres/pgdata"}]
                }],
                "volumes": [{"name": "data", "hostPath": {"path": volume.display().to_string()}}]
            }
        }),
    )
    .await?;
    Ok(())
}

/// The BackupPolicy [`POLICY`] of the cluster `pg-cluster` into `repo`, with `methods`.
pub async fn create_policy(client: &Client, repo: &str, methods: serde_json::Value) -> Result<()> {
    create(
        &Api::<holdfast_api::kubeblocks::BackupPolicy>::namespaced(client.clone(), NS),
        json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": POLICY},
            "spec": {
                "backupRepoName": repo,
                "backoffLimit": 0,
                "target": {
                    "podSelector": {"matchLabels": {"app.kubernetes.io/instance": "pg-cluster"}},
                    "connectionCredential": {
                        "secretName": "pg-cluster-conn-credential",
                        "usernameKey": "username", "passwordKey": "password",
                        "hostKey": "host", "portKey": "port"
                    },
                    "serviceAccountName": "default"
                },
                "backupMethods": methods
            }
        }),
    )
    .await?;
    Ok(())
}

/// Creates the Restore `name` with `spec` and waits until it is Completed (an error with the
/// job logs when it fails).
pub async fn restored(host: &impl JobHost, name: &str, spec: Value) -> Result<Restore> {
    let restores: Api<Restore> = Api::namespaced(host.client().clone(), NS);
    create(
        &restores,
        json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Restore",
            "metadata": {"name": name},
            "spec": spec
        }),
    )
    .await?;
    wait_for(&restores, name, "restore", |r| match r.status.as_ref()?.phase? {
        RestorePhase::Completed => Some(Ok(())),
        RestorePhase::Failed => Some(Err(format!("Failed; job logs:\n{}", job_logs(host)))),
        _ => None,
    })
    .await
}

/// The pgbench tables.
const TABLES: [&str; 4] =
    ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"];

/// Per table, the row count and the sum of the rows' md5 (a multiset hash: no sort, no temp
/// files, and any changed, missing or extra row changes it).
pub fn checksums(pg: &Postgres) -> Result<BTreeMap<String, String>> {
    let mut sums = BTreeMap::new();
    for table in TABLES {
        let sql = format!(
            "SELECT count(*) || ':' || coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint), 0) FROM {table} t"
        );
        sums.insert(
            table.to_string(),
            pg.psql(&sql).with_context(|| format!("checksum of {table}"))?,
        );
    }
    Ok(sums)
}
