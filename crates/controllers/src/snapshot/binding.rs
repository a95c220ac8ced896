//! The binding rules between a VolumeSnapshot and its VolumeSnapshotContent, as upstream's
//! snapshot controller keeps them, without I/O: the content made for a dynamic snapshot, the
//! checks a pre-provisioned content must pass, the two-way check every consumer makes, and the
//! snapshot status mirrored from the content.

use holdfast_api::quantity::format_bytes;
use holdfast_api::snapshot::{
    VolumeMode, VolumeSnapshot, VolumeSnapshotClass, VolumeSnapshotContent,
    VolumeSnapshotContentSource, VolumeSnapshotContentSpec, VolumeSnapshotStatus,
};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource as _, ResourceExt as _};

use super::Problem;

/// The name of the content of a dynamic snapshot: `snapcontent-<snapshot uid>`.
pub fn content_name(snapshot_uid: &str) -> String {
    format!("snapcontent-{snapshot_uid}")
}

/// The reference a content keeps to its snapshot, with the snapshot's uid.
pub fn snapshot_ref(vs: &VolumeSnapshot) -> ObjectReference {
    ObjectReference {
        api_version: Some(VolumeSnapshot::api_version(&()).into_owned()),
        kind: Some(VolumeSnapshot::kind(&()).into_owned()),
        namespace: vs.namespace(),
        name: Some(vs.name_any()),
        uid: vs.uid(),
        resource_version: vs.resource_version(),
        ..ObjectReference::default()
    }
}

/// The content of the dynamic snapshot `vs` of the volume `volume_handle`, taken with `class`:
/// its deletion policy and driver come from the class.
pub fn dynamic_content(
    vs: &VolumeSnapshot,
    class: &VolumeSnapshotClass,
    volume_handle: &str,
    volume_mode: Option<VolumeMode>,
) -> VolumeSnapshotContent {
    VolumeSnapshotContent::new(
        &content_name(&vs.uid().unwrap_or_default()),
        VolumeSnapshotContentSpec {
            volume_snapshot_ref: snapshot_ref(vs),
            deletion_policy: class.spec.deletion_policy,
            driver: class.spec.driver.clone(),
            volume_snapshot_class_name: Some(class.name_any()),
            source: VolumeSnapshotContentSource {
                volume_handle: Some(volume_handle.to_owned()),
                snapshot_handle: None,
            },
            source_volume_mode: volume_mode,
        },
    )
}

/// Whether `content`'s reference names `vs` (namespace, name and, once filled in, uid).
fn names(content: &VolumeSnapshotContent, vs: &VolumeSnapshot) -> bool {
    let r = &content.spec.volume_snapshot_ref;
    r.name.as_deref() == Some(vs.name_any().as_str())
        && r.namespace == vs.namespace()
        && r.uid.as_deref().is_none_or(|uid| uid.is_empty() || vs.uid().as_deref() == Some(uid))
}

/// Whether `vs` and `content` point at each other, as a consumer must check before using a
/// snapshot: the snapshot's status names the content, the content's reference the snapshot
/// with its uid.
pub fn bound_both_ways(vs: &VolumeSnapshot, content: &VolumeSnapshotContent) -> bool {
    let bound = vs.status.as_ref().and_then(|s| s.bound_volume_snapshot_content_name.as_deref());
    bound == Some(content.name_any().as_str())
        && content.spec.volume_snapshot_ref.uid.is_some()
        && names(content, vs)
}

/// Checks the content `vs` made (or is bound to) for a dynamic snapshot.
///
/// # Errors
/// A [`Problem`] when the content belongs to another snapshot (`SnapshotContentMisbound`).
pub fn check_dynamic(vs: &VolumeSnapshot, content: &VolumeSnapshotContent) -> Result<(), Problem> {
    if names(content, vs) {
        return Ok(());
    }
    Err(misbound(vs, content))
}

/// What binding `vs` to the pre-provisioned `content` it names takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreProvisioned {
    /// The content's reference carries the snapshot's uid already.
    Bound,
    /// The content names the snapshot without a uid: the controller fills it in.
    FillUid,
}

/// Checks the pre-provisioned `content` that `vs` names, as upstream does: it must hold an
/// existing snapshot (`spec.source.snapshotHandle`) and its `volumeSnapshotRef` must name this
/// snapshot (a uid may be missing: it is filled in).
///
/// # Errors
/// `SnapshotContentMismatch` for a content that is not pre-provisioned,
/// `SnapshotContentMisbound` for one that names another snapshot.
pub fn check_pre_provisioned(
    vs: &VolumeSnapshot,
    content: &VolumeSnapshotContent,
) -> Result<PreProvisioned, Problem> {
    if content.spec.source.snapshot_handle.as_deref().is_none_or(str::is_empty) {
        return Err(Problem::permanent(
            "SnapshotContentMismatch",
            format!(
                "VolumeSnapshotContent {} is not pre-provisioned (it has no \
                 spec.source.snapshotHandle): a VolumeSnapshot binds by \
                 spec.source.volumeSnapshotContentName only to a content that holds an existing \
                 snapshot",
                content.name_any()
            ),
        ));
    }
    if !names(content, vs) {
        return Err(misbound(vs, content));
    }
    let filled = content.spec.volume_snapshot_ref.uid.as_deref().is_some_and(|u| !u.is_empty());
    Ok(if filled { PreProvisioned::Bound } else { PreProvisioned::FillUid })
}

fn misbound(vs: &VolumeSnapshot, content: &VolumeSnapshotContent) -> Problem {
    let r = &content.spec.volume_snapshot_ref;
    Problem::permanent(
        "SnapshotContentMisbound",
        format!(
            "VolumeSnapshotContent {} is bound to another snapshot: its spec.volumeSnapshotRef \
             names {}/{} (uid {}), not {}/{} (uid {})",
            content.name_any(),
            r.namespace.as_deref().unwrap_or_default(),
            r.name.as_deref().unwrap_or_default(),
            r.uid.as_deref().filter(|u| !u.is_empty()).unwrap_or("unset"),
            vs.namespace().unwrap_or_default(),
            vs.name_any(),
            vs.uid().unwrap_or_default(),
        ),
    )
}

/// The snapshot's status mirrored from its bound `content`: the binding, `creationTime` (a time
/// from nanoseconds), `readyToUse`, `restoreSize` (a quantity from bytes) and the content's
/// `error`, which is cleared once the snapshot is ready.
pub fn mirrored_status(
    current: Option<&VolumeSnapshotStatus>,
    content: &VolumeSnapshotContent,
) -> VolumeSnapshotStatus {
    let from = content.status.clone().unwrap_or_default();
    let ready = from.ready_to_use.unwrap_or(false);
    VolumeSnapshotStatus {
        bound_volume_snapshot_content_name: Some(content.name_any()),
        // A `metav1.Time` holds whole seconds (that is all its JSON form keeps): the status
        // compares equal to what was written, so mirroring it again changes nothing.
        creation_time: from
            .creation_time
            .and_then(|ns| Timestamp::from_second(ns.div_euclid(1_000_000_000)).ok())
            .map(Time),
        error: if ready { None } else { from.error },
        ready_to_use: Some(ready),
        restore_size: from.restore_size.map(restore_size),
        volume_group_snapshot_name: current.and_then(|s| s.volume_group_snapshot_name.clone()),
    }
}

/// A byte count as the snapshot's `restoreSize` quantity (`1Gi`, or `1536` when no binary
/// suffix divides it).
pub fn restore_size(bytes: i64) -> Quantity {
    Quantity(format_bytes(u128::try_from(bytes).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_api::snapshot::{
        DeletionPolicy, VolumeSnapshotClassFields, VolumeSnapshotContentStatus,
        VolumeSnapshotError, VolumeSnapshotSource, VolumeSnapshotSpec,
    };

    fn vs(name: &str, uid: &str) -> VolumeSnapshot {
        let mut vs = VolumeSnapshot::new(
            name,
            VolumeSnapshotSpec {
                source: VolumeSnapshotSource {
                    persistent_volume_claim_name: Some("data".into()),
                    volume_snapshot_content_name: None,
                },
                volume_snapshot_class_name: None,
            },
        );
        vs.metadata.namespace = Some("shop".into());
        vs.metadata.uid = Some(uid.into());
        vs
    }

    fn class(policy: DeletionPolicy) -> VolumeSnapshotClass {
        VolumeSnapshotClass::new(
            "local-path",
            VolumeSnapshotClassFields {
                driver: "holdfast.io/local-path".into(),
                parameters: None,
                deletion_policy: policy,
            },
        )
    }

    fn pre_provisioned(ref_name: &str, ref_uid: Option<&str>) -> VolumeSnapshotContent {
        VolumeSnapshotContent::new(
            "imported",
            VolumeSnapshotContentSpec {
                volume_snapshot_ref: ObjectReference {
                    name: Some(ref_name.into()),
                    namespace: Some("shop".into()),
                    uid: ref_uid.map(Into::into),
                    ..ObjectReference::default()
                },
                deletion_policy: DeletionPolicy::Retain,
                driver: "holdfast.io/local-path".into(),
                volume_snapshot_class_name: None,
                source: VolumeSnapshotContentSource {
                    volume_handle: None,
                    snapshot_handle: Some("snapshot-1".into()),
                },
                source_volume_mode: None,
            },
        )
    }

    #[test]
    fn a_dynamic_content_takes_name_ref_policy_and_driver_from_snapshot_and_class() {
        let snap = vs("s", "u-1");
        let content = dynamic_content(
            &snap,
            &class(DeletionPolicy::Retain),
            "shop/data-0a",
            Some(VolumeMode::Filesystem),
        );
        assert_eq!(content.name_any(), "snapcontent-u-1");
        let r = &content.spec.volume_snapshot_ref;
        assert_eq!(
            (r.namespace.as_deref(), r.name.as_deref(), r.uid.as_deref(), r.kind.as_deref()),
            (Some("shop"), Some("s"), Some("u-1"), Some("VolumeSnapshot"))
        );
        assert_eq!(content.spec.deletion_policy, DeletionPolicy::Retain);
        assert_eq!(content.spec.driver, "holdfast.io/local-path");
        assert_eq!(content.spec.volume_snapshot_class_name.as_deref(), Some("local-path"));
        assert_eq!(content.spec.source.volume_handle.as_deref(), Some("shop/data-0a"));
        assert!(check_dynamic(&snap, &content).is_ok());
        assert_eq!(
            check_dynamic(&vs("s", "u-2"), &content).unwrap_err().reason,
            Some("SnapshotContentMisbound"),
            "a snapshot re-created under the same name is not the one the content was made for"
        );
    }

    #[test]
    fn pre_provisioned_binding_fills_the_uid_and_refuses_mismatches() {
        let snap = vs("imported", "u-9");
        assert_eq!(
            check_pre_provisioned(&snap, &pre_provisioned("imported", None)).unwrap(),
            PreProvisioned::FillUid
        );
        assert_eq!(
            check_pre_provisioned(&snap, &pre_provisioned("imported", Some(""))).unwrap(),
            PreProvisioned::FillUid
        );
        assert_eq!(
            check_pre_provisioned(&snap, &pre_provisioned("imported", Some("u-9"))).unwrap(),
            PreProvisioned::Bound
        );
        let other_name = check_pre_provisioned(&snap, &pre_provisioned("other", None)).unwrap_err();
        assert_eq!(other_name.reason, Some("SnapshotContentMisbound"));
        assert!(other_name.error.to_string().contains("names shop/other"), "{}", other_name.error);
        let other_uid =
            check_pre_provisioned(&snap, &pre_provisioned("imported", Some("u-1"))).unwrap_err();
        assert_eq!(other_uid.reason, Some("SnapshotContentMisbound"));
        let mut other_ns = pre_provisioned("imported", None);
        other_ns.spec.volume_snapshot_ref.namespace = Some("elsewhere".into());
        assert!(check_pre_provisioned(&snap, &other_ns).is_err());
        let mut dynamic = pre_provisioned("imported", None);
        dynamic.spec.source =
            VolumeSnapshotContentSource { volume_handle: Some("v".into()), snapshot_handle: None };
        assert_eq!(
            check_pre_provisioned(&snap, &dynamic).unwrap_err().reason,
            Some("SnapshotContentMismatch")
        );
    }

    #[test]
    fn binding_is_checked_both_ways() {
        let mut snap = vs("imported", "u-9");
        let content = pre_provisioned("imported", Some("u-9"));
        assert!(!bound_both_ways(&snap, &content), "the snapshot does not name the content yet");
        snap.status = Some(mirrored_status(None, &content));
        assert!(bound_both_ways(&snap, &content));
        assert!(!bound_both_ways(&snap, &pre_provisioned("imported", None)), "no uid yet");
        assert!(!bound_both_ways(&vs("imported", "u-10"), &content));
    }

    #[test]
    fn the_status_mirrors_the_content_and_clears_the_error_once_ready() {
        let mut content = pre_provisioned("imported", Some("u-9"));
        content.status = Some(VolumeSnapshotContentStatus {
            creation_time: Some(1_763_719_200_123_456_789),
            error: Some(VolumeSnapshotError { message: Some("disk full".into()), time: None }),
            ready_to_use: Some(false),
            restore_size: Some(3 << 30),
            snapshot_handle: Some("snapshot-1".into()),
            volume_group_snapshot_handle: None,
        });
        let status = mirrored_status(None, &content);
        assert_eq!(status.bound_volume_snapshot_content_name.as_deref(), Some("imported"));
        assert_eq!(status.ready_to_use, Some(false));
        assert_eq!(status.error.and_then(|e| e.message).as_deref(), Some("disk full"));
        assert_eq!(status.restore_size, Some(Quantity("3Gi".into())));
        assert_eq!(
            status.creation_time.map(|t| t.0.to_string()).as_deref(),
            Some("2025-11-21T10:00:00Z")
        );
        content.status.as_mut().unwrap().ready_to_use = Some(true);
        content.status.as_mut().unwrap().restore_size = Some(1536);
        let ready = mirrored_status(None, &content);
        assert_eq!((ready.ready_to_use, ready.error), (Some(true), None));
        assert_eq!(ready.restore_size, Some(Quantity("1536".into())));
        content.status = None;
        assert_eq!(mirrored_status(None, &content).ready_to_use, Some(false));
    }
}
