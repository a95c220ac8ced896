//! The environment of backup Jobs, merged in upstream's order: target container
//! env, `DP_*` vars, connection vars, ActionSet env, `KB_*` vars, BackupMethod env, and last what
//! the repo's access method adds (upstream injects it into the finished container).
//! A later entry with the same name replaces an earlier one in place, so the list has no
//! duplicates and the winner is the one upstream's order makes win.

use holdfast_api::kubeblocks::Backup;
use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, Pod};
use kube::ResourceExt;

use super::request::Request;
use crate::kubeblocks_env::{connection_env, data_env, merge, var};
use crate::{Context, target_pod};

/// Where the backupData script writes its result (a partial BackupStatus JSON).
pub const BACKUP_INFO_FILE: &str = "/dp-manager/backup.info";
/// The pod role label KubeBlocks puts on database pods.
const ROLE_LABEL: &str = "kubeblocks.io/role";

/// Env and envFrom of a backupData (or hook Job) container working on `pod`.
pub fn backup_env(ctx: &Context, req: &Request, pod: &Pod) -> (Vec<EnvVar>, Vec<EnvFromSource>) {
    let container = target_pod::container(pod, None);
    let mut env: Vec<EnvVar> = Vec::new();
    merge(&mut env, container.and_then(|c| c.env.clone()).unwrap_or_default());
    let mut env_from = container.and_then(|c| c.env_from.clone()).unwrap_or_default();

    let pod_name = pod.name_any();
    let base_path = req.base_path(&pod_name);
    let mut dp = data_env(&req.backup.name_any(), &base_path, &ctx.bin_dir());
    dp.push(var("DP_TARGET_POD_NAME", &pod_name));
    if let Some(role) = pod.labels().get(ROLE_LABEL) {
        dp.push(var("DP_TARGET_POD_ROLE", role));
    }
    dp.push(var("DP_BACKUP_INFO_FILE", BACKUP_INFO_FILE));
    if let Some(ttl) = req.backup.spec.retention_period.as_deref().filter(|t| !t.is_empty()) {
        dp.push(var("DP_TTL", ttl));
    }
    if let Some(continuous) = &req.continuous {
        dp.push(var("DP_ARCHIVE_INTERVAL", continuous.archive_interval()));
        // The script purges what is older itself (upstream: whole seconds, none without a
        // retention).
        if let Some(keep) = req.backup.retention().filter(|d| !d.is_zero()) {
            dp.push(var("DP_TTL_SECONDS", keep.as_secs().to_string()));
        }
    }
    if let Some(chain) = &req.chain {
        dp.push(var("DP_PARENT_BACKUP_NAME", &chain.parent));
        dp.push(var("DP_BASE_BACKUP_NAME", &chain.base));
        dp.push(var("DP_BACKUP_ROOT_PATH", req.root_path()));
        dp.push(var("DP_TARGET_RELATIVE_PATH", req.target_relative_path(&pod_name)));
    }
    merge(&mut env, dp);
    merge(&mut env, connection_env(req.target.connection_credential.as_ref(), Some(pod)));
    merge(&mut env, action_set_env(req));
    let spec = req.action_set.as_ref().map(|a| &a.spec);
    env_from.extend(spec.and_then(|s| s.env_from.clone()).unwrap_or_default());
    merge(&mut env, kb_env(&req.backup));
    merge(&mut env, req.method.env.clone().unwrap_or_default());
    merge(&mut env, req.repo_access.env());
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
    let mut env = data_env(&req.backup.name_any(), &base_path, &ctx.bin_dir());
    if let Some(pod) = pod {
        merge(&mut env, connection_env(req.target.connection_credential.as_ref(), Some(pod)));
    }
    merge(&mut env, action_set_env(req));
    merge(&mut env, req.method.env.clone().unwrap_or_default());
    merge(&mut env, req.repo_access.env());
    env
}

/// The ActionSet's env (none without an ActionSet).
fn action_set_env(req: &Request) -> Vec<EnvVar> {
    req.action_set.as_ref().and_then(|a| a.spec.env.clone()).unwrap_or_default()
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
