//! `forget` (format §11): retention rules decide which snapshots to delete.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::filter::SnapshotFilter;
use crate::lock::LockKind;
use crate::snapshot::SnapshotEntry;
use crate::{Id, Repository};

/// Which snapshots to keep. A snapshot kept by any rule stays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeepPolicy {
    /// The n newest.
    pub last: usize,
    /// The newest of each of the n newest hours with snapshots.
    pub hourly: usize,
    /// Likewise per day.
    pub daily: usize,
    /// Per ISO week.
    pub weekly: usize,
    /// Per month.
    pub monthly: usize,
    /// Per year.
    pub yearly: usize,
    /// Everything newer than the group's latest minus this.
    pub within: Option<std::time::Duration>,
    /// Everything carrying one of these tags.
    pub tags: Vec<String>,
}

impl KeepPolicy {
    /// Whether no rule is set (which would delete everything).
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within.is_none()
            && self.tags.is_empty()
    }
}

/// What makes snapshots one group for the keep rules (restic's `--group-by`, default
/// `host,paths`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    /// Same host.
    pub host: bool,
    /// Same set of paths.
    pub paths: bool,
    /// Same set of tags.
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        Self { host: true, paths: true, tags: false }
    }
}

impl std::str::FromStr for GroupBy {
    type Err = Error;

    /// `host,paths`, `tags`, `host,tags,paths`, or `""` for one group of everything.
    fn from_str(s: &str) -> Result<Self> {
        let mut g = Self { host: false, paths: false, tags: false };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" => g.paths = true,
                "tags" => g.tags = true,
                other => {
                    return Err(Error::Invalid(format!(
                        "unknown --group-by field {other:?}: use host, paths and/or tags"
                    )));
                }
            }
        }
        Ok(g)
    }
}

/// The decision for one group of snapshots (same host and paths, or what `GroupBy` says).
#[derive(Debug, Clone, Serialize)]
pub struct ForgetGroup {
    /// Host of the group (empty when not grouped by host).
    pub hostname: String,
    /// Paths of the group (empty when not grouped by paths).
    pub paths: Vec<String>,
    /// Tags of the group (empty when not grouped by tags).
    pub tags: Vec<String>,
    /// Kept snapshots, newest first, with the rules that kept them.
    pub keep: Vec<(Id, Vec<String>)>,
    /// Snapshots to delete.
    pub remove: Vec<Id>,
}

/// A calendar bucket: (year, month or week, day, hour), zeroed below the rule's resolution.
type Bucket = (i32, i32, i32, i32);

fn bucket(t: jiff::Timestamp, rule: &str) -> Bucket {
    let z = t.to_zoned(jiff::tz::TimeZone::system());
    let (y, m, d, h) =
        (i32::from(z.year()), i32::from(z.month()), i32::from(z.day()), i32::from(z.hour()));
    match rule {
        "hourly" => (y, m, d, h),
        "daily" => (y, m, d, 0),
        "weekly" => {
            let w = z.date().iso_week_date();
            (i32::from(w.year()), i32::from(w.week()), 0, 0)
        }
        "monthly" => (y, m, 0, 0),
        _ => (y, 0, 0, 0),
    }
}

/// Applies the policy to snapshots (any order) grouped by host and paths; pure, no I/O.
pub fn plan(snapshots: &[SnapshotEntry], policy: &KeepPolicy) -> Vec<ForgetGroup> {
    plan_grouped(snapshots, policy, GroupBy::default())
}

/// Applies the policy to each group of snapshots; pure, no I/O.
pub fn plan_grouped(
    snapshots: &[SnapshotEntry],
    policy: &KeepPolicy,
    group_by: GroupBy,
) -> Vec<ForgetGroup> {
    type Key = (String, Vec<String>, Vec<String>);
    let mut groups: BTreeMap<Key, Vec<&SnapshotEntry>> = BTreeMap::new();
    for s in snapshots {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        let key = (
            if group_by.host { s.snapshot.hostname.clone() } else { String::new() },
            if group_by.paths { sorted(&s.snapshot.paths) } else { Vec::new() },
            if group_by.tags { sorted(&s.snapshot.tags) } else { Vec::new() },
        );
        groups.entry(key).or_default().push(s);
    }
    let mut out = Vec::new();
    for ((hostname, paths, tags), mut snaps) in groups {
        snaps.sort_by(|a, b| b.snapshot.time.cmp(&a.snapshot.time).then(b.id.cmp(&a.id)));
        let latest = snaps.first().map(|s| s.snapshot.time);
        let mut rules: Vec<(&str, usize, Option<Bucket>)> = vec![
            ("hourly", policy.hourly, None),
            ("daily", policy.daily, None),
            ("weekly", policy.weekly, None),
            ("monthly", policy.monthly, None),
            ("yearly", policy.yearly, None),
        ];
        let mut group = ForgetGroup { hostname, paths, tags, keep: Vec::new(), remove: Vec::new() };
        for (i, s) in snaps.iter().enumerate() {
            let mut reasons = Vec::new();
            if i < policy.last {
                reasons.push("last".to_string());
            }
            for (name, left, last_key) in &mut rules {
                if *left == 0 {
                    continue;
                }
                let key = bucket(s.snapshot.time, name);
                if *last_key != Some(key) {
                    *last_key = Some(key);
                    *left -= 1;
                    reasons.push((*name).to_string());
                }
            }
            if let (Some(d), Some(latest)) = (policy.within, latest) {
                let d = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
                if s.snapshot.time.duration_since(latest).abs() <= d {
                    reasons.push("within".to_string());
                }
            }
            if s.snapshot.tags.iter().any(|t| policy.tags.contains(t)) {
                reasons.push("tag".to_string());
            }
            if reasons.is_empty() {
                group.remove.push(s.id);
            } else {
                group.keep.push((s.id, reasons));
            }
        }
        out.push(group);
    }
    out
}

/// Deletes the snapshots the policy does not keep (unless `dry_run`). Data is freed by prune.
///
/// # Errors
/// `Invalid` for an empty policy; backend errors.
pub fn forget(repo: &Repository, policy: &KeepPolicy, dry_run: bool) -> Result<Vec<ForgetGroup>> {
    forget_selected(repo, policy, &SnapshotFilter::default(), GroupBy::default(), dry_run)
}

/// [`forget`] over the snapshots that pass `filter`, grouped by `group_by` (the others are
/// neither kept nor removed).
///
/// # Errors
/// As [`forget`].
pub fn forget_selected(
    repo: &Repository,
    policy: &KeepPolicy,
    filter: &SnapshotFilter,
    group_by: GroupBy,
    dry_run: bool,
) -> Result<Vec<ForgetGroup>> {
    if policy.is_empty() {
        return Err(Error::Invalid("no keep rule given; refusing to forget every snapshot".into()));
    }
    // Shared, as for backups: removing snapshot files deletes no data, but a prune must not
    // decide what is unused while the set of snapshots changes under it.
    let _lock = if dry_run { None } else { Some(repo.lock(LockKind::Shared, "forget")?) };
    let groups = plan_grouped(&filter.select(repo.snapshots()?), policy, group_by);
    if !dry_run {
        for g in &groups {
            for id in &g.remove {
                repo.backend.delete(FileType::Snapshot, &id.to_hex())?;
            }
        }
    }
    Ok(groups)
}

/// Deletes the given snapshots.
///
/// # Errors
/// Backend errors.
pub fn remove_snapshots(repo: &Repository, ids: &[Id]) -> Result<()> {
    let _lock = repo.lock(LockKind::Shared, "forget")?;
    for id in ids {
        repo.backend.delete(FileType::Snapshot, &id.to_hex())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Snapshot;

    fn snap(n: u8, time: &str) -> SnapshotEntry {
        SnapshotEntry { id: Id([n; 32]), snapshot: Snapshot::for_test(time, "h", &["/d"], &[]) }
    }

    #[test]
    fn daily_and_last_rules() {
        let s = vec![
            snap(1, "2026-01-01T10:00:00Z"),
            snap(2, "2026-01-01T12:00:00Z"),
            snap(3, "2026-01-02T12:00:00Z"),
            snap(4, "2026-01-03T12:00:00Z"),
        ];
        let g = plan(&s, &KeepPolicy { daily: 2, ..Default::default() });
        let kept: Vec<Id> = g[0].keep.iter().map(|k| k.0).collect();
        assert_eq!(kept, vec![Id([4; 32]), Id([3; 32])]);
        let g = plan(&s, &KeepPolicy { last: 1, daily: 3, ..Default::default() });
        assert_eq!(g[0].remove, vec![Id([1; 32])]);
        let g = plan(
            &s,
            &KeepPolicy {
                within: Some(std::time::Duration::from_secs(36 * 3600)),
                ..Default::default()
            },
        );
        assert_eq!(g[0].remove, vec![Id([2; 32]), Id([1; 32])]);
    }
}
