//! The roles and bindings the server ships: Kubernetes' default ClusterRoles and
//! ClusterRoleBindings (`plugin/pkg/auth/authorizer/rbac/bootstrappolicy`), the aggregation of the
//! served custom kinds into `view`/`edit`/`admin` (what a CRD's installer ships as
//! `rbac.authorization.k8s.io/aggregate-to-*` roles), and the binding of the generated `viewer`
//! token's user to `view`.

use std::collections::BTreeMap;

use holdfast_api::ResourceDef;
use serde_json::{Value, json};

/// The annotation that lets the server add missing rules and subjects to a shipped object at
/// start; `"false"` leaves a customised object alone.
pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
/// The group of every authenticated user.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group upstream binds to the `system:monitoring` ClusterRole: a token in it may scrape
/// `/metrics`.
pub const MONITORING: &str = "system:monitoring";
/// The group of requests without a token.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The label prefix of upstream's aggregation (`aggregate-to-view`, `-edit`, `-admin`).
const AGGREGATE_TO: &str = "rbac.authorization.k8s.io/aggregate-to-";

const READ: [&str; 3] = ["get", "list", "watch"];
const WRITE: [&str; 5] = ["create", "delete", "deletecollection", "patch", "update"];
const READ_WRITE: [&str; 8] =
    ["get", "list", "watch", "create", "delete", "deletecollection", "patch", "update"];

fn rule(verbs: &[&str], group: &str, resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": [group], "resources": resources})
}

fn url_rule(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": urls})
}

/// Metadata of a shipped object; `aggregate_to` labels a role into `view`, `edit` or `admin`.
fn metadata(name: &str, aggregate_to: Option<&str>) -> Value {
    let mut labels = BTreeMap::from([("kubernetes.io/bootstrapping".to_string(), "rbac-defaults")]);
    if let Some(to) = aggregate_to {
        labels.insert(format!("{AGGREGATE_TO}{to}"), "true");
    }
    json!({"name": name, "labels": labels, "annotations": {AUTOUPDATE: "true"}})
}

fn cluster_role(name: &str, aggregate_to: Option<&str>, rules: Vec<Value>) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": metadata(name, aggregate_to), "rules": rules})
}

/// A role whose rules are the union of the roles labelled `aggregate-to-<selects>`.
fn aggregated(name: &str, aggregate_to: Option<&str>, selects: &str) -> Value {
    let mut role = cluster_role(name, aggregate_to, Vec::new());
    role["aggregationRule"] = json!({"clusterRoleSelectors": [
        {"matchLabels": {format!("{AGGREGATE_TO}{selects}"): "true"}}]});
    role
}

fn binding(name: &str, role: &str, subjects: &[(&str, &str)]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|(kind, who)| {
            json!({"kind": kind, "apiGroup": "rbac.authorization.k8s.io", "name": who})
        })
        .collect();
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": metadata(name, None),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects})
}

/// Upstream's `system:aggregate-to-view` rules: reading workloads, their logs and status, but
/// never Secrets (nor anything that reveals them, such as exec).
fn view_rules() -> Vec<Value> {
    vec![
        rule(
            &READ,
            "",
            &[
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "configmaps",
            ],
        ),
        rule(
            &READ,
            "",
            &[
                "limitranges",
                "resourcequotas",
                "bindings",
                "events",
                "pods/status",
                "resourcequotas/status",
                "namespaces/status",
                "replicationcontrollers/status",
                "pods/log",
            ],
        ),
        // Reading namespaces through a RoleBinding means reading that one namespace.
        rule(&READ, "", &["namespaces"]),
        rule(&READ, "discovery.k8s.io", &["endpointslices"]),
        rule(
            &READ,
            "apps",
            &[
                "controllerrevisions",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
            ],
        ),
        rule(
            &READ,
            "autoscaling",
            &["horizontalpodautoscalers", "horizontalpodautoscalers/status"],
        ),
        rule(&READ, "batch", &["jobs", "cronjobs", "cronjobs/status", "jobs/status"]),
        rule(&READ, "policy", &["poddisruptionbudgets", "poddisruptionbudgets/status"]),
        rule(&READ, "networking.k8s.io", &["networkpolicies", "ingresses", "ingresses/status"]),
    ]
}

/// Upstream's `system:aggregate-to-edit` rules: writing workloads and reading and writing Secrets.
fn edit_rules() -> Vec<Value> {
    vec![
        rule(
            &READ,
            "",
            &[
                "pods/attach",
                "pods/proxy",
                "pods/exec",
                "pods/portforward",
                "secrets",
                "services/proxy",
            ],
        ),
        rule(&["impersonate"], "", &["serviceaccounts"]),
        rule(&WRITE, "", &["pods", "pods/attach", "pods/proxy", "pods/exec", "pods/portforward"]),
        rule(&["create"], "", &["pods/eviction"]),
        rule(
            &WRITE,
            "",
            &[
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/proxy",
                "persistentvolumeclaims",
                "configmaps",
                "secrets",
                "events",
            ],
        ),
        rule(&["create"], "", &["serviceaccounts/token"]),
        rule(
            &WRITE,
            "apps",
            &[
                "statefulsets",
                "statefulsets/scale",
                "daemonsets",
                "deployments",
                "deployments/scale",
                "deployments/rollback",
                "replicasets",
                "replicasets/scale",
            ],
        ),
        rule(&WRITE, "autoscaling", &["horizontalpodautoscalers"]),
        rule(&WRITE, "batch", &["jobs", "cronjobs"]),
        rule(&WRITE, "policy", &["poddisruptionbudgets"]),
        rule(&WRITE, "networking.k8s.io", &["networkpolicies", "ingresses"]),
        rule(&WRITE, "coordination.k8s.io", &["leases"]),
    ]
}

/// Upstream's `system:aggregate-to-admin` rules: managing access inside a namespace.
fn admin_rules() -> Vec<Value> {
    vec![
        rule(&["create"], "authorization.k8s.io", &["localsubjectaccessreviews"]),
        rule(&READ_WRITE, "rbac.authorization.k8s.io", &["roles", "rolebindings"]),
    ]
}

/// One rule per API group of the served custom kinds, over every plural (and for reading, the
/// `/status` subresources too).
fn custom_kind_rules(defs: &[ResourceDef], verbs: &[&str], with_status: bool) -> Vec<Value> {
    let mut by_group: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for def in defs.iter().filter(|d| !d.builtin) {
        let resources = by_group.entry(def.group.as_str()).or_default();
        for resource in std::iter::once(def.plural.clone()).chain(
            (with_status && def.status_subresource).then(|| format!("{}/status", def.plural)),
        ) {
            if !resources.contains(&resource) {
                resources.push(resource);
            }
        }
    }
    by_group
        .into_iter()
        .map(|(group, resources)| json!({"verbs": verbs, "apiGroups": [group], "resources": resources}))
        .collect()
}

/// The ClusterRoles the server ships, in creation order.
pub fn cluster_roles(defs: &[ResourceDef]) -> Vec<Value> {
    vec![
        cluster_role(
            "cluster-admin",
            None,
            vec![rule(&["*"], "*", &["*"]), url_rule(&["*"], &["*"])],
        ),
        aggregated("admin", None, "admin"),
        aggregated("edit", Some("admin"), "edit"),
        aggregated("view", Some("edit"), "view"),
        cluster_role("system:aggregate-to-admin", Some("admin"), admin_rules()),
        cluster_role("system:aggregate-to-edit", Some("edit"), edit_rules()),
        cluster_role("system:aggregate-to-view", Some("view"), view_rules()),
        cluster_role(
            "holdfast:aggregate-to-edit",
            Some("edit"),
            custom_kind_rules(defs, &WRITE, false),
        ),
        cluster_role(
            "holdfast:aggregate-to-view",
            Some("view"),
            custom_kind_rules(defs, &READ, true),
        ),
        cluster_role(
            "system:discovery",
            None,
            vec![url_rule(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        cluster_role(
            "system:basic-user",
            None,
            vec![
                rule(&["create"], "authentication.k8s.io", &["selfsubjectreviews"]),
                rule(
                    &["create"],
                    "authorization.k8s.io",
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
            ],
        ),
        // Upstream's role for scrapers: health checks and `/metrics`, nothing else.
        cluster_role(
            "system:monitoring",
            None,
            vec![url_rule(
                &["get"],
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/metrics",
                    "/metrics/slis",
                    "/readyz",
                    "/readyz/*",
                ],
            )],
        ),
        cluster_role(
            "system:public-info-viewer",
            None,
            vec![url_rule(&["get"], &["/healthz", "/livez", "/readyz", "/version", "/version/"])],
        ),
    ]
}

/// The ClusterRoleBindings the server ships, in creation order.
pub fn cluster_role_bindings(viewer: &str) -> Vec<Value> {
    vec![
        binding("cluster-admin", "cluster-admin", &[("Group", crate::auth::ADMIN_GROUP)]),
        binding("system:discovery", "system:discovery", &[("Group", AUTHENTICATED)]),
        binding("system:basic-user", "system:basic-user", &[("Group", AUTHENTICATED)]),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[("Group", AUTHENTICATED), ("Group", UNAUTHENTICATED)],
        ),
        binding("system:monitoring", "system:monitoring", &[("Group", MONITORING)]),
        binding("holdfast:viewer", "view", &[("User", viewer)]),
    ]
}
