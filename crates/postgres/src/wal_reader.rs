//! Reading a WAL segment's records far enough to know what a point-in-time restore needs: the
//! commit and abort times it holds (a time target is reached at the first one past it) and the
//! named restore points (`pg_create_restore_point`).
//!
//! The layout read here has been stable since PostgreSQL 9.5: pages of `XLOG_BLCKSZ` bytes, each
//! with a page header (24 bytes; 40 on a segment's first page, which also carries the system
//! identifier and segment size), records aligned to 8 bytes that may span pages, each with a
//! 24-byte header (`xl_tot_len`, `xl_xid`, `xl_prev`, `xl_info`, `xl_rmid`, `xl_crc`) and a
//! CRC-32C over the whole record. Reading stops at the first page that does not belong to this
//! segment (a recycled file's stale tail), the first record whose CRC fails or whose length is
//! zero (never written), or a WAL switch. Only records whose CRC verifies are reported.

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::lsn::Lsn;

const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
const SHORT_HEADER: usize = 24;
const LONG_HEADER: usize = 40;
const RECORD_HEADER: usize = 24;

const RM_XLOG_ID: u8 = 0;
const RM_XACT_ID: u8 = 1;
const XLOG_SWITCH: u8 = 0x40;
const XLOG_RESTORE_POINT: u8 = 0x70;
const XLOG_XACT_OPMASK: u8 = 0x70;
const XLOG_XACT_COMMIT: u8 = 0x00;
const XLOG_XACT_ABORT: u8 = 0x20;
const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const POSTGRES_EPOCH_US: i64 = 946_684_800_000_000;

/// A named restore point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePoint {
    /// The name given to `pg_create_restore_point`.
    pub name: String,
    /// Where recovery to it stops: the end of its record.
    pub lsn: Lsn,
    /// When it was created.
    pub time: jiff::Timestamp,
}

/// What one WAL segment holds, as far as recovery targets go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentSummary {
    /// The cluster's system identifier (from the segment's first page).
    pub system_identifier: u64,
    /// Timeline of the segment's first page.
    pub timeline: u32,
    /// The segment's first byte.
    pub start: Lsn,
    /// The end of the last whole record read (8-aligned, as the server reports ends).
    pub end: Lsn,
    /// The earliest commit or abort time in the segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_xact: Option<jiff::Timestamp>,
    /// The latest commit or abort time in the segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_xact: Option<jiff::Timestamp>,
    /// Restore points created in the segment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restore_points: Vec<RestorePoint>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

fn max_align(n: usize) -> usize {
    (n + 7) & !7
}

/// CRC-32C (Castagnoli), as PostgreSQL's `COMP_CRC32C`, without the final inversion.
struct Crc32c([u32; 256]);

impl Crc32c {
    fn new() -> Self {
        let mut table = [0u32; 256];
        for (i, slot) in table.iter_mut().enumerate() {
            let mut c = u32::try_from(i).unwrap_or(0);
            for _ in 0..8 {
                c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
            }
            *slot = c;
        }
        Crc32c(table)
    }

    fn update(&self, mut crc: u32, data: &[u8]) -> u32 {
        for &b in data {
            crc = self.0[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
        }
        crc
    }
}

/// A segment's bytes, read as the record stream they hold.
struct Pages<'a> {
    data: &'a [u8],
    page: usize,
    start: u64,
    magic: u16,
}

impl Pages<'_> {
    /// Whether the page at `offset` (a multiple of the page size) is this segment's, and
    /// whether it says it starts with a continuation.
    fn page_ok(&self, offset: usize) -> Option<u16> {
        if offset + SHORT_HEADER > self.data.len() {
            return None;
        }
        let info = u16_at(self.data, offset + 2);
        let addr = u64_at(self.data, offset + 8);
        (u16_at(self.data, offset) == self.magic && addr == self.start + offset as u64)
            .then_some(info)
    }

    /// Copies `n` record bytes starting at segment offset `off`, skipping the page headers in
    /// between; returns them and the offset after them, or `None` past the end of valid pages.
    fn take(&self, mut off: usize, mut n: usize, out: &mut Vec<u8>) -> Option<usize> {
        out.clear();
        while n > 0 {
            if off.is_multiple_of(self.page) {
                let info = self.page_ok(off)?;
                // A page in the middle of a record must say it continues one.
                if !out.is_empty() && info & XLP_FIRST_IS_CONTRECORD == 0 {
                    return None;
                }
                off += if off == 0 { LONG_HEADER } else { SHORT_HEADER };
            }
            let page_end = (off / self.page + 1) * self.page;
            let chunk = n.min(page_end - off);
            if off + chunk > self.data.len() {
                return None;
            }
            out.extend_from_slice(&self.data[off..off + chunk]);
            off += chunk;
            n -= chunk;
        }
        Some(off)
    }
}

/// Reads a WAL segment (whole, or the beginning of one, as a `.partial` file holds).
///
/// # Errors
/// The data does not start with a segment's first page.
pub fn summarize(data: &[u8]) -> Result<SegmentSummary, Error> {
    if data.len() < LONG_HEADER {
        return Err(Error::Invalid(format!("a WAL segment of {} bytes is too short", data.len())));
    }
    let info = u16_at(data, 2);
    if info & XLP_LONG_HEADER == 0 {
        return Err(Error::Invalid("not a WAL segment: its first page has no long header".into()));
    }
    let page = u32_at(data, 36) as usize;
    if !page.is_power_of_two() || !(1024..=65536).contains(&page) {
        return Err(Error::Invalid(format!("not a WAL segment: page size {page}")));
    }
    let start = u64_at(data, 8);
    let pages = Pages { data, page, start, magic: u16_at(data, 0) };
    let mut summary = SegmentSummary {
        system_identifier: u64_at(data, 24),
        timeline: u32_at(data, 4),
        start: Lsn(start),
        end: Lsn(start),
        first_xact: None,
        last_xact: None,
        restore_points: Vec::new(),
    };
    let crc = Crc32c::new();
    // Skip the tail of a record begun in the previous segment.
    let mut off = LONG_HEADER;
    if info & XLP_FIRST_IS_CONTRECORD != 0 {
        let rem = u32_at(data, 16) as usize;
        let mut scratch = Vec::new();
        let Some(after) = pages.take(off, rem, &mut scratch) else { return Ok(summary) };
        off = max_align(after);
    }
    let mut rec = Vec::new();
    // Records are 8-aligned, so a record's length field never straddles a page; the rest of
    // its header may, which `take` handles like any other part of it.
    while off < data.len() {
        let Some(_) = pages.take(off, 4, &mut rec) else { break };
        let tot_len = u32_at(&rec, 0) as usize;
        if !(RECORD_HEADER..=1 << 30).contains(&tot_len) {
            break;
        }
        let Some(after) = pages.take(off, tot_len, &mut rec) else { break };
        let mut c = crc.update(!0, &rec[RECORD_HEADER..]);
        c = crc.update(c, &rec[..20]);
        if !c != u32_at(&rec, 20) {
            break;
        }
        // Ends are reported 8-aligned, as the server reports them (pg_current_wal_lsn(),
        // pg_create_restore_point()).
        let end = Lsn(start + max_align(after) as u64);
        summary.end = end;
        let (rmid, info) = (rec[17], rec[16] & 0xf0);
        match rmid {
            RM_XACT_ID => {
                let op = rec[16] & XLOG_XACT_OPMASK;
                if matches!(
                    op,
                    XLOG_XACT_COMMIT
                        | XLOG_XACT_ABORT
                        | XLOG_XACT_COMMIT_PREPARED
                        | XLOG_XACT_ABORT_PREPARED
                ) && let Some(main) = main_data(&rec)
                    && main.len() >= 8
                {
                    let t = timestamp(i64::from_le_bytes(main[..8].try_into().unwrap_or_default()));
                    if let Some(t) = t {
                        summary.first_xact = Some(summary.first_xact.map_or(t, |f| f.min(t)));
                        summary.last_xact = Some(summary.last_xact.map_or(t, |l| l.max(t)));
                    }
                }
            }
            RM_XLOG_ID if info == XLOG_RESTORE_POINT => {
                if let Some(main) = main_data(&rec)
                    && main.len() >= 8
                {
                    let time =
                        timestamp(i64::from_le_bytes(main[..8].try_into().unwrap_or_default()));
                    let name = String::from_utf8_lossy(
                        main[8..].split(|&b| b == 0).next().unwrap_or_default(),
                    )
                    .into_owned();
                    if let Some(time) = time {
                        summary.restore_points.push(RestorePoint { name, lsn: end, time });
                    }
                }
            }
            RM_XLOG_ID if info == XLOG_SWITCH => break,
            _ => {}
        }
        off = max_align(after);
    }
    Ok(summary)
}

fn timestamp(postgres_us: i64) -> Option<jiff::Timestamp> {
    jiff::Timestamp::from_microsecond(postgres_us.checked_add(POSTGRES_EPOCH_US)?).ok()
}

/// A record's main data: the last bytes, whose length the headers after the fixed one give.
/// `None` for records with block references (no commit or restore point has them).
fn main_data(rec: &[u8]) -> Option<&[u8]> {
    let mut pos = RECORD_HEADER;
    let len = loop {
        match *rec.get(pos)? {
            255 => break usize::from(*rec.get(pos + 1)?),
            254 => break u32::from_le_bytes(rec.get(pos + 1..pos + 5)?.try_into().ok()?) as usize,
            253 => pos += 3,
            252 => pos += 5,
            _ => return None,
        }
    };
    rec.get(rec.len().checked_sub(len)?..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        let c = Crc32c::new();
        assert_eq!(!c.update(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn too_short_or_headerless_data_is_not_a_segment() {
        assert!(summarize(&[0u8; 10]).is_err());
        assert!(summarize(&[0u8; 8192]).is_err());
    }

    #[test]
    fn main_data_is_found_behind_short_long_and_origin_headers() {
        let mut rec = vec![0u8; RECORD_HEADER];
        rec.extend_from_slice(&[253, 1, 0, 255, 3]);
        rec.extend_from_slice(b"abc");
        assert_eq!(main_data(&rec), Some(&b"abc"[..]));
        let mut rec = vec![0u8; RECORD_HEADER];
        rec.extend_from_slice(&[254, 2, 0, 0, 0]);
        rec.extend_from_slice(b"xy");
        assert_eq!(main_data(&rec), Some(&b"xy"[..]));
        let mut rec = vec![0u8; RECORD_HEADER];
        rec.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(main_data(&rec), None, "a block reference");
    }
}
