//! The real kubectl against the server over HTTPS with the kubeconfig it would write: apply the
//! shipped examples, get (columns, -A, -o yaml, -o wide), describe, explain, patch, label, edit,
//! delete, wait, get -w, server-side dry run, field validation, and the auth errors kubectl
//! prints. `scripts/install-deps.sh` installs kubectl; without it these tests fail saying so.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use holdfast_testkit::HttpsApi;
use holdfast_testkit::kubeconfig::{kubectl, require_kubectl};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// The API server behind HTTPS and kubectl with its admin kubeconfig.
struct Cluster {
    api: HttpsApi,
    kubeconfig: PathBuf,
}

impl Cluster {
    async fn start() -> Result<Cluster> {
        let api = HttpsApi::start().await?;
        let kubeconfig = api.kubeconfig_path().to_path_buf();
        Ok(Cluster { api, kubeconfig })
    }

    fn command_with(&self, kubeconfig: &Path, args: &[&str]) -> Command {
        kubectl(kubeconfig, &self.api.dir().join("kubectl-cache"), args)
    }

    async fn run(&self, mut cmd: Command) -> Result<Output> {
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .context("kubectl did not finish in 60 s")??;
        Ok(Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    async fn kubectl(&self, args: &[&str]) -> Result<Output> {
        self.run(self.command_with(&self.kubeconfig, args)).await
    }

    /// Runs kubectl and fails with its stderr unless it succeeded.
    async fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.kubectl(args).await?;
        ensure!(out.ok, "kubectl {} failed:\n{}{}", args.join(" "), out.stdout, out.stderr);
        Ok(out.stdout)
    }

    /// A kubeconfig with another token.
    fn kubeconfig_with(&self, name: &str, token: &str) -> Result<PathBuf> {
        Ok(self.api.write_kubeconfig(name, token)?)
    }

    fn write(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.api.dir().join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

fn examples_dir() -> PathBuf {
    // The directory at run time (cargo sets it for tests): a binary cargo reuses from a clone at
    // another path, through a shared target directory, would carry that clone's path.
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("../../examples")
}

fn snapshot_yaml(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata:\n  name: {name}\n  namespace: default\n  labels:\n    app: demo\nspec:\n  volumeSnapshotClassName: gold\n  source:\n    persistentVolumeClaimName: data\n{extra_spec}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_examples_then_get_every_kind_with_its_columns() -> Result<()> {
    require_kubectl()?;
    let c = Cluster::start().await?;
    let examples = examples_dir();
    let examples = examples.to_str().context("utf-8 path")?;
    let applied = c.ok(&["apply", "-f", examples]).await?;
    ensure!(applied.contains(" created"), "{applied}");
    // Applying again changes nothing.
    let again = c.ok(&["apply", "-f", examples]).await?;
    ensure!(!again.contains(" created") && !again.contains(" configured"), "{again}");

    // Every kind the examples created is listed with its printer columns.
    let names = c.ok(&["get", "-f", examples, "-o", "name"]).await?;
    let defs = holdfast_api::registry();
    let mut checked = 0;
    for def in defs.iter().filter(|d| !d.group.is_empty()) {
        let resource = format!("{}.{}", def.plural, def.group);
        let prefix = format!("{}.{}/", def.kind.to_lowercase(), def.group);
        if !names.lines().any(|l| l.starts_with(&prefix)) {
            continue;
        }
        let table = c.ok(&["get", &resource, "-A"]).await?;
        let header = table.lines().next().unwrap_or_default();
        ensure!(
            header.starts_with(if def.namespaced { "NAMESPACE" } else { "NAME" }),
            "{resource}: {table}"
        );
        for col in def.printer_columns.iter().filter(|p| p.priority == 0) {
            let title = col.name.to_uppercase();
            ensure!(header.contains(&title), "{resource}: column {title} missing in {header:?}");
        }
        ensure!(table.lines().count() >= 2, "{resource}: no rows: {table}");
        checked += 1;
    }
    ensure!(checked >= 3, "only {checked} kinds had examples:\n{names}");

    // Short names, -o wide, -o yaml, describe, explain.
    let wide = c.ok(&["get", "vs", "-n", "demo", "-o", "wide"]).await?;
    ensure!(wide.contains("data-snapshot") && wide.contains("SOURCEPVC"), "{wide}");
    let yaml =
        c.ok(&["get", "volumesnapshot", "data-snapshot", "-n", "demo", "-o", "yaml"]).await?;
    for needle in [
        "apiVersion: snapshot.storage.k8s.io/v1",
        "kind: VolumeSnapshot",
        "persistentVolumeClaimName: data",
        "resourceVersion:",
        "uid:",
    ] {
        ensure!(yaml.contains(needle), "{needle} missing in\n{yaml}");
    }
    let described = c.ok(&["describe", "volumesnapshot", "data-snapshot", "-n", "demo"]).await?;
    ensure!(
        described.contains("data-snapshot") && described.contains("Persistent Volume Claim Name"),
        "{described}"
    );
    let explained = c.ok(&["explain", "volumesnapshot.spec"]).await?;
    ensure!(
        explained.contains("volumeSnapshotClassName") && explained.contains("source"),
        "{explained}"
    );
    let ns = c.ok(&["get", "ns"]).await?;
    ensure!(ns.contains("default") && ns.contains("demo") && ns.contains("velero"), "{ns}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_label_edit_wait_and_delete() -> Result<()> {
    require_kubectl()?;
    let c = Cluster::start().await?;
    let file = c.write("vs.yaml", &snapshot_yaml("snap", ""))?;
    let file = file.to_str().context("utf-8")?;
    c.ok(&["apply", "-f", file]).await?;

    let jsonpath = |expr: &str| format!("jsonpath={expr}");
    c.ok(&[
        "patch",
        "vs",
        "snap",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"annotations":{"note":"merged"}}}"#,
    ])
    .await?;
    c.ok(&[
        "patch",
        "vs",
        "snap",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/tier","value":"gold"}]"#,
    ])
    .await?;
    c.ok(&["label", "vs", "snap", "owner=ops"]).await?;
    let got = c
        .ok(&[
            "get",
            "vs",
            "snap",
            "-o",
            &jsonpath(
                "{.metadata.annotations.note} {.metadata.labels.tier} {.metadata.labels.owner}",
            ),
        ])
        .await?;
    assert_eq!(got, "merged gold ops");
    let selected = c.ok(&["get", "vs", "-l", "tier=gold,owner=ops", "-o", "name"]).await?;
    assert_eq!(selected.trim(), "volumesnapshot.snapshot.storage.k8s.io/snap");

    // kubectl edit with an editor that rewrites the label in the file.
    let editor =
        c.write("editor.sh", "#!/bin/sh\nsed -i 's/owner: ops/owner: edited/' \"$1\"\n")?;
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let mut edit = c.command_with(&c.kubeconfig, &["edit", "vs", "snap"]);
    edit.env("KUBE_EDITOR", &editor).env("EDITOR", &editor);
    let edited = c.run(edit).await?;
    ensure!(edited.ok, "kubectl edit failed: {}{}", edited.stdout, edited.stderr);
    let owner = c.ok(&["get", "vs", "snap", "-o", &jsonpath("{.metadata.labels.owner}")]).await?;
    assert_eq!(owner, "edited");

    // wait --for=jsonpath blocks until a later change makes the condition true.
    let mut wait = c.command_with(
        &c.kubeconfig,
        &["wait", "vs/snap", "--for=jsonpath={.metadata.annotations.done}=yes", "--timeout=60s"],
    );
    wait.stdout(Stdio::piped()).stderr(Stdio::piped());
    let waiting = wait.spawn()?;
    // The condition is false now; make it true.
    c.ok(&["annotate", "vs", "snap", "done=yes"]).await?;
    let waited = tokio::time::timeout(Duration::from_secs(60), waiting.wait_with_output())
        .await
        .context("kubectl wait did not return")??;
    ensure!(
        waited.status.success(),
        "kubectl wait failed: {}",
        String::from_utf8_lossy(&waited.stderr)
    );

    let deleted = c.ok(&["delete", "vs", "snap"]).await?;
    ensure!(deleted.contains("deleted"), "{deleted}");
    let gone = c.kubectl(&["get", "vs", "snap"]).await?;
    ensure!(!gone.ok, "get after delete succeeded");
    ensure!(
        gone.stderr.contains(r#"Error from server (NotFound): volumesnapshots.snapshot.storage.k8s.io "snap" not found"#),
        "{}",
        gone.stderr
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_prints_a_change_as_it_happens() -> Result<()> {
    require_kubectl()?;
    let c = Cluster::start().await?;
    let file = c.write("vs.yaml", &snapshot_yaml("watched", ""))?;
    c.ok(&["apply", "-f", file.to_str().context("utf-8")?]).await?;

    let mut watch = c.command_with(&c.kubeconfig, &["get", "vs", "-w", "--output-watch-events"]);
    watch.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = watch.spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut next_line = async || -> Result<String> {
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("no line from kubectl get -w")??
            .context("kubectl get -w ended")
    };
    // Header, then the existing object.
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("watched")) {
        seen.push(next_line().await?);
    }
    ensure!(seen.iter().any(|l| l.contains("ADDED")), "{seen:?}");

    let second = c.write("vs2.yaml", &snapshot_yaml("arrived", ""))?;
    c.ok(&["apply", "-f", second.to_str().context("utf-8")?]).await?;
    let line = next_line().await?;
    ensure!(line.contains("ADDED") && line.contains("arrived"), "{line}");

    c.ok(&["label", "vs", "watched", "x=y"]).await?;
    let line = next_line().await?;
    ensure!(line.contains("MODIFIED") && line.contains("watched"), "{line}");

    c.ok(&["delete", "vs", "arrived"]).await?;
    let line = next_line().await?;
    ensure!(line.contains("DELETED") && line.contains("arrived"), "{line}");
    child.kill().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_dry_run_changes_nothing_and_unknown_fields_follow_validate() -> Result<()> {
    require_kubectl()?;
    let c = Cluster::start().await?;
    let file = c.write("vs.yaml", &snapshot_yaml("dry", ""))?;
    c.ok(&["apply", "-f", file.to_str().context("utf-8")?]).await?;
    let rv_of = async |c: &Cluster| {
        c.ok(&[
            "get",
            "vs",
            "dry",
            "-o",
            "jsonpath={.metadata.resourceVersion} {.spec.volumeSnapshotClassName}",
        ])
        .await
    };
    let before = rv_of(&c).await?;

    let changed =
        c.write("vs-changed.yaml", &snapshot_yaml("dry", "").replace("gold", "silver"))?;
    let changed = changed.to_str().context("utf-8")?;
    let dry = c.ok(&["apply", "--dry-run=server", "-f", changed]).await?;
    ensure!(dry.contains("(server dry run)"), "{dry}");
    assert_eq!(rv_of(&c).await?, before, "a server dry run must not write");

    let unknown = c.write("vs-unknown.yaml", &snapshot_yaml("strict", "  bogusField: 1\n"))?;
    let unknown = unknown.to_str().context("utf-8")?;
    let strict = c.kubectl(&["apply", "--validate=strict", "-f", unknown]).await?;
    ensure!(!strict.ok, "strict validation accepted an unknown field: {}", strict.stdout);
    ensure!(
        strict.stderr.contains("unknown field") && strict.stderr.contains("bogusField"),
        "{}",
        strict.stderr
    );
    ensure!(!c.kubectl(&["get", "vs", "strict"]).await?.ok, "refused object was stored");

    let warn = c.kubectl(&["apply", "--validate=warn", "-f", unknown]).await?;
    ensure!(warn.ok, "warn validation failed: {}", warn.stderr);
    ensure!(
        warn.stderr.contains("Warning")
            && warn.stderr.contains("unknown field")
            && warn.stderr.contains("bogusField"),
        "{}",
        warn.stderr
    );
    // The unknown field was pruned (it survives only in kubectl's last-applied annotation).
    let stored = c.ok(&["get", "vs", "strict", "-o", "jsonpath={.spec}"]).await?;
    ensure!(stored.contains("persistentVolumeClaimName"), "{stored}");
    ensure!(!stored.contains("bogusField"), "{stored}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_token_must_log_in_and_viewer_writes_are_forbidden() -> Result<()> {
    require_kubectl()?;
    let c = Cluster::start().await?;
    let bad = c.kubeconfig_with("bad", "0000000000000000")?;
    let out = c.run(c.command_with(&bad, &["get", "vs"])).await?;
    ensure!(!out.ok);
    ensure!(out.stderr.contains("You must be logged in to the server"), "{}", out.stderr);

    let file = c.write("vs.yaml", &snapshot_yaml("guarded", ""))?;
    c.ok(&["apply", "-f", file.to_str().context("utf-8")?]).await?;
    let viewer = c.kubeconfig_with("viewer", c.api.tokens().view_token().context("view token")?)?;
    let read = c.run(c.command_with(&viewer, &["get", "vs", "guarded", "-o", "name"])).await?;
    ensure!(read.ok, "viewer cannot read: {}", read.stderr);
    let delete = c.run(c.command_with(&viewer, &["delete", "vs", "guarded"])).await?;
    ensure!(!delete.ok);
    ensure!(
        delete.stderr.contains(r#"Error from server (Forbidden): volumesnapshots.snapshot.storage.k8s.io "guarded" is forbidden: User "viewer" cannot delete resource "volumesnapshots" in API group "snapshot.storage.k8s.io" in the namespace "default""#),
        "{}",
        delete.stderr
    );
    ensure!(c.kubectl(&["get", "vs", "guarded"]).await?.ok, "the viewer's delete went through");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_a_job_pod_and_cascading_delete() -> Result<()> {
    require_kubectl()?;
    let c = Cluster::start().await?;
    let manifest = c.write(
        "job.yaml",
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: restore\n  namespace: default\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: main\n        image: busybox\n",
    )?;
    c.ok(&["apply", "-f", manifest.to_str().context("utf-8 path")?]).await?;
    let uid = c.ok(&["get", "job", "restore", "-o", "jsonpath={.metadata.uid}"]).await?;
    let pod = c.write(
        "pod.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: restore-x1\n  namespace: default\n  ownerReferences:\n  - apiVersion: batch/v1\n    kind: Job\n    name: restore\n    uid: {uid}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: busybox\n"
        ),
    )?;
    c.ok(&["apply", "-f", pod.to_str().context("utf-8 path")?]).await?;
    let log = c.api.dir().join("pod-logs/default/restore-x1/main.log");
    std::fs::create_dir_all(log.parent().context("parent")?)?;
    std::fs::write(&log, "line 1\nline 2\nline 3\n")?;

    ensure!(c.ok(&["logs", "restore-x1"]).await? == "line 1\nline 2\nline 3\n");
    ensure!(c.ok(&["logs", "restore-x1", "--tail=1"]).await? == "line 3\n");
    ensure!(c.ok(&["logs", "restore-x1", "-c", "main"]).await?.starts_with("line 1"));
    let missing = c.kubectl(&["logs", "restore-x1", "-c", "nope"]).await?;
    ensure!(!missing.ok && missing.stderr.contains("not valid for pod"), "{}", missing.stderr);

    // kubectl deletes with propagationPolicy=Background: the Job's Pod goes with it.
    c.ok(&["delete", "job", "restore"]).await?;
    let pods = c.ok(&["get", "pods", "-o", "name"]).await?;
    ensure!(pods.trim().is_empty(), "pods left: {pods}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imperative_create_commands_store_what_they_say() -> Result<()> {
    // kubectl sends these built-in kinds as protobuf and never retries in JSON.
    require_kubectl()?;
    let c = Cluster::start().await?;
    let stored = |resource: &str, ns: &str, name: &str| -> Result<serde_json::Value> {
        let key = holdfast_apiserver::store::Key {
            resource: resource.into(),
            namespace: ns.into(),
            name: name.into(),
        };
        let s = c.api.server().store().get(&key)?.with_context(|| format!("{key:?} not stored"))?;
        Ok(s.object)
    };
    let b64 = |s: &serde_json::Value| -> Result<Vec<u8>> {
        use base64::Engine as _;
        let text = s.as_str().with_context(|| format!("{s} is not a string"))?;
        Ok(base64::engine::general_purpose::STANDARD.decode(text)?)
    };

    c.ok(&["create", "namespace", "team-a"]).await?;
    let ns = stored("/namespaces", "", "team-a")?;
    assert_eq!(ns["metadata"]["labels"]["kubernetes.io/metadata.name"], "team-a");
    assert_eq!(ns["status"]["phase"], "Active");

    c.ok(&["create", "serviceaccount", "backup-runner", "-n", "team-a"]).await?;
    let sa = stored("/serviceaccounts", "team-a", "backup-runner")?;
    assert_eq!(sa["kind"], "ServiceAccount");
    assert!(sa["metadata"]["uid"].is_string(), "{sa}");

    let binary = c.write("blob.bin", "")?;
    std::fs::write(&binary, [0u8, 159, 146, 150])?;
    let from_file = format!("blob={}", binary.display());
    c.ok(&["create", "configmap", "settings", "-n", "team-a", "--from-literal=mode=fast"]).await?;
    c.ok(&["create", "configmap", "blobs", "-n", "team-a", "--from-file", &from_file]).await?;
    let settings = stored("/configmaps", "team-a", "settings")?;
    assert_eq!(settings["data"]["mode"], "fast");
    assert_eq!(settings["metadata"]["managedFields"][0]["manager"], "kubectl-create");
    let blobs = stored("/configmaps", "team-a", "blobs")?;
    assert_eq!(b64(&blobs["binaryData"]["blob"])?, [0u8, 159, 146, 150]);

    c.ok(&["create", "secret", "generic", "db", "-n", "team-a", "--from-literal=password=s3cr3t"])
        .await?;
    let db = stored("/secrets", "team-a", "db")?;
    assert_eq!(db["type"], "Opaque");
    assert_eq!(b64(&db["data"]["password"])?, b"s3cr3t");

    let pki = c.api.dir().join("pki");
    let (cert, key) = (pki.join("server.crt"), pki.join("server.key"));
    let (cert, key) = (cert.to_str().context("utf-8")?, key.to_str().context("utf-8")?);
    c.ok(&["create", "secret", "tls", "web", "-n", "team-a", "--cert", cert, "--key", key]).await?;
    let web = stored("/secrets", "team-a", "web")?;
    assert_eq!(web["type"], "kubernetes.io/tls");
    assert_eq!(b64(&web["data"]["tls.crt"])?, std::fs::read(cert)?);

    c.ok(&[
        "create",
        "secret",
        "docker-registry",
        "registry",
        "-n",
        "team-a",
        "--docker-server=registry.example",
        "--docker-username=robot",
        "--docker-password=hunter2",
    ])
    .await?;
    let registry = stored("/secrets", "team-a", "registry")?;
    assert_eq!(registry["type"], "kubernetes.io/dockerconfigjson");
    let config: serde_json::Value =
        serde_json::from_slice(&b64(&registry["data"][".dockerconfigjson"])?)?;
    assert_eq!(config["auths"]["registry.example"]["username"], "robot");

    c.ok(&["create", "job", "once", "-n", "team-a", "--image=busybox", "--", "echo", "hi"]).await?;
    let job = stored("batch/jobs", "team-a", "once")?;
    let pod_spec = &job["spec"]["template"]["spec"];
    assert_eq!(pod_spec["restartPolicy"], "Never");
    assert_eq!(pod_spec["containers"][0]["image"], "busybox");
    assert_eq!(pod_spec["containers"][0]["command"], serde_json::json!(["echo", "hi"]));

    // The same commands read back through kubectl, and a duplicate is the usual 409.
    let got = c.ok(&["get", "secret", "db", "-n", "team-a", "-o", "jsonpath={.type}"]).await?;
    assert_eq!(got, "Opaque");
    let again = c.kubectl(&["create", "namespace", "team-a"]).await?;
    ensure!(
        !again.ok
            && again.stderr.contains(r#"(AlreadyExists): namespaces "team-a" already exists"#),
        "{}",
        again.stderr
    );
    Ok(())
}

fn backup_yaml(name: &str, namespace: &str) -> String {
    format!(
        "apiVersion: dataprotection.kubeblocks.io/v1alpha1\nkind: Backup\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  backupPolicyName: pg-policy\n  backupMethod: pg-basebackup\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_view_token_reads_backups_but_no_secret_until_a_role_binding_grants_edit() -> Result<()>
{
    require_kubectl()?;
    let c = Cluster::start().await?;
    let setup = c.write(
        "setup.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: holdfast-system\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: repo-key\n  namespace: holdfast-system\nstringData:\n  password: correct-horse\n",
    )?;
    c.ok(&["apply", "-f", setup.to_str().context("utf-8")?]).await?;
    let backup = c.write("b1.yaml", &backup_yaml("b1", "team"))?;
    c.ok(&["apply", "-f", backup.to_str().context("utf-8")?]).await?;
    let viewer = c.kubeconfig_with("viewer", c.api.tokens().view_token().context("view token")?)?;
    let as_viewer = |args: &[&str]| c.run(c.command_with(&viewer, args));

    let list =
        as_viewer(&["get", "backups.dataprotection.kubeblocks.io", "-A", "-o", "name"]).await?;
    ensure!(
        list.ok && list.stdout.contains("backup.dataprotection.kubeblocks.io/b1"),
        "{}",
        list.stderr
    );
    let secret = as_viewer(&["get", "secret", "repo-key", "-n", "holdfast-system"]).await?;
    ensure!(!secret.ok);
    ensure!(
        secret.stderr.contains(r#"Error from server (Forbidden): secrets "repo-key" is forbidden: User "viewer" cannot get resource "secrets" in API group "" in the namespace "holdfast-system""#),
        "{}",
        secret.stderr
    );
    let can_i = as_viewer(&["auth", "can-i", "get", "secrets", "-n", "holdfast-system"]).await?;
    ensure!(!can_i.ok && can_i.stdout.trim() == "no", "{} {}", can_i.stdout, can_i.stderr);
    let can_list =
        as_viewer(&["auth", "can-i", "list", "backups.dataprotection.kubeblocks.io"]).await?;
    ensure!(
        can_list.ok && can_list.stdout.trim() == "yes",
        "{} {}",
        can_list.stdout,
        can_list.stderr
    );
    let whoami = as_viewer(&["auth", "whoami"]).await?;
    ensure!(whoami.ok, "{}", whoami.stderr);
    ensure!(
        whoami.stdout.lines().any(|l| l.split_whitespace().eq(["Username", "viewer"])),
        "{}",
        whoami.stdout
    );

    // kube-rs gets the same 403 Status.
    let client = c.api.viewer().await?;
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client, "holdfast-system");
    match secrets.get("repo-key").await {
        Err(kube::Error::Api(status)) => {
            ensure!(status.code == 403 && status.reason == "Forbidden", "{status:?}");
        }
        other => anyhow::bail!("the viewer read a Secret: {other:?}"),
    }

    // Before the binding the viewer cannot create a Backup; after it, in `team` only.
    let b2 = c.write("b2.yaml", &backup_yaml("b2", "team"))?;
    let b3 = c.write("b3.yaml", &backup_yaml("b3", "default"))?;
    let denied = as_viewer(&["create", "-f", b2.to_str().context("utf-8")?]).await?;
    ensure!(!denied.ok && denied.stderr.contains("Forbidden"), "{}", denied.stderr);
    let binding = c.write(
        "binding.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: viewer-edits-team\n  namespace: team\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: edit\nsubjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: viewer\n",
    )?;
    c.ok(&["apply", "-f", binding.to_str().context("utf-8")?]).await?;
    let created = as_viewer(&["create", "-f", b2.to_str().context("utf-8")?]).await?;
    ensure!(created.ok, "{}", created.stderr);
    let elsewhere = as_viewer(&["create", "-f", b3.to_str().context("utf-8")?]).await?;
    ensure!(!elsewhere.ok);
    ensure!(
        elsewhere.stderr.contains(r#"backups.dataprotection.kubeblocks.io is forbidden: User "viewer" cannot create resource "backups" in API group "dataprotection.kubeblocks.io" in the namespace "default""#),
        "{}",
        elsewhere.stderr
    );
    let can_team = as_viewer(&[
        "auth",
        "can-i",
        "create",
        "backups.dataprotection.kubeblocks.io",
        "-n",
        "team",
    ])
    .await?;
    ensure!(can_team.stdout.trim() == "yes", "{} {}", can_team.stdout, can_team.stderr);
    // Still no Secret outside the namespace the binding names.
    let secret = as_viewer(&["get", "secret", "repo-key", "-n", "holdfast-system"]).await?;
    ensure!(!secret.ok, "{}", secret.stdout);

    let bindings = c.ok(&["get", "rolebinding", "-n", "team"]).await?;
    ensure!(
        bindings.lines().nth(1).is_some_and(|l| l
            .split_whitespace()
            .take(2)
            .eq(["viewer-edits-team", "ClusterRole/edit"])),
        "{bindings}"
    );
    let roles = c.ok(&["get", "clusterroles", "-o", "name"]).await?;
    for role in ["cluster-admin", "admin", "edit", "view"] {
        ensure!(
            roles.lines().any(|l| l == format!("clusterrole.rbac.authorization.k8s.io/{role}")),
            "{roles}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_token_mints_a_service_account_token_rbac_applies_to() -> Result<()> {
    require_kubectl()?;
    let c = Cluster::start().await?;
    let setup = c.write(
        "sa.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: backup-operator\n  namespace: team\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: backup-operator\n  namespace: team\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: edit\nsubjects:\n- kind: ServiceAccount\n  name: backup-operator\n  namespace: team\n",
    )?;
    c.ok(&["apply", "-f", setup.to_str().context("utf-8")?]).await?;
    let token =
        c.ok(&["create", "token", "backup-operator", "-n", "team", "--duration=20m"]).await?;
    let token = token.trim();
    ensure!(token.split('.').count() == 3, "not a JWT: {token}");
    let too_short =
        c.kubectl(&["create", "token", "backup-operator", "-n", "team", "--duration=1m"]).await?;
    ensure!(
        !too_short.ok
            && too_short.stderr.contains("may not specify a duration less than 10 minutes"),
        "{}",
        too_short.stderr
    );
    let missing = c.kubectl(&["create", "token", "nobody", "-n", "team"]).await?;
    ensure!(
        !missing.ok && missing.stderr.contains(r#"serviceaccounts "nobody" not found"#),
        "{}",
        missing.stderr
    );

    let sa = c.kubeconfig_with("sa", token)?;
    let whoami = c
        .run(c.command_with(&sa, &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]))
        .await?;
    ensure!(
        whoami.stdout == "system:serviceaccount:team:backup-operator",
        "{} {}",
        whoami.stdout,
        whoami.stderr
    );
    let b1 = c.write("b1.yaml", &backup_yaml("b1", "team"))?;
    let created =
        c.run(c.command_with(&sa, &["create", "-f", b1.to_str().context("utf-8")?])).await?;
    ensure!(created.ok, "{}", created.stderr);
    let b2 = c.write("b2.yaml", &backup_yaml("b2", "default"))?;
    let denied =
        c.run(c.command_with(&sa, &["create", "-f", b2.to_str().context("utf-8")?])).await?;
    ensure!(!denied.ok && denied.stderr.contains("Forbidden"), "{}", denied.stderr);

    // Deleting the ServiceAccount revokes its tokens.
    c.ok(&["delete", "serviceaccount", "backup-operator", "-n", "team"]).await?;
    let revoked = c
        .run(c.command_with(&sa, &["get", "backups.dataprotection.kubeblocks.io", "-n", "team"]))
        .await?;
    ensure!(!revoked.ok && revoked.stderr.contains("You must be logged in"), "{}", revoked.stderr);
    Ok(())
}
