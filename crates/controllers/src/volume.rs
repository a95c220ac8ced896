//! Finding the host directory behind a pod volume (the volume-resolver seam,
//! docs/architecture.md).

use std::future::Future;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::Api;

use crate::snapshot::driver::{DRIVER, LocalPathDriver};
use crate::{Context, Error};

/// Resolves pod volumes to directories on this host.
pub trait VolumeResolver {
    /// The directory holding the data of `pod`'s volume named `volume`.
    fn pod_volume_dir(
        &self,
        pod: &Pod,
        volume: &str,
    ) -> impl Future<Output = Result<PathBuf, Error>> + Send;
    /// The directory of the volume bound to PVC `ns/pvc`.
    fn pvc_dir(&self, ns: &str, pvc: &str) -> impl Future<Output = Result<PathBuf, Error>> + Send;
    /// A read-only view of the snapshot `handle` of CSI driver `driver`, as a directory: what a
    /// data mover reads a VolumeSnapshot's data from.
    fn snapshot_dir(
        &self,
        driver: &str,
        handle: &str,
    ) -> impl Future<Output = Result<PathBuf, Error>> + Send;
}

/// Embedded mode: `hostPath` volumes directly, `emptyDir` under the Job scratch dir, PVCs through
/// their bound PV's `hostPath`/`local` path.
/// Snapshots are the embedded snapshot driver's directories, read in place: they never change.
#[derive(Clone)]
pub struct EmbeddedVolumes {
    client: kube::Client,
    jobs_dir: PathBuf,
    snapshots: LocalPathDriver,
}

impl EmbeddedVolumes {
    pub fn new(ctx: &Context) -> Self {
        Self {
            client: ctx.client.clone(),
            jobs_dir: ctx.jobs_dir(),
            snapshots: LocalPathDriver::new(ctx),
        }
    }
}

/// The host directory of an `emptyDir` volume of a pod: `<data_dir>/jobs/<ns>/<pod>/volumes/<name>`.
pub fn empty_dir_path(ctx: &Context, ns: &str, pod: &str, volume: &str) -> PathBuf {
    empty_dir_under(&ctx.jobs_dir(), ns, pod, volume)
}

fn empty_dir_under(jobs_dir: &std::path::Path, ns: &str, pod: &str, volume: &str) -> PathBuf {
    jobs_dir.join(ns).join(pod).join("volumes").join(volume)
}

impl VolumeResolver for EmbeddedVolumes {
    async fn pod_volume_dir(&self, pod: &Pod, volume: &str) -> Result<PathBuf, Error> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let vol = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .and_then(|vs| vs.iter().find(|v| v.name == volume))
            .ok_or_else(|| Error::Invalid(format!("pod {ns}/{name} has no volume {volume:?}")))?;
        if let Some(host) = &vol.host_path {
            return Ok(PathBuf::from(&host.path));
        }
        if let Some(claim) = &vol.persistent_volume_claim {
            return self.pvc_dir(ns, &claim.claim_name).await;
        }
        if vol.empty_dir.is_some() {
            return Ok(empty_dir_under(&self.jobs_dir, ns, name, volume));
        }
        Err(Error::Invalid(format!(
            "pod {ns}/{name} volume {volume:?}: only hostPath, emptyDir and persistentVolumeClaim volumes have a host directory"
        )))
    }

    async fn pvc_dir(&self, ns: &str, pvc: &str) -> Result<PathBuf, Error> {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let claim = claims.get_opt(pvc).await?.ok_or_else(|| {
            Error::NotReady(format!("PersistentVolumeClaim {ns}/{pvc} does not exist"))
        })?;
        let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        let pv_name = claim.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|_| bound);
        let Some(pv_name) = pv_name else {
            return Err(Error::NotReady(format!(
                "PersistentVolumeClaim {ns}/{pvc} is not bound to a volume yet"
            )));
        };
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv = volumes.get_opt(&pv_name).await?.ok_or_else(|| {
            Error::NotReady(format!(
                "PersistentVolume {pv_name} of PersistentVolumeClaim {ns}/{pvc} does not exist"
            ))
        })?;
        let spec = pv.spec.as_ref();
        if let Some(host) = spec.and_then(|s| s.host_path.as_ref()) {
            return Ok(PathBuf::from(&host.path));
        }
        if let Some(local) = spec.and_then(|s| s.local.as_ref()) {
            return Ok(PathBuf::from(&local.path));
        }
        Err(Error::Invalid(format!(
            "PersistentVolume {pv_name} (claimed by {ns}/{pvc}) has neither hostPath nor local: \
             embedded mode can only reach volumes on this host"
        )))
    }

    async fn snapshot_dir(&self, driver: &str, handle: &str) -> Result<PathBuf, Error> {
        if driver != DRIVER {
            return Err(Error::Invalid(format!(
                "the snapshot {handle:?} is of CSI driver {driver:?}; embedded mode reads only \
                 the snapshots of its own driver {DRIVER}"
            )));
        }
        let driver = self.snapshots.clone();
        let wanted = handle.to_owned();
        crate::snapshot::driver::blocking(move || driver.snapshot_data_dir(&wanted))
            .await?
            .ok_or_else(|| {
                Error::Invalid(format!("driver {DRIVER} has no snapshot {handle:?} (deleted?)"))
            })
    }
}
