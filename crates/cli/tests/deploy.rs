//! The cluster install manifests, checked offline: `deploy/crds.yaml` is what `holdfast crds`
//! prints, `kubectl kustomize deploy/` renders, and every rendered object and every file of
//! `examples/` validates against its schema (Kubernetes' own for built-in kinds, the CRD's for
//! holdfast's) through `scripts/validate-manifests.py`, which is shown to catch bad manifests.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use holdfast_testkit::process::require_tool;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn holdfast(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_holdfast")).args(args).output().expect("run holdfast")
}

/// Runs the validator on `paths`; its exit success and its report.
fn validate(paths: &[&Path]) -> Result<(bool, String)> {
    let root = root();
    let out = Command::new("python3")
        .arg(root.join("scripts/validate-manifests.py"))
        .arg("--crds")
        .arg(root.join("deploy/crds.yaml"))
        .args(paths)
        .output()
        .context("run scripts/validate-manifests.py")?;
    let report =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), report))
}

fn require_tools() -> Result<()> {
    require_tool(
        "python3 with kubernetes-validate (scripts/install-deps.sh installs it)",
        Command::new("python3").args(["-c", "import kubernetes_validate, jsonschema, yaml"]),
    )?;
    require_tool("kubectl", Command::new("kubectl").args(["version", "--client"]))?;
    Ok(())
}

#[test]
fn the_crds_in_deploy_are_the_ones_the_binary_prints() -> Result<()> {
    let printed = holdfast(&["crds"]);
    ensure!(printed.status.success(), "holdfast crds failed");
    let shipped = std::fs::read(root().join("deploy/crds.yaml"))?;
    ensure!(
        printed.stdout == shipped,
        "deploy/crds.yaml is out of date: run `holdfast crds > deploy/crds.yaml`"
    );
    Ok(())
}

#[test]
fn deploy_renders_and_every_object_and_example_validates() -> Result<()> {
    require_tools()?;
    let dir = tempfile::tempdir()?;
    let rendered = Command::new("kubectl")
        .args(["kustomize"])
        .arg(root().join("deploy"))
        .output()
        .context("run kubectl kustomize")?;
    ensure!(
        rendered.status.success(),
        "kubectl kustomize deploy/: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let path = dir.path().join("rendered.yaml");
    std::fs::write(&path, &rendered.stdout)?;
    let (ok, report) = validate(&[&path])?;
    ensure!(ok, "deploy/ does not validate:\n{report}");
    let (ok, report) = validate(&[&root().join("examples")])?;
    ensure!(ok, "examples/ does not validate:\n{report}");

    // What the rendering holds: the operator as two replicas of `holdfast operator` in the
    // system namespace, with the Lease rights it needs and every CRD.
    let objects = yaml_objects(&path)?;
    let kinds = |kind: &'static str| objects.iter().filter(move |o| o["kind"] == kind);
    let deployment = kinds("Deployment").next().context("no Deployment")?;
    assert_eq!(deployment["metadata"]["namespace"], "holdfast-system");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"][0], "operator");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let role = kinds("Role")
        .find(|r| r["metadata"]["name"] == "holdfast-operator-leader")
        .context("no Role holdfast-operator-leader")?;
    assert_eq!(role["rules"][0]["resources"][0], "leases");
    let agent_role = kinds("Role")
        .find(|r| r["metadata"]["name"] == "holdfast-agent")
        .context("no Role holdfast-agent")?;
    assert_eq!(agent_role["rules"][0]["resources"][0], "configmaps");
    assert_eq!(kinds("CustomResourceDefinition").count(), holdfast_api::crds().len());
    Ok(())
}

/// The objects of a multi-document YAML file, as JSON (PyYAML, which the validator needs anyway).
fn yaml_objects(path: &Path) -> Result<Vec<Value>> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)",
        ])
        .arg(path)
        .output()
        .context("run python3 to read YAML")?;
    ensure!(out.status.success(), "python3: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[test]
fn the_validator_rejects_unknown_fields_bad_values_and_unknown_kinds() -> Result<()> {
    require_tools()?;
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: dataprotection.kubeblocks.io/v1alpha1\nkind: Backup\nmetadata: {name: b}\n\
         spec: {backupPolicyName: p, backupMethod: m, deletionPolicy: Sometimes, typo: 1}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n\
         spec: {replicas: two, selector: {}, template: {}}\n---\n\
         apiVersion: example.com/v1\nkind: Unknown\nmetadata: {name: u}\n",
    )?;
    let (ok, report) = validate(&[&bad])?;
    assert!(!ok, "{report}");
    for expected in ["deletionPolicy", "'typo' was unexpected", "spec.replicas", "no schema for"] {
        assert!(report.contains(expected), "{expected:?} missing from:\n{report}");
    }
    Ok(())
}

#[test]
fn the_operator_reports_an_unusable_kubeconfig_in_one_line() {
    // The Deployment's arguments parse; the failure is the kubeconfig, said once.
    let out = holdfast(&[
        "operator",
        "--health-listen",
        "127.0.0.1:0",
        "--data-dir",
        "/nonexistent",
        "--kubeconfig",
        "/nonexistent/kubeconfig",
        "--image",
        "registry.example/holdfast:test",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("holdfast operator: cannot read kubeconfig /nonexistent/kubeconfig"),
        "{err}"
    );
}

#[test]
fn the_agent_refuses_a_node_without_the_kubelet_directory_in_one_line() {
    // The DaemonSet's arguments parse; a missing mount of the kubelet's directory is said first.
    let out = holdfast(&[
        "agent",
        "--health-listen",
        "127.0.0.1:0",
        "--data-dir",
        "/nonexistent",
        "--node-name",
        "node-1",
        "--kubelet-dir",
        "/nonexistent/kubelet",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("holdfast agent: /nonexistent/kubelet/pods is not a directory"),
        "{err}"
    );
}
