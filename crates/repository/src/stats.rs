//! Listing, diffing and statistics over snapshots.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::backend::FileType;
use crate::error::Result;
use crate::tree::{Node, NodeType};
use crate::{Id, Repository};

/// One entry of a recursive listing.
#[derive(Debug, Clone, Serialize)]
pub struct LsEntry {
    /// Path inside the snapshot, starting with `/`.
    pub path: String,
    /// Kind.
    #[serde(rename = "type")]
    pub node_type: NodeType,
    /// Size (files).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, ns.
    pub mtime: i64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// Walks a tree depth-first, calling `f(path, node)` for every node.
///
/// # Errors
/// Unreadable trees.
pub fn walk(repo: &Repository, root: &Id, f: &mut dyn FnMut(&str, &Node)) -> Result<()> {
    let mut stack = vec![(String::new(), *root)];
    while let Some((prefix, id)) = stack.pop() {
        let tree = repo.load_tree(&id)?;
        let mut dirs = Vec::new();
        for n in &tree.nodes {
            let path = format!("{prefix}/{}", n.name_lossy());
            f(&path, n);
            if let (NodeType::Dir, Some(sub)) = (n.kind(), n.subtree) {
                dirs.push((path, sub));
            }
        }
        stack.extend(dirs.into_iter().rev());
    }
    Ok(())
}

/// Every node of a snapshot tree as a listing.
///
/// # Errors
/// Unreadable trees.
pub fn ls(repo: &Repository, root: &Id) -> Result<Vec<LsEntry>> {
    let mut out = Vec::new();
    walk(repo, root, &mut |path, n| {
        out.push(LsEntry {
            path: path.to_string(),
            node_type: n.kind(),
            size: n.size,
            mode: n.mode,
            mtime: n.mtime,
            uid: n.uid,
            gid: n.gid,
        });
    })?;
    Ok(out)
}

/// Differences between two snapshot trees.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Diff {
    /// Paths only in the second.
    pub added: Vec<String>,
    /// Paths only in the first.
    pub removed: Vec<String>,
    /// Paths whose content or metadata differ.
    pub modified: Vec<String>,
}

/// Compares two trees by path.
///
/// # Errors
/// Unreadable trees.
pub fn diff(repo: &Repository, a: &Id, b: &Id) -> Result<Diff> {
    let collect = |root: &Id| -> Result<BTreeMap<String, Node>> {
        let mut m = BTreeMap::new();
        walk(repo, root, &mut |p, n| {
            let mut n = n.clone();
            n.subtree = None; // directories compare by their own metadata
            n.atime = 0;
            m.insert(p.to_string(), n);
        })?;
        Ok(m)
    };
    let (ma, mb) = (collect(a)?, collect(b)?);
    let mut d = Diff::default();
    for (p, na) in &ma {
        match mb.get(p) {
            None => d.removed.push(p.clone()),
            Some(nb)
                if nb.content != na.content
                    || nb.mode != na.mode
                    || nb.kind() != na.kind()
                    || nb.target != na.target
                    || nb.uid != na.uid
                    || nb.gid != na.gid
                    || (na.kind() != NodeType::Dir && nb.mtime != na.mtime) =>
            {
                d.modified.push(p.clone())
            }
            Some(_) => {}
        }
    }
    d.added = mb.keys().filter(|p| !ma.contains_key(*p)).cloned().collect();
    Ok(d)
}

/// Repository statistics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepoStats {
    /// Snapshots.
    pub snapshots: usize,
    /// Packs in the index.
    pub packs: usize,
    /// Bytes of those packs (what the storage holds).
    pub pack_bytes: u64,
    /// Indexed blobs.
    pub blobs: usize,
    /// Files over all snapshots (counted per snapshot).
    pub total_files: u64,
    /// Restore size over all snapshots.
    pub total_restore_size: u64,
    /// Plaintext bytes of the distinct data blobs snapshots reference.
    pub unique_data_bytes: u64,
}

/// Computes statistics; `snapshot` limits them to one snapshot.
///
/// # Errors
/// Unreadable objects.
pub fn stats(repo: &Repository, snapshot: Option<&Id>) -> Result<RepoStats> {
    let index = repo.index();
    let mut s = RepoStats {
        packs: index.packs().count(),
        pack_bytes: index.packs().map(|(_, size)| size).sum(),
        blobs: index.len(),
        ..Default::default()
    };
    let snaps = match snapshot {
        Some(id) => vec![*id],
        None => repo
            .backend
            .list(FileType::Snapshot)?
            .into_iter()
            .filter_map(|o| o.name.parse().ok())
            .collect(),
    };
    let mut seen: HashSet<Id> = HashSet::new();
    for id in &snaps {
        let snap = repo.load_snapshot(id)?;
        s.snapshots += 1;
        walk(repo, &snap.tree, &mut |_, n| {
            if n.kind() == NodeType::File {
                s.total_files += 1;
                s.total_restore_size += n.size;
                for b in &n.content {
                    if seen.insert(*b)
                        && let Some(loc) = index.get(b)
                    {
                        s.unique_data_bytes += if loc.blob.uncompressed_length > 0 {
                            u64::from(loc.blob.uncompressed_length)
                        } else {
                            u64::from(loc.blob.length)
                                .saturating_sub(crate::crypto::SEAL_OVERHEAD as u64)
                        };
                    }
                }
            }
        })?;
    }
    Ok(s)
}
