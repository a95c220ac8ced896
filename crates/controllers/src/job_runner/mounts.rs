//! Pod volumes on the host and the bind mounts that make each `volumeMount` visible at its
//! `mountPath` inside a private mount namespace.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, Pod, Secret, Volume};
use kube::api::Api;

use super::identity;
use crate::volume::{VolumeResolver, empty_dir_path};
use crate::{Context, Error};

/// One bind mount: host `source` appears at `target` (an absolute path as the process sees it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// The scratch directory of a pod: `<data_dir>/jobs/<ns>/<pod>`.
pub fn pod_scratch_dir(ctx: &Context, ns: &str, pod: &str) -> PathBuf {
    ctx.jobs_dir().join(ns).join(pod)
}

/// Puts every volume of `pod` on the host and returns its directory by volume name.
/// Secret and ConfigMap volumes are written as files (with their `defaultMode`) into the pod's private
/// scratch directory.
pub async fn prepare_volumes(
    ctx: &Context,
    resolver: &impl VolumeResolver,
    pod: &Pod,
) -> Result<HashMap<String, PathBuf>, Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let mut dirs = HashMap::new();
    let fs_group = identity::fs_group(pod).map_err(Error::Invalid)?;
    for vol in pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
        let dir = if vol.empty_dir.is_some() {
            let dir = empty_dir_path(ctx, ns, name, &vol.name);
            create_dir(&dir)?;
            give_fs_group(vol, &dir, fs_group)?;
            dir
        } else if let Some(secret) = &vol.secret {
            let secret_name = secret.secret_name.clone().unwrap_or_default();
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
            let files = match api.get_opt(&secret_name).await? {
                Some(s) => {
                    let mut files: BTreeMap<String, Vec<u8>> =
                        s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
                    files.extend(
                        s.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into())),
                    );
                    files
                }
                None if secret.optional.unwrap_or(false) => BTreeMap::new(),
                None => {
                    return Err(Error::NotReady(format!(
                        "volume {}: Secret {ns}/{secret_name} not found",
                        vol.name
                    )));
                }
            };
            let modes = FileModes { default: secret.default_mode, fs_group: fs_group.map(|g| g.0) };
            materialise(ctx, ns, name, vol, files, secret.items.as_deref(), modes)?
        } else if let Some(cm) = &vol.config_map {
            let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
            let files = match api.get_opt(&cm.name).await? {
                Some(c) => {
                    let mut files: BTreeMap<String, Vec<u8>> = c
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect();
                    files.extend(
                        c.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)),
                    );
                    files
                }
                None if cm.optional.unwrap_or(false) => BTreeMap::new(),
                None => {
                    return Err(Error::NotReady(format!(
                        "volume {}: ConfigMap {ns}/{} not found",
                        vol.name, cm.name
                    )));
                }
            };
            let modes = FileModes { default: cm.default_mode, fs_group: fs_group.map(|g| g.0) };
            materialise(ctx, ns, name, vol, files, cm.items.as_deref(), modes)?
        } else if let Some(host) = &vol.host_path {
            let dir = PathBuf::from(&host.path);
            match host.type_.as_deref() {
                Some("DirectoryOrCreate") => create_dir(&dir)?,
                Some("Directory") if !dir.is_dir() => {
                    return Err(Error::Invalid(format!(
                        "volume {}: hostPath {} is not a directory",
                        vol.name, host.path
                    )));
                }
                _ => {}
            }
            dir
        } else if vol.persistent_volume_claim.is_some() {
            let dir = resolver.pod_volume_dir(pod, &vol.name).await?;
            // As the kubelet: claims and emptyDirs take the pod's fsGroup; a hostPath keeps the
            // host's ownership.
            give_fs_group(vol, &dir, fs_group)?;
            dir
        } else {
            return Err(Error::Invalid(format!(
                "volume {}: embedded mode supports emptyDir, secret, configMap, hostPath and \
                 persistentVolumeClaim volumes",
                vol.name
            )));
        };
        dirs.insert(vol.name.clone(), dir);
    }
    Ok(dirs)
}

/// Applies the pod's `fsGroup`, if any, to a claim or emptyDir volume.
fn give_fs_group(
    vol: &Volume,
    dir: &Path,
    fs_group: Option<(u32, identity::ChangePolicy)>,
) -> Result<(), Error> {
    let Some((group, policy)) = fs_group else { return Ok(()) };
    match identity::apply_fs_group(dir, group, policy) {
        // A server that is not root may only give files to its own groups (see `identity`).
        Err(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied
                && identity::server_identity().0 != 0 =>
        {
            tracing::warn!(volume = %vol.name, group, error = %e, "fsGroup not applied: the server is not root");
            Ok(())
        }
        other => other.map_err(Error::io(format!(
            "volume {}: cannot apply fsGroup {group} to {}",
            vol.name,
            dir.display()
        ))),
    }
}

/// The modes and group the kubelet gives the files of a Secret or ConfigMap volume.
#[derive(Debug, Clone, Copy)]
struct FileModes {
    /// `defaultMode`; 0644 when unset, as upstream.
    default: Option<i32>,
    /// The pod's `fsGroup`, which owns the files when set.
    fs_group: Option<u32>,
}

/// Writes `files` (all keys, or just `items`) into the volume's scratch directory, with the
/// modes the kubelet gives them (`defaultMode`, an item's `mode`): the processes may run as
/// another user than the server. The scratch directory itself stays private to the server; the
/// container reaches the files only through its bind mount.
fn materialise(
    ctx: &Context,
    ns: &str,
    pod: &str,
    vol: &Volume,
    files: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    modes: FileModes,
) -> Result<PathBuf, Error> {
    let dir = empty_dir_path(ctx, ns, pod, &vol.name);
    create_dir(&dir)?;
    let default_mode = modes.default.unwrap_or(0o644);
    let selected: Vec<(String, &Vec<u8>, i32)> = match items {
        Some(items) => {
            let mut out = Vec::new();
            for item in items {
                let data = files.get(&item.key).ok_or_else(|| {
                    Error::NotReady(format!("volume {}: no key {:?}", vol.name, item.key))
                })?;
                out.push((item.path.clone(), data, item.mode.unwrap_or(default_mode)));
            }
            out
        }
        None => files.iter().map(|(k, v)| (k.clone(), v, default_mode)).collect(),
    };
    for (rel, data, mode) in selected {
        let rel = relative(&rel).ok_or_else(|| {
            Error::Invalid(format!("volume {}: item path {rel:?} must be relative", vol.name))
        })?;
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            create_dir(parent)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(Error::io(format!("cannot create {}", path.display())))?;
        file.write_all(data).map_err(Error::io(format!("cannot write {}", path.display())))?;
        // Written private first, then opened up to the mode asked: never readable half-written.
        let mode = u32::try_from(mode & 0o777).unwrap_or(0o644);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(Error::io(format!("cannot set the mode of {}", path.display())))?;
        if let Some(group) = modes.fs_group {
            std::os::unix::fs::lchown(&path, None, Some(group))
                .map_err(Error::io(format!("cannot give {} to fsGroup", path.display())))?;
        }
    }
    Ok(dir)
}

/// `path` as a relative path without `..`, or None.
fn relative(path: &str) -> Option<&Path> {
    let p = Path::new(path);
    p.components().all(|c| matches!(c, Component::Normal(_))).then_some(p)
}

fn create_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("cannot create {}", dir.display())))
}

/// The bind mounts of a container, parents before children so nested mount paths stack right.
pub fn container_mounts(
    volume_dirs: &HashMap<String, PathBuf>,
    mounts: &[k8s_openapi::api::core::v1::VolumeMount],
    expand: impl Fn(&str) -> String,
) -> Result<Vec<Mount>, Error> {
    let mut out = Vec::new();
    for m in mounts {
        let dir = volume_dirs.get(&m.name).ok_or_else(|| {
            Error::Invalid(format!("volumeMount {:?}: the pod has no such volume", m.name))
        })?;
        let sub = match (&m.sub_path, &m.sub_path_expr) {
            (Some(s), _) if !s.is_empty() => s.clone(),
            (_, Some(e)) if !e.is_empty() => expand(e),
            _ => String::new(),
        };
        let source = if sub.is_empty() {
            dir.clone()
        } else {
            let rel = relative(&sub).ok_or_else(|| {
                Error::Invalid(format!(
                    "volumeMount {:?}: subPath {sub:?} must be relative",
                    m.name
                ))
            })?;
            let source = dir.join(rel);
            // As the kubelet does: a missing subPath is created as a directory.
            if !source.exists() {
                create_dir(&source)?;
            }
            source
        };
        if !m.mount_path.starts_with('/') {
            return Err(Error::Invalid(format!(
                "volumeMount {:?}: mountPath {:?} must be absolute",
                m.name, m.mount_path
            )));
        }
        out.push(Mount {
            source,
            target: m.mount_path.clone(),
            read_only: m.read_only == Some(true),
        });
    }
    out.sort_by_key(|m| Path::new(&m.target).components().count());
    Ok(out)
}

/// Where the process's view of `path` lives on the host: through the deepest mount containing it,
/// or None when no mount covers it.
pub fn host_path(mounts: &[Mount], path: &str) -> Option<PathBuf> {
    let path = Path::new(path);
    mounts
        .iter()
        .rev()
        .filter_map(|m| path.strip_prefix(&m.target).ok().map(|rest| (m, rest)))
        .max_by_key(|(m, _)| Path::new(&m.target).components().count())
        .map(
            |(m, rest)| {
                if rest.as_os_str().is_empty() { m.source.clone() } else { m.source.join(rest) }
            },
        )
}

/// The `sh` script run inside the new mount namespace: create mount points, bind, remount
/// read-only where asked, change to the working directory, then exec the container command
/// (passed as the script's arguments, so it is never re-parsed by the shell).
pub fn mount_script(mounts: &[Mount], working_dir: Option<&str>) -> String {
    let mut script = String::from("set -e\n");
    for m in mounts {
        let src = quote(&m.source.to_string_lossy());
        let dst = quote(&m.target);
        if m.source.is_dir() {
            script.push_str(&format!("mkdir -p {dst}\n"));
        } else {
            script.push_str(&format!("mkdir -p \"$(dirname {dst})\"\n[ -e {dst} ] || : > {dst}\n"));
        }
        script.push_str(&format!("mount --bind {src} {dst}\n"));
        if m.read_only {
            script.push_str(&format!("mount -o remount,bind,ro {dst}\n"));
        }
    }
    if let Some(wd) = working_dir.filter(|w| !w.is_empty()) {
        script.push_str(&format!("mkdir -p {0}\ncd {0}\n", quote(wd)));
    }
    script.push_str("exec \"$@\"\n");
    script
}

/// Single-quotes `s` for sh.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(source: &str, target: &str) -> Mount {
        Mount { source: source.into(), target: target.into(), read_only: false }
    }

    #[test]
    fn host_path_goes_through_the_deepest_mount() {
        let mounts = vec![mount("/h/a", "/data"), mount("/h/b", "/data/sub")];
        assert_eq!(host_path(&mounts, "/data/x"), Some("/h/a/x".into()));
        assert_eq!(host_path(&mounts, "/data/sub/y"), Some("/h/b/y".into()));
        assert_eq!(host_path(&mounts, "/data/sub"), Some("/h/b".into()));
        assert_eq!(host_path(&mounts, "/database/z"), None);
        assert_eq!(host_path(&mounts, "/dev/termination-log"), None);
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn item_paths_must_stay_inside_the_volume() {
        assert!(relative("a/b").is_some());
        assert!(relative("../x").is_none());
        assert!(relative("/etc/passwd").is_none());
    }
}
