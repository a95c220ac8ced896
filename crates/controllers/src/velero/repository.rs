//! BackupRepository: one repository per (volume namespace, location, repository type), named
//! `<namespace>-<location>-<type>` and created on first use by the data path, as Velero does.
//! `kopia` and `restic` are both served by holdfast's repository format, each in its own
//! directory of the location (`<type>/<namespace>`). The controller opens the repository
//! (creating it on a writable location) and reports `Ready`; on a writable location it runs
//! maintenance (prune) every `maintenanceFrequency` and records each run.
//!
//! Every repository of a Velero namespace is encrypted with the key in the Secret
//! `velero-repo-credentials` (key `repository-password`) of the location's namespace. Velero
//! fills a missing one with a fixed, well-known password; holdfast generates a random one
//! instead, and never replaces it (a new key would not open the repositories the old one made).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use holdfast_api::go_duration::parse_go_duration;
use holdfast_api::velero::repository::{
    BackupRepositoryMaintenanceStatus, BackupRepositoryPhase, BackupRepositorySpec,
    BackupRepositoryStatus, DEFAULT_KOPIA_MAINTENANCE_FREQUENCY,
    DEFAULT_RESTIC_MAINTENANCE_FREQUENCY, MaintenanceResult, RepositoryType,
};
use holdfast_api::velero::storage_location::BackupStorageLocationPhase;
use holdfast_api::velero::{BackupRepository, BackupStorageLocation};
use holdfast_repository::Repository;
use holdfast_repository::prune::{PruneOptions, prune};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use serde_json::json;

use super::storage_location::{repository_location, storage_root};
use crate::events::{EventType, publish};
use crate::{Context, Error, object, reconciler, repository_access};

/// The Secret holding the key of every repository of a Velero namespace.
pub const PASSWORD_SECRET: &str = "velero-repo-credentials";
/// Its key.
pub const PASSWORD_KEY: &str = "repository-password";
/// Labels Velero puts on a BackupRepository.
pub const LABEL_VOLUME_NAMESPACE: &str = "velero.io/volume-namespace";
pub const LABEL_STORAGE_LOCATION: &str = "velero.io/storage-location";
pub const LABEL_REPOSITORY_TYPE: &str = "velero.io/repository-type";
/// Maintenance runs kept in `status.recentMaintenance` (Velero's documented count).
const MAINTENANCE_HISTORY: usize = 3;

/// Runs the controller.
pub async fn run(ctx: Arc<Context>) -> Result<(), Error> {
    let client = ctx.client.clone();
    let controller =
        Controller::new(Api::<BackupRepository>::all(client.clone()), watcher::Config::default());
    let store = controller.store();
    // A location becoming (un)available changes its repositories' readiness.
    let controller = controller.watches(
        Api::<BackupStorageLocation>::all(client),
        watcher::Config::default(),
        move |bsl: BackupStorageLocation| {
            let (name, ns) = (bsl.name_any(), bsl.namespace());
            store
                .state()
                .into_iter()
                .filter(|r| r.spec.backup_storage_location == name && r.namespace() == ns)
                .map(|r| ObjectRef::from_obj(&*r))
                .collect::<Vec<_>>()
        },
    );
    reconciler::run("backup-repository", controller, ctx, reconcile).await
}

/// `kopia` or `restic`: the type a data mover's `uploaderType` asks for (unset means kopia, the
/// only uploader current Velero has).
pub fn type_name(repository_type: Option<RepositoryType>) -> &'static str {
    match repository_type {
        Some(RepositoryType::Restic) => "restic",
        Some(RepositoryType::Kopia | RepositoryType::Unset) | None => "kopia",
    }
}

/// Velero's name of the repository of (`volume_namespace`, `location`, `type_`).
pub fn repository_name(volume_namespace: &str, location: &str, type_: &str) -> String {
    format!("{volume_namespace}-{location}-{type_}")
}

/// The BackupRepository of (`volume_namespace`, `bsl`, `type_`), created when missing.
///
/// # Errors
/// API errors.
pub async fn ensure(
    ctx: &Context,
    bsl: &BackupStorageLocation,
    volume_namespace: &str,
    type_: &str,
) -> Result<BackupRepository, Error> {
    let ns = bsl.namespace().unwrap_or_default();
    let name = repository_name(volume_namespace, &bsl.name_any(), type_);
    let (kind, frequency) = if type_ == "restic" {
        (RepositoryType::Restic, DEFAULT_RESTIC_MAINTENANCE_FREQUENCY)
    } else {
        (RepositoryType::Kopia, DEFAULT_KOPIA_MAINTENANCE_FREQUENCY)
    };
    let mut repo = BackupRepository::new(
        &name,
        BackupRepositorySpec {
            volume_namespace: volume_namespace.to_owned(),
            backup_storage_location: bsl.name_any(),
            repository_type: Some(kind),
            restic_identifier: String::new(),
            maintenance_frequency: frequency.to_owned(),
            repository_config: None,
        },
    );
    repo.metadata.namespace = Some(ns.clone());
    repo.metadata.labels = Some(
        [
            (LABEL_VOLUME_NAMESPACE.to_owned(), volume_namespace.to_owned()),
            (LABEL_STORAGE_LOCATION.to_owned(), bsl.name_any()),
            (LABEL_REPOSITORY_TYPE.to_owned(), type_.to_owned()),
        ]
        .into(),
    );
    object::create_or_get(&Api::namespaced(ctx.client.clone(), &ns), &repo).await
}

/// The key of the repositories of Velero namespace `ns`, generated on first use.
///
/// # Errors
/// API errors; a Secret without a text `repository-password`.
pub async fn password(ctx: &Context, ns: &str) -> Result<String, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let generated = Secret {
        metadata: ObjectMeta {
            name: Some(PASSWORD_SECRET.to_owned()),
            namespace: Some(ns.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(
            [(
                PASSWORD_KEY.to_owned(),
                ByteString(STANDARD.encode(rand::random::<[u8; 32]>()).into_bytes()),
            )]
            .into(),
        ),
        ..Secret::default()
    };
    let secret = object::create_or_get(&secrets, &generated).await?;
    let bytes = secret.data.as_ref().and_then(|d| d.get(PASSWORD_KEY)).ok_or_else(|| {
        Error::Invalid(format!("Secret {ns}/{PASSWORD_SECRET} has no key {PASSWORD_KEY}"))
    })?;
    String::from_utf8(bytes.0.clone()).map_err(|_| {
        Error::Invalid(format!("key {PASSWORD_KEY} of Secret {ns}/{PASSWORD_SECRET} is not text"))
    })
}

/// What stops a repository from being used, as a status message.
pub enum Unusable {
    /// The location does not exist, is unavailable or its fields are wrong.
    Location(String),
    /// The repository cannot be opened or created.
    Repository(String),
}

impl Unusable {
    /// The message for a status.
    pub fn message(&self) -> &str {
        match self {
            Unusable::Location(m) | Unusable::Repository(m) => m,
        }
    }
}

/// Opens the repository of (`volume_namespace`, location `bsl_name` in `ns`, `type_`), creating
/// it on a writable location; `for_writing` refuses a read-only location.
///
/// # Errors
/// `Ok(Err(Unusable))` for what the user must fix; `Err` for API hiccups.
pub async fn open(
    ctx: &Context,
    ns: &str,
    bsl_name: &str,
    volume_namespace: &str,
    type_: &str,
    for_writing: bool,
) -> Result<Result<(Repository, BackupStorageLocation), Unusable>, Error> {
    let bsls: Api<BackupStorageLocation> = Api::namespaced(ctx.client.clone(), ns);
    let Some(bsl) = bsls.get_opt(bsl_name).await? else {
        return Ok(Err(Unusable::Location(format!(
            "BackupStorageLocation {ns}/{bsl_name} does not exist"
        ))));
    };
    if bsl.status.as_ref().and_then(|s| s.phase) == Some(BackupStorageLocationPhase::Unavailable) {
        let why = bsl.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default();
        return Ok(Err(Unusable::Location(format!(
            "BackupStorageLocation {ns}/{bsl_name} is unavailable: {why}"
        ))));
    }
    if for_writing && bsl.is_read_only() {
        return Ok(Err(Unusable::Location(format!(
            "BackupStorageLocation {ns}/{bsl_name} is ReadOnly: nothing may be written to it"
        ))));
    }
    let root = match storage_root(ctx, &bsl).await {
        Ok(root) => root,
        Err(e @ (Error::Invalid(_) | Error::NotReady(_))) => {
            return Ok(Err(Unusable::Location(e.to_string())));
        }
        Err(e) => return Err(e),
    };
    let key = password(ctx, ns).await?;
    let location = repository_location(&root, type_, volume_namespace);
    let create = !bsl.is_read_only();
    let opened = tokio::task::spawn_blocking(move || {
        repository_access::open_or_create(
            &location,
            &key,
            create,
            "it was made with another velero-repo-credentials Secret",
        )
    })
    .await
    .map_err(|e| Error::Invalid(format!("opening the repository crashed: {e}")))?;
    Ok(opened.map(|(repo, _)| (repo, bsl)).map_err(Unusable::Repository))
}

async fn reconcile(repo: Arc<BackupRepository>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = repo.namespace().unwrap_or_default();
    let type_ = type_name(repo.spec.repository_type);
    let mut status = repo.status.clone().unwrap_or_default();
    if status.phase == Some(BackupRepositoryPhase::Ready) {
        // Ready, and its location still there and available: the location's status changes
        // every validation, and opening the repository (its whole index) each time would be
        // work for nothing. It is opened again for maintenance, or when the location fails.
        let bsls: Api<BackupStorageLocation> = Api::namespaced(ctx.client.clone(), &ns);
        let usable = bsls.get_opt(&repo.spec.backup_storage_location).await?.filter(|b| {
            b.status.as_ref().and_then(|s| s.phase) != Some(BackupStorageLocationPhase::Unavailable)
        });
        if let Some(bsl) = usable {
            let wait = if bsl.is_read_only() {
                None
            } else {
                maintenance_wait(&repo, &status, ctx.clock.now())?
            };
            match wait {
                None => return Ok(Action::await_change()),
                Some(wait) if !wait.is_zero() => return Ok(Action::requeue(wait)),
                Some(_) => {}
            }
        }
    }
    let opened = open(
        &ctx,
        &ns,
        &repo.spec.backup_storage_location,
        &repo.spec.volume_namespace,
        type_,
        false,
    )
    .await?;
    let api: Api<BackupRepository> = Api::namespaced(ctx.client.clone(), &ns);
    let (repository, bsl) = match opened {
        Err(why) => {
            let message = why.message().to_owned();
            if status.phase != Some(BackupRepositoryPhase::NotReady)
                || status.message.as_deref() != Some(&message)
            {
                publish(&ctx, &*repo, EventType::Warning, "NotReady", "Open", &message).await;
                status.phase = Some(BackupRepositoryPhase::NotReady);
                status.message = Some(message);
                write_status(&api, &repo, &status).await?;
            }
            // The location's watch brings it back when the location changes; a repository
            // that would not open is tried again now and then.
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
        Ok(opened) => opened,
    };
    if status.phase != Some(BackupRepositoryPhase::Ready) {
        status.phase = Some(BackupRepositoryPhase::Ready);
        status.message = None;
        // As Velero does: a repository just made ready counts as maintained now, so its first
        // maintenance comes one period later instead of racing the backup that created it.
        if status.last_maintenance_time.is_none() {
            status.last_maintenance_time = Some(Time(ctx.clock.now()));
        }
        write_status(&api, &repo, &status).await?;
    }
    if bsl.is_read_only() {
        // Velero runs no maintenance on a read-only location.
        return Ok(Action::await_change());
    }
    match maintenance_wait(&repo, &status, ctx.clock.now())? {
        None => return Ok(Action::await_change()),
        Some(wait) if !wait.is_zero() => return Ok(Action::requeue(wait)),
        Some(_) => {}
    }
    let started = ctx.clock.now();
    // Maintenance never queues behind a backup: it is postponed (below) and tried again.
    repository.set_lock_wait(Duration::ZERO);
    let outcome = tokio::task::spawn_blocking(move || prune(&repository, &PruneOptions::default()))
        .await
        .map_err(|e| Error::Invalid(format!("maintenance crashed: {e}")))?;
    let finished = ctx.clock.now();
    if let Err(holdfast_repository::Error::Locked { holder, .. }) = &outcome {
        // A backup or restore holds the repository: maintenance has not failed, it waits its
        // turn. Velero's history records only runs that happened.
        let message = format!("maintenance postponed: the repository is in use ({holder})");
        publish(&ctx, &*repo, EventType::Normal, "MaintenancePostponed", "Maintain", &message)
            .await;
        return Ok(Action::requeue(postponed_retry(&repo)?));
    }
    let (result, message) = match outcome {
        Ok(report) => (
            MaintenanceResult::Succeeded,
            format!(
                "deleted {} unused packs ({} bytes); {} packs wait out the safety delay",
                report.deleted_packs, report.deleted_bytes, report.marked_packs
            ),
        ),
        Err(e) => (MaintenanceResult::Failed, e.to_string()),
    };
    let (kind, reason) = match result {
        MaintenanceResult::Succeeded => (EventType::Normal, "MaintenanceSucceeded"),
        MaintenanceResult::Failed => (EventType::Warning, "MaintenanceFailed"),
    };
    publish(&ctx, &*repo, kind, reason, "Maintain", &message).await;
    let mut history = status.recent_maintenance.take().unwrap_or_default();
    history.push(BackupRepositoryMaintenanceStatus {
        result: Some(result),
        start_timestamp: Some(Time(started)),
        complete_timestamp: Some(Time(finished)),
        message: Some(message),
    });
    let excess = history.len().saturating_sub(MAINTENANCE_HISTORY);
    history.drain(..excess);
    status.recent_maintenance = Some(history);
    status.last_maintenance_time = Some(Time(finished));
    write_status(&api, &repo, &status).await?;
    Ok(match maintenance_wait(&repo, &status, ctx.clock.now())? {
        Some(wait) if !wait.is_zero() => Action::requeue(wait),
        _ => Action::await_change(),
    })
}

/// How soon maintenance that found the repository in use tries again: a minute, or the
/// maintenance period when that is shorter.
fn postponed_retry(repo: &BackupRepository) -> Result<Duration, Error> {
    Ok(frequency(repo)?.min(Duration::from_secs(60)).max(Duration::from_secs(1)))
}

/// `spec.maintenanceFrequency`, Velero's kopia default when empty.
fn frequency(repo: &BackupRepository) -> Result<Duration, Error> {
    let text = repo.spec.maintenance_frequency.as_str();
    parse_go_duration(if text.is_empty() { DEFAULT_KOPIA_MAINTENANCE_FREQUENCY } else { text })
        .map_err(|e| Error::Invalid(format!("spec.maintenanceFrequency {text:?}: {e}")))
}

/// How long until the next maintenance is due (zero: now); `None` when it never runs
/// (`maintenanceFrequency` zero).
fn maintenance_wait(
    repo: &BackupRepository,
    status: &BackupRepositoryStatus,
    now: k8s_openapi::jiff::Timestamp,
) -> Result<Option<Duration>, Error> {
    let frequency = frequency(repo)?;
    if frequency.is_zero() {
        return Ok(None);
    }
    let due = status
        .last_maintenance_time
        .as_ref()
        .map_or(now, |t| t.0.checked_add(frequency).unwrap_or(t.0));
    Ok(Some(if due > now {
        due.duration_since(now).unsigned_abs().min(frequency)
    } else {
        Duration::ZERO
    }))
}

async fn write_status(
    api: &Api<BackupRepository>,
    repo: &BackupRepository,
    status: &BackupRepositoryStatus,
) -> Result<(), Error> {
    api.patch_status(
        &repo.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_velero() {
        assert_eq!(repository_name("apps", "default", "kopia"), "apps-default-kopia");
        assert_eq!(type_name(None), "kopia");
        assert_eq!(type_name(Some(RepositoryType::Unset)), "kopia");
        assert_eq!(type_name(Some(RepositoryType::Restic)), "restic");
    }
}
