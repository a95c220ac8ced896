//! The blob pipeline: compressors, the packer and uploaders, fed with batches of new blobs by the
//! file workers and the tree assembler; uploaded packs are indexed every few packs.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::BackupOptions;
use crate::backend::FileType;
use crate::dictionary::Dictionary;
use crate::error::{Error, Result};
use crate::index::{Index, IndexFile, IndexPack};
use crate::pack::{BlobType, FinishedPack, PackWriter};
use crate::progress::{CancelToken, Counters};
use crate::tree::{Node, Tree};
use crate::{Id, Repository};

/// A new blob on its way to the compressors.
pub(super) struct BlobJob {
    pub(super) id: Id,
    pub(super) blob_type: BlobType,
    pub(super) data: Vec<u8>,
    /// The dictionary to compress it with (format §7.2), when its file has one.
    pub(super) dict: Option<Arc<Dictionary>>,
    /// For a patch (format §9.2), its base; `data` is then the patch's payload.
    pub(super) base: Option<Id>,
}

impl BlobJob {
    /// A data blob stored whole, compressed without a dictionary.
    pub(super) fn data(id: Id, data: Vec<u8>) -> Self {
        Self { id, blob_type: BlobType::Data, data, dict: None, base: None }
    }
}

/// Blobs travel in batches: one message per small-file batch instead of per blob keeps the
/// thread hand-offs (the dominant cost with many small files on few cores) per batch.
pub(super) type BlobTx = SyncSender<Vec<BlobJob>>;

struct Compressed {
    id: Id,
    blob_type: BlobType,
    payload: Vec<u8>,
    ulen: u32,
    /// The dictionary `payload` was compressed with: its pack must carry it.
    dict: Option<Arc<Dictionary>>,
    base: Option<Id>,
}

/// The key a blob is remembered by in [`Shared::seen`]: half its id, which halves the set (one
/// entry per new blob, the largest structure of a backup of many small files). Blob ids are
/// keyed hashes, unknown to anyone without the repository's key, so two of a backup's blobs
/// share the first 128 bits by chance only (about 10^-21 for a billion blobs).
fn seen_key(id: &Id) -> u128 {
    let mut half = [0u8; 16];
    half.copy_from_slice(&id.0[..16]);
    u128::from_le_bytes(half)
}

/// Shared state of a backup: dedup, the first error, warnings, counters and summary figures.
pub(super) struct Shared {
    repo_index: Arc<Index>,
    /// Blobs this backup has queued, by the first half of their id (see [`seen_key`]).
    seen: Mutex<HashSet<u128>>,
    pub(super) failed: AtomicBool,
    error: Mutex<Option<Error>>,
    /// Unreadable entries left out (see [`BackupResult::warnings`]).
    pub(super) warnings: Mutex<Vec<String>>,
    cancel: CancelToken,
    pub(super) counters: Arc<Counters>,
    pub(super) data_blobs: AtomicU64,
    pub(super) tree_blobs: AtomicU64,
    pub(super) data_added: AtomicU64,
    pub(super) data_added_packed: AtomicU64,
    pub(super) files_new: AtomicU64,
    pub(super) files_changed: AtomicU64,
    pub(super) files_unmodified: AtomicU64,
    pub(super) dirs: AtomicU64,
}

impl Shared {
    /// Whether a blob must be stored: not indexed and not already queued by this backup.
    pub(super) fn need(&self, id: &Id) -> bool {
        !self.repo_index.contains(id)
            && self.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(seen_key(id))
    }

    /// Whether a blob is stored in a pack the repository has (what reusing a parent's content
    /// requires: a parent may point at a pack that has since gone missing).
    pub(super) fn stored(&self, id: &Id) -> bool {
        self.repo_index.contains(id)
    }

    /// Whether a blob is stored whole in a pack the repository has: what a patch's base must be.
    pub(super) fn stored_whole(&self, id: &Id) -> bool {
        self.repo_index.contains_whole(id)
    }

    pub(super) fn fail(&self, e: Error) {
        self.failed.store(true, Ordering::SeqCst);
        let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    pub(super) fn check(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        if self.failed.load(Ordering::SeqCst) {
            return Err(Error::Pipeline("another stage failed".into()));
        }
        Ok(())
    }

    /// Records an entry that could not be read; the backup goes on without it.
    pub(super) fn skip(&self, e: &Error) {
        tracing::warn!(error = %e, "skipping an unreadable entry");
        self.warnings.lock().unwrap_or_else(|e| e.into_inner()).push(e.to_string());
    }

    pub(super) fn take_error(&self) -> Option<Error> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The running blob pipeline: compressors, packer and uploaders.
pub(super) struct BlobPipeline {
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
        let (before, flush) = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            // An index file stays within INDEX_FILE_BLOBS (a reader holds one whole): what is
            // pending goes first when this pack would take it past that.
            let pending: usize = p.0.iter().map(|q| q.blobs.len()).sum();
            let before = (pending > 0 && pending + pack.blobs.len() > crate::INDEX_FILE_BLOBS)
                .then(|| std::mem::take(&mut p.0));
            p.0.push(pack);
            let flush =
                (p.0.len() >= INDEX_EVERY_PACKS || p.1.elapsed() >= INDEX_EVERY).then(|| {
                    p.1 = Instant::now();
                    std::mem::take(&mut p.0)
                });
            (before, flush)
        };
        for packs in [before, flush].into_iter().flatten() {
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
    pub(super) fn start(
        repo: &Repository,
        shared: Arc<Shared>,
        threads: usize,
        uploads: usize,
        dry_run: bool,
    ) -> Self {
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
            // A dry run builds its packs in memory (nothing staged in the repository) and drops
            // them: the sizes it reports are those a real run would store.
            let staging = if dry_run { None } else { repo.backend.staging_dir() };
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
                    if dry_run {
                        continue;
                    }
                    if let Err(e) = upload(&repo_ref, &indexer, pack) {
                        shared.fail(e);
                        break;
                    }
                }
            }));
        }
        Self { tx: Some(tx), threads: handles, indexer }
    }

    pub(super) fn sender(&self) -> BlobTx {
        self.tx.clone().expect("pipeline sender taken only at finish")
    }

    /// Closes the input, waits for every stage, writes the last index file.
    pub(super) fn finish(mut self, shared: &Shared) -> Result<()> {
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
    let mut with_dict = crate::dictionary::Compressor::default();
    loop {
        let batch = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(batch) = batch else { return };
        let mut out = Vec::with_capacity(batch.len());
        for job in batch {
            let raw_len = job.data.len();
            let compressed = match (&job.dict, zctx.as_mut()) {
                (_, None) => None,
                (Some(d), Some(_)) => with_dict.compress(&job.data, d).ok(),
                (None, Some(z)) => z.compress(&job.data).ok(),
            };
            let (payload, ulen, dict) = match compressed {
                // Keep the compressed form only when it saves at least 3% (format §6).
                Some(c) if c.len() * 100 <= raw_len * 97 => {
                    (c, u32::try_from(raw_len).unwrap_or(0), job.dict)
                }
                _ => (job.data, 0, None),
            };
            out.push(Compressed {
                id: job.id,
                blob_type: job.blob_type,
                payload,
                ulen,
                dict,
                base: job.base,
            });
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
                BlobType::Data | BlobType::Dictionary => &mut data,
                BlobType::Tree => &mut tree,
            };
            // Close the pack before a blob would take it past its size, so a pack never grows
            // beyond `pack_size` (only a single blob larger than that makes a bigger one).
            if slot.as_ref().is_some_and(|w| {
                let dict = c.dict.as_deref().map_or(0, |d| w.dictionary_cost(d));
                !w.is_empty()
                    && w.size() + dict + c.payload.len() + crate::crypto::SEAL_OVERHEAD > pack_size
            }) && let Some(w) = slot.take()
            {
                tx.send(w.finish()?).map_err(|_| closed())?;
            }
            if let Some(d) = &c.dict
                && slot.as_mut().is_some_and(|w| !w.carry(d))
                && let Some(w) = slot.take()
            {
                tx.send(w.finish()?).map_err(|_| closed())?;
            }
            let w = match slot {
                Some(w) => w,
                None => slot.insert(new_pack(master, pack_size, staging)?),
            };
            if let Some(d) = &c.dict
                && !w.carry(d)
            {
                return Err(Error::Pipeline("a new pack refused a dictionary".into()));
            }
            let stored = w.add_with_base(c.id, c.blob_type, &c.payload, c.ulen, c.base)?;
            Counters::add(&shared.data_added_packed, u64::from(stored));
            if w.is_full(pack_size)
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

/// Hands a batch of blobs to the compressors (nothing when it is empty).
pub(super) fn send_blobs(tx: &BlobTx, batch: &mut Vec<BlobJob>) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    tx.send(std::mem::take(batch)).map_err(|_| Error::Pipeline("blob pipeline closed".into()))
}

/// Serializes a tree and queues it; returns its id.
pub(super) fn save_tree(repo: &Repository, shared: &Shared, tx: &BlobTx, tree: Tree) -> Result<Id> {
    queue_tree_blob(repo, shared, tx, tree.encode()?)
}

/// Queues a blob of type tree (a tree or a content list) unless the repository or this backup
/// already has it; returns its id.
pub(super) fn queue_tree_blob(
    repo: &Repository,
    shared: &Shared,
    tx: &BlobTx,
    data: Vec<u8>,
) -> Result<Id> {
    let id = repo.master.blob_id(&data);
    if shared.need(&id) {
        Counters::add(&shared.tree_blobs, 1);
        Counters::add(&shared.data_added, data.len() as u64);
        tx.send(vec![BlobJob { id, blob_type: BlobType::Tree, data, dict: None, base: None }])
            .map_err(|_| Error::Pipeline("blob pipeline closed".into()))?;
    }
    Ok(id)
}

/// Stores a large file's list of blobs in a content list blob (format §9.1) when the repository
/// allows it: as the changes from `previous` (the same file's list and chain in the parent
/// snapshot) when few positions changed and that chain is short and stored, else whole. Smaller
/// lists stay inline. Sets `node.content_lists`.
///
/// # Errors
/// The pipeline closed.
pub(super) fn store_content_list(
    repo: &Repository,
    shared: &Shared,
    tx: &BlobTx,
    node: &mut Node,
    previous: Option<(&[Id], &[Id])>,
) -> Result<()> {
    use crate::content_list::{MIN_ENTRIES, WRITE_MAX_CHAIN, encode_delta, encode_whole};
    node.content_lists.clear();
    if repo.config().version < crate::repository::CONTENT_LIST_VERSION
        || node.content.len() < MIN_ENTRIES
    {
        return Ok(());
    }
    let usable = previous.filter(|(_, chain)| {
        !chain.is_empty() && chain.len() < WRITE_MAX_CHAIN && chain.iter().all(|b| shared.stored(b))
    });
    if let Some((old, chain)) = usable
        && old == node.content.as_slice()
    {
        node.content_lists = chain.to_vec();
        return Ok(());
    }
    let (data, bases) = match usable
        .and_then(|(old, chain)| Some((encode_delta(&chain[0], old, &node.content)?, chain)))
    {
        Some((data, chain)) => (data, chain),
        None => (encode_whole(&node.content), &[][..]),
    };
    let id = queue_tree_blob(repo, shared, tx, data)?;
    node.content_lists = std::iter::once(id).chain(bases.iter().copied()).collect();
    Ok(())
}

pub(super) fn new_shared(
    repo: &Repository,
    opts: &BackupOptions,
    counters: Arc<Counters>,
) -> Arc<Shared> {
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
