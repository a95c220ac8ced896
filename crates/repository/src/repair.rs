//! `repair index` (format §8.1): rebuilds the index from the packs' own headers.
//!
//! Every pack carries a sealed header listing its blobs (format §7), so the index is a cache of
//! what the packs already say. When an index file is lost or damaged, the packs it listed look
//! unindexed: their blobs cannot be read, and `check` reports the snapshots that use them. This
//! rebuild makes every readable pack reachable again and replaces every index file, readable or
//! not, by one new file.
//!
//! Order, so that a crash or a concurrent backup never loses an index entry: index files are
//! listed before packs (a backup stores a pack before the index file naming it, so every pack an
//! old index file names is in the listing); the new index file is stored before any old one is
//! deleted; and only the index files listed at the start are deleted, so one a backup writes
//! meanwhile stays.

pub mod packs;
pub mod snapshots;

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::index::{IndexFile, IndexPack};
use crate::lock::LockKind;
use crate::progress::CancelToken;
use crate::{Id, Repository};

/// Options of `repair index`.
#[derive(Debug, Clone, Default)]
pub struct RepairIndexOptions {
    /// Read the header of every pack, even of those a readable index file describes with the
    /// right size (restic's `--read-all-packs`).
    pub read_all_packs: bool,
    /// Report what would change; write and delete nothing.
    pub dry_run: bool,
    /// Cancellation (checked between packs; nothing is written before all packs are read).
    pub cancel: CancelToken,
}

/// What `repair index` found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairIndexReport {
    /// Packs present in the repository.
    pub packs: usize,
    /// Packs the new index lists.
    pub packs_indexed: usize,
    /// Packs whose headers were read (not described by a readable index file, or all of them
    /// with `read_all_packs`).
    pub headers_read: usize,
    /// Packs that no readable index file listed before and that the new index lists.
    pub packs_added: usize,
    /// Index entries dropped because their pack no longer exists.
    pub missing_packs_dropped: usize,
    /// Index entries replaced because the pack's header says otherwise (size, blobs).
    pub entries_corrected: usize,
    /// Packs whose header could not be read or verified: not indexed (their blobs stay
    /// unreadable; `check --read-data` names the damage).
    pub unreadable_packs: Vec<String>,
    /// Index files that could not be read or decrypted (replaced by the new one).
    pub unreadable_index_files: Vec<String>,
    /// Index files replaced (deleted after the new one was stored).
    pub index_files_replaced: usize,
    /// The new index files (one per [`crate::INDEX_FILE_BLOBS`] blobs), none when nothing
    /// needed writing or it was a dry run.
    pub new_index_files: Vec<String>,
    /// Packs left to prune plans (marked, not yet swept): they stay out of the live index.
    pub planned_packs: usize,
}

/// Rebuilds the index of `repo` from its index files and pack headers. The repository may have
/// been opened with [`Repository::open_unindexed`]; unless this is a dry run, its index is
/// reloaded at the end.
///
/// # Errors
/// Backend errors (an index file that cannot be read for any reason but damage, such as a
/// network error or a newer format version, stops the rebuild before anything is written),
/// cancellation, an unreadable prune plan (its packs must stay out of the live index, so the
/// rebuild stops rather than guess).
pub fn repair_index(repo: &Repository, opts: &RepairIndexOptions) -> Result<RepairIndexReport> {
    // Exclusive: it deletes index files, and a backup's new index file must not race it.
    let _lock =
        if opts.dry_run { None } else { Some(repo.lock(LockKind::Exclusive, "repair index")?) };
    let mut report = RepairIndexReport::default();

    // 1. Index files, each on its own: a damaged one is noted, not fatal.
    let mut listed_files = Vec::new();
    let mut known: HashMap<Id, IndexPack> = HashMap::new();
    let mut readable_files: Vec<(Id, IndexFile)> = Vec::new();
    for info in repo.backend.list(FileType::Index)? {
        listed_files.push(info.name.clone());
        let file = info
            .name
            .parse::<Id>()
            .map_err(|e| Error::corrupt(format!("index/{}", info.name), e.to_string()))
            .and_then(|id| repo.load_index_file(&id));
        match file {
            Ok(file) => {
                for p in &file.packs {
                    known.insert(p.id, p.clone());
                }
                if let Ok(id) = info.name.parse() {
                    readable_files.push((id, file));
                }
            }
            // Consolidated away by a concurrent prune after listing: its replacement is listed
            // or will be left alone, and its packs are read from their headers below.
            Err(Error::Backend(e)) if e.is_not_found() => {}
            // Damage is what this command repairs; anything else (the network, a format this
            // version does not know) is not a reason to delete the file.
            Err(e @ Error::CorruptObject { .. }) => {
                report.unreadable_index_files.push(format!("index/{}: {e}", info.name));
            }
            Err(e) => return Err(e),
        }
    }
    // Packs marked by prune stay out of the live index, as mark left them, unless an index file
    // in force lists them as live again (a sweep resurrected them, or a crash came between
    // writing that file and deleting the plan): readers treat those as live, so the rebuild does.
    let superseded: HashSet<Id> =
        readable_files.iter().flat_map(|(_, f)| f.supersedes.iter().copied()).collect();
    let listed_live: HashSet<Id> = readable_files
        .iter()
        .filter(|(id, _)| !superseded.contains(id))
        .flat_map(|(_, f)| f.packs.iter().map(|p| p.id))
        .collect();
    let planned: HashSet<Id> = crate::prune::load_plans(repo)?
        .into_iter()
        .flat_map(|plan| plan.packs.into_iter().map(|p| p.id))
        .filter(|id| !listed_live.contains(id))
        .collect();
    // Whether the new index differs from what the readable files say (beyond added packs).
    let mut corrected = 0usize;

    // 2. Packs, after the index files.
    let mut packs = Vec::new();
    let mut present = HashSet::new();
    for info in repo.backend.list(FileType::Pack)? {
        report.packs += 1;
        let Ok(id) = info.name.parse::<Id>() else {
            report.unreadable_packs.push(format!("data/{}: not a pack name", info.name));
            continue;
        };
        present.insert(id);
        if planned.contains(&id) {
            report.planned_packs += 1;
            continue;
        }
        if opts.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        match known.get(&id) {
            Some(entry) if entry.size == info.size && !opts.read_all_packs => {
                packs.push(entry.clone());
            }
            described => {
                report.headers_read += 1;
                match crate::pack::fetch_header(
                    repo.backend.as_ref(),
                    &repo.master,
                    &info.name,
                    info.size,
                ) {
                    Ok((salt, blobs)) => {
                        let fresh = IndexPack { id, salt, size: info.size, blobs };
                        match described {
                            None => report.packs_added += 1,
                            Some(old) if !same_pack(old, &fresh) => corrected += 1,
                            Some(_) => {}
                        }
                        packs.push(fresh);
                    }
                    Err(Error::Backend(e)) if e.is_not_found() => {} // deleted meanwhile
                    Err(e) => {
                        report.unreadable_packs.push(e.to_string());
                        // A readable index entry still locates the pack's blobs; keep it.
                        if let Some(entry) = described {
                            packs.push(entry.clone());
                        }
                    }
                }
            }
        }
    }
    report.missing_packs_dropped = known.keys().filter(|id| !present.contains(id)).count();
    report.packs_indexed = packs.len();
    report.entries_corrected = corrected;

    // 3. One new index file, then the old ones go.
    let unchanged = report.packs_added == 0
        && corrected == 0
        && report.missing_packs_dropped == 0
        && report.unreadable_index_files.is_empty()
        && packs.len() == known.keys().filter(|id| !planned.contains(id)).count()
        && listed_files.len() <= crate::repository::index_groups(&packs).len().max(1);
    if opts.dry_run {
        return Ok(report);
    }
    if unchanged {
        repo.reload_index()?;
        return Ok(report);
    }
    packs.sort_by_key(|p| p.id);
    let readable: Vec<Id> = listed_files.iter().filter_map(|n| n.parse().ok()).collect();
    let new = repo.save_index_packs(packs, readable)?;
    report.new_index_files = new.iter().map(Id::to_hex).collect();
    for name in &listed_files {
        repo.backend.delete(FileType::Index, name)?;
        report.index_files_replaced += 1;
    }
    repo.reload_index()?;
    Ok(report)
}

/// Whether an index entry says what the pack's header says (blob order aside).
fn same_pack(a: &IndexPack, b: &IndexPack) -> bool {
    let sorted = |p: &IndexPack| {
        let mut blobs = p.blobs.clone();
        blobs.sort_by_key(|blob| blob.offset);
        blobs
    };
    a.salt == b.salt && a.size == b.size && sorted(a) == sorted(b)
}
