//! Strategic merge patch on built-in kinds, and 415 for it on custom kinds.

use anyhow::{Context, Result};
use holdfast_api::snapshot::VolumeSnapshot;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::fixture::{fixture, snapshot, status_of};

#[tokio::test]
async fn strategic_merge_patch_on_builtins_and_415_on_custom_kinds() -> Result<()> {
    let f = fixture()?;
    let jobs: Api<Job> = Api::namespaced(f.client.clone(), "default");
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "a", "image": "busybox:1", "env": [{"name": "OLD", "value": "1"}]}
        ]}}}
    }))?;
    jobs.create(&PostParams::default(), &job).await?;
    let patched = jobs
        .patch(
            "j",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                "containers": [
                    {"name": "a", "image": "busybox:2", "$setElementOrder/env": [{"name": "NEW"}],
                     "env": [{"name": "NEW", "value": "2"}, {"$patch": "delete", "name": "OLD"}]},
                    {"name": "b", "image": "busybox:3"}
                ]
            }}}})),
        )
        .await?;
    let pod = patched.spec.and_then(|s| s.template.spec).context("pod spec")?;
    let containers: Vec<(String, Option<String>)> =
        pod.containers.iter().map(|c| (c.name.clone(), c.image.clone())).collect();
    assert_eq!(
        containers,
        [("a".into(), Some("busybox:2".into())), ("b".into(), Some("busybox:3".into()))]
    );
    let env: Vec<String> =
        pod.containers[0].env.clone().unwrap_or_default().into_iter().map(|e| e.name).collect();
    assert_eq!(env, ["NEW"]);

    let api: Api<VolumeSnapshot> = Api::namespaced(f.client.clone(), "default");
    api.create(&PostParams::default(), &snapshot("s", "data")).await?;
    let s = status_of(
        api.patch(
            "s",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await,
    )?;
    assert_eq!((s.code, s.reason.as_str()), (415, "UnsupportedMediaType"));
    assert_eq!(
        s.message,
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    );
    Ok(())
}
