use serde_json::json;

use super::*;
use crate::auth::RequestInfo;
use http::Method;

fn server() -> ApiServer {
    ApiServer::new(Store::open_in_memory().unwrap(), holdfast_api::registry())
}

fn user(name: &str, groups: &[&str]) -> User {
    let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    groups.push(AUTHENTICATED.into());
    User { name: name.into(), uid: name.into(), groups }
}

fn can(authorizer: &Authorizer, who: &User, method: Method, path: &str) -> bool {
    authorizer.authorize(who, &RequestInfo::from_request(&method, path, None)).allowed
}

const BACKUPS: &str = "/apis/dataprotection.kubeblocks.io/v1alpha1/namespaces/team/backups";

#[tokio::test]
async fn the_viewer_reads_backups_but_no_secret_and_writes_nothing() {
    let server = server();
    let authorizer = Authorizer::new(server.store().clone());
    let viewer = user(VIEWER_USER, &[]);
    assert!(can(&authorizer, &viewer, Method::GET, BACKUPS));
    assert!(can(&authorizer, &viewer, Method::GET, "/apis/velero.io/v1/backupstoragelocations"));
    assert!(can(&authorizer, &viewer, Method::GET, "/api/v1/namespaces/a/pods/p/log"));
    assert!(can(&authorizer, &viewer, Method::GET, "/apis"));
    assert!(!can(&authorizer, &viewer, Method::POST, BACKUPS));
    assert!(!can(
        &authorizer,
        &viewer,
        Method::GET,
        "/api/v1/namespaces/holdfast-system/secrets/k"
    ));
    assert!(!can(&authorizer, &viewer, Method::GET, "/api/v1/secrets"));
    let decision =
        authorizer.authorize(&viewer, &RequestInfo::from_request(&Method::GET, BACKUPS, None));
    assert_eq!(
        decision.reason,
        r#"RBAC: allowed by ClusterRoleBinding "holdfast:viewer" of ClusterRole "view" to User "viewer""#
    );
    // A user nobody bound may only discover and ask about itself.
    let stranger = user("stranger", &[]);
    assert!(!can(&authorizer, &stranger, Method::GET, BACKUPS));
    assert!(can(&authorizer, &stranger, Method::GET, "/api/v1"));
    assert!(can(
        &authorizer,
        &stranger,
        Method::POST,
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    ));
    let admin = user("root", &[ADMIN_GROUP]);
    assert!(can(&authorizer, &admin, Method::DELETE, "/api/v1/namespaces/a/secrets/s"));
}

#[tokio::test]
async fn only_admins_and_the_monitoring_group_scrape_metrics() {
    let server = server();
    let authorizer = Authorizer::new(server.store().clone());
    assert!(!can(&authorizer, &user(VIEWER_USER, &[]), Method::GET, "/metrics"));
    assert!(can(&authorizer, &user("root", &[ADMIN_GROUP]), Method::GET, "/metrics"));
    let scraper = user("prometheus", &[MONITORING]);
    assert!(can(&authorizer, &scraper, Method::GET, "/metrics"));
    assert!(can(&authorizer, &scraper, Method::GET, "/readyz/ping"));
    assert!(!can(&authorizer, &scraper, Method::POST, "/metrics"));
    assert!(!can(&authorizer, &scraper, Method::GET, BACKUPS));
}

#[tokio::test]
async fn a_role_binding_grants_edit_in_its_namespace_only() {
    let server = server();
    let authorizer = Authorizer::new(server.store().clone());
    let alice = user("alice", &[]);
    assert!(!can(&authorizer, &alice, Method::POST, BACKUPS));
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "alice-edit", "namespace": "team"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}]});
    server.store().create(Key::new(ROLE_BINDINGS, "team", "alice-edit"), binding).await.unwrap();
    assert!(can(&authorizer, &alice, Method::POST, BACKUPS));
    assert!(can(&authorizer, &alice, Method::GET, "/api/v1/namespaces/team/secrets/db"));
    assert!(can(&authorizer, &alice, Method::GET, "/api/v1/namespaces/team"));
    assert!(!can(&authorizer, &alice, Method::POST, &BACKUPS.replace("/team/", "/other/")));
    assert!(!can(&authorizer, &alice, Method::GET, "/api/v1/namespaces/other/secrets/db"));
    assert!(!can(
        &authorizer,
        &alice,
        Method::POST,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/team/rolebindings"
    ));
    let rules = authorizer.rules_for(&alice, "team").unwrap();
    assert!(
        rules.iter().any(|r| r
            .resources
            .as_deref()
            .unwrap_or_default()
            .contains(&"backups".to_string()))
    );
}

#[tokio::test]
async fn a_namespaced_role_with_resource_names() {
    let server = server();
    let authorizer = Authorizer::new(server.store().clone());
    let ci = user("system:serviceaccount:team:ci", &["system:serviceaccounts"]);
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "one-secret", "namespace": "team"},
        "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["db"]}]});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "ci", "namespace": "team"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "one-secret"},
        "subjects": [{"kind": "ServiceAccount", "name": "ci"}]});
    server.store().create(Key::new(ROLES, "team", "one-secret"), role).await.unwrap();
    server.store().create(Key::new(ROLE_BINDINGS, "team", "ci"), binding).await.unwrap();
    assert!(can(&authorizer, &ci, Method::GET, "/api/v1/namespaces/team/secrets/db"));
    assert!(!can(&authorizer, &ci, Method::GET, "/api/v1/namespaces/team/secrets/other"));
    assert!(!can(&authorizer, &ci, Method::GET, "/api/v1/namespaces/team/secrets"));
}

#[tokio::test]
async fn aggregation_follows_labels_and_is_written_into_the_role() {
    let server = server();
    let authorizer = Authorizer::new(server.store().clone());
    let viewer = user(VIEWER_USER, &[]);
    let widgets = "/apis/example.com/v1/namespaces/a/widgets";
    assert!(!can(&authorizer, &viewer, Method::GET, widgets));
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "widgets-view",
            "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"verbs": ["get", "list"], "apiGroups": ["example.com"], "resources": ["widgets"]}]});
    server.store().create(Key::new(CLUSTER_ROLES, "", "widgets-view"), role).await.unwrap();
    assert!(can(&authorizer, &viewer, Method::GET, widgets));
    // The aggregation controller writes the union into `view`, `edit` and `admin`.
    for name in ["view", "edit", "admin"] {
        let mut written = false;
        for _ in 0..100 {
            let view = server.store().get(&key(CLUSTER_ROLES, name)).unwrap().unwrap();
            if view.object["rules"].to_string().contains("widgets") {
                written = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(written, "{name} did not get the aggregated rule");
    }
}

#[tokio::test]
async fn restart_adds_missing_rules_unless_autoupdate_is_false() {
    let server = server();
    let store = server.store().clone();
    let view_key = key(CLUSTER_ROLES, "system:aggregate-to-view");
    let stored = store.get(&view_key).unwrap().unwrap();
    let mut trimmed = stored.object.clone();
    trimmed["rules"] = json!([]);
    store.update(view_key.clone(), trimmed.clone(), stored.mod_rev).await.unwrap();
    reconcile_defaults(&server).await.unwrap();
    let restored = store.get(&view_key).unwrap().unwrap();
    assert_eq!(restored.object["rules"], stored.object["rules"]);

    trimmed["metadata"]["annotations"][AUTOUPDATE] = json!("false");
    let kept = store.update(view_key.clone(), trimmed, restored.mod_rev).await.unwrap();
    reconcile_defaults(&server).await.unwrap();
    assert_eq!(store.get(&view_key).unwrap().unwrap().object, kept.object);

    store.delete(key(CLUSTER_ROLE_BINDINGS, "holdfast:viewer"), None).await.unwrap();
    reconcile_defaults(&server).await.unwrap();
    assert!(store.get(&key(CLUSTER_ROLE_BINDINGS, "holdfast:viewer")).unwrap().is_some());
}
