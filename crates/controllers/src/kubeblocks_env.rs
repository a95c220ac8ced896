//! What the Jobs of KubeBlocks actions (backup, preDelete, delete, restore, postReady) are given
//! besides their command: the `DP_*` variables saying where the data is, the `DP_DB_*` variables
//! saying how to reach the database, merged in upstream's order, and how the Job reaches the
//! repo ([`RepoAccess`]): its datasafed tool configuration mounted where datasafed looks for it,
//! and for Mount access the repo's claim with datasafed pointed at it.

use std::path::Path;

use holdfast_api::kubeblocks::backup_policy::ConnectionCredential;
use k8s_openapi::api::core::v1::{
    EnvVar, EnvVarSource, PersistentVolumeClaimVolumeSource, Pod, SecretKeySelector,
    SecretVolumeSource, Volume, VolumeMount,
};

use crate::target_pod;

/// The volume of the repo's tool-config Secret.
pub const TOOL_CONFIG_VOLUME: &str = "dp-tool-config";
/// Where datasafed looks for `datasafed.conf`.
pub const TOOL_CONFIG_MOUNT: &str = "/etc/datasafed";
/// The volume of a Mount repo's claim (upstream's name).
pub const BACKUP_DATA_VOLUME: &str = "dp-backup-data";
/// Where a Mount repo's claim is mounted (upstream's path).
pub const BACKUP_DATA_MOUNT: &str = "/backupdata";
/// The variable that makes datasafed use its local backend at that directory.
pub const LOCAL_BACKEND_PATH_ENV: &str = "DATASAFED_LOCAL_BACKEND_PATH";

/// How a Job reaches a BackupRepo, in the Job's namespace. Both access methods mount the repo's
/// tool-config Secret at [`TOOL_CONFIG_MOUNT`]: it holds the repository password (and, for Tool
/// access, the storage). Mount access adds the repo's claim at [`BACKUP_DATA_MOUNT`] and
/// [`LOCAL_BACKEND_PATH_ENV`] naming it, as upstream injects it, so datasafed stores into the
/// claim with the same encryption as any other repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoAccess {
    /// The tool-config Secret.
    pub tool_config_secret: String,
    /// Mount access: the repo's claim.
    pub backup_pvc: Option<String>,
}

impl RepoAccess {
    /// The pod volumes.
    pub fn volumes(&self) -> Vec<Volume> {
        let mut volumes = vec![Volume {
            name: TOOL_CONFIG_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(self.tool_config_secret.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        }];
        volumes.extend(self.backup_pvc.iter().map(|claim| Volume {
            name: BACKUP_DATA_VOLUME.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: None,
            }),
            ..Volume::default()
        }));
        volumes
    }

    /// The container's mounts of [`RepoAccess::volumes`]; the tool config read-only.
    pub fn mounts(&self) -> Vec<VolumeMount> {
        let mut mounts = vec![VolumeMount {
            name: TOOL_CONFIG_VOLUME.into(),
            mount_path: TOOL_CONFIG_MOUNT.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }];
        if self.backup_pvc.is_some() {
            mounts.push(VolumeMount {
                name: BACKUP_DATA_VOLUME.into(),
                mount_path: BACKUP_DATA_MOUNT.into(),
                ..VolumeMount::default()
            });
        }
        mounts
    }

    /// The container's env: for Mount access, datasafed's local backend at the claim. Merged
    /// last, as upstream appends it to the finished container.
    pub fn env(&self) -> Vec<EnvVar> {
        self.backup_pvc.iter().map(|_| var(LOCAL_BACKEND_PATH_ENV, BACKUP_DATA_MOUNT)).collect()
    }
}

/// Adds `add` to `env`: a name already present is replaced where it stands, so the list has no
/// duplicates and the later source (in upstream's order) wins.
pub fn merge(env: &mut Vec<EnvVar>, add: impl IntoIterator<Item = EnvVar>) {
    for var in add {
        match env.iter_mut().find(|e| e.name == var.name) {
            Some(slot) => *slot = var,
            None => env.push(var),
        }
    }
}

/// A plain `name=value` variable.
pub fn var(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), value_from: None }
}

/// A variable read from a Secret's key when the container starts (so the value never lands in
/// the Job object).
pub fn secret_var(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// Where one backup's data is and how to reach it: `DP_BACKUP_NAME`, `DP_BACKUP_BASE_PATH` (and
/// datasafed's `DATASAFED_BACKEND_BASE_PATH`, the same directory) and `DP_DATASAFED_BIN_PATH`.
pub fn data_env(backup_name: &str, base_path: &str, bin_dir: &Path) -> Vec<EnvVar> {
    vec![
        var("DP_BACKUP_NAME", backup_name),
        var("DP_BACKUP_BASE_PATH", base_path),
        var("DATASAFED_BACKEND_BASE_PATH", base_path),
        var("DP_DATASAFED_BIN_PATH", bin_dir.to_string_lossy()),
    ]
}

/// `DP_DB_HOST`, `DP_DB_PORT`, `DP_DB_USER`, `DP_DB_PASSWORD`: from the connection credential
/// Secret (as secretKeyRef) where it names a key, else from the target pod (its address, its
/// first container's first port).
pub fn connection_env(cred: Option<&ConnectionCredential>, pod: Option<&Pod>) -> Vec<EnvVar> {
    let mut env = Vec::new();
    match cred.and_then(|c| c.host_key.as_deref().map(|k| (c, k))) {
        Some((c, key)) => env.push(secret_var("DP_DB_HOST", &c.secret_name, key)),
        None => env.extend(pod.map(|pod| var("DP_DB_HOST", pod_host(pod)))),
    }
    match cred.and_then(|c| c.port_key.as_deref().map(|k| (c, k))) {
        Some((c, key)) => env.push(secret_var("DP_DB_PORT", &c.secret_name, key)),
        None => {
            let port = pod
                .and_then(|p| target_pod::container(p, None))
                .and_then(|c| c.ports.as_ref())
                .and_then(|p| p.first())
                .map(|p| p.container_port);
            env.extend(port.map(|port| var("DP_DB_PORT", port.to_string())));
        }
    }
    if let Some(c) = cred {
        env.push(secret_var("DP_DB_USER", &c.secret_name, &c.username_key));
        env.push(secret_var("DP_DB_PASSWORD", &c.secret_name, &c.password_key));
    }
    env
}

/// How a Job reaches a pod: its IP, else its DNS name (hostname.subdomain) as upstream, else
/// this host — embedded pods are descriptions of processes on this host, with no IP.
pub fn pod_host(pod: &Pod) -> String {
    if let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).filter(|ip| !ip.is_empty())
    {
        return ip;
    }
    let spec = pod.spec.as_ref();
    match spec.and_then(|s| s.hostname.clone()).filter(|h| !h.is_empty()) {
        Some(host) => match spec.and_then(|s| s.subdomain.clone()).filter(|s| !s.is_empty()) {
            Some(sub) => format!("{host}.{sub}"),
            None => host,
        },
        None => "127.0.0.1".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec};

    fn value(env: &[EnvVar], name: &str) -> Option<String> {
        env.iter().find(|e| e.name == name).and_then(|e| e.value.clone())
    }

    #[test]
    fn merge_replaces_in_place_and_appends_new_names() {
        let mut env = vec![var("A", "1"), var("B", "2")];
        merge(&mut env, [var("B", "3"), var("C", "4"), var("A", "5")]);
        let pairs: Vec<(String, String)> =
            env.into_iter().map(|e| (e.name, e.value.unwrap_or_default())).collect();
        assert_eq!(
            pairs,
            [("A".into(), "5".into()), ("B".into(), "3".into()), ("C".into(), "4".into())]
        );
    }

    #[test]
    fn pod_host_prefers_ip_then_dns_then_this_host() {
        let mut pod = Pod::default();
        assert_eq!(pod_host(&pod), "127.0.0.1");
        let spec = pod.spec.get_or_insert_default();
        spec.hostname = Some("pg-0".into());
        spec.subdomain = Some("pg-headless".into());
        assert_eq!(pod_host(&pod), "pg-0.pg-headless");
        pod.status.get_or_insert_default().pod_ip = Some("10.0.0.7".into());
        assert_eq!(pod_host(&pod), "10.0.0.7");
    }

    #[test]
    fn connection_env_takes_secret_keys_first_then_the_pod() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "postgres".into(),
                    ports: Some(vec![ContainerPort { container_port: 5432, ..Default::default() }]),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        let env = connection_env(None, Some(&pod));
        assert_eq!(value(&env, "DP_DB_HOST").as_deref(), Some("127.0.0.1"));
        assert_eq!(value(&env, "DP_DB_PORT").as_deref(), Some("5432"));
        assert!(connection_env(None, None).is_empty());
        let cred = ConnectionCredential {
            secret_name: "pg-account".into(),
            username_key: "username".into(),
            password_key: "password".into(),
            host_key: Some("host".into()),
            port_key: None,
        };
        let env = connection_env(Some(&cred), Some(&pod));
        let host = env.iter().find(|e| e.name == "DP_DB_HOST").unwrap();
        let from = host.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).unwrap();
        assert_eq!((from.name.as_str(), from.key.as_str()), ("pg-account", "host"));
        assert_eq!(value(&env, "DP_DB_PORT").as_deref(), Some("5432"));
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["DP_DB_HOST", "DP_DB_PORT", "DP_DB_USER", "DP_DB_PASSWORD"]);
    }

    #[test]
    fn mount_access_adds_the_claim_and_the_local_backend() {
        let tool = RepoAccess { tool_config_secret: "tool-config-r".into(), backup_pvc: None };
        assert_eq!(tool.volumes().len(), 1);
        assert_eq!(tool.mounts()[0].mount_path, TOOL_CONFIG_MOUNT);
        assert!(tool.env().is_empty());
        let mount = RepoAccess { backup_pvc: Some("pvc-r".into()), ..tool };
        let volumes = mount.volumes();
        let claim = volumes[1].persistent_volume_claim.as_ref().unwrap();
        assert_eq!(
            (volumes[1].name.as_str(), claim.claim_name.as_str()),
            (BACKUP_DATA_VOLUME, "pvc-r")
        );
        let paths: Vec<String> = mount.mounts().into_iter().map(|m| m.mount_path).collect();
        assert_eq!(paths, [TOOL_CONFIG_MOUNT, BACKUP_DATA_MOUNT]);
        assert_eq!(value(&mount.env(), LOCAL_BACKEND_PATH_ENV).as_deref(), Some(BACKUP_DATA_MOUNT));
    }

    #[test]
    fn data_env_names_the_same_directory_for_scripts_and_datasafed() {
        let env = data_env("b1", "/ns/pg/b1", Path::new("/data/bin"));
        assert_eq!(value(&env, "DP_BACKUP_BASE_PATH"), value(&env, "DATASAFED_BACKEND_BASE_PATH"));
        assert_eq!(value(&env, "DP_DATASAFED_BIN_PATH").as_deref(), Some("/data/bin"));
    }
}
