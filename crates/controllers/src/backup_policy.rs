//! The BackupPolicy controller: `status.phase` Available/Unavailable with a message.
//!
//! A policy is Available when every method's ActionSet exists and is not Unavailable, its
//! `backupRepoName` (if set) names an existing BackupRepo, and each target's pod selector is
//! valid. Methods that take volume snapshots need no ActionSet; one that names no target volumes
//! is accepted with a note saying its backups fail. Changes to ActionSets and BackupRepos
//! re-evaluate the policies that name them.

use std::sync::Arc;

use holdfast_api::kubeblocks::Phase;
use holdfast_api::kubeblocks::backup_policy::{BackupPolicy, BackupPolicyStatus, BackupTarget};
use holdfast_api::kubeblocks::{ActionSet, BackupRepo};
use holdfast_api::selector::LabelSelector;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use serde_json::json;

use crate::backup::volume_snapshot;
use crate::{Context, Error, reconciler};

/// Runs the controller.
pub async fn run(ctx: Arc<Context>) -> Result<(), Error> {
    let client = ctx.client.clone();
    let controller =
        Controller::new(Api::<BackupPolicy>::all(client.clone()), watcher::Config::default());
    let (by_action_set, by_repo) = (controller.store(), controller.store());
    let controller = controller
        .watches(
            Api::<ActionSet>::all(client.clone()),
            watcher::Config::default(),
            move |a: ActionSet| {
                let name = a.name_any();
                by_action_set
                    .state()
                    .into_iter()
                    .filter(|p| {
                        p.spec
                            .backup_methods
                            .iter()
                            .any(|m| m.action_set_name.as_deref() == Some(name.as_str()))
                    })
                    .map(|p| ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
            },
        )
        .watches(
            Api::<BackupRepo>::all(client),
            watcher::Config::default(),
            move |r: BackupRepo| {
                let name = r.name_any();
                by_repo
                    .state()
                    .into_iter()
                    .filter(|p| p.spec.backup_repo_name.as_deref() == Some(name.as_str()))
                    .map(|p| ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
            },
        );
    reconciler::run("backup-policy", controller, ctx, reconcile).await
}

fn check_target(target: &BackupTarget, field: &str, problems: &mut Vec<String>) {
    if let Err(e) = LabelSelector::from_k8s(&target.pod_selector.label_selector) {
        problems.push(format!("{field}.podSelector is invalid: {e}"));
    }
}

async fn reconcile(policy: Arc<BackupPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let action_sets: Api<ActionSet> = Api::all(ctx.client.clone());
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    check_target(&policy.spec.target, "spec.target", &mut problems);
    for method in &policy.spec.backup_methods {
        if let Some(target) = &method.target {
            check_target(target, &format!("backupMethods[{}].target", method.name), &mut problems);
        }
        match method.action_set_name.as_deref().filter(|n| !n.is_empty()) {
            Some(name) => match action_sets.get_opt(name).await? {
                None => {
                    problems.push(format!("method {}: actionset {name} not found", method.name))
                }
                Some(a) if a.status.as_ref().and_then(|s| s.phase) == Some(Phase::Unavailable) => {
                    let why = a.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default();
                    problems.push(format!(
                        "method {}: actionset {name} is Unavailable: {why}",
                        method.name
                    ));
                }
                Some(_) => {}
            },
            None if method.takes_snapshots() => {
                // Not a problem of the policy (its other methods work), but every backup of this
                // method fails until it names the volumes to snapshot.
                if volume_snapshot::target_volumes(method).is_empty() {
                    notes.push(format!(
                        "method {} takes volume snapshots but names no targetVolumes.volumes, so \
                         its backups fail until it does",
                        method.name
                    ));
                }
            }
            None => problems.push(format!(
                "method {} has no actionSetName and does not take volume snapshots",
                method.name
            )),
        }
    }
    if let Some(repo) = policy.spec.backup_repo_name.as_deref().filter(|n| !n.is_empty()) {
        let repos: Api<BackupRepo> = Api::all(ctx.client.clone());
        if repos.get_opt(repo).await?.is_none() {
            problems.push(format!("backuprepo {repo} not found"));
        }
    }
    let status = if problems.is_empty() {
        BackupPolicyStatus {
            phase: Some(Phase::Available),
            message: (!notes.is_empty()).then(|| notes.join("; ")),
            observed_generation: policy.metadata.generation,
        }
    } else {
        BackupPolicyStatus {
            phase: Some(Phase::Unavailable),
            message: Some(problems.join("; ")),
            observed_generation: policy.metadata.generation,
        }
    };
    if policy.status.as_ref() != Some(&status) {
        let api: Api<BackupPolicy> =
            Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
        let patch = json!({"status": {
            "phase": status.phase,
            "message": status.message,
            "observedGeneration": status.observed_generation,
        }});
        api.patch_status(&policy.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await?;
    }
    Ok(Action::await_change())
}
