//! The ActionSets holdfast ships (`src/shipped_action_sets/*.yaml`), installed when the controllers start
//! so a BackupPolicy can name them at once, as the KubeBlocks PostgreSQL addon installs its own:
//! - `postgresql-basebackup`: pg_basebackup → datasafed; restore untars into `DATA_DIR`;
//! - `postgresql-pgdump`: pg_dump → datasafed; restore is a postReady pg_restore Job;
//! - `postgresql-wal` (Continuous): WAL streamed through a replication slot by
//!   `holdfast pg wal-stream`; restore configures recovery to `spec.restoreTime` on the base
//!   backup another ActionSet restored (`holdfast pg recover`);
//! - `volume-files`: a tar of a target volume; restore untars into the restore claim.
//!
//! Each shipped object carries `app.kubernetes.io/managed-by=holdfast` and, once installed, the
//! annotation [`SHIPPED_SPEC`]: a hash of its spec as the API server stored it. At start, an
//! existing shipped ActionSet whose spec still has that hash (nobody edited it) and differs from
//! the one this release ships is replaced by it, so an upgrade brings new behaviour (the WAL
//! worker's expiry, say). One that was edited, or installed before the annotation existed, is
//! never touched: users may edit the shipped ones, and an upgrade must not undo that.

use std::sync::Arc;
use std::time::Duration;

use holdfast_api::kubeblocks::ActionSet;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::{Context, Error, object};

/// The label value marking objects holdfast installed itself.
pub const MANAGED_BY_HOLDFAST: &str = "holdfast";
/// The annotation holding the hash of a shipped ActionSet's spec as the API server stored it.
pub const SHIPPED_SPEC: &str = "holdfast.io/shipped-spec";
/// The annotation holding the hash of the shipped spec that was installed, as shipped (before
/// the API server's defaults): equal to this release's, there is nothing to update.
pub const SHIPPED_SOURCE: &str = "holdfast.io/shipped-source";

/// The hash of an ActionSet's spec (its JSON; field order is the struct's, maps are sorted).
///
/// # Errors
/// A spec that does not serialize (none does).
pub fn spec_hash(set: &ActionSet) -> Result<String, Error> {
    let json = serde_json::to_vec(&set.spec).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(blake3::hash(&json).to_hex().to_string())
}

/// Records on `stored` (a shipped ActionSet as the API server stored it, after its defaults) the
/// hash of its spec and of the spec shipped, so a later start can tell an untouched shipped
/// ActionSet from an edited one, and an older release's from this one's.
async fn mark(api: &Api<ActionSet>, stored: &ActionSet, source: &str) -> Result<(), Error> {
    let patch = serde_json::json!({"metadata": {"annotations": {
        SHIPPED_SPEC: spec_hash(stored)?,
        SHIPPED_SOURCE: source,
    }}});
    api.patch(&stored.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// The shipped manifests: (file name, YAML).
pub const SHIPPED: [(&str, &str); 4] = [
    ("postgresql-basebackup.yaml", include_str!("shipped_action_sets/postgresql-basebackup.yaml")),
    ("postgresql-pgdump.yaml", include_str!("shipped_action_sets/postgresql-pgdump.yaml")),
    ("postgresql-wal.yaml", include_str!("shipped_action_sets/postgresql-wal.yaml")),
    ("volume-files.yaml", include_str!("shipped_action_sets/volume-files.yaml")),
];

/// The shipped ActionSets, parsed.
///
/// # Errors
/// A manifest that does not parse (a build defect the unit tests catch).
pub fn shipped() -> Result<Vec<ActionSet>, Error> {
    SHIPPED
        .iter()
        .map(|(file, yaml)| {
            serde_saphyr::from_str::<ActionSet>(yaml)
                .map_err(|e| Error::Invalid(format!("shipped ActionSet {file}: {e}")))
        })
        .collect()
}

/// Creates every shipped ActionSet that does not exist yet and replaces the untouched ones this
/// release ships differently; returns the names created or replaced.
///
/// # Errors
/// An API error other than "already exists" (or a conflict with a concurrent writer).
pub async fn install(client: &kube::Client) -> Result<Vec<String>, Error> {
    let api: Api<ActionSet> = Api::all(client.clone());
    let mut changed = Vec::new();
    for action_set in shipped()? {
        let name = action_set.metadata.name.clone().unwrap_or_default();
        let source = spec_hash(&action_set)?;
        let Some(existing) = api.get_opt(&name).await? else {
            // Another holdfast instance (or a user) may create it meanwhile: theirs stays.
            if let Some(stored) = object::create_if_absent(&api, &action_set).await? {
                mark(&api, &stored, &source).await?;
                changed.push(name);
            }
            continue;
        };
        let annotation = |key: &str| existing.metadata.annotations.as_ref()?.get(key).cloned();
        let (Some(stored), Some(installed)) =
            (annotation(SHIPPED_SPEC), annotation(SHIPPED_SOURCE))
        else {
            continue; // installed before the annotations existed, or by someone else
        };
        if installed == source || stored != spec_hash(&existing)? {
            continue; // this release's already, or edited since (the user's stays)
        }
        let mut replacement = action_set.clone();
        // The write succeeds only over the version read: an edit in between stays.
        replacement.metadata.resource_version = existing.metadata.resource_version.clone();
        replacement.metadata.annotations = existing.metadata.annotations.clone();
        match api.replace(&name, &PostParams::default(), &replacement).await {
            Ok(stored) => {
                mark(&api, &stored, &source).await?;
                changed.push(name);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(changed)
}

/// Installs the shipped ActionSets, retrying while the API server is not answering, then stays
/// idle: the controller set treats a returning task as a stopped controller.
pub async fn run(ctx: Arc<Context>) -> Result<(), Error> {
    let mut delay = Duration::from_millis(200);
    loop {
        match install(&ctx.client).await {
            Ok(created) => {
                if !created.is_empty() {
                    tracing::info!(actionsets = ?created, "installed or updated the shipped ActionSets");
                }
                break;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot install the shipped ActionSets yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
    std::future::pending::<()>().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_api::kubeblocks::actionset::BackupType;
    use holdfast_api::resource::Admit;

    #[test]
    fn shipped_action_sets_parse_validate_and_are_labelled() {
        let sets = shipped().unwrap();
        let names: Vec<_> = sets.iter().map(|s| s.metadata.name.clone().unwrap()).collect();
        assert_eq!(
            names,
            ["postgresql-basebackup", "postgresql-pgdump", "postgresql-wal", "volume-files"]
        );
        for set in &sets {
            let errors = set.validate();
            assert!(errors.is_empty(), "{names:?}: {errors:?}");
            assert_eq!(
                set.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
                MANAGED_BY_HOLDFAST
            );
            let continuous = names_of(set) == "postgresql-wal";
            let expected = if continuous { BackupType::Continuous } else { BackupType::Full };
            assert_eq!(set.spec.backup_type, expected, "{}", names_of(set));
        }
    }

    fn names_of(set: &ActionSet) -> String {
        set.metadata.name.clone().unwrap_or_default()
    }

    #[test]
    fn the_wal_worker_streams_with_progress_and_the_restore_recovers_to_the_restore_time() {
        let sets = shipped().unwrap();
        let set = sets.iter().find(|s| names_of(s) == "postgresql-wal").unwrap();
        let backup = &set.spec.backup.as_ref().unwrap().backup_data;
        let script = &backup.job.base.command[2];
        assert!(script.contains("exec holdfast pg wal-stream"), "{script}");
        assert!(script.contains("--info-file \"$DP_BACKUP_INFO_FILE\""), "{script}");
        assert!(script.contains("--switch-interval \"${DP_ARCHIVE_INTERVAL"), "{script}");
        assert_eq!(backup.sync_progress.as_ref().and_then(|s| s.enabled), Some(true));
        let restore =
            &set.spec.restore.as_ref().unwrap().prepare_data.as_ref().unwrap().base.command[2];
        assert!(restore.contains("holdfast pg recover"), "{restore}");
        assert!(restore.contains("--to-time \"$DP_RESTORE_TIME\""), "{restore}");
    }

    #[test]
    fn every_script_fails_on_a_failed_pipeline_stage() {
        for set in shipped().unwrap() {
            let name = set.metadata.name.clone().unwrap();
            let backup = set.spec.backup.as_ref().unwrap();
            let restore = set.spec.restore.as_ref().unwrap();
            let scripts = std::iter::once(&backup.backup_data.job.base.command)
                .chain(restore.prepare_data.iter().map(|j| &j.base.command))
                .chain(
                    restore
                        .post_ready
                        .iter()
                        .flatten()
                        .filter_map(|a| a.job.as_ref())
                        .map(|j| &j.base.command),
                );
            for command in scripts {
                assert_eq!(command[..2], ["bash", "-c"], "{name}");
                assert!(command[2].contains("pipefail"), "{name}: {}", command[2]);
                assert!(command[2].contains("datasafed"), "{name}");
            }
        }
    }

    #[test]
    fn basebackup_streams_one_tar_and_restores_it_into_data_dir() {
        let sets = shipped().unwrap();
        let set = &sets[0];
        let backup = &set.spec.backup.as_ref().unwrap().backup_data.job.base.command[2];
        assert!(backup.contains("pg_basebackup -Ft -Pv -c fast -Xf -D -"));
        assert!(backup.contains("datasafed push - \"/${DP_BACKUP_NAME}.tar\""));
        let restore =
            &set.spec.restore.as_ref().unwrap().prepare_data.as_ref().unwrap().base.command[2];
        assert!(restore.contains("datasafed pull \"/${DP_BACKUP_NAME}.tar\" -"));
        assert!(restore.contains("chmod 0700 \"$DATA_DIR\""));
    }
}
