//! Compression dictionaries (format §7.2): zstd dictionaries trained on a file's own pieces,
//! stored as blobs inside every pack whose blobs were compressed with them.
//!
//! Small blobs compress badly alone: each zstd frame starts knowing nothing, so the layout that
//! every PostgreSQL page repeats (page header, line pointers, tuple headers) is paid for in
//! every 16 KiB piece. A dictionary trained on a few hundred pieces of the same file carries that
//! layout, and pieces compressed with it came out about 30 % smaller (tables and indexes alike).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use zstd::dict::{DecoderDictionary, EncoderDictionary};
use zstd::zstd_safe;

use crate::Id;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};

/// The largest dictionary trained. 16 KiB did as well as 32 or 64 KiB on PostgreSQL pages and
/// costs the least in every pack that carries it.
pub const MAX_SIZE: usize = 16 * 1024;

/// Pieces of one file held back to train its dictionary on. Training takes the backup's reading
/// thread 50–100 ms on 128 pieces of 16 KiB (twice that on 256), and 128 compressed a
/// PostgreSQL base backup as well as 256.
pub const TRAIN_PIECES: usize = 128;

/// Fewer new pieces than this in a file: no dictionary (too few samples to learn from, and too
/// few pieces to repay carrying one).
pub const MIN_PIECES: usize = 64;

/// A trained dictionary, ready to compress with.
pub struct Dictionary {
    /// Its blob id: the keyed hash of its bytes.
    pub id: Id,
    /// The dictionary id zstd writes into every frame compressed with it.
    pub zstd_id: u32,
    /// The dictionary itself, stored as its blob.
    pub bytes: Vec<u8>,
    encoder: EncoderDictionary<'static>,
}

impl std::fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dictionary").field("id", &self.id).field("zstd_id", &self.zstd_id).finish()
    }
}

impl Dictionary {
    /// Trains a dictionary on `samples` for compression at `level`, and keeps it only when it
    /// makes the samples themselves at least 5 % smaller than compressing them alone: a
    /// dictionary learnt from data unlike the rest can make frames larger, not smaller.
    pub fn train(master: &MasterKey, samples: &[&[u8]], level: i32) -> Option<Arc<Dictionary>> {
        if samples.len() < MIN_PIECES || level <= 0 {
            return None;
        }
        let bytes = zstd::dict::from_samples(samples, MAX_SIZE).ok()?;
        let zstd_id = zstd_safe::get_dict_id_from_dict(&bytes)?.get();
        let encoder = EncoderDictionary::copy(&bytes, level);
        let dict = Dictionary { id: master.blob_id(&bytes), zstd_id, bytes, encoder };
        let mut plain = zstd::bulk::Compressor::new(level).ok()?;
        let mut with = Compressor::default();
        let (mut alone, mut using) = (0usize, 0usize);
        for s in samples {
            alone += plain.compress(s).ok()?.len().min(s.len());
            using += with.compress(s, &dict).ok()?.len().min(s.len());
        }
        (using * 100 <= alone * 95).then(|| Arc::new(dict))
    }
}

/// A compression context that compresses with one dictionary after another (one per thread:
/// making a context per blob costs more than compressing a small one).
#[derive(Default)]
pub struct Compressor {
    cctx: Option<zstd_safe::CCtx<'static>>,
}

impl Compressor {
    /// `data` compressed with `dict`, as one zstd frame naming the dictionary's id.
    ///
    /// # Errors
    /// zstd's, as I/O errors.
    pub fn compress(&mut self, data: &[u8], dict: &Dictionary) -> std::io::Result<Vec<u8>> {
        let cctx = match &mut self.cctx {
            Some(c) => c,
            None => self.cctx.insert(
                zstd_safe::CCtx::try_create()
                    .ok_or_else(|| std::io::Error::other("zstd context allocation failed"))?,
            ),
        };
        let mut out = Vec::with_capacity(zstd_safe::compress_bound(data.len()));
        cctx.compress_using_cdict(&mut out, data, dict.encoder.as_cdict())
            .map_err(|code| std::io::Error::other(zstd_safe::get_error_name(code)))?;
        Ok(out)
    }
}

/// The dictionary id a compressed payload's zstd frame names; `None` for a frame compressed
/// without one (every version-1 blob).
pub fn named_by(payload: &[u8]) -> Option<u32> {
    zstd_safe::get_dict_id_from_frame(payload).map(std::num::NonZeroU32::get)
}

/// A dictionary as readers use it.
pub type Decoder = Arc<DecoderDictionary<'static>>;

/// Finds, for a blob being opened, the dictionary its frame names among its pack's.
pub trait Dictionaries {
    /// The dictionary with zstd id `zstd_id` in the blob's pack.
    ///
    /// # Errors
    /// The pack does not hold it, or it cannot be read.
    fn get(&self, zstd_id: u32) -> Result<Decoder>;
}

/// For blobs that cannot name a dictionary: dictionaries themselves, and packs written before
/// dictionaries existed.
pub struct NoDictionaries;

impl Dictionaries for NoDictionaries {
    fn get(&self, zstd_id: u32) -> Result<Decoder> {
        Err(Error::Invalid(format!("no dictionary {zstd_id} is available here")))
    }
}

/// Makes a reader's dictionary from its stored bytes; with the zstd id frames name it by.
///
/// # Errors
/// The bytes are not a zstd dictionary.
pub fn decoder(bytes: &[u8]) -> Result<(u32, Decoder)> {
    let zstd_id = zstd_safe::get_dict_id_from_dict(bytes)
        .ok_or_else(|| Error::Invalid("a dictionary blob is not a zstd dictionary".into()))?
        .get();
    let d = DecoderDictionary::try_copy(bytes)
        .map_err(|e| Error::Invalid(format!("a dictionary blob does not load: {e}")))?;
    Ok((zstd_id, Arc::new(d)))
}

/// The dictionaries of packs read whole (check, repair): from the pack's own bytes.
pub struct InPack {
    by_id: HashMap<u32, Decoder>,
}

impl InPack {
    /// The dictionaries among `plain`, the opened dictionary blobs of one pack; those that do not
    /// load are left out (a blob naming one then fails to open, and is reported as damaged).
    pub fn new(plain: impl IntoIterator<Item = Vec<u8>>) -> Self {
        Self { by_id: plain.into_iter().filter_map(|b| decoder(&b).ok()).collect() }
    }
}

impl Dictionaries for InPack {
    fn get(&self, zstd_id: u32) -> Result<Decoder> {
        self.by_id
            .get(&zstd_id)
            .cloned()
            .ok_or_else(|| Error::Invalid(format!("its pack holds no dictionary {zstd_id}")))
    }
}

/// Dictionaries already loaded, by pack and zstd id, shared by a repository's readers. Bounded:
/// a restore reads pack after pack, and an old pack's dictionaries are rarely needed again.
#[derive(Default)]
pub struct Cache {
    loaded: Mutex<HashMap<(Id, u32), Decoder>>,
}

/// Dictionaries kept by a [`Cache`] (a 16 KiB dictionary takes about 100 KiB prepared).
const CACHED: usize = 256;

impl Cache {
    /// The dictionary `zstd_id` of `pack`, loading the pack's dictionaries with `load` (their
    /// opened bytes) when it is not cached.
    ///
    /// # Errors
    /// `load`'s; the pack holds no such dictionary.
    pub fn get(
        &self,
        pack: &Id,
        zstd_id: u32,
        load: impl FnOnce() -> Result<Vec<Vec<u8>>>,
    ) -> Result<Decoder> {
        if let Some(d) = self.lock().get(&(*pack, zstd_id)) {
            return Ok(d.clone());
        }
        let found: Vec<(u32, Decoder)> = load()?.iter().filter_map(|b| decoder(b).ok()).collect();
        let mut cache = self.lock();
        if cache.len() + found.len() > CACHED {
            cache.clear();
        }
        for (zid, d) in found {
            cache.insert((*pack, zid), d);
        }
        cache
            .get(&(*pack, zstd_id))
            .cloned()
            .ok_or_else(|| Error::Invalid(format!("its pack holds no dictionary {zstd_id}")))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Id, u32), Decoder>> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("loaded", &self.lock().len()).finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Pieces of two 8 KiB pages that share a layout (rows of one shape, written by one
    /// transaction) and differ in their keys and a few values, as a loaded table's do.
    pub(crate) fn pieces(n: usize) -> Vec<Vec<u8>> {
        let mut x = 1u32;
        (0..n)
            .map(|i| {
                let mut p = vec![b' '; 16384];
                for (r, row) in p.chunks_mut(128).enumerate() {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    row[..8].copy_from_slice(&[0x3c, 0x02, 0, 0, 2, 0, 24, 9]);
                    row[8..12].copy_from_slice(&u32::try_from(i * 128 + r).unwrap().to_le_bytes());
                    row[12] = u8::try_from(x >> 29).unwrap();
                }
                p
            })
            .collect()
    }

    #[test]
    fn a_dictionary_trained_on_pieces_compresses_them_smaller_and_round_trips() {
        let master = MasterKey::generate();
        let samples = pieces(256);
        let refs: Vec<&[u8]> = samples.iter().map(Vec::as_slice).collect();
        let dict = Dictionary::train(&master, &refs, 3).expect("trained");
        assert_eq!(dict.id, master.blob_id(&dict.bytes));
        assert!(dict.bytes.len() <= MAX_SIZE);
        let z = Compressor::default().compress(&samples[7], &dict).unwrap();
        assert_eq!(named_by(&z), Some(dict.zstd_id));
        assert_eq!(named_by(&zstd::bulk::compress(&samples[7], 3).unwrap()), None);
        let (zid, decoder) = decoder(&dict.bytes).unwrap();
        assert_eq!(zid, dict.zstd_id);
        let mut d = zstd::zstd_safe::DCtx::create();
        let mut out = Vec::with_capacity(16384);
        d.decompress_using_ddict(&mut out, &z, decoder.as_ddict()).unwrap();
        assert_eq!(out, samples[7]);
    }

    #[test]
    fn too_few_samples_train_nothing() {
        let samples = pieces(MIN_PIECES - 1);
        let refs: Vec<&[u8]> = samples.iter().map(Vec::as_slice).collect();
        assert!(Dictionary::train(&MasterKey::generate(), &refs, 3).is_none());
    }
}
