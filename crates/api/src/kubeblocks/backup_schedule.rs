//! BackupSchedule: cron schedules that create Backups with a policy's methods.

use std::collections::BTreeMap;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{check_range, check_reference_name, check_retention_period};
use crate::field::{FieldError, index, path};
use crate::resource::Admit;

/// The retention of a scheduled backup when its schedule sets none (upstream default).
pub const DEFAULT_SCHEDULE_RETENTION: &str = "7d";

/// When to back up, with which methods of a policy.
// kube's attribute repeats `category` and `printcolumn` keys by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "dataprotection.kubeblocks.io",
    version = "v1alpha1",
    kind = "BackupSchedule",
    namespaced,
    status = "BackupScheduleStatus",
    shortname = "bs",
    category = "kubeblocks",
    category = "dataprotection",
    printcolumn(name = "STATUS", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "AGE", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleSpec {
    /// The BackupPolicy whose methods the schedules use.
    pub backup_policy_name: String,
    /// Minutes after a missed time within which the backup may still start (0 to 1440).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline_minutes: Option<i64>,
    /// One schedule per method.
    pub schedules: Vec<SchedulePolicy>,
}

/// One schedule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulePolicy {
    /// Whether the schedule runs. Unset is written back as `false`: upstream runs only schedules
    /// set to true, and an explicit value makes that visible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The name of a method of the policy.
    pub backup_method: String,
    /// A 5-field cron expression, in UTC.
    pub cron_expression: String,
    /// How long the backups it creates are kept; `7d` when unset (upstream default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_period: Option<String>,
}

/// Observed state of a BackupSchedule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleStatus {
    /// Available or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupSchedulePhase>,
    /// The generation the controller last saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The error that failed the schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// The state of each schedule, by backup method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedules: Option<BTreeMap<String, ScheduleStatus>>,
}

/// Whether a BackupSchedule works.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupSchedulePhase {
    // The schedules are in place.
    Available,
    // They could not be put in place.
    Failed,
}

/// The state of one schedule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    /// Running or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SchedulePhase>,
    /// The error that failed the schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// When a backup was last scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When a backup last completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
}

/// Whether one schedule works.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SchedulePhase {
    // Creating backups on time.
    Running,
    // Broken.
    Failed,
}

/// Parses a 5-field cron expression (minute, hour, day of month, month, day of week) in UTC,
/// as Kubernetes CronJobs and KubeBlocks read them: no seconds field, no year field.
///
/// # Errors
/// Why the expression is not a 5-field cron expression.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    let fields = expr.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {fields}"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| e.to_string())
}

impl Admit for BackupSchedule {
    fn default_fields(&mut self) {
        for schedule in &mut self.spec.schedules {
            schedule.enabled.get_or_insert(false);
            schedule.retention_period.get_or_insert_with(|| DEFAULT_SCHEDULE_RETENTION.to_string());
        }
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let spec = &self.spec;
        check_reference_name(&mut errors, "spec.backupPolicyName", &spec.backup_policy_name);
        if let Some(minutes) = spec.starting_deadline_minutes {
            check_range(&mut errors, "spec.startingDeadlineMinutes", minutes, 0, Some(1440));
        }
        if spec.schedules.is_empty() {
            errors.push(FieldError::required("spec.schedules", "at least one schedule is needed"));
        }
        let mut seen: Vec<&str> = Vec::new();
        for (i, schedule) in spec.schedules.iter().enumerate() {
            let field = index("spec.schedules", i);
            check_reference_name(
                &mut errors,
                &path(&field, "backupMethod"),
                &schedule.backup_method,
            );
            // Status is keyed by method, and upstream runs one CronJob per method.
            if seen.contains(&schedule.backup_method.as_str()) {
                errors.push(FieldError::duplicate(
                    path(&field, "backupMethod"),
                    &schedule.backup_method,
                ));
            }
            seen.push(&schedule.backup_method);
            if let Err(e) = parse_cron(&schedule.cron_expression) {
                errors.push(FieldError::invalid(
                    path(&field, "cronExpression"),
                    &schedule.cron_expression,
                    e,
                ));
            }
            if let Some(period) = &schedule.retention_period {
                check_retention_period(&mut errors, &path(&field, "retentionPeriod"), period);
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubeblocks::testing::{
        admit, admit_example, assert_structural_crd, def, refused_fields,
    };
    use serde_json::{Value, json};

    const API: &str = "dataprotection.kubeblocks.io/v1alpha1";

    fn schedule() -> Value {
        json!({
            "apiVersion": API, "kind": "BackupSchedule",
            "metadata": {"name": "pg-cluster-postgresql-backup-schedule", "namespace": "default"},
            "spec": {
                "backupPolicyName": "pg-cluster-postgresql-backup-policy",
                "startingDeadlineMinutes": 60,
                "schedules": [
                    {"backupMethod": "pg-basebackup", "cronExpression": "0 18 * * *", "enabled": true, "retentionPeriod": "30d"},
                    {"backupMethod": "volume-snapshot", "cronExpression": "*/30 * * * 1-5"}
                ]
            }
        })
    }

    #[test]
    fn admits_a_schedule_and_fills_defaults() {
        let mut obj = schedule();
        admit(&mut obj, None).unwrap();
        assert_eq!(obj["spec"]["schedules"][0]["retentionPeriod"], "30d");
        assert_eq!(obj["spec"]["schedules"][1]["retentionPeriod"], "7d");
        assert_eq!(obj["spec"]["schedules"][1]["enabled"], false);
        assert_eq!(obj["spec"]["schedules"][0]["enabled"], true);
    }

    #[test]
    fn cron_expressions_must_have_five_valid_fields() {
        for good in ["0 18 * * *", "*/15 2-4 1,15 * MON-FRI", "0 0 1 1 *"] {
            parse_cron(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in ["0 0 18 * * *", "0 18 * *", "61 * * * *", "every day", "0 25 * * *", ""] {
            assert!(parse_cron(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn rules_name_their_fields() {
        let mut obj = schedule();
        obj["spec"]["startingDeadlineMinutes"] = json!(1441);
        obj["spec"]["schedules"][0]["cronExpression"] = json!("0 0 18 * * *");
        obj["spec"]["schedules"][0]["retentionPeriod"] = json!("30 days");
        obj["spec"]["schedules"][1]["backupMethod"] = json!("pg-basebackup");
        assert_eq!(
            refused_fields(obj),
            [
                "spec.startingDeadlineMinutes",
                "spec.schedules[0].cronExpression",
                "spec.schedules[0].retentionPeriod",
                "spec.schedules[1].backupMethod",
            ]
        );
        let mut empty = schedule();
        empty["spec"]["schedules"] = json!([]);
        empty["spec"]["backupPolicyName"] = json!("");
        assert_eq!(refused_fields(empty), ["spec.backupPolicyName", "spec.schedules"]);
    }

    #[test]
    fn cron_error_says_what_is_expected() {
        let mut obj = schedule();
        obj["spec"]["schedules"][1]["cronExpression"] = json!("@every 1h");
        let errors = admit(&mut obj, None).unwrap_err();
        assert_eq!(errors[0].field, "spec.schedules[1].cronExpression");
        assert!(errors[0].detail.contains("5 fields"), "{}", errors[0].detail);
    }

    #[test]
    fn crd_is_structural() {
        assert_structural_crd(API, "BackupSchedule");
        let d = def(API, "BackupSchedule");
        assert_eq!(d.short_names, ["bs"]);
        let spec = &d.schema["properties"]["spec"];
        assert_eq!(spec["required"], json!(["backupPolicyName", "schedules"]));
        assert_eq!(
            spec["properties"]["schedules"]["items"]["required"],
            json!(["backupMethod", "cronExpression"])
        );
    }

    #[test]
    fn example_admits() {
        let objs = admit_example("kubeblocks-backupschedule.yaml");
        assert_eq!(objs[0]["spec"]["schedules"][0]["backupMethod"], "pg-basebackup");
    }
}
