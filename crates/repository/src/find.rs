//! `find`: entries of snapshots by name pattern, modification time, or the blob or tree they use.

use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::pattern::PatternSet;
use crate::snapshot::SnapshotEntry;
use crate::stats::{LsEntry, try_walk};
use crate::tree::NodeType;
use crate::{Id, Repository};

/// What to look for. An entry is found when it matches a pattern (or there are none), lies in
/// the time window, and, when blob or tree ids are given, uses one of them.
#[derive(Debug, Clone, Default)]
pub struct FindQuery {
    /// restic patterns on the entry's path: `*.txt` at any depth, `/a/b/*` anchored.
    pub patterns: PatternSet,
    /// Only entries modified at or before this time (restic's `--newest`).
    pub newest: Option<jiff::Timestamp>,
    /// Only entries modified at or after this time (`--oldest`).
    pub oldest: Option<jiff::Timestamp>,
    /// Files holding a data blob whose id starts with one of these (`--blob`).
    pub blobs: Vec<String>,
    /// Directories whose tree id starts with one of these (`--tree`).
    pub trees: Vec<String>,
}

/// The matches in one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotMatches {
    /// The snapshot.
    pub snapshot: Id,
    /// When it was taken.
    pub time: jiff::Timestamp,
    /// Matching entries, in walk order.
    pub matches: Vec<LsEntry>,
}

impl FindQuery {
    fn matches(&self, path: &str, node: &crate::tree::Node) -> bool {
        if !self.patterns.is_empty() && !self.patterns.matches(Path::new(path)) {
            return false;
        }
        let secs = node.mtime.div_euclid(1_000_000_000);
        if self.newest.is_some_and(|t| secs > t.as_second())
            || self.oldest.is_some_and(|t| secs < t.as_second())
        {
            return false;
        }
        if !self.blobs.is_empty()
            && !node.content.iter().any(|b| {
                let hex = b.to_hex();
                self.blobs.iter().any(|p| hex.starts_with(p.as_str()))
            })
        {
            return false;
        }
        if !self.trees.is_empty() {
            let named = |t: &crate::Id| {
                let hex = t.to_hex();
                self.trees.iter().any(|p| hex.starts_with(p.as_str()))
            };
            // Content list blobs are tree blobs too (format §9.1): a file whose list is built
            // from one is found by it.
            let hit = match node.kind() {
                NodeType::Dir => node.subtree.as_ref().is_some_and(named),
                NodeType::File => node.content_lists.iter().any(named),
                _ => false,
            };
            if !hit {
                return false;
            }
        }
        true
    }
}

/// Searches `snapshots` (newest first, as restic reports them); snapshots without a match are
/// left out. `f` gets each snapshot's matches as soon as its walk ends.
///
/// # Errors
/// Unreadable trees, or what `f` returns.
pub fn find(
    repo: &Repository,
    snapshots: &[SnapshotEntry],
    query: &FindQuery,
    f: &mut dyn FnMut(SnapshotMatches) -> Result<()>,
) -> Result<()> {
    for s in snapshots.iter().rev() {
        let mut matches = Vec::new();
        try_walk(repo, &s.snapshot.tree, &mut |path, node| {
            if query.matches(path, node) {
                matches.push(LsEntry::new(path, node));
            }
            Ok(())
        })?;
        if !matches.is_empty() {
            f(SnapshotMatches { snapshot: s.id, time: s.snapshot.time, matches })?;
        }
    }
    Ok(())
}
