//! Role-based access control as kube-apiserver's RBAC authorizer does it: a request's user and
//! groups are matched against every ClusterRoleBinding, and against the RoleBindings of the
//! request's namespace; the rules of the role a matching binding names allow the request or not.
//! A ClusterRole with an `aggregationRule` has the rules of every ClusterRole its selectors
//! match, as the ClusterRole aggregation controller keeps them (that controller runs here too,
//! so `kubectl get clusterrole view -o yaml` shows the rules).
//!
//! The roles and bindings are read from the store and kept as a snapshot tagged with the store
//! revision it was read at: a request after any write re-reads them, so a binding created by one
//! request applies to the next.

mod defaults;
mod rule;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt as _;
use holdfast_api::selector::LabelSelector;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::ApiServer;
use crate::auth::{ADMIN_GROUP, RequestInfo, User, VIEWER_USER};
use crate::error::ApiError;
use crate::store::{Key, Store, StoreError};

pub use defaults::{AUTHENTICATED, AUTOUPDATE, MONITORING, UNAUTHENTICATED};
pub use rule::service_account_user;

const CLUSTER_ROLES: &str = "rbac.authorization.k8s.io/clusterroles";
const CLUSTER_ROLE_BINDINGS: &str = "rbac.authorization.k8s.io/clusterrolebindings";
const ROLES: &str = "rbac.authorization.k8s.io/roles";
const ROLE_BINDINGS: &str = "rbac.authorization.k8s.io/rolebindings";

/// The answer for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Which binding allowed it (`RBAC: allowed by ClusterRoleBinding "x" of ClusterRole "y" to
    /// User "z"`), empty when denied.
    pub reason: String,
}

/// Every role and binding at one store revision, with the aggregated rules resolved.
struct Snapshot {
    rev: u64,
    cluster_rules: HashMap<String, Vec<PolicyRule>>,
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    role_bindings: HashMap<String, Vec<RoleBinding>>,
}

/// The RBAC authorizer over one store. Cheap to clone.
#[derive(Clone)]
pub struct Authorizer {
    store: Store,
    cache: Arc<Mutex<Option<Arc<Snapshot>>>>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").finish_non_exhaustive()
    }
}

fn parse_all<T: DeserializeOwned>(store: &Store, resource: &str) -> Result<Vec<T>, StoreError> {
    let (items, _, _) = store.list(resource, None, None, None)?;
    Ok(items
        .into_iter()
        .filter_map(|s| match serde_json::from_value(s.object) {
            Ok(v) => Some(v),
            Err(error) => {
                tracing::warn!(key = %s.key, %error, "ignoring an RBAC object that does not parse");
                None
            }
        })
        .collect())
}

impl Authorizer {
    pub fn new(store: Store) -> Authorizer {
        Authorizer { store, cache: Arc::new(Mutex::new(None)) }
    }

    fn snapshot(&self) -> Result<Arc<Snapshot>, StoreError> {
        // Read the revision first: when it is unchanged later, nothing was written since the
        // lists below were taken.
        let rev = self.store.current_rev();
        if let Some(s) = self.cache.lock().unwrap_or_else(PoisonError::into_inner).as_ref()
            && s.rev == rev
        {
            return Ok(Arc::clone(s));
        }
        let cluster_roles: Vec<ClusterRole> = parse_all(&self.store, CLUSTER_ROLES)?;
        let mut roles = HashMap::new();
        for role in parse_all::<Role>(&self.store, ROLES)? {
            let key = (
                role.metadata.namespace.clone().unwrap_or_default(),
                role.metadata.name.clone().unwrap_or_default(),
            );
            roles.insert(key, role.rules.unwrap_or_default());
        }
        let mut role_bindings: HashMap<String, Vec<RoleBinding>> = HashMap::new();
        for binding in parse_all::<RoleBinding>(&self.store, ROLE_BINDINGS)? {
            let ns = binding.metadata.namespace.clone().unwrap_or_default();
            role_bindings.entry(ns).or_default().push(binding);
        }
        let snapshot = Arc::new(Snapshot {
            rev,
            cluster_rules: aggregate(&cluster_roles),
            roles,
            cluster_role_bindings: parse_all(&self.store, CLUSTER_ROLE_BINDINGS)?,
            role_bindings,
        });
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&snapshot));
        Ok(snapshot)
    }

    /// Whether `user` may do what `info` describes. Members of `system:masters` may do
    /// everything whatever the bindings say, as upstream's privileged-group authorizer lets them
    /// (so deleting a binding cannot lock the administrator out).
    pub fn authorize(&self, user: &User, info: &RequestInfo) -> Decision {
        if user.groups.iter().any(|g| g == ADMIN_GROUP) {
            return Decision { allowed: true, reason: String::new() };
        }
        let snapshot = match self.snapshot() {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(%error, "cannot read the RBAC objects; denying");
                return Decision { allowed: false, reason: format!("RBAC: {error}") };
            }
        };
        let mut allowed_by = None;
        snapshot.visit(user, &info.namespace, |describe, rules| {
            if rules.iter().any(|r| rule::allows(info, r)) {
                allowed_by = Some(describe());
                false
            } else {
                true
            }
        });
        match allowed_by {
            Some(by) => Decision { allowed: true, reason: format!("RBAC: allowed by {by}") },
            None => Decision { allowed: false, reason: String::new() },
        }
    }

    /// Every rule that applies to `user` in `namespace` (cluster-wide ones included), for
    /// SelfSubjectRulesReview.
    pub fn rules_for(&self, user: &User, namespace: &str) -> Result<Vec<PolicyRule>, StoreError> {
        if user.groups.iter().any(|g| g == ADMIN_GROUP) {
            return Ok(vec![
                PolicyRule {
                    verbs: vec!["*".into()],
                    api_groups: Some(vec!["*".into()]),
                    resources: Some(vec!["*".into()]),
                    ..PolicyRule::default()
                },
                PolicyRule {
                    verbs: vec!["*".into()],
                    non_resource_urls: Some(vec!["*".into()]),
                    ..PolicyRule::default()
                },
            ]);
        }
        let snapshot = self.snapshot()?;
        let mut out: Vec<PolicyRule> = Vec::new();
        snapshot.visit(user, namespace, |_, rules| {
            for r in rules {
                if !out.contains(r) {
                    out.push(r.clone());
                }
            }
            true
        });
        Ok(out)
    }
}

impl Snapshot {
    /// Calls `f` with a description and the rules of every binding that applies to `user` (the
    /// cluster-wide ones, then those of `namespace`) until it returns false.
    fn visit(
        &self,
        user: &User,
        namespace: &str,
        mut f: impl FnMut(&dyn Fn() -> String, &[PolicyRule]) -> bool,
    ) {
        let empty = Vec::new();
        for b in &self.cluster_role_bindings {
            if b.role_ref.kind != "ClusterRole" {
                continue;
            }
            for s in b.subjects.iter().flatten() {
                if !rule::subject_applies(s, user, "") {
                    continue;
                }
                let rules = self.cluster_rules.get(&b.role_ref.name).unwrap_or(&empty);
                let describe = || {
                    format!(
                        "ClusterRoleBinding {:?} of ClusterRole {:?} to {}",
                        b.metadata.name.as_deref().unwrap_or_default(),
                        b.role_ref.name,
                        rule::describe_subject(s, "")
                    )
                };
                if !f(&describe, rules) {
                    return;
                }
            }
        }
        if namespace.is_empty() {
            return;
        }
        for b in self.role_bindings.get(namespace).into_iter().flatten() {
            let rules = match b.role_ref.kind.as_str() {
                "ClusterRole" => self.cluster_rules.get(&b.role_ref.name),
                "Role" => self.roles.get(&(namespace.to_string(), b.role_ref.name.clone())),
                _ => None,
            }
            .unwrap_or(&empty);
            for s in b.subjects.iter().flatten() {
                if !rule::subject_applies(s, user, namespace) {
                    continue;
                }
                let describe = || {
                    format!(
                        "RoleBinding {:?} of {} {:?} to {}",
                        format!("{}/{namespace}", b.metadata.name.as_deref().unwrap_or_default()),
                        b.role_ref.kind,
                        b.role_ref.name,
                        rule::describe_subject(s, namespace)
                    )
                };
                if !f(&describe, rules) {
                    return;
                }
            }
        }
    }
}

/// The rules of every ClusterRole, an aggregated one's being the union (in name order, without
/// repeats) of the rules of the roles its selectors match, recursively.
fn aggregate(roles: &[ClusterRole]) -> HashMap<String, Vec<PolicyRule>> {
    let by_name: BTreeMap<&str, &ClusterRole> =
        roles.iter().map(|r| (r.metadata.name.as_deref().unwrap_or_default(), r)).collect();
    fn resolve(
        name: &str,
        by_name: &BTreeMap<&str, &ClusterRole>,
        visiting: &mut BTreeSet<String>,
    ) -> Vec<PolicyRule> {
        let Some(role) = by_name.get(name) else { return Vec::new() };
        let Some(aggregation) = &role.aggregation_rule else {
            return role.rules.clone().unwrap_or_default();
        };
        if !visiting.insert(name.to_string()) {
            return Vec::new();
        }
        let selectors: Vec<LabelSelector> = aggregation
            .cluster_role_selectors
            .iter()
            .flatten()
            .filter_map(|s| LabelSelector::from_k8s(s).ok())
            // An empty selector would select every role, which upstream refuses as well.
            .filter(|s| !s.is_empty())
            .collect();
        let mut rules: Vec<PolicyRule> = Vec::new();
        for (other, role) in by_name {
            let labels = role.metadata.labels.clone().unwrap_or_default();
            if *other == name || !selectors.iter().any(|s| s.matches(&labels)) {
                continue;
            }
            for r in resolve(other, by_name, visiting) {
                if !rules.contains(&r) {
                    rules.push(r);
                }
            }
        }
        visiting.remove(name);
        rules
    }
    by_name
        .keys()
        .map(|name| (name.to_string(), resolve(name, &by_name, &mut BTreeSet::new())))
        .collect()
}

fn key(resource: &str, name: &str) -> Key {
    Key::new(resource, "", name)
}

/// Creates the shipped roles and bindings that are missing, and adds missing rules and subjects
/// to those that exist unless their `rbac.authorization.kubernetes.io/autoupdate` annotation is
/// `"false"`, as kube-apiserver reconciles its bootstrap policy at every start; then aggregates.
///
/// # Errors
/// The store failed.
pub async fn reconcile_defaults(server: &ApiServer) -> Result<(), ApiError> {
    let objects =
        defaults::cluster_roles(server.defs()).into_iter().map(|o| (CLUSTER_ROLES, o)).chain(
            defaults::cluster_role_bindings(VIEWER_USER)
                .into_iter()
                .map(|o| (CLUSTER_ROLE_BINDINGS, o)),
        );
    // Concurrent writes share one commit of the store's writer.
    let writes = objects.map(|(resource, object)| reconcile_one(server.store(), resource, object));
    for result in futures::future::join_all(writes).await {
        result?;
    }
    // Aggregate before the server answers, so the first `get clusterrole view` shows the rules
    // and the controller has nothing to write later unless a ClusterRole changes.
    write_aggregated(server.store())
        .await
        .map_err(|e| ApiError::internal(format!("storage error: {e}")))
}

async fn reconcile_one(store: &Store, resource: &str, mut wanted: Value) -> Result<(), ApiError> {
    let name = wanted["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let key = key(resource, &name);
    let internal = |e: StoreError| ApiError::internal(format!("storage error: {e}"));
    match store.get(&key).map_err(internal)? {
        None => {
            wanted["metadata"]["uid"] = uuid::Uuid::new_v4().to_string().into();
            wanted["metadata"]["creationTimestamp"] = crate::handler::now_seconds().into();
            match store.create(key, wanted).await {
                Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
                Err(e) => Err(internal(e)),
            }
        }
        Some(stored) => {
            let mut current = stored.object.clone();
            if current.pointer(&format!("/metadata/annotations/{}", AUTOUPDATE.replace('/', "~1")))
                == Some(&Value::from("false"))
            {
                return Ok(());
            }
            for field in ["rules", "subjects"] {
                let Some(wanted) = wanted.get(field).and_then(Value::as_array) else { continue };
                let list = current
                    .as_object_mut()
                    .map(|o| o.entry(field).or_insert_with(|| Value::Array(Vec::new())));
                if let Some(Value::Array(list)) = list {
                    for item in wanted {
                        if !list.contains(item) {
                            list.push(item.clone());
                        }
                    }
                }
            }
            if current.get("aggregationRule").is_none()
                && let Some(rule) = wanted.get("aggregationRule")
            {
                current["aggregationRule"] = rule.clone();
            }
            if current == stored.object {
                return Ok(());
            }
            match store.update(key, current, stored.mod_rev).await {
                Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
                Err(e) => Err(internal(e)),
            }
        }
    }
}

/// The ClusterRole aggregation controller: writes into every aggregated ClusterRole the rules
/// its selectors gather, now and after every change to a ClusterRole. Ends with the store.
pub fn spawn_aggregation(store: Store) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut from = store.current_rev();
        loop {
            if let Err(error) = write_aggregated(&store).await {
                tracing::warn!(%error, "cannot update the aggregated ClusterRoles");
            }
            let mut events = match store.watch(CLUSTER_ROLES, from) {
                Ok(events) => events,
                Err(StoreError::Compacted { .. }) => {
                    from = store.current_rev();
                    continue;
                }
                Err(_) => return,
            };
            match events.next().await {
                Some(Ok(event)) => from = event.rev,
                Some(Err(_)) => from = store.current_rev(),
                None => return,
            }
        }
    })
}

async fn write_aggregated(store: &Store) -> Result<(), StoreError> {
    let (items, _, _) = store.list(CLUSTER_ROLES, None, None, None)?;
    let roles: Vec<ClusterRole> =
        items.iter().filter_map(|s| serde_json::from_value(s.object.clone()).ok()).collect();
    let rules = aggregate(&roles);
    for stored in items {
        if stored.object.get("aggregationRule").is_none_or(Value::is_null) {
            continue;
        }
        let Some(wanted) = rules.get(&stored.key.name) else { continue };
        let wanted = serde_json::to_value(wanted).unwrap_or(Value::Null);
        if stored.object.get("rules").unwrap_or(&Value::Null) == &wanted
            || (wanted.as_array().is_some_and(Vec::is_empty)
                && stored.object.get("rules").is_none())
        {
            continue;
        }
        let mut object = stored.object.clone();
        object["rules"] = wanted;
        match store.update(stored.key, object, stored.mod_rev).await {
            Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
