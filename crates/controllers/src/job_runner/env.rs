//! Container environment: `envFrom`, `env` with `valueFrom`, and `$(VAR)` expansion, resolved the
//! way the kubelet does it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, ObjectFieldSelector, Pod, Secret};
use kube::api::Api;

use crate::Error;

/// An ordered environment: later definitions replace earlier ones in place.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Environment {
    vars: Vec<(String, String)>,
}

impl Environment {
    pub fn set(&mut self, name: &str, value: String) {
        match self.vars.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.vars.push((name.to_string(), value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }
}

/// Expands `$(NAME)` references as Kubernetes does: defined names are replaced, undefined ones are
/// left as written, `$$` is an escaped `$`, and any other `$` is literal.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    // An unterminated reference is literal text.
                    out.push_str(&rest[pos..]);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The environment of `container` in `pod`: `envFrom` sources in order, then `env` entries in
/// order, each value expanded against what was defined before it.
pub async fn container_env(
    client: &kube::Client,
    pod: &Pod,
    container: &Container,
) -> Result<Environment, Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env = Environment::default();
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.as_deref().unwrap_or_default();
        let data = if let Some(s) = &source.secret_ref {
            secret_data(client, ns, &s.name, s.optional.unwrap_or(false)).await?
        } else if let Some(c) = &source.config_map_ref {
            config_map_data(client, ns, &c.name, c.optional.unwrap_or(false)).await?
        } else {
            BTreeMap::new()
        };
        for (key, value) in data {
            env.set(&format!("{prefix}{key}"), value);
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(from) = &var.value_from {
            if let Some(r) = &from.secret_key_ref {
                let data = secret_data(client, ns, &r.name, r.optional.unwrap_or(false)).await?;
                match data.get(&r.key) {
                    Some(v) => Some(v.clone()),
                    None if r.optional.unwrap_or(false) => None,
                    None => {
                        return Err(Error::NotReady(format!(
                            "env {}: Secret {ns}/{} has no key {:?}",
                            var.name, r.name, r.key
                        )));
                    }
                }
            } else if let Some(r) = &from.config_map_key_ref {
                let data =
                    config_map_data(client, ns, &r.name, r.optional.unwrap_or(false)).await?;
                match data.get(&r.key) {
                    Some(v) => Some(v.clone()),
                    None if r.optional.unwrap_or(false) => None,
                    None => {
                        return Err(Error::NotReady(format!(
                            "env {}: ConfigMap {ns}/{} has no key {:?}",
                            var.name, r.name, r.key
                        )));
                    }
                }
            } else if let Some(f) = &from.field_ref {
                Some(
                    field_value(pod, f)
                        .map_err(|e| Error::Invalid(format!("env {}: {e}", var.name)))?,
                )
            } else {
                return Err(Error::Invalid(format!(
                    "env {}: only secretKeyRef, configMapKeyRef and fieldRef are supported",
                    var.name
                )));
            }
        } else {
            let raw = var.value.clone().unwrap_or_default();
            Some(expand(&raw, |n| env.get(n).map(str::to_string)))
        };
        if let Some(value) = value {
            env.set(&var.name, value);
        }
    }
    Ok(env)
}

/// The value of a downward-API field of the pod.
pub fn field_value(pod: &Pod, field: &ObjectFieldSelector) -> Result<String, String> {
    let meta = &pod.metadata;
    let path = field.field_path.as_str();
    let from_map = |map: &Option<BTreeMap<String, String>>, prefix: &str| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => pod.spec.as_ref().and_then(|s| s.service_account_name.clone()),
        // Job processes share the host's network.
        "status.podIP" | "status.hostIP" => Some("127.0.0.1".into()),
        _ => from_map(&meta.labels, "metadata.labels['")
            .or_else(|| from_map(&meta.annotations, "metadata.annotations['")),
    };
    match value {
        Some(v) => Ok(v),
        None if path.starts_with("metadata.") || path.starts_with("spec.") => Ok(String::new()),
        None => Err(format!("fieldRef {path:?} is not supported")),
    }
}

async fn secret_data(
    client: &kube::Client,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, String>, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let Some(secret) = api.get_opt(name).await? else {
        return missing("Secret", ns, name, optional);
    };
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in secret.data.unwrap_or_default() {
        let text = String::from_utf8(value.0).map_err(|_| {
            Error::Invalid(format!("Secret {ns}/{name} key {key:?} is not UTF-8 text"))
        })?;
        out.insert(key, text);
    }
    // The API server folds stringData into data; honour it too for servers that do not.
    out.extend(secret.string_data.unwrap_or_default());
    Ok(out)
}

async fn config_map_data(
    client: &kube::Client,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, String>, Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let Some(cm) = api.get_opt(name).await? else {
        return missing("ConfigMap", ns, name, optional);
    };
    Ok(cm.data.unwrap_or_default())
}

fn missing(
    kind: &str,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, String>, Error> {
    if optional {
        Ok(BTreeMap::new())
    } else {
        Err(Error::NotReady(format!("{kind} {ns}/{name} not found")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        assert_eq!(expand("x$(A)y", look), "xalphay");
        assert_eq!(expand("$(A)$(A)", look), "alphaalpha");
        assert_eq!(expand("$(B)", look), "$(B)");
        assert_eq!(expand("$$(A)", look), "$(A)");
        assert_eq!(expand("$$$(A)", look), "$alpha");
        assert_eq!(expand("cost $5", look), "cost $5");
        assert_eq!(expand("$(A", look), "$(A");
        assert_eq!(expand("[$(EMPTY)]", look), "[]");
        assert_eq!(expand("end$", look), "end$");
    }

    #[test]
    fn later_definitions_replace_earlier_ones_in_place() {
        let mut env = Environment::default();
        env.set("A", "1".into());
        env.set("B", "2".into());
        env.set("A", "3".into());
        assert_eq!(env.vars(), &[("A".into(), "3".into()), ("B".into(), "2".into())]);
    }
}
