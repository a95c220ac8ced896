//! `tag`: change the tags of snapshots, as restic does. A snapshot file is named by its content,
//! so a change writes a new snapshot (recording the first id it came from in `original`) and only
//! then removes the old one: a crash in between leaves both, never neither.

use serde::Serialize;

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::lock::LockKind;
use crate::snapshot::SnapshotEntry;
use crate::{Id, Repository};

/// What to do to the tags (restic: `--set` replaces, else `--add` and `--remove` apply).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagChange {
    /// Replace all tags with these (with `set_given`: an empty list removes every tag).
    pub set: Vec<String>,
    /// Whether `--set` was given at all.
    pub set_given: bool,
    /// Tags to add.
    pub add: Vec<String>,
    /// Tags to remove.
    pub remove: Vec<String>,
}

impl TagChange {
    /// Whether nothing would change any snapshot.
    pub fn is_empty(&self) -> bool {
        !self.set_given && self.add.is_empty() && self.remove.is_empty()
    }

    /// The tags `current` becomes.
    pub fn apply(&self, current: &[String]) -> Vec<String> {
        let mut tags: Vec<String> =
            if self.set_given { self.set.clone() } else { current.to_vec() };
        for t in &self.add {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        tags.retain(|t| !self.remove.contains(t));
        tags
    }
}

/// One snapshot whose tags changed.
#[derive(Debug, Clone, Serialize)]
pub struct Retagged {
    /// The snapshot's id before.
    pub old: Id,
    /// Its id now.
    pub new: Id,
    /// Its tags now.
    pub tags: Vec<String>,
}

/// Applies `change` to `snapshots`; snapshots whose tags stay the same are left alone.
///
/// # Errors
/// `Invalid` for an empty change; [`Error::Locked`]; backend errors.
pub fn tag(
    repo: &Repository,
    snapshots: &[SnapshotEntry],
    change: &TagChange,
) -> Result<Vec<Retagged>> {
    if change.is_empty() {
        return Err(Error::Invalid("nothing to do: give --add, --remove or --set".into()));
    }
    // Shared: a prune must not decide what is used while snapshots are replaced, and the data a
    // snapshot references does not change.
    let _lock = repo.lock(LockKind::Shared, "tag")?;
    let mut out = Vec::new();
    for e in snapshots {
        let tags = change.apply(&e.snapshot.tags);
        if tags == e.snapshot.tags {
            continue;
        }
        let mut s = e.snapshot.clone();
        s.tags.clone_from(&tags);
        s.original.get_or_insert(e.id);
        let new = repo.save_snapshot(&s)?;
        if new != e.id {
            repo.backend.delete(FileType::Snapshot, &e.id.to_hex())?;
        }
        out.push(Retagged { old: e.id, new, tags });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|t| (*t).to_string()).collect()
    }

    #[test]
    fn set_then_add_then_remove() {
        let c = TagChange { add: v(&["x", "a"]), remove: v(&["b"]), ..Default::default() };
        assert_eq!(c.apply(&v(&["a", "b"])), v(&["a", "x"]));
        let c = TagChange { set: v(&["s"]), set_given: true, add: v(&["t"]), ..Default::default() };
        assert_eq!(c.apply(&v(&["a"])), v(&["s", "t"]));
        let c = TagChange { set_given: true, ..Default::default() };
        assert!(c.apply(&v(&["a"])).is_empty());
    }
}
