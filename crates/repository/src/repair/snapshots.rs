//! `repair snapshots` (format §8.2): new snapshots without what cannot be read.
//!
//! A snapshot whose trees reference blobs the repository no longer has (a lost pack, or blobs
//! `repair packs` could not salvage) cannot be restored whole. This writes, for each such
//! snapshot, a new one with the same time, paths, host and tags (plus `repaired`) in which every
//! file whose content is incomplete is left out and every directory whose tree cannot be read is
//! empty, and says what was dropped. Every file that can be read stays. The original is removed
//! only with `forget`. As with restic, backing the data up again is better when it still exists:
//! a backup stores lost blobs again and so heals every snapshot that uses them.

use std::collections::HashMap;

use serde::Serialize;

use crate::error::Result;
use crate::lock::LockKind;
use crate::pack::BlobType;
use crate::pack_sink::PackSink;
use crate::snapshot::SnapshotEntry;
use crate::tree::{Node, NodeType, Tree};
use crate::{Id, Repository};

/// Options of `repair snapshots`.
#[derive(Debug, Clone, Default)]
pub struct RepairSnapshotsOptions {
    /// Snapshots to look at (ids, prefixes or `latest`); empty means all.
    pub snapshots: Vec<String>,
    /// Remove each original once its repaired snapshot is stored.
    pub forget: bool,
    /// Report only; write and delete nothing.
    pub dry_run: bool,
}

/// One damaged snapshot and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct RepairedSnapshot {
    /// The damaged snapshot.
    pub original: Id,
    /// The repaired one (none on a dry run, or when nothing readable was left).
    pub repaired: Option<Id>,
    /// Whether the original was removed.
    pub forgotten: bool,
    /// What was left out, one line each: the path and why.
    pub dropped: Vec<String>,
}

/// What `repair snapshots` found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairSnapshotsReport {
    /// Snapshots examined.
    pub checked: usize,
    /// Those that needed repair.
    pub damaged: Vec<RepairedSnapshot>,
}

/// Rewrites damaged snapshots.
///
/// # Errors
/// [`Error::Locked`]; backend errors other than unreadable trees; an unknown snapshot selector.
pub fn repair_snapshots(
    repo: &Repository,
    opts: &RepairSnapshotsOptions,
) -> Result<RepairSnapshotsReport> {
    let _lock =
        if opts.dry_run { None } else { Some(repo.lock(LockKind::Exclusive, "repair snapshots")?) };
    repo.refresh_index()?;
    repo.drop_missing_packs()?;
    let snapshots: Vec<SnapshotEntry> = if opts.snapshots.is_empty() {
        repo.snapshots()?
    } else {
        opts.snapshots.iter().map(|s| repo.find_snapshot(s)).collect::<Result<_>>()?
    };
    let mut report = RepairSnapshotsReport { checked: snapshots.len(), ..Default::default() };
    let mut rewriter = Rewriter {
        repo,
        done: HashMap::new(),
        written: std::collections::HashSet::new(),
        sink: PackSink::new(repo),
    };
    let mut pending = Vec::new();
    for entry in snapshots {
        let r = rewriter.dir(&entry.snapshot.tree, opts.dry_run)?;
        if r.dropped.is_empty() {
            continue;
        }
        // The root tree's own damage reads ": …"; give it a path.
        let dropped = r
            .dropped
            .into_iter()
            .map(|d| if d.starts_with(':') { format!("/{d}") } else { d })
            .collect();
        pending.push((entry, r.id, dropped));
    }
    // New trees are indexed before any snapshot names them.
    let packs = rewriter.sink.finish()?;
    if !packs.is_empty() {
        repo.save_index_file(&crate::index::IndexFile { supersedes: Vec::new(), packs })?;
        repo.reload_index()?;
    }
    for (entry, root, dropped) in pending {
        let mut done =
            RepairedSnapshot { original: entry.id, repaired: None, forgotten: false, dropped };
        if !opts.dry_run
            && let Some(root) = root
        {
            let mut snapshot = entry.snapshot.clone();
            snapshot.tree = root;
            if !snapshot.tags.iter().any(|t| t == "repaired") {
                snapshot.tags.push("repaired".into());
            }
            done.repaired = Some(repo.save_snapshot(&snapshot)?);
        }
        if !opts.dry_run && opts.forget {
            repo.backend.delete(crate::backend::FileType::Snapshot, &entry.id.to_hex())?;
            done.forgotten = true;
        }
        report.damaged.push(done);
    }
    Ok(report)
}

/// A tree's rewrite: its new id (none when it cannot be read) and what was left out, by path
/// relative to it.
#[derive(Clone)]
struct Rewritten {
    id: Option<Id>,
    dropped: Vec<String>,
}

struct Rewriter<'a> {
    repo: &'a Repository,
    /// Trees already rewritten, by old id: snapshots share most of their trees.
    done: HashMap<Id, Rewritten>,
    /// Trees stored by this run.
    written: std::collections::HashSet<Id>,
    sink: PackSink<'a>,
}

impl Rewriter<'_> {
    /// The tree `id` with damaged entries left out.
    fn dir(&mut self, id: &Id, dry_run: bool) -> Result<Rewritten> {
        if let Some(done) = self.done.get(id) {
            return Ok(done.clone());
        }
        let (tree, lost) = match self.repo.load_tree_sparing(id) {
            Ok(t) => t,
            Err(e) if e.is_damage() => {
                let r = Rewritten {
                    id: None,
                    dropped: vec![format!(": directory unreadable, left empty ({e})")],
                };
                self.done.insert(*id, r.clone());
                return Ok(r);
            }
            Err(e) => return Err(e),
        };
        let index = self.repo.index();
        // A file whose content list is unreadable (format §9.1) costs that file only.
        let mut dropped: Vec<String> = lost
            .iter()
            .map(|(node, e)| {
                format!(
                    "/{}: its list of chunks is unreadable, file left out ({e})",
                    node.name_lossy()
                )
            })
            .collect();
        let mut changed = !lost.is_empty();
        let mut nodes = Vec::with_capacity(tree.nodes.len());
        for mut node in tree.nodes {
            let name = node.name_lossy();
            match node.kind() {
                NodeType::File => {
                    let missing = node.content.iter().filter(|b| !index.readable(b)).count();
                    if missing > 0 {
                        dropped.push(format!(
                            "/{name}: {missing} of {} chunks unreadable, file left out",
                            node.content.len()
                        ));
                        changed = true;
                        continue;
                    }
                    // A hint for the next backup (format §9.2): dropped, not reported.
                    if node.prints.is_some_and(|b| !index.readable(&b)) {
                        node.prints = None;
                        changed = true;
                    }
                }
                NodeType::Dir => {
                    if let Some(sub) = node.subtree {
                        let r = self.dir(&sub, dry_run)?;
                        dropped.extend(r.dropped.iter().map(|d| format!("/{name}{d}")));
                        let new = match r.id {
                            Some(n) => n,
                            None => self.save(Tree { nodes: Vec::<Node>::new() }, dry_run)?,
                        };
                        if new != sub {
                            node.subtree = Some(new);
                            changed = true;
                        }
                    }
                }
                _ => {}
            }
            nodes.push(node);
        }
        let new = if changed { self.save(Tree { nodes }, dry_run)? } else { *id };
        let r = Rewritten { id: Some(new), dropped };
        self.done.insert(*id, r.clone());
        Ok(r)
    }

    fn save(&mut self, tree: Tree, dry_run: bool) -> Result<Id> {
        let data = tree.encode()?;
        let id = self.repo.blob_id(&data);
        if !dry_run && !self.repo.index().contains(&id) && self.written.insert(id) {
            self.sink.add_plain(id, BlobType::Tree, &data, None)?;
        }
        Ok(id)
    }
}
