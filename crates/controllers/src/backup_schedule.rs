//! The BackupSchedule controller, playing the CronJob upstream creates per
//! enabled entry:
//!
//! - cron expressions are evaluated in UTC; the next run is computed from the entry's
//!   `lastScheduleTime` (or the schedule's creation) and the controller requeues itself exactly
//!   for it, so no polling is involved;
//! - a run creates a Backup `<schedule>-<method>-<YYYYMMDDHHMMSS>` (the scheduled time, so a
//!   retried run cannot create a second one) labelled `autobackup` and `backup-schedule`, with the
//!   entry's retentionPeriod;
//! - concurrency is Forbid: while a backup of the entry is New or Running, the run waits (and
//!   starts when that one finishes, if still within the deadline);
//! - `startingDeadlineMinutes`: a run missed by more than that is skipped; without a deadline,
//!   only the latest missed run is caught up, once.
//!
//! An entry whose method's ActionSet is `Continuous` has no runs: while it is enabled, one Backup
//! per schedule and method (`<uid8>-<schedule>-<namespace>`, cut to 30 characters, then
//! `-<method>`, upstream's name) exists and runs; the Backup controller completes it once the
//! entry is disabled or the schedule is gone, and enabling the entry again puts that Backup back
//! to Running. Its `retentionPeriod` follows the entry's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use croner::Cron;
use holdfast_api::kubeblocks::actionset::BackupType;
use holdfast_api::kubeblocks::backup::{BackupPhase, BackupSpec};
use holdfast_api::kubeblocks::backup_schedule::{
    BackupSchedulePhase, SchedulePhase, SchedulePolicy, ScheduleStatus, parse_cron,
};
use holdfast_api::kubeblocks::{Backup, BackupSchedule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp, tz::TimeZone};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use serde_json::{Value, json};

use crate::backup::{
    LABEL_AUTOBACKUP, LABEL_BACKUP_POLICY, LABEL_BACKUP_SCHEDULE, LABEL_BACKUP_TYPE, phase,
};
use crate::events::{self, EventType};
use crate::{Context, Error, backup_method, object, reconciler};

/// How often a schedule whose policy is missing looks again (policy creation does not wake it).
const BROKEN_REQUEUE: Duration = Duration::from_secs(10);
/// At most this many missed runs are walked when catching up (Kubernetes' CronJob limit).
const MAX_MISSED: usize = 100;

/// Runs the BackupSchedule controller until its watch ends.
pub async fn run(ctx: Arc<Context>) -> Result<(), Error> {
    let schedules: Api<BackupSchedule> = Api::all(ctx.client.clone());
    let backups: Api<Backup> = Api::all(ctx.client.clone());
    let controller = Controller::new(schedules, watcher::Config::default())
        .watches(backups, watcher::Config::default().labels(LABEL_BACKUP_SCHEDULE), |b: Backup| {
            let ns = b.namespace();
            b.labels().get(LABEL_BACKUP_SCHEDULE).map(|s| {
                let r = ObjectRef::<BackupSchedule>::new(s);
                match ns {
                    Some(ns) => r.within(&ns),
                    None => r,
                }
            })
        })
        // A clock that jumps (in tests) changes what is due: every schedule looks again.
        .reconcile_all_on(ctx.clock.jumps());
    reconciler::run("backup-schedule", controller, ctx, reconcile).await
}

/// The run of an entry that is due now, and the one after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The latest scheduled time in `(since, now]`, if any.
    pub due: Option<Timestamp>,
    /// The first scheduled time after `now`.
    pub next: Option<Timestamp>,
}

/// When `cron` (in UTC) fires between `since` (exclusive) and `now`, and next after `now`.
pub fn due_times(cron: &Cron, since: Timestamp, now: Timestamp) -> Due {
    let utc = |t: Timestamp| t.to_zoned(TimeZone::UTC);
    let mut due = None;
    let mut cursor = utc(since);
    for _ in 0..MAX_MISSED {
        match cron.find_next_occurrence(&cursor, false) {
            Ok(t) if t.timestamp() <= now => {
                due = Some(t.timestamp());
                cursor = t;
            }
            _ => break,
        }
    }
    // After too many missed runs, the latest one before now still counts.
    if due.is_some_and(|d| {
        cron.find_next_occurrence(&utc(d), false).is_ok_and(|n| n.timestamp() <= now)
    }) {
        due = cron.find_previous_occurrence(&utc(now), true).ok().map(|t| t.timestamp());
    }
    let next = cron.find_next_occurrence(&utc(now), false).ok().map(|t| t.timestamp());
    Due { due, next }
}

/// `<schedule>-<method>-<YYYYMMDDHHMMSS>` of the scheduled time (UTC).
pub fn backup_name(schedule: &str, method: &str, at: Timestamp) -> String {
    format!("{schedule}-{method}-{}", at.strftime("%Y%m%d%H%M%S"))
}

/// The one continuous Backup of a schedule's method, named as upstream names it:
/// `<uid8>-<schedule>-<namespace>` cut to 30 characters (without a trailing `-`), then
/// `-<method>`. The uid is the schedule's owner's when it has one.
pub fn continuous_backup_name(schedule: &BackupSchedule, method: &str) -> String {
    let uid = schedule
        .metadata
        .owner_references
        .as_ref()
        .and_then(|o| o.first())
        .map(|o| o.uid.clone())
        .or_else(|| schedule.uid())
        .unwrap_or_default();
    let uid: String = uid.chars().take(8).collect();
    let mut name =
        format!("{uid}-{}-{}", schedule.name_any(), schedule.namespace().unwrap_or_default());
    if name.len() > 30 {
        name = name.chars().take(30).collect();
        if name.ends_with('-') {
            name.pop();
        }
    }
    format!("{name}-{method}")
}

async fn reconcile(obj: Arc<BackupSchedule>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<BackupSchedule> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(schedule) = api.get_opt(&obj.name_any()).await? else {
        return Ok(Action::await_change());
    };
    if schedule.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = schedule.name_any();
    let now = ctx.clock.now();
    let old = schedule.status.clone().unwrap_or_default();
    let old_entries = old.schedules.clone().unwrap_or_default();

    let policy_name = &schedule.spec.backup_policy_name;
    let policy = match backup_method::policy(&ctx, &ns, policy_name).await {
        Ok(policy) => policy,
        Err(Error::Invalid(reason)) => {
            write_status(
                &ctx,
                &schedule,
                BackupSchedulePhase::Failed,
                Some(&reason),
                &old_entries,
                &BTreeMap::new(),
            )
            .await?;
            return Ok(Action::requeue(BROKEN_REQUEUE));
        }
        Err(other) => return Err(other),
    };

    let backups: Api<Backup> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = format!("{LABEL_BACKUP_SCHEDULE}={name}");
    let mine = backups.list(&ListParams::default().labels(&selector)).await?.items;
    let since_default = schedule.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);

    let mut entries: BTreeMap<String, ScheduleStatus> = BTreeMap::new();
    let mut problems: Vec<String> = Vec::new();
    let mut next_run: Option<Timestamp> = None;
    for entry in schedule.spec.schedules.iter().filter(|e| e.enabled == Some(true)) {
        let key = entry.backup_method.clone();
        let mut st = old_entries.get(&key).cloned().unwrap_or_default();
        st.phase = Some(SchedulePhase::Running);
        st.failure_reason = None;
        if let Err(error) = backup_method::method(&policy, &entry.backup_method) {
            let reason = error.to_string();
            st.phase = Some(SchedulePhase::Failed);
            st.failure_reason = Some(reason.clone());
            problems.push(reason);
            entries.insert(key, st);
            continue;
        }
        let cron = match parse_cron(&entry.cron_expression) {
            Ok(cron) => cron,
            Err(e) => {
                let reason = format!("cronExpression {:?}: {e}", entry.cron_expression);
                st.phase = Some(SchedulePhase::Failed);
                st.failure_reason = Some(reason.clone());
                problems.push(reason);
                entries.insert(key, st);
                continue;
            }
        };
        let of_entry: Vec<&Backup> =
            mine.iter().filter(|b| b.spec.backup_method == entry.backup_method).collect();
        match continuous_method(&ctx, &policy, &entry.backup_method).await {
            Ok(true) => {
                keep_continuous(&ctx, &schedule, entry, &of_entry).await?;
                entries.insert(key, st);
                continue;
            }
            Ok(false) => {}
            Err(Error::Invalid(reason)) => {
                st.phase = Some(SchedulePhase::Failed);
                st.failure_reason = Some(reason.clone());
                problems.push(reason);
                entries.insert(key, st);
                continue;
            }
            Err(other) => return Err(other),
        }
        st.last_successful_time = of_entry
            .iter()
            .filter(|b| phase(b) == Some(BackupPhase::Completed))
            .filter_map(|b| b.status.as_ref()?.completion_timestamp.clone())
            .max_by_key(|t| t.0)
            .or(st.last_successful_time);

        let since = st.last_schedule_time.as_ref().map_or(since_default, |t| t.0);
        let times = due_times(&cron, since, now);
        if let Some(next) = times.next {
            next_run = Some(next_run.map_or(next, |n: Timestamp| n.min(next)));
        }
        if let Some(due) = times.due {
            match run_entry(&ctx, &schedule, entry, &of_entry, due, now).await? {
                Run::Created | Run::Skipped => st.last_schedule_time = Some(Time(due)),
                Run::Waiting => {}
            }
        }
        entries.insert(key, st);
    }

    let (phase, reason) = if problems.is_empty() {
        (BackupSchedulePhase::Available, None)
    } else {
        (BackupSchedulePhase::Failed, Some(problems.join("; ")))
    };
    write_status(&ctx, &schedule, phase, reason.as_deref(), &old_entries, &entries).await?;
    Ok(match next_run {
        Some(next) => {
            let wait = now.duration_until(next).unsigned_abs();
            // A little after the minute turns, so the due time is never computed as "not yet".
            Action::requeue(wait + Duration::from_millis(200))
        }
        None if !problems.is_empty() => Action::requeue(BROKEN_REQUEUE),
        None => Action::await_change(),
    })
}

/// Whether the entry's method takes continuous backups (its ActionSet's backupType).
async fn continuous_method(
    ctx: &Context,
    policy: &holdfast_api::kubeblocks::BackupPolicy,
    method: &str,
) -> Result<bool, Error> {
    let method = backup_method::method(policy, method)?;
    let Some(name) = method.action_set_name.filter(|n| !n.is_empty()) else {
        return Ok(false);
    };
    let referrer = format!("backupMethod {} of backuppolicy {}", method.name, policy.name_any());
    let set = backup_method::action_set(ctx, &name, &referrer, "create it").await?;
    Ok(set.spec.backup_type == BackupType::Continuous)
}

/// Keeps the continuous Backup of an enabled entry: created when missing, back to Running when
/// it was completed (the entry was disabled, now enabled again), its retention the entry's.
async fn keep_continuous(
    ctx: &Context,
    schedule: &BackupSchedule,
    entry: &SchedulePolicy,
    of_entry: &[&Backup],
) -> Result<(), Error> {
    let name = continuous_backup_name(schedule, &entry.backup_method);
    let ns = schedule.namespace().unwrap_or_default();
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(existing) = of_entry.iter().find(|b| b.name_any() == name) else {
        let backup = scheduled_backup(schedule, entry, &name, Some("Continuous"));
        if object::create_unless_exists(&api, &backup).await? {
            let note = format!("created continuous backup {name} for {}", entry.backup_method);
            events::publish(ctx, schedule, EventType::Normal, "BackupCreated", "Schedule", &note)
                .await;
        }
        return Ok(());
    };
    if existing.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    if existing.spec.retention_period != entry.retention_period {
        let patch = json!({"spec": {"retentionPeriod": entry.retention_period}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    if phase(existing) == Some(BackupPhase::Completed) {
        let patch = json!({"status": {"phase": BackupPhase::Running, "failureReason": null}});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let note =
            format!("continuous backup {name} runs again: {} is enabled", entry.backup_method);
        events::publish(ctx, schedule, EventType::Normal, "BackupResumed", "Schedule", &note).await;
    }
    Ok(())
}

/// A Backup the schedule creates for `entry`: labelled as upstream labels them (with the backup
/// type when the schedule knows it), with the entry's retention.
fn scheduled_backup(
    schedule: &BackupSchedule,
    entry: &SchedulePolicy,
    name: &str,
    backup_type: Option<&str>,
) -> Backup {
    let mut backup = Backup::new(
        name,
        BackupSpec {
            backup_policy_name: schedule.spec.backup_policy_name.clone(),
            backup_method: entry.backup_method.clone(),
            retention_period: entry.retention_period.clone(),
            ..BackupSpec::default()
        },
    );
    backup.metadata.namespace = schedule.namespace();
    let mut labels = BTreeMap::from([
        (LABEL_AUTOBACKUP.to_string(), "true".to_string()),
        (LABEL_BACKUP_SCHEDULE.to_string(), schedule.name_any()),
        (LABEL_BACKUP_POLICY.to_string(), schedule.spec.backup_policy_name.clone()),
    ]);
    if let Some(kind) = backup_type {
        labels.insert(LABEL_BACKUP_TYPE.to_string(), kind.to_string());
    }
    backup.metadata.labels = Some(labels);
    backup
}

/// What became of a due run.
enum Run {
    /// The Backup exists (created now or by an earlier attempt).
    Created,
    /// Missed by more than the starting deadline: it will not run.
    Skipped,
    /// Another backup of the entry is still running (Forbid): the run waits.
    Waiting,
}

async fn run_entry(
    ctx: &Context,
    schedule: &BackupSchedule,
    entry: &SchedulePolicy,
    of_entry: &[&Backup],
    due: Timestamp,
    now: Timestamp,
) -> Result<Run, Error> {
    let name = backup_name(&schedule.name_any(), &entry.backup_method, due);
    if of_entry.iter().any(|b| b.name_any() == name) {
        return Ok(Run::Created);
    }
    if let Some(minutes) = schedule.spec.starting_deadline_minutes {
        let late = due.duration_until(now);
        if late > SignedDuration::from_mins(minutes) {
            let note = format!(
                "missed the run of {} at {due} by more than startingDeadlineMinutes ({minutes}); \
                 skipping it",
                entry.backup_method
            );
            events::publish(ctx, schedule, EventType::Warning, "MissedSchedule", "Schedule", &note)
                .await;
            return Ok(Run::Skipped);
        }
    }
    let running = of_entry.iter().any(|b| {
        b.metadata.deletion_timestamp.is_none()
            && matches!(phase(b), None | Some(BackupPhase::New | BackupPhase::Running))
    });
    if running {
        tracing::debug!(schedule = %schedule.name_any(), %name, "previous backup still running");
        return Ok(Run::Waiting);
    }
    let backup = scheduled_backup(schedule, entry, &name, None);
    let api: Api<Backup> =
        Api::namespaced(ctx.client.clone(), &schedule.namespace().unwrap_or_default());
    if object::create_unless_exists(&api, &backup).await? {
        let note = format!("created backup {name} for the run at {due}");
        events::publish(ctx, schedule, EventType::Normal, "BackupCreated", "Schedule", &note).await;
    }
    Ok(Run::Created)
}

/// Writes phase, reason and the per-entry status; entries no longer enabled are removed (merge
/// patch: a key set to null).
async fn write_status(
    ctx: &Context,
    schedule: &BackupSchedule,
    phase: BackupSchedulePhase,
    reason: Option<&str>,
    old: &BTreeMap<String, ScheduleStatus>,
    new: &BTreeMap<String, ScheduleStatus>,
) -> Result<(), Error> {
    let mut entries = serde_json::Map::new();
    for key in old.keys().filter(|k| !new.contains_key(*k)) {
        entries.insert(key.clone(), Value::Null);
    }
    for (key, st) in new {
        // Whole entry replaced: fields that became unset must go.
        let mut value = serde_json::to_value(st)?;
        if let Value::Object(map) = &mut value {
            for field in ["failureReason", "lastScheduleTime", "lastSuccessfulTime", "phase"] {
                map.entry(field).or_insert(Value::Null);
            }
        }
        entries.insert(key.clone(), value);
    }
    let current = schedule.status.clone().unwrap_or_default();
    let unchanged = current.phase == Some(phase)
        && current.failure_reason.as_deref() == reason
        && current.schedules.as_ref().unwrap_or(&BTreeMap::new()) == new
        && current.observed_generation == schedule.metadata.generation;
    if unchanged {
        return Ok(());
    }
    let patch = json!({"status": {
        "phase": phase,
        "failureReason": reason,
        "observedGeneration": schedule.metadata.generation,
        "schedules": entries,
    }});
    let api: Api<BackupSchedule> =
        Api::namespaced(ctx.client.clone(), &schedule.namespace().unwrap_or_default());
    api.patch_status(&schedule.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn due_is_the_latest_run_since_the_last_one() {
        let cron = parse_cron("*/5 * * * *").unwrap();
        let d = due_times(&cron, ts("2026-01-01T00:00:00Z"), ts("2026-01-01T00:12:30Z"));
        assert_eq!(d.due, Some(ts("2026-01-01T00:10:00Z")));
        assert_eq!(d.next, Some(ts("2026-01-01T00:15:00Z")));
        let d = due_times(&cron, ts("2026-01-01T00:10:00Z"), ts("2026-01-01T00:12:30Z"));
        assert_eq!(d.due, None);
        let d = due_times(&cron, ts("2026-01-01T00:10:00Z"), ts("2026-01-01T00:15:00Z"));
        assert_eq!(d.due, Some(ts("2026-01-01T00:15:00Z")), "a run at exactly now is due");
    }

    #[test]
    fn long_outages_catch_up_only_the_latest_run() {
        let cron = parse_cron("* * * * *").unwrap();
        let d = due_times(&cron, ts("2026-01-01T00:00:00Z"), ts("2026-01-02T00:00:30Z"));
        assert_eq!(d.due, Some(ts("2026-01-02T00:00:00Z")));
    }

    #[test]
    fn cron_is_evaluated_in_utc() {
        let cron = parse_cron("0 3 * * *").unwrap();
        let d = due_times(&cron, ts("2026-01-01T00:00:00Z"), ts("2026-01-01T04:00:00Z"));
        assert_eq!(d.due, Some(ts("2026-01-01T03:00:00Z")));
    }

    #[test]
    fn the_continuous_backup_is_named_as_upstream_names_it() {
        let schedule = |name: &str, ns: &str, owner: Option<&str>| {
            let mut s: BackupSchedule = serde_json::from_value(serde_json::json!({
                "apiVersion": "dataprotection.kubeblocks.io/v1alpha1", "kind": "BackupSchedule",
                "metadata": {"name": name, "namespace": ns, "uid": "0123456789abcdef"},
                "spec": {"backupPolicyName": "p", "schedules": []}
            }))
            .unwrap();
            if let Some(uid) = owner {
                s.metadata.owner_references =
                    Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        uid: uid.into(),
                        ..Default::default()
                    }]);
            }
            s
        };
        assert_eq!(
            continuous_backup_name(&schedule("s", "default", None), "wal"),
            "01234567-s-default-wal"
        );
        // Cut to 30 characters.
        assert_eq!(
            continuous_backup_name(
                &schedule("pg-cluster-backup-schedule", "default", None),
                "archive-wal"
            ),
            "01234567-pg-cluster-backup-sch-archive-wal"
        );
        assert_eq!(
            continuous_backup_name(&schedule("pg-cluster-backup", "ns", None), "wal"),
            "01234567-pg-cluster-backup-ns-wal"
        );
        assert_eq!(
            continuous_backup_name(&schedule("abcdefghijklmnopqrst", "x", None), "wal"),
            "01234567-abcdefghijklmnopqrst-wal",
            "a cut that ends in '-' drops it"
        );
        assert_eq!(
            continuous_backup_name(&schedule("abcdefghijklmnopqr", "default", None), "wal"),
            "01234567-abcdefghijklmnopqr-de-wal"
        );
        assert_eq!(
            continuous_backup_name(&schedule("abcdefghijklmnopqrstu", "default", None), "wal"),
            "01234567-abcdefghijklmnopqrstu-wal"
        );
        // The owner's uid when the schedule has one (a cluster's schedule).
        assert_eq!(
            continuous_backup_name(&schedule("s", "default", Some("fedcba9876543210")), "wal"),
            "fedcba98-s-default-wal"
        );
    }

    #[test]
    fn backup_names_carry_the_scheduled_time() {
        assert_eq!(
            backup_name("pg-daily", "pg-basebackup", ts("2026-11-21T03:00:00Z")),
            "pg-daily-pg-basebackup-20261121030000"
        );
    }
}
