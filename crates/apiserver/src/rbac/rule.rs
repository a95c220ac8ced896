//! Whether one PolicyRule covers one request, and whether one subject names a user: the
//! functions of upstream's `plugin/pkg/auth/authorizer/rbac` (`RuleAllows`, `appliesToUser`).

use k8s_openapi::api::rbac::v1::{PolicyRule, Subject};

use crate::auth::{RequestInfo, User};

/// The wildcard of verbs, API groups, resources and non-resource URLs.
const ALL: &str = "*";

/// `RuleAllows`: the verb, and either group + resource (with subresource) + name, or the
/// non-resource URL.
pub fn allows(info: &RequestInfo, rule: &PolicyRule) -> bool {
    if !contains_or_all(&rule.verbs, &info.verb) {
        return false;
    }
    if !info.resource_request {
        return non_resource_url_matches(rule.non_resource_urls.as_deref(), &info.path);
    }
    let combined = if info.subresource.is_empty() {
        info.resource.clone()
    } else {
        format!("{}/{}", info.resource, info.subresource)
    };
    contains_or_all(rule.api_groups.as_deref().unwrap_or_default(), &info.group)
        && resource_matches(
            rule.resources.as_deref().unwrap_or_default(),
            &combined,
            &info.subresource,
        )
        && resource_name_matches(rule.resource_names.as_deref(), &info.name)
}

fn contains_or_all(list: &[String], wanted: &str) -> bool {
    list.iter().any(|item| item == ALL || item == wanted)
}

/// `*` matches every resource, `*/sub` the subresource `sub` of every resource.
fn resource_matches(rule_resources: &[String], combined: &str, subresource: &str) -> bool {
    rule_resources.iter().any(|r| {
        r == ALL
            || r == combined
            || (!subresource.is_empty()
                && r.strip_prefix("*/").is_some_and(|sub| sub == subresource))
    })
}

/// An empty list allows every name; otherwise the request must name one of them (so `list` and
/// `create`, which name nothing, are not allowed by a rule with names).
fn resource_name_matches(names: Option<&[String]>, name: &str) -> bool {
    match names {
        None | Some([]) => true,
        Some(names) => names.iter().any(|n| n == name),
    }
}

/// `*` matches every path, `/apis/*` every path under `/apis/`, anything else only itself.
fn non_resource_url_matches(urls: Option<&[String]>, path: &str) -> bool {
    urls.unwrap_or_default().iter().any(|url| {
        url == ALL
            || url == path
            || url.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix))
    })
}

/// `appliesToUser`: a User by name, a Group by membership, a ServiceAccount by its user name
/// `system:serviceaccount:<namespace>:<name>` (the namespace defaults to the binding's).
pub fn subject_applies(subject: &Subject, user: &User, binding_namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => user.name == subject.name,
        "Group" => user.groups.contains(&subject.name),
        "ServiceAccount" => {
            let namespace = subject.namespace.as_deref().filter(|n| !n.is_empty());
            let Some(namespace) = namespace.or(Some(binding_namespace).filter(|n| !n.is_empty()))
            else {
                return false;
            };
            user.name == service_account_user(namespace, &subject.name)
        }
        _ => false,
    }
}

/// The user name a ServiceAccount authenticates as.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// `describeSubject`, for the `reason` of an allowed decision.
pub fn describe_subject(subject: &Subject, binding_namespace: &str) -> String {
    if subject.kind == "ServiceAccount" {
        let namespace =
            subject.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or(binding_namespace);
        format!("{} {:?}", subject.kind, format!("{}/{namespace}", subject.name))
    } else {
        format!("{} {:?}", subject.kind, subject.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> PolicyRule {
        let strings = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        PolicyRule {
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            api_groups: strings(groups),
            resources: strings(resources),
            resource_names: if names.is_empty() { None } else { strings(names) },
            non_resource_urls: None,
        }
    }

    fn info(method: Method, path: &str) -> RequestInfo {
        RequestInfo::from_request(&method, path, None)
    }

    #[test]
    fn verbs_groups_resources_and_subresources() {
        let pods_log = info(Method::GET, "/api/v1/namespaces/a/pods/p/log");
        assert!(allows(&pods_log, &rule(&["get"], &[""], &["pods/log"], &[])));
        assert!(!allows(&pods_log, &rule(&["get"], &[""], &["pods"], &[])));
        assert!(allows(&pods_log, &rule(&["get"], &[""], &["*/log"], &[])));
        assert!(allows(&pods_log, &rule(&["*"], &["*"], &["*"], &[])));
        assert!(!allows(&pods_log, &rule(&["list"], &[""], &["pods/log"], &[])));
        let backup = info(Method::POST, "/apis/velero.io/v1/namespaces/a/backups");
        assert!(allows(&backup, &rule(&["create"], &["velero.io"], &["backups"], &[])));
        assert!(!allows(&backup, &rule(&["create"], &[""], &["backups"], &[])));
    }

    #[test]
    fn resource_names_restrict_named_requests_only() {
        let named = rule(&["get", "list"], &[""], &["secrets"], &["s1"]);
        assert!(allows(&info(Method::GET, "/api/v1/namespaces/a/secrets/s1"), &named));
        assert!(!allows(&info(Method::GET, "/api/v1/namespaces/a/secrets/s2"), &named));
        assert!(!allows(&info(Method::GET, "/api/v1/namespaces/a/secrets"), &named));
    }

    #[test]
    fn non_resource_urls_with_prefix_wildcards() {
        let mut r = rule(&["get"], &[], &[], &[]);
        r.api_groups = None;
        r.resources = None;
        r.non_resource_urls = Some(vec!["/apis/*".into(), "/version".into()]);
        assert!(allows(&info(Method::GET, "/apis/velero.io/v1"), &r));
        assert!(allows(&info(Method::GET, "/version"), &r));
        assert!(!allows(&info(Method::GET, "/openapi/v3"), &r));
        assert!(!allows(&info(Method::POST, "/version"), &r));
    }

    #[test]
    fn subjects_by_user_group_and_service_account() {
        let user = User {
            name: "system:serviceaccount:team:ci".into(),
            uid: "u".into(),
            groups: vec!["system:serviceaccounts".into()],
        };
        let subject = |kind: &str, name: &str, ns: Option<&str>| Subject {
            kind: kind.into(),
            name: name.into(),
            namespace: ns.map(String::from),
            api_group: None,
        };
        assert!(subject_applies(&subject("ServiceAccount", "ci", None), &user, "team"));
        assert!(!subject_applies(&subject("ServiceAccount", "ci", None), &user, ""));
        assert!(subject_applies(&subject("ServiceAccount", "ci", Some("team")), &user, "other"));
        assert!(subject_applies(&subject("Group", "system:serviceaccounts", None), &user, ""));
        assert!(!subject_applies(&subject("User", "ci", None), &user, ""));
        assert_eq!(
            describe_subject(&subject("ServiceAccount", "ci", None), "team"),
            r#"ServiceAccount "ci/team""#
        );
    }
}
