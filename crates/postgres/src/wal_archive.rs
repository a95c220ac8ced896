//! The WAL archive: WAL files kept in the repository as archive files (format §16) named
//! `pg-<system identifier>-<WAL file name>`, so clusters sharing a repository never mix their
//! segments, each with a header summarising what a restore needs to know without reading it
//! ([`SegmentSummary`]).
//!
//! `push` is what `archive_command` runs: it returns only once the file is durable, accepts the
//! same file again (PostgreSQL retries after a crash between our success and its bookkeeping)
//! and refuses a different file under an existing name. `fetch` is what `restore_command` runs.
//! `catalog` lists what is archived, per timeline, with every gap.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use holdfast_repository::Repository;
use holdfast_repository::archive::{self, Stored};
use holdfast_repository::backend::ObjectInfo;
use serde::{Deserialize, Serialize};

use crate::lsn::{DEFAULT_SEGMENT_SIZE, Lsn, Segment, WalFile, check_segment_size};
use crate::wal_reader::{SegmentSummary, summarize};
use crate::{Error, control};

/// The archive file name of WAL file `file` of cluster `system_identifier`.
pub fn archive_name(system_identifier: u64, file: &str) -> String {
    format!("pg-{system_identifier}-{file}")
}

/// What the header of an archived WAL file records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalMeta {
    /// The segment size of the cluster (from the segment itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_size: Option<u64>,
    /// For segments and partial segments: what they hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<SegmentSummary>,
}

/// How a push went, per file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pushed {
    /// The WAL file name.
    pub file: String,
    /// `true` when it was already archived with the same content (a retry).
    pub already_archived: bool,
    /// Bytes of WAL.
    pub size: u64,
}

/// Where the cluster whose WAL is pushed or fetched lives: its system identifier is read from
/// `global/pg_control` there. `archive_command` and `restore_command` run in the data
/// directory, so the default is the working directory.
pub fn system_identifier(pgdata: Option<&Path>) -> Result<u64, Error> {
    let dir = pgdata.map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    control::system_identifier_of(&dir).map_err(|e| {
        Error::Invalid(format!(
            "cannot tell which cluster this WAL belongs to ({e}): run in the data directory, as \
             archive_command and restore_command do, or pass --pgdata or --system-identifier"
        ))
    })
}

/// Archives one WAL file of cluster `system_identifier`.
///
/// # Errors
/// Not a WAL file, a segment of another cluster or of the wrong size, the name already holds
/// different content, repository errors.
pub fn push(repo: &Repository, path: &Path, system_identifier: u64) -> Result<Pushed, Error> {
    let file = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Invalid(format!("{}: no file name", path.display())))?
        .to_string();
    let data = std::fs::read(path).map_err(Error::io(format!("reading {}", path.display())))?;
    let meta = describe(&file, &data, system_identifier)?;
    let json = serde_json::to_value(&meta).map_err(|e| Error::Invalid(e.to_string()))?;
    let stored = archive::store(repo, &archive_name(system_identifier, &file), &data, json)?;
    Ok(Pushed { file, already_archived: stored == Stored::AlreadyThere, size: data.len() as u64 })
}

/// Checks a WAL file against its name and cluster; its header metadata.
fn describe(file: &str, data: &[u8], system_identifier: u64) -> Result<WalMeta, Error> {
    // The size a segment claims is checked below against its name and length.
    let claimed = claimed_segment_size(data).unwrap_or(DEFAULT_SEGMENT_SIZE);
    let kind = WalFile::parse(file, claimed).ok_or_else(|| {
        Error::Invalid(format!(
            "{file} is not a WAL file name (a segment, .partial, .history or .backup file)"
        ))
    })?;
    let (segment, whole) = match kind {
        WalFile::Segment(s) => (s, true),
        WalFile::Partial(s) => (s, false),
        WalFile::History(_) | WalFile::BackupHistory(_) => {
            return Ok(WalMeta { segment_size: None, summary: None });
        }
    };
    let summary = summarize(data).map_err(|e| Error::Invalid(format!("{file}: {e}")))?;
    if summary.system_identifier != system_identifier {
        return Err(Error::Invalid(format!(
            "{file} belongs to the cluster with system identifier {}, not {system_identifier}: \
             is archive_command pointing at the right data directory?",
            summary.system_identifier
        )));
    }
    if summary.start != segment.start(claimed) {
        return Err(Error::Invalid(format!(
            "{file} starts at {} but its name says {}: not the segment it is named",
            summary.start,
            segment.start(claimed)
        )));
    }
    if whole && data.len() as u64 != claimed {
        return Err(Error::Invalid(format!(
            "{file} is {} bytes; a segment of this cluster is {claimed}",
            data.len()
        )));
    }
    Ok(WalMeta { segment_size: Some(claimed), summary: Some(summary) })
}

/// The segment size a segment's first page header records (`xlp_seg_size`), if it is one.
pub(crate) fn claimed_segment_size(data: &[u8]) -> Option<u64> {
    data.get(32..36)
        .map(|b| u64::from(u32::from_le_bytes(b.try_into().unwrap_or_default())))
        .filter(|s| check_segment_size(*s).is_ok())
}

/// Whether a fetch found the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// Written to the destination.
    Written(u64),
    /// Not in the archive (what `restore_command` reports with a non-zero exit).
    NotArchived,
}

/// Writes archived WAL file `file` to `dest`, completely or not at all (a temporary name in the
/// same directory, synced, then renamed).
///
/// # Errors
/// Repository errors other than "not archived", a corrupt file, local I/O errors.
pub fn fetch(
    repo: &Repository,
    system_identifier: u64,
    file: &str,
    dest: &Path,
) -> Result<Fetched, Error> {
    let name = archive_name(system_identifier, file);
    if !archive::valid_name(&name) {
        return Err(Error::Invalid(format!("{file} is not a WAL file name")));
    }
    let (_, data) = match archive::load(repo, &name) {
        Ok(found) => found,
        Err(holdfast_repository::Error::Backend(e)) if e.is_not_found() => {
            return Ok(Fetched::NotArchived);
        }
        Err(e) => return Err(e.into()),
    };
    write_atomically(dest, &data)?;
    Ok(Fetched::Written(data.len() as u64))
}

/// Writes `data` to `dest` through a synced temporary file renamed into place.
pub(crate) fn write_atomically(dest: &Path, data: &[u8]) -> Result<(), Error> {
    let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.holdfast-tmp",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("wal")
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dest)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::Io { context: format!("writing {}", dest.display()), source: e }
    })
}

/// The archived WAL of one cluster, by kind.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Segment numbers per timeline.
    pub segments: BTreeMap<u32, Vec<u64>>,
    /// Partial segments (timeline, number).
    pub partial: Vec<Segment>,
    /// Timeline history files present.
    pub history: Vec<u32>,
    /// Every archived file name (WAL names, not archive names).
    pub files: Vec<String>,
    /// The cluster's segment size as its base backups record it (else the default).
    pub segment_size: u64,
    /// Bytes the cluster's archive files take in the repository (as stored: encrypted and
    /// compressed, headers included).
    pub stored_bytes: u64,
}

/// The system identifiers that have WAL in the repository.
///
/// # Errors
/// Repository errors.
pub fn clusters(repo: &Repository) -> Result<Vec<u64>, Error> {
    Ok(clusters_in(&archive::list(repo)?))
}

/// The system identifiers that have WAL in a listing of the archive files.
pub fn clusters_in(listed: &[ObjectInfo]) -> Vec<u64> {
    let mut ids: Vec<u64> = listed
        .iter()
        .filter_map(|o| o.name.strip_prefix("pg-")?.split_once('-')?.0.parse().ok())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Lists the archived WAL of cluster `system_identifier`.
///
/// # Errors
/// Repository errors.
pub fn catalog(
    repo: &Repository,
    system_identifier: u64,
    segment_size: u64,
) -> Result<Catalog, Error> {
    let prefix = format!("pg-{system_identifier}-");
    let mut cat = Catalog { segment_size, ..Default::default() };
    for object in archive::list(repo)? {
        let Some(file) = object.name.strip_prefix(&prefix) else { continue };
        cat.stored_bytes += object.size;
        match WalFile::parse(file, segment_size) {
            Some(WalFile::Segment(s)) => cat.segments.entry(s.timeline).or_default().push(s.number),
            Some(WalFile::Partial(s)) => cat.partial.push(s),
            Some(WalFile::History(t)) => cat.history.push(t),
            Some(WalFile::BackupHistory(_)) | None => {}
        }
        cat.files.push(file.to_string());
    }
    for numbers in cat.segments.values_mut() {
        numbers.sort_unstable();
    }
    Ok(cat)
}

impl Catalog {
    /// Whether segment `s` is archived.
    pub fn has(&self, s: Segment) -> bool {
        self.segments.get(&s.timeline).is_some_and(|v| v.binary_search(&s.number).is_ok())
    }

    /// The last segment of the unbroken run that starts at `from`, or `None` if `from` itself
    /// is missing.
    pub fn run_end(&self, from: Segment) -> Option<Segment> {
        let numbers = self.segments.get(&from.timeline)?;
        let mut at = numbers.binary_search(&from.number).ok()?;
        while at + 1 < numbers.len() && numbers[at + 1] == numbers[at] + 1 {
            at += 1;
        }
        Some(Segment { timeline: from.timeline, number: numbers[at] })
    }

    /// The first archived segment after `s` on its timeline, if any (what follows a gap).
    pub fn next_after(&self, s: Segment) -> Option<Segment> {
        let numbers = self.segments.get(&s.timeline)?;
        let at = numbers.partition_point(|&n| n <= s.number);
        numbers.get(at).map(|&number| Segment { timeline: s.timeline, number })
    }

    /// The newest unbroken run of the newest timeline, as (first, last) segment: what a restore
    /// to the latest point replays, and what grows as WAL is archived.
    pub fn newest_run(&self) -> Option<(Segment, Segment)> {
        let (&timeline, _) = self.segments.iter().rev().find(|(_, v)| !v.is_empty())?;
        let (first, last) = *self.runs(timeline).last()?;
        Some((Segment { timeline, number: first }, Segment { timeline, number: last }))
    }

    /// The unbroken runs of one timeline, as (first, last) segment numbers.
    pub fn runs(&self, timeline: u32) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for &n in self.segments.get(&timeline).into_iter().flatten() {
            match runs.last_mut() {
                Some((_, last)) if *last + 1 == n => *last = n,
                _ => runs.push((n, n)),
            }
        }
        runs
    }
}

/// The header summary of an archived segment.
///
/// # Errors
/// Not archived, a damaged header, repository errors.
pub fn summary(
    repo: &Repository,
    system_identifier: u64,
    segment: Segment,
    segment_size: u64,
) -> Result<Option<SegmentSummary>, Error> {
    let name = archive_name(system_identifier, &segment.name(segment_size));
    let header = archive::header_of(repo, &name)?;
    let meta: WalMeta = serde_json::from_value(header.meta)
        .map_err(|e| Error::Invalid(format!("archive/{name}: header metadata: {e}")))?;
    Ok(meta.summary)
}

/// The recoverable time range of cluster `system_identifier`: from the first to the newest
/// transaction (commit or abort) archived in the newest unbroken run of the newest timeline (see
/// [`RangeCache`]). `None` while that run holds no transaction.
///
/// # Errors
/// Repository errors, a damaged segment header.
pub fn recoverable_range(
    repo: &Repository,
    system_identifier: u64,
    segment_size: u64,
) -> Result<Option<(jiff::Timestamp, jiff::Timestamp)>, Error> {
    let cat = catalog(repo, system_identifier, segment_size)?;
    RangeCache::default().range(&cat, |s| summary(repo, system_identifier, s, segment_size))
}

/// Computes recoverable ranges as the archive grows, remembering the start: the first
/// transaction of a run does not change while the run only grows at its end, so it is read once
/// per run instead of once per segment archived.
#[derive(Debug, Clone, Default)]
pub struct RangeCache {
    /// The first segment of the run the start was found for, and the start.
    start: Option<(Segment, jiff::Timestamp)>,
}

impl RangeCache {
    /// The range of `cat`'s newest run: the start is the first transaction of the run's first
    /// segment that has one; the end the newest transaction of its last segment that has one,
    /// walking back (a segment the server switched away from while idle holds none). `head` reads
    /// a segment's header summary.
    ///
    /// # Errors
    /// What `head` returns.
    pub fn range(
        &mut self,
        cat: &Catalog,
        mut head: impl FnMut(Segment) -> Result<Option<SegmentSummary>, Error>,
    ) -> Result<Option<(jiff::Timestamp, jiff::Timestamp)>, Error> {
        let Some((first, last)) = cat.newest_run() else { return Ok(None) };
        let mut s = last;
        let end = loop {
            let end = head(s)?.and_then(|sum| sum.last_xact);
            if end.is_some() || s == first {
                break end;
            }
            s = Segment { timeline: s.timeline, number: s.number - 1 };
        };
        let Some(end) = end else { return Ok(None) };
        // The end was found at or after segment `s`'s start, so the run's first transaction is in
        // a segment up to `s`.
        let start = match self.start {
            Some((from, start)) if from == first => start,
            _ => {
                let mut at = first;
                let start = loop {
                    if let Some(x) = head(at)?.and_then(|sum| sum.first_xact) {
                        break x;
                    }
                    if at >= s {
                        break end;
                    }
                    at = at.next();
                };
                self.start = Some((first, start));
                start
            }
        };
        Ok(Some((start, end)))
    }
}

/// One unbroken run of archived segments, for `wal status`.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// First segment's name.
    pub first: String,
    /// Last segment's name.
    pub last: String,
    /// Number of segments.
    pub segments: u64,
    /// Where the run's WAL starts.
    pub start_lsn: String,
    /// The end of the last whole record in it.
    pub end_lsn: String,
    /// The newest commit or abort in its last segment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest_transaction: Option<jiff::Timestamp>,
}

/// Missing segments between two runs.
#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    /// First missing segment.
    pub first_missing: String,
    /// Last missing segment.
    pub last_missing: String,
    /// How many.
    pub segments: u64,
}

/// One timeline's archived WAL.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineStatus {
    /// Timeline id.
    pub timeline: u32,
    /// Unbroken runs, oldest first.
    pub runs: Vec<Run>,
    /// Holes between them: a restore cannot replay across one.
    pub gaps: Vec<Gap>,
    /// Partial segments (a stream or a timeline that ended mid-segment).
    pub partial: Vec<String>,
}

/// What `holdfast pg wal status` reports for one cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The cluster.
    pub system_identifier: u64,
    /// WAL segment size used to read the names.
    pub segment_size: u64,
    /// Per timeline.
    pub timelines: Vec<TimelineStatus>,
    /// History files (the timelines a promotion created).
    pub history: Vec<u32>,
}

/// Reports the archived range of each timeline of a cluster and every gap in it.
///
/// # Errors
/// Repository errors.
pub fn status(
    repo: &Repository,
    system_identifier: u64,
    segment_size: u64,
) -> Result<Status, Error> {
    let cat = catalog(repo, system_identifier, segment_size)?;
    let mut timelines = Vec::new();
    let mut ids: Vec<u32> = cat.segments.keys().copied().collect();
    ids.extend(cat.partial.iter().map(|s| s.timeline));
    ids.sort_unstable();
    ids.dedup();
    for tli in ids {
        let runs = cat.runs(tli);
        let mut out = Vec::new();
        for &(first, last) in &runs {
            let last_seg = Segment { timeline: tli, number: last };
            let s = summary(repo, system_identifier, last_seg, segment_size)?;
            out.push(Run {
                first: Segment { timeline: tli, number: first }.name(segment_size),
                last: last_seg.name(segment_size),
                segments: last - first + 1,
                start_lsn: Lsn(first * segment_size).to_string(),
                end_lsn: s.as_ref().map_or(Lsn((last + 1) * segment_size), |s| s.end).to_string(),
                newest_transaction: s.and_then(|s| s.last_xact),
            });
        }
        let gaps = runs
            .windows(2)
            .map(|w| Gap {
                first_missing: Segment { timeline: tli, number: w[0].1 + 1 }.name(segment_size),
                last_missing: Segment { timeline: tli, number: w[1].0 - 1 }.name(segment_size),
                segments: w[1].0 - w[0].1 - 1,
            })
            .collect();
        let partial = cat
            .partial
            .iter()
            .filter(|s| s.timeline == tli)
            .map(|s| format!("{}.partial", s.name(segment_size)))
            .collect();
        timelines.push(TimelineStatus { timeline: tli, runs: out, gaps, partial });
    }
    Ok(Status { system_identifier, segment_size, timelines, history: cat.history })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat(numbers: &[u64]) -> Catalog {
        let mut c = Catalog { segment_size: DEFAULT_SEGMENT_SIZE, ..Default::default() };
        c.segments.insert(1, numbers.to_vec());
        c
    }

    #[test]
    fn runs_and_gaps_of_a_timeline() {
        let c = cat(&[2, 3, 4, 7, 8, 10]);
        assert_eq!(c.runs(1), vec![(2, 4), (7, 8), (10, 10)]);
        let seg = |number| Segment { timeline: 1, number };
        assert_eq!(c.run_end(seg(2)), Some(seg(4)));
        assert_eq!(c.run_end(seg(3)), Some(seg(4)));
        assert_eq!(c.run_end(seg(5)), None);
        assert_eq!(c.next_after(seg(4)), Some(seg(7)));
        assert_eq!(c.next_after(seg(10)), None);
        assert!(c.has(seg(8)) && !c.has(seg(9)));
        assert!(c.runs(2).is_empty());
    }

    fn xact(first: i64, last: i64) -> Option<SegmentSummary> {
        let t = |s: i64| jiff::Timestamp::from_second(s).ok();
        Some(SegmentSummary {
            system_identifier: 1,
            timeline: 1,
            start: Lsn(0),
            end: Lsn(0),
            first_xact: t(first),
            last_xact: t(last),
            restore_points: Vec::new(),
        })
    }

    #[test]
    fn the_recoverable_range_is_the_newest_run_of_the_newest_timeline() {
        let idle = || {
            let mut s = xact(0, 0);
            if let Some(s) = &mut s {
                (s.first_xact, s.last_xact) = (None, None);
            }
            s
        };
        let ts = |s: i64| jiff::Timestamp::from_second(s).unwrap();
        // Timeline 1 is older; on timeline 2, segments 3..=4 are cut off by a gap from 6..=9.
        let mut c = cat(&[1, 2]);
        c.segments.insert(2, vec![3, 4, 6, 7, 8, 9]);
        let mut reads = Vec::new();
        let summaries = |s: Segment| match (s.timeline, s.number) {
            (2, 6) => idle(),
            (2, 7) => xact(100, 110),
            (2, 8) => xact(120, 130),
            (2, 9) => idle(),
            _ => xact(1, 2),
        };
        let mut cache = RangeCache::default();
        let got = cache
            .range(&c, |s| {
                reads.push(s.number);
                Ok(summaries(s))
            })
            .unwrap();
        // The end walks back past the idle last segment; the start skips the idle first one.
        assert_eq!(got, Some((ts(100), ts(130))));
        assert_eq!(reads, vec![9, 8, 6, 7]);
        // The run grows: the start is remembered, only the end is read.
        c.segments.insert(2, vec![3, 4, 6, 7, 8, 9, 10]);
        reads.clear();
        let got = cache
            .range(&c, |s| {
                reads.push(s.number);
                Ok(if s.number == 10 { xact(140, 150) } else { summaries(s) })
            })
            .unwrap();
        assert_eq!(got, Some((ts(100), ts(150))));
        assert_eq!(reads, vec![10]);
        // The gap filled: a longer run, whose start is read again.
        c.segments.insert(2, vec![3, 4, 5, 6, 7, 8, 9, 10]);
        let got =
            cache.range(&c, |s| Ok(if s.number == 10 { xact(140, 150) } else { summaries(s) }));
        assert_eq!(got.unwrap(), Some((ts(1), ts(150))));
        // No transaction in the run: no range.
        let mut c = cat(&[5, 6]);
        c.segments.insert(1, vec![5, 6]);
        assert_eq!(RangeCache::default().range(&c, |_| Ok(idle())).unwrap(), None);
        assert_eq!(RangeCache::default().range(&cat(&[]), |_| Ok(idle())).unwrap(), None);
    }

    #[test]
    fn a_file_that_is_not_wal_is_refused_by_name() {
        let err = describe("postgresql.conf", b"", 1).unwrap_err();
        assert!(err.to_string().contains("not a WAL file name"), "{err}");
        // History files are archived as they are.
        assert_eq!(
            describe("00000002.history", b"1\t0/3000000\tno recovery target\n", 1).unwrap().summary,
            None
        );
    }
}
