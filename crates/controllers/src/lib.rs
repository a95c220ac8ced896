//! The controllers of holdfast: one reconciler per kind, talking to whichever API server through
//! `kube::Client` (the embedded one in-process, or a real cluster's), plus the parts a cluster
//! normally provides that embedded mode plays itself: the Job runner (host processes in a private
//! mount namespace), the volume resolver, the local-path provisioner and its snapshot driver
//! (docs/architecture.md, docs/snapshots.md).
//!
//! [`run`] starts every controller on one shared [`Context`]; each controller module exposes
//! `pub async fn run(ctx: Arc<Context>) -> Result<(), Error>`, built on [`reconciler::run`],
//! which turns the [`ErrorKind`] of a failed reconcile into when to try again.

use std::sync::Arc;

pub mod action_set;
pub mod backup;
pub mod backup_method;
pub mod backup_policy;
pub mod backup_repo;
pub mod backup_schedule;
pub mod builtin_providers;
pub mod clock;
pub mod condition;
pub mod context;
pub mod error;
pub mod events;
pub mod executor;
pub mod finalizer;
pub mod job_runner;
pub mod kubeblocks_env;
pub mod lease;
pub mod metrics;
pub mod node;
pub mod object;
pub mod owner;
pub mod postgres_backup;
pub mod provisioner;
pub mod reconciler;
pub mod repository_access;
pub mod restore;
pub mod retention;
pub mod shipped_action_sets;
pub mod snapshot;
pub mod storage_provider;
pub mod target_pod;
pub mod velero;
pub mod volume;

pub use clock::{AdjustableClock, Clock, SystemClock};
pub use context::Context;
pub use error::{Error, ErrorKind};

/// Running controllers, each ending with its name and result.
type Tasks = tokio::task::JoinSet<(&'static str, Result<(), Error>)>;

/// Runs every controller until one of them fails. A failing controller ends the whole set (the
/// others are aborted), so the caller can restart it with a backoff: half a control plane must
/// not look healthy. A task that returns `Ok` (one-shot setup) just ends; the rest keep running.
pub async fn run(ctx: Arc<Context>) -> Result<(), Error> {
    let mut set = tokio::task::JoinSet::new();
    if ctx.mode == context::Mode::Embedded {
        spawn_node(&mut set, &ctx)?;
        let node_name = job_runner::pod::node_name();
        let concurrency = velero::configured_concurrency();
        ctx.metrics.set_node_agent_concurrency(&node_name, concurrency);
        spawn(&mut set, "node-agent", velero::run_node_agent(ctx.clone(), node_name, concurrency));
    }
    spawn(&mut set, "snapshot", snapshot::run(ctx.clone()));
    spawn(&mut set, "backup", backup::run(ctx.clone()));
    spawn(&mut set, "backup-schedule", backup_schedule::run(ctx.clone()));
    spawn(&mut set, "backup-retention", retention::run(ctx.clone()));
    spawn(&mut set, "shipped-actionsets", shipped_action_sets::run(ctx.clone()));
    spawn(&mut set, "restore", restore::run(ctx.clone()));
    spawn(&mut set, "postgres-backup", postgres_backup::run(ctx.clone()));
    spawn(&mut set, "storage-provider", storage_provider::run(ctx.clone()));
    spawn(&mut set, "backup-repo", backup_repo::run(ctx.clone()));
    spawn(&mut set, "action-set", action_set::run(ctx.clone()));
    spawn(&mut set, "backup-policy", backup_policy::run(ctx.clone()));
    spawn(&mut set, "backup-storage-location", velero::storage_location::run(ctx.clone()));
    spawn(&mut set, "backup-repository", velero::repository::run(ctx.clone()));
    join(set).await
}

/// Waits on `set` until a task fails (then aborts the rest) or every task has ended.
async fn join(mut set: Tasks) -> Result<(), Error> {
    let result = loop {
        match set.join_next().await {
            // A one-shot task (installing defaults) that is done: the others keep running.
            Some(Ok((name, Ok(())))) => tracing::debug!(controller = name, "finished"),
            Some(Ok((_, Err(error)))) => break Err(error),
            Some(Err(join)) => {
                break Err(Error::ControllerStopped {
                    name: "unknown".into(),
                    reason: format!("the task failed: {join}"),
                });
            }
            None => break Ok(()),
        }
    };
    set.abort_all();
    result
}

/// Runs what a cluster's kubelet, Job controller, volume provisioner and node registration do,
/// on this host, until one of them fails: the embedded server's node, and in tests the cluster
/// that `holdfast operator` drives.
pub async fn run_node(ctx: Arc<Context>) -> Result<(), Error> {
    let mut set = tokio::task::JoinSet::new();
    spawn_node(&mut set, &ctx)?;
    join(set).await
}

fn spawn_node(set: &mut Tasks, ctx: &Arc<Context>) -> Result<(), Error> {
    ctx.open_workload_dirs().map_err(Error::io(format!(
        "cannot prepare the workload directories of {}",
        ctx.data_dir.display()
    )))?;
    spawn(set, "job-runner", job_runner::run(ctx.clone()));
    spawn(set, "local-path-provisioner", provisioner::run(ctx.clone()));
    spawn(set, "node", node::run(ctx.clone(), job_runner::pod::node_name()));
    Ok(())
}

fn spawn(
    set: &mut Tasks,
    name: &'static str,
    controller: impl std::future::Future<Output = Result<(), Error>> + Send + 'static,
) {
    set.spawn(async move {
        let result = controller.await;
        if let Err(error) = &result {
            tracing::error!(controller = name, %error, "controller stopped");
        }
        (name, result)
    });
}
