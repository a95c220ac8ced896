//! The Node object of this host: embedded mode registers the node its node agent and Job runner
//! serve, so `kubectl get nodes` lists it and work naming it (a PodVolumeBackup's `spec.node`, a
//! pod's `spec.nodeName`) can be told apart from work for a node that does not exist. Its
//! `Ready` condition carries a heartbeat, as a kubelet's does.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::{Context, Error, object};

/// How often the heartbeat is written (a kubelet's default node status update frequency is
/// 10 s; nothing here watches it closely, so less often is enough).
const HEARTBEAT: Duration = Duration::from_secs(30);

/// Registers `name` and keeps its heartbeat until the process ends.
pub async fn run(ctx: Arc<Context>, name: String) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(
                [
                    ("kubernetes.io/hostname".to_owned(), name.clone()),
                    ("kubernetes.io/os".to_owned(), "linux".to_owned()),
                    ("kubernetes.io/arch".to_owned(), std::env::consts::ARCH.to_owned()),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    object::create_or_get(&nodes, &node).await?;
    let since = Time(ctx.clock.now());
    loop {
        let now = Time(ctx.clock.now());
        let status = NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: Some("HoldfastReady".into()),
                message: Some("holdfast's node agent and Job runner serve this node".into()),
                last_heartbeat_time: Some(now),
                last_transition_time: Some(since.clone()),
            }]),
            addresses: Some(vec![NodeAddress { type_: "Hostname".into(), address: name.clone() }]),
            node_info: Some(system_info()),
            ..NodeStatus::default()
        };
        nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
            .await?;
        tokio::time::sleep(HEARTBEAT).await;
    }
}

fn system_info() -> NodeSystemInfo {
    let read =
        |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_owned()).unwrap_or_default();
    let os_image = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| "Linux".into());
    NodeSystemInfo {
        architecture: std::env::consts::ARCH.into(),
        kernel_version: read("/proc/sys/kernel/osrelease"),
        kubelet_version: format!("holdfast-{}", env!("CARGO_PKG_VERSION")),
        kube_proxy_version: String::new(),
        machine_id: read("/etc/machine-id"),
        operating_system: "linux".into(),
        os_image,
        system_uuid: String::new(),
        boot_id: read("/proc/sys/kernel/random/boot_id"),
        container_runtime_version: "holdfast://host-processes".into(),
        ..NodeSystemInfo::default()
    }
}
