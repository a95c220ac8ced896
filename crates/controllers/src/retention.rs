//! Expiration GC: every interval, each Backup whose `status.expiration` has
//! passed and that may be deleted is deleted through the API — so its finalizer runs the normal
//! deletion path and the repository data goes per its deletionPolicy.
//!
//! Deletable: a Failed backup always; a Completed one unless it is Incremental (an incremental
//! backup goes with its parent, which deletes its chain). Backups still running never are.

use std::sync::Arc;
use std::time::Duration;

use holdfast_api::kubeblocks::Backup;
use holdfast_api::kubeblocks::actionset::BackupType;
use holdfast_api::kubeblocks::backup::BackupPhase;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};

use crate::backup::chain::backup_type;
use crate::backup::phase;
use crate::{Context, Error, object};

/// How often expired backups are looked for in embedded mode (upstream's default is an hour;
/// a single host with short retention periods wants to free space sooner).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Overrides [`DEFAULT_INTERVAL`], in seconds (upstream's variable name).
pub const INTERVAL_ENV: &str = "GC_FREQUENCY_SECONDS";

/// The interval [`INTERVAL_ENV`] sets, else [`DEFAULT_INTERVAL`]: the default of
/// [`Context::retention_interval`].
pub fn configured_interval() -> Duration {
    std::env::var(INTERVAL_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(DEFAULT_INTERVAL, Duration::from_secs)
}

/// Runs the GC at once and then every [`Context::retention_interval`] of the context's clock,
/// until the process ends.
pub async fn run(ctx: Arc<Context>) -> Result<(), Error> {
    let interval = SignedDuration::try_from(ctx.retention_interval).unwrap_or(SignedDuration::MAX);
    loop {
        // One failed pass (the API briefly unavailable) must not stop the GC for good.
        match collect(&ctx).await {
            Ok(deleted) if !deleted.is_empty() => {
                tracing::info!(?deleted, "deleted expired backups");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "expired backup collection failed"),
        }
        let next = ctx.clock.now().saturating_add(interval).unwrap_or(Timestamp::MAX);
        ctx.clock.sleep_until(next).await;
    }
}

/// One pass: deletes every expired, deletable Backup; returns their `namespace/name`.
pub async fn collect(ctx: &Context) -> Result<Vec<String>, Error> {
    let all: Api<Backup> = Api::all(ctx.client.clone());
    let now = ctx.clock.now();
    let mut deleted = Vec::new();
    for backup in all.list(&ListParams::default()).await?.items {
        if !expired_and_deletable(&backup, now) {
            continue;
        }
        let ns = backup.namespace().unwrap_or_default();
        let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &ns);
        if object::delete_if_exists(&api, &backup.name_any(), &DeleteParams::default()).await? {
            deleted.push(format!("{ns}/{}", backup.name_any()));
        }
    }
    Ok(deleted)
}

/// Whether the GC deletes `backup` at `now`.
pub fn expired_and_deletable(backup: &Backup, now: Timestamp) -> bool {
    if backup.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(expiration) = backup.status.as_ref().and_then(|s| s.expiration.as_ref()) else {
        return false;
    };
    if expiration.0 >= now {
        return false;
    }
    match phase(backup) {
        Some(BackupPhase::Failed) => true,
        Some(BackupPhase::Completed) => backup_type(backup) != Some(BackupType::Incremental),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_api::kubeblocks::backup::BackupStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::collections::BTreeMap;

    fn backup(phase: BackupPhase, expiration: &str, kind: &str) -> Backup {
        let mut b = Backup::new("b", Default::default());
        b.metadata.labels = Some(BTreeMap::from([(
            crate::backup::LABEL_BACKUP_TYPE.to_string(),
            kind.to_string(),
        )]));
        b.status = Some(BackupStatus {
            phase: Some(phase),
            expiration: Some(Time(expiration.parse().unwrap())),
            ..BackupStatus::default()
        });
        b
    }

    #[test]
    fn only_expired_finished_backups_outside_chains_are_collected() {
        let now: Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
        let past = "2026-05-31T23:59:00Z";
        let future = "2026-06-01T00:01:00Z";
        assert!(expired_and_deletable(&backup(BackupPhase::Completed, past, "Full"), now));
        assert!(expired_and_deletable(&backup(BackupPhase::Failed, past, "Incremental"), now));
        assert!(!expired_and_deletable(&backup(BackupPhase::Completed, future, "Full"), now));
        assert!(!expired_and_deletable(&backup(BackupPhase::Completed, past, "Incremental"), now));
        assert!(!expired_and_deletable(&backup(BackupPhase::Running, past, "Full"), now));
        let mut forever = backup(BackupPhase::Completed, past, "Full");
        forever.status.as_mut().unwrap().expiration = None;
        assert!(!expired_and_deletable(&forever, now));
    }
}
