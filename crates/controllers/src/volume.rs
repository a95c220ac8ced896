//! Finding the host directory behind a pod volume (the volume-resolver seam,
//! docs/architecture.md).

use std::future::Future;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Volume};
use kube::api::Api;

use crate::context::Mode;
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

/// The volume named `volume` of `pod`.
fn volume_of<'a>(pod: &'a Pod, volume: &str) -> Result<&'a Volume, Error> {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .and_then(|vs| vs.iter().find(|v| v.name == volume))
        .ok_or_else(|| {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            Error::Invalid(format!("pod {ns}/{name} has no volume {volume:?}"))
        })
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
        let vol = volume_of(pod, volume)?;
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

/// The resolver of `ctx`'s mode: the one seam (with [`crate::executor`]) where the modes differ.
pub fn for_context(ctx: &Context) -> Volumes {
    match ctx.mode {
        Mode::Embedded => Volumes::Embedded(EmbeddedVolumes::new(ctx)),
        Mode::Cluster => Volumes::Kubelet(KubeletVolumes::new(ctx)),
    }
}

/// Either mode's resolver.
#[derive(Clone)]
pub enum Volumes {
    Embedded(EmbeddedVolumes),
    Kubelet(KubeletVolumes),
}

impl VolumeResolver for Volumes {
    async fn pod_volume_dir(&self, pod: &Pod, volume: &str) -> Result<PathBuf, Error> {
        match self {
            Volumes::Embedded(v) => v.pod_volume_dir(pod, volume).await,
            Volumes::Kubelet(v) => v.pod_volume_dir(pod, volume).await,
        }
    }

    async fn pvc_dir(&self, ns: &str, pvc: &str) -> Result<PathBuf, Error> {
        match self {
            Volumes::Embedded(v) => v.pvc_dir(ns, pvc).await,
            Volumes::Kubelet(v) => v.pvc_dir(ns, pvc).await,
        }
    }

    async fn snapshot_dir(&self, driver: &str, handle: &str) -> Result<PathBuf, Error> {
        match self {
            Volumes::Embedded(v) => v.snapshot_dir(driver, handle).await,
            Volumes::Kubelet(v) => v.snapshot_dir(driver, handle).await,
        }
    }
}

/// The kubelet's plugin directory of CSI volumes: their data is in `<pv>/mount` under it.
const CSI_PLUGIN_DIR: &str = "kubernetes.io~csi";

/// Cluster mode, on a node (`holdfast agent`): a pod's volumes where its kubelet mounted them,
/// `<kubelet-dir>/pods/<pod-uid>/volumes/<plugin>/<dir>`, found as Velero's node agent finds
/// them. `<dir>` is the bound PV's name for a claim (`<pv>/mount` under the CSI plugin), the
/// volume's name otherwise (`<name>/mount` for an inline CSI volume); exactly one plugin
/// directory must hold it. `hostPath` volumes are not under the pod, and are refused (as
/// Velero does). Claims and snapshots that no pod of this node mounts are out of reach.
#[derive(Clone)]
pub struct KubeletVolumes {
    client: kube::Client,
    pods_dir: PathBuf,
}

impl KubeletVolumes {
    pub fn new(ctx: &Context) -> Self {
        Self { client: ctx.client.clone(), pods_dir: ctx.kubelet_dir.join("pods") }
    }
}

impl VolumeResolver for KubeletVolumes {
    async fn pod_volume_dir(&self, pod: &Pod, volume: &str) -> Result<PathBuf, Error> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let uid = pod.metadata.uid.as_deref().filter(|u| !u.is_empty()).ok_or_else(|| {
            Error::Invalid(format!("pod {ns}/{name} has no uid: it is not a pod the cluster runs"))
        })?;
        let vol = volume_of(pod, volume)?;
        if vol.host_path.is_some() {
            return Err(Error::Invalid(format!(
                "pod {ns}/{name} volume {volume:?} is a hostPath volume: it is not mounted under \
                 the pod, so a node agent cannot back it up (as with Velero)"
            )));
        }
        let (dir, inline_csi) = match &vol.persistent_volume_claim {
            Some(claim) => (bound_volume(&self.client, ns, &claim.claim_name).await?, false),
            None => (volume.to_string(), vol.csi.is_some()),
        };
        let volumes = self.pods_dir.join(uid).join("volumes");
        // Not there yet is waited for (the kubelet mounts a pod's volumes before its containers
        // start, after the request may have been made), up to the move's prepare timeout.
        let not_yet = |e: String| {
            Error::NotReady(format!(
                "pod {ns}/{name} volume {volume:?}: {e} (is the pod running on this node, and \
                 the kubelet's directory --kubelet-dir mounted into the agent?)"
            ))
        };
        let found = find_mounted(&volumes, &dir)
            .map_err(|e| Error::Invalid(format!("pod {ns}/{name} volume {volume:?}: {e}")))?
            .ok_or_else(|| not_yet(format!("no {}/*/{dir}", volumes.display())))?;
        let csi =
            inline_csi || found.parent().and_then(Path::file_name) == Some(CSI_PLUGIN_DIR.as_ref());
        if !csi {
            return Ok(found);
        }
        // Never a `mount` the restore made itself: data written there would sit on the node's
        // disk under the volume the driver mounts later.
        let mount = found.join("mount");
        if !mount.is_dir() {
            return Err(not_yet(format!("{} is not mounted yet", mount.display())));
        }
        Ok(mount)
    }

    async fn pvc_dir(&self, ns: &str, pvc: &str) -> Result<PathBuf, Error> {
        Err(Error::Invalid(format!(
            "claim {ns}/{pvc}: on a cluster a node agent reaches a claim only through a pod that \
             mounts it, and holdfast agent does not create such a pod yet (restore into a pod's \
             volume with a PodVolumeRestore instead)"
        )))
    }

    async fn snapshot_dir(&self, driver: &str, handle: &str) -> Result<PathBuf, Error> {
        Err(Error::Invalid(format!(
            "snapshot {handle:?} of CSI driver {driver:?}: on a cluster its data is read through a \
             claim restored from it and mounted by a pod, which holdfast agent does not create yet"
        )))
    }
}

/// The name of the PV bound to claim `ns/pvc`.
async fn bound_volume(client: &kube::Client, ns: &str, pvc: &str) -> Result<String, Error> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let claim = claims.get_opt(pvc).await?.ok_or_else(|| {
        Error::NotReady(format!("PersistentVolumeClaim {ns}/{pvc} does not exist"))
    })?;
    let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    claim.spec.and_then(|s| s.volume_name).filter(|v| bound && !v.is_empty()).ok_or_else(|| {
        Error::NotReady(format!("PersistentVolumeClaim {ns}/{pvc} is not bound to a volume yet"))
    })
}

/// The one `<volumes>/<plugin>/<dir>` that exists: `Ok(None)` while there is none (the pod's
/// volumes not mounted yet), an error when several match or the directory cannot be read.
fn find_mounted(volumes: &Path, dir: &str) -> Result<Option<PathBuf>, String> {
    let plugins = match std::fs::read_dir(volumes) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot list {}: {e}", volumes.display())),
    };
    let mut found = Vec::new();
    for plugin in plugins {
        let plugin = plugin.map_err(|e| format!("cannot list {}: {e}", volumes.display()))?;
        let candidate = plugin.path().join(dir);
        if candidate.is_dir() {
            found.push(candidate);
        }
    }
    match found.len() {
        0 | 1 => Ok(found.pop()),
        _ => Err(format!(
            "{} directories match {}/*/{dir}: {found:?}",
            found.len(),
            volumes.display()
        )),
    }
}
