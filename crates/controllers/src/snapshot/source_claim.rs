//! The claim a dynamic snapshot is taken of: `pvc-as-source-protection` holds its deletion while
//! any snapshot of it is not ready yet, so its volume cannot vanish mid-copy.

use holdfast_api::snapshot::VolumeSnapshot;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};

use super::{Problem, SOURCE_CLAIM_FINALIZER};
use crate::{Context, Error, finalizer};

/// Puts the finalizer on the source claim before its snapshot is taken.
///
/// # Errors
/// A [`Problem`] when the claim is being deleted already: its volume is about to go.
pub async fn protect(ctx: &Context, pvc: &PersistentVolumeClaim) -> Result<(), Problem> {
    if finalizer::has(pvc, SOURCE_CLAIM_FINALIZER) {
        return Ok(());
    }
    if pvc.metadata.deletion_timestamp.is_some() {
        return Err(Problem::permanent(
            "SnapshotPVCBeingDeleted",
            format!(
                "cannot take a snapshot of PersistentVolumeClaim {}/{}: it is being deleted",
                pvc.namespace().unwrap_or_default(),
                pvc.name_any()
            ),
        ));
    }
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &pvc.namespace().unwrap_or_default());
    finalizer::add(&api, pvc, SOURCE_CLAIM_FINALIZER).await?;
    Ok(())
}

/// Whether `vs` is a snapshot of claim `pvc` still being taken: not ready and not being deleted.
pub fn in_progress(vs: &VolumeSnapshot, pvc: &str) -> bool {
    vs.spec.source.persistent_volume_claim_name.as_deref() == Some(pvc)
        && vs.metadata.deletion_timestamp.is_none()
        && vs.status.as_ref().and_then(|s| s.ready_to_use) != Some(true)
}

/// Takes the finalizer off claim `ns/pvc` once `done` (ready, or being deleted) no longer needs
/// it and no other snapshot of the claim is in progress.
///
/// # Errors
/// API errors.
pub async fn release(
    ctx: &Context,
    ns: &str,
    pvc: &str,
    done: &VolumeSnapshot,
) -> Result<(), Error> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let Some(claim) = claims.get_opt(pvc).await? else { return Ok(()) };
    if !finalizer::has(&claim, SOURCE_CLAIM_FINALIZER) {
        return Ok(());
    }
    let snapshots: Api<VolumeSnapshot> = Api::namespaced(ctx.client.clone(), ns);
    let others = snapshots.list(&ListParams::default()).await?;
    let busy = others.items.iter().any(|vs| vs.uid() != done.uid() && in_progress(vs, pvc));
    if busy {
        return Ok(());
    }
    finalizer::remove(&claims, &claim, SOURCE_CLAIM_FINALIZER).await
}
