//! Where a new claim's data comes from: its `dataSourceRef` (else `dataSource`), which may name
//! a VolumeSnapshot (the volume is restored from it) or another claim (the volume is a clone of
//! it), both in the claim's namespace. Each has upstream's conditions; while one is not met the
//! claim stays Pending with an event that says which.

use std::path::PathBuf;

use holdfast_api::quantity::{format_bytes, parse_bytes};
use holdfast_api::snapshot::{VolumeSnapshot, VolumeSnapshotContent};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::ResourceExt as _;
use kube::api::Api;

use crate::snapshot::binding::bound_both_ways;
use crate::snapshot::driver::{DRIVER, LocalPathDriver};
use crate::{Context, Error};

/// The API group of the snapshot kinds.
const SNAPSHOT_GROUP: &str = crate::snapshot::GROUP;

/// What a claim names as its data source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// A VolumeSnapshot of the claim's namespace.
    Snapshot(String),
    /// Another claim of the same namespace.
    Claim(String),
    /// Something the local-path provisioner cannot populate from; the message says why.
    Unsupported(String),
}

/// The data source of `pvc`, if it names one (`dataSourceRef` wins over `dataSource`, which
/// Kubernetes keeps equal when both are set).
pub fn of(pvc: &PersistentVolumeClaim) -> Option<DataSource> {
    let spec = pvc.spec.as_ref()?;
    let (group, kind, name, namespace) = match (&spec.data_source_ref, &spec.data_source) {
        (Some(r), _) => (r.api_group.as_deref(), r.kind.as_str(), &r.name, r.namespace.as_deref()),
        (None, Some(r)) => (r.api_group.as_deref(), r.kind.as_str(), &r.name, None),
        (None, None) => return None,
    };
    let own = pvc.namespace();
    if let Some(ns) = namespace.filter(|ns| Some(*ns) != own.as_deref()) {
        return Some(DataSource::Unsupported(format!(
            "cannot provision from dataSourceRef {kind} {ns}/{name}: a data source in another \
             namespace is not supported; the claim stays Pending"
        )));
    }
    Some(match (group.unwrap_or_default(), kind) {
        (SNAPSHOT_GROUP, "VolumeSnapshot") => DataSource::Snapshot(name.clone()),
        ("", "PersistentVolumeClaim") => DataSource::Claim(name.clone()),
        (group, kind) => {
            let kind = if group.is_empty() { kind.to_owned() } else { format!("{kind}.{group}") };
            DataSource::Unsupported(format!(
                "cannot provision from dataSource {kind} {name}: the embedded local-path \
                 provisioner populates a volume only from a VolumeSnapshot ({SNAPSHOT_GROUP}) \
                 or a PersistentVolumeClaim of the same namespace; the claim stays Pending"
            ))
        }
    })
}

/// How a new volume directory is filled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Populate {
    /// Empty.
    Empty,
    /// From the embedded driver's snapshot with this handle.
    Snapshot(String),
    /// As a copy of this volume directory.
    Clone(PathBuf),
}

/// How to fill the volume of `pvc` (of namespace `ns`), once its data source allows it.
///
/// # Errors
/// [`Error::NotReady`] while the source does not exist or is not ready or bound yet,
/// [`Error::Invalid`] for a source that cannot be used (unsupported, another driver's snapshot,
/// a request smaller than the source); the messages are what the claim's event says.
pub async fn resolve(
    ctx: &Context,
    ns: &str,
    pvc: &PersistentVolumeClaim,
) -> Result<Populate, Error> {
    let requested = requested_bytes(pvc)?;
    match of(pvc) {
        None => Ok(Populate::Empty),
        Some(DataSource::Unsupported(message)) => Err(Error::Invalid(message)),
        Some(DataSource::Snapshot(name)) => from_snapshot(ctx, ns, &name, requested).await,
        Some(DataSource::Claim(name)) => from_claim(ctx, ns, &name, requested).await,
    }
}

/// The claim's `resources.requests.storage` in bytes, if it asks for a size.
fn requested_bytes(pvc: &PersistentVolumeClaim) -> Result<Option<u128>, Error> {
    let request = pvc
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"));
    request
        .map(|q| {
            parse_bytes(&q.0).map_err(|e| {
                Error::Invalid(format!("spec.resources.requests.storage {:?}: {e}", q.0))
            })
        })
        .transpose()
}

/// A request smaller than what the source holds is refused, as Kubernetes refuses it.
fn check_size(requested: Option<u128>, needed: u128, what: &str) -> Result<(), Error> {
    match requested {
        Some(bytes) if bytes < needed => Err(Error::Invalid(format!(
            "the requested storage {} is smaller than {what} {}: ask for at least that much; \
             the claim stays Pending",
            format_bytes(bytes),
            format_bytes(needed)
        ))),
        _ => Ok(()),
    }
}

async fn from_snapshot(
    ctx: &Context,
    ns: &str,
    name: &str,
    requested: Option<u128>,
) -> Result<Populate, Error> {
    let snapshots: Api<VolumeSnapshot> = Api::namespaced(ctx.client.clone(), ns);
    let vs = snapshots.get_opt(name).await?.ok_or_else(|| {
        Error::NotReady(format!(
            "VolumeSnapshot {ns}/{name} (the claim's data source) does not exist"
        ))
    })?;
    if vs.metadata.deletion_timestamp.is_some() {
        return Err(Error::Invalid(format!(
            "VolumeSnapshot {ns}/{name} is being deleted: a claim cannot be restored from it"
        )));
    }
    let status = vs.status.clone().unwrap_or_default();
    let content_name = status.bound_volume_snapshot_content_name.clone();
    let (Some(true), Some(content_name)) = (status.ready_to_use, content_name) else {
        return Err(Error::NotReady(format!(
            "VolumeSnapshot {ns}/{name} is not ready to use yet; the claim is provisioned once \
             it is"
        )));
    };
    let contents: Api<VolumeSnapshotContent> = Api::all(ctx.client.clone());
    let content = contents.get_opt(&content_name).await?.ok_or_else(|| {
        Error::NotReady(format!(
            "VolumeSnapshotContent {content_name} of VolumeSnapshot {ns}/{name} does not exist"
        ))
    })?;
    if !bound_both_ways(&vs, &content) {
        return Err(Error::Invalid(format!(
            "VolumeSnapshot {ns}/{name} and VolumeSnapshotContent {content_name} do not point \
             at each other: the snapshot cannot be trusted to restore from"
        )));
    }
    if content.spec.driver != DRIVER {
        return Err(Error::Invalid(format!(
            "VolumeSnapshot {ns}/{name} was taken by driver {}: the local-path provisioner \
             restores only snapshots of {DRIVER}",
            content.spec.driver
        )));
    }
    let content_status = content.status.unwrap_or_default();
    let Some(handle) = content_status.snapshot_handle else {
        return Err(Error::NotReady(format!(
            "VolumeSnapshotContent {content_name} has no snapshotHandle yet"
        )));
    };
    let restore_size = status
        .restore_size
        .and_then(|q| parse_bytes(&q.0).ok())
        .or(content_status.restore_size.and_then(|b| u128::try_from(b).ok()))
        .unwrap_or(0);
    check_size(requested, restore_size, &format!("the restoreSize of VolumeSnapshot {name}"))?;
    Ok(Populate::Snapshot(handle))
}

async fn from_claim(
    ctx: &Context,
    ns: &str,
    name: &str,
    requested: Option<u128>,
) -> Result<Populate, Error> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let source = claims.get_opt(name).await?.ok_or_else(|| {
        Error::NotReady(format!(
            "PersistentVolumeClaim {ns}/{name} (the claim's data source) does not exist"
        ))
    })?;
    let bound = source.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let Some(pv_name) = source.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|_| bound)
    else {
        return Err(Error::NotReady(format!(
            "PersistentVolumeClaim {ns}/{name} (the claim's data source) is not bound yet"
        )));
    };
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let pv = volumes.get_opt(&pv_name).await?.ok_or_else(|| {
        Error::NotReady(format!("PersistentVolume {pv_name} of claim {ns}/{name} does not exist"))
    })?;
    let driver = LocalPathDriver::new(ctx);
    let Some(handle) = driver.volume_handle(&pv) else {
        return Err(Error::Invalid(format!(
            "PersistentVolumeClaim {ns}/{name} is not a local-path volume of this server: the \
             local-path provisioner clones only its own volumes"
        )));
    };
    let capacity = source
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| parse_bytes(&q.0).ok())
        .unwrap_or(0);
    check_size(requested, capacity, &format!("the capacity of claim {name}"))?;
    Ok(Populate::Clone(driver.volume_dir(&handle)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(source: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "new", "namespace": "shop"},
            "spec": source,
        }))
        .unwrap()
    }

    #[test]
    fn the_data_source_is_read_from_the_ref_first_and_must_be_local() {
        let snap = claim(serde_json::json!({"dataSource": {
            "apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "s"}}));
        assert_eq!(of(&snap), Some(DataSource::Snapshot("s".into())));
        let both = claim(serde_json::json!({
            "dataSource": {"kind": "PersistentVolumeClaim", "name": "old"},
            "dataSourceRef": {"kind": "PersistentVolumeClaim", "name": "ref"}}));
        assert_eq!(of(&both), Some(DataSource::Claim("ref".into())));
        let same_ns = claim(serde_json::json!({"dataSourceRef": {
            "kind": "PersistentVolumeClaim", "name": "a", "namespace": "shop"}}));
        assert_eq!(of(&same_ns), Some(DataSource::Claim("a".into())));
        let elsewhere = claim(serde_json::json!({"dataSourceRef": {
            "apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "s",
            "namespace": "other"}}));
        assert!(
            matches!(of(&elsewhere), Some(DataSource::Unsupported(m)) if m.contains("another namespace"))
        );
        let wrong_group = claim(serde_json::json!({"dataSource": {
            "apiGroup": "example.com", "kind": "VolumeSnapshot", "name": "s"}}));
        assert!(
            matches!(of(&wrong_group), Some(DataSource::Unsupported(m)) if m.contains("VolumeSnapshot.example.com s"))
        );
        assert_eq!(of(&claim(serde_json::json!({}))), None);
    }

    #[test]
    fn a_request_smaller_than_the_source_is_refused() {
        check_size(Some(2 << 20), 2 << 20, "x").unwrap();
        check_size(None, 5, "x").unwrap();
        let error = check_size(Some(1 << 20), (1 << 20) + 1, "the restoreSize of s").unwrap_err();
        assert!(matches!(&error, Error::Invalid(_)));
        assert!(
            error.to_string().starts_with(
                "the requested storage 1Mi is smaller than the restoreSize of s 1048577"
            ),
            "{error}"
        );
    }
}
