//! The `createVolumeSnapshot` action of a backup whose method sets `snapshotVolumes: true`, as
//! KubeBlocks takes it: per target pod, one CSI VolumeSnapshot of the claim behind each pod volume
//! named in `targetVolumes.volumes`, labelled with the backup and owned by it, of the default
//! VolumeSnapshotClass of the volume's driver. The action is Completed once every snapshot is
//! `readyToUse`; it records them in `volumeSnapshots` and the sum of their `restoreSize`s as its
//! `totalSize`. A snapshot error, or a volume that is not a bound claim of the pod, fails it with
//! the reason: nothing waits for a fix that is not coming.
//!
//! The snapshots are the backup's data: a Restore provisions claims from them
//! (`restore/volume_snapshot.rs`), and deleting the Backup deletes them ([`super::deletion`]).

use std::collections::BTreeMap;

use holdfast_api::kubeblocks::Backup;
use holdfast_api::kubeblocks::backup::{ActionStatus, VolumeSnapshotStatus};
use holdfast_api::kubeblocks::backup_policy::BackupMethod;
use holdfast_api::quantity::{format_bytes, parse_bytes};
use holdfast_api::snapshot::{VolumeSnapshot, VolumeSnapshotSource, VolumeSnapshotSpec};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};

use super::job::{PlannedAction, label_value};
use super::request::Request;
use super::{LABEL_BACKUP_NAME, LABEL_MANAGED_BY, MANAGED_BY, target_pods};
use crate::{Context, Error, object, owner};

/// Kubernetes' limit on object names (DNS subdomains), which VolumeSnapshot names are.
const NAME_MAX: usize = 253;

/// Where the snapshot action of one target pod is.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Every snapshot is ready: what the action records.
    Ready { snapshots: Vec<VolumeSnapshotStatus>, total_size: Option<String> },
    /// The snapshots still being taken.
    Waiting(Vec<String>),
    /// The action cannot complete, and why.
    Failed(String),
}

/// `status.actions[].name` of the snapshot action of `pod`.
pub fn action_name(pod: &str) -> String {
    format!("createVolumeSnapshot-{pod}")
}

/// The pod volumes a method snapshots (`targetVolumes.volumes`).
pub fn target_volumes(method: &BackupMethod) -> Vec<String> {
    method.target_volumes.as_ref().and_then(|t| t.volumes.clone()).unwrap_or_default()
}

/// The VolumeSnapshot of `volume` of the backup's `pod_index`-th target pod: upstream's
/// `<backup>-<volume>` for the first pod, and for the others `<backup>-<index>-<volume>` (upstream's
/// newer scheme), so that the pods' snapshots do not collide.
pub fn snapshot_name(backup: &str, pod_index: usize, volume: &str) -> String {
    if pod_index == 0 {
        format!("{backup}-{volume}")
    } else {
        format!("{backup}-{pod_index}-{volume}")
    }
}

/// The claim behind `volume` of `pod`.
///
/// # Errors
/// Why the volume cannot be snapshotted: the pod has no such volume, or it is not a claim.
pub fn claim_of(method: &BackupMethod, pod: &Pod, volume: &str) -> Result<String, String> {
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_deref()).unwrap_or_default();
    let Some(found) = volumes.iter().find(|v| v.name == volume) else {
        let names: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
        return Err(format!(
            "target volume {volume} of backupMethod {} is not a volume of pod {} (its volumes: \
             {}); fix the method's targetVolumes.volumes",
            method.name,
            pod.name_any(),
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        ));
    };
    found.persistent_volume_claim.as_ref().map(|c| c.claim_name.clone()).ok_or_else(|| {
        format!(
            "target volume {volume} of pod {} is not a PersistentVolumeClaim, so it cannot be \
             snapshotted",
            pod.name_any()
        )
    })
}

/// Whether claim `claim` (behind `volume` of `pod`) can be snapshotted: it exists and is Bound.
///
/// # Errors
/// Why not.
pub fn check_claim(
    pvc: Option<&PersistentVolumeClaim>,
    claim: &str,
    volume: &str,
    pod: &str,
) -> Result<(), String> {
    let Some(pvc) = pvc else {
        return Err(format!(
            "PersistentVolumeClaim {claim} (volume {volume} of pod {pod}) does not exist"
        ));
    };
    let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    if phase != "Bound" {
        return Err(format!(
            "PersistentVolumeClaim {claim} (volume {volume} of pod {pod}) is {phase}, not Bound: \
             there is no volume to snapshot"
        ));
    }
    Ok(())
}

/// The VolumeSnapshot `name` of `claim` for the backup: labelled like the backup's Jobs (so its
/// controller sees it change and deletion finds it) and owned by it. No class is named, so the
/// default class of the volume's driver is used.
pub fn build(backup: &Backup, name: &str, claim: &str) -> VolumeSnapshot {
    let spec = VolumeSnapshotSpec {
        source: VolumeSnapshotSource {
            persistent_volume_claim_name: Some(claim.to_string()),
            volume_snapshot_content_name: None,
        },
        volume_snapshot_class_name: None,
    };
    let mut vs = VolumeSnapshot::new(name, spec);
    vs.metadata.namespace = backup.namespace();
    vs.metadata.labels = Some(BTreeMap::from([
        (LABEL_BACKUP_NAME.to_string(), label_value(&backup.name_any())),
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
    ]));
    vs.metadata.owner_references = Some(vec![owner::controller_reference(backup)]);
    vs
}

/// What the snapshots of one pod say, in the method's volume order.
pub fn assess(snapshots: &[(String, VolumeSnapshot)]) -> Progress {
    let mut ready = Vec::new();
    let mut waiting = Vec::new();
    for (volume, vs) in snapshots {
        let name = vs.name_any();
        let status = vs.status.clone().unwrap_or_default();
        let content = status.bound_volume_snapshot_content_name.filter(|c| !c.is_empty());
        match (status.ready_to_use, content) {
            (Some(true), Some(content_name)) => ready.push(VolumeSnapshotStatus {
                name,
                content_name,
                volume_name: Some(volume.clone()),
                size: status.restore_size.map(|q| q.0),
            }),
            _ => match status.error.and_then(|e| e.message) {
                Some(message) => {
                    return Progress::Failed(format!(
                        "VolumeSnapshot {name} of volume {volume} failed: {message}"
                    ));
                }
                None => waiting.push(name),
            },
        }
    }
    if !waiting.is_empty() {
        return Progress::Waiting(waiting);
    }
    let sizes: Vec<&str> = ready.iter().filter_map(|s| s.size.as_deref()).collect();
    // A sum of some sizes would understate the backup: no total unless every size is known.
    let total_size = (!sizes.is_empty() && sizes.len() == ready.len())
        .then(|| sizes.iter().map(|s| parse_bytes(s).ok()).sum::<Option<u128>>())
        .flatten()
        .map(format_bytes);
    Progress::Ready { snapshots: ready, total_size }
}

/// Takes (or looks at) the snapshots of one target pod.
///
/// # Errors
/// API errors; everything the user must fix is a [`Progress::Failed`].
pub async fn step(
    ctx: &Context,
    req: &Request,
    planned: &PlannedAction,
) -> Result<Progress, Error> {
    let backup = &req.backup;
    let ns = backup.namespace().unwrap_or_default();
    let api: Api<VolumeSnapshot> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = backup.uid().unwrap_or_default();
    let mut slots = Vec::new();
    for volume in target_volumes(&req.method) {
        let name = snapshot_name(&backup.name_any(), planned.pod_index, &volume);
        if name.len() > NAME_MAX {
            return Ok(Progress::Failed(format!(
                "the VolumeSnapshot name {name} is longer than {NAME_MAX} characters; use a \
                 shorter backup name"
            )));
        }
        let existing = api.get_opt(&name).await?;
        if existing.as_ref().is_some_and(|vs| !owner::is_owned_by(vs, &uid)) {
            return Ok(Progress::Failed(format!(
                "VolumeSnapshot {name} already exists and does not belong to backup {}; delete \
                 or rename it",
                backup.name_any()
            )));
        }
        slots.push((volume, name, existing));
    }
    if slots.iter().any(|(_, _, vs)| vs.is_none()) {
        // Every claim is checked before any snapshot is taken: a wrong volume fails the action
        // without leaving part of the pod's snapshots behind.
        let Some(pod) = req.pods.get(planned.pod_index).filter(|p| p.spec.is_some()) else {
            return Ok(Progress::Failed(format!(
                "target pod {} is gone, so {} cannot run",
                planned.pod,
                planned.describe()
            )));
        };
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
        let mut missing = Vec::new();
        for (index, (volume, _, vs)) in slots.iter().enumerate() {
            if vs.is_some() {
                continue;
            }
            let claim = match claim_of(&req.method, pod, volume) {
                Ok(claim) => claim,
                Err(reason) => return Ok(Progress::Failed(reason)),
            };
            let pvc = claims.get_opt(&claim).await?;
            if let Err(reason) = check_claim(pvc.as_ref(), &claim, volume, &pod.name_any()) {
                return Ok(Progress::Failed(reason));
            }
            missing.push((index, claim));
        }
        for (index, claim) in missing {
            let (_, name, slot) = &mut slots[index];
            *slot = Some(object::create_or_get(&api, &build(backup, name, &claim)).await?);
        }
    }
    let taken: Vec<(String, VolumeSnapshot)> =
        slots.into_iter().filter_map(|(volume, _, vs)| vs.map(|vs| (volume, vs))).collect();
    Ok(assess(&taken))
}

/// Every snapshot the actions recorded, for `status.volumeSnapshots`.
pub fn recorded(actions: &[ActionStatus]) -> Option<Vec<VolumeSnapshotStatus>> {
    let all: Vec<VolumeSnapshotStatus> =
        actions.iter().flat_map(|a| a.volume_snapshots.clone().unwrap_or_default()).collect();
    (!all.is_empty()).then_some(all)
}

/// Whether the backup was taken with a `snapshotVolumes` method.
pub fn took_snapshots(backup: &Backup) -> bool {
    let method = backup.status.as_ref().and_then(|s| s.backup_method.as_ref());
    method.is_some_and(BackupMethod::takes_snapshots)
}

/// Whether the backup is only volume snapshots: taken without an ActionSet, so nothing of it is
/// in the repository.
pub fn snapshot_only(backup: &Backup) -> bool {
    let method = backup.status.as_ref().and_then(|s| s.backup_method.as_ref());
    took_snapshots(backup)
        && method.and_then(|m| m.action_set_name.as_deref()).is_none_or(str::is_empty)
}

/// The target pod whose snapshots restore the `pod_index`-th claims (the first pod's when the
/// backup has fewer pods, as for repository data) and its snapshots by volume, as the backup's
/// status records them.
pub fn of_pod(backup: &Backup, pod_index: usize) -> (String, BTreeMap<String, String>) {
    let pods = target_pods(backup);
    let pod = pods.get(pod_index).or(pods.first()).cloned().unwrap_or_default();
    let actions = backup.status.as_ref().and_then(|s| s.actions.as_deref()).unwrap_or_default();
    let by_volume = actions
        .iter()
        .filter(|a| a.name == action_name(&pod))
        .flat_map(|a| a.volume_snapshots.clone().unwrap_or_default())
        .filter_map(|s| s.volume_name.clone().map(|v| (v, s.name)))
        .collect();
    (pod, by_volume)
}

/// Deletes the backup's VolumeSnapshots (by label, confirmed by owner uid); their names. Their
/// contents and stored snapshots follow by the class's deletionPolicy.
///
/// # Errors
/// API errors.
pub async fn delete_all(ctx: &Context, backup: &Backup) -> Result<Vec<String>, Error> {
    let ns = backup.namespace().unwrap_or_default();
    let api: Api<VolumeSnapshot> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = format!(
        "{LABEL_BACKUP_NAME}={},{LABEL_MANAGED_BY}={MANAGED_BY}",
        label_value(&backup.name_any())
    );
    let uid = backup.uid().unwrap_or_default();
    let mut deleted = Vec::new();
    for vs in api.list(&ListParams::default().labels(&selector)).await?.items {
        if !owner::is_owned_by(&vs, &uid) || vs.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = vs.name_any();
        if object::delete_if_exists(&api, &name, &DeleteParams::default()).await? {
            deleted.push(name);
        }
    }
    Ok(deleted)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use holdfast_api::snapshot::{VolumeSnapshotError, VolumeSnapshotStatus as VsStatus};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use serde_json::json;

    fn method(volumes: &[&str]) -> BackupMethod {
        serde_json::from_value(json!({
            "name": "snap", "snapshotVolumes": true, "targetVolumes": {"volumes": volumes}
        }))
        .unwrap()
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "pg-0"},
            "spec": {"containers": [{"name": "pg"}], "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "data-pg-0"}},
                {"name": "scratch", "emptyDir": {}}
            ]}
        }))
        .unwrap()
    }

    fn snapshot(name: &str, status: VsStatus) -> VolumeSnapshot {
        let mut vs = VolumeSnapshot::new(name, VolumeSnapshotSpec::default());
        vs.status = Some(status);
        vs
    }

    fn ready(content: &str, size: &str) -> VsStatus {
        VsStatus {
            ready_to_use: Some(true),
            bound_volume_snapshot_content_name: Some(content.into()),
            restore_size: Some(Quantity(size.into())),
            ..VsStatus::default()
        }
    }

    #[test]
    fn names_follow_upstream_and_pods_after_the_first_do_not_collide() {
        assert_eq!(snapshot_name("b1", 0, "data"), "b1-data");
        assert_eq!(snapshot_name("b1", 1, "data"), "b1-1-data");
        assert_ne!(snapshot_name("b1", 1, "data"), snapshot_name("b1-1", 0, "data-x"));
        assert_eq!(action_name("pg-0"), "createVolumeSnapshot-pg-0");
        assert_eq!(target_volumes(&method(&["data", "log"])), ["data", "log"]);
    }

    #[test]
    fn only_a_bound_claim_of_the_pod_can_be_snapshotted() {
        let m = method(&["data"]);
        assert_eq!(claim_of(&m, &pod(), "data").unwrap(), "data-pg-0");
        let err = claim_of(&m, &pod(), "wal").unwrap_err();
        assert!(err.contains("target volume wal of backupMethod snap is not a volume of pod pg-0"));
        assert!(err.contains("(its volumes: data, scratch)"), "{err}");
        let err = claim_of(&m, &pod(), "scratch").unwrap_err();
        assert!(err.contains("is not a PersistentVolumeClaim"), "{err}");

        let err = check_claim(None, "data-pg-0", "data", "pg-0").unwrap_err();
        assert!(
            err.contains(
                "PersistentVolumeClaim data-pg-0 (volume data of pod pg-0) does not exist"
            )
        );
        let mut pvc = PersistentVolumeClaim::default();
        let err = check_claim(Some(&pvc), "data-pg-0", "data", "pg-0").unwrap_err();
        assert!(err.contains("is Pending, not Bound"), "{err}");
        pvc.status = Some(k8s_openapi::api::core::v1::PersistentVolumeClaimStatus {
            phase: Some("Bound".into()),
            ..Default::default()
        });
        assert!(check_claim(Some(&pvc), "data-pg-0", "data", "pg-0").is_ok());
    }

    #[test]
    fn a_snapshot_is_labelled_and_owned_by_its_backup() {
        let mut backup = Backup::new("b1", Default::default());
        backup.metadata.namespace = Some("db".into());
        backup.metadata.uid = Some("u-1".into());
        let vs = build(&backup, "b1-data", "data-pg-0");
        assert_eq!(vs.namespace().as_deref(), Some("db"));
        assert_eq!(vs.labels().get(LABEL_BACKUP_NAME).map(String::as_str), Some("b1"));
        assert_eq!(vs.labels().get(LABEL_MANAGED_BY).map(String::as_str), Some(MANAGED_BY));
        assert!(owner::is_controlled_by(&vs, "u-1"));
        assert_eq!(vs.spec.source.persistent_volume_claim_name.as_deref(), Some("data-pg-0"));
        assert!(vs.spec.volume_snapshot_class_name.is_none(), "the driver's default class");
    }

    #[test]
    fn ready_snapshots_become_the_action_status_with_their_total_size() {
        let both = [
            ("data".to_string(), snapshot("b1-data", ready("snapcontent-1", "3Mi"))),
            ("log".to_string(), snapshot("b1-log", ready("snapcontent-2", "1536"))),
        ];
        let Progress::Ready { snapshots, total_size } = assess(&both) else { panic!() };
        assert_eq!(total_size.as_deref(), Some(format_bytes((3 << 20) + 1536).as_str()));
        assert_eq!(
            snapshots[0],
            VolumeSnapshotStatus {
                name: "b1-data".into(),
                content_name: "snapcontent-1".into(),
                volume_name: Some("data".into()),
                size: Some("3Mi".into()),
            }
        );
        assert_eq!(snapshots[1].volume_name.as_deref(), Some("log"));

        let mut no_size = ready("snapcontent-2", "1");
        no_size.restore_size = None;
        let partial = [both[0].clone(), ("log".to_string(), snapshot("b1-log", no_size))];
        let Progress::Ready { total_size, .. } = assess(&partial) else { panic!() };
        assert_eq!(total_size, None, "no total from some sizes");
    }

    #[test]
    fn a_pending_snapshot_waits_and_an_error_fails_the_action() {
        let pending = [("data".to_string(), snapshot("b1-data", VsStatus::default()))];
        assert_eq!(assess(&pending), Progress::Waiting(vec!["b1-data".into()]));
        let failing = VsStatus {
            ready_to_use: Some(false),
            error: Some(VolumeSnapshotError {
                message: Some("cannot find default snapshot class".into()),
                time: None,
            }),
            ..VsStatus::default()
        };
        let failed = [("data".to_string(), snapshot("b1-data", failing))];
        assert_eq!(
            assess(&failed),
            Progress::Failed(
                "VolumeSnapshot b1-data of volume data failed: cannot find default snapshot class"
                    .into()
            )
        );
    }

    /// A request for `pods` with `method`, and the ActionSet backup actions if any.
    fn request(method: BackupMethod, actions: Option<serde_json::Value>, pods: &[&str]) -> Request {
        use holdfast_api::kubeblocks::{ActionSet, BackupPolicy, BackupRepo};
        let actions: Option<holdfast_api::kubeblocks::actionset::BackupActionSpec> =
            actions.map(|a| serde_json::from_value(a).unwrap());
        Request {
            backup: Backup::new("b1", Default::default()),
            policy: BackupPolicy::new("p", Default::default()),
            method,
            action_set: actions.as_ref().map(|_| ActionSet::new("as", Default::default())),
            actions,
            backup_type: Default::default(),
            repo: BackupRepo::new("r", Default::default()),
            target: Default::default(),
            pods: pods
                .iter()
                .map(|p| serde_json::from_value(json!({"metadata": {"name": p}})).unwrap())
                .collect(),
            repo_access: crate::kubeblocks_env::RepoAccess {
                tool_config_secret: String::new(),
                backup_pvc: None,
            },
            chain: None,
            continuous: None,
        }
    }

    #[test]
    fn the_snapshot_action_runs_per_pod_between_backup_data_and_the_post_backup_hooks() {
        use super::super::job::{ActionKind, plan};
        let names = |req: &Request| plan(req).iter().map(|a| a.name.clone()).collect::<Vec<_>>();
        let only = request(method(&["data"]), None, &["pg-0", "pg-1"]);
        assert_eq!(names(&only), ["createVolumeSnapshot-pg-0", "createVolumeSnapshot-pg-1"]);
        let planned = plan(&only);
        assert_eq!((planned[1].kind, planned[1].pod_index), (ActionKind::CreateVolumeSnapshot, 1));
        assert_eq!(planned[1].job_name(&only.backup), None, "the snapshot action runs no Job");
        assert_eq!(planned[1].action_type(), holdfast_api::kubeblocks::backup::ActionType::None);
        assert_eq!(planned[1].describe(), "createVolumeSnapshot on pod pg-1");

        let hooks = json!({
            "backupData": {"image": "i", "command": ["true"]},
            "preBackup": [{"exec": {"command": ["freeze"]}}],
            "postBackup": [{"exec": {"command": ["thaw"]}}]
        });
        let with_hooks = request(method(&["data"]), Some(hooks.clone()), &["pg-0"]);
        assert_eq!(
            names(&with_hooks),
            [
                "prebackup-0-pg-0",
                "backupdata-pg-0",
                "createVolumeSnapshot-pg-0",
                "postbackup-0-pg-0"
            ]
        );
        let mut no_snapshots = method(&[]);
        no_snapshots.snapshot_volumes = Some(false);
        let plain = request(no_snapshots, Some(hooks), &["pg-0"]);
        assert_eq!(names(&plain), ["prebackup-0-pg-0", "backupdata-pg-0", "postbackup-0-pg-0"]);
    }

    /// A completed backup of two target pods, `data` and `log` snapshotted of pg-0 and `data` of
    /// pg-1 (also what the restore side's tests restore from).
    pub(crate) fn backup_with_snapshots() -> Backup {
        serde_json::from_value(json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "Backup",
            "metadata": {"name": "b1", "annotations": {
                "dataprotection.kubeblocks.io/target-pods": "pg-0,pg-1"}},
            "spec": {"backupPolicyName": "p", "backupMethod": "snap"},
            "status": {
                "backupMethod": {"name": "snap", "snapshotVolumes": true},
                "actions": [
                    {"name": "createVolumeSnapshot-pg-0", "volumeSnapshots": [
                        {"name": "b1-data", "contentName": "c1", "volumeName": "data"},
                        {"name": "b1-log", "contentName": "c2", "volumeName": "log"}]},
                    {"name": "createVolumeSnapshot-pg-1", "volumeSnapshots": [
                        {"name": "b1-1-data", "contentName": "c3", "volumeName": "data"}]}
                ]
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_restore_finds_each_pods_snapshots_in_the_status() {
        let backup = backup_with_snapshots();
        assert!(took_snapshots(&backup) && snapshot_only(&backup));
        let (pod, by_volume) = of_pod(&backup, 1);
        assert_eq!(
            (pod.as_str(), by_volume.get("data").map(String::as_str)),
            ("pg-1", Some("b1-1-data"))
        );
        let (pod, by_volume) = of_pod(&backup, 5);
        assert_eq!(
            (pod.as_str(), by_volume.get("data").map(String::as_str)),
            ("pg-0", Some("b1-data"))
        );
        let actions = backup.status.as_ref().and_then(|s| s.actions.clone()).unwrap();
        let all = recorded(&actions).unwrap();
        assert_eq!(
            all.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["b1-data", "b1-log", "b1-1-data"]
        );
        assert_eq!(recorded(&[]), None);
    }
}
