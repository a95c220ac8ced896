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
    /// False for blobs only in packs a prune plan marked: readable, but not for deduplication.
    live: bool,
    pack: u32,
    blob_type: BlobType,
    offset: u64,
    length: u32,
    ulen: u32,
}

/// The union of all index files, with pack ids interned so an entry costs about 60 bytes.
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
    blobs: HashMap<Id, Entry>,
    copies: HashMap<Id, Vec<Entry>>,
}

impl Index {
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
        for b in &p.blobs {
            let e = Entry {
                live,
                pack: pos,
                blob_type: b.blob_type,
                offset: b.offset,
                length: b.length,
                ulen: b.uncompressed_length,
            };
            match self.blobs.get_mut(&b.id) {
                None => {
                    self.blobs.insert(b.id, e);
                }
                // A pack listed again (or turning live) revives its blobs.
                Some(old) if old.pack == pos => {
                    if live {
                        *old = e;
                    }
                }
                // A live copy wins over a marked one; the marked one stays readable.
                Some(old) if live && !old.live => {
                    let demoted = std::mem::replace(old, e);
                    self.copies.entry(b.id).or_default().push(demoted);
                }
                Some(_) => {
                    let copies = self.copies.entry(b.id).or_default();
                    match copies.iter_mut().find(|c| c.pack == pos) {
                        Some(c) if live => *c = e,
                        Some(_) => {}
                        None => copies.push(e),
                    }
                }
            }
        }
    }

    /// Where a blob is.
    pub fn get(&self, id: &Id) -> Option<BlobLocation> {
        Some(self.location(id, self.blobs.get(id)?))
    }

    /// Where a blob is inside one particular pack (it may have copies elsewhere).
    pub fn get_in(&self, id: &Id, pack: &Id) -> Option<BlobLocation> {
        let pos = *self.pack_pos.get(pack)?;
        let e = std::iter::once(self.blobs.get(id)?)
            .chain(self.copies.get(id).into_iter().flatten())
            .find(|e| e.pack == pos)?;
        Some(self.location(id, e))
    }

    /// Every pack holding a copy of a blob.
    pub fn packs_of<'a>(&'a self, id: &Id) -> impl Iterator<Item = Id> + 'a {
        self.blobs
            .get(id)
            .into_iter()
            .chain(self.copies.get(id).into_iter().flatten())
            .map(|e| self.packs[e.pack as usize].0)
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
            },
        }
    }

    /// Every pack the index names (live or marked by a plan).
    pub fn all_pack_ids(&self) -> impl Iterator<Item = Id> + '_ {
        self.packs.iter().map(|(id, _, _)| *id)
    }

    /// The same index without the given packs (found missing from the repository): a blob with a
    /// copy in another pack is served from there, one without is no longer in the index, so a
    /// backup stores it again instead of referencing what cannot be read.
    pub fn without_packs(&self, gone: &HashSet<Id>) -> Index {
        let mut out = Index::default();
        for (live, pack) in self.all_packs() {
            if gone.contains(&pack.id) {
                continue;
            }
            out.insert(&pack, live);
        }
        out
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
            .chain(self.copies.iter().flat_map(|(id, cs)| cs.iter().map(move |c| (id, c))))
    }

    /// Whether a blob is in a live pack (what deduplication asks).
    pub fn contains(&self, id: &Id) -> bool {
        self.blobs.get(id).is_some_and(|e| e.live)
    }

    /// Whether a blob can be read (live or marked pack).
    pub fn readable(&self, id: &Id) -> bool {
        self.blobs.contains_key(id)
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
        self.blobs.keys().copied().collect()
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
