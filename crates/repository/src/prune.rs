//! `prune` (format §12): garbage collection under an exclusive lock, in two phases.
//!
//! Phase 1 (mark) writes a plan naming the unused packs and drops them from the index, so new
//! backups stop deduplicating against them. Phase 2 (sweep) deletes them once the plan is older
//! than the safety delay (by default at once: the exclusive lock already proves no backup is
//! running), unless a snapshot written meanwhile references them, in which case they go back into
//! the index.
//!
//! Phase 1 also repacks: when more than `max_unused` of the repository's bytes sit unused inside
//! packs that still hold live blobs, the live blobs of the emptiest such packs are copied into new
//! packs and the old packs are marked exactly like unused ones.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::backend::FileType;
use crate::crypto::ObjectKind;
use crate::error::{Error, Result};
use crate::index::{Index, IndexPack};
use crate::lock::LockKind;
use crate::pack_sink::PackSink;
use crate::tree::NodeType;
use crate::{Id, Repository};

/// Options of a prune.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// How old a plan (or an unindexed pack) must be before its packs are deleted. The exclusive
    /// lock makes zero safe; a delay only keeps deleted data around for longer.
    pub safety_delay: Duration,
    /// Report only.
    pub dry_run: bool,
    /// Fraction of the repository's pack bytes that may stay unused inside partly used packs
    /// (restic's `--max-unused`); above it the emptiest packs are repacked. 1.0 never repacks.
    pub max_unused: f64,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self { safety_delay: Duration::ZERO, dry_run: false, max_unused: 0.05 }
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
    /// Partly used packs whose live blobs were copied into new packs (counted in
    /// `marked_packs` too: the old packs are marked).
    pub repacked_packs: usize,
    /// Live bytes copied by repacking.
    pub repacked_bytes: u64,
    /// New packs written by repacking.
    pub new_packs: usize,
    /// Staged pack files (format §7.1) older than the safety delay, left by crashed backups,
    /// deleted by this run.
    pub stale_staged_files: usize,
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
/// Any unreadable snapshot or tree: prune must not guess. A tree the index does not list is
/// [`Error::UnindexedReferences`], which points at `repair index`.
pub fn used_blobs(repo: &Repository) -> Result<HashSet<Id>> {
    let mut used = HashSet::new();
    let snapshots = repo.snapshots_strict().map_err(|e| match e {
        Error::CorruptObject { object, reason } => Error::CorruptObject {
            reason: format!(
                "{reason}; prune cannot tell which data this snapshot references, so it deletes \
                 nothing (if the snapshot cannot be recovered, remove it with `holdfast repo \
                 forget {}`)",
                object.trim_start_matches("snapshots/")
            ),
            object,
        },
        e => e,
    })?;
    let index = repo.index();
    for s in snapshots {
        let mut stack = vec![s.snapshot.tree];
        while let Some(t) = stack.pop() {
            if !used.insert(t) {
                continue;
            }
            let tree = repo.load_tree(&t).map_err(|e| match e {
                Error::MissingBlob { blob } => {
                    Error::UnindexedReferences { count: 1, example: blob }
                }
                e => e,
            })?;
            for n in tree.nodes {
                match n.kind() {
                    NodeType::Dir => stack.extend(n.subtree),
                    NodeType::File => {
                        // Every content list blob of the chain is needed to resolve the list.
                        used.extend(n.content_lists);
                        used.extend(n.content);
                        // A prints blob is a hint (format §9.2): kept while it exists, and one
                        // lost does not stop a prune.
                        used.extend(n.prints.filter(|b| index.readable(b)));
                    }
                    _ => {}
                }
            }
        }
    }
    // The base of every patch kept is kept too (format §9.2).
    let bases: Vec<Id> = used.iter().flat_map(|b| index.bases_of(b)).collect();
    used.extend(bases);
    Ok(used)
}

/// [`used_blobs`], each of them listed by the loaded index (in a live or a marked pack).
///
/// Whether a pack is unused is decided from the index. A referenced blob the index does not
/// list means an index file was lost or damaged while its packs remain: those packs look
/// unindexed and, once old, would be deleted with the data they hold. Prune deletes only what it
/// can prove unreferenced, so this is an error, [`Error::UnindexedReferences`].
fn indexed_used_blobs(repo: &Repository) -> Result<HashSet<Id>> {
    let used = used_blobs(repo)?;
    let index = repo.index();
    let mut unindexed = used.iter().filter(|b| !index.readable(b));
    if let Some(example) = unindexed.next() {
        return Err(Error::UnindexedReferences {
            count: 1 + unindexed.count(),
            example: example.to_hex(),
        });
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

/// Runs both phases under an exclusive lock: sweeps plans older than the safety delay, marks newly
/// unused packs, and sweeps again when the new plan is already old enough (a zero delay).
///
/// # Errors
/// [`Error::Locked`] while another process uses the repository; unreadable snapshots or trees
/// (nothing is deleted then); backend errors.
pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    // A dry run writes nothing, so it may look while backups run.
    let lock = if opts.dry_run { None } else { Some(repo.lock(LockKind::Exclusive, "prune")?) };
    let mut report = PruneReport::default();
    repo.reload_index()?;
    // A backup that finished after the index was read has its snapshot listed but its index
    // file not yet loaded: read the index again once before concluding anything is missing.
    let used = match indexed_used_blobs(repo) {
        Err(Error::UnindexedReferences { .. }) => {
            repo.reload_index()?;
            indexed_used_blobs(repo)?
        }
        other => other?,
    };
    report.used_blobs = used.len();
    let sweep = |report: &mut PruneReport| -> Result<()> {
        if let Some(lock) = &lock {
            lock.check()?;
        }
        sweep(repo, &used, opts, report)
    };
    sweep(&mut report)?;
    let index = repo.index();

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
    let to_repack = choose_repacks(&index, &pack_blobs, &marked, &used, opts.max_unused);
    let old_files = repo.index_files();
    if opts.dry_run {
        report.repacked_packs = to_repack.len();
        report.marked_packs += to_repack.len();
        return Ok(report);
    }
    if marked.is_empty() && to_repack.is_empty() && old_files.len() <= 1 {
        return Ok(report);
    }
    // New packs first: until the index below lists them they are unindexed and young, so a
    // crash here leaves nothing a later prune would not collect.
    let new_packs = repack(repo, &index, &pack_blobs, &to_repack, &used, &mut report)?;
    for (id, size) in index.packs().filter(|(id, _)| to_repack.contains(id)) {
        marked.insert(id);
        report.marked_packs += 1;
        report.marked_bytes += size;
    }
    let all = index.to_packs(&HashSet::new());
    let (plan_packs, mut live): (Vec<IndexPack>, Vec<IndexPack>) =
        all.into_iter().partition(|p| marked.contains(&p.id));
    live.extend(new_packs);
    if !plan_packs.is_empty() {
        let plan = PrunePlan { created: jiff::Timestamp::now(), packs: plan_packs };
        let json = serde_json::to_vec(&plan).map_err(|e| Error::Invalid(e.to_string()))?;
        repo.save_object(ObjectKind::PrunePlan, FileType::PrunePlan, &json)?;
        if !opts.safety_delay.is_zero() {
            report.pending_plans += 1;
        }
    }
    // The plan is stored before the index forgets the packs, so a crash in between leaves them
    // either indexed or planned, never unreachable-but-young.
    repo.save_index_packs(live, old_files.clone())?;
    for f in &old_files {
        repo.backend.delete(FileType::Index, &f.to_hex())?;
    }
    report.index_files_replaced = old_files.len();
    repo.reload_index()?;
    if opts.safety_delay.is_zero() {
        // The plan just written is already old enough.
        sweep(&mut report)?;
    }
    Ok(report)
}

/// Phase 2: deletes the packs of plans older than the safety delay (re-indexing those a snapshot
/// now uses), unindexed packs and staged files older than it.
fn sweep(
    repo: &Repository,
    used: &HashSet<Id>,
    opts: &PruneOptions,
    report: &mut PruneReport,
) -> Result<()> {
    let index = repo.index();
    let now = SystemTime::now();
    let old_enough =
        |t: SystemTime| now.duration_since(t).map(|age| age >= opts.safety_delay).unwrap_or(false);

    report.pending_plans = 0;
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
            // Resurrect only for a used blob that no live pack holds: a repacked pack's blobs live
            // on in the new packs, so it can go. A whole copy goes only when a live pack holds
            // the blob whole too: it may be the base a kept patch needs (format §9.2).
            if p.blobs.iter().any(|b| {
                used.contains(&b.id)
                    && if b.base.is_none() {
                        !index.contains_whole(&b.id)
                    } else {
                        !index.contains(&b.id)
                    }
            }) {
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
                repo.save_index_packs(std::mem::take(&mut resurrect), Vec::new())?;
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

    report.stale_staged_files += sweep_staged_files(repo, &old_enough, opts.dry_run);
    Ok(())
}

/// Partly used packs to repack: the emptiest first, until the unused bytes left in partly used
/// packs are at most `max_unused` of what stays.
fn choose_repacks(
    index: &Index,
    pack_blobs: &std::collections::HashMap<Id, Vec<Id>>,
    marked: &HashSet<Id>,
    used: &HashSet<Id>,
    max_unused: f64,
) -> HashSet<Id> {
    let mut total = 0u64;
    let mut unused_total = 0u64;
    let mut partial: Vec<(f64, Id, u64)> = Vec::new();
    for (pack, size) in index.packs().filter(|(id, _)| !marked.contains(id)) {
        total += size;
        let unused: u64 = pack_blobs
            .get(&pack)
            .into_iter()
            .flatten()
            .filter(|b| !used.contains(b))
            .filter_map(|b| index.get_in(b, &pack))
            // A dictionary serves the used blobs of its pack (format §7.2): not unused space.
            .filter(|l| l.blob.blob_type != crate::pack::BlobType::Dictionary)
            .map(|l| u64::from(l.blob.length))
            .sum();
        if unused > 0 {
            unused_total += unused;
            #[allow(clippy::cast_precision_loss)]
            partial.push((unused as f64 / size.max(1) as f64, pack, unused));
        }
    }
    partial.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let limit = (total as f64 * max_unused.max(0.0)) as u64;
    let mut out = HashSet::new();
    for (_, pack, unused) in partial {
        if unused_total <= limit {
            break;
        }
        out.insert(pack);
        unused_total -= unused;
    }
    out
}

/// Deletes staged pack files older than the safety delay: a running backup writes to its files
/// continuously and stores each pack long before that, so an old one was left by a crash. Best
/// effort: a staging directory that cannot be read holds nothing any snapshot needs.
fn sweep_staged_files(
    repo: &Repository,
    old_enough: &dyn Fn(SystemTime) -> bool,
    dry_run: bool,
) -> usize {
    let Some(dir) = repo.backend.staging_dir() else { return 0 };
    let Ok(entries) = std::fs::read_dir(&dir) else { return 0 };
    let mut n = 0;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file()
            && meta.modified().is_ok_and(old_enough)
            && (dry_run || std::fs::remove_file(entry.path()).is_ok())
        {
            n += 1;
        }
    }
    n
}

/// Copies the used blobs of `packs` into new packs and uploads them; returns their index entries.
/// Every blob is verified on the way (a corrupt one aborts the prune before anything is marked).
fn repack(
    repo: &Repository,
    index: &Index,
    pack_blobs: &std::collections::HashMap<Id, Vec<Id>>,
    packs: &HashSet<Id>,
    used: &HashSet<Id>,
    report: &mut PruneReport,
) -> Result<Vec<IndexPack>> {
    let level = repo.config().compression.level;
    let mut sink = PackSink::new(repo);
    let mut sorted: Vec<&Id> = packs.iter().collect();
    sorted.sort();
    for pack in sorted {
        let data = repo.backend.get(FileType::Pack, &pack.to_hex())?;
        report.repacked_packs += 1;
        let dictionaries = index.dictionaries_in(pack);
        let dicts = crate::pack::dictionaries_in(
            &repo.master,
            pack,
            &dictionaries.first().map_or([0; 16], |d| d.salt),
            dictionaries.iter().map(|d| &d.blob),
            &data,
        );
        for id in pack_blobs.get(pack).into_iter().flatten().filter(|b| used.contains(b)) {
            // This pack's copy: the blob may have others elsewhere.
            let Some(loc) = index.get_in(id, pack) else { continue };
            let (start, len) = (loc.blob.offset as usize, loc.blob.length as usize);
            let sealed = data.get(start..start + len).ok_or_else(|| Error::CorruptBlob {
                blob: id.to_hex(),
                pack: pack.to_hex(),
                reason: "lies beyond the end of the pack".into(),
            })?;
            let plain =
                crate::pack::open_blob(&repo.master, pack, &loc.salt, &loc.blob, sealed, &dicts)?;
            // A patch is verified applied to its base before it is copied (format §9.2).
            if loc.blob.base.is_some() {
                repo.resolve_in(index, pack, &loc.blob, plain.clone())?;
            }
            // Stored compressed before: compress again with the repository's level (without a
            // dictionary: the new pack does not carry the old one's).
            let (payload, ulen) = if loc.blob.uncompressed_length > 0 {
                let z = zstd::bulk::compress(&plain, level)
                    .map_err(|e| Error::io("compress", "<repack>", e))?;
                (z, loc.blob.uncompressed_length)
            } else {
                (plain, 0)
            };
            report.repacked_bytes += payload.len() as u64;
            // A patch is copied as a patch: `plain` is its payload, its base is kept (format
            // §9.2).
            sink.add(*id, loc.blob.blob_type, &payload, ulen, loc.blob.base)?;
        }
    }
    let out = sink.finish()?;
    report.new_packs = out.len();
    Ok(out)
}
