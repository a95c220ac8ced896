//! PodVolumeRestore: the node agent restores a snapshot from the repository of (source
//! namespace, location, uploader type) into one volume of a pod on its node, overwriting what is
//! there, as Velero's uploader does. The total is the snapshot's recorded size, so progress has
//! it before the first byte moves.
//!
//! On success the restored volume gets Velero's done marker, an empty file
//! `.velero/<restore UID>` (the UID of the work's first owner, else its
//! `velero.io/restore-uid` label), which a `restore-wait` init container waits for.

use std::path::{Path, PathBuf};

use holdfast_api::velero::pod_volume::PodVolumeRestore;
use holdfast_repository::progress::{CancelToken, ProgressFn};
use holdfast_repository::restore::{RestoreOptions, restore};
use holdfast_repository::snapshot::SnapshotEntry;
use holdfast_repository::{Error as RepoError, Repository};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use serde_json::{Value, json};

use super::data_path::{self, Agent, Claim, Mover};
use super::pod_volume_backup::pod_of;
use super::repository;
use crate::Error;
use crate::volume::VolumeResolver as _;

/// The label Velero puts the owning Restore's UID in.
pub const LABEL_RESTORE_UID: &str = "velero.io/restore-uid";
/// The directory of the done marker inside a restored volume.
pub const DONE_DIR: &str = ".velero";

/// The PodVolumeRestore [`Mover`].
pub struct Restores;

/// What a restore needs.
pub struct Plan {
    pub(crate) repo: Repository,
    pub(crate) snapshot: SnapshotEntry,
    pub(crate) dir: PathBuf,
    /// Whose done marker to write; none, none written.
    pub(crate) restore_uid: Option<String>,
    pub(crate) sparse: bool,
    pub(crate) threads: usize,
}

impl Mover for Restores {
    type Object = PodVolumeRestore;
    type Plan = Plan;
    const FINALIZER: &'static str = data_path::POD_VOLUME_FINALIZER;

    data_path::velero_fields!(PodVolumeRestore);

    async fn claim(agent: &Agent, obj: &PodVolumeRestore) -> Result<Claim, Error> {
        let own_ns = obj.namespace().unwrap_or_default();
        let pod = match pod_of(agent, &obj.spec.pod, &own_ns).await {
            Ok(pod) => pod,
            Err(Error::Invalid(why)) => return Ok(Claim::Nobody(why)),
            Err(other) => return Err(other),
        };
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let what = format!("pod {}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
        let claim = data_path::claim_for_node(agent, node.as_deref(), &what).await?;
        if matches!(claim, Claim::Ours)
            && agent.ctx.mode == crate::context::Mode::Cluster
            && !restore_wait_ready(&pod)
        {
            return Ok(Claim::NotYet);
        }
        Ok(claim)
    }

    fn accepted_fields(agent: &Agent) -> Value {
        json!({"node": agent.node})
    }

    async fn prepare(agent: &Agent, obj: &PodVolumeRestore) -> Result<Plan, Error> {
        let ctx = &agent.ctx;
        let own_ns = obj.namespace().unwrap_or_default();
        let pod = pod_of(agent, &obj.spec.pod, &own_ns).await?;
        let dir = crate::volume::for_context(ctx).pod_volume_dir(&pod, &obj.spec.volume).await?;
        let mut plan = Plan::open(
            agent,
            &own_ns,
            &obj.spec.backup_storage_location,
            &obj.spec.source_namespace,
            &obj.spec.snapshot_id,
            dir,
            obj.spec.uploader_settings.as_ref(),
        )
        .await?;
        plan.restore_uid = obj
            .owner_references()
            .first()
            .map(|o| o.uid.clone())
            .or_else(|| obj.labels().get(LABEL_RESTORE_UID).cloned())
            .filter(|u| !u.is_empty());
        Ok(plan)
    }

    fn total_bytes(plan: &Plan) -> Option<u64> {
        Some(plan.snapshot.snapshot.summary.total_bytes_processed)
    }

    fn run(
        plan: Plan,
        cancel: CancelToken,
        progress: ProgressFn,
    ) -> Result<(Value, String), RepoError> {
        let mut note = restore_volume(
            &plan.repo,
            &plan.snapshot,
            &plan.dir,
            plan.sparse,
            plan.threads,
            cancel,
            progress,
        )?;
        match &plan.restore_uid {
            Some(uid) => {
                write_done_marker(&plan.dir, uid)?;
                note.push_str(&format!("; done marker {DONE_DIR}/{uid} written"));
            }
            None => note.push_str("; no owning restore, so no done marker"),
        }
        Ok((json!({}), note))
    }
}

/// The init containers Velero's restore puts first in a pod whose volumes it restores
/// (`restore-wait`; `restic-wait` before Velero 1.10): they wait for the done marker.
const RESTORE_WAIT: [&str; 2] = ["restore-wait", "restic-wait"];

/// Whether a pod may have its volumes restored into now. Velero's node agent accepts a
/// restore only once the pod's `restore-wait` init container is running: the kubelet has then
/// mounted every volume, and the pod's own containers wait for the done marker. A pod without
/// one (a restore not made by Velero's pod action) is restored into once its volumes are
/// mounted, which the restore itself waits for.
fn restore_wait_ready(pod: &Pod) -> bool {
    let declared = pod.spec.as_ref().map(|s| s.init_containers.as_deref().unwrap_or_default());
    let Some(name) = declared
        .unwrap_or_default()
        .iter()
        .map(|c| c.name.as_str())
        .find(|n| RESTORE_WAIT.contains(n))
    else {
        return true;
    };
    pod.status
        .as_ref()
        .and_then(|s| s.init_container_statuses.as_ref())
        .and_then(|all| all.iter().find(|c| c.name == name))
        .and_then(|c| c.state.as_ref())
        .is_some_and(|state| state.running.is_some())
}

impl Plan {
    /// The restore of snapshot `id` of the repository of (`source_ns`, location `bsl` in
    /// `own_ns`) into `dir`, with the downloader `settings`; no done marker.
    ///
    /// # Errors
    /// [`Error::Invalid`] when a setting is wrong, the location unusable or the snapshot not
    /// there.
    pub(crate) async fn open(
        agent: &Agent,
        own_ns: &str,
        bsl: &str,
        source_ns: &str,
        id: &str,
        dir: PathBuf,
        settings: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Result<Plan, Error> {
        let threads = data_path::parallelism(settings, "ParallelFilesDownload")?;
        let sparse = data_path::write_sparse(settings)?;
        let type_ = repository::type_name(None);
        let (repo, _) = repository::open(&agent.ctx, own_ns, bsl, source_ns, type_, false)
            .await?
            .map_err(|why| Error::Invalid(why.message().to_owned()))?;
        let wanted = id.to_owned();
        let (repo, snapshot) = tokio::task::spawn_blocking(move || {
            let found = repo.find_snapshot(&wanted);
            (repo, found)
        })
        .await
        .map_err(|e| Error::Invalid(format!("looking up the snapshot crashed: {e}")))?;
        let snapshot = snapshot.map_err(|e| {
            Error::Invalid(format!(
                "snapshot {id:?} cannot be found in the repository of namespace {source_ns} in \
                 location {bsl}: {e}"
            ))
        })?;
        Ok(Plan { repo, snapshot, dir, restore_uid: None, sparse, threads })
    }
}

/// Restores `snapshot`, a backup of one directory, into `dir`, overwriting what is there.
/// Returns a note for the completion event. Blocking.
pub(crate) fn restore_volume(
    repo: &Repository,
    snapshot: &SnapshotEntry,
    dir: &Path,
    sparse: bool,
    threads: usize,
    cancel: CancelToken,
    progress: ProgressFn,
) -> Result<String, RepoError> {
    let snap = &snapshot.snapshot;
    // The snapshot holds one directory; its entry in the root is named after it.
    let include = match snap.paths.as_slice() {
        [one] => Path::new(one).file_name().map(|n| format!("/{}", n.to_string_lossy())),
        _ => None,
    };
    let opts = RestoreOptions {
        sparse,
        threads,
        include,
        progress: Some(progress),
        cancel,
        xattrs: true,
        ..RestoreOptions::default()
    };
    let done = restore(repo, &snap.tree, dir, &opts)?;
    Ok(format!(
        "restored snapshot {} into {}: {} files, {} bytes",
        snapshot.id.short(),
        dir.display(),
        done.files_done,
        done.bytes_done
    ))
}

/// Velero's handshake with `restore-wait`: a fresh `.velero` holding only `<restore_uid>`.
fn write_done_marker(dir: &Path, restore_uid: &str) -> Result<(), RepoError> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let marker_dir = dir.join(DONE_DIR);
    match std::fs::remove_dir_all(&marker_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(RepoError::io("remove", &marker_dir, e)),
    }
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&marker_dir)
        .map_err(|e| RepoError::io("create directory", &marker_dir, e))?;
    let marker = marker_dir.join(restore_uid);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&marker)
        .map_err(|e| RepoError::io("create", &marker, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_pod_is_restored_into_once_its_restore_wait_container_runs() {
        let spec = json!({"initContainers": [{"name": "restore-wait", "image": "velero"}],
                          "containers": [{"name": "app", "image": "app"}]});
        let status = |state: Value| {
            json!({"initContainerStatuses": [{"name": "restore-wait", "ready": false,
                "restartCount": 0, "image": "velero", "imageID": "", "state": state}]})
        };
        assert!(!restore_wait_ready(&pod(json!({"spec": spec}))), "no status yet");
        let waiting = status(json!({"waiting": {"reason": "PodInitializing"}}));
        assert!(!restore_wait_ready(&pod(json!({"spec": spec, "status": waiting}))));
        let running = status(json!({"running": {}}));
        assert!(restore_wait_ready(&pod(json!({"spec": spec, "status": running}))));
        // Velero before 1.10 named it restic-wait.
        let legacy = json!({"initContainers": [{"name": "restic-wait"}], "containers": []});
        assert!(!restore_wait_ready(&pod(json!({"spec": legacy}))));
        // A pod Velero's restore did not prepare waits for nothing but its mounts.
        let plain = json!({"initContainers": [{"name": "migrate"}], "containers": []});
        assert!(restore_wait_ready(&pod(json!({"spec": plain}))));
    }

    #[test]
    fn the_done_marker_replaces_an_old_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".velero")).unwrap();
        std::fs::write(dir.path().join(".velero/old-restore"), b"").unwrap();
        write_done_marker(dir.path(), "uid-1").unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path().join(".velero"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["uid-1"]);
        assert_eq!(std::fs::metadata(dir.path().join(".velero/uid-1")).unwrap().len(), 0);
    }
}
