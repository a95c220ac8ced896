//! API discovery documents, generated from the served kinds, in the shapes
//! kubectl and client-go expect.
//!
//! kubectl 1.32 asks `/api` and `/apis` for the aggregated `apidiscovery.k8s.io/v2` form first and
//! needs nothing else when it gets it; kube-rs and the Python client use the legacy documents
//! (`APIVersions`, `APIGroupList`, `APIResourceList`). Both are built from the same `ResourceDef`s
//! so they can never disagree.

use std::cmp::Ordering;

use holdfast_api::ResourceDef;
use serde_json::{Map, Value, json};

/// Content type of an aggregated discovery reply; kubectl uses aggregated discovery only when the
/// reply carries it.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Verbs of every served resource (kubectl's `delete --all` lists and deletes; `deletecollection`
/// is advertised because the apiserver does and `kubectl api-resources -o wide` shows it).
pub const VERBS: [&str; 8] =
    ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// Verbs of a `/status` subresource.
pub const STATUS_VERBS: [&str; 3] = ["get", "patch", "update"];

/// Whether the `Accept` header asks for aggregated discovery (`as=APIGroupDiscoveryList`, v2).
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"as=APIGroupDiscoveryList")
            && params.contains(&"g=apidiscovery.k8s.io")
            && params.contains(&"v=v2")
    })
}

/// `/api` (legacy): the core group's versions.
pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "apiVersion": "v1",
        "versions": ["v1"],
        // client-go and k8s-openapi model this list as required; any address is the one dialled.
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

/// Kubernetes version priority (`version.CompareKubeAwareVersionStrings`): GA before beta before
/// alpha, higher numbers first, and non-Kubernetes-looking versions last in lexical order.
/// Returns `Ordering::Less` when `a` is preferred over `b`.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> Option<(u8, u64, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let major: u64 = rest[..digits_end].parse().ok()?;
        let tail = &rest[digits_end..];
        if tail.is_empty() {
            return Some((0, major, 0));
        }
        let (stage, num) = if let Some(n) = tail.strip_prefix("beta") {
            (1, n)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (2, n)
        } else {
            return None;
        };
        Some((stage, major, num.parse().ok()?))
    }
    match (parse(a), parse(b)) {
        (Some((sa, ma, na)), Some((sb, mb, nb))) => sa.cmp(&sb).then(mb.cmp(&ma)).then(nb.cmp(&na)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// A resource served beside the stored kinds: create-only and never stored, answered by the
/// authentication layer from the caller's identity and the RBAC objects.
pub struct Review {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
}

/// The reviews kubectl's `auth can-i` and `auth whoami` create.
pub const REVIEWS: [Review; 3] = [
    Review {
        group: "authentication.k8s.io",
        version: "v1",
        plural: "selfsubjectreviews",
        kind: "SelfSubjectReview",
    },
    Review {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectaccessreviews",
        kind: "SelfSubjectAccessReview",
    },
    Review {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectrulesreviews",
        kind: "SelfSubjectRulesReview",
    },
];

const CREATE_ONLY: [&str; 1] = ["create"];

/// Whether a review is served in `group` (at `version`, when given).
pub fn serves_review_group(group: &str, version: Option<&str>) -> bool {
    REVIEWS.iter().any(|r| r.group == group && version.is_none_or(|v| v == r.version))
}

fn reviews_in<'a>(group: &'a str, version: &'a str) -> impl Iterator<Item = &'static Review> + 'a {
    REVIEWS.iter().filter(move |r| r.group == group && r.version == version)
}

/// The TokenRequest subresource of ServiceAccounts (`kubectl create token`).
fn token_subresource(def: &ResourceDef) -> Option<Value> {
    (def.group.is_empty() && def.plural == "serviceaccounts").then(|| {
        json!({"subresource": "token", "verbs": CREATE_ONLY, "responseKind":
            {"group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest"}})
    })
}

/// One API group and its versions, preferred first.
struct Group<'a> {
    name: &'a str,
    versions: Vec<&'a str>,
}

/// The non-core groups, built-in groups (batch, storage.k8s.io, …) first, then the custom ones,
/// each in the order the registry first names them, as the apiserver lists built-ins before CRDs.
fn groups(defs: &[ResourceDef]) -> Vec<Group<'_>> {
    let mut out: Vec<(bool, Group<'_>)> = Vec::new();
    for d in defs.iter().filter(|d| !d.group.is_empty()) {
        match out.iter_mut().find(|(_, g)| g.name == d.group) {
            Some((builtin, g)) => {
                *builtin |= d.builtin;
                if !g.versions.contains(&d.version.as_str()) {
                    g.versions.push(&d.version);
                }
            }
            None => out.push((d.builtin, Group { name: &d.group, versions: vec![&d.version] })),
        }
    }
    for review in &REVIEWS {
        match out.iter_mut().find(|(_, g)| g.name == review.group) {
            Some((_, g)) if !g.versions.contains(&review.version) => {
                g.versions.push(review.version)
            }
            Some(_) => {}
            None => out.push((true, Group { name: review.group, versions: vec![review.version] })),
        }
    }
    out.sort_by_key(|(builtin, _)| !*builtin);
    out.into_iter()
        .map(|(_, mut g)| {
            g.versions.sort_by(|a, b| compare_versions(a, b));
            g
        })
        .collect()
}

fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() { version.to_string() } else { format!("{group}/{version}") }
}

/// `/apis` (legacy): every non-core group with its versions and preferred version.
pub fn api_group_list(defs: &[ResourceDef]) -> Value {
    let groups: Vec<Value> = groups(defs)
        .iter()
        .map(|g| {
            let versions: Vec<Value> = g
                .versions
                .iter()
                .map(|v| json!({"groupVersion": group_version(g.name, v), "version": v}))
                .collect();
            json!({"name": g.name, "versions": versions, "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn in_group_version<'a>(
    defs: &'a [ResourceDef],
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'a ResourceDef> {
    let mut v: Vec<&ResourceDef> =
        defs.iter().filter(|d| d.group == group && d.version == version).collect();
    v.sort_by(|a, b| a.plural.cmp(&b.plural));
    v.into_iter()
}

fn put_names(entry: &mut Map<String, Value>, def: &ResourceDef) {
    if !def.short_names.is_empty() {
        entry.insert("shortNames".into(), json!(def.short_names));
    }
    if !def.categories.is_empty() {
        entry.insert("categories".into(), json!(def.categories));
    }
}

/// `/api/v1` or `/apis/{group}/{version}` (legacy): one entry per resource and per `/status`
/// subresource. `None` when no kind is served in that group version (the caller answers 404).
pub fn api_resource_list(defs: &[ResourceDef], group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for d in in_group_version(defs, group, version) {
        let mut entry = Map::new();
        entry.insert("name".into(), json!(d.plural));
        entry.insert("singularName".into(), json!(d.singular));
        entry.insert("namespaced".into(), json!(d.namespaced));
        entry.insert("kind".into(), json!(d.kind));
        entry.insert("verbs".into(), json!(VERBS));
        put_names(&mut entry, d);
        resources.push(Value::Object(entry));
        if d.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", d.plural), "singularName": "",
                "namespaced": d.namespaced, "kind": d.kind, "verbs": STATUS_VERBS,
            }));
        }
        if token_subresource(d).is_some() {
            resources.push(json!({
                "name": format!("{}/token", d.plural), "singularName": "", "namespaced": true,
                "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest",
                "verbs": CREATE_ONLY,
            }));
        }
    }
    for r in reviews_in(group, version) {
        resources.push(json!({"name": r.plural, "singularName": r.kind.to_lowercase(),
            "namespaced": false, "kind": r.kind, "verbs": CREATE_ONLY}));
    }
    if resources.is_empty() {
        return None;
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version(group, version),
        "resources": resources,
    }))
}

fn aggregated_version(defs: &[ResourceDef], group: &str, version: &str) -> Value {
    let resources: Vec<Value> = in_group_version(defs, group, version)
        .map(|d| {
            let response_kind = json!({"group": d.group, "version": d.version, "kind": d.kind});
            let mut entry = Map::new();
            entry.insert("resource".into(), json!(d.plural));
            entry.insert("responseKind".into(), response_kind.clone());
            entry.insert(
                "scope".into(),
                json!(if d.namespaced { "Namespaced" } else { "Cluster" }),
            );
            entry.insert("singularResource".into(), json!(d.singular));
            entry.insert("verbs".into(), json!(VERBS));
            put_names(&mut entry, d);
            let mut subresources = Vec::new();
            if d.status_subresource {
                subresources.push(
                    json!({"subresource": "status", "responseKind": response_kind, "verbs": STATUS_VERBS}),
                );
            }
            subresources.extend(token_subresource(d));
            if !subresources.is_empty() {
                entry.insert("subresources".into(), Value::Array(subresources));
            }
            Value::Object(entry)
        })
        .chain(reviews_in(group, version).map(|r| {
            json!({"resource": r.plural, "responseKind":
                {"group": r.group, "version": r.version, "kind": r.kind},
                "scope": "Cluster", "singularResource": r.kind.to_lowercase(),
                "verbs": CREATE_ONLY})
        }))
        .collect();
    json!({"version": version, "resources": resources, "freshness": "Current"})
}

/// Aggregated discovery (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`): with `core` the `/api`
/// document (one item named ""), otherwise the `/apis` document (every other group, versions
/// preferred first).
pub fn aggregated(defs: &[ResourceDef], core: bool) -> Value {
    let items: Vec<Value> = if core {
        let mut versions: Vec<&str> =
            defs.iter().filter(|d| d.group.is_empty()).map(|d| d.version.as_str()).collect();
        versions.sort_by(|a, b| compare_versions(a, b));
        versions.dedup();
        if versions.is_empty() {
            versions.push("v1");
        }
        let versions: Vec<Value> =
            versions.iter().map(|v| aggregated_version(defs, "", v)).collect();
        vec![json!({"metadata": {"name": ""}, "versions": versions})]
    } else {
        groups(defs)
            .iter()
            .map(|g| {
                let versions: Vec<Value> =
                    g.versions.iter().map(|v| aggregated_version(defs, g.name, v)).collect();
                json!({"metadata": {"name": g.name}, "versions": versions})
            })
            .collect()
    };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;

    fn defs() -> Vec<ResourceDef> {
        holdfast_api::registry()
    }

    #[test]
    fn aggregated_accept_detection() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert!(wants_aggregated(kubectl));
        assert!(!wants_aggregated("application/json"));
        assert!(!wants_aggregated(""));
        assert!(!wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
        ));
    }

    #[test]
    fn version_priority_prefers_ga_then_beta_then_alpha() {
        let mut v = vec!["v2alpha1", "v1", "v1beta1", "v2", "foo", "v1alpha2", "v10"];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(v, ["v10", "v2", "v1", "v1beta1", "v2alpha1", "v1alpha2", "foo"]);
    }

    #[test]
    fn legacy_api_versions_decodes_as_client_go_type() {
        let v: metav1::APIVersions = serde_json::from_value(api_versions()).unwrap();
        assert_eq!(v.versions, ["v1"]);
    }

    #[test]
    fn group_list_prefers_v1_over_alpha_and_decodes() {
        let doc = api_group_list(&defs());
        let list: metav1::APIGroupList = serde_json::from_value(doc.clone()).unwrap();
        assert!(list.groups.iter().all(|g| !g.name.is_empty()), "core group is not in /apis");
        let velero = list.groups.iter().find(|g| g.name == "velero.io").expect("velero.io served");
        let pref = velero.preferred_version.as_ref().unwrap();
        assert_eq!(pref.group_version, "velero.io/v1");
        assert_eq!(velero.versions[0].version, "v1");
        // Built-in groups come before custom ones.
        let names: Vec<&str> = list.groups.iter().map(|g| g.name.as_str()).collect();
        let batch = names.iter().position(|n| *n == "batch").unwrap();
        let velero = names.iter().position(|n| *n == "velero.io").unwrap();
        assert!(batch < velero, "{names:?}");
    }

    #[test]
    fn group_list_with_two_versions() {
        let mut a = defs().into_iter().find(|d| d.group == "velero.io").unwrap();
        a.group = "velero.io".into();
        let mut b = a.clone();
        b.version = "v2alpha1".into();
        b.kind = "DataUpload".into();
        b.plural = "datauploads".into();
        a.version = "v1".into();
        let doc = api_group_list(&[b, a]);
        // The review groups are always served; the custom group comes after them.
        let velero = doc["groups"].as_array().unwrap().iter().find(|g| g["name"] == "velero.io");
        assert_eq!(
            *velero.unwrap(),
            json!({"name": "velero.io", "versions": [
                {"groupVersion": "velero.io/v1", "version": "v1"},
                {"groupVersion": "velero.io/v2alpha1", "version": "v2alpha1"}],
              "preferredVersion": {"groupVersion": "velero.io/v1", "version": "v1"}})
        );
    }

    #[test]
    fn resource_list_has_status_entries_names_and_verbs() {
        let doc = api_resource_list(&defs(), "", "v1").unwrap();
        let list: metav1::APIResourceList = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(list.group_version, "v1");
        let pods = list.resources.iter().find(|r| r.name == "pods").unwrap();
        assert_eq!(pods.singular_name, "pod");
        assert!(pods.namespaced);
        assert_eq!(pods.kind, "Pod");
        assert_eq!(pods.verbs, VERBS);
        assert_eq!(pods.short_names.as_deref(), Some(&["po".to_string()][..]));
        assert_eq!(pods.categories.as_deref(), Some(&["all".to_string()][..]));
        let status =
            doc["resources"].as_array().unwrap().iter().find(|r| r["name"] == "pods/status");
        assert_eq!(
            status.unwrap(),
            &json!({"name": "pods/status", "singularName": "", "namespaced": true, "kind": "Pod",
                    "verbs": ["get", "patch", "update"]})
        );
        let ns = list.resources.iter().find(|r| r.name == "namespaces").unwrap();
        assert!(!ns.namespaced);
        // Secrets have no status subresource and no short names.
        assert!(list.resources.iter().all(|r| r.name != "secrets/status"));
        let secrets = doc["resources"].as_array().unwrap().iter().find(|r| r["name"] == "secrets");
        assert!(secrets.unwrap().get("shortNames").is_none());
        assert!(api_resource_list(&defs(), "velero.io", "v9").is_none());
        assert!(api_resource_list(&defs(), "nope.io", "v1").is_none());
    }

    #[test]
    fn custom_group_resource_list() {
        let defs = defs();
        let bsl = defs.iter().find(|d| d.kind == "BackupStorageLocation").unwrap();
        let doc = api_resource_list(&defs, "velero.io", "v1").unwrap();
        assert_eq!(doc["groupVersion"], "velero.io/v1");
        let entry = doc["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "backupstoragelocations")
            .unwrap();
        assert_eq!(entry["shortNames"], json!(bsl.short_names));
        assert_eq!(entry["kind"], "BackupStorageLocation");
        assert_eq!(entry["namespaced"], true);
    }

    #[test]
    fn aggregated_core_is_one_item_named_empty() {
        let doc = aggregated(&defs(), true);
        assert_eq!(doc["kind"], "APIGroupDiscoveryList");
        assert_eq!(doc["apiVersion"], "apidiscovery.k8s.io/v2");
        assert_eq!(doc["metadata"], json!({}));
        let items = doc["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["metadata"], json!({"name": ""}));
        let v1 = &items[0]["versions"][0];
        assert_eq!(v1["version"], "v1");
        assert_eq!(v1["freshness"], "Current");
        let pods =
            v1["resources"].as_array().unwrap().iter().find(|r| r["resource"] == "pods").unwrap();
        assert_eq!(
            pods,
            &json!({"resource": "pods", "responseKind": {"group": "", "version": "v1", "kind": "Pod"},
                "scope": "Namespaced", "singularResource": "pod", "verbs": VERBS,
                "shortNames": ["po"], "categories": ["all"],
                "subresources": [{"subresource": "status",
                    "responseKind": {"group": "", "version": "v1", "kind": "Pod"},
                    "verbs": ["get", "patch", "update"]}]})
        );
        let ns = v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "namespaces")
            .unwrap();
        assert_eq!(ns["scope"], "Cluster");
        // Only core resources: the events here are core/v1 Events.
        let events: Vec<&Value> = v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["resource"] == "events")
            .collect();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["responseKind"]["group"], "");
    }

    #[test]
    fn aggregated_apis_lists_groups_and_events_separately() {
        let doc = aggregated(&defs(), false);
        let items = doc["items"].as_array().unwrap();
        assert!(items.iter().all(|i| i["metadata"]["name"] != ""));
        let events = items.iter().find(|i| i["metadata"]["name"] == "events.k8s.io").unwrap();
        let r = &events["versions"][0]["resources"][0];
        assert_eq!(r["resource"], "events");
        assert_eq!(
            r["responseKind"],
            json!({"group": "events.k8s.io", "version": "v1", "kind": "Event"})
        );
        assert!(r.get("subresources").is_none());
        let velero = items.iter().find(|i| i["metadata"]["name"] == "velero.io").unwrap();
        let bsl = velero["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "backupstoragelocations")
            .unwrap();
        assert_eq!(bsl["singularResource"], "backupstoragelocation");
        assert_eq!(bsl["scope"], "Namespaced");
        assert_eq!(bsl["responseKind"]["kind"], "BackupStorageLocation");
        // Every resource of every group shows up exactly once, and every review.
        let n: usize = items
            .iter()
            .flat_map(|i| i["versions"].as_array().unwrap())
            .map(|v| v["resources"].as_array().unwrap().len())
            .sum();
        assert_eq!(n, defs().iter().filter(|d| !d.group.is_empty()).count() + REVIEWS.len());
    }

    #[test]
    fn reviews_and_the_token_subresource_are_discoverable() {
        let doc = api_resource_list(&defs(), "authorization.k8s.io", "v1").unwrap();
        let names: Vec<&str> = doc["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert_eq!(names, ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]);
        assert_eq!(doc["resources"][0]["verbs"], json!(["create"]));
        let core = api_resource_list(&defs(), "", "v1").unwrap();
        let token = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "serviceaccounts/token");
        assert_eq!(token.unwrap()["kind"], "TokenRequest");
        let aggregated = aggregated(&defs(), false);
        let authn = aggregated["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "authentication.k8s.io")
            .unwrap();
        assert_eq!(authn["versions"][0]["resources"][0]["resource"], "selfsubjectreviews");
    }
}
