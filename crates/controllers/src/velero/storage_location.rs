//! BackupStorageLocation: where Velero's repositories live, validated on its
//! `validationFrequency` (default 1 minute, `0s` turns periodic validation off). A location is
//! `Available` when its storage answers: a `ReadWrite` one takes a probe write, read and delete;
//! a `ReadOnly` one is only listed, never written. The repositories of a location are at
//! `<bucket>/<prefix>/<repository type>/<volume namespace>`, as Velero lays them out.
//!
//! Providers: `aws` (or `velero.io/aws`) is any S3-compatible store, configured by the
//! location's `config` (`region`, `s3Url`, `s3ForcePathStyle`, `profile`) and credentials from
//! the Secret key named by `spec.credential`, an AWS shared-credentials file as Velero's AWS
//! plugin reads it. `local` (or `holdfast.io/local`) is a directory on this host:
//! `config.fspath`, else `<data dir>/velero/<bucket>`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use holdfast_api::go_duration::parse_go_duration;
use holdfast_api::velero::BackupStorageLocation;
use holdfast_api::velero::storage_location::{
    BackupStorageLocationPhase, BackupStorageLocationStatus,
};
use holdfast_repository::backend::FileType;
use holdfast_repository::location::{Location, S3Options};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use serde_json::json;

use crate::events::{EventType, publish};
use crate::{Context, Error, reconciler, repository_access};

/// Velero's default validation interval.
const DEFAULT_VALIDATION_FREQUENCY: Duration = Duration::from_secs(60);
/// How long one validation may take (an unreachable S3 endpoint is retried for a while).
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the controller.
pub async fn run(ctx: Arc<Context>) -> Result<(), Error> {
    let api: Api<BackupStorageLocation> = Api::all(ctx.client.clone());
    let controller = Controller::new(api, watcher::Config::default());
    reconciler::run("backup-storage-location", controller, ctx, reconcile).await
}

/// The storage root of a location, with its credentials resolved.
///
/// # Errors
/// [`Error::Invalid`] for an unsupported provider, a missing bucket or a credential that does
/// not parse; [`Error::NotReady`] when the credential Secret or key does not exist yet.
pub async fn storage_root(ctx: &Context, bsl: &BackupStorageLocation) -> Result<Location, Error> {
    let name = bsl.name_any();
    let ns = bsl.namespace().unwrap_or_default();
    let config = bsl.spec.config.clone().unwrap_or_default();
    let bucket = bsl.spec.object_storage.bucket.trim_matches('/');
    let prefix = bsl.spec.object_storage.prefix.as_deref().unwrap_or_default().trim_matches('/');
    let root = match bsl.spec.provider.as_str() {
        "aws" | "velero.io/aws" => {
            if bucket.is_empty() {
                return Err(Error::Invalid(format!(
                    "BackupStorageLocation {ns}/{name}: spec.objectStorage.bucket is empty"
                )));
            }
            let mut s3 = S3Options {
                bucket: bucket.to_owned(),
                prefix: String::new(),
                endpoint: config.get("s3Url").filter(|v| !v.is_empty()).cloned(),
                region: config.get("region").filter(|v| !v.is_empty()).cloned(),
                path_style: config.get("s3ForcePathStyle").map(|v| v == "true"),
                ..S3Options::default()
            };
            if let Some(selector) = &bsl.spec.credential {
                let text = credential_text(ctx, &ns, &selector.name, &selector.key).await?;
                let profile = config.get("profile").map_or("default", String::as_str);
                let origin = format!("key {} of Secret {ns}/{}", selector.key, selector.name);
                s3 = s3
                    .with_aws_credentials_file(&text, profile, &origin)
                    .map_err(|e| Error::Invalid(e.to_string()))?;
            }
            Location::S3(s3)
        }
        "local" | "holdfast.io/local" => {
            let dir = match config.get("fspath").filter(|v| !v.is_empty()) {
                Some(path) if path.starts_with('/') => std::path::PathBuf::from(path),
                Some(path) => {
                    return Err(Error::Invalid(format!(
                        "BackupStorageLocation {ns}/{name}: config.fspath {path:?} must be an \
                         absolute path"
                    )));
                }
                None if bucket.is_empty() => {
                    return Err(Error::Invalid(format!(
                        "BackupStorageLocation {ns}/{name}: a local location needs \
                         config.fspath or spec.objectStorage.bucket"
                    )));
                }
                None => ctx.data_dir.join("velero").join(bucket),
            };
            Location::Local(dir)
        }
        other => {
            return Err(Error::Invalid(format!(
                "BackupStorageLocation {ns}/{name}: provider {other:?} is not supported; use \
                 \"aws\" (any S3-compatible store) or \"local\" (a directory on this host)"
            )));
        }
    };
    Ok(if prefix.is_empty() { root } else { root.join(prefix) })
}

/// The repository of `volume_namespace` of type `repository_type` under a location's root.
pub fn repository_location(
    root: &Location,
    repository_type: &str,
    volume_namespace: &str,
) -> Location {
    root.join(&format!("{repository_type}/{volume_namespace}"))
}

async fn credential_text(
    ctx: &Context,
    ns: &str,
    secret: &str,
    key: &str,
) -> Result<String, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let found = secrets.get_opt(secret).await?.ok_or_else(|| {
        Error::NotReady(format!("credential Secret {ns}/{secret} does not exist"))
    })?;
    let bytes = found.data.as_ref().and_then(|d| d.get(key)).ok_or_else(|| {
        Error::NotReady(format!("credential Secret {ns}/{secret} has no key {key:?}"))
    })?;
    String::from_utf8(bytes.0.clone())
        .map_err(|_| Error::Invalid(format!("key {key:?} of Secret {ns}/{secret} is not text")))
}

/// Checks that the storage answers: a probe write, read and delete, or for a read-only location
/// a listing. Blocking.
fn validate(root: &Location, read_only: bool) -> Result<String, String> {
    if read_only {
        let backend = root.open_existing().map_err(|e| format!("cannot open storage: {e}"))?;
        backend.list(FileType::Key).map_err(|e| format!("cannot list {root}: {e}"))?;
        Ok(format!("{root} can be read (read-only: nothing is written)"))
    } else {
        repository_access::probe_storage(root)?;
        Ok(format!("{root} can be written, read and deleted from"))
    }
}

/// The locations (by uid) whose validation is running on a blocking thread.
fn in_flight() -> &'static Mutex<HashSet<String>> {
    static IN_FLIGHT: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    IN_FLIGHT.get_or_init(Mutex::default)
}

async fn reconcile(bsl: Arc<BackupStorageLocation>, ctx: Arc<Context>) -> Result<Action, Error> {
    let frequency = match bsl.spec.validation_frequency.as_deref().filter(|f| !f.is_empty()) {
        None => DEFAULT_VALIDATION_FREQUENCY,
        Some(text) => parse_go_duration(text)
            .map_err(|e| Error::Invalid(format!("spec.validationFrequency {text:?}: {e}")))?,
    };
    let uid = bsl.uid().unwrap_or_default();
    if !in_flight().lock().unwrap_or_else(|p| p.into_inner()).insert(uid.clone()) {
        // A validation that timed out still runs on its thread (a hung endpoint): starting
        // another would pile up one stuck thread per interval. Its result is already reported.
        return Ok(Action::requeue(frequency.max(DEFAULT_VALIDATION_FREQUENCY)));
    }
    let outcome = match storage_root(&ctx, &bsl).await {
        Ok(root) => {
            let read_only = bsl.is_read_only();
            let shown = root.to_string();
            let done = uid.clone();
            let task = tokio::task::spawn_blocking(move || {
                let result = validate(&root, read_only);
                in_flight().lock().unwrap_or_else(|p| p.into_inner()).remove(&done);
                result
            });
            match tokio::time::timeout(VALIDATION_TIMEOUT, task).await {
                Err(_) => Err(format!(
                    "validation of {shown} did not finish within {} s",
                    VALIDATION_TIMEOUT.as_secs()
                )),
                Ok(Err(join)) => Err(format!("validation of {shown} crashed: {join}")),
                Ok(Ok(result)) => result,
            }
        }
        Err(error @ (Error::Invalid(_) | Error::NotReady(_))) => {
            in_flight().lock().unwrap_or_else(|p| p.into_inner()).remove(&uid);
            Err(error.to_string())
        }
        Err(error) => {
            in_flight().lock().unwrap_or_else(|p| p.into_inner()).remove(&uid);
            return Err(error);
        }
    };
    let was = bsl.status.as_ref().and_then(|s| s.phase);
    let (phase, message) = match &outcome {
        Ok(_) => (BackupStorageLocationPhase::Available, None),
        Err(why) => (BackupStorageLocationPhase::Unavailable, Some(why.clone())),
    };
    if was != Some(phase) {
        let (kind, reason, note) = match &outcome {
            Ok(ok) => (EventType::Normal, "Available", ok.as_str()),
            Err(why) => (EventType::Warning, "Unavailable", why.as_str()),
        };
        publish(&ctx, &*bsl, kind, reason, "Validate", note).await;
    }
    let status = BackupStorageLocationStatus {
        phase: Some(phase),
        last_validation_time: Some(Time(ctx.clock.now())),
        message,
        access_mode: bsl.spec.access_mode,
        ..bsl.status.clone().unwrap_or_default()
    };
    let api: Api<BackupStorageLocation> =
        Api::namespaced(ctx.client.clone(), &bsl.namespace().unwrap_or_default());
    api.patch_status(
        &bsl.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await?;
    Ok(if frequency.is_zero() { Action::await_change() } else { Action::requeue(frequency) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_are_laid_out_per_type_and_namespace() {
        let root = Location::Local("/srv/velero/cluster-a".into());
        assert_eq!(
            repository_location(&root, "kopia", "apps"),
            Location::Local("/srv/velero/cluster-a/kopia/apps".into())
        );
        let s3 = Location::S3(S3Options {
            bucket: "b".into(),
            prefix: "cluster-a".into(),
            ..S3Options::default()
        });
        let Location::S3(repo) = repository_location(&s3, "restic", "apps") else { panic!() };
        assert_eq!(repo.url(), "s3://b/cluster-a/restic/apps");
    }

    #[test]
    fn a_read_only_location_is_only_listed() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Location::Local(dir.path().join("absent"));
        let err = validate(&missing, true).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        assert!(!dir.path().join("absent").exists(), "a read-only validation created a directory");
        let present = Location::Local(dir.path().to_path_buf());
        assert!(validate(&present, true).is_ok());
        assert!(validate(&missing, false).is_ok());
        let left: Vec<_> = std::fs::read_dir(dir.path().join("absent")).unwrap().collect();
        assert!(left.is_empty(), "the probe left {left:?}");
    }
}
