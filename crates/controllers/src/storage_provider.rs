//! The StorageProvider controller: `status.phase` Ready/NotReady with the conditions
//! `CSIDriverInstalled` (the `CSIDriver` named by `spec.csiDriverName` exists) and
//! `TemplatesParsed` (every template is valid Go template syntax).
//!
//! A provider without a CSI driver is Ready when its templates parse: it serves Tool access
//! (datasafed), and Mount access through whatever StorageClass its templates name (upstream's
//! `pvc` provider). A provider naming a CSI driver is NotReady until that driver is installed,
//! as upstream; BackupRepos with Tool access still use its `datasafedConfigTemplate`.
//! At start the built-in providers are installed (`builtin_providers`).

use std::sync::Arc;

use holdfast_api::storage::{StorageProvider, StorageProviderPhase, StorageProviderStatus};
use holdfast_template::Template;
use k8s_openapi::api::storage::v1::CSIDriver;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use serde_json::json;

use crate::{Context, Error, builtin_providers, condition, reconciler};

/// Condition: the provider's CSI driver is installed.
pub const CONDITION_CSI_DRIVER_INSTALLED: &str = "CSIDriverInstalled";
/// Condition: every template of the provider parses.
pub const CONDITION_TEMPLATES_PARSED: &str = "TemplatesParsed";

/// Runs the controller after installing the built-in providers.
pub async fn run(ctx: Arc<Context>) -> Result<(), Error> {
    builtin_providers::install(&ctx).await?;
    let providers: Api<StorageProvider> = Api::all(ctx.client.clone());
    let controller = Controller::new(providers, watcher::Config::default());
    let store = controller.store();
    let controller = controller.watches(
        Api::<CSIDriver>::all(ctx.client.clone()),
        watcher::Config::default(),
        move |driver: CSIDriver| {
            let name = driver.name_any();
            store
                .state()
                .into_iter()
                .filter(|p| p.spec.csi_driver_name.as_deref() == Some(name.as_str()))
                .map(|p| ObjectRef::from_obj(&*p))
                .collect::<Vec<_>>()
        },
    );
    reconciler::run("storage-provider", controller, ctx, reconcile).await
}

async fn reconcile(provider: Arc<StorageProvider>, ctx: Arc<Context>) -> Result<Action, Error> {
    let mut conditions =
        provider.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let generation = provider.metadata.generation;
    let now = ctx.clock.now();
    let mut ready = true;

    match provider.spec.csi_driver_name.as_deref().filter(|n| !n.is_empty()) {
        Some(driver) => {
            let drivers: Api<CSIDriver> = Api::all(ctx.client.clone());
            let installed = drivers.get_opt(driver).await?.is_some();
            ready &= installed;
            let (status, reason, message) = if installed {
                (true, "CSIDriverInstalled", format!("CSI driver {driver} is installed"))
            } else {
                (
                    false,
                    "CSIDriverNotFound",
                    format!(
                        "CSI driver {driver} is not installed (no CSIDriver object of that name)"
                    ),
                )
            };
            condition::set(
                &mut conditions,
                CONDITION_CSI_DRIVER_INSTALLED,
                status,
                reason,
                &message,
                generation,
                now,
            );
        }
        None => {
            let mounts = templates(&provider).iter().any(|(field, _)| {
                matches!(*field, "storageClassTemplate" | "persistentVolumeClaimTemplate")
            });
            let message = if mounts {
                "the provider names no CSI driver; Mount access uses the StorageClass its \
                 templates name"
            } else {
                "the provider names no CSI driver; it serves Tool (datasafed) access only"
            };
            condition::set(
                &mut conditions,
                CONDITION_CSI_DRIVER_INSTALLED,
                false,
                "CSIDriverNotSpecified",
                message,
                generation,
                now,
            );
        }
    }

    let parse_errors = template_errors(&provider);
    if parse_errors.is_empty() {
        condition::set(
            &mut conditions,
            CONDITION_TEMPLATES_PARSED,
            true,
            "TemplatesParsed",
            "every template parses",
            generation,
            now,
        );
    } else {
        ready = false;
        condition::set(
            &mut conditions,
            CONDITION_TEMPLATES_PARSED,
            false,
            "InvalidTemplate",
            &parse_errors.join("; "),
            generation,
            now,
        );
    }

    let status = StorageProviderStatus {
        phase: Some(if ready {
            StorageProviderPhase::Ready
        } else {
            StorageProviderPhase::NotReady
        }),
        conditions: Some(conditions),
    };
    if provider.status.as_ref() != Some(&status) {
        let api: Api<StorageProvider> = Api::all(ctx.client.clone());
        api.patch_status(
            &provider.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
    }
    Ok(Action::await_change())
}

/// The templates of a provider, each with the field it comes from.
pub fn templates(provider: &StorageProvider) -> Vec<(&'static str, &str)> {
    let spec = &provider.spec;
    [
        ("csiDriverSecretTemplate", spec.csi_driver_secret_template.as_deref()),
        ("storageClassTemplate", spec.storage_class_template.as_deref()),
        ("persistentVolumeClaimTemplate", spec.persistent_volume_claim_template.as_deref()),
        ("datasafedConfigTemplate", spec.datasafed_config_template.as_deref()),
    ]
    .into_iter()
    .filter_map(|(field, t)| t.filter(|t| !t.trim().is_empty()).map(|t| (field, t)))
    .collect()
}

/// The parse error of every template that does not parse, each naming provider and field.
pub fn template_errors(provider: &StorageProvider) -> Vec<String> {
    let name = provider.name_any();
    templates(provider)
        .into_iter()
        .filter_map(|(field, src)| {
            Template::parse(&format!("{name}/{field}"), src).err().map(|e| e.to_string())
        })
        .collect()
}

/// Whether the provider's `CSIDriverInstalled` condition is True.
pub fn csi_driver_installed(provider: &StorageProvider) -> bool {
    let conditions = provider.status.as_ref().and_then(|s| s.conditions.as_deref());
    conditions.is_some_and(|c| condition::is_true(c, CONDITION_CSI_DRIVER_INSTALLED))
}
