//! Block prints and prints blobs (format §9.2): what lets a backup store a changed chunk as the
//! blocks that differ from an earlier one.
//!
//! The prints are the BLAKE3 chaining values of a blob's 16 KiB blocks, taken from the keyed hash
//! that computes the blob's id anyway, so they cost no second pass over the data.

use blake3::hazmat::{
    ChainingValue, HasherExt as _, Mode, left_subtree_len, merge_subtrees_non_root,
    merge_subtrees_root,
};

use crate::Id;

/// Bytes per block.
pub const BLOCK: usize = 16 * 1024;

/// A block's print: the first 16 bytes of its chaining value.
pub type Print = [u8; 16];

/// Files smaller than this get no prints blob: a changed chunk of a small file costs little, and
/// a prints blob per small file would cost an index entry each.
pub const MIN_FILE: u64 = 1024 * 1024;

/// Files larger than this get no prints blob either: it is 1/1024 of its file and is stored
/// again whole whenever the file changes, so a much larger file would make it a large tree blob
/// every day.
pub const MAX_FILE: u64 = 64 << 30;

/// The keyed BLAKE3 hash of `data` (its blob id) and, when it has more than one block, the prints
/// of its blocks in `prints` (cleared first; left empty for a single block, whose chaining value
/// is the root itself and which is never patched).
pub fn id_and_prints(key: &[u8; 32], data: &[u8], prints: &mut Vec<Print>) -> Id {
    prints.clear();
    if data.len() <= BLOCK {
        return Id(*blake3::keyed_hash(key, data).as_bytes());
    }
    let cvs: Vec<ChainingValue> = data
        .chunks(BLOCK)
        .enumerate()
        .map(|(i, block)| {
            blake3::Hasher::new_keyed(key)
                .set_input_offset((i * BLOCK) as u64)
                .update(block)
                .finalize_non_root()
        })
        .collect();
    prints.extend(cvs.iter().map(|cv| {
        let mut p = [0u8; 16];
        p.copy_from_slice(&cv[..16]);
        p
    }));
    let mode = Mode::KeyedHash(key);
    // The root joins the two subtrees BLAKE3 splits the whole input into; every split of an
    // input longer than one block falls on a block boundary (left subtrees are a power of two
    // of 1 KiB chunks, at least 16 of them).
    let left = left_blocks(data.len() as u64);
    let l = merge(&cvs[..left], left as u64 * BLOCK as u64, mode);
    let r = merge(&cvs[left..], data.len() as u64 - left as u64 * BLOCK as u64, mode);
    Id(*merge_subtrees_root(&l, &r, mode).as_bytes())
}

/// How many blocks BLAKE3 puts in the left subtree of an input of `len` bytes (more than one
/// block).
fn left_blocks(len: u64) -> usize {
    (left_subtree_len(len) / BLOCK as u64) as usize
}

/// The chaining value of the subtree made of `cvs` (blocks covering `len` bytes), not the root.
fn merge(cvs: &[ChainingValue], len: u64, mode: Mode<'_>) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let left = left_blocks(len);
    let left_len = left as u64 * BLOCK as u64;
    let l = merge(&cvs[..left], left_len, mode);
    let r = merge(&cvs[left..], len - left_len, mode);
    merge_subtrees_non_root(&l, &r, mode)
}

/// What a prints blob says of one content blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The blob's length.
    pub length: u32,
    /// The blob it is stored as a patch of, or its own id.
    pub root: Id,
    /// Which blocks differ from the root (bit `i % 8` of byte `i / 8`).
    pub bitmap: Vec<u8>,
    /// Its block prints (empty for a blob of one block).
    pub prints: Vec<Print>,
}

impl Entry {
    /// An entry for a blob stored whole: its own root, no block differing.
    pub fn whole(id: Id, length: u32, prints: Vec<Print>) -> Self {
        Self { length, root: id, bitmap: vec![0; prints.len().div_ceil(8)], prints }
    }

    /// An entry for a blob stored as a patch of `root` carrying the blocks `differing`.
    pub fn patched(root: Id, length: u32, differing: &[usize], prints: Vec<Print>) -> Self {
        let mut bitmap = vec![0u8; prints.len().div_ceil(8)];
        for i in differing {
            bitmap[i / 8] |= 1 << (i % 8);
        }
        Self { length, root, bitmap, prints }
    }

    /// Whether block `i` differs from the root.
    pub fn differs(&self, i: usize) -> bool {
        self.bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
    }
}

const MAGIC: &[u8; 6] = b"HFPRNT";

/// Serializes a prints blob.
pub fn encode(entries: &[Entry]) -> Vec<u8> {
    let size: usize = entries.iter().map(|e| 40 + e.bitmap.len() + 16 * e.prints.len()).sum();
    let mut out = Vec::with_capacity(16 + size);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.length.to_le_bytes());
        out.extend_from_slice(&e.root.0);
        out.extend_from_slice(&(e.prints.len() as u32).to_le_bytes());
        out.extend_from_slice(&e.bitmap);
        for p in &e.prints {
            out.extend_from_slice(p);
        }
    }
    out
}

/// Parses a prints blob; `None` when it is malformed (it is only a hint: the caller then stores
/// whole chunks).
pub fn decode(data: &[u8]) -> Option<Vec<Entry>> {
    let mut r = Reader(data);
    if r.take(6)? != MAGIC || r.take(2)? != [1, 0] {
        return None;
    }
    let n = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
    // Each entry takes at least 40 bytes: a count beyond that is malformed, not an allocation.
    if n > (data.len() / 40) as u64 {
        return None;
    }
    let mut entries = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let length = u32::from_le_bytes(r.take(4)?.try_into().ok()?);
        let root = Id(r.take(32)?.try_into().ok()?);
        let blocks = u32::from_le_bytes(r.take(4)?.try_into().ok()?) as usize;
        let expected = if length as usize > BLOCK { (length as usize).div_ceil(BLOCK) } else { 0 };
        if blocks != expected {
            return None;
        }
        let bitmap = r.take(blocks.div_ceil(8))?.to_vec();
        let prints = r.take(blocks.checked_mul(16)?)?;
        let prints = prints.chunks_exact(16).map(|c| c.try_into().unwrap_or([0; 16])).collect();
        entries.push(Entry { length, root, bitmap, prints });
    }
    r.0.is_empty().then_some(entries)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn the_id_computed_with_prints_is_the_keyed_hash_for_every_length() {
        let key = [7u8; 32];
        let data = noise(4 * 1024 * 1024 + 5000, 99);
        let mut prints = Vec::new();
        // Lengths around every kind of split: one block, block edges, chunk edges, powers of two.
        let mut lengths: Vec<usize> = vec![0, 1, 1023, 1024, 1025, BLOCK - 1, BLOCK, BLOCK + 1];
        for blocks in [2usize, 3, 4, 5, 7, 8, 9, 31, 32, 33, 63, 64, 65, 100, 128, 129, 200] {
            for delta in [-1025isize, -1024, -1, 0, 1, 1024, 5000] {
                lengths.push((blocks * BLOCK).saturating_add_signed(delta));
            }
        }
        lengths.push(data.len());
        for len in lengths {
            let d = &data[..len];
            let id = id_and_prints(&key, d, &mut prints);
            assert_eq!(id.0, *blake3::keyed_hash(&key, d).as_bytes(), "length {len}");
            let blocks = if len > BLOCK { len.div_ceil(BLOCK) } else { 0 };
            assert_eq!(prints.len(), blocks, "length {len}");
        }
    }

    #[test]
    fn prints_differ_exactly_where_blocks_differ() {
        let key = [3u8; 32];
        let a = noise(10 * BLOCK + 100, 5);
        let mut b = a.clone();
        b[3 * BLOCK + 17] ^= 1;
        b[9 * BLOCK + 2] ^= 0x80;
        let (mut pa, mut pb) = (Vec::new(), Vec::new());
        id_and_prints(&key, &a, &mut pa);
        id_and_prints(&key, &b, &mut pb);
        let differing: Vec<usize> = (0..pa.len()).filter(|&i| pa[i] != pb[i]).collect();
        assert_eq!(differing, vec![3, 9]);
    }

    #[test]
    fn prints_blobs_round_trip_and_malformed_ones_are_refused() {
        let mut prints = Vec::new();
        let data = noise(3 * BLOCK + 1, 1);
        let id = id_and_prints(&[1; 32], &data, &mut prints);
        let mut e = Entry::whole(id, data.len() as u32, prints);
        e.bitmap[0] = 0b101;
        let small = Entry::whole(Id([9; 32]), 100, Vec::new());
        let blob = encode(&[e.clone(), small.clone()]);
        let back = decode(&blob).unwrap();
        assert_eq!(back, vec![e, small]);
        assert!(back[0].differs(0) && !back[0].differs(1) && back[0].differs(2));
        assert!(decode(&blob[..blob.len() - 1]).is_none());
        let mut longer = blob.clone();
        longer.push(0);
        assert!(decode(&longer).is_none());
        let mut bad = blob;
        bad[0] = b'X';
        assert!(decode(&bad).is_none());
    }
}
