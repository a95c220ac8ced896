//! Writing blobs into new packs outside a backup: what prune's repacking and the repair commands
//! share. Blobs of each type go to their own pack (format §7), each pack is stored once full, and
//! [`PackSink::finish`] returns the index entries of every pack stored, for the caller to index.

use crate::Repository;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::IndexPack;
use crate::pack::{BlobType, PackWriter};

/// New packs being filled.
pub(crate) struct PackSink<'a> {
    repo: &'a Repository,
    writers: [Option<PackWriter>; 2],
    stored: Vec<IndexPack>,
}

impl<'a> PackSink<'a> {
    pub(crate) fn new(repo: &'a Repository) -> Self {
        Self { repo, writers: [None, None], stored: Vec::new() }
    }

    /// Adds a verified plaintext blob (for a patch, format §9.2, its payload and `base`),
    /// compressed by the repository's rule (kept compressed only when that saves at least 3 %,
    /// format §6).
    pub(crate) fn add_plain(
        &mut self,
        id: Id,
        blob_type: BlobType,
        plain: &[u8],
        base: Option<Id>,
    ) -> Result<()> {
        let level = self.repo.config().compression.level;
        if level > 0 {
            let z = zstd::bulk::compress(plain, level)
                .map_err(|e| Error::io("compress", "<new pack>", e))?;
            if z.len() * 100 <= plain.len() * 97 {
                let ulen = u32::try_from(plain.len())
                    .map_err(|_| Error::Invalid("blob larger than 4 GiB".into()))?;
                return self.add(id, blob_type, &z, ulen, base);
            }
        }
        self.add(id, blob_type, plain, 0, base)
    }

    /// Adds a blob as it will be stored: `payload` compressed when `ulen` > 0; `base` for a
    /// patch.
    pub(crate) fn add(
        &mut self,
        id: Id,
        blob_type: BlobType,
        payload: &[u8],
        ulen: u32,
        base: Option<Id>,
    ) -> Result<()> {
        let pack_size = self.repo.config().pack_size as usize;
        let slot = &mut self.writers[usize::from(blob_type == BlobType::Tree)];
        if slot.as_ref().is_some_and(|w| {
            !w.is_empty()
                && (w.size() + payload.len() + crate::crypto::SEAL_OVERHEAD > pack_size
                    || w.is_full(pack_size))
        }) && let Some(w) = slot.take()
        {
            self.stored.push(w.finish()?.store(self.repo.backend.as_ref())?);
        }
        let w = match slot {
            Some(w) => w,
            None => slot.insert(crate::backup::new_pack(
                &self.repo.master,
                pack_size,
                self.repo.backend.staging_dir().as_deref(),
            )?),
        };
        w.add_with_base(id, blob_type, payload, ulen, base)?;
        Ok(())
    }

    /// Stores the packs still open; returns the index entries of every pack stored.
    pub(crate) fn finish(mut self) -> Result<Vec<IndexPack>> {
        for w in self.writers.iter_mut().filter_map(Option::take) {
            if !w.is_empty() {
                self.stored.push(w.finish()?.store(self.repo.backend.as_ref())?);
            }
        }
        Ok(std::mem::take(&mut self.stored))
    }
}
