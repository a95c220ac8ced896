//! Pieces of a Backup's status: paths, expiration, the duration string, and the `backup.info`
//! result a backupData script writes.

use std::time::Duration;

use holdfast_api::go_duration::{format_go_duration, round_to_second};
use holdfast_api::kubeblocks::Backup;
use holdfast_api::kubeblocks::backup::{ActionStatus, BackupStatus, BackupTimeRange};
use holdfast_api::quantity::parse_bytes;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::Value;

/// An absolute repository path from parts that may be empty or carry their own slashes.
pub fn join_path(parts: &[&str]) -> String {
    let segments: Vec<&str> =
        parts.iter().flat_map(|p| p.split('/')).filter(|s| !s.is_empty()).collect();
    format!("/{}", segments.join("/"))
}

/// `base + retentionPeriod`; `None` keeps the backup forever (no or zero retention).
pub fn expiration(base: Timestamp, backup: &Backup) -> Option<Timestamp> {
    let keep = backup.retention().filter(|d| !d.is_zero())?;
    let keep = SignedDuration::try_from(keep).ok()?;
    base.checked_add(keep).ok()
}

/// `status.duration` as KubeBlocks writes it: Go's `Duration.String()` of the time taken,
/// rounded to seconds (`0s`, `45s`, `1m30s`, `2h0m5s`).
pub fn status_duration(took: Duration) -> String {
    format_go_duration(round_to_second(took))
}

/// The result a backupData script writes to `$DP_BACKUP_INFO_FILE`: a partial BackupStatus.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BackupInfo {
    pub total_size: Option<String>,
    pub time_range: Option<BackupTimeRange>,
    pub extras: Vec<String>,
}

impl BackupInfo {
    /// Reads the file's content (`None` or blank: the script reported nothing, which is allowed).
    ///
    /// # Errors
    /// A message for the Backup's failureReason when the content is not the expected JSON.
    pub fn parse(text: Option<&str>) -> Result<BackupInfo, String> {
        let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(BackupInfo::default());
        };
        let bad = |why: String| {
            format!(
                "the backupData command wrote an invalid backup.info ({why}); it must be a JSON \
                 object such as {{\"totalSize\":\"123\",\"timeRange\":{{\"start\":\"…Z\",\
                 \"end\":\"…Z\"}}}}"
            )
        };
        let value: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(bad("not a JSON object".into()));
        };
        let total_size = match map.get("totalSize") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => {
                parse_bytes(s).map_err(|e| bad(format!("totalSize {s:?}: {e}")))?;
                Some(s.clone())
            }
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => return Err(bad(format!("totalSize is {other}, not a string"))),
        };
        let time_range = match map.get("timeRange") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value::<BackupTimeRange>(v.clone())
                    .map_err(|e| bad(format!("timeRange: {e}")))?,
            ),
        };
        // Upstream scripts write extras as objects (`[{"wal-g-backup-name":"…"}]`); this API
        // version stores strings, so an object is kept as its JSON text.
        let extras = match map.get("extras") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
            Some(other) => return Err(bad(format!("extras is {other}, not a list"))),
        };
        Ok(BackupInfo { total_size, time_range, extras })
    }

    /// Records the result on the action and the backup's extras.
    pub fn apply(self, action: &mut ActionStatus, status: &mut BackupStatus) {
        let extras = self.apply_to_action(action);
        if !extras.is_empty() {
            status.extras.get_or_insert_default().extend(extras);
        }
    }

    /// Records the size and the range on the action; returns the extras, for the caller to
    /// place (a one-off action adds them, a continuous worker's rewritten report replaces them).
    pub fn apply_to_action(self, action: &mut ActionStatus) -> Vec<String> {
        if self.total_size.is_some() {
            action.total_size = self.total_size;
        }
        if self.time_range.is_some() {
            action.time_range = self.time_range;
        }
        self.extras
    }
}

/// The backup's totalSize and timeRange from its actions: sizes add up (several target pods),
/// the range spans every action's.
pub fn totals(actions: &[ActionStatus]) -> (Option<String>, Option<BackupTimeRange>) {
    let sizes: Vec<&str> = actions.iter().filter_map(|a| a.total_size.as_deref()).collect();
    let total_size = match sizes.as_slice() {
        [] => None,
        [one] => Some(one.to_string()),
        many => {
            let parsed: Option<Vec<u128>> = many.iter().map(|s| parse_bytes(s).ok()).collect();
            parsed
                .map(|v| v.iter().sum::<u128>().to_string())
                .or(many.last().map(|s| s.to_string()))
        }
    };
    let ranges: Vec<&BackupTimeRange> =
        actions.iter().filter_map(|a| a.time_range.as_ref()).collect();
    let time_range = (!ranges.is_empty()).then(|| BackupTimeRange {
        time_zone: ranges.iter().find_map(|r| r.time_zone.clone()),
        start: ranges.iter().filter_map(|r| r.start.clone()).min_by_key(|t| t.0),
        end: ranges.iter().filter_map(|r| r.end.clone()).max_by_key(|t| t.0),
    });
    (total_size, time_range)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn paths_join_without_empty_or_doubled_segments() {
        assert_eq!(join_path(&["default", "", "b1"]), "/default/b1");
        assert_eq!(join_path(&["default", "/pg/prefix/", "b1", ""]), "/default/pg/prefix/b1");
        assert_eq!(join_path(&[]), "/");
    }

    #[test]
    fn status_durations_match_kubeblocks() {
        assert_eq!(status_duration(Duration::from_millis(400)), "0s");
        assert_eq!(status_duration(Duration::from_millis(44_600)), "45s");
        assert_eq!(status_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(status_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(status_duration(Duration::from_secs(7205)), "2h0m5s");
    }

    #[test]
    fn backup_info_is_a_partial_status() {
        let info = BackupInfo::parse(Some(
            r#"{"totalSize":"4000000","timeRange":{"start":"2026-11-21T10:00:00Z","end":"2026-11-21T10:01:00Z","timeZone":"+00:00"},"extras":[{"wal-g-backup-name":"base_1"},"plain"]}"#,
        ))
        .unwrap();
        assert_eq!(info.total_size.as_deref(), Some("4000000"));
        assert_eq!(info.time_range.as_ref().unwrap().time_zone.as_deref(), Some("+00:00"));
        assert_eq!(info.extras, [r#"{"wal-g-backup-name":"base_1"}"#, "plain"]);
        assert_eq!(BackupInfo::parse(None).unwrap(), BackupInfo::default());
        assert_eq!(BackupInfo::parse(Some("  \n")).unwrap(), BackupInfo::default());
        assert_eq!(
            BackupInfo::parse(Some(r#"{"totalSize":123}"#)).unwrap().total_size.as_deref(),
            Some("123")
        );
        let err = BackupInfo::parse(Some("totalSize=1")).unwrap_err();
        assert!(err.contains("invalid backup.info"), "{err}");
        let err = BackupInfo::parse(Some(r#"{"totalSize":"lots"}"#)).unwrap_err();
        assert!(err.contains("totalSize \"lots\""), "{err}");
    }

    #[test]
    fn totals_add_sizes_and_span_ranges() {
        let t = |s: &str| Some(Time(s.parse().unwrap()));
        let a = ActionStatus {
            total_size: Some("1Ki".into()),
            time_range: Some(BackupTimeRange {
                start: t("2026-01-01T00:00:10Z"),
                end: t("2026-01-01T00:01:00Z"),
                time_zone: None,
            }),
            ..ActionStatus::default()
        };
        let b = ActionStatus {
            total_size: Some("24".into()),
            time_range: Some(BackupTimeRange {
                start: t("2026-01-01T00:00:05Z"),
                end: t("2026-01-01T00:00:30Z"),
                time_zone: Some("+08:00".into()),
            }),
            ..ActionStatus::default()
        };
        let (size, range) = totals(&[a.clone(), ActionStatus::default(), b]);
        assert_eq!(size.as_deref(), Some("1048"));
        let range = range.unwrap();
        assert_eq!(range.start, t("2026-01-01T00:00:05Z"));
        assert_eq!(range.end, t("2026-01-01T00:01:00Z"));
        assert_eq!(range.time_zone.as_deref(), Some("+08:00"));
        assert_eq!(totals(&[a]).0.as_deref(), Some("1Ki"));
        assert_eq!(totals(&[]), (None, None));
    }
}
