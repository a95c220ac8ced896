//! Which snapshots a command considers: restic's `--host`, `--tag` and `--path` filters.
//!
//! A snapshot passes when it passes each kind of filter given: one of the hosts; one of the tag
//! lists, each list needing all of its tags (`--tag a,b` is "a and b", a second `--tag c` adds
//! "or c"; an empty list matches untagged snapshots); and every one of the paths.

use crate::Repository;
use crate::error::{Error, Result};
use crate::snapshot::{Snapshot, SnapshotEntry};

/// Host, tag and path filters (empty: every snapshot passes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// Any of these hosts.
    pub hosts: Vec<String>,
    /// Any of these tag lists, each in full.
    pub tags: Vec<Vec<String>>,
    /// All of these paths.
    pub paths: Vec<String>,
}

impl SnapshotFilter {
    /// Adds a `--tag` argument: `a,b` is one list needing both.
    pub fn add_tag_list(&mut self, list: &str) {
        self.tags.push(
            list.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect(),
        );
    }

    /// Whether no filter is set.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.tags.is_empty() && self.paths.is_empty()
    }

    /// Whether a snapshot passes.
    pub fn matches(&self, s: &Snapshot) -> bool {
        let host = self.hosts.is_empty() || self.hosts.contains(&s.hostname);
        let tags = self.tags.is_empty()
            || self.tags.iter().any(|list| {
                if list.is_empty() {
                    s.tags.is_empty()
                } else {
                    list.iter().all(|t| s.tags.contains(t))
                }
            });
        let paths = self.paths.iter().all(|p| {
            let p = clean_path(p);
            s.paths.iter().any(|have| clean_path(have) == p)
        });
        host && tags && paths
    }

    /// The snapshots that pass, in the given order.
    pub fn select(&self, entries: Vec<SnapshotEntry>) -> Vec<SnapshotEntry> {
        entries.into_iter().filter(|e| self.matches(&e.snapshot)).collect()
    }
}

/// `/a/b/` and `/a//b` name the path `/a/b` (restic cleans `--path` the same way).
fn clean_path(p: &str) -> String {
    let parts: Vec<&str> = p.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    let joined = parts.join("/");
    if p.starts_with('/') { format!("/{joined}") } else { joined }
}

impl Repository {
    /// Resolves a selector as [`Repository::find_snapshot`] does, except that `latest` is the
    /// newest snapshot that passes `filter` (an id names its snapshot whatever the filter).
    ///
    /// # Errors
    /// `SnapshotNotFound` when nothing or more than one snapshot matches.
    pub fn find_snapshot_filtered(
        &self,
        selector: &str,
        filter: &SnapshotFilter,
    ) -> Result<SnapshotEntry> {
        if selector != "latest" || filter.is_empty() {
            return self.find_snapshot(selector);
        }
        filter.select(self.snapshots()?).pop().ok_or_else(|| Error::SnapshotNotFound {
            selector: selector.into(),
            reason: "no snapshot passes the --host/--tag/--path filters".into(),
        })
    }

    /// The snapshots `selectors` name (all that pass `filter` when there are none), oldest
    /// first, each once.
    ///
    /// # Errors
    /// As [`Repository::find_snapshot_filtered`]; backend errors.
    pub fn select_snapshots(
        &self,
        selectors: &[String],
        filter: &SnapshotFilter,
    ) -> Result<Vec<SnapshotEntry>> {
        if selectors.is_empty() {
            return Ok(filter.select(self.snapshots()?));
        }
        let mut out: Vec<SnapshotEntry> = Vec::new();
        for sel in selectors {
            let e = self.find_snapshot_filtered(sel, filter)?;
            if !out.iter().any(|o| o.id == e.id) {
                out.push(e);
            }
        }
        out.sort_by(|a, b| a.snapshot.time.cmp(&b.snapshot.time).then(a.id.cmp(&b.id)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(host: &str, tags: &[&str], paths: &[&str]) -> Snapshot {
        Snapshot::for_test("1970-01-01T00:00:00Z", host, paths, tags)
    }

    #[test]
    fn tag_lists_are_and_within_or_between() {
        let mut f = SnapshotFilter::default();
        f.add_tag_list("a,b");
        assert!(f.matches(&snap("h", &["a", "b", "x"], &["/d"])));
        assert!(!f.matches(&snap("h", &["a"], &["/d"])));
        f.add_tag_list("c");
        assert!(f.matches(&snap("h", &["c"], &["/d"])));
        let mut untagged = SnapshotFilter::default();
        untagged.add_tag_list("");
        assert!(untagged.matches(&snap("h", &[], &["/d"])));
        assert!(!untagged.matches(&snap("h", &["a"], &["/d"])));
    }

    #[test]
    fn hosts_are_any_and_paths_all() {
        let f = SnapshotFilter {
            hosts: vec!["a".into(), "b".into()],
            paths: vec!["/d/".into(), "/e".into()],
            ..Default::default()
        };
        assert!(f.matches(&snap("b", &[], &["/e", "/d"])));
        assert!(!f.matches(&snap("c", &[], &["/e", "/d"])));
        assert!(!f.matches(&snap("a", &[], &["/d"])));
    }
}
