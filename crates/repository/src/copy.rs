//! `copy` (format §10.2): snapshots from one repository into another.
//!
//! Blob ids are keyed per repository (format §6), so a blob cannot be moved as stored: each one a
//! copied snapshot reaches is read from the source (decrypted, verified), given the destination's
//! id and stored there unless the destination already has it. Trees are rewritten bottom-up with
//! the new ids. The copy is written as a backup writes: packs, then their index, then the
//! snapshots, under a shared lock on each repository, so a prune of either side waits for it and
//! a crash leaves at most unindexed packs. Copying again skips what was copied before, known by
//! the `original` field the copy carries.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::index::Index;
use crate::lock::LockKind;
use crate::pack::BlobType;
use crate::pack_sink::PackSink;
use crate::snapshot::SnapshotEntry;
use crate::tree::Tree;
use crate::{Id, Repository};

/// One source snapshot and its copy.
#[derive(Debug, Clone, Serialize)]
pub struct CopiedSnapshot {
    /// The snapshot in the source repository.
    pub source: Id,
    /// Its copy in the destination.
    pub copy: Id,
    /// Whether the copy existed before this run (nothing was written for it).
    pub already_copied: bool,
}

/// What `copy` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    /// Every selected snapshot, oldest first.
    pub snapshots: Vec<CopiedSnapshot>,
    /// Blobs the destination did not have and now stores.
    pub blobs_added: u64,
    /// Their plaintext bytes.
    pub bytes_added: u64,
}

/// Copies `snapshots` (entries of `src`) into `dst`.
///
/// # Errors
/// [`Error::Invalid`] when both are the same repository; [`Error::Locked`] when either is locked
/// exclusively (a prune or repair); read errors of the source (a copy never stores a snapshot
/// whose data it could not read whole); write errors of the destination.
pub fn copy(src: &Repository, dst: &Repository, snapshots: &[SnapshotEntry]) -> Result<CopyReport> {
    if src.config().id == dst.config().id {
        return Err(Error::Invalid(
            "the source and the destination are the same repository".into(),
        ));
    }
    let _src_lock = src.lock(LockKind::Shared, "copy (source)")?;
    let _dst_lock = dst.lock(LockKind::Shared, "copy")?;
    dst.refresh_index()?;
    // The copies already in the destination, by the source snapshot they came from.
    let copies: HashMap<Id, Id> = dst
        .snapshots()?
        .into_iter()
        .filter_map(|e| e.snapshot.original.map(|o| (o, e.id)))
        .collect();

    let mut ordered: Vec<&SnapshotEntry> = snapshots.iter().collect();
    ordered.sort_by_key(|e| (e.snapshot.time, e.id));
    ordered.dedup_by_key(|e| e.id);
    let mut copier = Copier {
        src,
        dst,
        dst_index: dst.index(),
        trees: HashMap::new(),
        blobs: HashMap::new(),
        written: HashSet::new(),
        sink: PackSink::new(dst),
        report: CopyReport::default(),
    };
    // Per snapshot, oldest first: its existing copy, or the root of the copy to write.
    let mut planned = Vec::new();
    for entry in ordered {
        // A snapshot rewritten in the source (`tag`) is still the one it was first copied as.
        let origin = entry.snapshot.original.unwrap_or(entry.id);
        let plan = match copies.get(&origin) {
            Some(copy) => Err(*copy),
            None => Ok(copier.tree(&entry.snapshot.tree)?),
        };
        planned.push((entry, origin, plan));
    }
    let Copier { sink, mut report, .. } = copier;
    // The new blobs are indexed before any snapshot names them.
    let packs = sink.finish()?;
    if !packs.is_empty() {
        dst.save_index_packs(packs, Vec::new())?;
        dst.reload_index()?;
    }
    // Source snapshot id → its copy, to carry parents over.
    let mut by_source: HashMap<Id, Id> = HashMap::new();
    for (entry, origin, plan) in planned {
        let done = match plan {
            Err(copy) => CopiedSnapshot { source: entry.id, copy, already_copied: true },
            Ok(root) => {
                let mut snapshot = entry.snapshot.clone();
                snapshot.tree = root;
                snapshot.original = Some(origin);
                // The parent only serves change detection: kept where it has a copy too.
                snapshot.parent = snapshot.parent.and_then(|p| by_source.get(&p).copied());
                let copy = dst.save_snapshot(&snapshot)?;
                CopiedSnapshot { source: entry.id, copy, already_copied: false }
            }
        };
        by_source.insert(entry.id, done.copy);
        report.snapshots.push(done);
    }
    Ok(report)
}

struct Copier<'a> {
    src: &'a Repository,
    dst: &'a Repository,
    dst_index: Arc<Index>,
    /// Source tree id → destination tree id: snapshots share most of their trees.
    trees: HashMap<Id, Id>,
    /// Source data blob id → destination id.
    blobs: HashMap<Id, Id>,
    /// Blobs stored by this run.
    written: HashSet<Id>,
    sink: PackSink<'a>,
    report: CopyReport,
}

impl Copier<'_> {
    /// The destination id of source tree `id`, stored with everything it reaches.
    fn tree(&mut self, id: &Id) -> Result<Id> {
        if let Some(done) = self.trees.get(id) {
            return Ok(*done);
        }
        let mut tree = self.src.load_tree(id)?;
        for node in &mut tree.nodes {
            for blob in &mut node.content {
                *blob = self.data(blob)?;
            }
            // The source's content list blobs hold the source's ids: the destination's tree
            // carries the translated list inline (format §9.1).
            node.content_lists.clear();
            // Not copied: a hint naming the source's roots (format §9.2).
            node.prints = None;
            if let Some(sub) = node.subtree {
                node.subtree = Some(self.tree(&sub)?);
            }
        }
        let new = self.store_tree(tree)?;
        self.trees.insert(*id, new);
        Ok(new)
    }

    fn store_tree(&mut self, tree: Tree) -> Result<Id> {
        let data = tree.encode()?;
        let id = self.dst.blob_id(&data);
        self.store(id, BlobType::Tree, &data)?;
        Ok(id)
    }

    /// The destination id of source data blob `id`, stored when the destination lacks it.
    fn data(&mut self, id: &Id) -> Result<Id> {
        if let Some(done) = self.blobs.get(id) {
            return Ok(*done);
        }
        let plain = self.src.load_blob(id)?;
        let new = self.dst.blob_id(&plain);
        self.store(new, BlobType::Data, &plain)?;
        self.blobs.insert(*id, new);
        Ok(new)
    }

    fn store(&mut self, id: Id, blob_type: BlobType, plain: &[u8]) -> Result<()> {
        if !self.dst_index.contains(&id) && self.written.insert(id) {
            self.sink.add_plain(id, blob_type, plain, None)?;
            self.report.blobs_added += 1;
            self.report.bytes_added += plain.len() as u64;
        }
        Ok(())
    }
}
