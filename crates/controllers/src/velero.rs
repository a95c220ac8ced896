//! Velero's kinds, acted on: BackupStorageLocation (validated), BackupRepository (opened and
//! maintained), and the in-process node agent that moves pod-volume data (PodVolumeBackup,
//! PodVolumeRestore) with holdfast's repository engine. `kopia` and `restic` repositories and
//! uploaders are both served by that engine (docs/velero.md).

pub mod data_path;
pub mod pod_volume_backup;
pub mod pod_volume_restore;
pub mod repository;
pub mod storage_location;

use std::sync::Arc;

use crate::{Context, Error};

/// Volumes the node agent moves at once unless `HOLDFAST_NODE_AGENT_CONCURRENCY` says otherwise
/// (Velero's `loadConcurrency`, default 1 there; a local disk takes two without slowing either).
const DEFAULT_CONCURRENCY: usize = 2;

/// The node agent's concurrency: `HOLDFAST_NODE_AGENT_CONCURRENCY`, else the default.
pub fn configured_concurrency() -> usize {
    std::env::var("HOLDFAST_NODE_AGENT_CONCURRENCY")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_CONCURRENCY)
}

/// Runs the node agent serving `node`: PodVolumeBackup and PodVolumeRestore.
pub async fn run_node_agent(ctx: Arc<Context>, node: String) -> Result<(), Error> {
    let agent = data_path::Agent::new(ctx, node, configured_concurrency());
    tokio::select! {
        stopped = pod_volume_backup::run(agent.clone()) => stopped,
        stopped = pod_volume_restore::run(agent) => stopped,
    }
}
