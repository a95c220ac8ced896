//! The `rbac.authorization.k8s.io/v1` kinds: Role, ClusterRole, RoleBinding and
//! ClusterRoleBinding, with upstream's validation (`pkg/apis/rbac/validation`) and kubectl's
//! printer columns. The server evaluates them for every request (the apiserver's `rbac` module).

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

use crate::field::FieldError;
use crate::resource::{Admit, PrinterColumn, ResourceDef, column};

/// The API group of the RBAC kinds (and of `roleRef.apiGroup`, User and Group subjects).
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// Upstream's rule checks: verbs always; either non-resource URLs (cluster roles only) or API
/// groups with resources, never both.
fn validate_rules(rules: Option<&Vec<PolicyRule>>, namespaced: bool) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (i, rule) in rules.into_iter().flatten().enumerate() {
        let path = |f: &str| format!("rules[{i}].{f}");
        if rule.verbs.is_empty() {
            errors
                .push(FieldError::required(path("verbs"), "verbs must contain at least one value"));
        }
        let urls = rule.non_resource_urls.as_deref().unwrap_or_default();
        let groups = rule.api_groups.as_deref().unwrap_or_default();
        let resources = rule.resources.as_deref().unwrap_or_default();
        if !urls.is_empty() {
            if namespaced {
                errors.push(FieldError::invalid(
                    path("nonResourceURLs"),
                    urls,
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !groups.is_empty() || !resources.is_empty() {
                errors.push(FieldError::invalid(
                    path("nonResourceURLs"),
                    urls,
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if groups.is_empty() {
            errors.push(FieldError::required(
                path("apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if resources.is_empty() {
            errors.push(FieldError::required(
                path("resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
    errors
}

fn validate_binding(
    role_ref: &RoleRef,
    subjects: Option<&Vec<Subject>>,
    allowed_kinds: &[&str],
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let api_group = role_ref.api_group.as_deref().unwrap_or_default();
    if api_group != GROUP {
        errors.push(FieldError::not_supported("roleRef.apiGroup", api_group, &[GROUP]));
    }
    if !allowed_kinds.contains(&role_ref.kind.as_str()) {
        errors.push(FieldError::not_supported("roleRef.kind", &role_ref.kind, allowed_kinds));
    }
    if role_ref.name.is_empty() {
        errors.push(FieldError::required("roleRef.name", ""));
    }
    for (i, s) in subjects.into_iter().flatten().enumerate() {
        let path = |f: &str| format!("subjects[{i}].{f}");
        if s.name.is_empty() {
            errors.push(FieldError::required(path("name"), ""));
        }
        let group = s.api_group.as_deref().unwrap_or_default();
        match s.kind.as_str() {
            "ServiceAccount" => {
                if !group.is_empty() {
                    errors.push(FieldError::not_supported(path("apiGroup"), group, &[""]));
                }
            }
            "User" | "Group" => {
                if group != GROUP {
                    errors.push(FieldError::not_supported(path("apiGroup"), group, &[GROUP]));
                }
            }
            other => errors.push(FieldError::not_supported(
                path("kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
    errors
}

fn immutable_role_ref(new: &RoleRef, old: &RoleRef) -> Vec<FieldError> {
    if new == old {
        Vec::new()
    } else {
        vec![FieldError::invalid("roleRef", new, "cannot change roleRef")]
    }
}

impl Admit for Role {
    fn validate(&self) -> Vec<FieldError> {
        validate_rules(self.rules.as_ref(), true)
    }
}

impl Admit for ClusterRole {
    fn validate(&self) -> Vec<FieldError> {
        validate_rules(self.rules.as_ref(), false)
    }
}

impl Admit for RoleBinding {
    fn validate(&self) -> Vec<FieldError> {
        validate_binding(&self.role_ref, self.subjects.as_ref(), &["Role", "ClusterRole"])
    }
    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        immutable_role_ref(&self.role_ref, &old.role_ref)
    }
}

impl Admit for ClusterRoleBinding {
    fn validate(&self) -> Vec<FieldError> {
        validate_binding(&self.role_ref, self.subjects.as_ref(), &["ClusterRole"])
    }
    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        immutable_role_ref(&self.role_ref, &old.role_ref)
    }
}

/// kubectl's columns for roles: `CREATED AT` as an RFC 3339 time, not an age.
fn role_columns() -> Vec<PrinterColumn> {
    vec![column("Created At", "string", ".metadata.creationTimestamp", 0)]
}

/// kubectl's columns for bindings: `ROLE` as `Kind/name`, then the subjects with `-o wide`.
fn binding_columns() -> Vec<PrinterColumn> {
    vec![
        column("Role", "string", "{.roleRef.kind}/{.roleRef.name}", 0),
        column("Age", "date", ".metadata.creationTimestamp", 0),
        column("Users", "string", ".subjects[?(@.kind==\"User\")].name", 1),
        column("Groups", "string", ".subjects[?(@.kind==\"Group\")].name", 1),
        column("ServiceAccounts", "string", ".subjects[?(@.kind==\"ServiceAccount\")].name", 1),
    ]
}

/// Definitions of the four RBAC kinds.
pub fn definitions() -> Vec<ResourceDef> {
    vec![
        ResourceDef::builtin::<ClusterRole>("clusterroles", false, &[], &[], false, role_columns()),
        ResourceDef::builtin::<ClusterRoleBinding>(
            "clusterrolebindings",
            false,
            &[],
            &[],
            false,
            binding_columns(),
        ),
        ResourceDef::builtin::<Role>("roles", true, &[], &[], false, role_columns()),
        ResourceDef::builtin::<RoleBinding>(
            "rolebindings",
            true,
            &[],
            &[],
            false,
            binding_columns(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(kind: &str) -> ResourceDef {
        definitions().into_iter().find(|d| d.kind == kind).unwrap()
    }

    #[test]
    fn namespaced_roles_refuse_non_resource_urls() {
        let mut role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "r", "namespace": "a"},
            "rules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}, {"verbs": []}]});
        let errs = def("Role").admit(&mut role, None).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "rules[0].nonResourceURLs",
                "rules[1].verbs",
                "rules[1].apiGroups",
                "rules[1].resources"
            ]
        );
        let mut cluster_role = json!({"apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole", "metadata": {"name": "r"},
            "rules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]});
        def("ClusterRole").admit(&mut cluster_role, None).unwrap();
    }

    #[test]
    fn bindings_check_role_ref_and_subjects_and_keep_role_ref() {
        let binding = |kind: &str, subject_group: &str| {
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "b"},
                "roleRef": {"apiGroup": GROUP, "kind": kind, "name": "view"},
                "subjects": [{"kind": "User", "apiGroup": subject_group, "name": "alice"}]})
        };
        let errs = def("ClusterRoleBinding").admit(&mut binding("Role", "x"), None).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["roleRef.kind", "subjects[0].apiGroup"]);
        let old = binding("ClusterRole", GROUP);
        def("ClusterRoleBinding").admit(&mut old.clone(), None).unwrap();
        let mut changed = old.clone();
        changed["roleRef"]["name"] = json!("edit");
        let errs = def("ClusterRoleBinding").admit(&mut changed, Some(&old)).unwrap_err();
        assert_eq!(errs[0].detail, "cannot change roleRef");
    }
}
