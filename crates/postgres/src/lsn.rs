//! WAL positions and WAL file names.
//!
//! An LSN is a byte position in the write-ahead log, written `X/Y` (high and low 32 bits in hex).
//! The log is cut into segments of `wal_segment_size` bytes (16 MiB unless initdb chose
//! otherwise); a segment's file name is its timeline and segment number as 24 hex digits
//! (`TTTTTTTT` `XXXXXXXX` `YYYYYYYY`, where `X`/`Y` split the segment number at 4 GiB of WAL).

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The segment size PostgreSQL uses unless initdb was told otherwise.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

/// A log sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl FromStr for Lsn {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad =
            || Error::Invalid(format!("{s:?} is not an LSN (expected X/Y in hex, 0/16B3740)"));
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// In JSON, as PostgreSQL writes it (`"0/16B3740"`).
impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A WAL segment: timeline and segment number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Segment {
    /// Timeline id.
    pub timeline: u32,
    /// Segment number (LSN / segment size).
    pub number: u64,
}

fn segments_per_xlogid(segment_size: u64) -> u64 {
    0x1_0000_0000 / segment_size
}

impl Segment {
    /// The segment holding `lsn` on `timeline`.
    pub fn of(timeline: u32, lsn: Lsn, segment_size: u64) -> Self {
        Segment { timeline, number: lsn.0 / segment_size }
    }

    /// The segment holding the WAL that ends at `end` (exclusive): an end exactly on a segment
    /// boundary is the previous segment's last byte, as PostgreSQL's `XLByteToPrevSeg` has it.
    pub fn ending_at(timeline: u32, end: Lsn, segment_size: u64) -> Self {
        Self::of(timeline, Lsn(end.0.saturating_sub(1)), segment_size)
    }

    /// Its file name.
    pub fn name(&self, segment_size: u64) -> String {
        let per = segments_per_xlogid(segment_size);
        format!("{:08X}{:08X}{:08X}", self.timeline, self.number / per, self.number % per)
    }

    /// Its first byte.
    pub fn start(&self, segment_size: u64) -> Lsn {
        Lsn(self.number * segment_size)
    }

    /// The next segment on the same timeline.
    pub fn next(&self) -> Self {
        Segment { timeline: self.timeline, number: self.number + 1 }
    }
}

/// What a file of the WAL archive is, by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalFile {
    /// A whole segment.
    Segment(Segment),
    /// A segment's beginning, as written when a timeline ended mid-segment or a stream stopped
    /// (`….partial`).
    Partial(Segment),
    /// A timeline history file (`0000000N.history`).
    History(u32),
    /// A backup history file (`<segment>.<offset>.backup`).
    BackupHistory(Segment),
}

fn hex8(s: &str) -> Option<u64> {
    (s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
}

fn segment_of(name: &str, segment_size: u64) -> Option<Segment> {
    if name.len() != 24 {
        return None;
    }
    let timeline = u32::try_from(hex8(&name[0..8])?).ok()?;
    let per = segments_per_xlogid(segment_size);
    let (hi, lo) = (hex8(&name[8..16])?, hex8(&name[16..24])?);
    if lo >= per {
        return None;
    }
    Some(Segment { timeline, number: hi * per + lo })
}

impl WalFile {
    /// Classifies a file name PostgreSQL hands `archive_command` or `restore_command`; `None`
    /// for anything else.
    pub fn parse(name: &str, segment_size: u64) -> Option<WalFile> {
        if let Some(tli) = name.strip_suffix(".history") {
            return Some(WalFile::History(u32::try_from(hex8(tli)?).ok()?));
        }
        if let Some(seg) = name.strip_suffix(".partial") {
            return segment_of(seg, segment_size).map(WalFile::Partial);
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            let (seg, offset) = rest.split_once('.')?;
            hex8(offset)?;
            return segment_of(seg, segment_size).map(WalFile::BackupHistory);
        }
        segment_of(name, segment_size).map(WalFile::Segment)
    }
}

/// Checks a WAL segment size: a power of two from 1 MiB to 1 GiB, as initdb allows.
///
/// # Errors
/// Anything else.
pub fn check_segment_size(size: u64) -> Result<u64, Error> {
    if size.is_power_of_two() && ((1 << 20)..=(1 << 30)).contains(&size) {
        Ok(size)
    } else {
        Err(Error::Invalid(format!(
            "WAL segment size {size}: must be a power of two between 1 MiB and 1 GiB"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_in_postgres_notation() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn(0));
        assert!("16B374D848".parse::<Lsn>().is_err());
        assert!("x/1".parse::<Lsn>().is_err());
    }

    #[test]
    fn segment_names_follow_postgres() {
        let size = DEFAULT_SEGMENT_SIZE;
        let seg = Segment::of(1, "0/3000028".parse().unwrap(), size);
        assert_eq!(seg.name(size), "000000010000000000000003");
        // 256 segments of 16 MiB make one "xlogid".
        let seg = Segment::of(2, "1/FF000000".parse().unwrap(), size);
        assert_eq!(seg.name(size), "0000000200000001000000FF");
        assert_eq!(seg.next().name(size), "000000020000000200000000");
        assert_eq!(WalFile::parse("0000000200000001000000FF", size), Some(WalFile::Segment(seg)));
        // With 64 MiB segments there are 64 per xlogid.
        let big = 64 << 20;
        assert_eq!(Segment { timeline: 1, number: 64 }.name(big), "000000010000000100000000");
        assert_eq!(WalFile::parse("000000010000000000000040", big), None);
    }

    #[test]
    fn archive_file_kinds() {
        let size = DEFAULT_SEGMENT_SIZE;
        let seg = Segment { timeline: 1, number: 3 };
        assert_eq!(WalFile::parse("00000002.history", size), Some(WalFile::History(2)));
        assert_eq!(
            WalFile::parse("000000010000000000000003.partial", size),
            Some(WalFile::Partial(seg))
        );
        assert_eq!(
            WalFile::parse("000000010000000000000003.00000028.backup", size),
            Some(WalFile::BackupHistory(seg))
        );
        assert_eq!(WalFile::parse("RECOVERYXLOG", size), None);
        assert_eq!(WalFile::parse("../00000001.history", size), None);
    }
}
