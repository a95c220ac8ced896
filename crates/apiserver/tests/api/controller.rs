//! A kube-runtime `Controller` with the `finalizer` helper reconciling against the server.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use holdfast_api::snapshot::VolumeSnapshot;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, finalizer, watcher};
use serde_json::json;

use crate::fixture::{eventually, fixture, snapshot};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ReconcileError(String);

struct Ctx {
    api: Api<VolumeSnapshot>,
    cleaned: tokio::sync::Mutex<Vec<String>>,
}

async fn reconcile(
    vs: Arc<VolumeSnapshot>,
    ctx: Arc<Ctx>,
) -> Result<Action, finalizer::Error<ReconcileError>> {
    let api = ctx.api.clone();
    finalizer::finalizer(&api, "holdfast.test/cleanup", vs, |event| async {
        match event {
            finalizer::Event::Apply(vs) => {
                let status = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                    "status": {"readyToUse": true}});
                api.patch_status(&vs.name_any(), &PatchParams::apply("test-controller").force(), &Patch::Apply(status))
                    .await
                    .map_err(|e| ReconcileError(e.to_string()))?;
                Ok(Action::await_change())
            }
            finalizer::Event::Cleanup(vs) => {
                ctx.cleaned.lock().await.push(vs.name_any());
                Ok(Action::await_change())
            }
        }
    })
    .await
}

#[tokio::test]
async fn controller_with_finalizer_reconciles_and_cleans_up() -> Result<()> {
    let f = fixture()?;
    let api: Api<VolumeSnapshot> = Api::namespaced(f.client.clone(), "default");
    let ctx = Arc::new(Ctx { api: api.clone(), cleaned: tokio::sync::Mutex::new(Vec::new()) });
    let controller = tokio::spawn(
        Controller::new(api.clone(), watcher::Config::default())
            .run(reconcile, |_, _, _| Action::requeue(Duration::from_millis(200)), ctx.clone())
            .for_each(|_| async {}),
    );

    api.create(&PostParams::default(), &snapshot("c1", "data")).await?;
    eventually("the finalizer and status", || async {
        api.get_opt("c1").await.ok().flatten().is_some_and(|vs| {
            vs.finalizers().iter().any(|x| x == "holdfast.test/cleanup")
                && vs.status.as_ref().and_then(|s| s.ready_to_use) == Some(true)
        })
    })
    .await?;
    // Settled: the controller does not keep writing (no-op applies are not events).
    let settled = f.server.store().current_rev();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(f.server.store().current_rev(), settled, "the controller hot-loops");

    api.delete("c1", &DeleteParams::default()).await?;
    eventually("cleanup and removal", || async {
        api.get_opt("c1").await.ok().flatten().is_none()
    })
    .await?;
    assert_eq!(*ctx.cleaned.lock().await, ["c1"]);
    controller.abort();
    Ok(())
}
