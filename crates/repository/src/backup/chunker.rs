//! Cutting file content into chunks (FastCDC with the repository's parameters and seed) and
//! queueing the chunks the repository does not have yet.

use std::io::Read;
use std::path::Path;

use super::pipeline::{BlobJob, BlobTx, Shared, send_blobs};
use crate::error::{Error, Result};
use crate::pack::BlobType;
use crate::progress::Counters;
use crate::{Id, Repository};

/// Hashes one chunk and adds it to `batch` when new; returns its id.
///
/// A borrowed chunk is copied only when it is new: deduplicated data is hashed in place.
pub(super) fn save_chunk(
    repo: &Repository,
    shared: &Shared,
    batch: &mut Vec<BlobJob>,
    data: std::borrow::Cow<'_, [u8]>,
) -> Id {
    let len = data.len() as u64;
    Counters::add(&shared.counters.bytes_read, len);
    Counters::add(&shared.counters.bytes_done, len);
    let id = repo.master.blob_id(&data);
    if shared.need(&id) {
        Counters::add(&shared.data_blobs, 1);
        Counters::add(&shared.data_added, len);
        batch.push(BlobJob { id, blob_type: BlobType::Data, data: data.into_owned(), dict: None });
    }
    id
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
            ids.push(save_chunk(repo, shared, &mut batch, chunk));
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
) -> Result<(Vec<Id>, u64)> {
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.read_to_end(&mut data).map_err(|e| Error::io("read", path, e))?;
    let total = data.len() as u64;
    let cuts = cut_points(repo, &data);
    let mut ids = Vec::with_capacity(cuts.len());
    if cuts.len() == 1 {
        ids.push(save_chunk(repo, shared, batch, std::borrow::Cow::Owned(data)));
    } else {
        for (offset, length) in cuts {
            shared.check()?;
            let chunk = std::borrow::Cow::Borrowed(&data[offset..offset + length]);
            ids.push(save_chunk(repo, shared, batch, chunk));
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
