//! The ActionSet controller: `status.phase` Available/Unavailable with a message saying why.
//!
//! Admission already enforces the schema (backupType enum, images, commands). What is left is
//! whether the ActionSet can do what its backupType promises: a Full, Incremental, Differential
//! or Continuous ActionSet must say how to take that backup (`spec.backup.backupData`).
//! (The v1alpha1 ActionSet has no `parametersSchema`, so there is none to check.)

use std::sync::Arc;

use holdfast_api::kubeblocks::Phase;
use holdfast_api::kubeblocks::actionset::{ActionSet, ActionSetStatus};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use serde_json::json;

use crate::{Context, Error, reconciler};

/// Runs the controller.
pub async fn run(ctx: Arc<Context>) -> Result<(), Error> {
    let controller =
        Controller::new(Api::<ActionSet>::all(ctx.client.clone()), watcher::Config::default());
    reconciler::run("action-set", controller, ctx, reconcile).await
}

/// Whether the ActionSet is usable, and why not.
pub fn evaluate(action_set: &ActionSet) -> Result<(), String> {
    let spec = &action_set.spec;
    let backup_type = spec.backup_type;
    let backup_data = spec.backup.as_ref().map(|b| &b.backup_data);
    match backup_data {
        None => Err(format!(
            "backupType {backup_type:?} needs spec.backup.backupData: there is no backup action"
        )),
        Some(data) if data.job.base.command.is_empty() || data.job.base.image.is_empty() => {
            Err("spec.backup.backupData needs an image and a command".to_owned())
        }
        Some(_) => Ok(()),
    }
}

async fn reconcile(action_set: Arc<ActionSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let status = match evaluate(&action_set) {
        Ok(()) => ActionSetStatus {
            phase: Some(Phase::Available),
            message: None,
            observed_generation: action_set.metadata.generation,
        },
        Err(message) => ActionSetStatus {
            phase: Some(Phase::Unavailable),
            message: Some(message),
            observed_generation: action_set.metadata.generation,
        },
    };
    if action_set.status.as_ref() != Some(&status) {
        let api: Api<ActionSet> = Api::all(ctx.client.clone());
        // `message: null` clears a message left from an earlier Unavailable.
        let patch = json!({"status": {
            "phase": status.phase,
            "message": status.message,
            "observedGeneration": status.observed_generation,
        }});
        api.patch_status(&action_set.name_any(), &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action_set(v: serde_json::Value) -> ActionSet {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_backup_type_needs_a_backup_action() {
        let restore_only = action_set(json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "ActionSet",
            "metadata": {"name": "r"},
            "spec": {"backupType": "Continuous", "restore": {"prepareData": {"image": "i", "command": ["true"]}}}
        }));
        assert_eq!(
            evaluate(&restore_only).unwrap_err(),
            "backupType Continuous needs spec.backup.backupData: there is no backup action"
        );
        let full = action_set(json!({
            "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "ActionSet",
            "metadata": {"name": "f"},
            "spec": {"backupType": "Full", "backup": {"backupData": {"image": "i", "command": ["sh"]}}}
        }));
        assert_eq!(evaluate(&full), Ok(()));
    }
}
