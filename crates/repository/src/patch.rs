//! Patched data blobs (format §9.2): a blob stored as the byte ranges that differ from its base.

use crate::error::{Error, Result};

const MAGIC: &[u8; 6] = b"HFPTCH";
const HEADER: usize = 12;

/// Builds the payload of a patch that replaces `ranges` (sorted, disjoint `(offset, length)`
/// byte ranges) of the base with the same ranges of `target`.
///
/// # Panics
/// Never for ranges inside `target` (the caller derives them from its blocks).
pub fn encode(target: &[u8], ranges: &[(u32, u32)]) -> Vec<u8> {
    let literal: usize = ranges.iter().map(|r| r.1 as usize).sum();
    let mut out = Vec::with_capacity(HEADER + 8 * ranges.len() + literal);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
    for (offset, length) in ranges {
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&length.to_le_bytes());
    }
    for &(offset, length) in ranges {
        out.extend_from_slice(&target[offset as usize..(offset + length) as usize]);
    }
    out
}

/// The ranges a set of differing blocks makes: adjacent blocks merged, the last one cut at the
/// blob's end.
pub fn ranges_of(
    blocks: impl IntoIterator<Item = usize>,
    block: usize,
    len: usize,
) -> Vec<(u32, u32)> {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for b in blocks {
        let start = b * block;
        if start >= len {
            continue;
        }
        let end = (start + block).min(len);
        match ranges.last_mut() {
            Some(last) if (last.0 + last.1) as usize == start => {
                last.1 = (end - last.0 as usize) as u32
            }
            _ => ranges.push((start as u32, (end - start) as u32)),
        }
    }
    ranges
}

/// The plaintext a patch payload makes of its base's plaintext (consumed). The caller verifies
/// the result against the blob's id.
///
/// # Errors
/// `Invalid` describing a malformed payload.
pub fn apply(payload: &[u8], mut base: Vec<u8>) -> Result<Vec<u8>> {
    let bad = |why: &str| Error::Invalid(format!("malformed patch: {why}"));
    if payload.len() < HEADER || &payload[..6] != MAGIC || payload[6..8] != [1, 0] {
        return Err(bad("bad magic or format"));
    }
    let n = u32::from_le_bytes(payload[8..12].try_into().unwrap_or_default()) as usize;
    let table_end = n
        .checked_mul(8)
        .and_then(|t| t.checked_add(HEADER))
        .filter(|&e| e <= payload.len())
        .ok_or_else(|| bad("range table beyond the payload"))?;
    let mut literal = &payload[table_end..];
    let mut previous_end = 0usize;
    for entry in payload[HEADER..table_end].chunks_exact(8) {
        let offset = u32::from_le_bytes(entry[..4].try_into().unwrap_or_default()) as usize;
        let length = u32::from_le_bytes(entry[4..].try_into().unwrap_or_default()) as usize;
        let end = offset + length;
        if offset < previous_end || end > base.len() || length == 0 {
            return Err(bad("ranges out of order, empty, or beyond the base"));
        }
        if literal.len() < length {
            return Err(bad("fewer literal bytes than its ranges"));
        }
        base[offset..end].copy_from_slice(&literal[..length]);
        literal = &literal[length..];
        previous_end = end;
    }
    if !literal.is_empty() {
        return Err(bad("more literal bytes than its ranges"));
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_turns_its_base_into_the_target() {
        let base: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut target = base.clone();
        target[10] = 0xff;
        target[40_000..40_100].fill(7);
        target[99_999] = 1;
        let ranges = ranges_of([0, 2, 3, 6], 16_384, target.len());
        assert_eq!(ranges, vec![(0, 16_384), (32_768, 32_768), (98_304, 1_696)]);
        let payload = encode(&target, &ranges);
        assert_eq!(apply(&payload, base.clone()).unwrap(), target);
    }

    #[test]
    fn malformed_patches_are_refused() {
        let base = vec![0u8; 1000];
        let good = encode(&[1u8; 1000], &[(10, 20), (100, 5)]);
        assert!(apply(&good, base.clone()).is_ok());
        // Short literal, extra literal, bad magic, a range beyond the base, ranges out of order.
        assert!(apply(&good[..good.len() - 1], base.clone()).is_err());
        let mut extra = good.clone();
        extra.push(0);
        assert!(apply(&extra, base.clone()).is_err());
        let mut magic = good.clone();
        magic[0] = b'x';
        assert!(apply(&magic, base.clone()).is_err());
        assert!(apply(&encode(&[0u8; 2000], &[(990, 20)]), base.clone()).is_err());
        let swapped = encode(&[1u8; 1000], &[(100, 5), (10, 20)]);
        assert!(apply(&swapped, base.clone()).is_err());
        assert!(apply(&good[..8], base).is_err());
    }
}
