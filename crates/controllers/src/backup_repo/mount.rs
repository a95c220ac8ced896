//! Mount access (`spec.accessMethod: Mount`): the repo's storage is a volume. As upstream, the
//! controller renders the provider's `csiDriverSecretTemplate` into a Secret and its
//! `storageClassTemplate` into a StorageClass (condition `StorageClassCreated`), checks that its
//! `persistentVolumeClaimTemplate` renders into a claim (`PVCTemplateChecked`), and pre-checks
//! with a real Job that writes, reads and deletes a file on a new claim (`PreCheckPassed`). The
//! Job is the one code path of both modes: the embedded Job runner runs it on a claim of the
//! local-path provisioner, a cluster on whatever provisions the class.
//!
//! Once Ready, the repo's claim is made in every namespace whose Backups or Restores use the repo;
//! their Jobs mount it at `/backupdata` with datasafed's local backend pointed there
//! ([`RepoAccess`](crate::kubeblocks_env::RepoAccess)). The repository in it is encrypted with the
//! repo's key like any other: the tool-config Secret the Jobs mount carries the password.
//!
//! Names are upstream's prefixes without its random suffix, so every object is found again from
//! the repo alone: `sc-<repo>`, `secret-<repo>`, `pvc-<repo>`, and `pre-check-<uid8>-<repo>` for
//! the pre-check's Job and claim (in the system namespace). Each carries the repo's label. Only
//! the pre-check's objects name the repo as their owner: the others go when the repo's deletion
//! says so, after its backups (as the tool-config Secrets do), not when a garbage collector
//! sees the repo marked for deletion.

use std::collections::BTreeMap;
use std::time::Duration;

use holdfast_api::kubeblocks::BackupRepo;
use holdfast_api::kubeblocks::backup_repo::PvReclaimPolicy;
use holdfast_template::{RenderContext, render};
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec,
    Secret, SecretReference, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PropagationPolicy};
use serde::de::DeserializeOwned;

use super::{
    DIGEST_ANNOTATION, LABEL_BACKUP_REPO, Resolved, ensure_namespace, labels, present,
    upsert_secret,
};
use crate::backup::job::{JobState, state};
use crate::{Context, Error, object, owner};

/// Upstream's pre-check timeout: a claim that is never bound fails the check after it.
const PRECHECK_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Upstream's pre-check, on the claim mounted at `/backup`.
const PRECHECK_SCRIPT: &str = r#"set -ex; echo "pre-check" > /backup/precheck.txt; sync; cat /backup/precheck.txt; rm /backup/precheck.txt; sync"#;
/// Kubernetes' limit on names that also become label values.
const NAME_MAX: usize = 63;

/// The StorageClass generated for `repo`.
pub fn storage_class_name(repo: &str) -> String {
    derived_name("sc", repo)
}

/// The repo's claim in each namespace that uses it (`status.backupPVCName`).
pub fn backup_pvc_name(repo: &str) -> String {
    derived_name("pvc", repo)
}

/// The CSI driver Secret generated for `repo` (in the system namespace).
pub fn csi_driver_secret_name(repo: &str) -> String {
    derived_name("secret", repo)
}

/// `<prefix>-<repo>`; past 63 characters, cut to 56 and made unique by a hash of the repo's name.
fn derived_name(prefix: &str, repo: &str) -> String {
    let name = format!("{prefix}-{repo}");
    if name.len() <= NAME_MAX {
        return name;
    }
    let hash = blake3::hash(repo.as_bytes()).to_hex();
    let mut cut: String = name.chars().take(NAME_MAX - 7).collect();
    while cut.ends_with(['-', '.']) {
        cut.pop();
    }
    format!("{cut}-{}", &hash[..6])
}

/// The pre-check's Job and claim: `pre-check-<uid8>-<repo>`, at most 63 characters.
fn precheck_name(repo: &BackupRepo) -> String {
    let uid: String = repo.uid().unwrap_or_default().chars().take(8).collect();
    let mut name: String =
        format!("pre-check-{uid}-{}", repo.name_any()).chars().take(NAME_MAX).collect();
    while name.ends_with(['-', '.']) {
        name.pop();
    }
    name
}

/// The objects the provider's templates make, by name, as the status reports them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Generated {
    pub storage_class: Option<String>,
    pub csi_driver_secret: Option<SecretReference>,
}

impl Generated {
    fn of(ctx: &Context, repo: &BackupRepo, resolved: &Resolved) -> Generated {
        let spec = &resolved.provider.spec;
        let name = repo.name_any();
        Generated {
            storage_class: present(&spec.storage_class_template).then(|| storage_class_name(&name)),
            csi_driver_secret: present(&spec.csi_driver_secret_template).then(|| SecretReference {
                name: Some(csi_driver_secret_name(&name)),
                namespace: Some(ctx.system_namespace.clone()),
            }),
        }
    }

    /// What the templates are rendered with: the parameters and these names.
    fn render_context(&self, resolved: &Resolved) -> RenderContext {
        RenderContext {
            parameters: resolved.parameters.clone(),
            csi_driver_secret_ref: self.csi_driver_secret.as_ref().map(|r| {
                (r.name.clone().unwrap_or_default(), r.namespace.clone().unwrap_or_default())
            }),
            generated_storage_class_name: self.storage_class.clone(),
        }
    }
}

/// Renders the provider's template `field` and reads the YAML it yields as a `T`, as upstream
/// unmarshals it. The error is one line naming provider and field.
fn render_object<T: DeserializeOwned>(
    resolved: &Resolved,
    field: &str,
    src: &str,
    ctx: &RenderContext,
) -> Result<T, String> {
    let name = format!("{}/{field}", resolved.provider.name_any());
    let text = render(&name, src, ctx).map_err(|e| e.to_string())?;
    let value: serde_json::Value = serde_saphyr::from_str(&text)
        .map_err(|e| format!("{name} does not render to YAML: {e}"))?;
    if value.is_null() {
        return Err(format!("{name} renders to an empty document"));
    }
    serde_json::from_value(value).map_err(|e| format!("{name} does not render to the object: {e}"))
}

/// `StorageClassCreated`: the CSI driver Secret and the StorageClass the templates describe,
/// created or brought up to date. `Ok` carries the names and the condition message, the inner
/// `Err` the condition's reason and message.
pub(super) async fn prepare_storage(
    ctx: &Context,
    repo: &BackupRepo,
    resolved: &Resolved,
) -> Result<Result<(Generated, String), (&'static str, String)>, Error> {
    let generated = Generated::of(ctx, repo, resolved);
    let render_ctx = generated.render_context(resolved);
    let spec = &resolved.provider.spec;
    let mut made = Vec::new();
    if let Some(secret_ref) = &generated.csi_driver_secret {
        let src = spec.csi_driver_secret_template.as_deref().unwrap_or_default();
        let data: BTreeMap<String, String> =
            match render_object(resolved, "csiDriverSecretTemplate", src, &render_ctx) {
                Ok(d) => d,
                Err(e) => return Ok(Err(("PrepareCSISecretFailed", e))),
            };
        let (name, ns) = (
            secret_ref.name.clone().unwrap_or_default(),
            secret_ref.namespace.clone().unwrap_or_default(),
        );
        let data = data.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect();
        upsert_secret(ctx, repo, &ns, &name, data).await?;
        made.push(format!("secret {ns}/{name}"));
    }
    if let Some(name) = &generated.storage_class {
        let src = spec.storage_class_template.as_deref().unwrap_or_default();
        let mut class: StorageClass =
            match render_object(resolved, "storageClassTemplate", src, &render_ctx) {
                Ok(c) => c,
                Err(e) => return Ok(Err(("PrepareStorageClassFailed", e))),
            };
        if class.provisioner.trim().is_empty() {
            return Ok(Err((
                "PrepareStorageClassFailed",
                format!(
                    "{}/storageClassTemplate renders a StorageClass without a provisioner",
                    resolved.provider.name_any()
                ),
            )));
        }
        class.metadata = derived_meta(repo, name, None);
        class.volume_binding_mode = Some("Immediate".into());
        class.reclaim_policy = Some(reclaim_policy(repo).into());
        let classes: Api<StorageClass> = Api::all(ctx.client.clone());
        match classes.get_opt(name).await? {
            Some(existing) if !is_derived(&existing.metadata, repo, name) => {
                return Ok(Err((
                    "PrepareStorageClassFailed",
                    format!("storage class {name} exists and was not made for this repo"),
                )));
            }
            Some(existing) if same_class(&existing, &class) => {}
            Some(_) => {
                // A StorageClass's provisioner and parameters cannot change: a changed template
                // or reclaim policy replaces it. Claims made of the old one keep their volumes.
                classes.delete(name, &DeleteParams::default()).await?;
                object::create_unless_exists(&classes, &class).await?;
            }
            None => {
                object::create_unless_exists(&classes, &class).await?;
            }
        }
        made.push(format!("storage class {name}"));
    }
    let message = if made.is_empty() {
        "the provider has neither csiDriverSecretTemplate nor storageClassTemplate".to_owned()
    } else {
        format!("created {}", made.join(" and "))
    };
    Ok(Ok((generated, message)))
}

fn reclaim_policy(repo: &BackupRepo) -> &'static str {
    match repo.spec.pv_reclaim_policy {
        PvReclaimPolicy::Delete => "Delete",
        PvReclaimPolicy::Retain => "Retain",
    }
}

/// Whether two StorageClasses provision the same volumes.
fn same_class(a: &StorageClass, b: &StorageClass) -> bool {
    a.provisioner == b.provisioner
        && a.parameters == b.parameters
        && a.reclaim_policy == b.reclaim_policy
        && a.mount_options == b.mount_options
        && a.allow_volume_expansion == b.allow_volume_expansion
        && a.allowed_topologies == b.allowed_topologies
}

/// Metadata of an object made for `repo`: its name and label, in `namespace`.
fn derived_meta(repo: &BackupRepo, name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(labels(repo)),
        ..ObjectMeta::default()
    }
}

/// Whether `meta` is that of the object `name` made for `repo` (its label says so).
fn is_derived(meta: &ObjectMeta, repo: &BackupRepo, name: &str) -> bool {
    meta.name.as_deref() == Some(name)
        && meta.labels.as_ref().and_then(|l| l.get(LABEL_BACKUP_REPO)) == Some(&repo.name_any())
}

/// `PVCTemplateChecked`: the provider's claim template renders into a claim. `Ok(None)` when the
/// provider has none (claims are then made of the generated StorageClass).
pub(super) fn check_pvc_template(
    ctx: &Context,
    repo: &BackupRepo,
    resolved: &Resolved,
) -> Result<Option<String>, String> {
    if !present(&resolved.provider.spec.persistent_volume_claim_template) {
        return Ok(None);
    }
    let pvc = claim(ctx, repo, resolved, &backup_pvc_name(&repo.name_any()), "default")?;
    let class = pvc.spec.and_then(|s| s.storage_class_name).unwrap_or_default();
    Ok(Some(if class.is_empty() {
        "the template renders a claim of the default StorageClass".to_owned()
    } else {
        format!("the template renders a claim of StorageClass {class}")
    }))
}

/// The claim `ns/name` as the templates describe it: the rendered
/// `persistentVolumeClaimTemplate`, else a claim of the generated StorageClass; upstream's
/// defaults where it says nothing (ReadWriteMany, Filesystem, the repo's `volumeCapacity`).
fn claim(
    ctx: &Context,
    repo: &BackupRepo,
    resolved: &Resolved,
    name: &str,
    ns: &str,
) -> Result<PersistentVolumeClaim, String> {
    let generated = Generated::of(ctx, repo, resolved);
    let mut pvc = match resolved.provider.spec.persistent_volume_claim_template.as_deref() {
        Some(src) if !src.trim().is_empty() => render_object::<PersistentVolumeClaim>(
            resolved,
            "persistentVolumeClaimTemplate",
            src,
            &generated.render_context(resolved),
        )?,
        _ => {
            let mut pvc = PersistentVolumeClaim::default();
            pvc.spec.get_or_insert_default().storage_class_name = generated.storage_class;
            pvc
        }
    };
    let mut meta = derived_meta(repo, name, Some(ns));
    let mut all_labels = pvc.metadata.labels.take().unwrap_or_default();
    all_labels.extend(meta.labels.take().unwrap_or_default());
    meta.labels = Some(all_labels);
    meta.annotations = pvc.metadata.annotations.take();
    pvc.metadata = meta;
    pvc.status = None;
    let spec = pvc.spec.get_or_insert_default();
    if spec.access_modes.as_ref().is_none_or(Vec::is_empty) {
        spec.access_modes = Some(vec!["ReadWriteMany".into()]);
    }
    spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
    let requested = spec.resources.as_ref().and_then(|r| r.requests.as_ref()?.get("storage"));
    let unset = requested.is_none_or(|q| matches!(q.0.trim(), "" | "0"));
    if unset && let Some(capacity) = &repo.spec.volume_capacity {
        let requests = spec.resources.get_or_insert_default().requests.get_or_insert_default();
        requests.insert("storage".into(), capacity.clone());
    }
    Ok(pvc)
}

/// The repo's claim in `ns`, created when missing (an existing one is kept as it is: its volume
/// holds the data); returns its name.
///
/// # Errors
/// [`Error::Invalid`] when the templates no longer render a claim; API errors.
pub(super) async fn ensure_claim(
    ctx: &Context,
    repo: &BackupRepo,
    resolved: &Resolved,
    ns: &str,
) -> Result<String, Error> {
    let name = backup_pvc_name(&repo.name_any());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    if claims.get_opt(&name).await?.is_none() {
        let pvc = claim(ctx, repo, resolved, &name, ns)
            .map_err(|e| Error::Invalid(format!("backuprepo {}: {e}", repo.name_any())))?;
        object::create_unless_exists(&claims, &pvc).await?;
    }
    Ok(name)
}

/// Where the pre-check is.
pub(super) enum PreCheck {
    /// Still running; the message says what it waits for.
    Running(String),
    /// Done: the condition message, or the cause of the failure.
    Finished(Result<String, String>),
}

/// The Mount pre-check: a claim like the repo's and a Job writing, reading and deleting a file on
/// it, both in the system namespace and stamped with `digest`; objects of another digest are
/// removed first, so a changed configuration is checked anew.
pub(super) async fn precheck(
    ctx: &Context,
    repo: &BackupRepo,
    resolved: &Resolved,
    digest: &str,
) -> Result<PreCheck, Error> {
    let ns = ctx.system_namespace.clone();
    let name = precheck_name(repo);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let stale = |meta: &ObjectMeta| {
        meta.annotations.as_ref().and_then(|a| a.get(DIGEST_ANNOTATION)).map(String::as_str)
            != Some(digest)
    };
    let old_claim = claims.get_opt(&name).await?;
    let old_job = jobs.get_opt(&name).await?;
    if old_claim.iter().any(|c| stale(&c.metadata)) || old_job.iter().any(|j| stale(&j.metadata)) {
        remove_precheck(ctx, repo).await?;
        return Ok(PreCheck::Running(
            "restarting the pre-check for the changed configuration".into(),
        ));
    }
    let claim = match old_claim {
        Some(c) => c,
        None => {
            let mut pvc = match claim(ctx, repo, resolved, &name, &ns) {
                Ok(pvc) => pvc,
                Err(e) => return Ok(PreCheck::Finished(Err(e))),
            };
            pvc.metadata.owner_references = Some(vec![owner::controller_reference(repo)]);
            pvc.metadata
                .annotations
                .get_or_insert_default()
                .insert(DIGEST_ANNOTATION.into(), digest.into());
            ensure_namespace(ctx, &ns).await?;
            object::create_or_get(&claims, &pvc).await?
        }
    };
    let job = match old_job {
        Some(j) => j,
        None => {
            crate::executor::create_or_get_job(ctx, &jobs, &precheck_job(repo, &name, &ns, digest))
                .await?
        }
    };
    let class = claim.spec.as_ref().and_then(|s| s.storage_class_name.clone());
    let class =
        class.map_or_else(|| "the default StorageClass".into(), |c| format!("StorageClass {c}"));
    let phase =
        claim.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into());
    let unbound = (phase != "Bound").then(|| {
        format!("claim {ns}/{name} of {class} is {phase}: nothing provisioned a volume for it")
    });
    Ok(match state(&job) {
        JobState::Complete => PreCheck::Finished(Ok(format!(
            "the pre-check Job wrote, read and deleted a file on a claim of {class}"
        ))),
        JobState::Failed(message) => {
            let mut cause = format!("the pre-check Job {ns}/{name} failed: {message}");
            if let Some(unbound) = unbound {
                cause.push_str(&format!("; {unbound}"));
            }
            PreCheck::Finished(Err(cause))
        }
        JobState::Running => {
            let started = job.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let age = started.map_or(Duration::ZERO, |t| {
                Duration::try_from(ctx.clock.now().duration_since(t)).unwrap_or_default()
            });
            if age > PRECHECK_TIMEOUT {
                let why = unbound.unwrap_or_else(|| format!("Job {ns}/{name} is still running"));
                PreCheck::Finished(Err(format!(
                    "the pre-check did not finish within {} minutes: {why}",
                    PRECHECK_TIMEOUT.as_secs() / 60
                )))
            } else if unbound.is_some() {
                PreCheck::Running(format!(
                    "waiting for the pre-check claim {ns}/{name} of {class} to be bound"
                ))
            } else {
                PreCheck::Running(format!(
                    "the pre-check Job {ns}/{name} is writing, reading and deleting a file on claim {ns}/{name}"
                ))
            }
        }
    })
}

/// The user the pre-check runs as: `nobody`.
const PRECHECK_UID: i64 = 65534;

/// Upstream's pre-check Job: the claim at `/backup`, the shell check, non-root, two retries.
fn precheck_job(repo: &BackupRepo, name: &str, ns: &str, digest: &str) -> Job {
    let mut meta = derived_meta(repo, name, Some(ns));
    meta.annotations = Some(BTreeMap::from([(DIGEST_ANNOTATION.to_owned(), digest.to_owned())]));
    meta.owner_references = Some(vec![owner::controller_reference(repo)]);
    let volume = "backup-pvc";
    Job {
        metadata: meta,
        spec: Some(JobSpec {
            backoff_limit: Some(2),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(repo)), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![Container {
                        name: "pre-check".into(),
                        image: Some("holdfast".into()),
                        command: Some(vec!["sh".into(), "-c".into(), PRECHECK_SCRIPT.into()]),
                        volume_mounts: Some(vec![VolumeMount {
                            name: volume.into(),
                            mount_path: "/backup".into(),
                            ..VolumeMount::default()
                        }]),
                        // The check proves an unprivileged user can write the claim: `nobody`
                        // (upstream's image has a non-root user; embedded mode has no image).
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            run_as_non_root: Some(true),
                            run_as_user: Some(PRECHECK_UID),
                            ..SecurityContext::default()
                        }),
                        ..Container::default()
                    }],
                    volumes: Some(vec![Volume {
                        name: volume.into(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: name.into(),
                            read_only: None,
                        }),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// Deletes the pre-check's Job (with its pods) and claim.
pub(super) async fn remove_precheck(ctx: &Context, repo: &BackupRepo) -> Result<(), Error> {
    let ns = &ctx.system_namespace;
    let name = precheck_name(repo);
    let background = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    object::delete_if_exists(&Api::<Job>::namespaced(ctx.client.clone(), ns), &name, &background)
        .await?;
    object::delete_if_exists(
        &Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns),
        &name,
        &DeleteParams::default(),
    )
    .await?;
    Ok(())
}

/// Deletes what Mount access made for the repo: the pre-check, the claims in every namespace,
/// then the StorageClass and the CSI driver Secret. `Some(message)` while claims are still there
/// (a finalizer holds them): the repo waits, as upstream's `HaveResidualPVCs`.
pub(super) async fn delete_derived(
    ctx: &Context,
    repo: &BackupRepo,
) -> Result<Option<String>, Error> {
    remove_precheck(ctx, repo).await?;
    let name = repo.name_any();
    let selector = format!("{LABEL_BACKUP_REPO}={name}");
    let claim_name = backup_pvc_name(&name);
    let ours = |pvc: &PersistentVolumeClaim| is_derived(&pvc.metadata, repo, &claim_name);
    let all: Api<PersistentVolumeClaim> = Api::all(ctx.client.clone());
    let claims: Vec<PersistentVolumeClaim> = all
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(ours)
        .collect();
    let mut left = Vec::new();
    for pvc in &claims {
        let ns = pvc.namespace().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
        if pvc.metadata.deletion_timestamp.is_none() {
            object::delete_if_exists(&api, &pvc.name_any(), &DeleteParams::default()).await?;
        }
        if api.get_opt(&pvc.name_any()).await?.is_some() {
            left.push(format!("{ns}/{}", pvc.name_any()));
        }
    }
    if !left.is_empty() {
        return Ok(Some(format!(
            "waiting for the repo's claims to go (something still holds them): {}",
            left.join(", ")
        )));
    }
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    let class = storage_class_name(&name);
    if classes.get_opt(&class).await?.is_some_and(|c| is_derived(&c.metadata, repo, &class)) {
        object::delete_if_exists(&classes, &class, &DeleteParams::default()).await?;
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.system_namespace);
    let secret = csi_driver_secret_name(&name);
    if secrets.get_opt(&secret).await?.is_some_and(|s| is_derived(&s.metadata, repo, &secret)) {
        object::delete_if_exists(&secrets, &secret, &DeleteParams::default()).await?;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_upstream_prefixes_within_63_characters() {
        assert_eq!(storage_class_name("r1"), "sc-r1");
        assert_eq!(backup_pvc_name("r1"), "pvc-r1");
        assert_eq!(csi_driver_secret_name("r1"), "secret-r1");
        let long = format!("{}-{}", "a".repeat(40), "b".repeat(40));
        let name = backup_pvc_name(&long);
        assert_eq!(name.len(), 63, "{name}");
        assert_ne!(name, backup_pvc_name(&format!("{long}x")), "long names stay distinct");
        let mut repo = BackupRepo::new("r1", Default::default());
        repo.metadata.uid = Some("0123abcd-ffff".into());
        assert_eq!(precheck_name(&repo), "pre-check-0123abcd-r1");
    }
}
