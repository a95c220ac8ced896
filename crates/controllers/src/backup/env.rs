//! The environment of backup Jobs, merged in upstream's order: target container
//! env, `DP_*` vars, connection vars, ActionSet env, `KB_*` vars, and BackupMethod env last.
//! A later entry with the same name replaces an earlier one in place, so the list has no
//! duplicates and the winner is the one upstream's order makes win.

use holdfast_api::kubeblocks::Backup;
use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, EnvVarSource, Pod, SecretKeySelector,
};
use kube::ResourceExt;

use super::request::Request;
use crate::Context;

/// Where the backupData script writes its result (a partial BackupStatus JSON).
pub const BACKUP_INFO_FILE: &str = "/dp-manager/backup.info";
/// The pod role label KubeBlocks puts on database pods.
const ROLE_LABEL: &str = "kubeblocks.io/role";

/// Adds `add` to `env`: a name already present is replaced where it stands.
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

fn secret_var(name: &str, secret: &str, key: &str) -> EnvVar {
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

/// The container of `pod` named `name`, or its first container.
pub fn target_container<'a>(pod: &'a Pod, name: Option<&str>) -> Option<&'a Container> {
    let containers = &pod.spec.as_ref()?.containers;
    match name {
        Some(name) => containers.iter().find(|c| c.name == name),
        None => containers.first(),
    }
}

/// Env and envFrom of a backupData (or hook Job) container working on `pod`.
pub fn backup_env(ctx: &Context, req: &Request, pod: &Pod) -> (Vec<EnvVar>, Vec<EnvFromSource>) {
    let container = target_container(pod, None);
    let mut env: Vec<EnvVar> = Vec::new();
    merge(&mut env, container.and_then(|c| c.env.clone()).unwrap_or_default());
    let mut env_from = container.and_then(|c| c.env_from.clone()).unwrap_or_default();

    let pod_name = pod.name_any();
    let base_path = req.base_path(&pod_name);
    let mut dp =
        vec![var("DP_BACKUP_NAME", req.backup.name_any()), var("DP_TARGET_POD_NAME", &pod_name)];
    if let Some(role) = pod.labels().get(ROLE_LABEL) {
        dp.push(var("DP_TARGET_POD_ROLE", role));
    }
    dp.push(var("DP_BACKUP_BASE_PATH", &base_path));
    dp.push(var("DP_BACKUP_INFO_FILE", BACKUP_INFO_FILE));
    if let Some(ttl) = req.backup.spec.retention_period.as_deref().filter(|t| !t.is_empty()) {
        dp.push(var("DP_TTL", ttl));
    }
    dp.push(var("DATASAFED_BACKEND_BASE_PATH", &base_path));
    dp.push(var("DP_DATASAFED_BIN_PATH", ctx.bin_dir().to_string_lossy()));
    if let Some(chain) = &req.chain {
        dp.push(var("DP_PARENT_BACKUP_NAME", &chain.parent));
        dp.push(var("DP_BASE_BACKUP_NAME", &chain.base));
        dp.push(var("DP_BACKUP_ROOT_PATH", req.root_path()));
        dp.push(var("DP_TARGET_RELATIVE_PATH", req.target_relative_path(&pod_name)));
    }
    merge(&mut env, dp);
    merge(&mut env, connection_env(req, pod));
    merge(&mut env, req.action_set.spec.env.clone().unwrap_or_default());
    env_from.extend(req.action_set.spec.env_from.clone().unwrap_or_default());
    merge(&mut env, kb_env(&req.backup));
    merge(&mut env, req.method.env.clone().unwrap_or_default());
    (env, env_from)
}

/// Env of a preDelete Job: where the data is, who it is, and how to reach the database if the
/// pod still exists.
pub fn pre_delete_env(
    ctx: &Context,
    req: &Request,
    pod: Option<&Pod>,
    pod_name: &str,
) -> Vec<EnvVar> {
    let base_path = req.base_path(pod_name);
    let mut env = vec![
        var("DP_BACKUP_NAME", req.backup.name_any()),
        var("DP_BACKUP_BASE_PATH", &base_path),
        var("DATASAFED_BACKEND_BASE_PATH", &base_path),
        var("DP_DATASAFED_BIN_PATH", ctx.bin_dir().to_string_lossy()),
    ];
    if let Some(pod) = pod {
        merge(&mut env, connection_env(req, pod));
    }
    merge(&mut env, req.action_set.spec.env.clone().unwrap_or_default());
    merge(&mut env, req.method.env.clone().unwrap_or_default());
    env
}

/// `DP_DB_HOST`, `DP_DB_PORT`, `DP_DB_USER`, `DP_DB_PASSWORD` from the target's connection
/// credential Secret (as secretKeyRef, so the value never lands in the Job object).
fn connection_env(req: &Request, pod: &Pod) -> Vec<EnvVar> {
    let mut env = Vec::new();
    let cred = req.target.connection_credential.as_ref();
    match cred.and_then(|c| c.host_key.as_deref().map(|k| (c, k))) {
        Some((c, key)) => env.push(secret_var("DP_DB_HOST", &c.secret_name, key)),
        None => env.push(var("DP_DB_HOST", pod_host(pod))),
    }
    match cred.and_then(|c| c.port_key.as_deref().map(|k| (c, k))) {
        Some((c, key)) => env.push(secret_var("DP_DB_PORT", &c.secret_name, key)),
        None => {
            let port = target_container(pod, None)
                .and_then(|c| c.ports.as_ref())
                .and_then(|p| p.first())
                .map(|p| p.container_port);
            if let Some(port) = port {
                env.push(var("DP_DB_PORT", port.to_string()));
            }
        }
    }
    if let Some(c) = cred {
        env.push(secret_var("DP_DB_USER", &c.secret_name, &c.username_key));
        env.push(secret_var("DP_DB_PASSWORD", &c.secret_name, &c.password_key));
    }
    env
}

/// How a Job reaches the target pod: its IP, else its DNS name (hostname.subdomain) as upstream,
/// else this host — embedded pods are descriptions of processes on this host, with no IP.
fn pod_host(pod: &Pod) -> String {
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

/// `KB_*` vars copied from the Backup's labels, plus its namespace.
fn kb_env(backup: &Backup) -> Vec<EnvVar> {
    let labels = backup.labels();
    let mut env = Vec::new();
    for (name, label) in [
        ("KB_CLUSTER_UID", "apps.kubeblocks.io/cluster-uid"),
        ("KB_CLUSTER_NAME", "app.kubernetes.io/instance"),
        ("KB_COMP_NAME", "apps.kubeblocks.io/component-name"),
    ] {
        if let Some(value) = labels.get(label) {
            env.push(var(name, value));
        }
    }
    env.push(var("KB_NAMESPACE", backup.namespace().unwrap_or_default()));
    env
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
