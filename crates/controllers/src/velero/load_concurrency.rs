//! Velero's node-agent ConfigMap (`velero node-agent --node-agent-configmap NAME`, in the node
//! agent's namespace): of what it configures, `loadConcurrency` applies to `holdfast agent`, the
//! number of data moves (pod volume backups and restores together) a node runs at once.
//!
//! As Velero reads it: the ConfigMap's one data value is JSON; `loadConcurrency.perNodeConfig`
//! rules whose `nodeSelector` matches the node's labels give their `number`, the smallest one
//! winning; a node no rule matches gets `globalConfig`. Unlike Velero, which logs a bad rule and
//! skips it, a rule or value that does not parse stops the agent with the reason: a node silently
//! running at another concurrency than its administrator wrote is harder to find.

use std::collections::BTreeMap;

use holdfast_api::selector::LabelSelector;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sSelector;
use kube::api::Api;
use serde::Deserialize;

use crate::Error;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Configs {
    load_concurrency: Option<LoadConcurrency>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoadConcurrency {
    global_config: Option<i64>,
    #[serde(default)]
    per_node_config: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    node_selector: K8sSelector,
    number: i64,
}

/// The concurrency the ConfigMap's JSON `text` gives a node labelled `labels`; `None` when it
/// says nothing about concurrency (the caller's default applies).
///
/// # Errors
/// What does not parse, as text.
pub fn for_node(text: &str, labels: &BTreeMap<String, String>) -> Result<Option<usize>, String> {
    let configs: Configs = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let Some(load) = configs.load_concurrency else { return Ok(None) };
    let positive = |n: i64, what: &str| {
        usize::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or(format!("{what} {n} is not a positive number"))
    };
    let global =
        load.global_config.map(|n| positive(n, "loadConcurrency.globalConfig")).transpose()?;
    let mut smallest: Option<usize> = None;
    for (i, rule) in load.per_node_config.iter().enumerate() {
        let at = format!("loadConcurrency.perNodeConfig[{i}]");
        let number = positive(rule.number, &format!("{at}.number"))?;
        let selector = LabelSelector::from_k8s(&rule.node_selector)
            .map_err(|e| format!("{at}.nodeSelector: {e}"))?;
        if selector.matches(labels) {
            smallest = Some(smallest.map_or(number, |s| s.min(number)));
        }
    }
    Ok(smallest.or(global))
}

/// Reads ConfigMap `name` in `namespace` and the Node `node`, and returns the concurrency the
/// ConfigMap gives that node (`None`: it says nothing about it).
///
/// # Errors
/// [`Error::Invalid`] naming the ConfigMap when it is missing, has not exactly one data value, or
/// does not parse; a missing Node; API errors.
pub async fn read(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    node: &str,
) -> Result<Option<usize>, Error> {
    let what = format!("ConfigMap {namespace}/{name} (--node-agent-configmap)");
    let map = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?
        .ok_or_else(|| Error::Invalid(format!("{what} does not exist")))?;
    let data = map.data.unwrap_or_default();
    let [(_, text)] = <[(String, String); 1]>::try_from(data.into_iter().collect::<Vec<_>>())
        .map_err(|all| {
            Error::Invalid(format!(
                "{what} must hold one data value (Velero's node-agent configuration as JSON), \
                 it holds {}",
                all.len()
            ))
        })?;
    let labels = Api::<Node>::all(client.clone())
        .get_opt(node)
        .await?
        .ok_or_else(|| Error::Invalid(format!("node {node:?} does not exist")))?
        .metadata
        .labels
        .unwrap_or_default();
    for_node(&text, &labels).map_err(|e| Error::Invalid(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    const CONFIG: &str = r#"{"loadConcurrency": {"globalConfig": 2, "perNodeConfig": [
        {"nodeSelector": {"matchLabels": {"kubernetes.io/hostname": "node-1"}}, "number": 3},
        {"nodeSelector": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}, "number": 5},
        {"nodeSelector": {"matchLabels": {"pool": "big"}}, "number": 8}
    ]}}"#;

    #[test]
    fn the_smallest_matching_rule_wins_and_other_nodes_get_the_global_number() {
        let node1 = labels(&[("kubernetes.io/hostname", "node-1"), ("disk", "ssd")]);
        assert_eq!(for_node(CONFIG, &node1), Ok(Some(3)));
        assert_eq!(for_node(CONFIG, &labels(&[("disk", "ssd"), ("pool", "big")])), Ok(Some(5)));
        assert_eq!(for_node(CONFIG, &labels(&[("pool", "big")])), Ok(Some(8)));
        assert_eq!(for_node(CONFIG, &labels(&[("pool", "small")])), Ok(Some(2)));
    }

    #[test]
    fn nothing_said_about_concurrency_leaves_the_default() {
        assert_eq!(for_node(r#"{"podResources": {"cpuRequest": "1"}}"#, &labels(&[])), Ok(None));
        let rules_only = r#"{"loadConcurrency": {"perNodeConfig": [
            {"nodeSelector": {"matchLabels": {"a": "b"}}, "number": 4}]}}"#;
        assert_eq!(for_node(rules_only, &labels(&[])), Ok(None));
        assert_eq!(for_node(rules_only, &labels(&[("a", "b")])), Ok(Some(4)));
    }

    #[test]
    fn bad_values_are_refused_with_where_they_are() {
        let zero = r#"{"loadConcurrency": {"globalConfig": 0}}"#;
        assert!(for_node(zero, &labels(&[])).unwrap_err().contains("globalConfig 0"));
        let bad_op = r#"{"loadConcurrency": {"perNodeConfig": [
            {"nodeSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}, "number": 1}]}}"#;
        let err = for_node(bad_op, &labels(&[])).unwrap_err();
        assert!(err.contains("perNodeConfig[0].nodeSelector"), "{err}");
        assert!(for_node("not json", &labels(&[])).is_err());
    }
}
