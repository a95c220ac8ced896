//! Index files (format §8) and the in-memory index: blob id → pack, offset, length.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::Id;
use crate::pack::{BlobType, PackBlob};

/// One pack as an index file lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPack {
    /// Pack name.
    pub id: Id,
    /// The pack's salt, hex (saves a read per blob).
    #[serde(with = "hex16")]
    pub salt: [u8; 16],
    /// Pack size in bytes.
    pub size: u64,
    /// Its blobs.
    pub blobs: Vec<PackBlob>,
}

/// The JSON document of an index file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    /// Index files this one replaces.
    #[serde(default)]
    pub supersedes: Vec<Id>,
    /// Packs.
    pub packs: Vec<IndexPack>,
}

mod hex16 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&hex)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 16];
        if s.len() != 32 {
            return Err(serde::de::Error::custom("salt must be 32 hex digits"));
        }
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(serde::de::Error::custom)?;
        }
        Ok(out)
    }
}

/// Where a blob is, as the engine needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// Pack name.
    pub pack: Id,
    /// Pack salt.
    pub salt: [u8; 16],
    /// Position and lengths.
    pub blob: PackBlob,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: u64,
    pack: u32,
    length: u32,
    ulen: u32,
    blob_type: BlobType,
    /// False for blobs only in packs a prune plan marked: readable, but not for deduplication.
    live: bool,
    /// Stored as a patch (format §9.2); the base is in [`Index::bases`] under (pack, offset).
    patch: bool,
}

/// Collects index files and packs, then [`IndexBuilder::build`]s the [`Index`]: entries are
/// gathered in a flat list and sorted once in place, so building needs no second structure (a
/// hash map of a million blobs took twice the entries' size in empty buckets).
#[derive(Debug, Default)]
pub struct IndexBuilder {
    packs: Vec<(Id, [u8; 16], u64)>,
    live_packs: HashSet<u32>,
    pack_pos: HashMap<Id, u32>,
    /// Every (blob, location) in the order added; a blob may appear more than once.
    entries: Vec<(Id, Entry)>,
    /// The dictionaries of each pack (format §7.2), by pack position.
    dictionaries: HashMap<u32, Vec<(Id, Entry)>>,
    /// The bases of patched blobs, by pack position and offset.
    bases: HashMap<(u32, u64), Id>,
}

impl IndexBuilder {
    /// Adds every pack of an index file.
    pub fn add_file(&mut self, file: &IndexFile) {
        for p in &file.packs {
            self.add_pack(p);
        }
    }

    /// Adds one live pack.
    pub fn add_pack(&mut self, p: &IndexPack) {
        self.insert(p, true);
    }

    /// Adds a pack marked by a prune plan: readable, not used for deduplication.
    pub fn add_planned_pack(&mut self, p: &IndexPack) {
        self.insert(p, false);
    }

    fn insert(&mut self, p: &IndexPack, live: bool) {
        let pos = *self.pack_pos.entry(p.id).or_insert_with(|| {
            self.packs.push((p.id, p.salt, p.size));
            u32::try_from(self.packs.len() - 1).unwrap_or(u32::MAX)
        });
        if live {
            self.live_packs.insert(pos);
        }
        let live = self.live_packs.contains(&pos);
        let before = self.entries.len();
        self.entries.extend(p.blobs.iter().map(|b| {
            (
                b.id,
                Entry {
                    live,
                    pack: pos,
                    blob_type: b.blob_type,
                    offset: b.offset,
                    length: b.length,
                    ulen: b.uncompressed_length,
                    patch: b.base.is_some(),
                },
            )
        }));
        for b in &p.blobs {
            if let Some(base) = b.base {
                self.bases.insert((pos, b.offset), base);
            }
        }
        for (id, e) in &self.entries[before..] {
            if e.blob_type == BlobType::Dictionary {
                let known = self.dictionaries.entry(pos).or_default();
                if !known.iter().any(|(k, _)| k == id) {
                    known.push((*id, *e));
                }
            }
        }
    }

    /// The index. Where a blob was added more than once, its locations fold in the order their
    /// packs were first added: the first is the one readers use, unless a later one is live and
    /// it is not; a pack listed again keeps one entry, live if it was ever listed live; other
    /// locations are kept as copies.
    pub fn build(self) -> Index {
        let IndexBuilder { packs, live_packs, pack_pos, mut entries, dictionaries, bases } = self;
        // In place (a stable sort would take a scratch buffer of half the entries). Pack
        // positions are given in the order packs are first added, so this is that order.
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.pack.cmp(&b.1.pack)));
        let mut copies: HashMap<Id, Vec<Entry>> = HashMap::new();
        let mut kept = 0usize;
        let mut i = 0;
        while i < entries.len() {
            let id = entries[i].0;
            let mut primary = entries[i].1;
            let mut extra: Vec<Entry> = Vec::new();
            let mut j = i + 1;
            while j < entries.len() && entries[j].0 == id {
                let e = entries[j].1;
                if primary.pack == e.pack {
                    if e.live {
                        primary = e;
                    }
                } else if e.live && !primary.live {
                    extra.push(std::mem::replace(&mut primary, e));
                } else {
                    match extra.iter_mut().find(|c| c.pack == e.pack) {
                        Some(c) if e.live => *c = e,
                        Some(_) => {}
                        None => extra.push(e),
                    }
                }
                j += 1;
            }
            entries[kept] = (id, primary);
            kept += 1;
            if !extra.is_empty() {
                copies.insert(id, extra);
            }
            i = j;
        }
        entries.truncate(kept);
        entries.shrink_to_fit();
        let directory = Directory::new(&entries);
        Index {
            packs,
            live_packs,
            pack_pos,
            blobs: entries,
            directory,
            copies,
            dictionaries,
            bases,
        }
    }
}

/// Where in the sorted blob list the ids with each leading bit pattern start. Blob ids are
/// uniformly distributed hashes, so a lookup narrows to a handful of entries before its binary
/// search, for a table of 4 bytes per 8 blobs.
#[derive(Debug, Default)]
struct Directory {
    bits: u32,
    starts: Vec<u32>,
}

impl Directory {
    fn new(sorted: &[(Id, Entry)]) -> Self {
        let bits = (usize::BITS - sorted.len().leading_zeros()).saturating_sub(3).min(24);
        let buckets = 1usize << bits;
        let mut starts = Vec::with_capacity(buckets + 1);
        let mut at = 0usize;
        for b in 0..buckets {
            while at < sorted.len() && Self::bucket(bits, &sorted[at].0) < b {
                at += 1;
            }
            starts.push(u32::try_from(at).unwrap_or(u32::MAX));
        }
        starts.push(u32::try_from(sorted.len()).unwrap_or(u32::MAX));
        Self { bits, starts }
    }

    fn bucket(bits: u32, id: &Id) -> usize {
        if bits == 0 {
            return 0;
        }
        let b = &id.0;
        let lead = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        (lead >> (32 - bits)) as usize
    }

    /// The range of the sorted list that may hold `id`.
    fn range(&self, id: &Id) -> std::ops::Range<usize> {
        let b = Self::bucket(self.bits, id);
        match (self.starts.get(b), self.starts.get(b + 1)) {
            (Some(s), Some(e)) => *s as usize..*e as usize,
            _ => 0..0,
        }
    }
}

/// The union of all index files: blob id → pack, offset, length. Entries are kept sorted by id
/// in one flat list (about 56 bytes a blob) with pack ids interned; build it with
/// [`IndexBuilder`].
///
/// Packs named by pending prune plans are kept too, but marked not live: their blobs can still be
/// read (a snapshot committed after the mark may use them) but new backups do not deduplicate
/// against them.
///
/// A blob stored in more than one pack keeps every location: one is the one readers use, the
/// others wait in `copies`. Copies arise when a backup stored again what sat in a pack found
/// missing; keeping them all means no copy's pack looks unused to prune, whichever index file is
/// read first, and dropping a missing pack ([`Index::without_packs`]) promotes a surviving copy.
#[derive(Debug, Default)]
pub struct Index {
    packs: Vec<(Id, [u8; 16], u64)>,
    live_packs: HashSet<u32>,
    pack_pos: HashMap<Id, u32>,
    blobs: Vec<(Id, Entry)>,
    directory: Directory,
    copies: HashMap<Id, Vec<Entry>>,
    dictionaries: HashMap<u32, Vec<(Id, Entry)>>,
    /// The bases of patched blobs (format §9.2), by pack position and offset: few blobs are
    /// patches, so they cost nothing in the entries.
    bases: HashMap<(u32, u64), Id>,
}

impl Index {
    /// The primary location of a blob.
    fn entry(&self, id: &Id) -> Option<&Entry> {
        let range = self.directory.range(id);
        let slice = self.blobs.get(range)?;
        slice.binary_search_by(|(k, _)| k.cmp(id)).ok().map(|i| &slice[i].1)
    }

    /// Every copy of a blob, the primary first.
    fn copies_of<'a>(&'a self, id: &Id) -> impl Iterator<Item = &'a Entry> + Clone + 'a {
        self.entry(id).into_iter().chain(self.copies.get(id).into_iter().flatten())
    }

    /// Where a blob is.
    ///
    /// A blob stored both whole and as a patch (two backups stored it at once) is read from a
    /// whole copy, live first, else from a patch whose base is stored whole: a patch copy may
    /// outlive its base when the blob did not need it.
    pub fn get(&self, id: &Id) -> Option<BlobLocation> {
        let e = self.entry(id)?;
        if !e.patch {
            return Some(self.location(id, e));
        }
        let best = self
            .copies_of(id)
            .filter(|c| !c.patch)
            .max_by_key(|c| c.live)
            .or_else(|| self.copies_of(id).find(|c| self.usable(c)))
            .unwrap_or(e);
        Some(self.location(id, best))
    }

    /// Where a blob is inside one particular pack (it may have copies elsewhere).
    pub fn get_in(&self, id: &Id, pack: &Id) -> Option<BlobLocation> {
        let pos = *self.pack_pos.get(pack)?;
        let e = self.copies_of(id).find(|e| e.pack == pos)?;
        Some(self.location(id, e))
    }

    /// The dictionaries stored in a pack (format §7.2): what its blobs' frames may name.
    pub fn dictionaries_in(&self, pack: &Id) -> Vec<BlobLocation> {
        let Some(pos) = self.pack_pos.get(pack) else { return Vec::new() };
        self.dictionaries
            .get(pos)
            .into_iter()
            .flatten()
            .map(|(id, e)| self.location(id, e))
            .collect()
    }

    /// A copy of a blob stored whole (not as a patch), live or marked: what a patch's base must
    /// be read from.
    pub fn get_whole(&self, id: &Id) -> Option<BlobLocation> {
        let e = self.copies_of(id).find(|e| !e.patch)?;
        Some(self.location(id, e))
    }

    /// Whether a live pack holds a blob stored whole: what a new patch may use as its base.
    pub fn contains_whole(&self, id: &Id) -> bool {
        self.copies_of(id).any(|e| e.live && !e.patch)
    }

    /// The blobs reading a blob needs besides its own copy: none when it is stored whole
    /// anywhere (it is read from there, see [`Index::get`]), else the bases of its patches.
    /// Bases are stored whole, so this is one step deep.
    pub fn bases_of(&self, id: &Id) -> Vec<Id> {
        if self.copies_of(id).any(|e| !e.patch) {
            return Vec::new();
        }
        self.copies_of(id).filter_map(|e| self.base_of(e)).collect()
    }

    /// Plaintext length of the blob at `loc`: a patch's is its base's (format §9.2).
    pub fn plain_len(&self, loc: &BlobLocation) -> Option<u64> {
        let whole = match loc.blob.base {
            Some(base) => self.get_whole(&base)?,
            None => *loc,
        };
        Some(if whole.blob.uncompressed_length > 0 {
            u64::from(whole.blob.uncompressed_length)
        } else {
            u64::from(whole.blob.length).saturating_sub(crate::crypto::SEAL_OVERHEAD as u64)
        })
    }

    /// The blobs stored only as patches of one of `bases` (format §9.2): what losing those bases
    /// makes unreadable besides themselves.
    pub fn patched_only_on(&self, bases: &HashSet<Id>) -> Vec<Id> {
        let mut out: Vec<Id> = self
            .entries()
            .filter(|(_, e)| self.base_of(e).is_some_and(|b| bases.contains(&b)))
            .map(|(id, _)| *id)
            // A blob also stored whole is read from there, unless that copy is lost too.
            .filter(|id| self.get_whole(id).is_none() || bases.contains(id))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Every pack holding a copy of a blob.
    pub fn packs_of<'a>(&'a self, id: &Id) -> impl Iterator<Item = Id> + 'a {
        self.copies_of(id).map(|e| self.packs[e.pack as usize].0)
    }

    fn location(&self, id: &Id, e: &Entry) -> BlobLocation {
        let (pack, salt, _) = self.packs[e.pack as usize];
        BlobLocation {
            pack,
            salt,
            blob: PackBlob {
                id: *id,
                blob_type: e.blob_type,
                offset: e.offset,
                length: e.length,
                uncompressed_length: e.ulen,
                base: self.base_of(e),
            },
        }
    }

    fn base_of(&self, e: &Entry) -> Option<Id> {
        if e.patch { self.bases.get(&(e.pack, e.offset)).copied() } else { None }
    }

    /// Every pack the index names (live or marked by a plan).
    pub fn all_pack_ids(&self) -> impl Iterator<Item = Id> + '_ {
        self.packs.iter().map(|(id, _, _)| *id)
    }

    /// The same index without the given packs (found missing from the repository): a blob with a
    /// copy in another pack is served from there, one without is no longer in the index, so a
    /// backup stores it again instead of referencing what cannot be read.
    pub fn without_packs(&self, gone: &HashSet<Id>) -> Index {
        let kept: Vec<(bool, IndexPack)> =
            self.all_packs().into_iter().filter(|(_, p)| !gone.contains(&p.id)).collect();
        // A patch whose base has no whole copy left cannot be read either (format §9.2).
        let whole: HashSet<Id> = kept
            .iter()
            .flat_map(|(_, p)| p.blobs.iter().filter(|b| b.base.is_none()).map(|b| b.id))
            .collect();
        let mut out = IndexBuilder::default();
        for (live, mut pack) in kept {
            pack.blobs.retain(|b| b.base.is_none_or(|base| whole.contains(&base)));
            out.insert(&pack, live);
        }
        out.build()
    }

    /// Every pack with every blob it holds (copies included), and whether it is live.
    fn all_packs(&self) -> Vec<(bool, IndexPack)> {
        let mut out: Vec<(bool, IndexPack)> = self
            .packs
            .iter()
            .enumerate()
            .map(|(i, (id, salt, size))| {
                let live = self.live_packs.contains(&u32::try_from(i).unwrap_or(u32::MAX));
                (live, IndexPack { id: *id, salt: *salt, size: *size, blobs: Vec::new() })
            })
            .collect();
        for (id, e) in self.entries() {
            out[e.pack as usize].1.blobs.push(PackBlob {
                id: *id,
                blob_type: e.blob_type,
                offset: e.offset,
                length: e.length,
                uncompressed_length: e.ulen,
                base: self.base_of(e),
            });
        }
        for (_, p) in &mut out {
            p.blobs.sort_by_key(|b| b.offset);
        }
        out
    }

    /// Every (blob, location) pair, copies included.
    fn entries(&self) -> impl Iterator<Item = (&Id, &Entry)> {
        self.blobs
            .iter()
            .map(|(id, e)| (id, e))
            .chain(self.copies.iter().flat_map(|(id, cs)| cs.iter().map(move |c| (id, c))))
    }

    /// Whether a blob is in a live pack (what deduplication asks); a patch only while its base
    /// is stored whole in a live pack too (a backup must not come to depend on a marked pack).
    pub fn contains(&self, id: &Id) -> bool {
        let Some(e) = self.entry(id) else { return false };
        (e.live && !e.patch)
            || self.copies_of(id).any(|e| {
                e.live && (!e.patch || self.base_of(e).is_some_and(|b| self.contains_whole(&b)))
            })
    }

    /// Whether a blob can be read (live or marked pack); a patch only while its base is stored
    /// whole.
    pub fn readable(&self, id: &Id) -> bool {
        let Some(e) = self.entry(id) else { return false };
        !e.patch || self.copies_of(id).any(|e| self.usable(e))
    }

    /// Whether the copy `e` can be read as far as the index tells: stored whole, or a patch of
    /// a blob stored whole.
    fn usable(&self, e: &Entry) -> bool {
        !e.patch || self.base_of(e).is_some_and(|b| self.get_whole(&b).is_some())
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Live packs: name and size.
    pub fn packs(&self) -> impl Iterator<Item = (Id, u64)> + '_ {
        self.packs
            .iter()
            .enumerate()
            .filter(|(i, _)| self.live_packs.contains(&u32::try_from(*i).unwrap_or(u32::MAX)))
            .map(|(_, (id, _, size))| (*id, *size))
    }

    /// Whether a pack is live (listed by an index file in force).
    pub fn has_pack(&self, id: &Id) -> bool {
        self.pack_pos.get(id).is_some_and(|p| self.live_packs.contains(p))
    }

    /// Whether a pack is known at all (live or marked by a prune plan).
    pub fn knows_pack(&self, id: &Id) -> bool {
        self.pack_pos.contains_key(id)
    }

    /// All blob ids.
    pub fn blob_ids(&self) -> HashSet<Id> {
        self.blobs.iter().map(|(id, _)| *id).collect()
    }

    /// Rebuilds the live index packs (for prune's consolidated index), excluding `drop`.
    pub fn to_packs(&self, drop: &HashSet<Id>) -> Vec<IndexPack> {
        self.all_packs()
            .into_iter()
            .filter(|(live, p)| *live && !drop.contains(&p.id))
            .map(|(_, p)| p)
            .collect()
    }

    /// The blobs of each live pack (every copy counts: a pack holding a used blob is used).
    pub fn pack_blobs(&self) -> HashMap<Id, Vec<Id>> {
        let mut out: HashMap<Id, Vec<Id>> = HashMap::new();
        for (id, e) in self.entries().filter(|(_, e)| e.live) {
            out.entry(self.packs[e.pack as usize].0).or_default().push(*id);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> Id {
        Id(*blake3::hash(&n.to_le_bytes()).as_bytes())
    }

    fn pack(n: u64, blobs: impl IntoIterator<Item = u64>) -> IndexPack {
        IndexPack {
            id: id(1_000_000_000 + n),
            salt: [n as u8; 16],
            size: 1 << 30,
            blobs: blobs
                .into_iter()
                .enumerate()
                .map(|(i, b)| PackBlob {
                    id: id(b),
                    blob_type: BlobType::Data,
                    offset: i as u64 * 100,
                    length: 100,
                    uncompressed_length: 0,
                    base: None,
                })
                .collect(),
        }
    }

    /// `pack(n, blobs)` with blob `patch` stored as a patch of `base`.
    fn with_patch(
        n: u64,
        blobs: impl IntoIterator<Item = u64>,
        patch: u64,
        base: u64,
    ) -> IndexPack {
        let mut p = pack(n, blobs);
        for b in &mut p.blobs {
            if b.id == id(patch) {
                b.base = Some(id(base));
            }
        }
        p
    }

    #[test]
    fn a_blob_stored_whole_and_as_a_patch_is_read_whole_and_needs_no_base() {
        // Blob 2 is whole in pack 1 and a patch of blob 9 (not indexed) in pack 2; blob 3 is a
        // patch of blob 2. Whichever pack is read first, blob 2 is read from its whole copy.
        for order in [[1u64, 2], [2, 1]] {
            let mut b = IndexBuilder::default();
            for n in order {
                match n {
                    1 => b.add_pack(&pack(1, [2])),
                    _ => b.add_pack(&with_patch(2, [2, 4], 2, 9)),
                }
            }
            b.add_pack(&with_patch(3, [3], 3, 2));
            let index = b.build();
            assert_eq!(index.get(&id(2)).unwrap().blob.base, None, "{order:?}");
            assert!(index.bases_of(&id(2)).is_empty(), "a whole copy needs no base");
            assert_eq!(index.bases_of(&id(3)), vec![id(2)]);
            assert!(index.readable(&id(2)) && index.contains(&id(3)));
            assert_eq!(
                index.plain_len(&index.get(&id(3)).unwrap()),
                Some(100 - crate::crypto::SEAL_OVERHEAD as u64)
            );
        }
    }

    #[test]
    fn a_patch_whose_base_is_only_in_a_marked_pack_is_not_deduplicated_against() {
        let mut b = IndexBuilder::default();
        b.add_planned_pack(&pack(1, [2]));
        b.add_pack(&with_patch(2, [3], 3, 2));
        let index = b.build();
        assert!(index.readable(&id(3)), "still readable for snapshots that use it");
        assert!(!index.contains(&id(3)), "but no new backup may come to depend on the marked base");
        assert!(!index.contains_whole(&id(2)));
        // Without its base's pack, the patch is gone too.
        let gone: HashSet<Id> = [pack(1, [2]).id].into_iter().collect();
        assert!(!index.without_packs(&gone).readable(&id(3)));
    }

    #[test]
    fn finds_every_blob_and_nothing_else_at_every_size() {
        for n in [0u64, 1, 7, 8, 9, 1000, 70_000] {
            let mut b = IndexBuilder::default();
            b.add_pack(&pack(1, 0..n / 2));
            b.add_pack(&pack(2, n / 2..n));
            let index = b.build();
            assert_eq!(index.len(), n as usize);
            for i in 0..n {
                let loc = index.get(&id(i)).unwrap_or_else(|| panic!("blob {i} of {n}"));
                let (p, at) = if i < n / 2 { (1, i) } else { (2, i - n / 2) };
                assert_eq!((loc.pack, loc.blob.offset), (id(1_000_000_000 + p), at * 100));
                assert!(index.contains(&id(i)));
            }
            for i in n..n + 100 {
                assert!(index.get(&id(i)).is_none() && !index.readable(&id(i)));
            }
        }
    }

    #[test]
    fn locations_of_a_blob_fold_in_the_order_added() {
        // Blob 7 in a planned pack first, then in two live ones: the first live one is read,
        // the others stay as copies; a pack listed twice keeps one entry.
        let mut b = IndexBuilder::default();
        b.add_planned_pack(&pack(1, [7]));
        b.add_pack(&pack(2, [9, 7]));
        b.add_pack(&pack(3, [7]));
        b.add_pack(&pack(2, [9, 7]));
        let index = b.build();
        assert_eq!(index.get(&id(7)).unwrap().pack, id(1_000_000_002));
        assert!(index.contains(&id(7)));
        let mut packs: Vec<Id> = index.packs_of(&id(7)).collect();
        packs.sort();
        let mut want = vec![id(1_000_000_001), id(1_000_000_002), id(1_000_000_003)];
        want.sort();
        assert_eq!(packs, want);
        // Only in a planned pack: readable, but not for deduplication.
        let mut b = IndexBuilder::default();
        b.add_planned_pack(&pack(1, [5]));
        let index = b.build();
        assert!(index.readable(&id(5)) && !index.contains(&id(5)));
        // Dropping the pack read from promotes a surviving copy.
        let mut b = IndexBuilder::default();
        b.add_pack(&pack(2, [7]));
        b.add_pack(&pack(3, [7]));
        let index = b.build().without_packs(&HashSet::from([id(1_000_000_002)]));
        assert_eq!(index.get(&id(7)).unwrap().pack, id(1_000_000_003));
    }
}
