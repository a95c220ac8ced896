//! The user and groups a container's process runs as, decided from its own and its pod's
//! `securityContext` the way the kubelet and the container runtime decide them, and the
//! `fsGroup` ownership the kubelet gives a pod's writable volumes.
//!
//! Embedded mode has no images, so "the image's user" is root, as it is for most images. A server
//! running as root switches each process to the asked user with `setpriv` (util-linux). A server
//! running as an ordinary user is treated like a rootless container runtime seen from the host:
//! every pod user is the server's own user there (`runAsNonRoot` is still checked against the
//! user the pod asks for).

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext};

/// The user, primary group and supplementary groups of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, the primary one included (as a container runtime sets them).
    pub groups: Vec<u32>,
    /// The home directory the runtime gives a process without `HOME`: the account's, else `/`.
    pub home: String,
}

impl Identity {
    /// The `setpriv` arguments that switch to this identity before `--`.
    pub fn setpriv_args(&self) -> Vec<String> {
        let groups = self.groups.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        vec![
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            format!("--groups={groups}"),
        ]
    }
}

/// Who the server runs as: the owner of `/proc/self`, its effective user and group.
pub fn server_identity() -> (u32, u32) {
    std::fs::metadata("/proc/self").map_or((0, 0), |m| (m.uid(), m.gid()))
}

/// Whom a container runs as: `None` when that is the server's own user (no switch needed).
///
/// # Errors
/// The reason the container cannot start as its securityContext asks, in the kubelet's words
/// where it has some.
pub fn container_identity(
    pod: &Pod,
    c: &Container,
    server: (u32, u32),
) -> Result<Option<Identity>, String> {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = c.security_context.as_ref();
    let uid = sc.and_then(|s| s.run_as_user).or(pod_sc.and_then(|s| s.run_as_user));
    let gid = sc.and_then(|s| s.run_as_group).or(pod_sc.and_then(|s| s.run_as_group));
    let non_root = sc.and_then(|s| s.run_as_non_root).or(pod_sc.and_then(|s| s.run_as_non_root));
    let uid = id(uid.unwrap_or(0), "runAsUser")?;
    if non_root == Some(true) && uid == 0 {
        return Err("container has runAsNonRoot and image will run as root".into());
    }
    let gid = gid.map(|g| id(g, "runAsGroup")).transpose()?;
    let pod_groups = pod_sc
        .map(pod_groups)
        .unwrap_or_default()
        .into_iter()
        .map(|g| id(g, "supplementalGroups/fsGroup"))
        .collect::<Result<Vec<_>, _>>()?;
    if server.0 != 0 {
        // Rootless, as a rootless container runtime looks from the host: whatever user a pod
        // runs as inside, its files and processes are the server user's outside.
        return Ok(None);
    }
    let account = Account::of(uid);
    let gid = gid.unwrap_or_else(|| account.as_ref().map_or(0, |a| a.gid));
    let mut groups = BTreeSet::from([gid]);
    if let Some(a) = &account {
        groups.extend(a.member_of());
    }
    groups.extend(pod_groups);
    if uid == 0 && gid == 0 && groups.iter().all(|g| *g == 0) {
        return Ok(None);
    }
    let home = account.map_or_else(|| "/".into(), |a| a.home);
    Ok(Some(Identity { uid, gid, groups: groups.into_iter().collect(), home }))
}

fn pod_groups(sc: &PodSecurityContext) -> Vec<i64> {
    sc.supplemental_groups.iter().flatten().copied().chain(sc.fs_group).collect()
}

fn id(value: i64, field: &str) -> Result<u32, String> {
    u32::try_from(value).map_err(|_| format!("securityContext.{field} {value} is not a valid id"))
}

/// An entry of `/etc/passwd`.
struct Account {
    name: String,
    gid: u32,
    home: String,
}

impl Account {
    fn of(uid: u32) -> Option<Account> {
        let text = std::fs::read_to_string("/etc/passwd").ok()?;
        text.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() >= 7 && f[2].parse() == Ok(uid)).then(|| Account {
                name: f[0].into(),
                gid: f[3].parse().unwrap_or(0),
                home: f[5].into(),
            })
        })
    }

    /// The groups `/etc/group` lists this account as a member of.
    fn member_of(&self) -> Vec<u32> {
        let text = std::fs::read_to_string("/etc/group").unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.len() >= 4 && f[3].split(',').any(|m| m == self.name))
                    .then(|| f[2].parse().ok())
                    .flatten()
            })
            .collect()
    }
}

/// When the kubelet changes a volume's ownership for `fsGroup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangePolicy {
    /// Every time the pod starts (`Always`, the default).
    Always,
    /// Only when the volume's root does not already carry the group and permissions.
    OnRootMismatch,
}

/// The pod's `fsGroup` and its change policy, if it sets one.
pub fn fs_group(pod: &Pod) -> Result<Option<(u32, ChangePolicy)>, String> {
    let Some(sc) = pod.spec.as_ref().and_then(|s| s.security_context.as_ref()) else {
        return Ok(None);
    };
    let Some(group) = sc.fs_group else { return Ok(None) };
    let policy = match sc.fs_group_change_policy.as_deref() {
        Some("OnRootMismatch") => ChangePolicy::OnRootMismatch,
        _ => ChangePolicy::Always,
    };
    Ok(Some((id(group, "fsGroup")?, policy)))
}

/// Gives `dir` and everything in it to `group` as the kubelet does for `fsGroup`: group-owned,
/// readable and writable by the group, directories setgid (so new files inherit the group) and
/// searchable. Symbolic links are not followed.
///
/// # Errors
/// A path whose ownership or mode cannot be changed.
pub fn apply_fs_group(dir: &Path, group: u32, policy: ChangePolicy) -> std::io::Result<()> {
    if policy == ChangePolicy::OnRootMismatch && root_matches(dir, group)? {
        return Ok(());
    }
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            continue;
        }
        std::os::unix::fs::lchown(&path, None, Some(group))?;
        let mode = meta.permissions().mode() & 0o7777;
        let wanted = if meta.is_dir() {
            mode | 0o2000 | 0o060 | 0o010
        } else {
            // Group execute only where the owner may execute.
            mode | 0o060 | if mode & 0o100 != 0 { 0o010 } else { 0 }
        };
        if wanted != mode {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(wanted))?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}

/// Whether the volume's root already has the group, group rwx and setgid (the kubelet's
/// `OnRootMismatch` test).
fn root_matches(dir: &Path, group: u32) -> std::io::Result<bool> {
    let meta = std::fs::metadata(dir)?;
    let mode = meta.permissions().mode();
    Ok(meta.gid() == group && mode & 0o2070 == 0o2070)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodSpec, SecurityContext};

    use super::*;

    fn pod(sc: Option<PodSecurityContext>) -> Pod {
        Pod { spec: Some(PodSpec { security_context: sc, ..PodSpec::default() }), ..Pod::default() }
    }

    fn container(sc: Option<SecurityContext>) -> Container {
        Container { name: "c".into(), security_context: sc, ..Container::default() }
    }

    #[test]
    fn the_container_overrides_the_pod_and_groups_collect_fs_group() {
        let p = pod(Some(PodSecurityContext {
            run_as_user: Some(1000),
            run_as_group: Some(3000),
            fs_group: Some(2000),
            supplemental_groups: Some(vec![4000]),
            ..PodSecurityContext::default()
        }));
        let c = container(Some(SecurityContext { run_as_user: Some(1001), ..Default::default() }));
        let who = container_identity(&p, &c, (0, 0)).unwrap().unwrap();
        assert_eq!(who.uid, 1001);
        assert_eq!(who.gid, 3000);
        assert!([2000, 3000, 4000].iter().all(|g| who.groups.contains(g)), "{who:?}");
        assert_eq!(who.setpriv_args()[0], "--reuid=1001");
    }

    #[test]
    fn root_needs_no_switch_and_run_as_non_root_refuses_root() {
        assert_eq!(container_identity(&pod(None), &container(None), (0, 0)), Ok(None));
        let c =
            container(Some(SecurityContext { run_as_non_root: Some(true), ..Default::default() }));
        let err = container_identity(&pod(None), &c, (0, 0)).unwrap_err();
        assert_eq!(err, "container has runAsNonRoot and image will run as root");
    }

    #[test]
    fn a_rootless_server_runs_every_pod_as_itself_but_still_checks_run_as_non_root() {
        assert_eq!(container_identity(&pod(None), &container(None), (1500, 1500)), Ok(None));
        let c = container(Some(SecurityContext { run_as_user: Some(999), ..Default::default() }));
        assert_eq!(container_identity(&pod(None), &c, (1500, 1500)), Ok(None));
        let c =
            container(Some(SecurityContext { run_as_non_root: Some(true), ..Default::default() }));
        assert!(container_identity(&pod(None), &c, (1500, 1500)).is_err());
    }

    #[test]
    fn fs_group_makes_a_volume_group_writable_and_setgid() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
        let file = sub.join("f");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        // The test's own group: changing to it needs no privilege.
        let group = std::fs::metadata(dir.path()).unwrap().gid();
        apply_fs_group(dir.path(), group, ChangePolicy::Always).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&sub), 0o2770);
        assert_eq!(mode(&file), 0o660);
        assert!(root_matches(dir.path(), group).unwrap());
    }
}
