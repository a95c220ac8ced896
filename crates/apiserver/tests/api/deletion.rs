//! Deletion: finalizers, delete options (preconditions, dry run), namespaces that must exist and cascade, propagation to owned objects.

use anyhow::{Context, Result};
use holdfast_api::snapshot::VolumeSnapshot;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::fixture::{config_map, eventually, fixture, job, pod, raw, snapshot, status_of};

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() -> Result<()> {
    let f = fixture()?;
    let api: Api<VolumeSnapshot> = Api::namespaced(f.client.clone(), "default");
    let mut vs = snapshot("s", "data");
    vs.metadata.finalizers = Some(vec!["example.com/cleanup".into()]);
    api.create(&PostParams::default(), &vs).await?;

    let (code, _, body) = raw(
        &f.client,
        "DELETE",
        "/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots/s",
        &[("content-type", "application/json")],
        br#"{"propagationPolicy":"Background"}"#,
    )
    .await?;
    assert_eq!(code, 202, "{body}");
    let marked: Value = serde_json::from_str(&body)?;
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 0);
    assert_eq!(marked["metadata"]["generation"], 2);

    let still = api.get("s").await?;
    assert!(still.metadata.deletion_timestamp.is_some());

    let s = status_of(
        api.patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/cleanup", "new"]}})),
        )
        .await,
    )?;
    assert_eq!(s.code, 422);
    assert!(s.message.contains("metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted"));

    api.patch(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    assert!(api.get_opt("s").await?.is_none(), "removing the last finalizer deletes the object");
    Ok(())
}

#[tokio::test]
async fn delete_options_preconditions_and_dry_run() -> Result<()> {
    let f = fixture()?;
    let api: Api<ConfigMap> = Api::namespaced(f.client.clone(), "default");
    let cm = api.create(&PostParams::default(), &config_map("c", &[("a", "1")])).await?;

    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("not-the-uid".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let s = status_of(api.delete("c", &dp).await)?;
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(
        s.message.contains("Precondition failed: UID in precondition: not-the-uid"),
        "{}",
        s.message
    );

    let rev = f.server.store().current_rev();
    api.delete("c", &DeleteParams::default().dry_run()).await?;
    let pp = PostParams { dry_run: true, ..Default::default() };
    api.create(&pp, &config_map("d", &[])).await?;
    api.patch("c", &PatchParams::default().dry_run(), &Patch::Merge(json!({"data": {"a": "2"}})))
        .await?;
    let mut replaced = cm.clone();
    replaced.data = Some([("a".to_string(), "3".to_string())].into());
    let would_be = api.replace("c", &pp, &replaced).await?;
    assert_eq!(would_be.data.and_then(|d| d.get("a").cloned()).as_deref(), Some("3"));
    assert_eq!(f.server.store().current_rev(), rev, "dry runs write nothing");
    assert!(api.get_opt("d").await?.is_none());
    let c = api.get("c").await?;
    assert_eq!(c.data.and_then(|d| d.get("a").cloned()).as_deref(), Some("1"));
    Ok(())
}

#[tokio::test]
async fn namespaces_must_exist_and_deletion_cascades() -> Result<()> {
    let f = fixture()?;
    let nss: Api<Namespace> = Api::all(f.client.clone());
    let names: Vec<String> =
        nss.list(&ListParams::default()).await?.items.iter().map(|n| n.name_any()).collect();
    for n in ["default", "kube-system", "kube-public"] {
        assert!(names.contains(&n.to_string()), "{names:?}");
    }
    let mut ns = Namespace::default();
    ns.metadata.name = Some("team".into());
    let ns = nss.create(&PostParams::default(), &ns).await?;
    assert_eq!(ns.status.and_then(|s| s.phase).as_deref(), Some("Active"));

    let cms: Api<ConfigMap> = Api::namespaced(f.client.clone(), "team");
    cms.create(&PostParams::default(), &config_map("c", &[])).await?;
    let snaps: Api<VolumeSnapshot> = Api::namespaced(f.client.clone(), "team");
    let mut held = snapshot("held", "data");
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    snaps.create(&PostParams::default(), &held).await?;

    let deleting =
        nss.delete("team", &DeleteParams::default()).await?.left().context("namespace object")?;
    assert_eq!(deleting.status.and_then(|s| s.phase).as_deref(), Some("Terminating"));
    let s = status_of(cms.create(&PostParams::default(), &config_map("late", &[])).await)?;
    assert_eq!(s.code, 403);

    eventually("the configmap to go", || async { cms.get_opt("c").await.ok().flatten().is_none() })
        .await?;
    eventually("the snapshot to be marked", || async {
        snaps
            .get_opt("held")
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s.metadata.deletion_timestamp.is_some())
    })
    .await?;
    assert!(nss.get_opt("team").await?.is_some(), "the namespace waits for the finalizer");
    snaps
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
    eventually("the namespace to go", || async {
        nss.get_opt("team").await.ok().flatten().is_none()
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn delete_propagation_cascades_to_owned_objects() -> Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    let f = fixture()?;
    let jobs: Api<Job> = Api::namespaced(f.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(f.client.clone(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(f.client.clone(), "default");
    let names = |l: kube::core::ObjectList<Pod>| {
        l.items.into_iter().map(|p| p.name_any()).collect::<Vec<_>>()
    };
    let keeper = cms.create(&PostParams::default(), &config_map("keeper", &[])).await?;
    let keeper_uid = keeper.uid().context("uid")?;

    // Background: the Job's Pods go, and what those Pods own; a Pod with a second owner only
    // loses the reference; a Pod elsewhere with the same owner uid is not the Job's.
    let j1 = jobs.create(&PostParams::default(), &job("j1")?).await?;
    let uid = j1.uid().context("uid")?;
    let p1 =
        pods.create(&PostParams::default(), &pod("p1", &[("Job", "j1", &uid)], &["main"])?).await?;
    pods.create(&PostParams::default(), &pod("p2", &[("Job", "j1", &uid)], &["main"])?).await?;
    pods.create(
        &PostParams::default(),
        &pod("p3", &[("Job", "j1", &uid), ("ConfigMap", "keeper", &keeper_uid)], &["main"])?,
    )
    .await?;
    let mut grandchild = config_map("of-p1", &[]);
    grandchild.metadata.owner_references =
        Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: "p1".into(),
            uid: p1.uid().context("uid")?,
            ..Default::default()
        }]);
    cms.create(&PostParams::default(), &grandchild).await?;
    f.server.ensure_namespace("elsewhere").await?;
    let other: Api<Pod> = Api::namespaced(f.client.clone(), "elsewhere");
    other.create(&PostParams::default(), &pod("p9", &[("Job", "j1", &uid)], &["main"])?).await?;
    jobs.delete("j1", &DeleteParams::background()).await?;
    assert_eq!(names(pods.list(&ListParams::default()).await?), ["p3"]);
    let p3 = pods.get("p3").await?;
    let owners: Vec<String> = p3.owner_references().iter().map(|r| r.uid.clone()).collect();
    assert_eq!(owners, [keeper_uid]);
    assert!(cms.get_opt("of-p1").await?.is_none(), "the Pod's own dependent went too");
    assert!(other.get_opt("p9").await?.is_some(), "no cascade across namespaces");

    // Foreground: dependents first, then the owner.
    let j2 = jobs.create(&PostParams::default(), &job("j2")?).await?;
    let uid2 = j2.uid().context("uid")?;
    pods.create(&PostParams::default(), &pod("q1", &[("Job", "j2", &uid2)], &["main"])?).await?;
    jobs.delete("j2", &DeleteParams::foreground()).await?;
    assert!(pods.get_opt("q1").await?.is_none());
    assert!(jobs.get_opt("j2").await?.is_none());

    // Orphan, and a Job's default (orphan, as upstream): the Pods stay, without the reference.
    for (job_name, pod_name, params) in
        [("j3", "r1", DeleteParams::orphan()), ("j4", "r2", DeleteParams::default())]
    {
        let j = jobs.create(&PostParams::default(), &job(job_name)?).await?;
        let u = j.uid().context("uid")?;
        pods.create(&PostParams::default(), &pod(pod_name, &[("Job", job_name, &u)], &["main"])?)
            .await?;
        jobs.delete(job_name, &params).await?;
        assert!(jobs.get_opt(job_name).await?.is_none());
        let kept = pods.get(pod_name).await?;
        assert!(kept.owner_references().is_empty(), "{job_name}: {:?}", kept.metadata);
    }

    // A policy that does not exist is refused and deletes nothing.
    let (code, _, body) = raw(
        &f.client,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/keeper",
        &[("content-type", "application/json")],
        br#"{"propagationPolicy":"Sometimes"}"#,
    )
    .await?;
    assert_eq!(code, 400, "{body}");
    assert!(cms.get_opt("keeper").await?.is_some());
    Ok(())
}
