//! The claims of a Restore of a volume-snapshot backup, as upstream restores them: each claim is
//! created with `dataSource` = the VolumeSnapshot of the backed-up volume its `volumeSource` names,
//! taken of the matching target pod (`volumeClaims` and the first template replica: the first
//! pod's; replica n: the n-th pod's, or the first pod's when the backup has fewer). The
//! provisioner fills the claims; for such a backup prepareData needs no Job and is done once they
//! are Bound (an ActionSet's prepareData, if the backup has one, runs after that).
//!
//! Anything that would leave a claim Pending forever fails the Restore with the reason instead: a
//! claim without `volumeSource`, a volume the backup has no snapshot of, a snapshot that is gone
//! or failed, a request smaller than the snapshot's `restoreSize`, or an existing claim of that
//! name that is not restored from the snapshot.

use holdfast_api::kubeblocks::Backup;
use holdfast_api::kubeblocks::restore::RestoreVolumeClaim;
use holdfast_api::quantity::parse_bytes;
use holdfast_api::snapshot::VolumeSnapshot;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, TypedLocalObjectReference};
use kube::ResourceExt;
use kube::api::Api;

use super::job::Unit;
use super::{Step, claim_object, is_bound};
use crate::backup::volume_snapshot::of_pod;
use crate::snapshot::GROUP;
use crate::{Context, Error, object};

/// The kind a claim's `dataSource` names for a snapshot.
const KIND: &str = "VolumeSnapshot";

/// `units` with each claim's `dataSource` set to the snapshot of its `volumeSource`.
///
/// # Errors
/// Why a claim cannot be restored from the backup's snapshots.
pub fn sourced(backup: &Backup, units: &[Unit]) -> Result<Vec<Unit>, String> {
    let name = backup.name_any();
    let mut out = Vec::new();
    for unit in units {
        let (pod, by_volume) = of_pod(backup, unit.pod_index);
        let known = || by_volume.keys().cloned().collect::<Vec<_>>().join(", ");
        let mut claims = Vec::new();
        for claim in &unit.claims {
            let mut claim = claim.clone();
            let claim_name = claim.metadata.name.clone().unwrap_or_default();
            let Some(source) = claim.volume_config.volume_source.clone().filter(|s| !s.is_empty())
            else {
                return Err(format!(
                    "claim {claim_name} has no volumeSource: backup {name} is volume snapshots, so \
                     each claim must name the backed-up volume it is restored from ({})",
                    known()
                ));
            };
            let Some(snapshot) = by_volume.get(&source) else {
                return Err(format!(
                    "backup {name} has no volume snapshot of volume {source} of pod {pod} (it has \
                     snapshots of: {}); fix volumeSource of claim {claim_name}",
                    known()
                ));
            };
            claim.volume_claim_spec.data_source = Some(TypedLocalObjectReference {
                api_group: Some(GROUP.to_string()),
                kind: KIND.to_string(),
                name: snapshot.clone(),
            });
            claim.volume_claim_spec.data_source_ref = None;
            claims.push(claim);
        }
        out.push(Unit { pod_index: unit.pod_index, claims });
    }
    Ok(out)
}

/// The snapshot a sourced claim is restored from.
fn snapshot_of(claim: &RestoreVolumeClaim) -> String {
    claim.volume_claim_spec.data_source.as_ref().map(|s| s.name.clone()).unwrap_or_default()
}

/// Whether snapshot `vs` can fill `claim`: `Ok(true)` when it is ready, `Ok(false)` while it is
/// not yet.
///
/// # Errors
/// Why it never will.
pub fn check_snapshot(
    vs: Option<&VolumeSnapshot>,
    claim: &RestoreVolumeClaim,
) -> Result<bool, String> {
    let snapshot = snapshot_of(claim);
    let claim_name = claim.metadata.name.clone().unwrap_or_default();
    let Some(vs) = vs else {
        return Err(format!(
            "VolumeSnapshot {snapshot}, which claim {claim_name} is restored from, does not exist \
             (deleted after the backup?)"
        ));
    };
    let status = vs.status.clone().unwrap_or_default();
    if status.ready_to_use != Some(true) {
        return match status.error.and_then(|e| e.message) {
            Some(message) => Err(format!(
                "VolumeSnapshot {snapshot}, which claim {claim_name} is restored from, failed: \
                 {message}"
            )),
            None => Ok(false),
        };
    }
    let size = status.restore_size.and_then(|q| parse_bytes(&q.0).ok().map(|b| (b, q.0)));
    let requests = claim.volume_claim_spec.resources.as_ref().and_then(|r| r.requests.as_ref());
    let request = requests.and_then(|r| r.get("storage")).map(|q| q.0.clone());
    if let (Some((needed, text)), Some(request)) = (size, request)
        && parse_bytes(&request).is_ok_and(|r| r < needed)
    {
        return Err(format!(
            "claim {claim_name} requests {request} of storage, less than the restoreSize {text} \
             of VolumeSnapshot {snapshot}; request at least {text}"
        ));
    }
    Ok(true)
}

/// Creates the claims of `units` from `backup`'s snapshots; done once all are Bound.
///
/// # Errors
/// API errors; what the user must fix is a [`Step::Failed`].
pub(super) async fn provision(
    ctx: &Context,
    ns: &str,
    backup: &Backup,
    units: &[Unit],
) -> Result<Step, Error> {
    let units = match sourced(backup, units) {
        Ok(units) => units,
        Err(reason) => return Ok(Step::Failed(reason)),
    };
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let snapshots: Api<VolumeSnapshot> = Api::namespaced(ctx.client.clone(), ns);
    let mut pending = Vec::new();
    for claim in units.iter().flat_map(|u| &u.claims) {
        let name = claim.metadata.name.clone().unwrap_or_default();
        let existing = claims.get_opt(&name).await?;
        if let Some(pvc) = &existing {
            let from = pvc.spec.as_ref().and_then(|s| s.data_source.as_ref());
            if from.is_none_or(|s| s.kind != KIND || s.name != snapshot_of(claim)) {
                return Ok(Step::Failed(format!(
                    "claim {name} already exists and is not restored from VolumeSnapshot {}; \
                     delete it or restore into another claim",
                    snapshot_of(claim)
                )));
            }
            if is_bound(pvc) {
                continue;
            }
        }
        let vs = snapshots.get_opt(&snapshot_of(claim)).await?;
        match check_snapshot(vs.as_ref(), claim) {
            Err(reason) => return Ok(Step::Failed(reason)),
            Ok(true) if existing.is_none() => {
                object::create_or_get(&claims, &claim_object(ns, claim)).await?;
            }
            Ok(_) => {}
        }
        pending.push(name);
    }
    if pending.is_empty() {
        return Ok(Step::Done);
    }
    Ok(Step::Wait(format!(
        "restoring backup {}: waiting for claim(s) {} to be provisioned from their volume \
         snapshots",
        backup.name_any(),
        pending.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::backup::volume_snapshot::tests::backup_with_snapshots as backup;

    fn claim(name: &str, source: Option<&str>, size: &str) -> RestoreVolumeClaim {
        let mut claim: RestoreVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": name},
            "volumeClaimSpec": {"accessModes": ["ReadWriteOnce"],
                                "resources": {"requests": {"storage": size}}}
        }))
        .unwrap();
        claim.volume_config.volume_source = source.map(str::to_string);
        claim
    }

    fn unit(pod_index: usize, claims: Vec<RestoreVolumeClaim>) -> Unit {
        Unit { pod_index, claims }
    }

    #[test]
    fn each_claim_comes_from_the_snapshot_of_its_volume_of_the_matching_pod() {
        let units = [
            unit(0, vec![claim("data-0", Some("data"), "1Gi"), claim("log-0", Some("log"), "1Gi")]),
            unit(1, vec![claim("data-1", Some("data"), "1Gi")]),
        ];
        let sourced = sourced(&backup(), &units).unwrap();
        let from: Vec<(String, String)> = sourced
            .iter()
            .flat_map(|u| &u.claims)
            .map(|c| {
                let source = c.volume_claim_spec.data_source.clone().unwrap();
                assert_eq!(
                    (source.api_group.as_deref(), source.kind.as_str()),
                    (Some("snapshot.storage.k8s.io"), "VolumeSnapshot")
                );
                (c.metadata.name.clone().unwrap(), source.name)
            })
            .collect();
        let expected = [("data-0", "b1-data"), ("log-0", "b1-log"), ("data-1", "b1-1-data")];
        assert_eq!(from, expected.map(|(a, b)| (a.to_string(), b.to_string())));
    }

    #[test]
    fn a_claim_without_a_snapshot_to_come_from_is_refused_with_the_reason() {
        let err = sourced(&backup(), &[unit(0, vec![claim("x", None, "1Gi")])]).unwrap_err();
        assert!(err.contains("claim x has no volumeSource"), "{err}");
        assert!(err.contains("(data, log)"), "{err}");
        let err = sourced(&backup(), &[unit(1, vec![claim("x", Some("log"), "1Gi")])]).unwrap_err();
        assert!(
            err.contains("backup b1 has no volume snapshot of volume log of pod pg-1"),
            "{err}"
        );
        assert!(err.contains("fix volumeSource of claim x"), "{err}");
    }

    #[test]
    fn a_snapshot_must_exist_be_sound_and_fit_the_claim() {
        let sourced =
            sourced(&backup(), &[unit(0, vec![claim("small", Some("data"), "1Mi")])]).unwrap();
        let claim = &sourced[0].claims[0];
        let err = check_snapshot(None, claim).unwrap_err();
        assert!(err.contains(
            "VolumeSnapshot b1-data, which claim small is restored from, does not exist"
        ));
        let mut vs: VolumeSnapshot = serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "b1-data"},
            "spec": {"source": {"persistentVolumeClaimName": "data"}},
            "status": {"readyToUse": false}
        }))
        .unwrap();
        assert_eq!(check_snapshot(Some(&vs), claim), Ok(false), "not ready yet: wait");
        vs.status.as_mut().unwrap().error =
            Some(serde_json::from_value(json!({"message": "disk full"})).unwrap());
        assert!(check_snapshot(Some(&vs), claim).unwrap_err().ends_with("failed: disk full"));
        vs.status = Some(
            serde_json::from_value(json!({"readyToUse": true, "restoreSize": "3Mi"})).unwrap(),
        );
        let err = check_snapshot(Some(&vs), claim).unwrap_err();
        assert!(err.contains("requests 1Mi of storage, less than the restoreSize 3Mi"), "{err}");
        vs.status = Some(
            serde_json::from_value(json!({"readyToUse": true, "restoreSize": "1Mi"})).unwrap(),
        );
        assert_eq!(check_snapshot(Some(&vs), claim), Ok(true));
    }
}
