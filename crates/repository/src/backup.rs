//! Backup: the streaming, parallel pipeline
//! read → chunk → hash → dedup → compress → encrypt → pack → upload (format §1, §10).
//!
//! Threads and bounded channels, so memory does not grow with the number of files:
//!
//! ```text
//! walker ──FileJob──▶ file workers (read, chunk, hash, dedup) ──Blob──▶ compressors ──▶ packer ──▶ uploaders
//!    └──Event (in walk order)──▶ assembler (waits for file results, builds and saves trees) ──Blob──┘
//! ```
//!
//! Uploaders write each pack, then every few packs an index file; the snapshot is written last. A
//! crash therefore leaves only packs that are either indexed (and reused by the next run) or
//! orphaned (and collected by prune).

use std::collections::HashSet;
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::index::{Index, IndexFile, IndexPack};
use crate::pack::{BlobType, FinishedPack, PackWriter};
use crate::progress::{CancelToken, Counters, Progress, ProgressFn, Ticker};
use crate::snapshot::{Snapshot, Summary, VirtualFile};
use crate::tree::{Node, NodeType, Tree, Xattr};
use crate::{Id, Repository};

/// How to pick the parent snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ParentChoice {
    /// The latest snapshot with the same host and paths.
    #[default]
    Auto,
    /// No parent: read every file.
    None,
    /// This snapshot (`latest`, id or prefix).
    Snapshot(String),
}

/// Options of a backup.
#[derive(Clone, Default)]
pub struct BackupOptions {
    /// Tags to record.
    pub tags: Vec<String>,
    /// Host name to record (default: this host).
    pub hostname: Option<String>,
    /// Parent for change detection.
    pub parent: ParentChoice,
    /// Progress callback.
    pub progress: Option<ProgressFn>,
    /// Cancellation.
    pub cancel: CancelToken,
    /// Worker threads for reading/chunking and for compression (default: the CPU count).
    pub threads: usize,
    /// Concurrent pack uploads (default: what the backend asks for, 1 on a local disk, 4 on S3).
    pub uploads: usize,
    /// Record extended attributes.
    pub xattrs: bool,
    /// Snapshot time (default: now).
    pub time: Option<jiff::Timestamp>,
    /// Count files and bytes first so progress has totals (default on through `new`).
    pub scan: bool,
    /// For `backup_reader`: record the stream as this virtual file (its `size` is filled in and
    /// the snapshot's `paths` become `[path]`). Ignored by `backup_paths`.
    pub virtual_file: Option<VirtualFile>,
}

impl BackupOptions {
    /// Defaults: automatic parent, xattrs and a pre-scan on.
    pub fn new() -> Self {
        Self { xattrs: true, scan: true, ..Default::default() }
    }
}

impl std::fmt::Debug for BackupOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupOptions")
            .field("tags", &self.tags)
            .field("parent", &self.parent)
            .finish()
    }
}

/// What a backup produced.
#[derive(Debug, Clone)]
pub struct BackupResult {
    /// The new snapshot's id.
    pub id: Id,
    /// The snapshot.
    pub snapshot: Snapshot,
    /// Final progress counters.
    pub progress: Progress,
    /// Entries that could not be read and were left out of the snapshot, one line each (the
    /// snapshot is still complete for everything else, as restic does).
    pub warnings: Vec<String>,
}

struct BlobJob {
    id: Id,
    blob_type: BlobType,
    data: Vec<u8>,
}

/// Blobs travel in batches: one message per small-file batch instead of per blob keeps the
/// thread hand-offs (the dominant cost with many small files on few cores) per batch.
type BlobTx = SyncSender<Vec<BlobJob>>;

struct Compressed {
    id: Id,
    blob_type: BlobType,
    payload: Vec<u8>,
    ulen: u32,
}

/// Shared state of the blob pipeline.
struct Shared {
    repo_index: Arc<Index>,
    seen: Mutex<HashSet<Id>>,
    failed: AtomicBool,
    error: Mutex<Option<Error>>,
    /// Unreadable entries left out (see [`BackupResult::warnings`]).
    warnings: Mutex<Vec<String>>,
    cancel: CancelToken,
    counters: Arc<Counters>,
    data_blobs: AtomicU64,
    tree_blobs: AtomicU64,
    data_added: AtomicU64,
    data_added_packed: AtomicU64,
    files_new: AtomicU64,
    files_changed: AtomicU64,
    files_unmodified: AtomicU64,
    dirs: AtomicU64,
}

impl Shared {
    /// Whether a blob must be stored: not indexed and not already queued by this backup.
    fn need(&self, id: &Id) -> bool {
        !self.repo_index.contains(id)
            && self.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(*id)
    }

    fn fail(&self, e: Error) {
        self.failed.store(true, Ordering::SeqCst);
        let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    fn check(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        if self.failed.load(Ordering::SeqCst) {
            return Err(Error::Pipeline("another stage failed".into()));
        }
        Ok(())
    }

    /// Records an entry that could not be read; the backup goes on without it.
    fn skip(&self, e: &Error) {
        tracing::warn!(error = %e, "skipping an unreadable entry");
        self.warnings.lock().unwrap_or_else(|e| e.into_inner()).push(e.to_string());
    }

    fn take_error(&self) -> Option<Error> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The running blob pipeline: compressors, packer and uploaders.
struct BlobPipeline {
    tx: Option<BlobTx>,
    threads: Vec<std::thread::JoinHandle<()>>,
    indexer: Arc<Indexer>,
}

/// Collects uploaded packs and writes index files every few packs.
struct Indexer {
    repo: Arc<RepoRef>,
    pending: Mutex<(Vec<IndexPack>, Instant)>,
}

/// The parts of a repository the pipeline threads need (cheap to share).
struct RepoRef {
    backend: Arc<dyn crate::backend::Backend>,
    master: Arc<crate::crypto::MasterKey>,
}

impl RepoRef {
    fn save_index(&self, packs: Vec<IndexPack>) -> Result<Id> {
        let file = IndexFile { supersedes: Vec::new(), packs };
        let json = serde_json::to_vec(&file).map_err(|e| Error::Invalid(e.to_string()))?;
        let sealed = self.master.seal_object(crate::crypto::ObjectKind::Index, &json);
        let id = Id::of_object(&sealed);
        match self.backend.create(FileType::Index, &id.to_hex(), Bytes::from(sealed)) {
            Ok(()) => Ok(id),
            Err(e) if e.is_already_exists() => Ok(id),
            Err(e) => Err(e.into()),
        }
    }
}

const INDEX_EVERY_PACKS: usize = 4;
const INDEX_EVERY: Duration = Duration::from_secs(15);

impl Indexer {
    fn add(&self, pack: IndexPack) -> Result<()> {
        let flush = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.0.push(pack);
            if p.0.len() >= INDEX_EVERY_PACKS || p.1.elapsed() >= INDEX_EVERY {
                p.1 = Instant::now();
                Some(std::mem::take(&mut p.0))
            } else {
                None
            }
        };
        if let Some(packs) = flush {
            self.repo.save_index(packs)?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let packs = std::mem::take(&mut self.pending.lock().unwrap_or_else(|e| e.into_inner()).0);
        if !packs.is_empty() {
            self.repo.save_index(packs)?;
        }
        Ok(())
    }
}

impl BlobPipeline {
    fn start(repo: &Repository, shared: Arc<Shared>, threads: usize, uploads: usize) -> Self {
        let repo_ref =
            Arc::new(RepoRef { backend: repo.backend.clone(), master: repo.master.clone() });
        let indexer = Arc::new(Indexer {
            repo: repo_ref.clone(),
            pending: Mutex::new((Vec::new(), Instant::now())),
        });
        // Short queues: a chunk is up to `max_size` (8 MiB) and every queued one is memory; on a
        // few cores a deeper pipeline only holds more of them without going faster.
        let (tx, rx) = sync_channel::<Vec<BlobJob>>(threads);
        let rx = Arc::new(Mutex::new(rx));
        let (ctx, crx) = sync_channel::<Vec<Compressed>>(threads);
        // A rendezvous: a finished pack waits in the packer (which builds nothing meanwhile), not
        // in a queue, so at most `uploads + 1` data packs are in memory.
        let (utx, urx) = sync_channel::<FinishedPack>(0);
        let urx = Arc::new(Mutex::new(urx));
        let level = repo.config().compression.level;
        let mut handles = Vec::new();
        for _ in 0..threads {
            let rx = rx.clone();
            let ctx = ctx.clone();
            handles.push(std::thread::spawn(move || compressor(&rx, &ctx, level)));
        }
        drop(ctx);
        {
            let master = repo.master.clone();
            let pack_size = repo.config().pack_size as usize;
            let staging = repo.backend.staging_dir();
            let shared = shared.clone();
            handles.push(std::thread::spawn(move || {
                if let Err(e) = packer(&crx, &utx, &master, pack_size, staging.as_deref(), &shared)
                {
                    shared.fail(e);
                }
            }));
        }
        for _ in 0..uploads.max(1) {
            let urx = urx.clone();
            let shared = shared.clone();
            let indexer = indexer.clone();
            let repo_ref = repo_ref.clone();
            handles.push(std::thread::spawn(move || {
                loop {
                    let job = urx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(pack) = job else { break };
                    if let Err(e) = upload(&repo_ref, &indexer, pack) {
                        shared.fail(e);
                        break;
                    }
                }
            }));
        }
        Self { tx: Some(tx), threads: handles, indexer }
    }

    fn sender(&self) -> BlobTx {
        self.tx.clone().expect("pipeline sender taken only at finish")
    }

    /// Closes the input, waits for every stage, writes the last index file.
    fn finish(mut self, shared: &Shared) -> Result<()> {
        self.tx.take();
        for h in self.threads.drain(..) {
            if h.join().is_err() {
                shared.fail(Error::Pipeline("a pipeline thread panicked".into()));
            }
        }
        // Index what was uploaded even when the backup failed, so a rerun can reuse it.
        let flushed = self.indexer.flush();
        if let Some(e) = shared.take_error() {
            return Err(e);
        }
        flushed
    }
}

fn compressor(rx: &Mutex<Receiver<Vec<BlobJob>>>, tx: &SyncSender<Vec<Compressed>>, level: i32) {
    // One context per thread: creating a zstd context per blob costs more than compressing a
    // small file.
    let mut zctx = if level > 0 { zstd::bulk::Compressor::new(level).ok() } else { None };
    loop {
        let batch = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(batch) = batch else { return };
        let mut out = Vec::with_capacity(batch.len());
        for job in batch {
            let raw_len = job.data.len();
            let (payload, ulen) = match zctx.as_mut().map(|z| z.compress(&job.data)) {
                // Keep the compressed form only when it saves at least 3% (format §6).
                Some(Ok(c)) if c.len() * 100 <= raw_len * 97 => {
                    (c, u32::try_from(raw_len).unwrap_or(0))
                }
                _ => (job.data, 0),
            };
            out.push(Compressed { id: job.id, blob_type: job.blob_type, payload, ulen });
        }
        if tx.send(out).is_err() {
            return;
        }
    }
}

/// A new pack writer: staged in a file where the backend offers a directory, else in memory.
pub(crate) fn new_pack(
    master: &crate::crypto::MasterKey,
    pack_size: usize,
    staging: Option<&Path>,
) -> Result<PackWriter> {
    match staging {
        Some(dir) => PackWriter::staged(master, dir),
        None => Ok(PackWriter::new(master, pack_size)),
    }
}

/// Seals compressed blobs into packs and hands each finished pack to the uploaders.
fn packer(
    rx: &Receiver<Vec<Compressed>>,
    tx: &SyncSender<FinishedPack>,
    master: &crate::crypto::MasterKey,
    pack_size: usize,
    staging: Option<&Path>,
    shared: &Shared,
) -> Result<()> {
    let closed = || Error::Pipeline("pack uploaders stopped".into());
    let mut data: Option<PackWriter> = None;
    let mut tree: Option<PackWriter> = None;
    while let Ok(batch) = rx.recv() {
        for c in batch {
            let slot = match c.blob_type {
                BlobType::Data => &mut data,
                BlobType::Tree => &mut tree,
            };
            // Close the pack before a blob would take it past its size, so a pack never grows
            // beyond `pack_size` (only a single blob larger than that makes a bigger one).
            if slot.as_ref().is_some_and(|w| {
                !w.is_empty()
                    && w.size() + c.payload.len() + crate::crypto::SEAL_OVERHEAD > pack_size
            }) && let Some(w) = slot.take()
            {
                tx.send(w.finish()?).map_err(|_| closed())?;
            }
            let w = match slot {
                Some(w) => w,
                None => slot.insert(new_pack(master, pack_size, staging)?),
            };
            let stored = w.add(c.id, c.blob_type, &c.payload, c.ulen)?;
            Counters::add(&shared.data_added_packed, u64::from(stored));
            if w.size() >= pack_size
                && let Some(w) = slot.take()
            {
                tx.send(w.finish()?).map_err(|_| closed())?;
            }
        }
    }
    for w in [data, tree].into_iter().flatten() {
        if !w.is_empty() {
            tx.send(w.finish()?).map_err(|_| closed())?;
        }
    }
    Ok(())
}

fn upload(repo: &RepoRef, indexer: &Indexer, pack: FinishedPack) -> Result<()> {
    indexer.add(pack.store(repo.backend.as_ref())?)
}

/// Hashes one chunk and adds it to `batch` when new; returns its id.
///
/// A borrowed chunk is copied only when it is new: deduplicated data is hashed in place.
fn save_chunk(
    repo: &Repository,
    shared: &Shared,
    batch: &mut Vec<BlobJob>,
    data: std::borrow::Cow<'_, [u8]>,
) -> Id {
    let len = data.len() as u64;
    Counters::add(&shared.counters.bytes_read, len);
    Counters::add(&shared.counters.bytes_done, len);
    let id = repo.master.blob_id(&data);
    if shared.need(&id) {
        Counters::add(&shared.data_blobs, 1);
        Counters::add(&shared.data_added, len);
        batch.push(BlobJob { id, blob_type: BlobType::Data, data: data.into_owned() });
    }
    id
}

/// Hands a batch of blobs to the compressors (nothing when it is empty).
fn send_blobs(tx: &BlobTx, batch: &mut Vec<BlobJob>) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    tx.send(std::mem::take(batch)).map_err(|_| Error::Pipeline("blob pipeline closed".into()))
}

/// Chunks a stream and queues its new blobs; returns the content ids and the byte count.
///
/// Reads into a window of twice the maximum chunk size and cuts in memory with the same
/// parameters as [`cut_points`]: a cut is only taken while at least `max_size` bytes follow its
/// start (or the stream has ended), which is exactly what FastCDC's own streaming chunker sees,
/// so the chunks are the same. Unlike that chunker, which shifts its whole `max_size` buffer
/// after every chunk (about 8 bytes moved per byte at the default sizes), this moves at most one
/// `max_size` tail per window.
fn save_stream(
    repo: &Repository,
    shared: &Shared,
    tx: &BlobTx,
    mut reader: impl Read,
    path: &Path,
    buf: &mut Vec<u8>,
) -> Result<(Vec<Id>, u64)> {
    let p = repo.config().chunker;
    let max = p.max_size as usize;
    // The caller keeps the window between files: one allocation per worker, not per file.
    buf.resize(2 * max, 0);
    let mut len = 0usize;
    let mut eof = false;
    let mut ids = Vec::new();
    let mut total = 0u64;
    loop {
        shared.check()?;
        while !eof && len < buf.len() {
            match reader.read(&mut buf[len..]) {
                Ok(0) => eof = true,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read", path, e)),
            }
        }
        if len == 0 {
            break;
        }
        let mut cuts = Vec::new();
        for c in fastcdc::v2020::FastCDC::with_level_and_seed(
            &buf[..len],
            p.min_size as usize,
            p.avg_size as usize,
            max,
            p.level(),
            repo.master.chunker_seed(),
        ) {
            if !eof && len - c.offset < max {
                break;
            }
            cuts.push((c.offset, c.length));
        }
        let mut consumed = 0;
        let mut batch = Vec::new();
        for (offset, length) in cuts {
            shared.check()?;
            total += length as u64;
            let chunk = std::borrow::Cow::Borrowed(&buf[offset..offset + length]);
            ids.push(save_chunk(repo, shared, &mut batch, chunk));
            // Large chunks go one by one: the hand-off is cheap next to their size, and the
            // compressors start sooner.
            send_blobs(tx, &mut batch)?;
            consumed = offset + length;
        }
        buf.copy_within(consumed..len, 0);
        len -= consumed;
        if eof && len == 0 {
            break;
        }
    }
    Ok((ids, total))
}

/// Cut points of an in-memory buffer; the same as the streaming chunker finds.
pub(crate) fn cut_points(repo: &Repository, data: &[u8]) -> Vec<(usize, usize)> {
    let p = repo.config().chunker;
    if data.len() <= p.min_size as usize {
        return if data.is_empty() { Vec::new() } else { vec![(0, data.len())] };
    }
    fastcdc::v2020::FastCDC::with_level_and_seed(
        data,
        p.min_size as usize,
        p.avg_size as usize,
        p.max_size as usize,
        p.level(),
        repo.master.chunker_seed(),
    )
    .map(|c| (c.offset, c.length))
    .collect()
}

/// Chunks a file no larger than one maximum chunk: read whole, cut in memory. Same cut points as
/// [`save_stream`], without the streaming chunker's per-file `max_size` buffer, which dominates
/// the cost of many small files.
fn save_small_file(
    repo: &Repository,
    shared: &Shared,
    batch: &mut Vec<BlobJob>,
    mut file: std::fs::File,
    size: u64,
    path: &Path,
) -> Result<(Vec<Id>, u64)> {
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.read_to_end(&mut data).map_err(|e| Error::io("read", path, e))?;
    let total = data.len() as u64;
    let cuts = cut_points(repo, &data);
    let mut ids = Vec::with_capacity(cuts.len());
    if cuts.len() == 1 {
        ids.push(save_chunk(repo, shared, batch, std::borrow::Cow::Owned(data)));
    } else {
        for (offset, length) in cuts {
            shared.check()?;
            let chunk = std::borrow::Cow::Borrowed(&data[offset..offset + length]);
            ids.push(save_chunk(repo, shared, batch, chunk));
        }
    }
    Ok((ids, total))
}

/// Serializes a tree and queues it; returns its id.
fn save_tree(repo: &Repository, shared: &Shared, tx: &BlobTx, mut tree: Tree) -> Result<Id> {
    tree.sort();
    let data = serde_json::to_vec(&tree).map_err(|e| Error::Invalid(e.to_string()))?;
    let id = repo.master.blob_id(&data);
    if shared.need(&id) {
        Counters::add(&shared.tree_blobs, 1);
        Counters::add(&shared.data_added, data.len() as u64);
        tx.send(vec![BlobJob { id, blob_type: BlobType::Tree, data }])
            .map_err(|_| Error::Pipeline("blob pipeline closed".into()))?;
    }
    Ok(id)
}

fn ns(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// A node describing `meta` (content and subtree left empty).
pub(crate) fn node_from_metadata(name: &[u8], path: &Path, meta: &Metadata, xattrs: bool) -> Node {
    let ft = meta.file_type();
    let node_type = if ft.is_dir() {
        NodeType::Dir
    } else if ft.is_symlink() {
        NodeType::Symlink
    } else if ft.is_fifo() {
        NodeType::Fifo
    } else if ft.is_socket() {
        NodeType::Socket
    } else if ft.is_char_device() {
        NodeType::Chardev
    } else if ft.is_block_device() {
        NodeType::Blockdev
    } else {
        NodeType::File
    };
    let target = if node_type == NodeType::Symlink {
        std::fs::read_link(path).ok().map(|t| t.as_os_str().as_bytes().to_vec())
    } else {
        None
    };
    let xattrs = if xattrs { read_xattrs(path) } else { Vec::new() };
    Node {
        name: name.to_vec(),
        node_type: Some(node_type),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size: if node_type == NodeType::File { meta.size() } else { 0 },
        mtime: ns(meta.mtime(), meta.mtime_nsec()),
        ctime: ns(meta.ctime(), meta.ctime_nsec()),
        // Not recorded: reading the file for this backup changes it, which would make every
        // tree new and defeat tree deduplication (format §9).
        atime: 0,
        inode: meta.ino(),
        device: meta.dev(),
        links: meta.nlink(),
        content: Vec::new(),
        subtree: None,
        target,
        rdev: meta.rdev(),
        xattrs,
    }
}

fn read_xattrs(path: &Path) -> Vec<Xattr> {
    // Extended attributes are best effort: file systems without them (tmpfs for user.*, some
    // network mounts) must not fail a backup.
    let Ok(names) = xattr::list(path) else { return Vec::new() };
    let mut out: Vec<Xattr> = names
        .filter_map(|n| {
            let value = xattr::get(path, &n).ok().flatten()?;
            Some(Xattr { name: n.as_bytes().to_vec(), value })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What reading one file produced: its content ids and byte count.
type FileResult = Result<(Vec<Id>, u64)>;

enum Event {
    Enter,
    Leaf(Node),
    /// Files of one directory read as one job, in walk order; their results arrive together.
    Files(Vec<Node>, Receiver<Vec<FileResult>>),
    Leave(Node),
}

/// Files read by one worker in one go: a large file alone, or a batch of small ones.
struct FileJob {
    files: Vec<(PathBuf, u64)>,
    result: SyncSender<Vec<FileResult>>,
}

/// Small files are batched up to this many per job...
const BATCH_FILES: usize = 64;
/// ...and this many bytes; a file larger than `BATCH_FILE_MAX` goes alone.
const BATCH_BYTES: u64 = 4 * 1024 * 1024;
const BATCH_FILE_MAX: u64 = 1024 * 1024;

/// The tree assembler: consumes walk events in order, builds and saves trees.
fn assembler(repo: &Repository, shared: &Shared, rx: &Receiver<Event>, tx: &BlobTx) -> Result<Id> {
    let mut stack: Vec<Tree> = Vec::new();
    let mut root = None;
    while let Ok(ev) = rx.recv() {
        match ev {
            Event::Enter => stack.push(Tree::default()),
            Event::Leaf(n) => stack
                .last_mut()
                .ok_or_else(|| Error::Pipeline("leaf outside a dir".into()))?
                .nodes
                .push(n),
            Event::Files(nodes, result) => {
                let results =
                    result.recv().map_err(|_| Error::Pipeline("file worker vanished".into()))?;
                if results.len() != nodes.len() {
                    return Err(Error::Pipeline("file worker lost results".into()));
                }
                let dir =
                    stack.last_mut().ok_or_else(|| Error::Pipeline("file outside a dir".into()))?;
                for (mut n, r) in nodes.into_iter().zip(results) {
                    let (content, size) = match r {
                        // Unreadable (already recorded as a warning): left out of the tree.
                        Err(Error::Io { .. }) => continue,
                        r => r?,
                    };
                    // A file that changed while being read is stored as read.
                    n.content = content;
                    n.size = size;
                    dir.nodes.push(n);
                }
            }
            Event::Leave(mut dir) => {
                let tree = stack.pop().ok_or_else(|| Error::Pipeline("unbalanced walk".into()))?;
                let id = save_tree(repo, shared, tx, tree)?;
                match stack.last_mut() {
                    Some(parent) => {
                        dir.subtree = Some(id);
                        parent.nodes.push(dir);
                    }
                    None => root = Some(id),
                }
            }
        }
    }
    root.ok_or_else(|| Error::Pipeline("walk ended without a root".into()))
}

fn file_worker(repo: &Repository, shared: &Shared, jobs: &Mutex<Receiver<FileJob>>, tx: &BlobTx) {
    let max = u64::from(repo.config().chunker.max_size);
    let mut window = Vec::new();
    loop {
        let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(job) = job else { return };
        let mut batch = Vec::new();
        let mut results = Vec::with_capacity(job.files.len());
        for (path, size) in &job.files {
            let result = shared.check().and_then(|()| {
                if *size <= max {
                    let f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
                    save_small_file(repo, shared, &mut batch, f, *size, path)
                } else {
                    let f = crate::direct::SequentialReader::open(path)
                        .map_err(|e| Error::io("open", path, e))?;
                    save_stream(repo, shared, tx, f, path, &mut window)
                }
            });
            let result = result.inspect(|_| {
                Counters::add(&shared.counters.files_read, 1);
                Counters::add(&shared.counters.files_done, 1);
            });
            // The original error goes to the shared slot (it is what the caller sees); the
            // assembler only learns that this file failed.
            results.push(match result {
                // Opening or reading the source file failed: skip it, keep backing up.
                Err(e @ Error::Io { .. }) => {
                    shared.skip(&e);
                    Err(e)
                }
                Err(e) if !matches!(e, Error::Cancelled | Error::Pipeline(_)) => {
                    shared.fail(e);
                    Err(Error::Pipeline("a file could not be read".into()))
                }
                other => other,
            });
        }
        if let Err(e) = send_blobs(tx, &mut batch) {
            for r in &mut results {
                *r = Err(Error::Pipeline(e.to_string()));
            }
        }
        let _ = job.result.send(results);
    }
}

struct Walker<'a> {
    repo: &'a Repository,
    shared: &'a Shared,
    events: SyncSender<Event>,
    jobs: SyncSender<FileJob>,
    xattrs: bool,
    /// Files to read, not yet handed to a worker: nodes, (path, size), bytes.
    pending: std::cell::RefCell<PendingFiles>,
}

#[derive(Default)]
struct PendingFiles {
    nodes: Vec<Node>,
    files: Vec<(PathBuf, u64)>,
    bytes: u64,
}

impl Walker<'_> {
    /// Sends an event, after the pending files (events stay in walk order).
    fn send(&self, ev: Event) -> Result<()> {
        self.flush_files()?;
        self.events.send(ev).map_err(|_| Error::Pipeline("tree assembler stopped".into()))
    }

    /// Queues a file to be read; small files are batched within their directory.
    fn queue_file(&self, node: Node, path: &Path) -> Result<()> {
        let full = {
            let mut p = self.pending.borrow_mut();
            p.bytes += node.size;
            p.files.push((path.to_path_buf(), node.size));
            let big = node.size > BATCH_FILE_MAX;
            p.nodes.push(node);
            big || p.files.len() >= BATCH_FILES || p.bytes >= BATCH_BYTES
        };
        if full { self.flush_files() } else { Ok(()) }
    }

    fn flush_files(&self) -> Result<()> {
        let p = std::mem::take(&mut *self.pending.borrow_mut());
        if p.files.is_empty() {
            return Ok(());
        }
        let (rtx, rrx) = sync_channel(1);
        self.jobs
            .send(FileJob { files: p.files, result: rtx })
            .map_err(|_| Error::Pipeline("file workers stopped".into()))?;
        self.events
            .send(Event::Files(p.nodes, rrx))
            .map_err(|_| Error::Pipeline("tree assembler stopped".into()))
    }

    fn parent_tree(&self, parent: Option<&Node>) -> Option<Tree> {
        let subtree = parent.filter(|n| n.kind() == NodeType::Dir)?.subtree?;
        match self.repo.load_tree(&subtree) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "parent tree unreadable; reading files again");
                None
            }
        }
    }

    /// Handles one entry; `parent` is the same-named node of the parent snapshot.
    fn entry(
        &self,
        path: &Path,
        name: &[u8],
        meta: &Metadata,
        parent: Option<&Node>,
    ) -> Result<()> {
        self.shared.check()?;
        let mut node = node_from_metadata(name, path, meta, self.xattrs);
        match node.kind() {
            NodeType::Dir => {
                // An unreadable directory is left out with a warning, like an unreadable file.
                let listing = match std::fs::read_dir(path) {
                    Ok(l) => l,
                    Err(e) => {
                        self.shared.skip(&Error::io("read directory", path, e));
                        return Ok(());
                    }
                };
                Counters::add(&self.shared.dirs, 1);
                self.send(Event::Enter)?;
                let ptree = self.parent_tree(parent);
                let mut entries: Vec<(Vec<u8>, PathBuf, Metadata)> = Vec::new();
                for e in listing {
                    let e = match e {
                        Ok(e) => e,
                        Err(err) => {
                            self.shared.skip(&Error::io("read directory", path, err));
                            break;
                        }
                    };
                    // DirEntry::metadata is an lstat relative to the open directory: no walk of
                    // the whole path per entry.
                    let meta = match e.metadata() {
                        Ok(m) => m,
                        // Deleted between readdir and lstat: it is simply not in the snapshot.
                        Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(err) => {
                            self.shared.skip(&Error::io("stat", e.path(), err));
                            continue;
                        }
                    };
                    entries.push((e.file_name().as_bytes().to_vec(), e.path(), meta));
                }
                entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                for (child_name, child_path, meta) in entries {
                    let pnode = ptree.as_ref().and_then(|t| t.find(&child_name));
                    self.entry(&child_path, &child_name, &meta, pnode)?;
                }
                self.send(Event::Leave(node))
            }
            NodeType::File => {
                if let Some(p) = parent.filter(|p| {
                    p.kind() == NodeType::File
                        && p.size == node.size
                        && p.mtime == node.mtime
                        && p.ctime == node.ctime
                        && p.inode == node.inode
                }) {
                    node.content = p.content.clone();
                    Counters::add(&self.shared.files_unmodified, 1);
                    Counters::add(&self.shared.counters.files_done, 1);
                    Counters::add(&self.shared.counters.bytes_done, node.size);
                    return self.send(Event::Leaf(node));
                }
                Counters::add(
                    if parent.is_some() {
                        &self.shared.files_changed
                    } else {
                        &self.shared.files_new
                    },
                    1,
                );
                self.queue_file(node, path)
            }
            _ => self.send(Event::Leaf(node)),
        }
    }
}

fn scan(paths: &[PathBuf], counters: &Counters, cancel: &CancelToken) {
    fn walk(p: &Path, c: &Counters, cancel: &CancelToken) {
        if cancel.is_cancelled() {
            return;
        }
        let Ok(m) = std::fs::symlink_metadata(p) else { return };
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    walk(&e.path(), c, cancel);
                }
            }
        } else if m.is_file() {
            Counters::add(&c.files_total, 1);
            Counters::add(&c.bytes_total, m.len());
        }
    }
    for p in paths {
        walk(p, counters, cancel);
    }
    counters.totals_known.store(true, Ordering::Relaxed);
}

fn threads_of(opts: &BackupOptions) -> usize {
    if opts.threads > 0 {
        opts.threads
    } else {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
    }
}

fn new_shared(repo: &Repository, opts: &BackupOptions, counters: Arc<Counters>) -> Arc<Shared> {
    Arc::new(Shared {
        repo_index: repo.index(),
        seen: Mutex::new(HashSet::new()),
        failed: AtomicBool::new(false),
        error: Mutex::new(None),
        warnings: Mutex::new(Vec::new()),
        cancel: opts.cancel.clone(),
        counters,
        data_blobs: AtomicU64::new(0),
        tree_blobs: AtomicU64::new(0),
        data_added: AtomicU64::new(0),
        data_added_packed: AtomicU64::new(0),
        files_new: AtomicU64::new(0),
        files_changed: AtomicU64::new(0),
        files_unmodified: AtomicU64::new(0),
        dirs: AtomicU64::new(0),
    })
}

fn summary(shared: &Shared, start: jiff::Timestamp, p: &Progress) -> Summary {
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Summary {
        backup_start: Some(start),
        backup_end: Some(jiff::Timestamp::now()),
        files_new: l(&shared.files_new),
        files_changed: l(&shared.files_changed),
        files_unmodified: l(&shared.files_unmodified),
        dirs: l(&shared.dirs),
        data_blobs: l(&shared.data_blobs),
        tree_blobs: l(&shared.tree_blobs),
        data_added: l(&shared.data_added),
        data_added_packed: l(&shared.data_added_packed),
        total_files_processed: p.files_done,
        total_bytes_processed: p.bytes_done,
    }
}

fn resolve_parent(
    repo: &Repository,
    opts: &BackupOptions,
    host: &str,
    paths: &[String],
) -> Result<Option<crate::snapshot::SnapshotEntry>> {
    match &opts.parent {
        ParentChoice::None => Ok(None),
        ParentChoice::Snapshot(sel) => repo.find_snapshot(sel).map(Some),
        ParentChoice::Auto => {
            let mut want = paths.to_vec();
            want.sort();
            Ok(repo.snapshots()?.into_iter().rev().find(|s| {
                let mut have = s.snapshot.paths.clone();
                have.sort();
                s.snapshot.hostname == host && have == want
            }))
        }
    }
}

/// Backs up files and directories into a new snapshot.
///
/// # Errors
/// I/O errors naming the path, backend errors, `Cancelled`.
pub fn backup_paths(
    repo: &Repository,
    paths: &[PathBuf],
    opts: &BackupOptions,
) -> Result<BackupResult> {
    let start = jiff::Timestamp::now();
    if paths.is_empty() {
        return Err(Error::Invalid("no paths to back up".into()));
    }
    let mut roots = Vec::new();
    let mut names = HashSet::new();
    for p in paths {
        let abs = std::fs::canonicalize(p).map_err(|e| Error::io("resolve", p, e))?;
        let name =
            abs.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_else(|| b"root".to_vec());
        if !names.insert(name.clone()) {
            return Err(Error::Invalid(format!(
                "two paths share the name {:?}",
                String::from_utf8_lossy(&name)
            )));
        }
        let meta = std::fs::symlink_metadata(&abs).map_err(|e| Error::io("stat", &abs, e))?;
        roots.push((abs, name, meta));
    }
    let path_strings: Vec<String> = roots.iter().map(|(p, _, _)| p.display().to_string()).collect();
    let host = opts.hostname.clone().unwrap_or_else(crate::snapshot::hostname);
    let parent = resolve_parent(repo, opts, &host, &path_strings)?;
    let parent_root = match &parent {
        Some(p) => Some(repo.load_tree(&p.snapshot.tree)?),
        None => None,
    };

    let counters = Arc::new(Counters::default());
    let shared = new_shared(repo, opts, counters.clone());
    let threads = threads_of(opts);
    let _ticker = Ticker::start(counters.clone(), opts.progress.clone());
    let root_id = std::thread::scope(|s| -> Result<Id> {
        // The pre-scan only feeds progress totals: without a progress callback it would be a
        // second walk of the whole tree (an lstat per file) for nothing.
        if opts.scan && opts.progress.is_some() {
            let counters = counters.clone();
            let cancel = opts.cancel.clone();
            let scan_paths: Vec<PathBuf> = roots.iter().map(|r| r.0.clone()).collect();
            s.spawn(move || scan(&scan_paths, &counters, &cancel));
        }
        let pipeline = BlobPipeline::start(
            repo,
            shared.clone(),
            threads,
            if opts.uploads == 0 { repo.backend.upload_concurrency() } else { opts.uploads },
        );
        let (jtx, jrx) = sync_channel::<FileJob>(threads * 8);
        let jrx = Arc::new(Mutex::new(jrx));
        let (etx, erx) = sync_channel::<Event>(4096);
        let mut workers = Vec::new();
        for _ in 0..threads.max(2) {
            let jrx = jrx.clone();
            let tx = pipeline.sender();
            let shared = &*shared;
            workers.push(s.spawn(move || file_worker(repo, shared, &jrx, &tx)));
        }
        let asm = {
            let tx = pipeline.sender();
            let shared = &*shared;
            s.spawn(move || match assembler(repo, shared, &erx, &tx) {
                Err(e) if !matches!(e, Error::Cancelled | Error::Pipeline(_)) => {
                    shared.fail(e);
                    Err(Error::Pipeline("tree assembly failed".into()))
                }
                other => other,
            })
        };
        let walked = {
            let walker = Walker {
                repo,
                shared: &shared,
                events: etx,
                jobs: jtx,
                xattrs: opts.xattrs,
                pending: Default::default(),
            };
            let r = (|| {
                walker.send(Event::Enter)?;
                for (abs, name, meta) in &roots {
                    let pnode = parent_root.as_ref().and_then(|t| t.find(name));
                    walker.entry(abs, name, meta, pnode)?;
                }
                walker.send(Event::Leave(Node {
                    node_type: Some(NodeType::Dir),
                    mode: 0o755,
                    ..Default::default()
                }))
            })();
            if r.is_err() {
                shared.failed.store(true, Ordering::SeqCst);
            }
            r
            // walker (and its senders) dropped here, so workers and the assembler see the end.
        };
        for w in workers {
            let _ = w.join();
        }
        let root = asm.join().map_err(|_| Error::Pipeline("tree assembler panicked".into()))?;
        let finished = pipeline.finish(&shared);
        if opts.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        // Report the first real cause, not a downstream "pipeline closed".
        finished?;
        walked?;
        root
    })?;

    if !counters.totals_known.load(Ordering::Relaxed) {
        // No scan ran: at the end the totals are what was done.
        counters.files_total.store(counters.files_done.load(Ordering::Relaxed), Ordering::Relaxed);
        counters.bytes_total.store(counters.bytes_done.load(Ordering::Relaxed), Ordering::Relaxed);
        counters.totals_known.store(true, Ordering::Relaxed);
    }
    let progress = counters.get();
    let snapshot = Snapshot {
        time: opts.time.unwrap_or(start),
        tree: root_id,
        paths: path_strings,
        hostname: host,
        username: crate::snapshot::username(),
        tags: opts.tags.clone(),
        parent: parent.map(|p| p.id),
        program_version: format!("holdfast {}", env!("CARGO_PKG_VERSION")),
        summary: summary(&shared, start, &progress),
        virtual_file: None,
    };
    let id = repo.save_snapshot(&snapshot)?;
    repo.reload_index()?;
    let warnings = std::mem::take(&mut *shared.warnings.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(BackupResult { id, snapshot, progress, warnings })
}

/// Backs up a stream (stdin) as a snapshot holding one file named `filename`.
///
/// # Errors
/// Read errors, backend errors, `Cancelled`.
pub fn backup_reader(
    repo: &Repository,
    reader: impl Read,
    filename: &str,
    opts: &BackupOptions,
) -> Result<BackupResult> {
    let start = jiff::Timestamp::now();
    if filename.is_empty() || filename.contains('/') {
        return Err(Error::Invalid(format!(
            "stdin file name {filename:?} must be one path component"
        )));
    }
    let host = opts.hostname.clone().unwrap_or_else(crate::snapshot::hostname);
    let counters = Arc::new(Counters::default());
    let shared = new_shared(repo, opts, counters.clone());
    let _ticker = Ticker::start(counters.clone(), opts.progress.clone());
    let pipeline = BlobPipeline::start(
        repo,
        shared.clone(),
        threads_of(opts),
        if opts.uploads == 0 { repo.backend.upload_concurrency() } else { opts.uploads },
    );
    let tx = pipeline.sender();
    let mut stream_size = 0;
    let saved = save_stream(
        repo,
        &shared,
        &tx,
        std::io::BufReader::with_capacity(1 << 20, reader),
        Path::new(filename),
        &mut Vec::new(),
    )
    .and_then(|(content, size)| {
        stream_size = size;
        Counters::add(&counters.files_read, 1);
        Counters::add(&counters.files_done, 1);
        Counters::add(&shared.files_new, 1);
        let now = jiff::Timestamp::now().as_nanosecond();
        let node = Node {
            name: filename.as_bytes().to_vec(),
            node_type: Some(NodeType::File),
            mode: 0o644,
            uid: 0,
            gid: 0,
            size,
            mtime: i64::try_from(now).unwrap_or(0),
            ctime: i64::try_from(now).unwrap_or(0),
            links: 1,
            content,
            ..Default::default()
        };
        save_tree(repo, &shared, &tx, Tree { nodes: vec![node] })
    });
    if saved.is_err() {
        shared.failed.store(true, Ordering::SeqCst);
    }
    drop(tx);
    let finished = pipeline.finish(&shared);
    if opts.cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    finished?;
    let root = saved?;
    counters.totals_known.store(true, Ordering::Relaxed);
    let progress = counters.get();
    let virtual_file = opts.virtual_file.clone().map(|v| VirtualFile { size: stream_size, ..v });
    let paths = match &virtual_file {
        Some(v) => vec![v.path.clone()],
        None => vec![format!("/{filename}")],
    };
    let snapshot = Snapshot {
        time: opts.time.unwrap_or(start),
        tree: root,
        paths,
        hostname: host,
        username: crate::snapshot::username(),
        tags: opts.tags.clone(),
        parent: None,
        program_version: format!("holdfast {}", env!("CARGO_PKG_VERSION")),
        summary: summary(&shared, start, &progress),
        virtual_file,
    };
    let id = repo.save_snapshot(&snapshot)?;
    repo.reload_index()?;
    let warnings = std::mem::take(&mut *shared.warnings.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(BackupResult { id, snapshot, progress, warnings })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::config::ChunkerParams;
    use crate::crypto::KdfParams;

    #[test]
    fn in_memory_cuts_match_the_streaming_chunker() {
        let opts = crate::InitOptions {
            chunker: ChunkerParams {
                min_size: 1024,
                avg_size: 4096,
                max_size: 65536,
                ..Default::default()
            },
            kdf: KdfParams::insecure_fast(),
            ..Default::default()
        };
        let repo = Repository::init(Arc::new(MemoryBackend::new()), b"pw", &opts).unwrap();
        let mut x = 88172645463325252u64;
        let data: Vec<u8> = (0..60_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let p = repo.config().chunker;
        let streamed: Vec<(usize, usize)> = fastcdc::v2020::StreamCDC::with_level_and_seed(
            data.as_slice(),
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
            p.level(),
            repo.master.chunker_seed(),
        )
        .map(|c| {
            let c = c.unwrap();
            (usize::try_from(c.offset).unwrap(), c.length)
        })
        .collect();
        assert!(streamed.len() > 2);
        assert_eq!(cut_points(&repo, &data), streamed);
    }

    #[test]
    fn windowed_stream_chunking_matches_fastcdc_streaming() {
        let opts = crate::InitOptions {
            chunker: ChunkerParams {
                min_size: 1024,
                avg_size: 4096,
                max_size: 65536,
                ..Default::default()
            },
            kdf: KdfParams::insecure_fast(),
            ..Default::default()
        };
        let repo = Repository::init(Arc::new(MemoryBackend::new()), b"pw", &opts).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        // Random bytes with long zero runs, so some chunks hit max_size and the window edge.
        let data: Vec<u8> = (0..700_000)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if (i / 150_000) % 2 == 1 { 0 } else { x as u8 }
            })
            .collect();
        let p = repo.config().chunker;
        let want: Vec<Id> = fastcdc::v2020::StreamCDC::with_level_and_seed(
            data.as_slice(),
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
            p.level(),
            repo.master.chunker_seed(),
        )
        .map(|c| repo.blob_id(&c.unwrap().data))
        .collect();
        assert!(want.len() > 20);
        // A reader that returns short reads, as pipes and sockets do.
        struct Dribble<'a>(&'a [u8]);
        impl Read for Dribble<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let n = out.len().min(self.0.len()).min(10_007);
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let r = backup_reader(&repo, Dribble(&data), "f", &BackupOptions::new()).unwrap();
        let tree = repo.load_tree(&r.snapshot.tree).unwrap();
        assert_eq!(tree.nodes[0].content, want);
        assert_eq!(tree.nodes[0].size, data.len() as u64);
    }

    #[test]
    fn a_virtual_file_stream_records_its_path_size_and_compression() {
        let opts = crate::InitOptions { kdf: KdfParams::insecure_fast(), ..Default::default() };
        let repo = Repository::init(Arc::new(MemoryBackend::new()), b"pw", &opts).unwrap();
        let data = vec![7u8; 300_000];
        let bo = BackupOptions {
            virtual_file: Some(VirtualFile {
                path: "/base/x.tar.zst".into(),
                kind: crate::snapshot::VirtualKind::File,
                size: 0,
                compression: Some("zstd-fastest".into()),
            }),
            ..BackupOptions::new()
        };
        let r = backup_reader(&repo, data.as_slice(), "x.tar.zst", &bo).unwrap();
        let stored = repo.load_snapshot(&r.id).unwrap();
        let v = stored.virtual_file.expect("virtual_file survives the round trip");
        assert_eq!((v.path.as_str(), v.size), ("/base/x.tar.zst", 300_000));
        assert_eq!(v.compression.as_deref(), Some("zstd-fastest"));
        assert_eq!(stored.paths, vec!["/base/x.tar.zst".to_string()]);
        // Ordinary stdin backups carry no virtual file, and old manifests without the field load.
        let plain = backup_reader(&repo, data.as_slice(), "x", &BackupOptions::new()).unwrap();
        assert_eq!(repo.load_snapshot(&plain.id).unwrap().virtual_file, None);
        let json = serde_json::to_value(repo.load_snapshot(&plain.id).unwrap()).unwrap();
        assert!(json.get("virtual_file").is_none(), "absent field is not written: {json}");
    }
}
