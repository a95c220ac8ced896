//! Content list blobs (format §9.1): a large file's list of data blob ids stored apart from its
//! tree, whole or as the changes from the same file's list in an earlier snapshot. A day that
//! rewrites a few scattered pages of a database file then stores those few entries, not the whole
//! list again.

use crate::Id;

const MAGIC: &[u8; 6] = b"HFLIST";
const LAYOUT: u8 = 1;
const WHOLE: u8 = 0;
const DELTA: u8 = 1;
const HEAD: usize = MAGIC.len() + 2;

/// Files with at least this many chunks get a content list blob; smaller lists stay inline.
pub const MIN_ENTRIES: usize = 1024;

/// A writer starts a whole list when the base's chain is this long: restoring reads every blob
/// of a chain, so chains stay short.
pub const WRITE_MAX_CHAIN: usize = 16;

/// A reader refuses chains longer than this (a damaged or hostile repository cannot make it
/// loop).
pub const READ_MAX_CHAIN: usize = 64;

/// A delta is written only when fewer than one position in this many changed; past that a whole
/// list costs little more and keeps the chain short.
const DELTA_MAX_SHARE: usize = 4;

/// A decoded content list blob.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stored {
    /// The whole list.
    Whole(Vec<Id>),
    /// Changes to `base`'s resolved list.
    Delta { base: Id, len: usize, changes: Vec<(usize, Id)> },
}

/// The blob holding `ids` whole.
pub(crate) fn encode_whole(ids: &[Id]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD + 8 + ids.len() * 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[LAYOUT, WHOLE]);
    out.extend_from_slice(&(ids.len() as u64).to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.0);
    }
    out
}

/// The blob turning `old` (the resolved list of blob `base`) into `new`, or `None` when so much
/// changed that a whole list is the better choice.
pub(crate) fn encode_delta(base: &Id, old: &[Id], new: &[Id]) -> Option<Vec<u8>> {
    let changes: Vec<(usize, &Id)> =
        new.iter().enumerate().filter(|(i, id)| old.get(*i) != Some(*id)).collect();
    if changes.len() * DELTA_MAX_SHARE >= new.len() {
        return None;
    }
    let mut out = Vec::with_capacity(HEAD + 48 + changes.len() * 40);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[LAYOUT, DELTA]);
    out.extend_from_slice(&base.0);
    out.extend_from_slice(&(new.len() as u64).to_le_bytes());
    out.extend_from_slice(&(changes.len() as u64).to_le_bytes());
    for (i, id) in changes {
        out.extend_from_slice(&(i as u64).to_le_bytes());
        out.extend_from_slice(&id.0);
    }
    Some(out)
}

/// Reads a content list blob.
///
/// # Errors
/// What is wrong with it, as text (the caller names the blob).
pub(crate) fn decode(data: &[u8]) -> Result<Stored, String> {
    let mut r = Reader { data, at: 0 };
    if r.take(MAGIC.len())? != MAGIC {
        return Err("not a content list".into());
    }
    let head = r.take(2)?;
    if head[0] != LAYOUT {
        return Err(format!("content list layout {} is unknown", head[0]));
    }
    let stored = match head[1] {
        WHOLE => {
            let n = r.count(32)?;
            let mut ids = Vec::with_capacity(n);
            for _ in 0..n {
                ids.push(r.id()?);
            }
            Stored::Whole(ids)
        }
        DELTA => {
            let base = r.id()?;
            let len = usize::try_from(r.u64()?).map_err(|_| "list length out of range")?;
            let n = r.count(40)?;
            let mut changes = Vec::with_capacity(n);
            let mut next = 0usize;
            for _ in 0..n {
                let at = usize::try_from(r.u64()?).map_err(|_| "position out of range")?;
                if at < next || at >= len {
                    return Err(format!("position {at} out of order or past the length {len}"));
                }
                next = at + 1;
                changes.push((at, r.id()?));
            }
            Stored::Delta { base, len, changes }
        }
        k => return Err(format!("content list kind {k} is unknown")),
    };
    if r.at != data.len() {
        return Err("trailing bytes after the list".into());
    }
    Ok(stored)
}

/// `base` (the resolved base list) with a delta's changes applied.
///
/// # Errors
/// A position past the base that the delta leaves unset.
pub(crate) fn apply(
    mut base: Vec<Id>,
    len: usize,
    changes: &[(usize, Id)],
) -> Result<Vec<Id>, String> {
    let old_len = base.len();
    // Checked before anything is allocated: a length the entries do not fill is refused, so a
    // damaged length cannot ask for more memory than the blob's own size accounts for.
    let set = changes.iter().filter(|(at, _)| *at >= old_len).count();
    if set != len.saturating_sub(old_len) {
        return Err(format!(
            "the list grows from {old_len} to {len} entries but only {set} new ones are given"
        ));
    }
    base.resize(len, Id([0; 32]));
    for (at, id) in changes {
        base[*at] = *id;
    }
    Ok(base)
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.data.len());
        let end = end.ok_or("the list is cut short")?;
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| "the list is cut short")?))
    }

    fn id(&mut self) -> Result<Id, String> {
        let b = self.take(32)?;
        Ok(Id(b.try_into().map_err(|_| "the list is cut short")?))
    }

    /// An entry count, checked against the bytes left (`each` per entry) before anything is
    /// allocated for it.
    fn count(&mut self, each: usize) -> Result<usize, String> {
        let n = usize::try_from(self.u64()?).map_err(|_| "entry count out of range")?;
        if n.checked_mul(each).is_none_or(|b| b > self.data.len() - self.at) {
            return Err(format!("{n} entries do not fit in the list"));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> Id {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&n.to_le_bytes());
        Id(b)
    }

    fn ids(r: std::ops::Range<u32>) -> Vec<Id> {
        r.map(id).collect()
    }

    #[test]
    fn a_whole_list_round_trips() {
        let list = ids(0..3000);
        assert_eq!(decode(&encode_whole(&list)).unwrap(), Stored::Whole(list));
    }

    #[test]
    fn a_delta_rebuilds_the_new_list_whether_it_grows_or_shrinks() {
        let old = ids(0..2000);
        for new_len in [1500u32, 2000, 2300] {
            let mut new = ids(0..new_len);
            for i in (0..new.len()).step_by(50) {
                new[i] = id(1_000_000 + i as u32);
            }
            let data = encode_delta(&id(7), &old, &new).expect("few changes make a delta");
            let Stored::Delta { base, len, changes } = decode(&data).unwrap() else {
                panic!("a delta decodes as a delta")
            };
            assert_eq!(base, id(7));
            assert_eq!(apply(old.clone(), len, &changes).unwrap(), new, "length {new_len}");
        }
    }

    #[test]
    fn too_many_changes_make_no_delta() {
        let old = ids(0..1000);
        let new = ids(5000..6000);
        assert!(encode_delta(&id(1), &old, &new).is_none());
    }

    #[test]
    fn damaged_lists_are_refused_with_the_reason() {
        let list = ids(0..1200);
        let whole = encode_whole(&list);
        assert!(decode(&whole[..whole.len() - 1]).unwrap_err().contains("do not fit"));
        let mut longer = whole.clone();
        longer.push(0);
        assert!(decode(&longer).unwrap_err().contains("trailing"));
        let mut other = whole.clone();
        other[0] = b'X';
        assert!(decode(&other).is_err());
        // A delta that grows the list must set every new position, checked before the list
        // grows (a damaged length must not allocate).
        let err = apply(ids(0..10), 12, &[(10, id(99))]).unwrap_err();
        assert!(err.contains("only 1 new"), "{err}");
        assert!(apply(ids(0..10), 1 << 40, &[]).unwrap_err().contains("only 0 new"));
        // Positions must increase.
        let mut delta = encode_delta(&id(1), &ids(0..1000), &{
            let mut n = ids(0..1000);
            n[3] = id(5000);
            n[9] = id(5001);
            n
        })
        .unwrap();
        let first = HEAD + 32 + 16;
        delta[first..first + 8].copy_from_slice(&20u64.to_le_bytes());
        assert!(decode(&delta).unwrap_err().contains("out of order"));
    }
}
