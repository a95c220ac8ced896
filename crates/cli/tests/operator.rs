//! Cluster mode's leader election: two `holdfast operator` replicas against `holdfast server
//! --no-controllers` (the API server alone, standing in for a cluster's), authenticated as the
//! ServiceAccount of `deploy/rbac.yaml` with a token from `kubectl create token`, so the server's
//! RBAC holds them to the shipped Roles. Exactly one leads and runs the controllers; killed, it is
//! replaced within the lease duration; stopped with SIGTERM, it hands the lease over at once; and
//! no call they made was refused.

#[allow(dead_code)]
#[path = "common/operator.rs"]
mod operator;
#[path = "common/poll.rs"]
mod poll;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use holdfast_testkit::HoldfastServer;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::ListParams;

use operator::{NAMESPACE, Operator, holder};
use poll::poll;

const LEASE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread")]
async fn one_replica_leads_and_another_takes_over_when_it_dies_or_stops() -> Result<()> {
    let exe = Path::new(env!("CARGO_BIN_EXE_holdfast"));
    let dir = tempfile::tempdir()?;
    let server =
        HoldfastServer::start_with(exe, &dir.path().join("server"), &["--no-controllers"]).await?;
    let client = server.client().await?;
    // What the installation manifests create before the operator starts, and a token of its
    // ServiceAccount (the server already serves the CRDs).
    let kubeconfig = operator::install(&server.kubeconfig_path(), dir.path()).await?;
    let mut replicas = vec![
        Operator::start(exe, &kubeconfig, "replica-a", dir.path().join("a"), LEASE).await?,
        Operator::start(exe, &kubeconfig, "replica-b", dir.path().join("b"), LEASE).await?,
    ];
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);

    let first =
        poll(Duration::from_secs(30), "a leader", || async { holder(&leases).await }).await?;
    let (leader, follower) = if first == "replica-a" { (0, 1) } else { (1, 0) };
    // Only the leader runs the controllers: it installs the shipped ActionSets.
    let action_sets: Api<holdfast_api::kubeblocks::ActionSet> = Api::all(client.clone());
    poll(Duration::from_secs(60), "the shipped ActionSets", || async {
        Ok((!action_sets.list(&ListParams::default()).await?.items.is_empty()).then_some(()))
    })
    .await?;
    poll(Duration::from_secs(10), "the leader's metrics", || async {
        Ok(replicas[leader].leading().await?.then_some(()))
    })
    .await?;
    assert!(!replicas[follower].leading().await?, "the follower runs no controllers");
    for r in &replicas {
        assert!(r.get("/healthz").await?.0);
        assert!(r.get("/readyz").await?.0, "both replicas reach the API server");
    }

    // The leader dies: the follower takes over once the lease is a whole duration old.
    replicas[leader].child.start_kill()?;
    replicas[leader].child.wait().await?;
    let killed = Instant::now();
    let second = poll(Duration::from_secs(30), "a new leader", || async {
        Ok(holder(&leases).await?.filter(|h| *h != first))
    })
    .await?;
    let took = killed.elapsed();
    assert!(
        took <= LEASE + LEASE / 3 + Duration::from_secs(2),
        "took over after {took:?} with a lease of {LEASE:?}"
    );
    assert_eq!(second, if first == "replica-a" { "replica-b" } else { "replica-a" });
    poll(Duration::from_secs(10), "the new leader's metrics", || async {
        Ok(replicas[follower].leading().await?.then_some(()))
    })
    .await?;

    // Stopped with SIGTERM, a leader gives the lease up before it exits.
    let pid = replicas[follower].pid()?;
    let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    if !status.success() {
        bail!("kill -TERM {pid} failed");
    }
    let exit = tokio::time::timeout(Duration::from_secs(20), replicas[follower].child.wait())
        .await
        .context("the operator did not stop within 20 s of SIGTERM")??;
    assert!(exit.success(), "a clean stop: {exit}");
    assert_eq!(holder(&leases).await?, None, "the lease was released");

    // The shipped Roles allowed every call the replicas made.
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let metrics = client.request_text(request).await?;
    let refused: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{") && l.contains("code=\"403\""))
        .collect();
    assert!(refused.is_empty(), "calls outside deploy/rbac.yaml: {refused:#?}");
    assert!(
        metrics.lines().any(|l| l.starts_with("apiserver_request_total{")
            && l.contains("resource=\"leases\"")
            && l.contains("verb=\"PUT\"")),
        "the replicas' lease renewals are counted"
    );
    Ok(())
}
