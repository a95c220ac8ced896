//! Velero's kinds, acted on: BackupStorageLocation (validated), BackupRepository (opened and
//! maintained), and the in-process node agent that moves pod-volume data (PodVolumeBackup,
//! PodVolumeRestore) and CSI snapshot data (DataUpload, DataDownload) with holdfast's
//! repository engine. `kopia` and `restic` repositories and
//! uploaders are both served by that engine (docs/velero.md).

pub mod data_download;
pub mod data_path;
pub mod data_upload;
pub mod load_concurrency;
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

/// Runs the node agent serving `node`: PodVolumeBackup, PodVolumeRestore, and in embedded mode
/// DataUpload and DataDownload, sharing one limit of `concurrency` moves at once (the caller
/// records it in the metrics before it serves them).
pub async fn run_node_agent(
    ctx: Arc<Context>,
    node: String,
    concurrency: usize,
) -> Result<(), Error> {
    let cluster = ctx.mode == crate::context::Mode::Cluster;
    let agent = data_path::Agent::new(ctx, node, concurrency);
    let _stop = agent.stop_on_drop();
    if cluster {
        // A DataUpload or DataDownload names no node: on a cluster it is served where a hosting
        // pod mounts its claim, which holdfast agent cannot make yet. Left alone, so Velero's own
        // node agent can take them, rather than claimed and failed by every node's agent.
        return tokio::select! {
            stopped = data_path::run::<pod_volume_backup::Backups>(agent.clone(), "pod-volume-backup") => stopped,
            stopped = data_path::run::<pod_volume_restore::Restores>(agent, "pod-volume-restore") => stopped,
        };
    }
    tokio::select! {
        stopped = data_path::run::<pod_volume_backup::Backups>(agent.clone(), "pod-volume-backup") => stopped,
        stopped = data_path::run::<pod_volume_restore::Restores>(agent.clone(), "pod-volume-restore") => stopped,
        stopped = data_path::run::<data_upload::Uploads>(agent.clone(), "data-upload") => stopped,
        stopped = data_path::run::<data_download::Downloads>(agent, "data-download") => stopped,
    }
}
