//! The embedded snapshot driver `holdfast.io/local-path`: the storage side of the snapshot kinds
//! for the volumes the local-path provisioner makes (directories under `<data_dir>/volumes`).
//! What a CSI driver's CreateSnapshot, ListSnapshots and DeleteSnapshot do, it does on the
//! filesystem (docs/snapshots.md):
//!
//! - a snapshot is a copy of the volume's tree taken with [`tree_copy`] (reflinks where the
//!   filesystem has them), kept at `<data_dir>/snapshots/<handle>/data`, with what ListSnapshots
//!   would answer beside it in `snapshot.json`; it never changes after it is taken and shares
//!   nothing writable with the volume, so later writes to the volume do not reach it;
//! - the tree is built under `<data_dir>/snapshots/.staging/<handle>` and renamed into place, so
//!   a snapshot that exists is complete;
//! - restoring (a claim whose `dataSource` is a VolumeSnapshot) and cloning (a claim whose
//!   `dataSource` is a claim) copy a tree into a new volume directory the same way.
//!
//! A volume's handle is its directory relative to `<data_dir>/volumes` (`<ns>/<pvc>-<uid8>`),
//! a snapshot's handle the single name `snapshot-<VolumeSnapshot uid>`; both are checked to stay
//! inside their roots, since a VolumeSnapshotContent's handles are user input.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::api::storage::v1::{CSIDriver, CSIDriverSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use serde::{Deserialize, Serialize};

use super::tree_copy::{self, build_then_rename, copy_tree};
use crate::{Context, Error, object, provisioner};

/// The driver's name: the `driver` of its VolumeSnapshotClass and VolumeSnapshotContents, the
/// name of its `CSIDriver` object, and the local-path provisioner's name.
pub const DRIVER: &str = provisioner::PROVISIONER;

/// What the driver knows of one snapshot (`snapshot.json`): ListSnapshots' answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredSnapshot {
    /// The snapshot's handle (`status.snapshotHandle`).
    pub handle: String,
    /// The handle of the volume it was taken from.
    pub source_volume: String,
    /// When the copy began, in nanoseconds since the Unix epoch: nothing written after it is in
    /// the snapshot.
    pub creation_time: i64,
    /// Logical bytes of the files (the smallest volume it can be restored into).
    pub size_bytes: i64,
}

/// The driver over one data directory. Its methods block (they copy trees): call them from
/// `spawn_blocking` ([`blocking`]).
#[derive(Debug, Clone)]
pub struct LocalPathDriver {
    volumes: PathBuf,
    snapshots: PathBuf,
}

impl LocalPathDriver {
    pub fn new(ctx: &Context) -> LocalPathDriver {
        LocalPathDriver { volumes: ctx.volumes_dir(), snapshots: ctx.snapshots_dir() }
    }

    /// The handle of `pv`'s volume when this driver serves it: a local-path PV whose `hostPath`
    /// lies under the volumes directory.
    pub fn volume_handle(&self, pv: &PersistentVolume) -> Option<String> {
        let path = pv.spec.as_ref()?.host_path.as_ref()?.path.as_str();
        let relative = Path::new(path).strip_prefix(&self.volumes).ok()?;
        let handle = relative.to_str()?.to_owned();
        self.volume_dir(&handle).ok().map(|_| handle)
    }

    /// The directory of the volume `handle`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a handle that is not a relative path of plain names.
    pub fn volume_dir(&self, handle: &str) -> Result<PathBuf, Error> {
        let plain = Path::new(handle).components().all(
            |c| matches!(c, Component::Normal(name) if !name.to_string_lossy().starts_with('.')),
        );
        if handle.is_empty() || !plain {
            return Err(Error::Invalid(format!(
                "volume handle {handle:?} is not one of driver {DRIVER}'s: it names a directory \
                 under {} as <namespace>/<directory>",
                self.volumes.display()
            )));
        }
        Ok(self.volumes.join(handle))
    }

    /// The directory of the snapshot `handle`.
    fn snapshot_dir(&self, handle: &str) -> Result<PathBuf, Error> {
        let plain = !handle.is_empty()
            && !handle.starts_with('.')
            && !handle.contains('/')
            && handle.len() <= 255;
        if !plain {
            return Err(Error::Invalid(format!(
                "snapshot handle {handle:?} is not one of driver {DRIVER}'s: it is a single \
                 name such as snapshot-<uid>"
            )));
        }
        Ok(self.snapshots.join(handle))
    }

    /// Takes the snapshot `handle` of the volume `volume_handle` at `now_ns`, or returns the one
    /// already taken under that handle (a retried CreateSnapshot is answered, not repeated).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad handle, [`Error::NotReady`] when the volume's directory is
    /// missing, [`Error::Io`] when the copy fails.
    pub fn create_snapshot(
        &self,
        handle: &str,
        volume_handle: &str,
        now_ns: i64,
    ) -> Result<StoredSnapshot, Error> {
        let target = self.snapshot_dir(handle)?;
        if let Some(existing) = self.get_snapshot(handle)? {
            return Ok(existing);
        }
        let volume = self.volume_dir(volume_handle)?;
        if !volume.is_dir() {
            return Err(Error::NotReady(format!(
                "the directory {} of volume {volume_handle} does not exist",
                volume.display()
            )));
        }
        let staging = self.snapshots.join(".staging").join(handle);
        build_then_rename(&staging, &target, |dir| {
            std::fs::create_dir(dir).map_err(Error::io(format!("create {}", dir.display())))?;
            let copied = copy_tree(&volume, &dir.join("data"))?;
            let stored = StoredSnapshot {
                handle: handle.to_owned(),
                source_volume: volume_handle.to_owned(),
                creation_time: now_ns,
                size_bytes: i64::try_from(copied.bytes).unwrap_or(i64::MAX),
            };
            tracing::info!(
                handle,
                volume = volume_handle,
                bytes = copied.bytes,
                files = copied.files,
                cloned = copied.cloned,
                "snapshot taken"
            );
            let json = serde_json::to_vec_pretty(&stored)?;
            let info = dir.join("snapshot.json");
            std::fs::write(&info, json).map_err(Error::io(format!("write {}", info.display())))
        })?;
        self.get_snapshot(handle)?.ok_or_else(|| {
            Error::io(format!("read {}", target.display()))(std::io::Error::other(
                "the snapshot vanished right after it was taken",
            ))
        })
    }

    /// The snapshot `handle`, if the driver has it.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad handle, [`Error::Io`]/[`Error::Json`] for an unreadable one.
    pub fn get_snapshot(&self, handle: &str) -> Result<Option<StoredSnapshot>, Error> {
        let info = self.snapshot_dir(handle)?.join("snapshot.json");
        match std::fs::read(&info) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("read {}", info.display()))(e)),
        }
    }

    /// Deletes the snapshot `handle`; one that is not there is fine. It is first renamed out of
    /// the way, so a deletion cut short never leaves a partial snapshot under its name.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad handle, [`Error::Io`] when it cannot be removed.
    pub fn delete_snapshot(&self, handle: &str) -> Result<(), Error> {
        let dir = self.snapshot_dir(handle)?;
        let trash = self.snapshots.join(".trash");
        std::fs::create_dir_all(&trash)
            .map_err(Error::io(format!("create {}", trash.display())))?;
        let doomed = trash.join(format!("{handle}-{:x}", rand::random::<u64>()));
        match std::fs::rename(&dir, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("move {} aside", dir.display()))(e)),
        }
        tree_copy::remove_tree(&doomed)?;
        tracing::info!(handle, "snapshot deleted");
        Ok(())
    }

    /// The directory holding the files of snapshot `handle`, if the driver has it. Nothing may
    /// write there: the snapshot is immutable.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad handle, else as [`Self::get_snapshot`].
    pub fn snapshot_data_dir(&self, handle: &str) -> Result<Option<PathBuf>, Error> {
        Ok(self.get_snapshot(handle)?.map(|_| self.snapshots.join(handle).join("data")))
    }

    /// Fills the new volume directory `target` with the contents of snapshot `handle`.
    ///
    /// # Errors
    /// [`Error::NotReady`] when the driver has no such snapshot, else as [`copy_tree`].
    pub fn restore_snapshot(&self, handle: &str, target: &Path) -> Result<(), Error> {
        let Some(data) = self.snapshot_data_dir(handle)? else {
            return Err(Error::NotReady(format!("driver {DRIVER} has no snapshot {handle}")));
        };
        populate(target, &data)
    }

    /// Fills the new volume directory `target` with a copy of the volume directory `source`.
    ///
    /// # Errors
    /// As [`copy_tree`].
    pub fn clone_volume(&self, source: &Path, target: &Path) -> Result<(), Error> {
        populate(target, source)
    }

    /// Removes what deletions cut short left in the trash.
    pub fn empty_trash(&self) -> Result<(), Error> {
        tree_copy::remove_tree(&self.snapshots.join(".trash"))
    }
}

/// Makes `target` a copy of `source`, all at once (see [`build_then_rename`]); a `target` that
/// exists was populated by an earlier attempt.
fn populate(target: &Path, source: &Path) -> Result<(), Error> {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let staging = target.with_file_name(format!(".{name}.populating"));
    build_then_rename(&staging, target, |dir| copy_tree(source, dir).map(|_| ()))?;
    Ok(())
}

/// Runs a driver call on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(call).await.map_err(|join| {
        Error::io("snapshot driver call")(std::io::Error::other(join.to_string()))
    })?
}

/// Installs the driver's `CSIDriver` object unless it exists (a user's edits are kept): what a
/// cluster's driver deployment registers, so that StorageProviders and other consumers that
/// look drivers up find this one.
pub async fn ensure_csi_driver(ctx: &Context) -> Result<(), Error> {
    let drivers: Api<CSIDriver> = Api::all(ctx.client.clone());
    let driver = CSIDriver {
        metadata: ObjectMeta {
            name: Some(DRIVER.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".into(),
                "holdfast".into(),
            )])),
            ..ObjectMeta::default()
        },
        spec: CSIDriverSpec {
            // Volumes are host directories: nothing to attach, nothing to learn from the pod.
            attach_required: Some(false),
            pod_info_on_mount: Some(false),
            volume_lifecycle_modes: Some(vec!["Persistent".into()]),
            ..CSIDriverSpec::default()
        },
    };
    object::create_unless_exists(&drivers, &driver).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{HostPathVolumeSource, PersistentVolumeSpec};

    fn driver(root: &Path) -> LocalPathDriver {
        LocalPathDriver { volumes: root.join("volumes"), snapshots: root.join("snapshots") }
    }

    fn host_path_pv(path: &str) -> PersistentVolume {
        PersistentVolume {
            spec: Some(PersistentVolumeSpec {
                host_path: Some(HostPathVolumeSource { path: path.into(), type_: None }),
                ..PersistentVolumeSpec::default()
            }),
            ..PersistentVolume::default()
        }
    }

    #[test]
    fn handles_stay_inside_their_roots() {
        let d = driver(Path::new("/data"));
        assert_eq!(
            d.volume_handle(&host_path_pv("/data/volumes/shop/db-0a1b2c3d")).as_deref(),
            Some("shop/db-0a1b2c3d")
        );
        assert_eq!(d.volume_handle(&host_path_pv("/srv/elsewhere")), None, "not on this host");
        assert_eq!(d.volume_handle(&host_path_pv("/data/volumes/../etc")), None);
        for bad in ["", "/etc", "../x", "shop/../../etc", "shop/.db.populating"] {
            assert!(d.volume_dir(bad).is_err(), "{bad:?}");
        }
        for bad in ["", ".staging", "a/b", ".."] {
            assert!(d.snapshot_dir(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_snapshot_is_taken_once_restored_and_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let d = driver(tmp.path());
        let volume = tmp.path().join("volumes/shop/db-1");
        std::fs::create_dir_all(&volume).unwrap();
        std::fs::write(volume.join("f"), b"before").unwrap();
        let taken = d.create_snapshot("snapshot-1", "shop/db-1", 42).unwrap();
        assert_eq!((taken.size_bytes, taken.creation_time), (6, 42));
        std::fs::write(volume.join("f"), b"after!!").unwrap();
        // Asked again (a retry), the same snapshot is answered.
        assert_eq!(d.create_snapshot("snapshot-1", "shop/db-1", 99).unwrap(), taken);
        let restored = tmp.path().join("volumes/shop/restored-2");
        d.restore_snapshot("snapshot-1", &restored).unwrap();
        assert_eq!(std::fs::read(restored.join("f")).unwrap(), b"before");
        assert!(matches!(d.create_snapshot("snapshot-2", "shop/gone", 1), Err(Error::NotReady(_))));
        d.delete_snapshot("snapshot-1").unwrap();
        d.delete_snapshot("snapshot-1").unwrap();
        assert_eq!(d.get_snapshot("snapshot-1").unwrap(), None);
        assert!(matches!(d.restore_snapshot("snapshot-1", &volume), Err(Error::NotReady(_))));
    }
}
