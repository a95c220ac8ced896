//! `repair packs` (format §8.3): salvage the readable blobs of damaged packs.
//!
//! A pack with a flipped byte fails every read of the blob that byte sits in, and `check
//! --read-data` names it. This reads each damaged pack whole, verifies every blob the index (or,
//! when the index lacks the pack, its header) says it holds, copies the blobs that verify into new
//! packs, and replaces the index so it lists the new packs instead of the damaged ones; only then
//! are the damaged packs deleted. Blobs that do not verify are lost unless a copy exists elsewhere;
//! the report names them, and `repair snapshots` then rewrites the snapshots that used them (or a
//! new backup of the same data stores them again).

use std::collections::HashSet;

use serde::Serialize;

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::index::IndexPack;
use crate::lock::LockKind;
use crate::pack::{BlobType, PackBlob};
use crate::pack_sink::PackSink;
use crate::progress::CancelToken;
use crate::{Id, Repository};

/// Options of `repair packs`.
#[derive(Debug, Clone, Default)]
pub struct RepairPacksOptions {
    /// Packs to repair (full names or unique prefixes); empty means: read every pack and repair
    /// those that do not verify.
    pub packs: Vec<String>,
    /// Report only.
    pub dry_run: bool,
    /// Cancellation (between packs; nothing is replaced before all are read).
    pub cancel: CancelToken,
}

/// What `repair packs` found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairPacksReport {
    /// Packs read.
    pub packs_read: usize,
    /// Packs found damaged (or named) and replaced.
    pub damaged_packs: Vec<String>,
    /// Blobs copied into new packs.
    pub salvaged_blobs: usize,
    /// Blobs that did not verify and have no copy elsewhere, and the patches of those (format
    /// §9.2): the snapshots using them need `repair snapshots` (or a new backup of the data).
    pub lost_blobs: Vec<String>,
    /// New packs written.
    pub new_packs: Vec<String>,
}

/// Salvages damaged packs.
///
/// # Errors
/// [`Error::Locked`], an unknown or ambiguous pack name, backend errors.
pub fn repair_packs(repo: &Repository, opts: &RepairPacksOptions) -> Result<RepairPacksReport> {
    let _lock =
        if opts.dry_run { None } else { Some(repo.lock(LockKind::Exclusive, "repair packs")?) };
    repo.reload_index()?;
    let index = repo.index();
    let present: Vec<(Id, u64)> = repo
        .backend
        .list(FileType::Pack)?
        .into_iter()
        .filter_map(|i| i.name.parse().ok().map(|id| (id, i.size)))
        .collect();
    let wanted: Vec<Id> = if opts.packs.is_empty() {
        present.iter().map(|(id, _)| *id).collect()
    } else {
        opts.packs
            .iter()
            .map(|p| {
                let m: Vec<Id> = present
                    .iter()
                    .map(|(id, _)| *id)
                    .filter(|id| id.to_hex().starts_with(p.as_str()))
                    .collect();
                match m.as_slice() {
                    [one] => Ok(*one),
                    [] => Err(Error::Invalid(format!("no pack named {p} in the repository"))),
                    _ => Err(Error::Invalid(format!("pack prefix {p} is ambiguous"))),
                }
            })
            .collect::<Result<_>>()?
    };

    let mut listed: std::collections::HashMap<Id, IndexPack> =
        index.to_packs(&HashSet::new()).into_iter().map(|p| (p.id, p)).collect();
    let mut report = RepairPacksReport::default();
    let mut sink = PackSink::new(repo);
    let mut damaged: HashSet<Id> = HashSet::new();
    let mut lost: Vec<Id> = Vec::new();
    for pack in wanted {
        if opts.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        report.packs_read += 1;
        let name = pack.to_hex();
        let data = repo.backend.get(FileType::Pack, &name)?;
        let intact = Id::of_object(&data) == pack;
        // What the pack holds: the index's word for indexed packs (the header may be what is
        // damaged), else the header's.
        let (salt, blobs): ([u8; 16], Vec<PackBlob>) = match listed.remove(&pack) {
            Some(p) => (p.salt, p.blobs),
            None => match crate::pack::read_header(&repo.master, &name, &data) {
                Ok(h) => h,
                Err(e) => {
                    // Nothing in it can be located: every blob is lost unless copied elsewhere.
                    tracing::warn!(pack = %name, error = %e, "pack header unreadable and pack not indexed");
                    damaged.insert(pack);
                    continue;
                }
            },
        };
        let dicts = crate::pack::dictionaries_in(&repo.master, &pack, &salt, &blobs, &data);
        let mut readable = Vec::new();
        let mut bad = Vec::new();
        // Dictionaries are not salvaged: the new packs store blobs compressed without them, and
        // a lost one shows as the blobs it served that cannot be opened.
        for b in blobs.iter().filter(|b| b.blob_type != BlobType::Dictionary) {
            let sealed =
                usize::try_from(b.offset).ok().and_then(|o| data.get(o..o + b.length as usize));
            match sealed.map(|s| crate::pack::open_blob(&repo.master, &pack, &salt, b, s, &dicts)) {
                Some(Ok(plain)) => readable.push((b, plain)),
                _ => bad.push(b.id),
            }
        }
        if intact && bad.is_empty() && opts.packs.is_empty() {
            continue;
        }
        damaged.insert(pack);
        for (b, plain) in readable {
            if !opts.dry_run {
                // A patch's payload stays a patch of its base (format §9.2).
                sink.add_plain(b.id, b.blob_type, &plain, b.base)?;
            }
            report.salvaged_blobs += 1;
        }
        lost.extend(bad);
    }
    let new_packs = sink.finish()?;
    report.damaged_packs = sorted_hex(damaged.iter());
    report.new_packs = new_packs.iter().map(|p| p.id.to_hex()).collect();
    // A blob lost here but stored intact in another pack is not lost.
    let elsewhere = |id: &Id| index.packs_of(id).any(|p| !damaged.contains(&p));
    let mut gone: HashSet<Id> = lost.iter().filter(|id| !elsewhere(id)).copied().collect();
    // A patch of a lost base is lost too, wherever it is stored (format §9.2).
    gone.extend(index.patched_only_on(&gone));
    report.lost_blobs = sorted_hex(gone.iter());
    if opts.dry_run || damaged.is_empty() {
        return Ok(report);
    }
    // The new packs are stored; new index files replace the others, without the damaged packs.
    let old_files = repo.index_files();
    let mut packs = index.to_packs(&damaged);
    packs.extend(new_packs);
    repo.save_index_packs(packs, old_files.clone())?;
    for f in &old_files {
        repo.backend.delete(FileType::Index, &f.to_hex())?;
    }
    for pack in &damaged {
        repo.backend.delete(FileType::Pack, &pack.to_hex())?;
    }
    repo.reload_index()?;
    Ok(report)
}

fn sorted_hex<'a>(ids: impl Iterator<Item = &'a Id>) -> Vec<String> {
    let mut v: Vec<String> = ids.map(Id::to_hex).collect();
    v.sort();
    v.dedup();
    v
}
