//! Packs (format §7): sealed blobs followed by a sealed header describing them.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::Id;
use crate::crypto::{MasterKey, NONCE_LEN, SealKey};
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"HFPACK\x01\x00";
const HEADER_AAD: &[u8] = b"holdfast v1 pack header";
/// Bytes before the first blob: magic and salt.
pub const PREFIX_LEN: u64 = 24;
const ENTRY_LEN: usize = 45;

/// The two kinds of blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    /// File content.
    Data,
    /// A serialized tree.
    Tree,
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
    /// Plaintext length when stored compressed, 0 when stored as-is.
    pub uncompressed_length: u32,
}

/// Builds one pack in memory.
pub struct PackWriter {
    salt: [u8; 16],
    key: SealKey,
    buf: Vec<u8>,
    blobs: Vec<PackBlob>,
}

/// A finished pack, ready to upload.
#[derive(Debug)]
pub struct FinishedPack {
    /// Its name: BLAKE3 of the bytes.
    pub id: Id,
    /// Its salt (recorded in the index so a blob can be opened with one range read).
    pub salt: [u8; 16],
    /// The file.
    pub data: Bytes,
    /// What it holds.
    pub blobs: Vec<PackBlob>,
}

impl PackWriter {
    /// An empty pack with a fresh salt.
    pub fn new(master: &MasterKey, capacity: usize) -> Self {
        let salt = crate::crypto::random::<16>();
        // Room for the header (49 bytes a blob, plus its seal) past the target size, so finishing
        // a pack of many small blobs does not reallocate (and briefly double) a pack-sized
        // buffer; untouched capacity costs no memory.
        let mut buf = Vec::with_capacity(capacity + capacity / 32 + 4096);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&salt);
        Self { salt, key: master.pack_key(&salt), buf, blobs: Vec::new() }
    }

    /// Seals and appends a blob whose payload is already compressed (or not, `ulen == 0`).
    pub fn add(&mut self, id: Id, blob_type: BlobType, payload: &[u8], ulen: u32) -> u32 {
        let offset = self.buf.len() as u64;
        let sealed = self.key.seal_into(&id.0, payload, &mut self.buf);
        let length = u32::try_from(sealed).unwrap_or(u32::MAX);
        self.blobs.push(PackBlob { id, blob_type, offset, length, uncompressed_length: ulen });
        length
    }

    /// Bytes so far.
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Appends the sealed header and names the pack.
    pub fn finish(mut self) -> FinishedPack {
        let mut header = Vec::with_capacity(self.blobs.len() * (ENTRY_LEN + 4));
        for b in &self.blobs {
            header.push(match b.blob_type {
                BlobType::Data => 0,
                BlobType::Tree => 1,
            });
            header.extend_from_slice(&b.id.0);
            header.extend_from_slice(&b.offset.to_le_bytes());
            header.extend_from_slice(&b.length.to_le_bytes());
        }
        for b in &self.blobs {
            header.extend_from_slice(&b.uncompressed_length.to_le_bytes());
        }
        let sealed = self.key.seal(HEADER_AAD, &header);
        self.buf.extend_from_slice(&sealed);
        self.buf.extend_from_slice(&u32::try_from(sealed.len()).unwrap_or(u32::MAX).to_le_bytes());
        let data = Bytes::from(self.buf);
        FinishedPack { id: Id::of_object(&data), salt: self.salt, data, blobs: self.blobs }
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
    let object = format!("data/{pack}");
    let salt = salt_of(pack, data)?;
    let n = data.len();
    if n < PREFIX_LEN as usize + 4 {
        return Err(Error::corrupt(object, "truncated"));
    }
    let hlen = u32::from_le_bytes(data[n - 4..].try_into().unwrap_or_default()) as usize;
    if hlen + 4 + PREFIX_LEN as usize > n {
        return Err(Error::corrupt(object, "header length beyond the pack"));
    }
    let header = master
        .pack_key(&salt)
        .open(HEADER_AAD, &data[n - 4 - hlen..n - 4])
        .ok_or_else(|| Error::corrupt(&object, "header authentication failed"))?;
    if header.len() % (ENTRY_LEN + 4) != 0 {
        return Err(Error::corrupt(object, "header length is not a whole number of entries"));
    }
    let count = header.len() / (ENTRY_LEN + 4);
    let (entries, ulens) = header.split_at(count * ENTRY_LEN);
    let mut blobs = Vec::with_capacity(count);
    for (e, u) in entries.chunks_exact(ENTRY_LEN).zip(ulens.chunks_exact(4)) {
        let blob_type = match e[0] {
            0 => BlobType::Data,
            1 => BlobType::Tree,
            t => return Err(Error::corrupt(object, format!("unknown blob type {t}"))),
        };
        let mut id = [0u8; 32];
        id.copy_from_slice(&e[1..33]);
        blobs.push(PackBlob {
            id: Id(id),
            blob_type,
            offset: u64::from_le_bytes(e[33..41].try_into().unwrap_or_default()),
            length: u32::from_le_bytes(e[41..45].try_into().unwrap_or_default()),
            uncompressed_length: u32::from_le_bytes(u.try_into().unwrap_or_default()),
        });
    }
    Ok((salt, blobs))
}

/// Opens one sealed blob: decrypts, decompresses, and checks the keyed hash against its id.
///
/// # Errors
/// `CorruptBlob` naming blob and pack.
pub fn open_blob(
    master: &MasterKey,
    pack: &Id,
    salt: &[u8; 16],
    blob: &PackBlob,
    sealed: &[u8],
) -> Result<Vec<u8>> {
    open_blob_owned(master, pack, salt, blob, sealed.to_vec())
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
        decompress(&sealed[payload], blob.uncompressed_length as usize)
            .map_err(|e| corrupt(&format!("decompression failed: {e}")))?
    } else {
        sealed.truncate(payload.end);
        sealed.drain(..NONCE_LEN);
        sealed
    };
    if master.blob_id(&plain) != blob.id {
        return Err(corrupt("content does not match its id"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trip() {
        let m = MasterKey::generate();
        let mut w = PackWriter::new(&m, 1024);
        let a = b"hello world".to_vec();
        let ida = m.blob_id(&a);
        w.add(ida, BlobType::Data, &a, 0);
        let b = vec![0u8; 5000];
        let idb = m.blob_id(&b);
        let cb = zstd::bulk::compress(&b, 3).unwrap();
        w.add(idb, BlobType::Tree, &cb, 5000);
        let p = w.finish();
        assert_eq!(p.id, Id::of_object(&p.data));
        let (salt, blobs) = read_header(&m, &p.id.to_hex(), &p.data).unwrap();
        assert_eq!(blobs, p.blobs);
        for (blob, want) in blobs.iter().zip([&a, &b]) {
            let s = &p.data[blob.offset as usize..blob.offset as usize + blob.length as usize];
            assert_eq!(&open_blob(&m, &p.id, &salt, blob, s).unwrap(), want);
        }
        let mut bad = p.data.to_vec();
        bad[30] ^= 0xff;
        let s = &bad[blobs[0].offset as usize..][..blobs[0].length as usize];
        assert!(matches!(
            open_blob(&m, &p.id, &salt, &blobs[0], s),
            Err(Error::CorruptBlob { .. })
        ));
    }
}
