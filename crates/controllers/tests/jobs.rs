//! The embedded Job runner and local-path provisioner against the real in-process API server
//! (SQLite store in a temporary directory), running real host processes.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use holdfast_apiserver::{ApiServer, Store};
use holdfast_controllers::{Context, job_runner, provisioner};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(30);

struct Fixture {
    dir: tempfile::TempDir,
    ctx: Arc<Context>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Mount points created on the host for this test, removed on drop.
    host_roots: Vec<PathBuf>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for root in &self.host_roots {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

impl Fixture {
    fn client(&self) -> Client {
        self.ctx.client.clone()
    }

    /// A fresh absolute path that does not exist on the host.
    fn host_root(&mut self) -> String {
        let root = PathBuf::from(format!("/hf-test-{}", uuid::Uuid::new_v4()));
        self.host_roots.push(root.clone());
        root.to_string_lossy().into_owned()
    }

    fn start_runner(&mut self) {
        let ctx = self.ctx.clone();
        self.tasks.push(tokio::spawn(async move {
            if let Err(e) = job_runner::run(ctx).await {
                eprintln!("job runner stopped: {e}");
            }
        }));
    }
}

async fn fixture() -> Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir)?;
    let store = Store::open(&dir.path().join("store.db"))?;
    let server =
        ApiServer::new(store, holdfast_api::registry()).with_pod_log_dir(data_dir.join("logs"));
    let client = Client::new(server.router(), "default");
    let ctx = Arc::new(Context::new(client, data_dir, PathBuf::from("/bin/echo")));
    let mut f = Fixture { dir, ctx: ctx.clone(), tasks: Vec::new(), host_roots: Vec::new() };
    f.start_runner();
    f.tasks.push(tokio::spawn(async move {
        if let Err(e) = provisioner::run(ctx).await {
            eprintln!("provisioner stopped: {e}");
        }
    }));
    Ok(f)
}

/// Polls `check` until it yields a value or the timeout passes.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if start.elapsed() > TIMEOUT {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn job(name: &str, backoff_limit: i32, pod_spec: Value) -> Result<Job> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {"metadata": {"labels": {"app": "t"}}, "spec": pod_spec},
        },
    }))?)
}

fn condition(job: &Job, type_: &str) -> Option<(Option<String>, Option<String>)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| (c.reason.clone(), c.message.clone()))
}

/// Waits until the Job has a Complete or Failed condition; returns it.
async fn finished(client: &Client, name: &str) -> Result<Job> {
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    eventually(&format!("job {name} to finish"), || async {
        let j = jobs.get(name).await?;
        Ok((condition(&j, "Complete").is_some() || condition(&j, "Failed").is_some()).then_some(j))
    })
    .await
}

async fn pods_of(client: &Client, job: &str) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    Ok(pods.list(&ListParams::default().labels(&format!("job-name={job}"))).await?.items)
}

fn terminated_message(pod: &Pod, container: &str) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)?
        .state
        .as_ref()?
        .terminated
        .as_ref()?
        .message
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_with_its_pod_succeeded_and_logs_kept() -> Result<()> {
    let mut f = fixture().await?;
    let root = f.host_root();
    let out = f.dir.path().join("out");
    std::fs::create_dir_all(&out)?;
    let jobs: Api<Job> = Api::default_namespaced(f.client());
    let spec = json!({
        "restartPolicy": "Never",
        "containers": [{
            "name": "main", "image": "ignored",
            "command": ["sh", "-c", format!("echo hi; echo done > {root}/out/msg")],
            "volumeMounts": [{"name": "out", "mountPath": format!("{root}/out")}],
        }],
        "volumes": [{"name": "out", "hostPath": {"path": out.to_string_lossy()}}],
    });
    jobs.create(&PostParams::default(), &job("hello", 0, spec)?).await?;
    let done = finished(&f.client(), "hello").await?;
    assert!(condition(&done, "Complete").is_some(), "{:?}", done.status);
    let status = done.status.clone().context("status")?;
    assert_eq!(status.succeeded, Some(1));
    assert_eq!(status.active, None);
    assert!(status.start_time.is_some() && status.completion_time.is_some());

    let pods = pods_of(&f.client(), "hello").await?;
    assert_eq!(pods.len(), 1);
    let pod = &pods[0];
    assert_eq!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded"));
    assert_eq!(pod.labels().get("controller-uid"), done.uid().as_ref());
    assert_eq!(pod.labels().get("batch.kubernetes.io/job-name").map(String::as_str), Some("hello"));
    assert_eq!(pod.labels().get("app").map(String::as_str), Some("t"));
    assert_eq!(pod.owner_references()[0].uid, done.uid().unwrap());
    assert!(pod.name_any().starts_with("hello-") && pod.name_any().len() == "hello-".len() + 5);
    // Through the mount, into the host directory; and the mount point was made in a private
    // namespace only, so the host's copy of it is empty.
    assert_eq!(std::fs::read_to_string(out.join("msg"))?, "done\n");
    assert!(!Path::new(&format!("{root}/out/msg")).exists());

    // The log is where the API server serves `kubectl logs` from.
    let pods_api: Api<Pod> = Api::default_namespaced(f.client());
    let logs = pods_api
        .logs(
            &pod.name_any(),
            &LogParams { container: Some("main".into()), ..LogParams::default() },
        )
        .await?;
    assert_eq!(logs, "hi\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_comes_from_secrets_config_maps_and_fields_with_expansion() -> Result<()> {
    let f = fixture().await?;
    let jobs: Api<Job> = Api::default_namespaced(f.client());
    let spec = json!({
        "containers": [{
            "name": "main",
            "command": ["sh", "-c", "echo \"arg=$1 b=$B cm=$CM_colour pod=$POD path=$PATH\"", "sh", "$(A)"],
            "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CM_"}],
            "env": [
                {"name": "A", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "B", "value": "x-$(A)-$(MISSING)-$$(A)"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ],
        }],
    });
    // The Job comes first: its pod waits for the Secret, as the kubelet would.
    jobs.create(&PostParams::default(), &job("envy", 0, spec)?).await?;
    let waiting = eventually("the pod to wait for its Secret", || async {
        let pods = pods_of(&f.client(), "envy").await?;
        Ok(pods.into_iter().find_map(|p| {
            let w = p.status?.container_statuses?.first()?.state.clone()?.waiting?;
            (w.reason.as_deref() == Some("CreateContainerConfigError")).then_some(w.message)
        }))
    })
    .await?;
    let waiting = waiting.unwrap_or_default();
    // envFrom is resolved first, so the ConfigMap is the first thing found missing.
    assert!(waiting.contains("ConfigMap default/settings not found"), "{waiting}");

    let cms: Api<ConfigMap> = Api::default_namespaced(f.client());
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "settings"}, "data": {"colour": "blue"}}),
    )?;
    cms.create(&PostParams::default(), &cm).await?;
    let secrets: Api<Secret> = Api::default_namespaced(f.client());
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "creds"}, "stringData": {"password": "s3cr3t"}}),
    )?;
    secrets.create(&PostParams::default(), &secret).await?;

    let done = finished(&f.client(), "envy").await?;
    assert!(condition(&done, "Complete").is_some(), "{:?}", done.status);
    let pod = pods_of(&f.client(), "envy").await?.remove(0);
    let log_file = f.ctx.logs_dir().join("default").join(pod.name_any()).join("main.log");
    let log = std::fs::read_to_string(log_file)?;
    let expected = format!(
        "arg=s3cr3t b=x-s3cr3t-$(MISSING)-$(A) cm=blue pod={} path={}:",
        pod.name_any(),
        f.ctx.bin_dir().display()
    );
    assert!(log.starts_with(&expected), "{log}");
    // datasafed on PATH is this binary.
    assert_eq!(std::fs::read_link(f.ctx.bin_dir().join("datasafed"))?, f.ctx.holdfast_exe);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn termination_messages_come_from_files_in_an_empty_dir() -> Result<()> {
    let mut f = fixture().await?;
    let root = f.host_root();
    let jobs: Api<Job> = Api::default_namespaced(f.client());
    let spec = json!({
        "initContainers": [{
            "name": "prepare",
            "command": ["sh", "-c", format!("echo from-init > {root}/dp-manager/seed")],
            "volumeMounts": [{"name": "dp-manager", "mountPath": format!("{root}/dp-manager")}],
        }],
        "containers": [
            {
                "name": "backupdata",
                "command": ["sh", "-c", format!("echo '{{\"size\":\"42\"}}' $(cat {root}/dp-manager/seed) > {root}/dp-manager/backup.info")],
                "terminationMessagePath": format!("{root}/dp-manager/backup.info"),
                "volumeMounts": [{"name": "dp-manager", "mountPath": format!("{root}/dp-manager")}],
            },
            {
                "name": "big",
                "command": ["sh", "-c", format!("head -c 5000 /dev/zero | tr '\\0' x > {root}/big/msg")],
                "terminationMessagePath": format!("{root}/big/msg"),
                "volumeMounts": [{"name": "scratch", "mountPath": format!("{root}/big")}],
            },
        ],
        "volumes": [{"name": "dp-manager", "emptyDir": {}}, {"name": "scratch", "emptyDir": {}}],
    });
    jobs.create(&PostParams::default(), &job("msg", 0, spec)?).await?;
    let done = finished(&f.client(), "msg").await?;
    assert!(condition(&done, "Complete").is_some(), "{:?}", done.status);
    let pod = pods_of(&f.client(), "msg").await?.remove(0);
    assert_eq!(
        terminated_message(&pod, "backupdata").as_deref(),
        Some("{\"size\":\"42\"} from-init\n")
    );
    assert_eq!(terminated_message(&pod, "big").map(|m| m.len()), Some(4096));
    let init = &pod.status.as_ref().unwrap().init_container_statuses.as_ref().unwrap()[0];
    assert_eq!(init.state.as_ref().unwrap().terminated.as_ref().unwrap().exit_code, 0);
    // The pod's scratch space (emptyDirs, Secret files) is gone once it finished.
    assert!(!f.ctx.jobs_dir().join("default").join(pod.name_any()).exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_retries_up_to_its_backoff_limit_and_reports_the_log_tail() -> Result<()> {
    let f = fixture().await?;
    let jobs: Api<Job> = Api::default_namespaced(f.client());
    let spec = json!({"containers": [{
        "name": "main",
        "command": ["sh", "-c", "for i in $(seq 1 30); do echo line-$i; done; echo boom >&2; exit 3"],
    }]});
    jobs.create(&PostParams::default(), &job("fails", 1, spec)?).await?;
    let done = finished(&f.client(), "fails").await?;
    let (reason, message) = condition(&done, "Failed").context("Failed condition")?;
    assert_eq!(reason.as_deref(), Some("BackoffLimitExceeded"));
    let message = message.unwrap_or_default();
    assert!(message.contains("line-30\nboom") && !message.contains("line-10\n"), "{message}");
    assert_eq!(done.status.as_ref().and_then(|s| s.failed), Some(2));

    let pods = pods_of(&f.client(), "fails").await?;
    assert_eq!(pods.len(), 2);
    for p in &pods {
        assert_eq!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Failed"));
        let t = p.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0]
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
    }

    let events: Api<Event> = Api::default_namespaced(f.client());
    // The event follows the status write: wait for it.
    let warning = eventually("a BackoffLimitExceeded event", || async {
        Ok(events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("BackoffLimitExceeded")))
    })
    .await?;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert_eq!(warning.regarding.as_ref().and_then(|r| r.name.as_deref()), Some("fails"));
    assert!(warning.note.unwrap_or_default().contains("line-29\nline-30\nboom"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioned_claim_is_mounted_and_reclaimed() -> Result<()> {
    let mut f = fixture().await?;
    let root = f.host_root();
    let classes: Api<StorageClass> = Api::all(f.client());
    let class = eventually("the local-path StorageClass", || async {
        Ok(classes.get_opt("local-path").await?)
    })
    .await?;
    assert_eq!(class.provisioner, "holdfast.io/local-path");
    assert_eq!(
        class.annotations().get("storageclass.kubernetes.io/is-default-class").map(String::as_str),
        Some("true")
    );

    let claims: Api<PersistentVolumeClaim> = Api::default_namespaced(f.client());
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))?;
    let pvc = claims.create(&PostParams::default(), &pvc).await?;
    let bound = eventually("the claim to bind", || async {
        let c = claims.get("data").await?;
        Ok((c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")).then_some(c))
    })
    .await?;
    let pv_name = format!("pvc-{}", pvc.uid().unwrap());
    assert_eq!(bound.spec.as_ref().and_then(|s| s.volume_name.as_deref()), Some(pv_name.as_str()));
    let volumes: Api<PersistentVolume> = Api::all(f.client());
    let pv = volumes.get(&pv_name).await?;
    assert_eq!(pv.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Bound"));
    let pv_dir = PathBuf::from(&pv.spec.as_ref().unwrap().host_path.as_ref().unwrap().path);
    assert!(pv_dir.starts_with(f.ctx.volumes_dir().join("default")), "{}", pv_dir.display());
    assert!(pv_dir.is_dir());

    let jobs: Api<Job> = Api::default_namespaced(f.client());
    let spec = json!({
        "containers": [{
            "name": "main",
            "command": ["sh", "-c", format!("echo written > {root}/data/file")],
            "volumeMounts": [{"name": "data", "mountPath": format!("{root}/data")}],
        }],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
    });
    jobs.create(&PostParams::default(), &job("writer", 0, spec)?).await?;
    let done = finished(&f.client(), "writer").await?;
    assert!(condition(&done, "Complete").is_some(), "{:?}", done.status);
    assert_eq!(std::fs::read_to_string(pv_dir.join("file"))?, "written\n");

    claims.delete("data", &DeleteParams::default()).await?;
    eventually("the volume and its directory to go", || async {
        Ok((volumes.get_opt(&pv_name).await?.is_none() && !pv_dir.exists()).then_some(()))
    })
    .await?;
    Ok(())
}

fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        // A zombie is dead already; only its exit status is left to collect.
        .is_ok_and(|s| !s.rsplit(')').next().unwrap_or_default().trim_start().starts_with('Z'))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_job_kills_its_processes_and_pods() -> Result<()> {
    let f = fixture().await?;
    let pid_file = f.dir.path().join("pid");
    let jobs: Api<Job> = Api::default_namespaced(f.client());
    // The sleep is a child of the shell: the whole process group must die.
    let spec = json!({"containers": [{
        "name": "main",
        "command": ["sh", "-c", format!("sleep 1000 & echo $! > {}.tmp; mv {0}.tmp {0}; wait", pid_file.display())],
    }]});
    jobs.create(&PostParams::default(), &job("sleeper", 0, spec)?).await?;
    let pid: u32 = eventually("the sleep to start", || async {
        Ok(std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse().ok()))
    })
    .await?;
    assert!(process_alive(pid));
    let pod = pods_of(&f.client(), "sleeper").await?.remove(0);
    assert_eq!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Running"));

    jobs.delete("sleeper", &DeleteParams::background()).await?;
    eventually("the sleep to be killed", || async { Ok((!process_alive(pid)).then_some(())) })
        .await?;
    eventually("the pod to be deleted", || async {
        Ok(pods_of(&f.client(), "sleeper").await?.is_empty().then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_running_across_a_restart_fails_with_node_restart_and_is_retried() -> Result<()> {
    let mut f = fixture().await?;
    let marker = f.dir.path().join("second-attempt");
    let jobs: Api<Job> = Api::default_namespaced(f.client());
    let script = format!(
        "if [ -e {0} ]; then echo retried; else touch {0}; exec sleep 1000; fi",
        marker.display()
    );
    let spec = json!({"containers": [{"name": "main", "command": ["sh", "-c", script]}]});
    jobs.create(&PostParams::default(), &job("survivor", 1, spec)?).await?;
    eventually("the first attempt to run", || async { Ok(marker.exists().then_some(())) }).await?;

    // A "restart": the runner goes away (its processes with it) and a new one starts.
    let runner = f.tasks.remove(0);
    runner.abort();
    let _ = runner.await;
    f.start_runner();

    let done = finished(&f.client(), "survivor").await?;
    assert!(condition(&done, "Complete").is_some(), "{:?}", done.status);
    let status = done.status.unwrap();
    assert_eq!((status.failed, status.succeeded), (Some(1), Some(1)));
    let pods = pods_of(&f.client(), "survivor").await?;
    let restarted = pods
        .iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
        .context("the failed first attempt")?;
    assert_eq!(restarted.status.as_ref().unwrap().reason.as_deref(), Some("NodeRestart"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_deadline_fails_and_its_process_is_killed() -> Result<()> {
    let f = fixture().await?;
    let pid_file = f.dir.path().join("pid");
    let jobs: Api<Job> = Api::default_namespaced(f.client());
    let mut j = job(
        "slow",
        3,
        json!({"containers": [{
            "name": "main",
            "command": ["sh", "-c", // `$$$$` is `$$` once Kubernetes-style `$(VAR)` expansion has unescaped it.
            format!("echo $$$$ > {}.tmp; mv {0}.tmp {0}; exec sleep 1000", pid_file.display())],
        }]}),
    )?;
    // Long enough for the process to start even on a loaded machine.
    j.spec.as_mut().unwrap().active_deadline_seconds = Some(3);
    jobs.create(&PostParams::default(), &j).await?;
    let pid: u32 = eventually("the sleep to start", || async {
        Ok(std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse().ok()))
    })
    .await?;
    let done = finished(&f.client(), "slow").await?;
    let (reason, _) = condition(&done, "Failed").context("Failed condition")?;
    assert_eq!(reason.as_deref(), Some("DeadlineExceeded"));
    eventually("the process to be killed", || async { Ok((!process_alive(pid)).then_some(())) })
        .await?;
    let pod = eventually("the pod to be marked failed", || async {
        let pods = pods_of(&f.client(), "slow").await?;
        Ok(pods
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")))
    })
    .await?;
    assert_eq!(pod.status.unwrap().reason.as_deref(), Some("DeadlineExceeded"));
    // No retry after the deadline, whatever the backoff limit.
    assert_eq!(pods_of(&f.client(), "slow").await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_job_selects_its_own_pods_keeps_its_logs_and_goes_after_its_ttl() -> Result<()> {
    let f = fixture().await?;
    let jobs: Api<Job> = Api::default_namespaced(f.client());
    let mut j =
        job("short", 0, json!({"containers": [{"name": "main", "command": ["echo", "done"]}]}))?;
    j.spec.as_mut().unwrap().ttl_seconds_after_finished = Some(3);
    jobs.create(&PostParams::default(), &j).await?;
    let done = finished(&f.client(), "short").await?;
    assert!(condition(&done, "Complete").is_some());
    // The selector and template labels the apiserver's Job strategy sets.
    let uid = done.uid().context("uid")?;
    let spec = done.spec.clone().context("spec")?;
    let selector = spec.selector.and_then(|s| s.match_labels).context("matchLabels")?;
    assert_eq!(selector.get("batch.kubernetes.io/controller-uid"), Some(&uid));
    let template_labels = spec.template.metadata.and_then(|m| m.labels).context("labels")?;
    for (key, value) in [
        ("controller-uid", &uid),
        ("batch.kubernetes.io/controller-uid", &uid),
        ("job-name", &"short".to_string()),
        ("batch.kubernetes.io/job-name", &"short".to_string()),
        ("app", &"t".to_string()),
    ] {
        assert_eq!(template_labels.get(key), Some(value), "{key}");
    }
    let pods: Api<Pod> = Api::default_namespaced(f.client());
    let selected = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/controller-uid={uid}")))
        .await?
        .items;
    assert_eq!(selected.len(), 1);
    let pod = selected[0].name_any();
    // Finished, its log stays readable until the TTL.
    let log = pods.logs(&pod, &LogParams::default()).await?;
    assert_eq!(log, "done\n");
    eventually("the Job to go after its TTL", || async {
        Ok(jobs.get_opt("short").await?.is_none().then_some(()))
    })
    .await?;
    eventually("its pod and log to go with it", || async {
        let gone = pods.get_opt(&pod).await?.is_none()
            && !f.ctx.logs_dir().join("default").join(&pod).exists();
        Ok(gone.then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn repeated_events_are_counted_on_one_event() -> Result<()> {
    use holdfast_controllers::events::{EventType, publish};
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    let f = fixture().await?;
    let cms: Api<ConfigMap> = Api::default_namespaced(f.client());
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("subject".into());
    let cm = cms.create(&PostParams::default(), &cm).await?;
    for _ in 0..3 {
        publish(&f.ctx, &cm, EventType::Warning, "Stuck", "Wait", "waiting for the repo").await;
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    publish(&f.ctx, &cm, EventType::Warning, "Stuck", "Wait", "waiting for the key").await;

    // Read as kubectl does: core v1, by involvedObject.
    let events: Api<CoreEvent> = Api::default_namespaced(f.client());
    let about =
        events.list(&ListParams::default().fields("involvedObject.name=subject")).await?.items;
    assert_eq!(about.len(), 2, "{about:?}");
    let repeated = about
        .iter()
        .find(|e| e.message.as_deref() == Some("waiting for the repo"))
        .context("the repeated event")?;
    assert_eq!(repeated.count, Some(3));
    let first = repeated.first_timestamp.clone().context("firstTimestamp")?;
    let last = repeated.last_timestamp.clone().context("lastTimestamp")?;
    assert!(last.0 > first.0, "{first:?} {last:?}");
    assert_eq!(
        repeated.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("holdfast.io/controllers")
    );
    let other = about.iter().find(|e| e.message.as_deref() == Some("waiting for the key"));
    assert_eq!(other.and_then(|e| e.count), Some(1));
    Ok(())
}

/// The kubelet's user handling: a container runs as its securityContext's `runAsUser` (overriding
/// the pod's) with the pod's `runAsGroup`, `supplementalGroups` and `fsGroup`; the claim and
/// emptyDir are given to `fsGroup` (group-writable, setgid) before it starts, so the unprivileged
/// process can write them; a `runAsNonRoot` container that would run as root never starts, and
/// the Job says why. Needs root (the tests run as root in CI); as anyone else the runner runs
/// every pod as the server's user, which the unit tests of `identity` cover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_run_as_their_security_context_and_volumes_take_the_fs_group() -> Result<()> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let (server_uid, _) = job_runner::identity::server_identity();
    anyhow::ensure!(server_uid == 0, "this test needs root to switch users (uid {server_uid})");
    let mut f = fixture().await?;
    let root = f.host_root();
    let claims: Api<PersistentVolumeClaim> = Api::default_namespaced(f.client());
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "owned"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))?;
    claims.create(&PostParams::default(), &pvc).await?;
    let jobs: Api<Job> = Api::default_namespaced(f.client());
    let spec = json!({
        "securityContext": {"runAsUser": 4000, "runAsGroup": 4100, "fsGroup": 4200,
                            "supplementalGroups": [4300]},
        "containers": [{
            "name": "main",
            "securityContext": {"runAsUser": 4001},
            "command": ["sh", "-c", format!(
                "id -u > {root}/data/uid; id -g > {root}/data/gid; id -G > {root}/data/groups; \
                 echo scratch > {root}/tmp/file && cat {root}/tmp/file > {root}/data/scratch; \
                 mkdir {root}/data/sub"
            )],
            "volumeMounts": [{"name": "data", "mountPath": format!("{root}/data")},
                             {"name": "tmp", "mountPath": format!("{root}/tmp")}],
        }],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "owned"}},
                    {"name": "tmp", "emptyDir": {}}],
    });
    jobs.create(&PostParams::default(), &job("as-user", 0, spec)?).await?;
    let done = finished(&f.client(), "as-user").await?;
    let pods = pods_of(&f.client(), "as-user").await?;
    assert!(condition(&done, "Complete").is_some(), "{:?} {:?}", done.status, pods[0].status);

    let claim = claims.get("owned").await?;
    let pv_name = claim.spec.and_then(|s| s.volume_name).context("bound")?;
    let pv = Api::<PersistentVolume>::all(f.client()).get(&pv_name).await?;
    let dir = PathBuf::from(&pv.spec.context("spec")?.host_path.context("hostPath")?.path);
    let read = |name: &str| -> Result<String> {
        Ok(std::fs::read_to_string(dir.join(name))?.trim().to_string())
    };
    assert_eq!(read("uid")?, "4001", "the container's runAsUser wins over the pod's");
    assert_eq!(read("gid")?, "4100");
    let groups = read("groups")?;
    let groups: Vec<&str> = groups.split(' ').collect();
    for g in ["4100", "4200", "4300"] {
        assert!(groups.contains(&g), "group {g} missing from {groups:?}");
    }
    assert_eq!(read("scratch")?, "scratch", "the emptyDir was writable for the user");
    let meta = std::fs::metadata(&dir)?;
    assert_eq!(meta.gid(), 4200, "the claim belongs to fsGroup");
    assert_eq!(meta.permissions().mode() & 0o2070, 0o2070, "group rwx and setgid");
    let file = std::fs::metadata(dir.join("uid"))?;
    assert_eq!((file.uid(), file.gid()), (4001, 4200), "new files inherit the fsGroup");

    let spec = json!({
        "containers": [{
            "name": "main", "command": ["true"],
            "securityContext": {"runAsNonRoot": true},
        }],
    });
    jobs.create(&PostParams::default(), &job("non-root", 0, spec)?).await?;
    let refused = finished(&f.client(), "non-root").await?;
    let (_, message) = condition(&refused, "Failed").context("the job failed")?;
    let message = message.unwrap_or_default();
    assert!(message.contains("container has runAsNonRoot and image will run as root"), "{message}");
    Ok(())
}
