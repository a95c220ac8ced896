//! The pods a backup or restore works on: chosen by a label selector, in name order, and the
//! container of theirs an action refers to.

use holdfast_api::selector::LabelSelector;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sLabelSelector;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::{Context, Error};

/// The pods in `ns` that `selector` matches and that are not being deleted, sorted by name.
///
/// # Errors
/// [`Error::Invalid`] "`<what>` is invalid: …" when the selector is not a valid one; API errors.
pub async fn matching(
    ctx: &Context,
    ns: &str,
    selector: &K8sLabelSelector,
    what: &str,
) -> Result<Vec<Pod>, Error> {
    let selector = LabelSelector::from_k8s(selector)
        .map_err(|e| Error::Invalid(format!("{what} is invalid: {e}")))?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut pods: Vec<Pod> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| selector.matches(p.labels()))
        .collect();
    pods.sort_by_key(|p| p.name_any());
    Ok(pods)
}

/// Whether a backup can run against `pod`: Running, or without any status (a stored
/// description of a workload that runs on this host).
pub fn is_usable(pod: &Pod) -> bool {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        None => true,
        Some(phase) => phase == "Running",
    }
}

/// The container of `pod` named `name`, or its first.
pub fn container<'a>(pod: &'a Pod, name: Option<&str>) -> Option<&'a Container> {
    let containers = &pod.spec.as_ref()?.containers;
    match name {
        Some(name) => containers.iter().find(|c| c.name == name),
        None => containers.first(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};

    #[test]
    fn usable_pods_run_or_are_descriptions() {
        let mut pod = Pod::default();
        assert!(is_usable(&pod));
        pod.status = Some(PodStatus { phase: Some("Running".into()), ..PodStatus::default() });
        assert!(is_usable(&pod));
        pod.status = Some(PodStatus { phase: Some("Pending".into()), ..PodStatus::default() });
        assert!(!is_usable(&pod));
    }

    #[test]
    fn the_named_container_or_the_first() {
        let named = |n: &str| Container { name: n.into(), ..Container::default() };
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![named("db"), named("exporter")],
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        assert_eq!(container(&pod, None).map(|c| c.name.as_str()), Some("db"));
        assert_eq!(container(&pod, Some("exporter")).map(|c| c.name.as_str()), Some("exporter"));
        assert!(container(&pod, Some("nope")).is_none());
        assert!(container(&Pod::default(), None).is_none());
    }
}
