//! Restore: parallel, straight to the target, every chunk verified before it is written.
//!
//! The calling thread walks the snapshot's trees and creates directories, symlinks and empty files
//! (sized up front, so sparse restores leave holes); chunk jobs `(file, offset, blob)` go through a
//! bounded channel to workers that fetch, verify and `pwrite` them, so one large file is restored
//! by all workers at once and memory does not grow with the file count. The worker finishing a
//! file's last chunk sets its metadata; directory metadata is set last, deepest first.

use std::collections::HashMap;
use std::fs::{File, FileTimes};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::index::BlobLocation;
use crate::lock::LockKind;
use crate::pattern::PatternSet;
use crate::progress::{CancelToken, Counters, Progress, ProgressFn, Ticker};
use crate::tree::{Node, NodeType, Tree};
use crate::{Id, Repository};

/// Options of a restore.
#[derive(Clone, Default)]
pub struct RestoreOptions {
    /// Leave holes for all-zero chunks instead of writing zeros.
    pub sparse: bool,
    /// Restore owners (needs root; default: whether we are root).
    pub owners: Option<bool>,
    /// Restore extended attributes.
    pub xattrs: bool,
    /// Worker threads (default: twice the CPU count; restores wait on I/O).
    pub threads: usize,
    /// Restore only this path inside the snapshot (`/data/sub`), its contents straight into
    /// the target (restic's `SNAPSHOT:subfolder`).
    pub include: Option<String>,
    /// Restore only entries matching one of these (with their contents and the directories
    /// that lead to them, so the snapshot's structure is kept); empty: everything.
    pub includes: PatternSet,
    /// Leave out entries matching one of these (a directory with everything below it).
    pub excludes: PatternSet,
    /// Afterwards read every restored file back and compare each chunk with its blob id.
    pub verify: bool,
    /// Progress callback.
    pub progress: Option<ProgressFn>,
    /// Cancellation.
    pub cancel: CancelToken,
}

impl std::fmt::Debug for RestoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreOptions")
            .field("sparse", &self.sparse)
            .field("include", &self.include)
            .finish()
    }
}

struct FileState {
    file: File,
    path: PathBuf,
    node: Node,
    remaining: AtomicUsize,
    /// Set by the first chunk that could not be read: the file is reported, and keeps neither
    /// its recorded times nor its mode so it does not pass for a good copy.
    damaged: AtomicBool,
    /// Held while writing: concurrent writes to one file serialize on the kernel's inode lock
    /// anyway, and waiting for it there spins a core (a third of a large-file restore's CPU on
    /// two cores); here a waiter sleeps and the others go on decrypting.
    writing: Mutex<()>,
}

/// Consecutive chunks of one large file, restored by one worker with as few writes as they
/// allow. Handing out chunks one by one cost more than restoring them when they are small (a
/// PostgreSQL relation file is stored as 16 KiB pieces): two channel hand-offs, a lock and a
/// write each, and the wake-ups between them were a fifth of the restore's time.
struct ChunkJob {
    state: Arc<FileState>,
    /// Each chunk and its offset in the file, in file order.
    chunks: Vec<(BlobLocation, u64)>,
}

/// Content bytes per [`ChunkJob`] at most (a chunk larger than that goes alone).
const RUN_BYTES: u64 = 1024 * 1024;

struct Ctx<'a> {
    repo: &'a Repository,
    counters: Arc<Counters>,
    failed: AtomicBool,
    error: Mutex<Option<Error>>,
    /// Entries that could not be restored completely, with why (damage stays local: the
    /// restore goes on with everything else).
    damaged: Mutex<Vec<String>>,
    cancel: CancelToken,
    sparse: bool,
    owners: bool,
    xattrs: bool,
}

impl Ctx<'_> {
    fn fail(&self, e: Error) {
        self.failed.store(true, Ordering::SeqCst);
        let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    fn stopped(&self) -> bool {
        self.failed.load(Ordering::SeqCst) || self.cancel.is_cancelled()
    }

    fn damaged(&self, path: &Path, e: &Error) {
        tracing::warn!(path = %path.display(), error = %e, "cannot restore completely");
        self.damaged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("{}: {e}", path.display()));
    }
}

/// Whether an error is damage to stored data (a blob, a tree, a pack) that spoils only the entry
/// being restored, rather than a failure of the restore itself (the target's disk, the network).
/// Puts the files whose content list could not be read (`lost`, format §9.1) back into `tree`
/// with no content, so the walk reaches them through the filters like any entry, and records
/// each one's error by its path under `dir` for the walk to report instead of writing it.
fn spare(
    tree: &mut Tree,
    lost: Vec<(Node, Error)>,
    dir: &Path,
    unreadable: &mut HashMap<PathBuf, Error>,
) {
    if lost.is_empty() {
        return;
    }
    for (node, e) in lost {
        unreadable.insert(dir.join(std::ffi::OsStr::from_bytes(&node.name)), e);
        tree.nodes.push(node);
    }
    tree.sort();
}

fn is_root() -> bool {
    // The owner of /proc/self is the effective uid of this process.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn time_of(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn set_metadata(ctx: &Ctx<'_>, path: &Path, node: &Node, file: Option<&File>) -> Result<()> {
    if node.kind() == NodeType::Symlink {
        if ctx.owners {
            std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))
                .map_err(|e| Error::io("chown", path, e))?;
        }
        // The link's own times, as the backup recorded them (lstat), never its target's.
        return set_times_by_path(path, node, rustix::fs::AtFlags::SYMLINK_NOFOLLOW);
    }
    if ctx.owners {
        // chown first: it clears setuid/setgid bits that chmod then sets again. Through the open
        // file when there is one: no path lookup per file.
        match file {
            Some(f) => std::os::unix::fs::fchown(f, Some(node.uid), Some(node.gid)),
            None => std::os::unix::fs::chown(path, Some(node.uid), Some(node.gid)),
        }
        .map_err(|e| Error::io("chown", path, e))?;
    }
    if ctx.xattrs {
        for x in &node.xattrs {
            let name = std::ffi::OsStr::from_bytes(&x.name);
            if let Err(e) = xattr::set(path, name, &x.value) {
                tracing::warn!(path = %path.display(), error = %e, "cannot restore extended attribute");
            }
        }
    }
    let perm = std::fs::Permissions::from_mode(node.mode);
    match file {
        Some(f) => f.set_permissions(perm),
        None => std::fs::set_permissions(path, perm),
    }
    .map_err(|e| Error::io("chmod", path, e))?;
    let atime = if node.atime == 0 { node.mtime } else { node.atime };
    let times = FileTimes::new().set_accessed(time_of(atime)).set_modified(time_of(node.mtime));
    let opened;
    let f = match file {
        Some(f) => f,
        None => {
            opened = File::open(path).map_err(|e| Error::io("open", path, e))?;
            &opened
        }
    };
    f.set_times(times).map_err(|e| Error::io("set times", path, e))
}

/// Recreates a FIFO or device node with its metadata. Device nodes need CAP_MKNOD; without it
/// they are skipped with a warning (as restic does) rather than failing the whole restore.
fn restore_special(ctx: &Ctx<'_>, path: &Path, node: &Node) -> Result<()> {
    use rustix::fs::{CWD, FileType, Mode};
    let ft = match node.kind() {
        NodeType::Fifo => FileType::Fifo,
        NodeType::Chardev => FileType::CharacterDevice,
        _ => FileType::BlockDevice,
    };
    let mode = Mode::from_raw_mode(node.mode & 0o7777);
    match rustix::fs::mknodat(CWD, path, ft, mode, node.rdev) {
        Ok(()) => {}
        Err(e) if ft != FileType::Fifo && e == rustix::io::Errno::PERM => {
            tracing::warn!(path = %path.display(), "not permitted to create a device node; skipped");
            return Ok(());
        }
        Err(e) => return Err(Error::io("create special file", path, e.into())),
    }
    // By path, never by opening: opening a FIFO blocks until a writer appears.
    if ctx.owners {
        std::os::unix::fs::chown(path, Some(node.uid), Some(node.gid))
            .map_err(|e| Error::io("chown", path, e))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(node.mode))
        .map_err(|e| Error::io("chmod", path, e))?;
    set_times_by_path(path, node, rustix::fs::AtFlags::empty())
}

/// Sets a node's access and modification times by path (`flags`: `SYMLINK_NOFOLLOW` for the
/// link itself).
fn set_times_by_path(path: &Path, node: &Node, flags: rustix::fs::AtFlags) -> Result<()> {
    use rustix::fs::{CWD, Timespec, Timestamps};
    let ts = |ns: i64| Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000),
    };
    let atime = if node.atime == 0 { node.mtime } else { node.atime };
    let times = Timestamps { last_access: ts(atime), last_modification: ts(node.mtime) };
    rustix::fs::utimensat(CWD, path, &times, flags)
        .map_err(|e| Error::io("set times", path, e.into()))
}

/// Plaintext length of an indexed blob.
fn blob_len(index: &crate::index::Index, id: &Id) -> Result<u64> {
    let loc = index.get(id).ok_or_else(|| Error::MissingBlob { blob: id.to_hex() })?;
    located_len(index, &loc)
}

/// Plaintext length of a blob at a known place (a patch's is its base's, format §9.2).
fn located_len(index: &crate::index::Index, loc: &BlobLocation) -> Result<u64> {
    index.plain_len(loc).ok_or_else(|| Error::MissingBlob {
        blob: loc.blob.base.map_or_else(|| loc.blob.id.to_hex(), |b| b.to_hex()),
    })
}

/// Blobs below this size are read through [`PackWindows`]; larger ones with one range read each.
const SMALL_BLOB: u32 = 256 * 1024;
/// Bytes of a pack fetched at once for small blobs.
const WINDOW: u64 = 4 * 1024 * 1024;
/// Windows kept, least recently used out first (bounds the memory of the cache to
/// `WINDOWS * WINDOW`). The walk runs at most a few MiB of content ahead of the workers (see
/// [`BATCH_BYTES`]), less once compressed, so a window read ahead is still there when used; and
/// a file backed up daily draws its chunks from several packs at once (the first backup's, then
/// each day's changes), each read in order through a window of its own.
const WINDOWS: usize = 8;
/// Threads reading windows ahead of the workers.
const READERS: usize = 2;

/// A window of a pack: read once, by whoever asks first (a reader ahead of the workers, or a
/// worker that got there first); everyone else asking meanwhile waits for that one read. `None`
/// when the read failed: each blob is then read by itself, which reports the error.
type WindowCell = Arc<std::sync::OnceLock<Option<bytes::Bytes>>>;

/// A small cache of pack byte ranges for restoring many small blobs. The walk visits files in
/// about the order the backup wrote them, so consecutive small blobs sit next to each other in a
/// pack: one 4 MiB read serves hundreds of them instead of one backend request (open, read,
/// close) each. Windows are aligned to multiples of their size, so blobs stored slightly out of
/// walk order (the backup compresses batches in parallel) still hit the window already read.
///
/// The walk asks for each window as it hands out the files that need it ([`PackWindows::want`]),
/// and reader threads fetch it while the workers are still busy with the files before: without
/// that, every worker waited on each window's read (a disk or network round trip) in turn.
struct PackWindows {
    index: Arc<crate::index::Index>,
    sizes: HashMap<Id, u64>,
    cells: Mutex<Cells>,
}

/// The cached windows, least recently used first, and the windows already read once and
/// dropped: a blob in one of those is read by itself. Without that, blobs interleaved from more
/// packs than there are windows made each window be read again for every blob it served (a
/// week of daily PostgreSQL fulls read 32 GB to restore 1.5 GB); with it, no pack byte is read
/// through a window twice, and a restore reads at most the repository plus the blobs it needs.
#[derive(Default)]
struct Cells {
    lru: std::collections::VecDeque<((Id, u64), WindowCell)>,
    dropped: std::collections::HashSet<(Id, u64)>,
}

/// A window to read ahead: the pack, its start, and the cell to fill.
type WindowRequest = (Id, u64, WindowCell);

impl PackWindows {
    fn new(index: &Arc<crate::index::Index>) -> Self {
        Self {
            index: index.clone(),
            sizes: index.packs().collect(),
            cells: Mutex::new(Default::default()),
        }
    }

    /// The window that serves a blob, when it is small enough to be read through one.
    fn window_of(&self, loc: &BlobLocation) -> Option<(Id, u64)> {
        let (offset, length) = (loc.blob.offset, u64::from(loc.blob.length));
        let size = self.sizes.get(&loc.pack).copied()?;
        (loc.blob.length < SMALL_BLOB
            && length > 0
            && offset + length <= size
            // A blob across a window boundary is read by itself.
            && offset / WINDOW == (offset + length - 1) / WINDOW)
            .then_some((loc.pack, offset / WINDOW * WINDOW))
    }

    /// The cell of a window, and whether it was made just now (nobody is reading it yet);
    /// `None` for a window read once already and dropped since.
    fn cell(&self, key: (Id, u64)) -> Option<(WindowCell, bool)> {
        let mut cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = cells.lru.iter().position(|(k, _)| *k == key) {
            let hit = cells.lru.remove(at)?;
            let c = hit.1.clone();
            cells.lru.push_back(hit);
            return Some((c, false));
        }
        if cells.dropped.contains(&key) {
            return None;
        }
        let c = WindowCell::default();
        cells.lru.push_back((key, c.clone()));
        if cells.lru.len() > WINDOWS
            && let Some((old, _)) = cells.lru.pop_front()
        {
            cells.dropped.insert(old);
        }
        Some((c, true))
    }

    /// Asks for the window of a blob about to be handed out: a request for a reader when the
    /// window is neither cached nor being read.
    fn want(&self, loc: &BlobLocation) -> Option<WindowRequest> {
        let key = self.window_of(loc)?;
        match self.cell(key)? {
            (c, true) => Some((key.0, key.1, c)),
            (_, false) => None,
        }
    }

    /// Reads a window into its cell (once, whoever comes first).
    fn fill(
        &self,
        repo: &Repository,
        pack: &Id,
        start: u64,
        cell: &WindowCell,
    ) -> Option<bytes::Bytes> {
        cell.get_or_init(|| {
            let size = self.sizes.get(pack).copied()?;
            let len = WINDOW.min(size - start);
            repo.backend.get_range(crate::backend::FileType::Pack, &pack.to_hex(), start, len).ok()
        })
        .clone()
    }

    /// The verified plaintext of the blob at `loc`.
    fn load(&self, repo: &Repository, loc: &BlobLocation) -> Result<Vec<u8>> {
        let (offset, length) = (loc.blob.offset, u64::from(loc.blob.length));
        let window = self.window_of(loc).and_then(|key| {
            let (cell, _) = self.cell(key)?;
            let data = self.fill(repo, &key.0, key.1, &cell)?;
            let from = usize::try_from(offset - key.1).ok()?;
            let to = from + loc.blob.length as usize;
            (to <= data.len()).then(|| data.slice(from..to))
        });
        let sealed = match window {
            Some(b) => b,
            None => repo.backend.get_range(
                crate::backend::FileType::Pack,
                &loc.pack.to_hex(),
                offset,
                length,
            )?,
        };
        // A direct read is the only owner of its buffer: decrypt there instead of in a copy.
        let sealed: Vec<u8> = match sealed.try_into_mut() {
            Ok(owned) => owned.into(),
            Err(shared) => shared.to_vec(),
        };
        repo.open_blob(&self.index, loc, sealed)
    }
}

/// Reads the windows the walk asked for, ahead of the workers.
fn reader(repo: &Repository, windows: &PackWindows, rx: &Mutex<Receiver<WindowRequest>>) {
    loop {
        let req = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok((pack, start, cell)) = req else { return };
        windows.fill(repo, &pack, start, &cell);
    }
}

/// Files up to this size are restored whole by one worker (create, write, metadata, close), in
/// batches: a file of a few KiB costs less than the hand-offs of restoring it piece by piece, and
/// creating files on the walking thread alone made it the bottleneck of small-file restores.
const SMALL_FILE: u64 = 1024 * 1024;
/// Small files per batch.
const BATCH_FILES: usize = 64;
/// Content bytes per batch. With the channel's depth this bounds how far the walk runs ahead of
/// the workers, so the windows it asks for are still cached when a worker gets there.
const BATCH_BYTES: u64 = 512 * 1024;

/// A file restored whole by one worker.
struct SmallFile {
    path: PathBuf,
    node: Node,
    /// Made by this restore's directory creation: nothing is in the way.
    fresh: bool,
    /// Where each chunk is stored, and its offset in the file.
    chunks: Vec<(BlobLocation, u64)>,
    /// Some chunk could not be placed (the walk reported it).
    damaged: bool,
}

/// Work for the restore workers.
enum Job {
    /// One chunk of a large file.
    Chunk(ChunkJob),
    /// Whole small files.
    Files(Vec<SmallFile>),
}

/// Files whose chunks are handed out at the same time. Writes into one file are serialized (see
/// [`FileState::writing`]), and filling new page-cache pages is a large part of a restore's CPU,
/// so two files in turn let two cores write instead of one while the others wait.
const FILES_AT_ONCE: usize = 2;

/// The chunk jobs of files being restored, each file's in order.
type ActiveFiles =
    std::collections::VecDeque<(Arc<FileState>, std::vec::IntoIter<(BlobLocation, u64)>)>;

/// Sends the next chunk of the first active file and moves that file to the back.
fn send_round(
    tx: &std::sync::mpsc::SyncSender<Job>,
    index: &crate::index::Index,
    active: &mut ActiveFiles,
) -> Result<()> {
    let Some((state, mut jobs)) = active.pop_front() else { return Ok(()) };
    let mut chunks = Vec::new();
    let mut bytes = 0u64;
    while let Some((loc, _)) = jobs.as_slice().first() {
        // Placed already, so known.
        let len = index.plain_len(loc).unwrap_or(0);
        if !chunks.is_empty() && bytes + len > RUN_BYTES {
            break;
        }
        bytes += len;
        chunks.extend(jobs.next());
    }
    if !chunks.is_empty() {
        if tx.send(Job::Chunk(ChunkJob { state: state.clone(), chunks })).is_err() {
            return Err(Error::Pipeline("restore workers stopped".into()));
        }
        if !jobs.as_slice().is_empty() {
            active.push_back((state, jobs));
        }
    }
    Ok(())
}

fn worker(ctx: &Ctx<'_>, windows: &PackWindows, rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(job) = job else { return };
        match job {
            Job::Chunk(job) => {
                if ctx.stopped() {
                    continue; // drain so the walker never blocks
                }
                if let Err(e) = restore_chunk(ctx, windows, &job) {
                    ctx.fail(e);
                }
            }
            Job::Files(files) => {
                for f in files {
                    if ctx.stopped() {
                        break;
                    }
                    if let Err(e) = restore_small(ctx, windows, f) {
                        ctx.fail(e);
                    }
                }
            }
        }
    }
}

/// Reads one chunk of a small file and writes it at its offset (a hole instead of zeros when
/// sparse). Stored data that cannot be read is returned, not raised: it spoils this file only,
/// and the caller reports it once.
fn write_chunk(
    ctx: &Ctx<'_>,
    windows: &PackWindows,
    (file, path): (&File, &Path),
    loc: &BlobLocation,
    offset: u64,
) -> Result<Option<Error>> {
    let data = match windows.load(ctx.repo, loc) {
        Ok(data) => data,
        Err(e) if e.is_damage() => return Ok(Some(e)),
        Err(e) => return Err(e),
    };
    if !(ctx.sparse && data.iter().all(|b| *b == 0)) {
        file.write_all_at(&data, offset).map_err(|e| Error::io("write", path, e))?;
    }
    Counters::add(&ctx.counters.bytes_read, data.len() as u64);
    Counters::add(&ctx.counters.bytes_done, data.len() as u64);
    Ok(None)
}

/// Writes a run of chunks of a large file, contiguous chunks with one write; the worker that
/// handles the file's last chunk sets its metadata. An unreadable chunk is reported and the run
/// goes on, so the rest of the file is still restored.
fn restore_chunk(ctx: &Ctx<'_>, windows: &PackWindows, job: &ChunkJob) -> Result<()> {
    let st = &job.state;
    let mut pending = Run::default();
    for (loc, offset) in &job.chunks {
        let data = match windows.load(ctx.repo, loc) {
            Ok(data) => data,
            Err(e) if e.is_damage() => {
                pending.flush(st)?;
                if !st.damaged.swap(true, Ordering::SeqCst) {
                    ctx.damaged(&st.path, &e);
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        Counters::add(&ctx.counters.bytes_read, data.len() as u64);
        Counters::add(&ctx.counters.bytes_done, data.len() as u64);
        if ctx.sparse && data.iter().all(|b| *b == 0) {
            pending.flush(st)?; // a hole: the file was sized up front
        } else {
            pending.push(st, data, *offset)?;
        }
    }
    pending.flush(st)?;
    if st.remaining.fetch_sub(job.chunks.len(), Ordering::SeqCst) == job.chunks.len() {
        finish_file(ctx, st)?;
    }
    Ok(())
}

/// Bytes to write at one offset, gathered from consecutive chunks.
#[derive(Default)]
struct Run {
    start: u64,
    buf: Vec<u8>,
}

impl Run {
    fn push(&mut self, st: &FileState, data: Vec<u8>, offset: u64) -> Result<()> {
        if self.buf.is_empty() {
            (self.start, self.buf) = (offset, data);
            return Ok(());
        }
        if self.start + self.buf.len() as u64 != offset {
            self.flush(st)?;
            (self.start, self.buf) = (offset, data);
            return Ok(());
        }
        self.buf.extend_from_slice(&data);
        Ok(())
    }

    fn flush(&mut self, st: &FileState) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let _writing = st.writing.lock().unwrap_or_else(|e| e.into_inner());
        st.file.write_all_at(&self.buf, self.start).map_err(|e| Error::io("write", &st.path, e))?;
        self.buf.clear();
        Ok(())
    }
}

/// What is at `path`, where a directory is to be restored, made a real directory: one already
/// there is kept (false), anything else (a file, a symbolic link) is replaced by a new one
/// (true). A link is never followed: restoring through one would write wherever it points (a
/// node agent, as root, into another pod's volume).
fn make_real_dir(path: &Path) -> Result<bool> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io("inspect", path, e))?;
    if meta.is_dir() {
        return Ok(false);
    }
    std::fs::remove_file(path).map_err(|e| Error::io("replace with a directory", path, e))?;
    std::fs::create_dir(path).map_err(|e| Error::io("create directory", path, e))?;
    Ok(true)
}

/// Restores a small file whole: creates it, writes its chunks and sets its metadata (unless a
/// chunk was unreadable: then it is reported and keeps no recorded metadata).
fn restore_small(ctx: &Ctx<'_>, windows: &PackWindows, f: SmallFile) -> Result<()> {
    let SmallFile { path, node, fresh, chunks, mut damaged } = f;
    if !fresh {
        let _ = std::fs::remove_file(&path);
    }
    let file = File::create(&path).map_err(|e| Error::io("create", &path, e))?;
    // Sized up front only when writes may skip bytes (sparse holes, or no content); otherwise
    // the chunk writes give the file its size.
    if node.size > 0 && (ctx.sparse || node.content.is_empty()) {
        file.set_len(node.size).map_err(|e| Error::io("truncate", &path, e))?;
    }
    for (loc, offset) in &chunks {
        if let Some(e) = write_chunk(ctx, windows, (&file, &path), loc, *offset)? {
            if !damaged {
                ctx.damaged(&path, &e);
            }
            damaged = true;
        }
    }
    if !damaged {
        set_metadata(ctx, &path, &node, Some(&file))?;
    }
    Counters::add(&ctx.counters.files_done, 1);
    if !node.content.is_empty() {
        Counters::add(&ctx.counters.files_read, 1);
    }
    Ok(())
}

/// A file whose chunks have all been handled: its metadata is set unless it is damaged.
fn finish_file(ctx: &Ctx<'_>, state: &FileState) -> Result<()> {
    if !state.damaged.load(Ordering::SeqCst) {
        set_metadata(ctx, &state.path, &state.node, Some(&state.file))?;
    }
    Counters::add(&ctx.counters.files_done, 1);
    Counters::add(&ctx.counters.files_read, 1);
    Ok(())
}

/// Restores a snapshot (or the part under `opts.include`) into `target`.
///
/// # Errors
/// `DamagedFiles` after everything readable was restored, when stored data (a chunk, a
/// directory's tree, a pack) could not be read: each entry is named with why, no wrong data is
/// written, and a damaged file keeps no recorded metadata. I/O errors of the target naming the
/// path and `Cancelled` stop the restore.
pub fn restore(
    repo: &Repository,
    snapshot_tree: &Id,
    target: &Path,
    opts: &RestoreOptions,
) -> Result<Progress> {
    // Shared: no prune deletes a pack while it is read.
    let _lock = repo.lock(LockKind::Shared, "restore")?;
    repo.refresh_index()?;
    // A blob stored again after its pack went missing is read from its surviving copy.
    repo.drop_missing_packs()?;
    let index = repo.index();
    let start = match &opts.include {
        Some(p) => repo.find_node(snapshot_tree, p)?,
        None => Node {
            node_type: Some(NodeType::Dir),
            subtree: Some(*snapshot_tree),
            mode: 0o755,
            ..Default::default()
        },
    };
    let counters = Arc::new(Counters::default());
    let ctx = Ctx {
        repo,
        counters: counters.clone(),
        failed: AtomicBool::new(false),
        error: Mutex::new(None),
        damaged: Mutex::new(Vec::new()),
        cancel: opts.cancel.clone(),
        sparse: opts.sparse,
        owners: opts.owners.unwrap_or_else(is_root),
        xattrs: opts.xattrs,
    };
    let _ticker = Ticker::start(counters.clone(), opts.progress.clone());
    let threads = if opts.threads > 0 {
        opts.threads
    } else {
        2 * std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
    };
    std::fs::create_dir_all(target).map_err(|e| Error::io("create directory", target, e))?;
    let mut dirs: Vec<(PathBuf, Node)> = Vec::new();
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    let windows = PackWindows::new(&index);
    // Files with content, for --verify.
    let mut written: Vec<(PathBuf, Vec<Id>)> = Vec::new();
    let walked = std::thread::scope(|s| -> Result<()> {
        let (tx, rx) = sync_channel::<Job>(threads * 2);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..threads {
            let rx = rx.clone();
            let (ctx, windows) = (&ctx, &windows);
            s.spawn(move || worker(ctx, windows, &rx));
        }
        // Depth one per reader: the walk runs at most a window or two ahead of the reads.
        let (ahead, ahead_rx) = sync_channel::<WindowRequest>(READERS);
        let ahead_rx = Arc::new(Mutex::new(ahead_rx));
        for _ in 0..READERS {
            let rx = ahead_rx.clone();
            let windows = &windows;
            s.spawn(move || reader(repo, windows, &rx));
        }
        let mut batch: Vec<SmallFile> = Vec::new();
        let mut batch_bytes = 0u64;
        let mut inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
        let mut active = std::collections::VecDeque::new();
        // (path, node, whether its directory was created by this restore: then nothing can be in
        // the way and the unlink before each create is skipped, its path in the snapshot, and
        // whether an ancestor matched an include so everything below is restored).
        let mut stack: Vec<(PathBuf, Node, bool, String, bool)> = Vec::new();
        let base = opts.include.as_deref().unwrap_or("").trim_end_matches('/').to_string();
        let everything = opts.includes.is_empty();
        // Directories entered only because an include may match below them, not made yet.
        let mut pending: HashMap<PathBuf, Node> = HashMap::new();
        // The start node: a directory restores its children into target; a file restores itself.
        // Files whose content list could not be read, by target path: reported when reached.
        let mut unreadable: HashMap<PathBuf, Error> = HashMap::new();
        if start.kind() == NodeType::Dir {
            let (mut tree, lost) = repo.load_tree_sparing(
                &start.subtree.ok_or_else(|| Error::corrupt("tree", "dir without subtree"))?,
            )?;
            spare(&mut tree, lost, target, &mut unreadable);
            for n in tree.nodes.into_iter().rev() {
                let snap_path = format!("{base}/{}", n.name_lossy());
                stack.push((
                    target.join(std::ffi::OsStr::from_bytes(&n.name)),
                    n,
                    false,
                    snap_path,
                    everything,
                ));
            }
            if opts.include.is_some() {
                dirs.push((target.to_path_buf(), start.clone()));
            }
        } else {
            stack.push((
                target.join(std::ffi::OsStr::from_bytes(&start.name)),
                start.clone(),
                false,
                base.clone(),
                everything,
            ));
        }
        while let Some((path, node, fresh, snap_path, included)) = stack.pop() {
            if ctx.stopped() {
                break;
            }
            if !opts.excludes.is_empty() && opts.excludes.matches(Path::new(&snap_path)) {
                continue;
            }
            let included = included || opts.includes.matches(Path::new(&snap_path));
            let below = node.kind() == NodeType::Dir
                && opts.includes.may_match_below(Path::new(&snap_path));
            if !(included || below) {
                continue;
            }
            if included && !pending.is_empty() {
                make_pending_parents(&path, &mut pending, &mut dirs)?;
            }
            // A name must be one path component, or a crafted tree could write outside target.
            if node.name.is_empty()
                || node.name == b"."
                || node.name == b".."
                || node.name.contains(&b'/')
            {
                return Err(Error::corrupt(
                    "tree",
                    format!("unsafe entry name {:?}", node.name_lossy()),
                ));
            }
            match node.kind() {
                NodeType::Dir => {
                    // Only something below may be restored: the directory is made when the first
                    // such entry is (as restic does, no empty directories on the way).
                    let created = if included {
                        match std::fs::create_dir(&path) {
                            Ok(()) => true,
                            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                                make_real_dir(&path)?
                            }
                            Err(e) => return Err(Error::io("create directory", &path, e)),
                        }
                    } else {
                        false
                    };
                    let tree = node
                        .subtree
                        .ok_or_else(|| Error::corrupt("tree", "dir without subtree"))
                        .and_then(|sub| repo.load_tree_sparing(&sub));
                    match tree {
                        Ok((mut tree, lost)) => {
                            spare(&mut tree, lost, &path, &mut unreadable);
                            for n in tree.nodes.into_iter().rev() {
                                let child = path.join(std::ffi::OsStr::from_bytes(&n.name));
                                let child_snap = format!("{snap_path}/{}", n.name_lossy());
                                stack.push((child, n, created, child_snap, included));
                            }
                            if included {
                                dirs.push((path, node));
                            } else {
                                pending.insert(path, node);
                            }
                        }
                        // Its contents are unknown: the directory stays (empty, without its
                        // recorded metadata) and is reported; its siblings go on.
                        Err(e) if e.is_damage() => ctx.damaged(&path, &e),
                        Err(e) => return Err(e),
                    }
                }
                NodeType::Symlink => {
                    let t = node.target.clone().unwrap_or_default();
                    if !fresh {
                        let _ = std::fs::remove_file(&path);
                    }
                    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&t), &path)
                        .map_err(|e| Error::io("create symlink", &path, e))?;
                    set_metadata(&ctx, &path, &node, None)?;
                }
                NodeType::File => {
                    if let Some(e) = unreadable.remove(&path) {
                        ctx.damaged(&path, &e);
                        continue;
                    }
                    if node.links > 1 {
                        let key = (node.device, node.inode);
                        if let Some(first) = inodes.get(&key) {
                            Counters::add(&counters.files_total, 1);
                            links.push((first.clone(), path));
                            continue;
                        }
                        inodes.insert(key, path.clone());
                    }
                    Counters::add(&counters.files_total, 1);
                    Counters::add(&counters.bytes_total, node.size);
                    // Chunks are placed by the lengths of those before them; past a chunk whose
                    // length is unknown (not in the index) nothing can be placed.
                    let mut chunks = Vec::with_capacity(node.content.len());
                    let mut off = 0u64;
                    let mut unplaced = None;
                    for id in &node.content {
                        let placed = index
                            .get(id)
                            .ok_or_else(|| Error::MissingBlob { blob: id.to_hex() })
                            .and_then(|loc| Ok((loc, located_len(&index, &loc)?)));
                        match placed {
                            Ok((loc, len)) => {
                                if let Some(req) = windows.want(&loc) {
                                    ahead.send(req).map_err(|_| {
                                        Error::Pipeline("restore readers stopped".into())
                                    })?;
                                }
                                chunks.push((loc, off));
                                off += len;
                            }
                            Err(e) => {
                                unplaced = Some(e);
                                break;
                            }
                        }
                    }
                    if let Some(e) = &unplaced {
                        ctx.damaged(&path, e);
                    }
                    if opts.verify && !chunks.is_empty() {
                        let ids = chunks.iter().map(|(loc, _)| loc.blob.id).collect();
                        written.push((path.clone(), ids));
                    }
                    if node.size <= SMALL_FILE {
                        batch_bytes += node.size;
                        batch.push(SmallFile {
                            path,
                            node,
                            fresh,
                            chunks,
                            damaged: unplaced.is_some(),
                        });
                        if batch.len() >= BATCH_FILES || batch_bytes >= BATCH_BYTES {
                            batch_bytes = 0;
                            if tx.send(Job::Files(std::mem::take(&mut batch))).is_err() {
                                return Err(Error::Pipeline("restore workers stopped".into()));
                            }
                        }
                        continue;
                    }
                    if !fresh {
                        let _ = std::fs::remove_file(&path);
                    }
                    let file = File::create(&path).map_err(|e| Error::io("create", &path, e))?;
                    // Sized up front only when writes may skip bytes (sparse holes, or no
                    // content); otherwise the chunk writes give the file its size.
                    if ctx.sparse || node.content.is_empty() {
                        file.set_len(node.size).map_err(|e| Error::io("truncate", &path, e))?;
                    }
                    let state = Arc::new(FileState {
                        file,
                        path,
                        node,
                        remaining: AtomicUsize::new(chunks.len()),
                        writing: Mutex::new(()),
                        damaged: AtomicBool::new(unplaced.is_some()),
                    });
                    if chunks.is_empty() {
                        finish_file(&ctx, &state)?;
                        continue;
                    }
                    active.push_back((state, chunks.into_iter()));
                    while active.len() >= FILES_AT_ONCE {
                        send_round(&tx, &index, &mut active)?;
                    }
                }
                NodeType::Fifo | NodeType::Chardev | NodeType::Blockdev => {
                    if !fresh {
                        let _ = std::fs::remove_file(&path);
                    }
                    restore_special(&ctx, &path, &node)?;
                }
                other => {
                    tracing::warn!(path = %path.display(), kind = ?other, "sockets are not restored");
                }
            }
        }
        if !batch.is_empty() && tx.send(Job::Files(batch)).is_err() {
            return Err(Error::Pipeline("restore workers stopped".into()));
        }
        while !active.is_empty() && !ctx.stopped() {
            send_round(&tx, &index, &mut active)?;
        }
        Ok(())
    });
    counters.totals_known.store(true, Ordering::Relaxed);
    if let Some(e) = ctx.error.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Err(e);
    }
    walked?;
    if opts.cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    for (first, path) in links {
        let _ = std::fs::remove_file(&path);
        std::fs::hard_link(&first, &path).map_err(|e| Error::io("hard link", &path, e))?;
        Counters::add(&counters.files_done, 1);
    }
    for (path, node) in dirs.iter().rev() {
        set_metadata(&ctx, path, node, None)?;
    }
    let damaged = std::mem::take(&mut *ctx.damaged.lock().unwrap_or_else(|e| e.into_inner()));
    if !damaged.is_empty() {
        return Err(Error::DamagedFiles(damaged));
    }
    if opts.verify {
        let bad = verify(repo, &index, &written);
        if !bad.is_empty() {
            return Err(Error::VerifyFailed(bad));
        }
    }
    Ok(counters.get())
}

/// Makes the directories on the way to `path` that were entered for includes but not made yet,
/// outermost first, each then set up like any restored directory.
fn make_pending_parents(
    path: &Path,
    pending: &mut HashMap<PathBuf, Node>,
    dirs: &mut Vec<(PathBuf, Node)>,
) -> Result<()> {
    let mut chain = Vec::new();
    let mut at = path.parent();
    while let Some(p) = at {
        match pending.remove_entry(p) {
            Some(entry) => chain.push(entry),
            None => break,
        }
        at = p.parent();
    }
    for (dir, node) in chain.into_iter().rev() {
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(Error::io("create directory", &dir, e)),
        }
        dirs.push((dir, node));
    }
    Ok(())
}

/// Reads each restored file back and compares every chunk with the blob id it was restored
/// from (restic's `restore --verify`); returns one line per file that differs.
fn verify(
    repo: &Repository,
    index: &crate::index::Index,
    files: &[(PathBuf, Vec<Id>)],
) -> Vec<String> {
    use std::io::Read as _;
    let mut bad = Vec::new();
    let mut buf = Vec::new();
    for (path, content) in files {
        let r = (|| -> Result<Option<String>> {
            let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
            let mut offset = 0u64;
            for id in content {
                let len = blob_len(index, id)?;
                buf.clear();
                let got = (&mut f)
                    .take(len)
                    .read_to_end(&mut buf)
                    .map_err(|e| Error::io("read", path, e))?;
                if got as u64 != len || repo.blob_id(&buf) != *id {
                    return Ok(Some(format!(
                        "{}: content at offset {offset} differs from blob {}",
                        path.display(),
                        id.short()
                    )));
                }
                offset += len;
            }
            let mut rest = [0u8; 1];
            if f.read(&mut rest).map_err(|e| Error::io("read", path, e))? > 0 {
                return Ok(Some(format!("{}: longer than in the snapshot", path.display())));
            }
            Ok(None)
        })();
        match r {
            Ok(None) => {}
            Ok(Some(line)) => bad.push(line),
            Err(e) => bad.push(e.to_string()),
        }
    }
    bad
}

/// Writes the content of a file node to `out`, verifying every chunk.
///
/// # Errors
/// `CorruptBlob`, `MissingBlob`, write errors.
pub fn dump(repo: &Repository, node: &Node, out: &mut dyn Write) -> Result<u64> {
    if node.kind() != NodeType::File {
        return Err(Error::Invalid(format!("{} is not a file", node.name_lossy())));
    }
    let mut n = 0;
    for id in &node.content {
        let data = repo.load_blob(id)?;
        out.write_all(&data).map_err(|e| Error::io("write", "<output>", e))?;
        n += data.len() as u64;
    }
    out.flush().map_err(|e| Error::io("write", "<output>", e))?;
    Ok(n)
}
