//! StorageProvider, BackupRepo, ActionSet and BackupPolicy controllers against the real
//! in-process API server (SQLite store in a temporary directory), with real storage: local
//! directories, an S3 bucket on moto, and (Mount access) claims of the local-path provisioner
//! checked by Jobs of the embedded Job runner.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use holdfast_api::kubeblocks::backup_repo::BackupRepoPhase;
use holdfast_api::kubeblocks::{ActionSet, Backup, BackupPolicy, BackupRepo};
use holdfast_api::storage::StorageProvider;
use holdfast_apiserver::{ApiServer, Store};
use holdfast_controllers::backup_repo::mount::{backup_pvc_name, storage_class_name};
use holdfast_controllers::backup_repo::{
    self, DIGEST_ANNOTATION, repository_key_secret_name, repository_location,
    tool_config_secret_name,
};
use holdfast_controllers::kubeblocks_env::RepoAccess;
use holdfast_controllers::{
    Context, action_set, backup_policy, job_runner, provisioner, storage_provider,
};
use holdfast_testkit::moto::{self, Moto};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Secret};
use k8s_openapi::api::events::v1::Event as EventV1;
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const SYSTEM: &str = "holdfast-system";
const TIMEOUT: Duration = Duration::from_secs(60);

struct Fixture {
    dir: tempfile::TempDir,
    client: Client,
    ctx: Arc<Context>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _server: ApiServer,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The API server plus the four controllers under test.
async fn fixture() -> Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("store.db"))?;
    let server = ApiServer::new(store, holdfast_api::registry());
    let client = Client::new(server.router(), "default");
    let ctx = Arc::new(
        Context::new(client.clone(), dir.path().join("data"), "/nonexistent/holdfast")
            .with_system_namespace(SYSTEM),
    );
    let mut tasks = Vec::new();
    macro_rules! spawn {
        ($m:path) => {{
            let c = ctx.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = $m(c).await {
                    eprintln!("controller stopped: {e}");
                }
            }));
        }};
    }
    spawn!(storage_provider::run);
    spawn!(backup_repo::run);
    spawn!(action_set::run);
    spawn!(backup_policy::run);
    for ns in ["team-a", "team-b"] {
        create_namespace(&client, ns).await?;
    }
    Ok(Fixture { dir, client, ctx, tasks, _server: server })
}

async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Polls `f` until it yields a value, failing after [`TIMEOUT`] with `what` and the last state.
async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Result<T, String>>>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match f().await? {
            Ok(v) => return Ok(v),
            Err(last) if Instant::now() > deadline => {
                bail!("timed out waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn create<K>(api: Api<K>, obj: Value) -> Result<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let typed: K = serde_json::from_value(obj)?;
    Ok(api.create(&PostParams::default(), &typed).await?)
}

fn repo_json(name: &str, provider: &str, config: Value) -> Value {
    json!({
        "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "BackupRepo",
        "metadata": {"name": name},
        "spec": {"storageProviderRef": provider, "accessMethod": "Tool", "pvReclaimPolicy": "Retain", "config": config}
    })
}

/// Waits for the repo to reach `phase` and returns it.
async fn wait_phase(client: &Client, name: &str, phase: BackupRepoPhase) -> Result<BackupRepo> {
    let api: Api<BackupRepo> = Api::all(client.clone());
    wait_for(&format!("backuprepo {name} to be {phase:?}"), || {
        let api = api.clone();
        async move {
            let repo = api.get(name).await?;
            match repo.status.as_ref().and_then(|s| s.phase) {
                Some(p) if p == phase => Ok(Ok(repo)),
                _ => Ok(Err(format!("{:?}", repo.status))),
            }
        }
    })
    .await
}

/// `(type, status, reason, message)` of each condition, in order.
fn conditions(repo: &BackupRepo) -> Vec<(String, String, String, String)> {
    repo.status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_, c.status, c.reason, c.message))
        .collect()
}

async fn secret_text(client: &Client, ns: &str, name: &str, key: &str) -> Result<Option<String>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let Some(secret) = api.get_opt(name).await? else { return Ok(None) };
    let bytes = secret.data.and_then(|d| d.get(key).cloned()).context("key missing")?;
    Ok(Some(String::from_utf8(bytes.0)?))
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn local_repo_is_prechecked_creates_its_repository_and_follows_changes() -> Result<()> {
    let f = fixture().await?;
    let first = f.dir.path().join("backups-1");
    let mut obj = repo_json("local", "holdfast-local", json!({"path": path_str(&first)}));
    obj["metadata"]["annotations"] =
        json!({"dataprotection.kubeblocks.io/is-default-repo": "true"});
    create(Api::<BackupRepo>::all(f.client.clone()), obj).await?;

    let repo = wait_phase(&f.client, "local", BackupRepoPhase::Ready).await?;
    let conds = conditions(&repo);
    let types: Vec<&str> = conds.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(types, ["StorageProviderReady", "ParametersChecked", "PreCheckPassed"]);
    assert!(conds.iter().all(|c| c.1 == "True"), "{conds:?}");
    assert!(conds[2].3.contains("created the repository"), "{conds:?}");
    assert!(first.join("config").is_file(), "the repository exists on disk");
    assert!(first.join("keys").is_dir());
    let status = repo.status.clone().unwrap();
    assert_eq!(status.is_default, Some(true));
    assert_eq!(status.tool_config_secret_name.as_deref(), Some("tool-config-local"));
    let digest = repo.annotations().get(DIGEST_ANNOTATION).cloned().context("digest annotation")?;

    // The tool config: rendered template plus the password from the generated key Secret.
    let key = secret_text(&f.client, SYSTEM, &repository_key_secret_name("local"), "password")
        .await?
        .context("key secret")?;
    let conf = wait_for("the tool config in the system namespace", || async {
        Ok(secret_text(&f.client, SYSTEM, "tool-config-local", "datasafed.conf")
            .await?
            .ok_or_else(|| "absent".to_owned()))
    })
    .await?;
    assert_eq!(
        conf,
        format!(
            "[storage]\ntype = local\nroot = {}\n\n[holdfast]\npassword = {key}\n",
            path_str(&first)
        )
    );
    assert_eq!(repository_location(&conf)?, backup_repo::RepositoryLocation::Local(first.clone()));

    // On demand, for a Backup's namespace.
    let access = backup_repo::ensure_access(&f.ctx, &repo, "team-a").await?;
    assert_eq!(access.backup_pvc, None, "Tool access mounts no claim");
    let name = access.tool_config_secret;
    assert_eq!(name, tool_config_secret_name("local"));
    assert_eq!(
        secret_text(&f.client, "team-a", &name, "datasafed.conf").await?.as_deref(),
        Some(conf.as_str())
    );

    // A config change re-runs the pre-check: new digest, new repository, updated tool configs.
    let second = f.dir.path().join("backups-2");
    let api: Api<BackupRepo> = Api::all(f.client.clone());
    api.patch(
        "local",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"config": {"path": path_str(&second)}}})),
    )
    .await?;
    let repo = wait_for("a new digest and a Ready repo", || async {
        let repo = api.get("local").await?;
        let phase = repo.status.as_ref().and_then(|s| s.phase);
        if repo.annotations().get(DIGEST_ANNOTATION) != Some(&digest)
            && phase == Some(BackupRepoPhase::Ready)
        {
            Ok(Ok(repo))
        } else {
            Ok(Err(format!("{phase:?} {:?}", repo.annotations().get(DIGEST_ANNOTATION))))
        }
    })
    .await?;
    assert!(second.join("config").is_file(), "the pre-check ran against the new path");
    let want = format!("root = {}\n", path_str(&second));
    wait_for("the tool configs to follow the new path", || async {
        let sys = secret_text(&f.client, SYSTEM, "tool-config-local", "datasafed.conf")
            .await?
            .unwrap_or_default();
        let ensured = backup_repo::ensure_access(&f.ctx, &repo, "team-a").await?.tool_config_secret;
        let team =
            secret_text(&f.client, "team-a", &ensured, "datasafed.conf").await?.unwrap_or_default();
        if sys.contains(&want) && team.contains(&want) { Ok(Ok(())) } else { Ok(Err(sys)) }
    })
    .await?;
    // The key is created once and kept.
    assert_eq!(
        secret_text(&f.client, SYSTEM, &repository_key_secret_name("local"), "password").await?,
        Some(key)
    );

    // The default annotation is mirrored.
    api.patch(
        "local",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"dataprotection.kubeblocks.io/is-default-repo": "false"}}})),
    )
    .await?;
    wait_for("isDefault false", || async {
        let s = api.get("local").await?.status.unwrap_or_default();
        if s.is_default == Some(false) {
            Ok(Ok(()))
        } else {
            Ok(Err(format!("{:?}", s.is_default)))
        }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_name_their_cause_and_recover_when_fixed() -> Result<()> {
    let f = fixture().await?;

    // A missing credential Secret.
    let mut obj =
        repo_json("cred", "holdfast-local", json!({"path": path_str(&f.dir.path().join("cred"))}));
    obj["spec"]["credential"] = json!({"name": "repo-cred", "namespace": "team-a"});
    create(Api::<BackupRepo>::all(f.client.clone()), obj).await?;
    let repo = wait_phase(&f.client, "cred", BackupRepoPhase::Failed).await?;
    let conds = conditions(&repo);
    assert_eq!(conds[0].0, "StorageProviderReady");
    assert_eq!(
        conds[1],
        (
            "ParametersChecked".into(),
            "False".into(),
            "CredentialSecretNotFound".into(),
            "credential secret team-a/repo-cred not found".into()
        )
    );
    // Creating it re-checks the repo.
    create(
        Api::<Secret>::namespaced(f.client.clone(), "team-a"),
        json!({"metadata": {"name": "repo-cred"}, "data": {"token": "dA=="}}),
    )
    .await?;
    wait_phase(&f.client, "cred", BackupRepoPhase::Ready).await?;

    // An unwritable path: below a regular file (refused even to root).
    let file = f.dir.path().join("a-file");
    std::fs::write(&file, b"not a directory")?;
    create(
        Api::<BackupRepo>::all(f.client.clone()),
        repo_json("unwritable", "holdfast-local", json!({"path": path_str(&file.join("repo"))})),
    )
    .await?;
    let repo = wait_phase(&f.client, "unwritable", BackupRepoPhase::Failed).await?;
    let conds = conditions(&repo);
    assert_eq!(
        (conds[2].0.as_str(), conds[2].1.as_str(), conds[2].2.as_str()),
        ("PreCheckPassed", "False", "PreCheckFailed")
    );
    assert!(
        conds[2].3.contains("cannot open storage") && conds[2].3.contains("a-file"),
        "{conds:?}"
    );
    // The failure is also an Event on the repo (cluster-scoped: in "default").
    let events: Api<EventV1> = Api::namespaced(f.client.clone(), "default");
    let listed = events.list(&Default::default()).await?.items;
    let warning = listed
        .iter()
        .find(|e| {
            e.reason.as_deref() == Some("PreCheckFailed")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("unwritable")
        })
        .context("a PreCheckFailed event")?;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    // Fixing the path re-runs the pre-check.
    let api: Api<BackupRepo> = Api::all(f.client.clone());
    let good = f.dir.path().join("fixed");
    api.patch(
        "unwritable",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"config": {"path": path_str(&good)}}})),
    )
    .await?;
    wait_phase(&f.client, "unwritable", BackupRepoPhase::Ready).await?;
    assert!(good.join("config").is_file());

    // A required parameter missing.
    create(
        Api::<BackupRepo>::all(f.client.clone()),
        repo_json("noparam", "holdfast-local", json!({})),
    )
    .await?;
    let repo = wait_phase(&f.client, "noparam", BackupRepoPhase::Failed).await?;
    let conds = conditions(&repo);
    assert_eq!(conds[1].2, "InvalidParameters");
    assert_eq!(conds[1].3, "parameters.path: Required value");

    // A provider that does not exist, and Mount access to a provider without a CSI driver.
    create(Api::<BackupRepo>::all(f.client.clone()), repo_json("noprovider", "nope", json!({})))
        .await?;
    let repo = wait_phase(&f.client, "noprovider", BackupRepoPhase::Failed).await?;
    assert_eq!(conditions(&repo)[0].3, "storage provider nope not found");
    let mut mount = repo_json("mount", "holdfast-local", json!({"path": "/tmp/x"}));
    mount["spec"]["accessMethod"] = json!("Mount");
    create(Api::<BackupRepo>::all(f.client.clone()), mount).await?;
    let repo = wait_phase(&f.client, "mount", BackupRepoPhase::Failed).await?;
    let conds = conditions(&repo);
    assert_eq!(conds[0].2, "InvalidStorageProvider");
    assert!(conds[0].3.contains("cannot serve accessMethod Mount"), "{conds:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_repos_on_moto_with_builtin_and_upstream_providers() -> Result<()> {
    let moto = Moto::start()?;
    moto.create_bucket("backups")?;
    let f = fixture().await?;
    create(Api::<Secret>::namespaced(f.client.clone(), "team-a"),
        json!({"metadata": {"name": "s3-cred"}, "data": {
            "accessKeyId": base64(moto::ACCESS_KEY_ID), "secretAccessKey": base64(moto::SECRET_ACCESS_KEY)}}),
    )
    .await?;

    let mut obj = repo_json(
        "s3",
        "holdfast-s3",
        json!({"bucket": "backups", "endpoint": moto.endpoint(), "prefix": "/pg/"}),
    );
    obj["spec"]["credential"] = json!({"name": "s3-cred", "namespace": "team-a"});
    create(Api::<BackupRepo>::all(f.client.clone()), obj).await?;
    let repo = wait_phase(&f.client, "s3", BackupRepoPhase::Ready).await?;
    assert!(
        conditions(&repo)[2].3.contains("created the repository at s3://backups/pg"),
        "{:?}",
        conditions(&repo)
    );
    // The repository now exists there and opens with the repo's key.
    let conf = secret_text(&f.client, SYSTEM, "tool-config-s3", "datasafed.conf").await?;
    let conf = match conf {
        Some(c) => c,
        None => {
            wait_for("tool-config-s3", || async {
                Ok(secret_text(&f.client, SYSTEM, "tool-config-s3", "datasafed.conf")
                    .await?
                    .ok_or_else(|| "absent".to_owned()))
            })
            .await?
        }
    };
    let location = repository_location(&conf)?;
    let key = secret_text(&f.client, SYSTEM, &repository_key_secret_name("s3"), "password")
        .await?
        .context("key")?;
    let existing =
        tokio::task::spawn_blocking(move || backup_repo::precheck_repository(&location, &key))
            .await?;
    assert_eq!(existing, Ok(false), "the repository exists and opens with the generated key");

    // Upstream KubeBlocks' `minio` provider, applied as a user would: its CSI driver is absent,
    // so the provider is NotReady, yet Tool access renders its datasafed template.
    create(Api::<StorageProvider>::all(f.client.clone()), upstream_minio()).await?;
    let providers: Api<StorageProvider> = Api::all(f.client.clone());
    wait_for("minio provider NotReady", || async {
        let p = providers.get("minio").await?;
        let s = p.status.unwrap_or_default();
        match s.phase {
            Some(holdfast_api::storage::StorageProviderPhase::NotReady) => Ok(Ok(())),
            other => Ok(Err(format!("{other:?}"))),
        }
    })
    .await?;
    let mut obj =
        repo_json("minio", "minio", json!({"bucket": "backups", "endpoint": moto.endpoint()}));
    obj["spec"]["credential"] = json!({"name": "s3-cred", "namespace": "team-a"});
    create(Api::<BackupRepo>::all(f.client.clone()), obj).await?;
    wait_phase(&f.client, "minio", BackupRepoPhase::Ready).await?;
    // Installing its CSI driver makes the provider Ready.
    create(
        Api::<CSIDriver>::all(f.client.clone()),
        json!({"metadata": {"name": "ru.yandex.s3.csi"}, "spec": {}}),
    )
    .await?;
    wait_for("minio provider Ready with CSIDriverInstalled", || async {
        let p = providers.get("minio").await?;
        let s = p.status.unwrap_or_default();
        let installed = s
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "CSIDriverInstalled" && c.status == "True");
        if installed && s.phase == Some(holdfast_api::storage::StorageProviderPhase::Ready) {
            Ok(Ok(()))
        } else {
            Ok(Err(format!("{:?}", s.phase)))
        }
    })
    .await?;

    // Nobody listening at the endpoint.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut obj = repo_json(
        "unreachable",
        "holdfast-s3",
        json!({"bucket": "backups", "endpoint": format!("http://127.0.0.1:{dead}")}),
    );
    obj["spec"]["credential"] = json!({"name": "s3-cred", "namespace": "team-a"});
    create(Api::<BackupRepo>::all(f.client.clone()), obj).await?;
    let repo = wait_phase(&f.client, "unreachable", BackupRepoPhase::Failed).await?;
    let message = &conditions(&repo)[2].3;
    assert!(message.starts_with("pre-check of s3://backups at http://127.0.0.1:"), "{message}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn deletion_waits_for_backups_then_removes_tool_configs() -> Result<()> {
    let f = fixture().await?;
    create(
        Api::<BackupRepo>::all(f.client.clone()),
        repo_json("doomed", "holdfast-local", json!({"path": path_str(&f.dir.path().join("d"))})),
    )
    .await?;
    let repo = wait_phase(&f.client, "doomed", BackupRepoPhase::Ready).await?;
    backup_repo::ensure_access(&f.ctx, &repo, "team-b").await?;
    create(Api::<Backup>::namespaced(f.client.clone(), "team-b"),
        json!({"apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Backup",
               "metadata": {"name": "b1", "labels": {"dataprotection.kubeblocks.io/backup-repo-name": "doomed"}},
               "spec": {"backupPolicyName": "p", "backupMethod": "m"}}),
    )
    .await?;

    let api: Api<BackupRepo> = Api::all(f.client.clone());
    api.delete("doomed", &DeleteParams::default()).await?;
    let repo = wait_phase(&f.client, "doomed", BackupRepoPhase::Deleting).await?;
    let blocked = wait_for("HaveAssociatedBackups", || async {
        let repo = api.get("doomed").await?;
        match conditions(&repo).into_iter().find(|c| c.0 == "DerivedObjectsDeleted") {
            Some(c) if c.2 == "HaveAssociatedBackups" => Ok(Ok(c)),
            other => Ok(Err(format!("{other:?}"))),
        }
    })
    .await?;
    assert_eq!(blocked.1, "False");
    assert!(blocked.3.contains("team-b/b1"), "{blocked:?}");
    assert!(repo.metadata.deletion_timestamp.is_some());
    assert!(
        secret_text(&f.client, "team-b", "tool-config-doomed", "datasafed.conf").await?.is_some()
    );

    let backups: Api<Backup> = Api::namespaced(f.client.clone(), "team-b");
    backups.delete("b1", &DeleteParams::default()).await?;
    wait_for("the repo to be gone", || async {
        match api.get_opt("doomed").await? {
            None => Ok(Ok(())),
            Some(r) => Ok(Err(format!("{:?}", r.status.and_then(|s| s.phase)))),
        }
    })
    .await?;
    for ns in [SYSTEM, "team-b"] {
        assert_eq!(
            secret_text(&f.client, ns, "tool-config-doomed", "datasafed.conf").await?,
            None,
            "{ns}"
        );
    }
    // The key stays: data retained in storage must remain readable.
    assert!(
        secret_text(&f.client, SYSTEM, &repository_key_secret_name("doomed"), "password")
            .await?
            .is_some()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn action_sets_and_policies_report_availability() -> Result<()> {
    let f = fixture().await?;
    let providers: Api<StorageProvider> = Api::all(f.client.clone());
    wait_for("builtin providers Ready", || async {
        let mut phases = Vec::new();
        for name in ["holdfast-local", "holdfast-s3"] {
            phases
                .push(providers.get_opt(name).await?.and_then(|p| p.status).and_then(|s| s.phase));
        }
        if phases.iter().all(|p| *p == Some(holdfast_api::storage::StorageProviderPhase::Ready)) {
            Ok(Ok(()))
        } else {
            Ok(Err(format!("{phases:?}")))
        }
    })
    .await?;

    create(Api::<ActionSet>::all(f.client.clone()),
        json!({"apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "ActionSet", "metadata": {"name": "wal-restore-only"},
               "spec": {"backupType": "Continuous", "restore": {"prepareData": {"image": "i", "command": ["true"]}}}}),
    )
    .await?;
    let sets: Api<ActionSet> = Api::all(f.client.clone());
    let status = wait_for("actionset Unavailable", || async {
        let s = sets.get("wal-restore-only").await?.status.unwrap_or_default();
        if s.phase.is_some() { Ok(Ok(s)) } else { Ok(Err("no phase".into())) }
    })
    .await?;
    assert_eq!(status.phase, Some(holdfast_api::kubeblocks::Phase::Unavailable));
    assert_eq!(
        status.message.as_deref(),
        Some("backupType Continuous needs spec.backup.backupData: there is no backup action")
    );

    let policy = json!({"apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "BackupPolicy",
        "metadata": {"name": "pg"},
        "spec": {"backupRepoName": "later", "target": {"podSelector": {"matchLabels": {"app": "pg"}}, "serviceAccountName": "sa"},
                 "backupMethods": [{"name": "basebackup", "actionSetName": "pg-basebackup"},
                                   {"name": "snap", "snapshotVolumes": true}]}});
    create(Api::<BackupPolicy>::namespaced(f.client.clone(), "team-a"), policy).await?;
    let policies: Api<BackupPolicy> = Api::namespaced(f.client.clone(), "team-a");
    let policy_status = |want: holdfast_api::kubeblocks::Phase, contains: &'static str| {
        let policies = policies.clone();
        async move {
            wait_for(&format!("policy {want:?} with {contains:?}"), || async {
                let s = policies.get("pg").await?.status.unwrap_or_default();
                let msg = s.message.clone().unwrap_or_default();
                if s.phase == Some(want) && msg.contains(contains) {
                    Ok(Ok(msg))
                } else {
                    Ok(Err(format!("{:?} {msg}", s.phase)))
                }
            })
            .await
        }
    };
    let msg = policy_status(
        holdfast_api::kubeblocks::Phase::Unavailable,
        "actionset pg-basebackup not found",
    )
    .await?;
    assert!(msg.contains("backuprepo later not found"), "{msg}");

    // Creating what it names makes it Available (watches on ActionSets and BackupRepos).
    create(Api::<ActionSet>::all(f.client.clone()),
        json!({"apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "ActionSet", "metadata": {"name": "pg-basebackup"},
               "spec": {"backupType": "Full", "backup": {"backupData": {"image": "i", "command": ["sh", "-c", "true"]}}}}),
    )
    .await?;
    policy_status(holdfast_api::kubeblocks::Phase::Unavailable, "backuprepo later not found")
        .await?;
    create(
        Api::<BackupRepo>::all(f.client.clone()),
        repo_json("later", "holdfast-local", json!({"path": path_str(&f.dir.path().join("l"))})),
    )
    .await?;
    let msg =
        policy_status(holdfast_api::kubeblocks::Phase::Available, "snap takes volume snapshots")
            .await?;
    assert!(!msg.contains("not found"), "{msg}");
    assert_eq!(
        sets.get("pg-basebackup").await?.status.and_then(|s| s.phase),
        Some(holdfast_api::kubeblocks::Phase::Available)
    );
    Ok(())
}

/// [`fixture`] plus what Mount access needs: the local-path provisioner and the Job runner.
async fn mount_fixture() -> Result<Fixture> {
    let mut f = fixture().await?;
    macro_rules! spawn {
        ($m:path) => {{
            let c = f.ctx.clone();
            f.tasks.push(tokio::spawn(async move {
                if let Err(e) = $m(c).await {
                    eprintln!("controller stopped: {e}");
                }
            }));
        }};
    }
    spawn!(provisioner::run);
    spawn!(job_runner::run);
    Ok(f)
}

fn mount_repo_json(name: &str, provider: &str, config: Value) -> Value {
    let mut repo = repo_json(name, provider, config);
    repo["spec"]["accessMethod"] = json!("Mount");
    repo["spec"]["volumeCapacity"] = json!("1Gi");
    repo
}

/// The condition `type_` of the repo, once `pred` holds for it.
async fn wait_condition(
    client: &Client,
    name: &str,
    type_: &str,
    pred: impl Fn(&(String, String, String, String)) -> bool,
) -> Result<(String, String, String, String)> {
    let api: Api<BackupRepo> = Api::all(client.clone());
    wait_for(&format!("condition {type_} of backuprepo {name}"), || async {
        let repo = api.get(name).await?;
        match conditions(&repo).into_iter().find(|c| c.0 == type_) {
            Some(c) if pred(&c) => Ok(Ok(c)),
            other => Ok(Err(format!("{other:?}"))),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_repo_generates_its_class_prechecks_a_claim_and_gives_each_namespace_one()
-> Result<()> {
    let f = mount_fixture().await?;
    create(Api::<BackupRepo>::all(f.client.clone()), {
        let mut repo = mount_repo_json("vault", "holdfast-pvc", json!({}));
        repo["spec"]["pvReclaimPolicy"] = json!("Retain");
        repo
    })
    .await?;
    let repo = wait_phase(&f.client, "vault", BackupRepoPhase::Ready).await?;
    let conds = conditions(&repo);
    let kinds: Vec<(&str, &str, &str)> =
        conds.iter().map(|c| (c.0.as_str(), c.1.as_str(), c.2.as_str())).collect();
    assert_eq!(
        kinds,
        [
            ("StorageProviderReady", "True", "StorageProviderReady"),
            ("ParametersChecked", "True", "ParametersChecked"),
            ("StorageClassCreated", "True", "StorageClassCreated"),
            ("PVCTemplateChecked", "True", "Skipped"),
            ("PreCheckPassed", "True", "PreCheckPassed"),
        ],
        "{conds:?}"
    );
    let status = repo.status.clone().context("status")?;
    assert_eq!(status.generated_storage_class_name.as_deref(), Some("sc-vault"));
    assert_eq!(status.backup_pvc_name.as_deref(), Some("pvc-vault"));
    assert_eq!(status.tool_config_secret_name.as_deref(), Some("tool-config-vault"));

    // The generated class: the provider's template, the repo's reclaim policy, immediate binding.
    let class =
        Api::<StorageClass>::all(f.client.clone()).get(&storage_class_name("vault")).await?;
    assert_eq!(class.provisioner, provisioner::PROVISIONER);
    assert_eq!(class.reclaim_policy.as_deref(), Some("Retain"));
    assert_eq!(class.volume_binding_mode.as_deref(), Some("Immediate"));
    assert_eq!(
        class.labels().get(backup_repo::LABEL_BACKUP_REPO).map(String::as_str),
        Some("vault")
    );

    // The pre-check's Job and claim are removed once it passed.
    wait_for("the pre-check Job and claim to go", || async {
        let jobs =
            Api::<Job>::namespaced(f.client.clone(), SYSTEM).list(&Default::default()).await?;
        let claims = Api::<PersistentVolumeClaim>::namespaced(f.client.clone(), SYSTEM)
            .list(&Default::default())
            .await?;
        let left: Vec<String> =
            jobs.iter().map(|j| j.name_any()).chain(claims.iter().map(|c| c.name_any())).collect();
        if left.is_empty() { Ok(Ok(())) } else { Ok(Err(format!("{left:?}"))) }
    })
    .await?;

    // A namespace that uses the repo gets its claim (of the class, with the repo's capacity) and a
    // tool config that holds the key and names the claim's mount path.
    let access = backup_repo::ensure_access(&f.ctx, &repo, "team-a").await?;
    assert_eq!(
        access,
        RepoAccess {
            tool_config_secret: "tool-config-vault".into(),
            backup_pvc: Some(backup_pvc_name("vault"))
        }
    );
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(f.client.clone(), "team-a");
    let pvc = claims.get("pvc-vault").await?;
    let spec = pvc.spec.clone().context("claim spec")?;
    assert_eq!(spec.storage_class_name.as_deref(), Some("sc-vault"));
    assert_eq!(spec.access_modes, Some(vec!["ReadWriteMany".to_owned()]));
    let requested = spec.resources.and_then(|r| r.requests).and_then(|r| r.get("storage").cloned());
    assert_eq!(requested.map(|q| q.0).as_deref(), Some("1Gi"));
    let key = secret_text(&f.client, SYSTEM, &repository_key_secret_name("vault"), "password")
        .await?
        .context("key")?;
    assert_eq!(
        secret_text(&f.client, "team-a", "tool-config-vault", "datasafed.conf").await?,
        Some(format!(
            "[storage]\ntype = local\nroot = /backupdata\n\n[holdfast]\npassword = {key}\n"
        ))
    );
    let volume = wait_for("the repo's claim to be bound", || async {
        let pvc = claims.get("pvc-vault").await?;
        match pvc.spec.and_then(|s| s.volume_name) {
            Some(pv) => Ok(Ok(pv)),
            None => Ok(Err("unbound".into())),
        }
    })
    .await?;
    let volumes: Api<PersistentVolume> = Api::all(f.client.clone());
    let pv = volumes.get(&volume).await?.spec.context("pv spec")?;
    assert_eq!(pv.persistent_volume_reclaim_policy.as_deref(), Some("Retain"));
    let dir = std::path::PathBuf::from(pv.host_path.context("hostPath")?.path);
    std::fs::write(dir.join("kept"), b"data")?;

    // Deletion waits for the repo's backups, then deletes its claims, class and tool configs; the
    // volume is retained with its data.
    create(Api::<Backup>::namespaced(f.client.clone(), "team-a"),
        json!({"apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Backup",
               "metadata": {"name": "b1", "labels": {"dataprotection.kubeblocks.io/backup-repo-name": "vault"}},
               "spec": {"backupPolicyName": "p", "backupMethod": "m"}}),
    )
    .await?;
    let api: Api<BackupRepo> = Api::all(f.client.clone());
    api.delete("vault", &DeleteParams::default()).await?;
    wait_condition(&f.client, "vault", "DerivedObjectsDeleted", |c| c.2 == "HaveAssociatedBackups")
        .await?;
    assert!(claims.get_opt("pvc-vault").await?.is_some(), "a backup still needs the claim");
    Api::<Backup>::namespaced(f.client.clone(), "team-a")
        .delete("b1", &DeleteParams::default())
        .await?;
    wait_for("the repo to be gone", || async {
        match api.get_opt("vault").await? {
            None => Ok(Ok(())),
            Some(r) => Ok(Err(format!("{:?}", r.status))),
        }
    })
    .await?;
    assert!(claims.get_opt("pvc-vault").await?.is_none());
    assert!(Api::<StorageClass>::all(f.client.clone()).get_opt("sc-vault").await?.is_none());
    assert_eq!(
        secret_text(&f.client, "team-a", "tool-config-vault", "datasafed.conf").await?,
        None
    );
    wait_for("the retained volume to be Released", || async {
        let phase = volumes.get(&volume).await?.status.and_then(|s| s.phase);
        if phase.as_deref() == Some("Released") {
            Ok(Ok(()))
        } else {
            Ok(Err(format!("{phase:?}")))
        }
    })
    .await?;
    assert_eq!(std::fs::read(dir.join("kept"))?, b"data");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_repos_of_other_providers_render_their_templates_or_say_what_is_wrong() -> Result<()>
{
    let f = mount_fixture().await?;
    let providers: Api<StorageProvider> = Api::all(f.client.clone());
    // Upstream's `pvc` provider (no CSI driver, only a claim template), aimed at local-path.
    create(providers.clone(), json!({
        "apiVersion": "storage.kubeblocks.io/v1alpha1", "kind": "StorageProvider",
        "metadata": {"name": "pvc"},
        "spec": {
            "persistentVolumeClaimTemplate": "spec:\n  storageClassName: {{ .Parameters.storageClassName | default \"local-path\" }}\n  accessModes:\n    - {{ .Parameters.accessMode | default \"ReadWriteOnce\" }}\n  volumeMode: {{ .Parameters.volumeMode | default \"Filesystem\" }}\n",
            "parametersSchema": {"openAPIV3Schema": {"type": "object", "properties": {
                "storageClassName": {"type": "string"},
                "accessMode": {"type": "string", "default": "ReadWriteOnce", "enum": ["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"]},
                "volumeMode": {"type": "string", "default": "Filesystem", "enum": ["Filesystem", "Block"]}
            }}}
        }
    })).await?;
    create(Api::<BackupRepo>::all(f.client.clone()), mount_repo_json("plain", "pvc", json!({})))
        .await?;
    let repo = wait_phase(&f.client, "plain", BackupRepoPhase::Ready).await?;
    let conds = conditions(&repo);
    assert_eq!(
        conds[2].3,
        "the provider has neither csiDriverSecretTemplate nor storageClassTemplate"
    );
    assert_eq!(
        (conds[3].2.as_str(), conds[3].3.as_str()),
        ("PVCTemplateChecked", "the template renders a claim of StorageClass local-path")
    );
    assert_eq!(repo.status.as_ref().and_then(|s| s.generated_storage_class_name.clone()), None);

    // Upstream's `minio` provider: the CSI driver Secret and the class are generated from its
    // templates; nothing here provisions that class, so the pre-check says it waits for it.
    create(providers.clone(), upstream_minio()).await?;
    create(
        Api::<CSIDriver>::all(f.client.clone()),
        json!({"metadata": {"name": "ru.yandex.s3.csi"}, "spec": {}}),
    )
    .await?;
    create(Api::<Secret>::namespaced(f.client.clone(), "team-a"),
        json!({"metadata": {"name": "s3-cred"}, "data": {"accessKeyId": base64("AK"), "secretAccessKey": base64("SK")}}),
    )
    .await?;
    let mut obj =
        mount_repo_json("geese", "minio", json!({"bucket": "b", "endpoint": "http://minio:9000"}));
    obj["spec"]["credential"] = json!({"name": "s3-cred", "namespace": "team-a"});
    create(Api::<BackupRepo>::all(f.client.clone()), obj).await?;
    let waiting = wait_condition(&f.client, "geese", "PreCheckPassed", |c| {
        c.1 == "Unknown" && c.3.contains("to be bound")
    })
    .await?;
    assert!(waiting.3.contains("of StorageClass sc-geese"), "{waiting:?}");
    let class = Api::<StorageClass>::all(f.client.clone()).get("sc-geese").await?;
    assert_eq!(class.provisioner, "ru.yandex.s3.csi");
    let parameters = class.parameters.unwrap_or_default();
    assert_eq!(parameters.get("bucket").map(String::as_str), Some("b"));
    assert_eq!(
        parameters.get("csi.storage.k8s.io/provisioner-secret-name").map(String::as_str),
        Some("secret-geese")
    );
    assert_eq!(
        parameters.get("csi.storage.k8s.io/provisioner-secret-namespace").map(String::as_str),
        Some(SYSTEM)
    );
    assert_eq!(
        secret_text(&f.client, SYSTEM, "secret-geese", "accessKeyID").await?.as_deref(),
        Some("AK")
    );

    // A class template that renders no provisioner, a claim template that is not YAML.
    for (name, spec) in [
        ("broken", json!({"storageClassTemplate": "parameters:\n  a: b\n"})),
        ("bad-claim", json!({"persistentVolumeClaimTemplate": "spec: [unclosed\n"})),
    ] {
        let provider = json!({
            "apiVersion": "storage.kubeblocks.io/v1alpha1", "kind": "StorageProvider",
            "metadata": {"name": name}, "spec": spec
        });
        create(providers.clone(), provider).await?;
        create(Api::<BackupRepo>::all(f.client.clone()), mount_repo_json(name, name, json!({})))
            .await?;
    }
    let repo = wait_phase(&f.client, "broken", BackupRepoPhase::Failed).await?;
    let failed = conditions(&repo).pop().context("a condition")?;
    assert_eq!(
        (failed.0.as_str(), failed.2.as_str()),
        ("StorageClassCreated", "PrepareStorageClassFailed")
    );
    assert_eq!(
        failed.3,
        "broken/storageClassTemplate renders a StorageClass without a provisioner"
    );
    let repo = wait_phase(&f.client, "bad-claim", BackupRepoPhase::Failed).await?;
    let failed = conditions(&repo).pop().context("a condition")?;
    assert_eq!((failed.0.as_str(), failed.2.as_str()), ("PVCTemplateChecked", "BadPVCTemplate"));
    assert!(
        failed.3.starts_with("bad-claim/persistentVolumeClaimTemplate does not render to YAML"),
        "{failed:?}"
    );
    Ok(())
}

fn base64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `kubeblocks:deploy/helm/templates/storageprovider/minio.yaml` as the chart renders it (the
/// current API group), templates verbatim.
fn upstream_minio() -> Value {
    json!({
        "apiVersion": "storage.kubeblocks.io/v1alpha1", "kind": "StorageProvider",
        "metadata": {"name": "minio"},
        "spec": {
            "csiDriverName": "ru.yandex.s3.csi",
            "csiDriverSecretTemplate": "accessKeyID: {{ index .Parameters \"accessKeyId\" }}\nsecretAccessKey: {{ index .Parameters \"secretAccessKey\" }}\nendpoint: {{ index .Parameters \"endpoint\" }}\n",
            "storageClassTemplate": "provisioner: ru.yandex.s3.csi\nparameters:\n  mounter: geesefs\n  {{ $regionOption := \"\" }}\n  {{ if .Parameters.region }}\n    {{ $regionOption = (printf \"--region %s\" .Parameters.region) }}\n  {{ end }}\n  options: {{ printf \"--memory-limit %s --read-ahead-large %s --dir-mode 0777 --file-mode 0666 %s %s\" .Parameters.geesefsMemoryLimit .Parameters.geesefsReadAheadLarge .Parameters.mountOptions $regionOption }}\n  bucket: {{ index .Parameters \"bucket\" }}\n  csi.storage.k8s.io/provisioner-secret-name: {{ .CSIDriverSecretRef.Name }}\n  csi.storage.k8s.io/provisioner-secret-namespace: {{ .CSIDriverSecretRef.Namespace }}\n",
            "datasafedConfigTemplate": "[storage]\ntype = s3\nprovider = Minio\nenv_auth = false\naccess_key_id = {{ index .Parameters \"accessKeyId\" }}\nsecret_access_key = {{ index .Parameters \"secretAccessKey\" }}\nregion = {{ index .Parameters \"region\" }}\nendpoint = {{ index .Parameters \"endpoint\" }}\nroot = {{ index .Parameters \"bucket\" }}\nno_check_certificate = {{ index .Parameters \"insecure\" }}\nchunk_size = 50Mi\n",
            "parametersSchema": {
                "openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "region": {"type": "string"}, "bucket": {"type": "string"}, "endpoint": {"type": "string"},
                        "mountOptions": {"type": "string"},
                        "geesefsMemoryLimit": {"type": "integer", "default": 512},
                        "geesefsReadAheadLarge": {"type": "integer", "default": 20480},
                        "accessKeyId": {"type": "string"}, "secretAccessKey": {"type": "string"},
                        "insecure": {"type": "boolean", "default": false}
                    },
                    "required": ["bucket", "endpoint", "accessKeyId", "secretAccessKey"]
                },
                "credentialFields": ["accessKeyId", "secretAccessKey"]
            }
        }
    })
}
