//! Packs (format §7): sealed blobs followed by a sealed header describing them.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use std::path::Path;
use std::sync::Arc;

use crate::Id;
use crate::backend::{Backend, FileType};
use crate::crypto::{MasterKey, NONCE_LEN, SealKey};
use crate::dictionary::{Dictionaries, Dictionary};
use crate::error::{Error, Result};
use crate::index::IndexPack;
use crate::staging::{StagedFile, StagedPath};

const MAGIC: &[u8; 8] = b"HFPACK\x01\x00";
const HEADER_AAD: &[u8] = b"holdfast v1 pack header";
/// Bytes before the first blob: magic and salt.
pub const PREFIX_LEN: u64 = 24;
const ENTRY_LEN: usize = 45;

/// Blobs in one pack at most. A pack is listed whole in one index file, and a reader holds an
/// index file whole, so packs of tiny blobs (a 32 MiB pack holds 300,000 files of a few bytes)
/// are closed early to keep index files small (format §8).
pub const MAX_PACK_BLOBS: usize = 16_384;

/// The kinds of blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    /// File content.
    Data,
    /// A serialized tree.
    Tree,
    /// A compression dictionary for other blobs of its pack (format §7.2).
    Dictionary,
}

/// Where one blob sits in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackBlob {
    /// Blob id.
    pub id: Id,
    /// Data or tree.
    #[serde(rename = "type")]
    pub blob_type: BlobType,
    /// Offset of the sealed blob in the pack.
    pub offset: u64,
    /// Length of the sealed blob.
    pub length: u32,
    /// Plaintext length when stored compressed, 0 when stored as-is (for a patch: of its
    /// payload).
    pub uncompressed_length: u32,
    /// For a data blob stored as a patch (format §9.2), the blob it patches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Id>,
}

/// Builds one pack, in memory or in a staged file (format §7.1).
pub struct PackWriter {
    salt: [u8; 16],
    key: SealKey,
    body: Body,
    size: usize,
    blobs: Vec<PackBlob>,
    /// Dictionaries some blob was compressed with, written into the pack as it is finished.
    dicts: Vec<Arc<Dictionary>>,
}

enum Body {
    Memory(Vec<u8>),
    /// The file, the hash of what was written so far, and a buffer each blob is sealed into.
    Staged {
        file: StagedFile,
        hasher: Box<blake3::Hasher>,
        sealed: Vec<u8>,
    },
}

/// Where a finished pack's bytes are.
#[derive(Debug)]
pub enum PackData {
    /// In memory.
    Memory(Bytes),
    /// In a durable staged file, removed when this is dropped.
    Staged(StagedPath),
}

/// A finished pack, ready to store.
#[derive(Debug)]
pub struct FinishedPack {
    /// Its name: BLAKE3 of the bytes.
    pub id: Id,
    /// Its salt (recorded in the index so a blob can be opened with one range read).
    pub salt: [u8; 16],
    /// Its size in bytes.
    pub size: u64,
    /// The file.
    pub data: PackData,
    /// What it holds.
    pub blobs: Vec<PackBlob>,
}

impl FinishedPack {
    /// Stores the pack under its name and returns its index entry. A pack of that name already
    /// stored is the same pack (names are content hashes): a retried or duplicate upload.
    ///
    /// # Errors
    /// The backend's.
    pub fn store(self, backend: &dyn Backend) -> Result<IndexPack> {
        let name = self.id.to_hex();
        let stored = match &self.data {
            PackData::Memory(bytes) => backend.create(FileType::Pack, &name, bytes.clone()),
            PackData::Staged(path) => backend.create_from_file(FileType::Pack, &name, path.path()),
        };
        match stored {
            Ok(()) => {}
            Err(e) if e.is_already_exists() => {}
            Err(e) => return Err(e.into()),
        }
        Ok(IndexPack { id: self.id, salt: self.salt, size: self.size, blobs: self.blobs })
    }
}

fn prefix(salt: &[u8; 16]) -> [u8; PREFIX_LEN as usize] {
    let mut p = [0u8; PREFIX_LEN as usize];
    p[..8].copy_from_slice(MAGIC);
    p[8..].copy_from_slice(salt);
    p
}

impl PackWriter {
    /// An empty pack built in memory, with a fresh salt.
    pub fn new(master: &MasterKey, capacity: usize) -> Self {
        let salt = crate::crypto::random::<16>();
        // Room for the header (49 bytes a blob, plus its seal) past the target size, so finishing
        // a pack of many small blobs does not reallocate (and briefly double) a pack-sized
        // buffer; untouched capacity costs no memory.
        let mut buf = Vec::with_capacity(capacity + capacity / 32 + 4096);
        buf.extend_from_slice(&prefix(&salt));
        Self {
            salt,
            key: master.pack_key(&salt),
            body: Body::Memory(buf),
            size: PREFIX_LEN as usize,
            blobs: Vec::new(),
            dicts: Vec::new(),
        }
    }

    /// An empty pack written straight into a new file in `dir`, with a fresh salt: the memory it
    /// needs does not depend on the pack size.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn staged(master: &MasterKey, dir: &Path) -> Result<Self> {
        let salt = crate::crypto::random::<16>();
        let mut file =
            StagedFile::create(dir).map_err(|e| Error::io("create staged pack in", dir, e))?;
        let head = prefix(&salt);
        file.write(&head).map_err(|e| Error::io("write staged pack in", dir, e))?;
        let mut hasher = Box::new(blake3::Hasher::new());
        hasher.update(&head);
        Ok(Self {
            salt,
            key: master.pack_key(&salt),
            body: Body::Staged { file, hasher, sealed: Vec::new() },
            size: PREFIX_LEN as usize,
            blobs: Vec::new(),
            dicts: Vec::new(),
        })
    }

    /// Seals and appends a blob whose payload is already compressed (or not, `ulen == 0`);
    /// returns its stored length.
    ///
    /// # Errors
    /// Writing a staged pack failed.
    pub fn add(&mut self, id: Id, blob_type: BlobType, payload: &[u8], ulen: u32) -> Result<u32> {
        self.add_with_base(id, blob_type, payload, ulen, None)
    }

    /// [`PackWriter::add`], for a data blob stored as a patch (format §9.2) with its `base`.
    ///
    /// # Errors
    /// Writing a staged pack failed.
    pub fn add_with_base(
        &mut self,
        id: Id,
        blob_type: BlobType,
        payload: &[u8],
        ulen: u32,
        base: Option<Id>,
    ) -> Result<u32> {
        let offset = self.size as u64;
        let sealed = match &mut self.body {
            Body::Memory(buf) => self.key.seal_into(&id.0, payload, buf),
            Body::Staged { file, hasher, sealed } => {
                sealed.clear();
                let n = self.key.seal_into(&id.0, payload, sealed);
                hasher.update(sealed);
                file.write(sealed).map_err(|e| Error::io("write staged pack", file.path(), e))?;
                n
            }
        };
        self.size += sealed;
        let length = u32::try_from(sealed).unwrap_or(u32::MAX);
        self.blobs.push(PackBlob {
            id,
            blob_type,
            offset,
            length,
            uncompressed_length: ulen,
            base,
        });
        Ok(length)
    }

    /// Bytes so far, the dictionaries it will carry included.
    pub fn size(&self) -> usize {
        self.size
            + self.dicts.iter().map(|d| d.bytes.len() + crate::crypto::SEAL_OVERHEAD).sum::<usize>()
    }

    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Whether the pack is to be closed: it reached `pack_size`, or [`MAX_PACK_BLOBS`] blobs
    /// (its dictionaries included).
    pub fn is_full(&self, pack_size: usize) -> bool {
        self.size() >= pack_size || self.blobs.len() + self.dicts.len() >= MAX_PACK_BLOBS
    }

    /// The bytes `dict` would add to the pack: none when it carries it already.
    pub fn dictionary_cost(&self, dict: &Dictionary) -> usize {
        if self.dicts.iter().any(|d| d.id == dict.id) {
            0
        } else {
            dict.bytes.len() + crate::crypto::SEAL_OVERHEAD
        }
    }

    /// Makes the pack carry `dict`, for a blob compressed with it that is about to be added.
    /// False when the pack cannot: it holds another dictionary that zstd knows by the same id
    /// (frames name dictionaries by that id alone), or no entry is left for it. The caller then
    /// adds the blob to a new pack.
    pub fn carry(&mut self, dict: &Arc<Dictionary>) -> bool {
        if let Some(d) = self.dicts.iter().find(|d| d.zstd_id == dict.zstd_id) {
            return d.id == dict.id;
        }
        if self.blobs.len() + self.dicts.len() + 2 > MAX_PACK_BLOBS {
            return false;
        }
        self.dicts.push(dict.clone());
        true
    }

    /// Appends the sealed header and names the pack; a staged pack is made durable.
    ///
    /// # Errors
    /// Writing a staged pack failed.
    pub fn finish(mut self) -> Result<FinishedPack> {
        for d in std::mem::take(&mut self.dicts) {
            self.add(d.id, BlobType::Dictionary, &d.bytes, 0)?;
        }
        let entries = self.blobs.len() + self.blobs.iter().filter(|b| b.base.is_some()).count();
        let mut header = Vec::with_capacity(entries * (ENTRY_LEN + 4));
        for b in &self.blobs {
            header.push(match (b.blob_type, b.base) {
                (BlobType::Data, Some(_)) => 3,
                (BlobType::Data, None) => 0,
                (BlobType::Tree, _) => 1,
                (BlobType::Dictionary, _) => 2,
            });
            header.extend_from_slice(&b.id.0);
            header.extend_from_slice(&b.offset.to_le_bytes());
            header.extend_from_slice(&b.length.to_le_bytes());
            // A patch's base follows it as an entry of its own (format §7), so every entry keeps
            // its size.
            if let Some(base) = b.base {
                header.push(4);
                header.extend_from_slice(&base.0);
                header.extend_from_slice(&[0; 12]);
            }
        }
        for b in &self.blobs {
            header.extend_from_slice(&b.uncompressed_length.to_le_bytes());
            if b.base.is_some() {
                header.extend_from_slice(&[0; 4]);
            }
        }
        let mut tail = self.key.seal(HEADER_AAD, &header);
        let sealed_len = u32::try_from(tail.len()).unwrap_or(u32::MAX);
        tail.extend_from_slice(&sealed_len.to_le_bytes());
        let size = (self.size + tail.len()) as u64;
        let (id, data) = match self.body {
            Body::Memory(mut buf) => {
                buf.extend_from_slice(&tail);
                let data = Bytes::from(buf);
                (Id::of_object(&data), PackData::Memory(data))
            }
            Body::Staged { mut file, mut hasher, .. } => {
                let at = file.path().to_path_buf();
                file.write(&tail).map_err(|e| Error::io("write staged pack", &at, e))?;
                hasher.update(&tail);
                let path = file.finish().map_err(|e| Error::io("write staged pack", &at, e))?;
                (Id(*hasher.finalize().as_bytes()), PackData::Staged(path))
            }
        };
        Ok(FinishedPack { id, salt: self.salt, size, data, blobs: self.blobs })
    }
}

/// The salt of a pack, from its first bytes.
///
/// # Errors
/// A bad magic.
pub fn salt_of(pack: &str, data: &[u8]) -> Result<[u8; 16]> {
    if data.len() < PREFIX_LEN as usize || &data[..8] != MAGIC {
        return Err(Error::corrupt(format!("data/{pack}"), "not a version 1 pack (bad magic)"));
    }
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&data[8..24]);
    Ok(salt)
}

/// Decrypts the header of a whole pack file.
///
/// # Errors
/// `CorruptObject` naming the pack when anything does not verify.
pub fn read_header(
    master: &MasterKey,
    pack: &str,
    data: &[u8],
) -> Result<([u8; 16], Vec<PackBlob>)> {
    let salt = salt_of(pack, data)?;
    let n = data.len() as u64;
    let hlen = header_len(pack, n, data.get(data.len().saturating_sub(4)..).unwrap_or_default())?;
    #[allow(clippy::cast_possible_truncation)] // within `data`, checked by `header_len`
    let sealed = &data[(n - 4 - hlen) as usize..(n - 4) as usize];
    Ok((salt, open_header(master, pack, &salt, sealed)?))
}

/// Reads and decrypts the header of a stored pack of `size` bytes with three ranged reads (its
/// prefix, its length field, the header), without downloading its blobs.
///
/// # Errors
/// Backend errors; `CorruptObject` naming the pack when anything does not verify.
pub fn fetch_header(
    backend: &dyn Backend,
    master: &MasterKey,
    pack: &str,
    size: u64,
) -> Result<([u8; 16], Vec<PackBlob>)> {
    if size < PREFIX_LEN + 4 {
        return Err(Error::corrupt(format!("data/{pack}"), "truncated"));
    }
    let prefix = backend.get_range(FileType::Pack, pack, 0, PREFIX_LEN)?;
    let salt = salt_of(pack, &prefix)?;
    let tail = backend.get_range(FileType::Pack, pack, size - 4, 4)?;
    let hlen = header_len(pack, size, &tail)?;
    let sealed = backend.get_range(FileType::Pack, pack, size - 4 - hlen, hlen)?;
    Ok((salt, open_header(master, pack, &salt, &sealed)?))
}

/// The sealed header's length from a pack's last four bytes, checked against the pack's size.
fn header_len(pack: &str, size: u64, tail: &[u8]) -> Result<u64> {
    let object = format!("data/{pack}");
    let Ok(field) = <[u8; 4]>::try_from(tail) else {
        return Err(Error::corrupt(object, "truncated"));
    };
    let hlen = u64::from(u32::from_le_bytes(field));
    if size < PREFIX_LEN + 4 || hlen + 4 + PREFIX_LEN > size {
        return Err(Error::corrupt(object, "header length beyond the pack"));
    }
    Ok(hlen)
}

/// Decrypts and parses a sealed pack header.
fn open_header(
    master: &MasterKey,
    pack: &str,
    salt: &[u8; 16],
    sealed: &[u8],
) -> Result<Vec<PackBlob>> {
    let object = format!("data/{pack}");
    let header = master
        .pack_key(salt)
        .open(HEADER_AAD, sealed)
        .ok_or_else(|| Error::corrupt(&object, "header authentication failed"))?;
    if header.len() % (ENTRY_LEN + 4) != 0 {
        return Err(Error::corrupt(object, "header length is not a whole number of entries"));
    }
    let count = header.len() / (ENTRY_LEN + 4);
    let (entries, ulens) = header.split_at(count * ENTRY_LEN);
    let mut blobs: Vec<PackBlob> = Vec::with_capacity(count);
    // The last entry was a patch whose base entry has not come yet.
    let mut awaiting_base = false;
    for (e, u) in entries.chunks_exact(ENTRY_LEN).zip(ulens.chunks_exact(4)) {
        let mut id = [0u8; 32];
        id.copy_from_slice(&e[1..33]);
        let blob_type = match e[0] {
            0 | 3 => BlobType::Data,
            1 => BlobType::Tree,
            2 => BlobType::Dictionary,
            4 => {
                // The base of the patch just before (format §7): it describes no blob itself.
                if e[33..45].iter().any(|b| *b != 0) || u.iter().any(|b| *b != 0) {
                    return Err(Error::corrupt(object, "a base entry with a position"));
                }
                match blobs.last_mut() {
                    Some(patch) if awaiting_base => patch.base = Some(Id(id)),
                    _ => return Err(Error::corrupt(object, "a base entry after no patch")),
                }
                awaiting_base = false;
                continue;
            }
            t => return Err(Error::corrupt(object, format!("unknown blob type {t}"))),
        };
        if awaiting_base {
            return Err(Error::corrupt(object, "a patch entry without its base"));
        }
        awaiting_base = e[0] == 3;
        blobs.push(PackBlob {
            id: Id(id),
            blob_type,
            offset: u64::from_le_bytes(e[33..41].try_into().unwrap_or_default()),
            length: u32::from_le_bytes(e[41..45].try_into().unwrap_or_default()),
            uncompressed_length: u32::from_le_bytes(u.try_into().unwrap_or_default()),
            // Set by the base entry that must follow a patch.
            base: None,
        });
    }
    if awaiting_base {
        return Err(Error::corrupt(object, "a patch entry without its base"));
    }
    Ok(blobs)
}

/// Opens one sealed blob: decrypts, decompresses, and checks the keyed hash against its id. For a
/// patched blob (`blob.base`) it returns the patch's payload, authenticated but not yet applied:
/// see [`resolve_patch`].
///
/// # Errors
/// `CorruptBlob` naming blob and pack.
pub fn open_blob(
    master: &MasterKey,
    pack: &Id,
    salt: &[u8; 16],
    blob: &PackBlob,
    sealed: &[u8],
    dicts: &dyn Dictionaries,
) -> Result<Vec<u8>> {
    open_blob_owned(master, pack, salt, blob, sealed.to_vec(), dicts)
}

/// [`open_blob`] for a sealed blob the caller no longer needs: decrypts in its buffer instead of
/// a copy (a blob read from the backend arrives in a buffer of its own).
///
/// # Errors
/// `CorruptBlob` naming blob and pack.
pub fn open_blob_owned(
    master: &MasterKey,
    pack: &Id,
    salt: &[u8; 16],
    blob: &PackBlob,
    mut sealed: Vec<u8>,
    dicts: &dyn Dictionaries,
) -> Result<Vec<u8>> {
    let corrupt = |reason: &str| Error::CorruptBlob {
        blob: blob.id.to_hex(),
        pack: pack.to_hex(),
        reason: reason.to_string(),
    };
    let len = master
        .pack_key(salt)
        .open_in_place(&blob.id.0, &mut sealed)
        .ok_or_else(|| corrupt("authentication failed (bit rot or tampering)"))?;
    let payload = NONCE_LEN..NONCE_LEN + len;
    let plain = if blob.uncompressed_length > 0 {
        let payload = &sealed[payload];
        let capacity = blob.uncompressed_length as usize;
        match crate::dictionary::named_by(payload) {
            // A dictionary never names another: what a frame names is in the blob's own pack.
            Some(zid) if blob.blob_type != BlobType::Dictionary => {
                let dict = dicts.get(zid).map_err(|e| {
                    corrupt(&format!("compressed with dictionary {zid}, which is unusable: {e}"))
                })?;
                decompress_with(payload, capacity, &dict)
            }
            Some(zid) => Err(std::io::Error::other(format!("a dictionary names dictionary {zid}"))),
            None => decompress(payload, capacity),
        }
        .map_err(|e| corrupt(&format!("decompression failed: {e}")))?
    } else {
        sealed.truncate(payload.end);
        sealed.drain(..NONCE_LEN);
        sealed
    };
    // A patch's payload is authenticated (sealed with the blob's id as associated data); its
    // id is checked once it is applied to its base (`resolve_patch`).
    if blob.base.is_none() && master.blob_id(&plain) != blob.id {
        return Err(corrupt("content does not match its id"));
    }
    Ok(plain)
}

/// The plaintext of a patched blob (format §9.2): `payload` (what [`open_blob`] returned for it)
/// applied to its base's plaintext, verified against the blob's id.
///
/// # Errors
/// `CorruptBlob` naming blob and pack.
pub fn resolve_patch(
    master: &MasterKey,
    pack: &Id,
    blob: &PackBlob,
    payload: &[u8],
    base: Vec<u8>,
) -> Result<Vec<u8>> {
    let corrupt =
        |reason: String| Error::CorruptBlob { blob: blob.id.to_hex(), pack: pack.to_hex(), reason };
    let plain = crate::patch::apply(payload, base).map_err(|e| corrupt(e.to_string()))?;
    if master.blob_id(&plain) != blob.id {
        return Err(corrupt("content does not match its id (applied to its base)".into()));
    }
    Ok(plain)
}

thread_local! {
    /// A zstd context per thread: creating one per blob costs more than decompressing a small
    /// blob.
    static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn decompress(payload: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DCTX.with(|slot| {
        let mut slot = slot.borrow_mut();
        let mut d = match slot.take() {
            Some(d) => d,
            None => zstd::bulk::Decompressor::new()?,
        };
        let r = d.decompress(payload, capacity);
        *slot = Some(d);
        r
    })
}

/// The dictionaries of a pack read whole (check, repair, prune's repacking), opened from its
/// bytes: those among `blobs` that open; a blob naming one that does not fails to open itself.
pub fn dictionaries_in<'a>(
    master: &MasterKey,
    pack: &Id,
    salt: &[u8; 16],
    blobs: impl IntoIterator<Item = &'a PackBlob>,
    data: &[u8],
) -> crate::dictionary::InPack {
    crate::dictionary::InPack::new(
        blobs.into_iter().filter(|b| b.blob_type == BlobType::Dictionary).filter_map(|b| {
            let sealed =
                usize::try_from(b.offset).ok().and_then(|o| data.get(o..o + b.length as usize))?;
            open_blob(master, pack, salt, b, sealed, &crate::dictionary::NoDictionaries).ok()
        }),
    )
}

thread_local! {
    /// The context for frames compressed with a dictionary (the dictionary is given per call).
    static DICT_DCTX: std::cell::RefCell<Option<zstd::zstd_safe::DCtx<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn decompress_with(
    payload: &[u8],
    capacity: usize,
    dict: &crate::dictionary::Decoder,
) -> std::io::Result<Vec<u8>> {
    DICT_DCTX.with(|slot| {
        let mut slot = slot.borrow_mut();
        let dctx = match &mut *slot {
            Some(d) => d,
            None => slot.insert(
                zstd::zstd_safe::DCtx::try_create()
                    .ok_or_else(|| std::io::Error::other("zstd context allocation failed"))?,
            ),
        };
        let mut out = Vec::with_capacity(capacity);
        dctx.decompress_using_ddict(&mut out, payload, dict.as_ddict())
            .map_err(|code| std::io::Error::other(zstd::zstd_safe::get_error_name(code)))?;
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dictionary::NoDictionaries;

    /// Two blobs through a writer; the finished pack and its bytes.
    fn build(m: &MasterKey, mut w: PackWriter, a: &[u8], b: &[u8]) -> (FinishedPack, Vec<u8>) {
        w.add(m.blob_id(a), BlobType::Data, a, 0).unwrap();
        let cb = zstd::bulk::compress(b, 3).unwrap();
        w.add(m.blob_id(b), BlobType::Tree, &cb, u32::try_from(b.len()).unwrap()).unwrap();
        let p = w.finish().unwrap();
        let bytes = match &p.data {
            PackData::Memory(data) => data.to_vec(),
            PackData::Staged(path) => std::fs::read(path.path()).unwrap(),
        };
        (p, bytes)
    }

    #[test]
    fn a_patch_keeps_its_base_in_the_header_and_resolves_only_against_it() {
        let m = MasterKey::generate();
        let base: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let mut target = base.clone();
        target[20_000..20_100].fill(9);
        let ranges = crate::patch::ranges_of([1], 16_384, target.len());
        let payload = crate::patch::encode(&target, &ranges);
        let (base_id, id) = (m.blob_id(&base), m.blob_id(&target));
        let mut w = PackWriter::new(&m, 1 << 20);
        w.add(base_id, BlobType::Data, &base, 0).unwrap();
        w.add_with_base(id, BlobType::Data, &payload, 0, Some(base_id)).unwrap();
        w.add(m.blob_id(b"tree"), BlobType::Tree, b"tree", 0).unwrap();
        let p = w.finish().unwrap();
        let PackData::Memory(data) = &p.data else { panic!("in memory") };
        let (salt, blobs) = read_header(&m, &p.id.to_hex(), data).unwrap();
        assert_eq!(blobs, p.blobs, "the base entry folds into its patch");
        assert_eq!(blobs.len(), 3);
        assert_eq!(blobs[1].base, Some(base_id));
        assert_eq!(blobs[0].base, None);
        let sealed = &data[blobs[1].offset as usize..][..blobs[1].length as usize];
        let stored = open_blob(&m, &p.id, &salt, &blobs[1], sealed, &NoDictionaries).unwrap();
        assert_eq!(stored, payload, "opening a patch gives its payload");
        let plain = resolve_patch(&m, &p.id, &blobs[1], &stored, base.clone()).unwrap();
        assert_eq!(plain, target);
        // Applied to anything but its base, the result fails its id.
        let mut other = base;
        other[0] ^= 1;
        assert!(matches!(
            resolve_patch(&m, &p.id, &blobs[1], &stored, other),
            Err(Error::CorruptBlob { .. })
        ));
    }

    #[test]
    fn pack_round_trip_in_memory_and_staged() {
        let m = MasterKey::generate();
        let a = b"hello world".to_vec();
        let b = vec![0u8; 5000];
        let dir = tempfile::tempdir().unwrap();
        let writers = [PackWriter::new(&m, 1024), PackWriter::staged(&m, dir.path()).unwrap()];
        for w in writers {
            let (p, data) = build(&m, w, &a, &b);
            assert_eq!(p.id, Id::of_object(&data), "the name is the hash of the bytes");
            assert_eq!(p.size, data.len() as u64);
            let (salt, blobs) = read_header(&m, &p.id.to_hex(), &data).unwrap();
            assert_eq!(salt, p.salt);
            assert_eq!(blobs, p.blobs);
            for (blob, want) in blobs.iter().zip([&a, &b]) {
                let s = &data[blob.offset as usize..blob.offset as usize + blob.length as usize];
                assert_eq!(&open_blob(&m, &p.id, &salt, blob, s, &NoDictionaries).unwrap(), want);
            }
            let mut bad = data.clone();
            bad[30] ^= 0xff;
            let s = &bad[blobs[0].offset as usize..][..blobs[0].length as usize];
            assert!(matches!(
                open_blob(&m, &p.id, &salt, &blobs[0], s, &NoDictionaries),
                Err(Error::CorruptBlob { .. })
            ));
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "staged files removed");
    }

    #[test]
    fn a_frame_naming_a_dictionary_opens_only_with_its_packs_dictionary() {
        let m = MasterKey::generate();
        let pieces = crate::dictionary::tests::pieces(128);
        let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        let dict = Dictionary::train(&m, &refs, 3).unwrap();
        let plain = &pieces[3];
        let z = crate::dictionary::Compressor::default().compress(plain, &dict).unwrap();
        let ulen = u32::try_from(plain.len()).unwrap();
        let mut w = PackWriter::new(&m, 1 << 20);
        assert!(w.carry(&dict));
        assert!(w.carry(&dict), "carrying it again is a no-op");
        w.add(m.blob_id(plain), BlobType::Data, &z, ulen).unwrap();
        let p = w.finish().unwrap();
        let PackData::Memory(bytes) = &p.data else { unreachable!() };
        let (salt, blobs) = read_header(&m, &p.id.to_hex(), bytes).unwrap();
        assert_eq!(blobs.len(), 2);
        assert_eq!(blobs[1].blob_type, BlobType::Dictionary);
        let sealed = |b: &PackBlob| &bytes[b.offset as usize..][..b.length as usize];
        let dicts = dictionaries_in(&m, &p.id, &salt, &blobs, bytes);
        assert_eq!(
            &open_blob(&m, &p.id, &salt, &blobs[0], sealed(&blobs[0]), &dicts).unwrap(),
            plain
        );
        let without = open_blob(&m, &p.id, &salt, &blobs[0], sealed(&blobs[0]), &NoDictionaries);
        assert!(
            matches!(&without, Err(Error::CorruptBlob { reason, .. }) if reason.contains("dictionary")),
            "{without:?}"
        );
    }
}
