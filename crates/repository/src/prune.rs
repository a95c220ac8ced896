//! `prune` (format §12): two-phase garbage collection with a safety delay, no locks.
//!
//! Phase 1 (mark) writes a plan naming the unused packs and drops them from the index, so new
//! backups stop deduplicating against them. Phase 2 (sweep), on a run at least the safety delay
//! later, deletes them unless a snapshot written meanwhile references them, in which case they go
//! back into the index.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::backend::FileType;
use crate::crypto::ObjectKind;
use crate::error::{Error, Result};
use crate::index::{IndexFile, IndexPack};
use crate::tree::NodeType;
use crate::{Id, Repository};

/// Options of a prune.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// How old a plan (or an unindexed pack) must be before its packs are deleted. Must exceed the
    /// longest backup.
    pub safety_delay: Duration,
    /// Report only.
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self { safety_delay: Duration::from_secs(24 * 3600), dry_run: false }
    }
}

/// What a prune did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Blobs referenced by snapshots.
    pub used_blobs: usize,
    /// Packs marked for deletion by this run.
    pub marked_packs: usize,
    /// Their bytes.
    pub marked_bytes: u64,
    /// Packs deleted by this run.
    pub deleted_packs: usize,
    /// Their bytes.
    pub deleted_bytes: u64,
    /// Marked packs found in use again and re-indexed.
    pub resurrected_packs: usize,
    /// Plans still waiting for their safety delay.
    pub pending_plans: usize,
    /// Index files replaced by one consolidated file.
    pub index_files_replaced: usize,
}

/// A phase-1 plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrunePlan {
    /// When the packs were marked.
    pub created: jiff::Timestamp,
    /// The marked packs, with their index entries so they can be re-indexed.
    pub packs: Vec<IndexPack>,
}

/// Every blob (data and tree) reachable from a snapshot.
///
/// # Errors
/// Any unreadable snapshot or tree: prune must not guess.
pub fn used_blobs(repo: &Repository) -> Result<HashSet<Id>> {
    let mut used = HashSet::new();
    for s in repo.snapshots()? {
        let mut stack = vec![s.snapshot.tree];
        while let Some(t) = stack.pop() {
            if !used.insert(t) {
                continue;
            }
            for n in repo.load_tree(&t)?.nodes {
                match n.kind() {
                    NodeType::Dir => stack.extend(n.subtree),
                    NodeType::File => used.extend(n.content),
                    _ => {}
                }
            }
        }
    }
    Ok(used)
}

fn load_plan(repo: &Repository, name: &str) -> Result<PrunePlan> {
    let json = repo.load_object(ObjectKind::PrunePlan, FileType::PrunePlan, name)?;
    serde_json::from_slice(&json)
        .map_err(|e| Error::corrupt(format!("prune/{name}"), e.to_string()))
}

/// Every prune plan present (plans swept away meanwhile are skipped).
///
/// # Errors
/// Backend errors, corrupt plans.
pub fn load_plans(repo: &Repository) -> Result<Vec<PrunePlan>> {
    let mut out = Vec::new();
    for info in repo.backend.list(FileType::PrunePlan)? {
        match load_plan(repo, &info.name) {
            Ok(p) => out.push(p),
            Err(Error::Backend(e)) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Runs both phases: sweeps plans older than the safety delay, then marks newly unused packs.
///
/// # Errors
/// Unreadable snapshots or trees (nothing is deleted then), backend errors.
pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    let mut report = PruneReport::default();
    repo.reload_index()?;
    let used = used_blobs(repo)?;
    report.used_blobs = used.len();
    let index = repo.index();
    let now = SystemTime::now();
    let old_enough =
        |t: SystemTime| now.duration_since(t).map(|age| age >= opts.safety_delay).unwrap_or(false);

    // Phase 2: sweep ripe plans.
    let mut pending_packs: HashSet<Id> = HashSet::new();
    let mut planned: HashSet<Id> = HashSet::new();
    let mut resurrect: Vec<IndexPack> = Vec::new();
    for info in repo.backend.list(FileType::PrunePlan)? {
        let plan = load_plan(repo, &info.name)?;
        if !old_enough(SystemTime::from(plan.created)) {
            report.pending_plans += 1;
            pending_packs.extend(plan.packs.iter().map(|p| p.id));
            continue;
        }
        for p in plan.packs {
            planned.insert(p.id);
            if index.has_pack(&p.id) {
                continue; // already back in the index
            }
            if p.blobs.iter().any(|b| used.contains(&b.id)) {
                report.resurrected_packs += 1;
                resurrect.push(p);
            } else {
                report.deleted_packs += 1;
                report.deleted_bytes += p.size;
                if !opts.dry_run {
                    repo.backend.delete(FileType::Pack, &p.id.to_hex())?;
                }
            }
        }
        if !opts.dry_run {
            if !resurrect.is_empty() {
                repo.save_index_file(&IndexFile {
                    supersedes: Vec::new(),
                    packs: std::mem::take(&mut resurrect),
                })?;
            }
            repo.backend.delete(FileType::PrunePlan, &info.name)?;
        }
    }
    // Packs no index lists and no plan holds: left by crashed backups, or being uploaded right
    // now by a running one. Only old ones are deleted.
    for info in repo.backend.list(FileType::Pack)? {
        let Ok(id) = info.name.parse::<Id>() else { continue };
        if !index.has_pack(&id)
            && !pending_packs.contains(&id)
            && !planned.contains(&id)
            && old_enough(info.last_modified)
        {
            report.deleted_packs += 1;
            report.deleted_bytes += info.size;
            if !opts.dry_run {
                repo.backend.delete(FileType::Pack, &info.name)?;
            }
        }
    }

    // Phase 1: mark unused packs and write an index without them.
    let pack_blobs = index.pack_blobs();
    let mut marked: HashSet<Id> = HashSet::new();
    for (pack, size) in index.packs() {
        let blobs = pack_blobs.get(&pack).map(Vec::as_slice).unwrap_or(&[]);
        if !blobs.iter().any(|b| used.contains(b)) {
            marked.insert(pack);
            report.marked_packs += 1;
            report.marked_bytes += size;
        }
    }
    let old_files = repo.index_files();
    if opts.dry_run || (marked.is_empty() && old_files.len() <= 1) {
        return Ok(report);
    }
    let all = index.to_packs(&HashSet::new());
    let (plan_packs, live): (Vec<IndexPack>, Vec<IndexPack>) =
        all.into_iter().partition(|p| marked.contains(&p.id));
    if !plan_packs.is_empty() {
        let plan = PrunePlan { created: jiff::Timestamp::now(), packs: plan_packs };
        let json = serde_json::to_vec(&plan).map_err(|e| Error::Invalid(e.to_string()))?;
        repo.save_object(ObjectKind::PrunePlan, FileType::PrunePlan, &json)?;
    }
    // The plan is stored before the index forgets the packs, so a crash in between leaves them
    // either indexed or planned, never unreachable-but-young.
    repo.save_index_file(&IndexFile { supersedes: old_files.clone(), packs: live })?;
    for f in &old_files {
        repo.backend.delete(FileType::Index, &f.to_hex())?;
    }
    report.index_files_replaced = old_files.len();
    repo.reload_index()?;
    Ok(report)
}
