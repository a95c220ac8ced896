//! Backing up a tar stream as a tree (format §10.4): each member becomes a node of the snapshot,
//! as if the archive had been unpacked and backed up, without unpacking it. This is how
//! `pg_basebackup -Ft -D -` output is stored: restoring the snapshot yields the data directory
//! itself, and each relation file is chunked on its own terms (see [`Chunking`]).
//!
//! Reads POSIX ustar, pax extended headers (`path`, `linkpath`, `size`, `mtime`, `uid`, `gid`)
//! and GNU long names, which covers what `pg_basebackup`, GNU tar and bsdtar write.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use super::chunker::{save_chunk, save_stream};
use super::pipeline::{BlobJob, BlobTx, Shared, save_tree, send_blobs, store_content_list};
use crate::error::{Error, Result};
use crate::progress::Counters;
use crate::tree::{Node, NodeType, Tree};
use crate::{Id, Repository};

/// How one member's content is cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunking {
    /// The repository's content-defined chunker, as for any file.
    ContentDefined,
    /// Fixed pieces of this many bytes (the last may be shorter): for files rewritten in place
    /// in fixed-size pages, where one changed page must cost one piece.
    Fixed(usize),
}

/// Blobs queued per hand-off to the compressors when cutting fixed pieces: small pieces one
/// by one would spend more on the channel than on compression.
const FIXED_BATCH: usize = 64;

const BLOCK: usize = 512;

/// The largest member returned whole when asked for.
pub const KEEP_MAX: u64 = 64 << 20;

/// One member's header, after pax and GNU extensions are applied.
#[derive(Debug, Default)]
struct Header {
    path: Vec<u8>,
    link: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime_ns: i64,
    kind: u8,
}

/// Extensions that apply to the next member (pax `x`, GNU `L`/`K`).
#[derive(Debug, Default)]
struct Pending {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    mtime_ns: Option<i64>,
    uid: Option<u32>,
    gid: Option<u32>,
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("not a valid tar stream: {what}"))
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// An octal field, or GNU's base-256 form (high bit of the first byte set).
fn number(field: &[u8], name: &str) -> Result<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256).ok_or_else(|| corrupt(format!("{name} overflows")))?
                + u64::from(b);
        }
        return Ok(v);
    }
    let text = cstr(field);
    let text = std::str::from_utf8(text).map_err(|_| corrupt(format!("{name} is not octal")))?;
    let text = text.trim_matches(|c: char| c == ' ' || c == '\0');
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| corrupt(format!("{name} {text:?} is not octal")))
}

fn checksum_ok(block: &[u8]) -> Result<bool> {
    let want = number(&block[148..156], "checksum")?;
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| if (148..156).contains(&i) { u64::from(b' ') } else { u64::from(b) })
        .sum();
    Ok(sum == want)
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` at a clean end before the first byte.
fn read_block(reader: &mut impl Read, buf: &mut [u8]) -> Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(corrupt("the stream ends inside a header")),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", Path::new("<tar stream>"), e)),
        }
    }
    Ok(true)
}

fn read_exact(reader: &mut impl Read, buf: &mut [u8], path: &[u8]) -> Result<()> {
    reader.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            corrupt(format!("the stream ends inside {}", String::from_utf8_lossy(path)))
        } else {
            Error::io("read", Path::new("<tar stream>"), e)
        }
    })
}

fn skip(reader: &mut impl Read, n: u64, path: &[u8]) -> Result<()> {
    let copied = std::io::copy(&mut reader.take(n), &mut std::io::sink())
        .map_err(|e| Error::io("read", Path::new("<tar stream>"), e))?;
    if copied != n {
        return Err(corrupt(format!("the stream ends inside {}", String::from_utf8_lossy(path))));
    }
    Ok(())
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// Reads a whole extension member's body (pax records, GNU long names): small by nature.
fn read_body(reader: &mut impl Read, size: u64) -> Result<Vec<u8>> {
    if size > 1 << 20 {
        return Err(corrupt(format!("an extended header of {size} bytes")));
    }
    let mut body = vec![0u8; usize::try_from(size).unwrap_or(0)];
    read_exact(reader, &mut body, b"an extended header")?;
    skip(reader, padding(size), b"an extended header")?;
    Ok(body)
}

fn parse_pax(body: &[u8], pending: &mut Pending) -> Result<()> {
    let mut rest = body;
    while !rest.is_empty() {
        let space = rest.iter().position(|&b| b == b' ').ok_or_else(|| corrupt("pax record"))?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&l: &usize| l > space + 1 && l <= rest.len())
            .ok_or_else(|| corrupt("pax record length"))?;
        let record = &rest[space + 1..len - 1];
        rest = &rest[len..];
        let Some(eq) = record.iter().position(|&b| b == b'=') else { continue };
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        let text = || std::str::from_utf8(value).map_err(|_| corrupt("pax value"));
        match key {
            b"path" => pending.path = Some(value.to_vec()),
            b"linkpath" => pending.link = Some(value.to_vec()),
            b"size" => pending.size = Some(text()?.parse().map_err(|_| corrupt("pax size"))?),
            b"uid" => pending.uid = Some(text()?.parse().map_err(|_| corrupt("pax uid"))?),
            b"gid" => pending.gid = Some(text()?.parse().map_err(|_| corrupt("pax gid"))?),
            b"mtime" => {
                let t = text()?;
                let (secs, frac) = t.split_once('.').unwrap_or((t, ""));
                let secs: i64 = secs.parse().map_err(|_| corrupt("pax mtime"))?;
                let mut nanos = 0i64;
                for (i, c) in frac.chars().take(9).enumerate() {
                    let d = c.to_digit(10).ok_or_else(|| corrupt("pax mtime"))?;
                    nanos += i64::from(d) * 10i64.pow(8 - u32::try_from(i).unwrap_or(8));
                }
                pending.mtime_ns = Some(secs.saturating_mul(1_000_000_000).saturating_add(nanos));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The next member's header, or `None` at the end of the archive.
fn next_header(reader: &mut impl Read) -> Result<Option<Header>> {
    let mut pending = Pending::default();
    let mut block = [0u8; BLOCK];
    loop {
        if !read_block(reader, &mut block)? {
            // No end-of-archive blocks at all: what a truncated stream looks like.
            return Err(corrupt("the stream ends without the end-of-archive marker"));
        }
        if block.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        if !checksum_ok(&block)? {
            return Err(corrupt("a header's checksum does not match"));
        }
        let kind = block[156];
        let size = number(&block[124..136], "size")?;
        match kind {
            b'x' => {
                let body = read_body(reader, size)?;
                parse_pax(&body, &mut pending)?;
                continue;
            }
            b'g' => {
                read_body(reader, size)?;
                continue;
            }
            b'L' | b'K' => {
                let body = read_body(reader, size)?;
                let value = cstr(&body).to_vec();
                if kind == b'L' {
                    pending.path = Some(value);
                } else {
                    pending.link = Some(value);
                }
                continue;
            }
            _ => {}
        }
        let mut path = cstr(&block[0..100]).to_vec();
        if &block[257..262] == b"ustar" {
            let prefix = cstr(&block[345..500]);
            if !prefix.is_empty() {
                let mut full = prefix.to_vec();
                full.push(b'/');
                full.extend_from_slice(&path);
                path = full;
            }
        }
        let mtime = i64::try_from(number(&block[136..148], "mtime")?).unwrap_or(0);
        return Ok(Some(Header {
            path: pending.path.unwrap_or(path),
            link: pending.link.unwrap_or_else(|| cstr(&block[157..257]).to_vec()),
            mode: u32::try_from(number(&block[100..108], "mode")? & 0o7777).unwrap_or(0o644),
            uid: pending
                .uid
                .unwrap_or(u32::try_from(number(&block[108..116], "uid")?).unwrap_or(0)),
            gid: pending
                .gid
                .unwrap_or(u32::try_from(number(&block[116..124], "gid")?).unwrap_or(0)),
            size: pending.size.unwrap_or(size),
            mtime_ns: pending.mtime_ns.unwrap_or(mtime.saturating_mul(1_000_000_000)),
            kind,
        }));
    }
}

/// A member path as components, refusing anything that would leave the tree.
fn components(path: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut parts = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err(corrupt(format!(
                    "member {} climbs out of the archive",
                    String::from_utf8_lossy(path)
                )));
            }
            p => parts.push(p.to_vec()),
        }
    }
    Ok(parts)
}

/// One directory being assembled: its own header (when the archive had one) and its entries.
#[derive(Default)]
struct Dir {
    node: Option<Node>,
    children: Vec<Node>,
}

/// Builds the tree of a whole archive. Members may come in any order; directories the archive
/// never names get mode 0755 and the time of the backup.
struct Assembly {
    dirs: BTreeMap<Vec<Vec<u8>>, Dir>,
}

impl Assembly {
    fn new() -> Self {
        let mut dirs = BTreeMap::new();
        dirs.insert(Vec::new(), Dir::default());
        Assembly { dirs }
    }

    fn ensure(&mut self, dir: &[Vec<u8>]) {
        for depth in 1..=dir.len() {
            self.dirs.entry(dir[..depth].to_vec()).or_default();
        }
    }

    fn add(&mut self, parts: Vec<Vec<u8>>, node: Node) {
        let parent = parts[..parts.len() - 1].to_vec();
        self.ensure(&parent);
        if node.kind() == NodeType::Dir {
            self.ensure(&parts);
            if let Some(d) = self.dirs.get_mut(&parts) {
                d.node = Some(node);
            }
        } else if let Some(d) = self.dirs.get_mut(&parent) {
            d.children.push(node);
        }
    }

    /// Saves every directory's tree, deepest first; returns the root tree's id.
    fn save(mut self, repo: &Repository, shared: &Shared, tx: &BlobTx, now: i64) -> Result<Id> {
        let mut paths: Vec<Vec<Vec<u8>>> = self.dirs.keys().cloned().collect();
        paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for path in paths {
            let dir = self.dirs.remove(&path).unwrap_or_default();
            let mut nodes = dir.children;
            // A later member of the same name replaces an earlier one, as tar extracts them.
            nodes.reverse();
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            nodes.dedup_by(|later, earlier| later.name == earlier.name);
            shared.check()?;
            let id = save_tree(repo, shared, tx, Tree { nodes })?;
            Counters::add(&shared.dirs, 1);
            let Some((name, parent)) = path.split_last() else { return Ok(id) };
            let mut node = dir.node.unwrap_or(Node {
                node_type: Some(NodeType::Dir),
                mode: 0o755,
                mtime: now,
                ctime: now,
                ..Default::default()
            });
            node.name.clone_from(name);
            node.subtree = Some(id);
            node.links = 1;
            if let Some(d) = self.dirs.get_mut(parent) {
                // Directories replace a same-named entry, deduplicated with the rest above.
                d.children.push(node);
            }
        }
        Err(Error::Pipeline("the archive's root directory was not assembled".into()))
    }
}

/// The parent snapshot's files, looked up by path: a large member's content list is stored as
/// the changes from the same file's list there (format §9.1). Directories are read when first
/// needed; one that cannot be read only costs that saving.
struct ParentFiles<'a> {
    repo: &'a Repository,
    root: Option<Id>,
    dirs: HashMap<Vec<Vec<u8>>, Option<Tree>>,
}

impl ParentFiles<'_> {
    fn dir(&mut self, path: &[Vec<u8>]) -> Option<&Tree> {
        if !self.dirs.contains_key(path) {
            // Archives list a directory's members together: only the way down to this one is
            // kept, so memory follows the tree's depth, not its size.
            self.dirs.retain(|k, _| path.starts_with(k));
            let id = match path.split_last() {
                None => self.root,
                Some((name, up)) => self
                    .dir(up)
                    .and_then(|t| t.find(name))
                    .filter(|n| n.kind() == NodeType::Dir)
                    .and_then(|n| n.subtree),
            };
            let tree = id.and_then(|id| {
                self.repo
                    .load_tree(&id)
                    .inspect_err(
                        |e| tracing::warn!(tree = %id, error = %e, "parent tree unreadable"),
                    )
                    .ok()
            });
            self.dirs.insert(path.to_vec(), tree);
        }
        self.dirs.get(path).and_then(Option::as_ref)
    }

    /// The parent's file at `parts` when its content is in a content list blob.
    fn file(&mut self, parts: &[Vec<u8>]) -> Option<&Node> {
        let (name, up) = parts.split_last()?;
        self.dir(up)?
            .find(name)
            .filter(|n| n.kind() == NodeType::File && !n.content_lists.is_empty())
    }
}

/// Reads the archive from `reader`, storing each member's content as it goes; returns the root
/// tree's id and the content of the members named in `keep` (each at most [`KEEP_MAX`]).
/// `parent` is the root tree of the snapshot the content lists build on.
pub(super) fn store_archive(
    repo: &Repository,
    shared: &Shared,
    tx: &BlobTx,
    mut reader: impl Read,
    chunking: &dyn Fn(&str, u64) -> Chunking,
    keep: &[&str],
    parent: Option<Id>,
) -> Result<(Id, BTreeMap<String, Vec<u8>>)> {
    let now = i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(0);
    let mut parent = ParentFiles { repo, root: parent, dirs: HashMap::new() };
    let mut assembly = Assembly::new();
    let mut window = Vec::new();
    let mut kept = BTreeMap::new();
    while let Some(h) = next_header(&mut reader)? {
        shared.check()?;
        let parts = components(&h.path)?;
        let Some(name) = parts.last().cloned() else {
            // The archive's own root ("./"): its content is what the tree holds.
            skip(&mut reader, h.size + padding(h.size), &h.path)?;
            continue;
        };
        let mut node = Node {
            name,
            mode: h.mode,
            uid: h.uid,
            gid: h.gid,
            mtime: h.mtime_ns,
            ctime: h.mtime_ns,
            links: 1,
            ..Default::default()
        };
        match h.kind {
            b'0' | b'\0' | b'7' => {
                node.node_type = Some(NodeType::File);
                let display = parts
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                let keep_it = h.size <= KEEP_MAX && keep.contains(&display.as_str());
                let mut whole = Vec::new();
                if keep_it {
                    whole.resize(usize::try_from(h.size).unwrap_or(0), 0);
                    read_exact(&mut reader, &mut whole, &h.path)?;
                }
                let source: Box<dyn Read + '_> = if keep_it {
                    Box::new(whole.as_slice())
                } else {
                    Box::new((&mut reader).take(h.size))
                };
                let (content, size) = match chunking(&display, h.size) {
                    Chunking::ContentDefined => save_stream(
                        repo,
                        shared,
                        tx,
                        source,
                        Path::new(&display),
                        &mut window,
                        None,
                    )?,
                    Chunking::Fixed(n) => save_fixed(repo, shared, tx, source, h.size, n.max(1))?,
                };
                if keep_it {
                    kept.insert(display.clone(), whole);
                }
                if size != h.size {
                    return Err(corrupt(format!("the stream ends inside {display}")));
                }
                skip(&mut reader, padding(h.size), &h.path)?;
                node.content = content;
                node.size = size;
                if node.content.len() >= crate::content_list::MIN_ENTRIES {
                    let previous =
                        parent.file(&parts).map(|p| (&p.content[..], &p.content_lists[..]));
                    store_content_list(repo, shared, tx, &mut node, previous)?;
                }
                Counters::add(&shared.counters.files_read, 1);
                Counters::add(&shared.counters.files_done, 1);
                Counters::add(&shared.files_new, 1);
            }
            b'5' => {
                node.node_type = Some(NodeType::Dir);
                skip(&mut reader, h.size + padding(h.size), &h.path)?;
            }
            b'2' => {
                node.node_type = Some(NodeType::Symlink);
                node.target = Some(h.link.clone());
                node.mode = 0o777;
            }
            b'3' | b'4' | b'6' => {
                node.node_type = Some(match h.kind {
                    b'3' => NodeType::Chardev,
                    b'4' => NodeType::Blockdev,
                    _ => NodeType::Fifo,
                });
            }
            b'1' => {
                return Err(Error::Invalid(format!(
                    "the archive holds a hard link ({} → {}); hard links in tar streams are \
                     not supported",
                    String::from_utf8_lossy(&h.path),
                    String::from_utf8_lossy(&h.link)
                )));
            }
            other => {
                return Err(corrupt(format!(
                    "member {} has the unknown type {:?}",
                    String::from_utf8_lossy(&h.path),
                    char::from(other)
                )));
            }
        }
        assembly.add(parts, node);
    }
    // The archive's end: two zero blocks were promised, one was read; whatever follows (the
    // second block, a writer's padding to its record size) is not ours to judge.
    skip(&mut reader, u64::MAX, b"").ok();
    let root = assembly.save(repo, shared, tx, now)?;
    Ok((root, kept))
}

/// Cuts `size` bytes into pieces of `n`; returns their ids and the bytes read.
fn save_fixed(
    repo: &Repository,
    shared: &Shared,
    tx: &BlobTx,
    mut reader: impl Read,
    size: u64,
    n: usize,
) -> Result<(Vec<Id>, u64)> {
    let mut ids = Vec::with_capacity(usize::try_from(size / n as u64 + 1).unwrap_or(0));
    let mut batch: Vec<BlobJob> = Vec::new();
    // The file's first new pieces, held back to train its dictionary on (format §7.2); `None`
    // once it is trained, or when the repository or the piece size takes none.
    let level = repo.config().compression.level;
    let mut held: Option<Vec<BlobJob>> =
        (repo.config().version >= 2 && level > 0 && n <= DICTIONARY_PIECE).then(Vec::new);
    let mut dict = None;
    let mut left = size;
    while left > 0 {
        shared.check()?;
        let len = usize::try_from(left.min(n as u64)).unwrap_or(n);
        // Each piece is read into a buffer of its own that, when new, becomes the blob as is:
        // a profile of a day-one base backup spent a quarter of holdfast's time copying, half
        // of it copying pieces out of one reused buffer.
        let mut piece = Vec::with_capacity(len);
        match (&mut reader).take(len as u64).read_to_end(&mut piece) {
            Ok(got) if got == len => {}
            Ok(_) => break,
            Err(e) => return Err(Error::io("read", Path::new("<tar stream>"), e)),
        }
        ids.push(save_chunk(repo, shared, &mut batch, std::borrow::Cow::Owned(piece), None));
        left -= len as u64;
        match &mut held {
            Some(h) => {
                h.append(&mut batch);
                if h.len() >= crate::dictionary::TRAIN_PIECES {
                    batch = train_on(repo, level, &mut held, &mut dict);
                }
            }
            None => batch.iter_mut().for_each(|job| job.dict.clone_from(&dict)),
        }
        if batch.len() >= FIXED_BATCH {
            send_blobs(tx, &mut batch)?;
        }
    }
    if held.is_some() {
        batch = train_on(repo, level, &mut held, &mut dict);
    }
    send_blobs(tx, &mut batch)?;
    Ok((ids, size - left))
}

/// Pieces larger than this are compressed without a dictionary: they hold enough to compress
/// well alone.
const DICTIONARY_PIECE: usize = 64 * 1024;

/// Trains a file's dictionary on its held-back pieces (none when they are too few or it would
/// not help) and returns them, each to be compressed with it.
fn train_on(
    repo: &Repository,
    level: i32,
    held: &mut Option<Vec<BlobJob>>,
    dict: &mut Option<std::sync::Arc<crate::dictionary::Dictionary>>,
) -> Vec<BlobJob> {
    let mut jobs = held.take().unwrap_or_default();
    let samples: Vec<&[u8]> = jobs.iter().map(|j| j.data.as_slice()).collect();
    *dict = crate::dictionary::Dictionary::train(&repo.master, &samples, level);
    for job in &mut jobs {
        job.dict.clone_from(dict);
    }
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ustar header block for `path`.
    pub(crate) fn header(path: &str, kind: u8, size: u64, link: &str) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        b[..path.len()].copy_from_slice(path.as_bytes());
        b[100..107].copy_from_slice(b"0000640");
        b[108..115].copy_from_slice(b"0001750");
        b[116..123].copy_from_slice(b"0001750");
        b[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        b[136..147].copy_from_slice(b"14723133000");
        b[156] = kind;
        b[157..157 + link.len()].copy_from_slice(link.as_bytes());
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        b[148..156].copy_from_slice(b"        ");
        let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
        b[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        b
    }

    #[test]
    fn octal_and_base256_numbers() {
        assert_eq!(number(b"0000644\0", "m").unwrap(), 0o644);
        assert_eq!(number(b"   12 \0", "m").unwrap(), 0o12);
        assert_eq!(number(&[0x80, 0, 0, 0, 0, 0, 1, 0], "s").unwrap(), 256);
        assert!(number(b"12x", "m").is_err());
    }

    #[test]
    fn members_that_climb_out_are_refused() {
        assert!(components(b"a/../../etc/passwd").is_err());
        assert_eq!(components(b"./a//b/").unwrap(), vec![b"a".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn pax_records_set_path_size_and_fractional_mtime() {
        let mut p = Pending::default();
        let body = pax_record("path=a/very/long/name")
            + &pax_record("size=12")
            + &pax_record("mtime=10.25");
        parse_pax(body.as_bytes(), &mut p).unwrap();
        assert_eq!(p.path.as_deref(), Some(&b"a/very/long/name"[..]));
        assert_eq!(p.size, Some(12));
        assert_eq!(p.mtime_ns, Some(10_250_000_000));
    }

    /// A member: header, content, padding.
    fn member(path: &str, kind: u8, content: &[u8], link: &str) -> Vec<u8> {
        let mut out = header(path, kind, content.len() as u64, link).to_vec();
        out.extend_from_slice(content);
        out.resize(out.len() + usize::try_from(padding(content.len() as u64)).unwrap(), 0);
        out
    }

    /// "len key=value\n", where len counts the whole record, its own digits included.
    fn pax_record(key_value: &str) -> String {
        let body = format!(" {key_value}\n");
        let mut n = body.len() + 1;
        while n.to_string().len() + body.len() != n {
            n += 1;
        }
        format!("{n}{body}")
    }

    fn pax(records: &str) -> Vec<u8> {
        member("././@PaxHeader", b'x', records.as_bytes(), "")
    }

    fn repo() -> Repository {
        let opts = crate::InitOptions {
            kdf: crate::crypto::KdfParams::insecure_fast(),
            ..Default::default()
        };
        Repository::init(
            std::sync::Arc::new(crate::backend::memory::MemoryBackend::new()),
            b"pw",
            &opts,
        )
        .unwrap()
    }

    #[test]
    fn an_archive_is_stored_as_its_tree_and_restores_unpacked() {
        let repo = repo();
        let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let long = format!("dir/{}", "n".repeat(150));
        let mut tar = Vec::new();
        tar.extend(member("dir/", b'5', b"", ""));
        tar.extend(member("dir/small", b'0', b"hello", ""));
        tar.extend(member("dir/pages", b'0', &big, ""));
        tar.extend(pax(&pax_record(&format!("path={long}"))));
        // The pax header before it gives this member its real (long) name.
        tar.extend(member("short", b'0', b"long name", ""));
        tar.extend(member("implied/deep/file", b'0', b"x", ""));
        tar.extend(member("dir/link", b'2', b"", "small"));
        tar.extend(member("dir/small", b'0', b"replaced", ""));
        tar.extend([0u8; 1024]);
        let chunking = |path: &str, _size: u64| {
            if path == "dir/pages" { Chunking::Fixed(8192) } else { Chunking::ContentDefined }
        };
        let stored = crate::backup::store_tar(
            &repo,
            tar.as_slice(),
            "pgdata",
            &chunking,
            &["dir/small", "missing"],
            &crate::backup::BackupOptions::new(),
        )
        .unwrap();
        assert_eq!(stored.kept().get("dir/small").map(Vec::as_slice), Some(&b"replaced"[..]));
        assert_eq!(stored.kept().len(), 1);
        let labels = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let result = stored.save(&repo, labels.clone()).unwrap();
        assert_eq!(result.snapshot.labels, labels);
        let pages = repo.find_node(&result.snapshot.tree, "dir/pages").unwrap();
        assert_eq!(pages.content.len(), 13, "fixed 8 KiB pieces: 12 whole and one short");
        assert_eq!(pages.mode, 0o640);
        assert_eq!(pages.uid, 1000);
        let out = tempfile::tempdir().unwrap();
        crate::restore::restore(&repo, &result.snapshot.tree, out.path(), &Default::default())
            .unwrap();
        let read = |p: &str| std::fs::read(out.path().join(p)).unwrap();
        assert_eq!(read("dir/pages"), big);
        assert_eq!(read("dir/small"), b"replaced");
        assert_eq!(read(&long), b"long name");
        assert_eq!(read("implied/deep/file"), b"x");
        assert_eq!(std::fs::read_link(out.path().join("dir/link")).unwrap(), Path::new("small"));
    }

    #[test]
    fn a_truncated_archive_stores_no_snapshot() {
        let repo = repo();
        let mut tar = member("f", b'0', &[1u8; 5000], "");
        tar.truncate(3000);
        let err = crate::backup::store_tar(
            &repo,
            tar.as_slice(),
            "x",
            &|_: &str, _: u64| Chunking::ContentDefined,
            &[],
            &crate::backup::BackupOptions::new(),
        )
        .err()
        .expect("a truncated stream fails");
        assert!(err.to_string().contains("ends inside f"), "{err}");
        assert!(repo.snapshots().unwrap().is_empty());
        let climbing = member("../etc/passwd", b'0', b"x", "");
        let err = crate::backup::store_tar(
            &repo,
            climbing.as_slice(),
            "x",
            &|_: &str, _: u64| Chunking::ContentDefined,
            &[],
            &crate::backup::BackupOptions::new(),
        )
        .err()
        .expect("a climbing member fails");
        assert!(err.to_string().contains("climbs out"), "{err}");
    }

    #[test]
    fn a_damaged_header_is_refused() {
        let mut h = header("f", b'0', 0, "");
        h[0] = b'g';
        let mut data = h.to_vec();
        data.extend_from_slice(&[0u8; 1024]);
        let err = next_header(&mut data.as_slice()).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }
}
