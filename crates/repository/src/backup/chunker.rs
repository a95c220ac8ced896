//! Cutting file content into chunks (FastCDC with the repository's parameters and seed) and
//! queueing the chunks the repository does not have yet.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use super::pipeline::{BlobJob, BlobTx, Shared, send_blobs};
use crate::error::{Error, Result};
use crate::pack::BlobType;
use crate::prints::{BLOCK, Entry, Print};
use crate::progress::Counters;
use crate::{Id, Repository};

/// Hashes one chunk and adds it to `batch` when new; returns its id. With `prints` (a file that
/// gets a prints blob, format §9.2) a new chunk that differs from the parent's chunk at the same
/// place in few blocks is queued as a patch of that chunk's root.
///
/// A borrowed chunk is copied only when it is new: deduplicated data is hashed in place.
pub(super) fn save_chunk(
    repo: &Repository,
    shared: &Shared,
    batch: &mut Vec<BlobJob>,
    data: std::borrow::Cow<'_, [u8]>,
    prints: Option<&mut FilePrints>,
) -> Id {
    let len = data.len() as u64;
    Counters::add(&shared.counters.bytes_read, len);
    Counters::add(&shared.counters.bytes_done, len);
    let Some(fp) = prints else {
        let id = repo.master.blob_id(&data);
        if shared.need(&id) {
            Counters::add(&shared.data_blobs, 1);
            Counters::add(&shared.data_added, len);
            batch.push(BlobJob::data(id, data.into_owned()));
        }
        return id;
    };
    let id = repo.master.blob_id_and_prints(&data, &mut fp.scratch);
    let at = fp.offset;
    fp.offset += len;
    let length = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let parent = fp.counterpart(at, length);
    let entry = if shared.need(&id) {
        Counters::add(&shared.data_blobs, 1);
        match parent.and_then(|p| patchable(shared, p, &fp.scratch, &id)) {
            Some((root, dirty)) => {
                let ranges = crate::patch::ranges_of(dirty.iter().copied(), BLOCK, data.len());
                let payload = crate::patch::encode(&data, &ranges);
                Counters::add(&shared.data_added, payload.len() as u64);
                batch.push(BlobJob {
                    id,
                    blob_type: BlobType::Data,
                    data: payload,
                    dict: None,
                    base: Some(root),
                });
                Entry::patched(root, length, &dirty, fp.scratch.clone())
            }
            None => {
                Counters::add(&shared.data_added, len);
                batch.push(BlobJob::data(id, data.into_owned()));
                Entry::whole(id, length, fp.scratch.clone())
            }
        }
    } else {
        // Stored already. The parent's chunk itself (same prints): keep what it says of its
        // root. Anything else is described as its own root, which a later patch uses only if it
        // is stored whole.
        match parent {
            Some(p) if p.prints == fp.scratch => p.clone(),
            _ => Entry::whole(id, length, fp.scratch.clone()),
        }
    };
    fp.out.push(entry);
    id
}

/// The root and the blocks to carry when a new chunk with `prints` is better stored as a patch
/// of the root of `parent` (the parent's chunk at the same place and of the same length): the
/// blocks that differ from the root are those whose prints differ from the parent's plus those
/// the parent already differed in; at most a quarter of them, and the root stored whole.
fn patchable(
    shared: &Shared,
    parent: &Entry,
    prints: &[Print],
    id: &Id,
) -> Option<(Id, Vec<usize>)> {
    if parent.prints.len() != prints.len() || parent.root == *id {
        return None;
    }
    let dirty: Vec<usize> =
        (0..prints.len()).filter(|&i| parent.prints[i] != prints[i] || parent.differs(i)).collect();
    // No block differing would make the patch its base: a new chunk always differs somewhere,
    // so an empty set means the prints cannot be trusted here.
    (!dirty.is_empty() && dirty.len() * 4 <= prints.len() && shared.stored_whole(&parent.root))
        .then_some((parent.root, dirty))
}

/// The parent snapshot's prints blob of a file, and what it must describe: the parent's size and
/// number of chunks.
#[derive(Debug, Clone, Copy)]
pub(super) struct ParentPrints {
    pub(super) id: Id,
    pub(super) size: u64,
    pub(super) chunks: usize,
}

/// The prints of one file being read (format §9.2): the parent snapshot's, to patch against, and
/// this version's, for the next backup.
#[derive(Default)]
pub(super) struct FilePrints {
    parent: Vec<Entry>,
    /// The parent's entries by the offset of their blob in the file.
    parent_at: HashMap<u64, usize>,
    /// The parent's entries by the print of their first and of their second block: data
    /// inserted or removed earlier in the file moves every later chunk, and a chunk is found
    /// again by its content.
    parent_by_print: [HashMap<Print, usize>; 2],
    out: Vec<Entry>,
    offset: u64,
    scratch: Vec<Print>,
}

impl FilePrints {
    /// The parent's chunk that the chunk at `at` of `length` bytes (its prints in `scratch`)
    /// replaces: the one at the same offset, else one whose first or second block it still has;
    /// of the same length and with prints either way.
    fn counterpart(&self, at: u64, length: u32) -> Option<&Entry> {
        let usable = |i: usize| {
            let e = &self.parent[i];
            (e.length == length && !e.prints.is_empty()).then_some(e)
        };
        self.parent_at.get(&at).and_then(|&i| usable(i)).or_else(|| {
            (0..2).find_map(|b| {
                let print = self.scratch.get(b)?;
                usable(*self.parent_by_print[b].get(print)?)
            })
        })
    }

    /// Prints for a file that gets a prints blob, with the parent's (`parent`) when they can be
    /// read and describe that file; they are a hint, so an unreadable or inconsistent one only
    /// means no patches.
    pub(super) fn new(repo: &Repository, parent: Option<ParentPrints>) -> Self {
        let mut fp = Self::default();
        let Some(ParentPrints { id, size, chunks }) = parent else { return fp };
        let entries = match repo.load_blob(&id) {
            Ok(data) => crate::prints::decode(&data),
            Err(e) => {
                tracing::debug!(blob = %id, error = %e, "parent prints unreadable: no patches");
                None
            }
        };
        let Some(entries) = entries else { return fp };
        if entries.len() != chunks
            || entries.iter().map(|e| u64::from(e.length)).sum::<u64>() != size
        {
            return fp;
        }
        let mut offset = 0u64;
        for (i, e) in entries.iter().enumerate() {
            fp.parent_at.insert(offset, i);
            offset += u64::from(e.length);
            for (b, map) in fp.parent_by_print.iter_mut().enumerate() {
                if let Some(p) = e.prints.get(b) {
                    map.entry(*p).or_insert(i);
                }
            }
        }
        fp.parent = entries;
        fp
    }

    /// Queues this version's prints blob; returns its id.
    ///
    /// # Errors
    /// The pipeline closed.
    pub(super) fn finish(self, repo: &Repository, shared: &Shared, tx: &BlobTx) -> Result<Id> {
        super::pipeline::queue_tree_blob(repo, shared, tx, crate::prints::encode(&self.out))
    }
}

/// Whether a file of `size` bytes gets a prints blob in this repository (format §9.2).
pub(super) fn wants_prints(repo: &Repository, size: u64) -> bool {
    repo.config().version >= crate::repository::PATCH_VERSION
        && (crate::prints::MIN_FILE..=crate::prints::MAX_FILE).contains(&size)
}

/// Chunks a stream and queues its new blobs; returns the content ids and the byte count.
///
/// Reads into a window of twice the maximum chunk size and cuts in memory with the same
/// parameters as [`cut_points`]: a cut is only taken while at least `max_size` bytes follow its
/// start (or the stream has ended), which is exactly what FastCDC's own streaming chunker sees,
/// so the chunks are the same. Unlike that chunker, which shifts its whole `max_size` buffer
/// after every chunk (about 8 bytes moved per byte at the default sizes), this moves at most one
/// `max_size` tail per window.
pub(super) fn save_stream(
    repo: &Repository,
    shared: &Shared,
    tx: &BlobTx,
    mut reader: impl Read,
    path: &Path,
    buf: &mut Vec<u8>,
    mut prints: Option<&mut FilePrints>,
) -> Result<(Vec<Id>, u64)> {
    let p = repo.config().chunker;
    let max = p.max_size as usize;
    // The caller keeps the window between files: one allocation per worker, not per file.
    buf.resize(2 * max, 0);
    let mut len = 0usize;
    let mut eof = false;
    let mut ids = Vec::new();
    let mut total = 0u64;
    loop {
        shared.check()?;
        while !eof && len < buf.len() {
            match reader.read(&mut buf[len..]) {
                Ok(0) => eof = true,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read", path, e)),
            }
        }
        if len == 0 {
            break;
        }
        let mut cuts = Vec::new();
        for c in fastcdc::v2020::FastCDC::with_level_and_seed(
            &buf[..len],
            p.min_size as usize,
            p.avg_size as usize,
            max,
            p.level(),
            repo.master.chunker_seed(),
        ) {
            if !eof && len - c.offset < max {
                break;
            }
            cuts.push((c.offset, c.length));
        }
        let mut consumed = 0;
        let mut batch = Vec::new();
        for (offset, length) in cuts {
            shared.check()?;
            total += length as u64;
            let chunk = std::borrow::Cow::Borrowed(&buf[offset..offset + length]);
            ids.push(save_chunk(repo, shared, &mut batch, chunk, prints.as_deref_mut()));
            // Large chunks go one by one: the hand-off is cheap next to their size, and the
            // compressors start sooner.
            send_blobs(tx, &mut batch)?;
            consumed = offset + length;
        }
        buf.copy_within(consumed..len, 0);
        len -= consumed;
        if eof && len == 0 {
            break;
        }
    }
    Ok((ids, total))
}

/// Cut points of an in-memory buffer; the same as the streaming chunker finds.
fn cut_points(repo: &Repository, data: &[u8]) -> Vec<(usize, usize)> {
    let p = repo.config().chunker;
    if data.len() <= p.min_size as usize {
        return if data.is_empty() { Vec::new() } else { vec![(0, data.len())] };
    }
    fastcdc::v2020::FastCDC::with_level_and_seed(
        data,
        p.min_size as usize,
        p.avg_size as usize,
        p.max_size as usize,
        p.level(),
        repo.master.chunker_seed(),
    )
    .map(|c| (c.offset, c.length))
    .collect()
}

/// Chunks a file no larger than one maximum chunk: read whole, cut in memory. Same cut points as
/// [`save_stream`], without the streaming chunker's per-file `max_size` buffer, which dominates
/// the cost of many small files.
pub(super) fn save_small_file(
    repo: &Repository,
    shared: &Shared,
    batch: &mut Vec<BlobJob>,
    mut file: std::fs::File,
    size: u64,
    path: &Path,
    mut prints: Option<&mut FilePrints>,
) -> Result<(Vec<Id>, u64)> {
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.read_to_end(&mut data).map_err(|e| Error::io("read", path, e))?;
    let total = data.len() as u64;
    let cuts = cut_points(repo, &data);
    let mut ids = Vec::with_capacity(cuts.len());
    if cuts.len() == 1 {
        ids.push(save_chunk(repo, shared, batch, std::borrow::Cow::Owned(data), prints));
    } else {
        for (offset, length) in cuts {
            shared.check()?;
            let chunk = std::borrow::Cow::Borrowed(&data[offset..offset + length]);
            ids.push(save_chunk(repo, shared, batch, chunk, prints.as_deref_mut()));
        }
    }
    Ok((ids, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::tests::small_chunk_repo;

    #[test]
    fn in_memory_cuts_match_the_streaming_chunker() {
        let repo = small_chunk_repo();
        let mut x = 88172645463325252u64;
        let data: Vec<u8> = (0..60_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let p = repo.config().chunker;
        let streamed: Vec<(usize, usize)> = fastcdc::v2020::StreamCDC::with_level_and_seed(
            data.as_slice(),
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
            p.level(),
            repo.master.chunker_seed(),
        )
        .map(|c| {
            let c = c.unwrap();
            (usize::try_from(c.offset).unwrap(), c.length)
        })
        .collect();
        assert!(streamed.len() > 2);
        assert_eq!(cut_points(&repo, &data), streamed);
    }
}
