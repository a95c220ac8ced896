//! The BackupRepo controller, with KubeBlocks' phases, conditions and parameter rules.
//!
//! Conditions, in order: `StorageProviderReady`, `ParametersChecked`, (Mount only:
//! `StorageClassCreated`, `PVCTemplateChecked`), `PreCheckPassed`; phase `PreChecking` → `Ready`
//! | `Failed` with the cause in the condition message. The parameters are the schema defaults,
//! overlaid by `spec.config`, overlaid by every key of the credential Secret.
//!
//! Tool access (datasafed) is pre-checked in-process: the provider's `datasafedConfigTemplate`
//! is rendered, the location it names gets a real write/read/delete, and the holdfast repository
//! there is opened with the repo's key (created when the location holds none). The key is a
//! generated Secret `<repo>-repository-key` in the system namespace, created once and kept when
//! the repo is deleted: backups retained in storage must stay readable. A digest of parameters
//! and templates in the annotation `dataprotection.kubeblocks.io/backup-repo-digest` makes any
//! change re-run the pre-check.
//!
//! Mount access (a volume the provider's templates describe) is [`mount`]: a generated
//! StorageClass, a pre-check Job on a new claim, and the repo's claim `pvc-<repo>` per namespace.
//!
//! Once Ready, the tool-config Secret `tool-config-<repo>` (key `datasafed.conf`, the rendered
//! config plus a `[holdfast] password` section; for Mount access a local storage at the claim's
//! mount path) is kept in the system namespace and in every namespace whose Backups or Restores
//! use the repo, with the repo's claim beside it under Mount access; [`ensure_access`] creates
//! them on demand for the Backup and Restore controllers.
//!
//! Deletion waits (condition `DerivedObjectsDeleted`, reason `HaveAssociatedBackups`) while
//! Backups labelled with the repo that are not Failed exist, then deletes the repo's claims
//! (waiting, reason `HaveResidualPVCs`, while something holds one), StorageClass and Secrets.

mod location;
pub mod mount;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use holdfast_api::kubeblocks::backup::BackupPhase;
use holdfast_api::kubeblocks::backup_repo::{AccessMethod, BackupRepoPhase, BackupRepoStatus};
use holdfast_api::kubeblocks::{Backup, BackupRepo, Restore};
use holdfast_api::storage::StorageProvider;
use holdfast_template::{RenderContext, Template, render};
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use serde_json::json;

pub use location::{RepositoryLocation, precheck_repository, repository_location};

use crate::events::{self, EventType};
use crate::kubeblocks_env::{BACKUP_DATA_MOUNT, RepoAccess};
use crate::storage_provider::csi_driver_installed;
use crate::{Context, Error, condition, finalizer, object, reconciler};
use mount::{Generated, PreCheck};

/// The finalizer of every dataprotection object.
pub const FINALIZER: &str = finalizer::DATA_PROTECTION;
/// Digest of the parameters and templates the last pre-check ran with.
pub const DIGEST_ANNOTATION: &str = "dataprotection.kubeblocks.io/backup-repo-digest";
/// The label naming the repo of a Backup (and of the Secrets generated for a repo).
pub const LABEL_BACKUP_REPO: &str = "dataprotection.kubeblocks.io/backup-repo-name";
const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const MANAGED_BY: &str = "holdfast";
/// The key of the rendered config in a tool-config Secret.
pub const TOOL_CONFIG_KEY: &str = "datasafed.conf";
/// The key of the password in a repository-key Secret.
pub const REPOSITORY_KEY_KEY: &str = "password";

pub const CONDITION_STORAGE_PROVIDER_READY: &str = "StorageProviderReady";
pub const CONDITION_PARAMETERS_CHECKED: &str = "ParametersChecked";
pub const CONDITION_STORAGE_CLASS_CREATED: &str = "StorageClassCreated";
pub const CONDITION_PVC_TEMPLATE_CHECKED: &str = "PVCTemplateChecked";
pub const CONDITION_PRECHECK_PASSED: &str = "PreCheckPassed";
pub const CONDITION_DERIVED_OBJECTS_DELETED: &str = "DerivedObjectsDeleted";

/// How long one pre-check may take (S3 retries of an unreachable endpoint take ~20 s).
const PRECHECK_TIMEOUT: Duration = Duration::from_secs(180);
/// How often a running Mount pre-check is looked at besides its Job's events (for its timeout).
const PRECHECK_POLL: Duration = Duration::from_secs(30);

/// The name of the tool-config Secret of a repo (in any namespace).
pub fn tool_config_secret_name(repo: &str) -> String {
    format!("tool-config-{repo}")
}

/// The name of the repository-key Secret of a repo (in the system namespace).
pub fn repository_key_secret_name(repo: &str) -> String {
    format!("{repo}-repository-key")
}

/// Runs the controller.
pub async fn run(ctx: Arc<Context>) -> Result<(), Error> {
    let client = ctx.client.clone();
    let controller =
        Controller::new(Api::<BackupRepo>::all(client.clone()), watcher::Config::default());
    let (by_provider, by_secret, by_backup, by_restore) =
        (controller.store(), controller.store(), controller.store(), controller.store());
    let controller = controller
        .watches(
            Api::<StorageProvider>::all(client.clone()),
            watcher::Config::default(),
            move |p: StorageProvider| {
                let name = p.name_any();
                by_provider
                    .state()
                    .into_iter()
                    .filter(|r| r.spec.storage_provider_ref == name)
                    .map(|r| ObjectRef::from_obj(&*r))
                    .collect::<Vec<_>>()
            },
        )
        .watches(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default(),
            move |s: Secret| {
                let (name, ns) = (s.name_any(), s.namespace().unwrap_or_default());
                by_secret
                    .state()
                    .into_iter()
                    .filter(|r| {
                        r.spec.credential.as_ref().is_some_and(|c| {
                            c.name.as_deref() == Some(name.as_str())
                                && c.namespace.as_deref() == Some(ns.as_str())
                        })
                    })
                    .map(|r| ObjectRef::from_obj(&*r))
                    .collect::<Vec<_>>()
            },
        )
        .watches(
            Api::<Backup>::all(client.clone()),
            watcher::Config::default(),
            move |b: Backup| {
                let names = backup_repo_names(&b);
                by_backup
                    .state()
                    .into_iter()
                    .filter(|r| names.contains(&r.name_any()))
                    .map(|r| ObjectRef::from_obj(&*r))
                    .collect::<Vec<_>>()
            },
        )
        // A Restore names a Backup, not a repo: any Restore event re-checks where tool
        // configurations are needed (repos are few).
        .watches(
            Api::<Restore>::all(client.clone()),
            watcher::Config::default(),
            move |_: Restore| {
                by_restore.state().into_iter().map(|r| ObjectRef::from_obj(&*r)).collect::<Vec<_>>()
            },
        )
        // Mount access: the pre-check Job finishing, a claim of the repo going.
        .watches(
            Api::<Job>::all(client.clone()),
            watcher::Config::default().labels(LABEL_BACKUP_REPO),
            |job: Job| repo_of_label(&job),
        )
        .watches(
            Api::<PersistentVolumeClaim>::all(client),
            watcher::Config::default().labels(LABEL_BACKUP_REPO),
            |pvc: PersistentVolumeClaim| repo_of_label(&pvc),
        );
    reconciler::run("backup-repo", controller, ctx, reconcile).await
}

/// The repo an object made for it names in its label.
fn repo_of_label<K: kube::Resource>(obj: &K) -> Option<ObjectRef<BackupRepo>> {
    obj.labels().get(LABEL_BACKUP_REPO).map(|name| ObjectRef::new(name))
}

fn backup_repo_names(b: &Backup) -> Vec<String> {
    let mut names: Vec<String> = b.labels().get(LABEL_BACKUP_REPO).cloned().into_iter().collect();
    names.extend(b.status.as_ref().and_then(|s| s.backup_repo_name.clone()));
    names
}

/// Why a repo cannot be used: the condition that failed.
struct Failure {
    condition: &'static str,
    reason: &'static str,
    message: String,
}

fn fail(condition: &'static str, reason: &'static str, message: impl Into<String>) -> Failure {
    Failure { condition, reason, message: message.into() }
}

/// What the checks before the pre-check establish.
struct Resolved {
    provider: StorageProvider,
    parameters: BTreeMap<String, String>,
}

async fn reconcile(obj: Arc<BackupRepo>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<BackupRepo> = Api::all(ctx.client.clone());
    // Decide on the current object, not a cache that may predate our own last patch.
    let Some(mut repo) = api.get_opt(&obj.name_any()).await? else {
        return Ok(Action::await_change());
    };
    if repo.metadata.deletion_timestamp.is_some() {
        return delete(&ctx, &repo).await;
    }
    if finalizer::add(&api, &repo, FINALIZER).await? {
        // The patch comes back as an event; the next pass sees the finalizer.
        return Ok(Action::await_change());
    }

    let generation = repo.metadata.generation;
    let now = ctx.clock.now();
    let mut conditions =
        repo.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let mut evaluated: Vec<&'static str> = Vec::new();
    let resolved = resolve(&ctx, &repo).await?;
    let resolved = match resolved {
        Ok(r) => {
            condition::set(
                &mut conditions,
                CONDITION_STORAGE_PROVIDER_READY,
                true,
                "StorageProviderReady",
                "the storage provider is ready",
                generation,
                now,
            );
            condition::set(
                &mut conditions,
                CONDITION_PARAMETERS_CHECKED,
                true,
                "ParametersChecked",
                "parameters checked",
                generation,
                now,
            );
            evaluated.extend([CONDITION_STORAGE_PROVIDER_READY, CONDITION_PARAMETERS_CHECKED]);
            r
        }
        Err((passed, failure)) => {
            for c in passed {
                evaluated.push(c);
            }
            if evaluated.contains(&CONDITION_STORAGE_PROVIDER_READY) {
                condition::set(
                    &mut conditions,
                    CONDITION_STORAGE_PROVIDER_READY,
                    true,
                    "StorageProviderReady",
                    "the storage provider is ready",
                    generation,
                    now,
                );
            }
            condition::set(
                &mut conditions,
                failure.condition,
                false,
                failure.reason,
                &failure.message,
                generation,
                now,
            );
            evaluated.push(failure.condition);
            let status = status_of(
                &repo,
                BackupRepoPhase::Failed,
                ordered(conditions, &evaluated),
                &Generated::default(),
                false,
            );
            write_status(&ctx, &mut repo, status).await?;
            return Ok(Action::await_change());
        }
    };

    let mount = repo.spec.access_method == AccessMethod::Mount;
    let mut generated = Generated::default();
    if mount {
        // StorageClassCreated, then PVCTemplateChecked; either failing fails the repo.
        let failed = match mount::prepare_storage(&ctx, &repo, &resolved).await? {
            Ok((made, message)) => {
                generated = made;
                let (ok, reason, message_pvc) =
                    match mount::check_pvc_template(&ctx, &repo, &resolved) {
                        Ok(Some(m)) => (true, "PVCTemplateChecked", m),
                        Ok(None) => (
                            true,
                            "Skipped",
                            "the provider has no persistentVolumeClaimTemplate: claims are \
                             made of the generated StorageClass"
                                .to_owned(),
                        ),
                        Err(m) => (false, "BadPVCTemplate", m),
                    };
                let steps = [
                    (CONDITION_STORAGE_CLASS_CREATED, true, "StorageClassCreated", message),
                    (CONDITION_PVC_TEMPLATE_CHECKED, ok, reason, message_pvc),
                ];
                for (type_, ok, reason, message) in steps {
                    condition::set(&mut conditions, type_, ok, reason, &message, generation, now);
                    evaluated.push(type_);
                }
                !ok
            }
            Err((reason, message)) => {
                condition::set(
                    &mut conditions,
                    CONDITION_STORAGE_CLASS_CREATED,
                    false,
                    reason,
                    &message,
                    generation,
                    now,
                );
                evaluated.push(CONDITION_STORAGE_CLASS_CREATED);
                true
            }
        };
        if failed {
            let status = status_of(
                &repo,
                BackupRepoPhase::Failed,
                ordered(conditions, &evaluated),
                &generated,
                false,
            );
            write_status(&ctx, &mut repo, status).await?;
            return Ok(Action::await_change());
        }
    }
    evaluated.push(CONDITION_PRECHECK_PASSED);

    let digest = digest(&repo, &resolved);
    let checked = repo.annotations().get(DIGEST_ANNOTATION) == Some(&digest)
        && conditions.iter().any(|c| c.type_ == CONDITION_PRECHECK_PASSED && c.status != "Unknown");
    let ready = if checked {
        conditions.iter().any(|c| c.type_ == CONDITION_PRECHECK_PASSED && c.status == "True")
    } else {
        // Tool access is checked here and now; Mount access by a Job, looked at on each pass.
        let running = if mount {
            // The key of the repository Jobs will create on the claims, made before any of them.
            ensure_repository_key(&ctx, &repo).await?;
            match mount::precheck(&ctx, &repo, &resolved, &digest).await? {
                PreCheck::Running(message) => Err(message),
                PreCheck::Finished(outcome) => Ok(Some(outcome)),
            }
        } else {
            Ok(None)
        };
        let waiting = match &running {
            Err(message) => message.as_str(),
            Ok(_) => "checking that the storage can be written, read and deleted",
        };
        condition::set(
            &mut conditions,
            CONDITION_PRECHECK_PASSED,
            condition::Status::Unknown,
            "PreChecking",
            waiting,
            generation,
            now,
        );
        let status = status_of(
            &repo,
            BackupRepoPhase::PreChecking,
            ordered(conditions.clone(), &evaluated),
            &generated,
            false,
        );
        write_status(&ctx, &mut repo, status).await?;
        let outcome = match running {
            Err(_) => return Ok(Action::requeue(PRECHECK_POLL)),
            Ok(Some(outcome)) => outcome,
            Ok(None) => precheck(&ctx, &repo, &resolved).await?,
        };
        let ok = outcome.is_ok();
        let (passed, reason, message, event) = match &outcome {
            Ok(m) => (true, "PreCheckPassed", m.as_str(), EventType::Normal),
            Err(m) => (false, "PreCheckFailed", m.as_str(), EventType::Warning),
        };
        condition::set(
            &mut conditions,
            CONDITION_PRECHECK_PASSED,
            passed,
            reason,
            message,
            generation,
            now,
        );
        events::publish(&ctx, &repo, event, reason, "PreCheck", message).await;
        let patch = json!({"metadata": {"annotations": {DIGEST_ANNOTATION: digest}}});
        api.patch(&repo.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await?;
        if mount {
            mount::remove_precheck(&ctx, &repo).await?;
        }
        ok
    };
    let phase = if ready { BackupRepoPhase::Ready } else { BackupRepoPhase::Failed };
    let status = status_of(&repo, phase, ordered(conditions, &evaluated), &generated, ready);
    write_status(&ctx, &mut repo, status).await?;
    if ready {
        let rendered = rendered_config(&ctx, &repo, &resolved).await?;
        upsert_tool_config(&ctx, &repo, &ctx.system_namespace, &rendered).await?;
        for ns in namespaces_in_use(&ctx, &repo).await? {
            upsert_tool_config(&ctx, &repo, &ns, &rendered).await?;
            if mount {
                mount::ensure_claim(&ctx, &repo, &resolved, &ns).await?;
            }
        }
    }
    Ok(Action::await_change())
}

/// Keeps the evaluated conditions, in evaluation order; drops those of steps not reached.
fn ordered(conditions: Vec<Condition>, evaluated: &[&str]) -> Vec<Condition> {
    evaluated.iter().filter_map(|t| conditions.iter().find(|c| c.type_ == *t).cloned()).collect()
}

/// The status: `phase`, `conditions`, the objects the templates made, and once `ready` what
/// Jobs use (the tool-config Secret, and the claim under Mount access).
fn status_of(
    repo: &BackupRepo,
    phase: BackupRepoPhase,
    conditions: Vec<Condition>,
    generated: &Generated,
    ready: bool,
) -> BackupRepoStatus {
    let name = repo.name_any();
    let mount = repo.spec.access_method == AccessMethod::Mount;
    BackupRepoStatus {
        phase: Some(phase),
        conditions: Some(conditions),
        observed_generation: repo.metadata.generation,
        generated_csi_driver_secret: generated.csi_driver_secret.clone(),
        generated_storage_class_name: generated.storage_class.clone(),
        backup_pvc_name: (ready && mount).then(|| mount::backup_pvc_name(&name)),
        tool_config_secret_name: ready.then(|| tool_config_secret_name(&name)),
        is_default: Some(repo.is_annotated_default()),
    }
}

/// Writes the status unless it is what `repo` (kept up to date here) already has.
async fn write_status(
    ctx: &Context,
    repo: &mut BackupRepo,
    status: BackupRepoStatus,
) -> Result<(), Error> {
    if repo.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let mut value = serde_json::to_value(&status)?;
    // A merge patch keeps fields it does not mention: clear those that may go away.
    let gone = [
        ("toolConfigSecretName", status.tool_config_secret_name.is_none()),
        ("backupPVCName", status.backup_pvc_name.is_none()),
        ("generatedStorageClassName", status.generated_storage_class_name.is_none()),
        ("generatedCSIDriverSecret", status.generated_csi_driver_secret.is_none()),
    ];
    if let Some(map) = value.as_object_mut() {
        for (field, _) in gone.iter().filter(|(_, none)| *none) {
            map.insert((*field).into(), serde_json::Value::Null);
        }
    }
    let api: Api<BackupRepo> = Api::all(ctx.client.clone());
    api.patch_status(
        &repo.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": value})),
    )
    .await?;
    repo.status = Some(status);
    Ok(())
}

/// Checks the provider and the parameters. The outer error is an API failure (retried); the
/// inner one the failed condition and the conditions passed before it.
async fn resolve(
    ctx: &Context,
    repo: &BackupRepo,
) -> Result<Result<Resolved, (Vec<&'static str>, Failure)>, Error> {
    let providers: Api<StorageProvider> = Api::all(ctx.client.clone());
    let provider_name = &repo.spec.storage_provider_ref;
    let Some(provider) = providers.get_opt(provider_name).await? else {
        return Ok(Err((
            Vec::new(),
            fail(
                CONDITION_STORAGE_PROVIDER_READY,
                "StorageProviderNotFound",
                format!("storage provider {provider_name} not found"),
            ),
        )));
    };
    if let Err(failure) = provider_ready(&provider, repo.spec.access_method) {
        return Ok(Err((Vec::new(), failure)));
    }
    let parameters = match parameters(ctx, repo, &provider).await? {
        Ok(p) => p,
        Err(failure) => return Ok(Err((vec![CONDITION_STORAGE_PROVIDER_READY], failure))),
    };
    Ok(Ok(Resolved { provider, parameters }))
}

fn provider_ready(provider: &StorageProvider, access: AccessMethod) -> Result<(), Failure> {
    let name = provider.name_any();
    let spec = &provider.spec;
    let invalid = |m: String| fail(CONDITION_STORAGE_PROVIDER_READY, "InvalidStorageProvider", m);
    let check_parses =
        |field: &str, t: &Option<String>| match t.as_deref().filter(|t| !t.trim().is_empty()) {
            Some(src) => Template::parse(&format!("{name}/{field}"), src)
                .map(|_| ())
                .map_err(|e| invalid(e.to_string())),
            None => Ok(()),
        };
    match access {
        AccessMethod::Tool => {
            if !present(&spec.datasafed_config_template) {
                return Err(invalid(format!(
                    "storage provider {name} has no datasafedConfigTemplate, so it cannot serve accessMethod Tool"
                )));
            }
            check_parses("datasafedConfigTemplate", &spec.datasafed_config_template)
        }
        AccessMethod::Mount => {
            if !present(&spec.storage_class_template)
                && !present(&spec.persistent_volume_claim_template)
            {
                let tool = if present(&spec.datasafed_config_template) {
                    " (it serves accessMethod Tool: set spec.accessMethod: Tool)"
                } else {
                    ""
                };
                return Err(invalid(format!(
                    "storage provider {name} has neither storageClassTemplate nor persistentVolumeClaimTemplate, so it cannot serve accessMethod Mount{tool}"
                )));
            }
            // As upstream's StorageProvider controller, a provider naming no CSI driver counts as
            // having it: its claims use whatever StorageClass its templates name (upstream's
            // `pvc` provider).
            let driver = spec.csi_driver_name.as_deref().filter(|d| !d.is_empty());
            if let Some(driver) = driver
                && !csi_driver_installed(provider)
            {
                let why = format!("its CSI driver {driver} is not installed");
                let tool = if present(&spec.datasafed_config_template) {
                    "; use spec.accessMethod: Tool"
                } else {
                    ""
                };
                return Err(fail(
                    CONDITION_STORAGE_PROVIDER_READY,
                    "StorageProviderNotReady",
                    format!("storage provider {name} cannot be mounted: {why}{tool}"),
                ));
            }
            check_parses("csiDriverSecretTemplate", &spec.csi_driver_secret_template)?;
            check_parses("storageClassTemplate", &spec.storage_class_template)?;
            check_parses("persistentVolumeClaimTemplate", &spec.persistent_volume_claim_template)
        }
    }
}

/// Whether a template is there (not empty or blank).
fn present(template: &Option<String>) -> bool {
    template.as_deref().is_some_and(|t| !t.trim().is_empty())
}

/// Schema defaults < `spec.config` < the credential Secret's keys, validated against the schema.
async fn parameters(
    ctx: &Context,
    repo: &BackupRepo,
    provider: &StorageProvider,
) -> Result<Result<BTreeMap<String, String>, Failure>, Error> {
    let schema =
        provider.spec.parameters_schema.as_ref().and_then(|p| p.open_api_v3_schema.as_ref());
    let properties =
        schema.and_then(|s| s.get("properties")).and_then(serde_json::Value::as_object);
    let mut params: BTreeMap<String, String> = properties
        .into_iter()
        .flatten()
        .filter_map(|(k, p)| p.get("default").map(|d| (k.clone(), go_string(d))))
        .collect();
    params.extend(repo.spec.config.clone().unwrap_or_default());
    if let Some(cred) = &repo.spec.credential {
        let (name, ns) =
            (cred.name.clone().unwrap_or_default(), cred.namespace.clone().unwrap_or_default());
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        let Some(secret) = secrets.get_opt(&name).await? else {
            return Ok(Err(fail(
                CONDITION_PARAMETERS_CHECKED,
                "CredentialSecretNotFound",
                format!("credential secret {ns}/{name} not found"),
            )));
        };
        for (k, v) in secret.data.unwrap_or_default() {
            match String::from_utf8(v.0) {
                Ok(v) => {
                    params.insert(k, v);
                }
                Err(_) => {
                    return Ok(Err(fail(
                        CONDITION_PARAMETERS_CHECKED,
                        "InvalidParameters",
                        format!("key {k} of credential secret {ns}/{name} is not UTF-8 text"),
                    )));
                }
            }
        }
    }
    let problems = validate(&params, schema);
    if !problems.is_empty() {
        return Ok(Err(fail(
            CONDITION_PARAMETERS_CHECKED,
            "InvalidParameters",
            problems.join("; "),
        )));
    }
    Ok(Ok(params))
}

/// A JSON default as Go's `fmt` prints the value KubeBlocks puts into the parameters map.
fn go_string(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The parameters checked against the provider's schema by the API's structural validator, one
/// message per problem with the parameter's path (`parameters.bucket: Required value`).
fn validate(params: &BTreeMap<String, String>, schema: Option<&serde_json::Value>) -> Vec<String> {
    let Some(schema) = schema else { return Vec::new() };
    match holdfast_api::schema::validate(schema, &typed_parameters(params, schema), "parameters") {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// The parameters as the JSON object the schema describes. They are strings (`spec.config`, a
/// Secret's keys) while the schema types them, so a value becomes the enum member or the type
/// its property names when it reads as one (`"512"` an integer); one that does not stays a
/// string for the validator to refuse. An empty value counts as missing: `index .Parameters`, as
/// templates read them, cannot tell the two apart.
fn typed_parameters(
    params: &BTreeMap<String, String>,
    schema: &serde_json::Value,
) -> serde_json::Value {
    use serde_json::Value;
    let properties = schema.get("properties");
    let object = params
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(name, v)| {
            let prop = properties.and_then(|p| p.get(name));
            let member = prop
                .and_then(|p| p.get("enum"))
                .and_then(Value::as_array)
                .and_then(|members| members.iter().find(|m| go_string(m) == *v))
                .cloned();
            let typed = member.or_else(|| match prop?.get("type")?.as_str()? {
                "integer" => v.parse::<i64>().ok().map(Value::from),
                "number" => {
                    v.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(Value::Number)
                }
                "boolean" => v.parse::<bool>().ok().map(Value::from),
                _ => None,
            });
            (name.clone(), typed.unwrap_or_else(|| Value::from(v.as_str())))
        })
        .collect();
    Value::Object(object)
}

/// Digest of what the pre-check depends on: parameters, templates, access method.
fn digest(repo: &BackupRepo, resolved: &Resolved) -> String {
    let spec = &resolved.provider.spec;
    let input = json!({
        "accessMethod": repo.spec.access_method,
        "parameters": resolved.parameters,
        "csiDriverSecretTemplate": spec.csi_driver_secret_template,
        "storageClassTemplate": spec.storage_class_template,
        "persistentVolumeClaimTemplate": spec.persistent_volume_claim_template,
        "datasafedConfigTemplate": spec.datasafed_config_template,
    });
    let hash = blake3::hash(input.to_string().as_bytes());
    hash.to_hex()[..32].to_owned()
}

/// The pre-check of a Tool repo; `Ok` carries the condition message, the inner `Err` the cause.
async fn precheck(
    ctx: &Context,
    repo: &BackupRepo,
    resolved: &Resolved,
) -> Result<Result<String, String>, Error> {
    let conf = match render_datasafed(resolved) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let location = match repository_location(&conf) {
        Ok(l) => l,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let key = ensure_repository_key(ctx, repo).await?;
    let shown = location.to_string();
    let task = tokio::task::spawn_blocking(move || precheck_repository(&location, &key));
    let outcome = match tokio::time::timeout(PRECHECK_TIMEOUT, task).await {
        Err(_) => Err(format!(
            "pre-check of {shown} did not finish within {} s",
            PRECHECK_TIMEOUT.as_secs()
        )),
        Ok(Err(join)) => Err(format!("pre-check of {shown} crashed: {join}")),
        Ok(Ok(Ok(true))) => {
            Ok(format!("created the repository at {shown}; write, read and delete succeeded"))
        }
        Ok(Ok(Ok(false))) => {
            Ok(format!("the repository at {shown} opens; write, read and delete succeeded"))
        }
        Ok(Ok(Err(e))) => Err(e),
    };
    Ok(outcome)
}

fn render_datasafed(resolved: &Resolved) -> Result<String, String> {
    let name = resolved.provider.name_any();
    let src = resolved.provider.spec.datasafed_config_template.as_deref().unwrap_or_default();
    render(
        &format!("{name}/datasafedConfigTemplate"),
        src,
        &RenderContext::with_parameters(resolved.parameters.clone()),
    )
    .map_err(|e| e.to_string())
}

/// The repo's key, creating the Secret on first use. It is never replaced: a new key would
/// not open the repository the old one created.
async fn ensure_repository_key(ctx: &Context, repo: &BackupRepo) -> Result<String, Error> {
    let name = repository_key_secret_name(&repo.name_any());
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.system_namespace);
    if let Some(existing) = secrets.get_opt(&name).await? {
        return key_of(&existing, &ctx.system_namespace);
    }
    ensure_namespace(ctx, &ctx.system_namespace).await?;
    let key = STANDARD.encode(rand::random::<[u8; 32]>());
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ctx.system_namespace.clone()),
            labels: Some(labels(repo)),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some([(REPOSITORY_KEY_KEY.to_owned(), ByteString(key.clone().into_bytes()))].into()),
        ..Secret::default()
    };
    // Created concurrently: the stored one wins.
    let stored = object::create_or_get(&secrets, &secret).await?;
    key_of(&stored, &ctx.system_namespace)
}

fn key_of(secret: &Secret, ns: &str) -> Result<String, Error> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(REPOSITORY_KEY_KEY))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "secret {ns}/{} has no text key {REPOSITORY_KEY_KEY}",
                secret.name_any()
            ))
        })
}

async fn ensure_namespace(ctx: &Context, ns: &str) -> Result<(), Error> {
    if ctx.mode == crate::context::Mode::Cluster {
        // The operator's own namespace, made by its installation: it is granted no access to
        // namespaces, and a missing one fails the Secret's creation with its name.
        return Ok(());
    }
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    if api.get_opt(ns).await?.is_some() {
        return Ok(());
    }
    let namespace = Namespace {
        metadata: ObjectMeta { name: Some(ns.to_owned()), ..ObjectMeta::default() },
        ..Namespace::default()
    };
    object::create_unless_exists(&api, &namespace).await?;
    Ok(())
}

fn labels(repo: &BackupRepo) -> BTreeMap<String, String> {
    [
        (LABEL_BACKUP_REPO.to_owned(), repo.name_any()),
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
    ]
    .into()
}

/// The datasafed config with the `[holdfast]` password section appended: the rendered
/// `datasafedConfigTemplate`, or under Mount access the local storage where Jobs mount the claim
/// (which `DATASAFED_LOCAL_BACKEND_PATH` names to them as well).
async fn rendered_config(
    ctx: &Context,
    repo: &BackupRepo,
    resolved: &Resolved,
) -> Result<String, Error> {
    let conf = match repo.spec.access_method {
        AccessMethod::Mount => format!("[storage]\ntype = local\nroot = {BACKUP_DATA_MOUNT}\n"),
        AccessMethod::Tool => render_datasafed(resolved).map_err(Error::Invalid)?,
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.system_namespace);
    let key_name = repository_key_secret_name(&repo.name_any());
    let Some(secret) = secrets.get_opt(&key_name).await? else {
        return Err(Error::NotReady(format!(
            "the repository key secret {}/{key_name} of backuprepo {} is missing",
            ctx.system_namespace,
            repo.name_any()
        )));
    };
    let key = key_of(&secret, &ctx.system_namespace)?;
    let mut out = conf;
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!("\n[holdfast]\npassword = {key}\n"));
    Ok(out)
}

/// A Ready repo's provider and parameters.
///
/// # Errors
/// [`Error::NotReady`] when the repo is not Ready; [`Error::Invalid`] when its provider or
/// parameters are gone; API errors.
async fn ready_and_resolved(ctx: &Context, repo: &BackupRepo) -> Result<Resolved, Error> {
    let name = repo.name_any();
    let phase = repo.status.as_ref().and_then(|s| s.phase);
    if phase != Some(BackupRepoPhase::Ready) {
        return Err(Error::NotReady(format!(
            "backuprepo {name} is not Ready (phase {})",
            phase.map_or_else(|| "unset".to_owned(), |p| format!("{p:?}"))
        )));
    }
    match resolve(ctx, repo).await? {
        Ok(r) => Ok(r),
        Err((_, failure)) => Err(Error::Invalid(format!("backuprepo {name}: {}", failure.message))),
    }
}

/// The BackupRepo `named` (with what named it, for the error), else the single one annotated as
/// the default; `how_to_name` completes "set …" in the error when there is no default.
///
/// # Errors
/// [`Error::Invalid`] when the named repo does not exist, or there is no default or several.
pub async fn named_or_default(
    ctx: &Context,
    named: Option<(String, String)>,
    how_to_name: &str,
) -> Result<BackupRepo, Error> {
    let repos: Api<BackupRepo> = Api::all(ctx.client.clone());
    if let Some((name, source)) = named {
        return repos.get_opt(&name).await?.ok_or_else(|| {
            Error::Invalid(format!(
                "backuprepo {name} not found (named by {source}); create it or name an existing \
                 BackupRepo"
            ))
        });
    }
    let mut defaults: Vec<BackupRepo> = repos
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|r| r.is_annotated_default() && r.metadata.deletion_timestamp.is_none())
        .collect();
    let annotation = holdfast_api::kubeblocks::backup_repo::DEFAULT_REPO_ANNOTATION;
    match defaults.len() {
        1 => Ok(defaults.remove(0)),
        0 => Err(Error::Invalid(format!(
            "no default BackupRepo found: {how_to_name} or annotate one BackupRepo with \
             {annotation}=true"
        ))),
        _ => {
            let names: Vec<String> = defaults.iter().map(ResourceExt::name_any).collect();
            Err(Error::Invalid(format!(
                "more than one default BackupRepo ({}); keep the annotation {annotation} on one",
                names.join(", ")
            )))
        }
    }
}

/// Where a Tool repo's holdfast repository lives and its key: for controllers that move data
/// themselves (PostgresBackup) instead of through Jobs.
///
/// # Errors
/// [`Error::NotReady`] when the repo is not Ready; [`Error::Invalid`] for a Mount repo or one
/// whose provider, parameters or templates are gone; API errors.
pub async fn open_location(
    ctx: &Context,
    repo: &BackupRepo,
) -> Result<(RepositoryLocation, String), Error> {
    let name = repo.name_any();
    if matches!(repo.spec.access_method, AccessMethod::Mount) {
        return Err(Error::Invalid(format!(
            "backuprepo {name} has accessMethod Mount, whose claim only Jobs can mount: use a \
             BackupRepo with accessMethod Tool"
        )));
    }
    let resolved = ready_and_resolved(ctx, repo).await?;
    let conf = render_datasafed(&resolved).map_err(Error::Invalid)?;
    let location = repository_location(&conf)?;
    let key = ensure_repository_key(ctx, repo).await?;
    Ok((location, key))
}

/// How Jobs in `namespace` reach `repo`: its tool-config Secret there, created or brought up to
/// date, and under Mount access its claim there, created when missing. For the Backup and
/// Restore controllers, for the namespace of their object.
///
/// # Errors
/// [`Error::NotReady`] when the repo is not Ready; [`Error::Invalid`] when its provider,
/// parameters, templates or key are gone; API errors.
pub async fn ensure_access(
    ctx: &Context,
    repo: &BackupRepo,
    namespace: &str,
) -> Result<RepoAccess, Error> {
    let resolved = ready_and_resolved(ctx, repo).await?;
    let rendered = rendered_config(ctx, repo, &resolved).await?;
    let tool_config_secret = upsert_tool_config(ctx, repo, namespace, &rendered).await?;
    let backup_pvc = match repo.spec.access_method {
        AccessMethod::Mount => Some(mount::ensure_claim(ctx, repo, &resolved, namespace).await?),
        AccessMethod::Tool => None,
    };
    Ok(RepoAccess { tool_config_secret, backup_pvc })
}

async fn upsert_tool_config(
    ctx: &Context,
    repo: &BackupRepo,
    namespace: &str,
    rendered: &str,
) -> Result<String, Error> {
    let name = tool_config_secret_name(&repo.name_any());
    let data = [(TOOL_CONFIG_KEY.to_owned(), ByteString(rendered.as_bytes().to_vec()))].into();
    upsert_secret(ctx, repo, namespace, &name, data).await?;
    Ok(name)
}

/// The Secret `namespace/name` made for `repo`, holding exactly `data`: created, or brought up
/// to date.
async fn upsert_secret(
    ctx: &Context,
    repo: &BackupRepo,
    namespace: &str,
    name: &str,
    data: BTreeMap<String, ByteString>,
) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    match secrets.get_opt(name).await? {
        Some(existing) if existing.data.as_ref() == Some(&data) => {}
        Some(existing) => {
            // A merge patch keeps the keys it does not name: the ones that go are named as null.
            let mut patched = serde_json::to_value(&data)?;
            for key in existing.data.iter().flatten().map(|(k, _)| k) {
                if !data.contains_key(key) {
                    patched[key] = serde_json::Value::Null;
                }
            }
            let patch = json!({"metadata": {"labels": labels(repo)}, "data": patched});
            secrets.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await?;
        }
        None => {
            if namespace == ctx.system_namespace {
                ensure_namespace(ctx, namespace).await?;
            }
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    labels: Some(labels(repo)),
                    ..ObjectMeta::default()
                },
                type_: Some("Opaque".into()),
                data: Some(data),
                ..Secret::default()
            };
            object::create_unless_exists(&secrets, &secret).await?;
        }
    }
    Ok(())
}

/// Every namespace whose Backups or Restores use the repo.
async fn namespaces_in_use(ctx: &Context, repo: &BackupRepo) -> Result<BTreeSet<String>, Error> {
    let name = repo.name_any();
    let mut namespaces = BTreeSet::new();
    let backups: Api<Backup> = Api::all(ctx.client.clone());
    let all = backups.list(&ListParams::default()).await?.items;
    let mut repo_of: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for b in &all {
        let names = backup_repo_names(b);
        if names.contains(&name) {
            namespaces.insert(b.namespace().unwrap_or_default());
        }
        repo_of.insert((b.namespace().unwrap_or_default(), b.name_any()), names);
    }
    let restores: Api<Restore> = Api::all(ctx.client.clone());
    for r in restores.list(&ListParams::default()).await?.items {
        let ns = r.namespace().unwrap_or_default();
        let backup_ns = Some(r.spec.backup.namespace.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| ns.clone());
        if repo_of.get(&(backup_ns, r.spec.backup.name.clone())).is_some_and(|n| n.contains(&name))
        {
            namespaces.insert(ns);
        }
    }
    Ok(namespaces)
}

async fn delete(ctx: &Context, repo: &BackupRepo) -> Result<Action, Error> {
    if !finalizer::has(repo, FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = repo.name_any();
    let generation = repo.metadata.generation;
    let now = ctx.clock.now();
    let backups: Api<Backup> = Api::all(ctx.client.clone());
    let selector = format!("{LABEL_BACKUP_REPO}={name}");
    let blocking: Vec<String> = backups
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .iter()
        .filter(|b| b.status.as_ref().and_then(|s| s.phase) != Some(BackupPhase::Failed))
        .map(|b| format!("{}/{}", b.namespace().unwrap_or_default(), b.name_any()))
        .collect();
    let mut conditions =
        repo.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let waiting = if blocking.is_empty() {
        // Both access methods: a Tool repo simply has no claims.
        mount::delete_derived(ctx, repo).await?.map(|message| ("HaveResidualPVCs", message))
    } else {
        let message = format!(
            "{} backup(s) still use this repo and must be deleted first: {}",
            blocking.len(),
            blocking.join(", ")
        );
        Some(("HaveAssociatedBackups", message))
    };
    if let Some((reason, message)) = waiting {
        condition::set(
            &mut conditions,
            CONDITION_DERIVED_OBJECTS_DELETED,
            false,
            reason,
            &message,
            generation,
            now,
        );
        let status = BackupRepoStatus {
            phase: Some(BackupRepoPhase::Deleting),
            conditions: Some(conditions),
            ..repo.status.clone().unwrap_or_default()
        };
        write_status(ctx, &mut repo.clone(), status).await?;
        // Backup events also wake this up; the requeue covers a missed one.
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    condition::set(
        &mut conditions,
        CONDITION_DERIVED_OBJECTS_DELETED,
        true,
        "DerivedObjectsDeleted",
        "no backups use this repo; its claims, storage class and secrets are deleted",
        generation,
        now,
    );
    let status = BackupRepoStatus {
        phase: Some(BackupRepoPhase::Deleting),
        conditions: Some(conditions),
        ..repo.status.clone().unwrap_or_default()
    };
    write_status(ctx, &mut repo.clone(), status).await?;

    let secrets: Api<Secret> = Api::all(ctx.client.clone());
    let tool_config = tool_config_secret_name(&name);
    for s in secrets.list(&ListParams::default().labels(&selector)).await?.items {
        if s.name_any() != tool_config {
            continue;
        }
        let ns_api: Api<Secret> =
            Api::namespaced(ctx.client.clone(), &s.namespace().unwrap_or_default());
        object::delete_if_exists(&ns_api, &tool_config, &DeleteParams::default()).await?;
    }
    let api: Api<BackupRepo> = Api::all(ctx.client.clone());
    finalizer::remove(&api, repo, FINALIZER).await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validation_names_each_problem() {
        let schema = json!({
            "properties": {
                "bucket": {"type": "string"},
                "size": {"type": "integer"},
                "insecure": {"type": "boolean"},
                "tier": {"type": "string", "enum": ["hot", "cold"]},
                "level": {"enum": [1, 2]},
                "ratio": {"type": "number", "minimum": 0}
            },
            "required": ["bucket", "region"]
        });
        let params = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
        };
        assert_eq!(
            validate(
                &params(&[("bucket", ""), ("size", "12x"), ("insecure", "yes"), ("tier", "warm")]),
                Some(&schema)
            ),
            [
                "parameters.insecure: Invalid value: \"string\": parameters.insecure in body must be of type boolean: \"string\"",
                "parameters.size: Invalid value: \"string\": parameters.size in body must be of type integer: \"string\"",
                "parameters.tier: Unsupported value: \"warm\": supported values: \"hot\", \"cold\"",
                "parameters.bucket: Required value",
                "parameters.region: Required value",
            ]
        );
        let good = params(&[
            ("bucket", "b"),
            ("region", "r"),
            ("size", "12"),
            ("insecure", "false"),
            ("tier", "cold"),
            ("level", "2"),
            ("ratio", "0.5"),
            ("unknown", "kept"),
        ]);
        assert_eq!(validate(&good, Some(&schema)), Vec::<String>::new());
        let mut negative = good.clone();
        negative.insert("ratio".into(), "-1".into());
        assert_eq!(
            validate(&negative, Some(&schema)),
            [
                "parameters.ratio: Invalid value: -1.0: parameters.ratio in body should be greater than or equal to 0"
            ]
        );
        assert!(validate(&params(&[]), None).is_empty());
    }

    #[test]
    fn defaults_print_as_go_does() {
        assert_eq!(go_string(&json!(512)), "512");
        assert_eq!(go_string(&json!(false)), "false");
        assert_eq!(go_string(&json!("x")), "x");
    }
}
