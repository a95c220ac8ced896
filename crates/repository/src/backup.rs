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

mod chunker;
pub mod exclude;
mod metadata;
mod pipeline;
mod tar_archive;
mod walker;

pub use tar_archive::Chunking;

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::lock::{LockKind, RepoLock};
use crate::progress::{CancelToken, Counters, Progress, ProgressFn, Ticker};
use crate::snapshot::{Snapshot, Summary, VirtualFile};
use crate::tree::{Node, NodeType, Tree};
use crate::{Id, Repository};

pub(crate) use pipeline::new_pack;

use chunker::save_stream;
use pipeline::{BlobPipeline, Shared, new_shared, save_tree};
use walker::{Event, FileJob, Walker, assembler, file_worker, scan};

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
    /// What to leave out (`backup_paths` only).
    pub excludes: exclude::Excludes,
    /// Snapshot time (default: now).
    pub time: Option<jiff::Timestamp>,
    /// Count files and bytes first so progress has totals (default on through `new`).
    pub scan: bool,
    /// Read, chunk and count everything but write nothing: no pack, index or snapshot (restic's
    /// `--dry-run`). The result's id is then all zeros.
    pub dry_run: bool,
    /// For `backup_reader`: record the stream as this virtual file (its `size` is filled in and
    /// the snapshot's `paths` become `[path]`). Ignored by `backup_paths`.
    pub virtual_file: Option<VirtualFile>,
    /// Facts to record in the snapshot's `labels`.
    pub labels: std::collections::BTreeMap<String, String>,
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

fn threads_of(opts: &BackupOptions) -> usize {
    if opts.threads > 0 {
        opts.threads
    } else {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
    }
}

/// Concurrent pack uploads: as asked, else what the backend wants.
fn uploads_of(repo: &Repository, opts: &BackupOptions) -> usize {
    if opts.uploads == 0 { repo.backend.upload_concurrency() } else { opts.uploads }
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
    let lock = begin(repo)?;
    let host = opts.hostname.clone().unwrap_or_else(crate::snapshot::hostname);
    let parent = resolve_parent(repo, opts, &host, &path_strings)?;
    // A parent whose root tree cannot be read (its pack lost) only costs change detection.
    let parent_root = parent.as_ref().and_then(|p| match repo.load_tree(&p.snapshot.tree) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(parent = %p.id, error = %e, "parent snapshot unreadable; reading every file");
            None
        }
    });

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
            uploads_of(repo, opts),
            opts.dry_run,
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
                excludes: &opts.excludes,
                root_dev: std::cell::Cell::new(0),
                pending: Default::default(),
            };
            let r = (|| {
                walker.send(Event::Enter)?;
                for (abs, name, meta) in &roots {
                    walker.root_dev.set(std::os::unix::fs::MetadataExt::dev(meta));
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
    let content = Content {
        tree: root_id,
        paths: path_strings,
        hostname: host,
        parent: parent.map(|p| p.id),
        virtual_file: None,
    };
    save_snapshot(repo, opts, shared, start, counters.get(), content, &lock)
}

/// Takes the shared lock every backup holds (so no prune deletes what it deduplicates against)
/// and brings the index up to date under it: a prune that ran before the lock was granted may
/// have removed packs the index loaded at open still lists.
///
/// Packs the index names but the repository lacks are then dropped from it: their blobs are
/// stored again rather than referenced, so no backup points at data that cannot be read.
fn begin(repo: &Repository) -> Result<RepoLock> {
    let lock = repo.lock(LockKind::Shared, "backup")?;
    repo.refresh_index()?;
    repo.drop_missing_packs()?;
    Ok(lock)
}

/// What a backup of a stream starts with: the lock, the dedup state, progress, the pipeline.
struct StreamRun {
    lock: RepoLock,
    host: String,
    counters: Arc<Counters>,
    shared: Arc<Shared>,
    ticker: Ticker,
    pipeline: BlobPipeline,
}

impl StreamRun {
    fn start(repo: &Repository, opts: &BackupOptions) -> Result<Self> {
        let lock = begin(repo)?;
        let host = opts.hostname.clone().unwrap_or_else(crate::snapshot::hostname);
        let counters = Arc::new(Counters::default());
        let shared = new_shared(repo, opts, counters.clone());
        let ticker = Ticker::start(counters.clone(), opts.progress.clone());
        let pipeline = BlobPipeline::start(
            repo,
            shared.clone(),
            threads_of(opts),
            uploads_of(repo, opts),
            opts.dry_run,
        );
        Ok(StreamRun { lock, host, counters, shared, ticker, pipeline })
    }
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
    let StreamRun { lock, host, counters, shared, ticker: _ticker, pipeline } =
        StreamRun::start(repo, opts)?;
    let tx = pipeline.sender();
    let mut stream_size = 0;
    let saved = save_stream(
        repo,
        &shared,
        &tx,
        std::io::BufReader::with_capacity(1 << 20, reader),
        Path::new(filename),
        &mut Vec::new(),
        None,
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
    let virtual_file = opts.virtual_file.clone().map(|v| VirtualFile { size: stream_size, ..v });
    let paths = match &virtual_file {
        Some(v) => vec![v.path.clone()],
        None => vec![format!("/{filename}")],
    };
    let content = Content { tree: root, paths, hostname: host, parent: None, virtual_file };
    save_snapshot(repo, opts, shared, start, counters.get(), content, &lock)
}

/// Stores a tar stream as the tree it holds (format §10.4): restoring the snapshot yields the
/// unpacked archive. `chunking` chooses, per member path and size, how its content is cut; the
/// members named in `keep` (small files the caller wants to read, such as a manifest) are also
/// returned whole. Nothing is visible until [`StoredArchive::save`] writes the snapshot, so a
/// caller can first check that the stream's producer succeeded; the snapshot's `paths` are
/// `[path]`.
///
/// # Errors
/// A malformed or truncated archive (nothing is saved), read and backend errors, `Cancelled`.
pub fn store_tar(
    repo: &Repository,
    reader: impl Read,
    path: &str,
    chunking: &dyn Fn(&str, u64) -> Chunking,
    keep: &[&str],
    opts: &BackupOptions,
) -> Result<StoredArchive> {
    let start = jiff::Timestamp::now();
    let StreamRun { lock, host, counters, shared, ticker, pipeline } =
        StreamRun::start(repo, opts)?;
    // The parent's files are the bases of large members' content lists (format §9.1).
    let parent = resolve_parent(repo, opts, &host, &[path.to_string()]).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "no parent snapshot: content lists are stored whole");
        None
    });
    let tx = pipeline.sender();
    let stored = tar_archive::store_archive(
        repo,
        &shared,
        &tx,
        std::io::BufReader::with_capacity(1 << 20, reader),
        chunking,
        keep,
        parent.as_ref().map(|p| p.snapshot.tree),
    );
    if stored.is_err() {
        shared.failed.store(true, Ordering::SeqCst);
    }
    drop(tx);
    let finished = pipeline.finish(&shared);
    if opts.cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    // The archive's own error says more than "another stage failed".
    let (root, kept) = stored?;
    finished?;
    counters.totals_known.store(true, Ordering::Relaxed);
    drop(ticker);
    Ok(StoredArchive {
        content: Content {
            tree: root,
            paths: vec![path.to_string()],
            hostname: host,
            parent: parent.map(|p| p.id),
            virtual_file: None,
        },
        kept,
        opts: opts.clone(),
        shared,
        start,
        counters,
        lock,
    })
}

/// A tar stream's data and trees, stored and indexed, waiting for its snapshot.
pub struct StoredArchive {
    content: Content,
    kept: std::collections::BTreeMap<String, Vec<u8>>,
    opts: BackupOptions,
    shared: Arc<Shared>,
    start: jiff::Timestamp,
    counters: Arc<Counters>,
    lock: RepoLock,
}

impl StoredArchive {
    /// The members asked for by `keep` that the archive held, by path.
    pub fn kept(&self) -> &std::collections::BTreeMap<String, Vec<u8>> {
        &self.kept
    }

    /// The progress counters so far (bytes and files read).
    pub fn progress(&self) -> Progress {
        self.counters.get()
    }

    /// Writes the snapshot, with `labels` added to the options' own.
    ///
    /// # Errors
    /// Backend errors; a lock lost meanwhile.
    pub fn save(
        mut self,
        repo: &Repository,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<BackupResult> {
        self.opts.labels.extend(labels);
        let progress = self.counters.get();
        save_snapshot(repo, &self.opts, self.shared, self.start, progress, self.content, &self.lock)
    }
}

/// What a finished backup stored, for its snapshot.
struct Content {
    tree: Id,
    paths: Vec<String>,
    hostname: String,
    parent: Option<Id>,
    virtual_file: Option<VirtualFile>,
}

/// The end of every backup once its data is stored and indexed: writes the snapshot (last, so a
/// crash before it leaves no snapshot of partial data) and reports the result.
fn save_snapshot(
    repo: &Repository,
    opts: &BackupOptions,
    shared: Arc<Shared>,
    start: jiff::Timestamp,
    progress: Progress,
    content: Content,
    lock: &RepoLock,
) -> Result<BackupResult> {
    let snapshot = Snapshot {
        time: opts.time.unwrap_or(start),
        tree: content.tree,
        paths: content.paths,
        hostname: content.hostname,
        username: crate::snapshot::username(),
        tags: opts.tags.clone(),
        parent: content.parent,
        original: None,
        program_version: format!("holdfast {}", env!("CARGO_PKG_VERSION")),
        summary: summary(&shared, start, &progress),
        virtual_file: content.virtual_file,
        labels: opts.labels.clone(),
    };
    let warnings = std::mem::take(&mut *shared.warnings.lock().unwrap_or_else(|e| e.into_inner()));
    if opts.dry_run {
        return Ok(BackupResult { id: Id::default(), snapshot, progress, warnings });
    }
    // A lock others may already treat as stale means a prune may have run meanwhile: the data
    // stays unreferenced (a later prune collects it) rather than becoming a broken snapshot.
    lock.check()?;
    let id = repo.save_snapshot(&snapshot)?;
    // The backup's own dedup state (the index it started from, the blobs it queued) goes
    // before the index is read again, so the two are never in memory at once.
    drop(shared);
    repo.reload_index()?;
    Ok(BackupResult { id, snapshot, progress, warnings })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::config::ChunkerParams;
    use crate::crypto::KdfParams;

    /// A repository in memory with small chunks, so a few hundred KiB make many of them.
    pub(super) fn small_chunk_repo() -> Repository {
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
        Repository::init(Arc::new(MemoryBackend::new()), b"pw", &opts).unwrap()
    }

    #[test]
    fn windowed_stream_chunking_matches_fastcdc_streaming() {
        let repo = small_chunk_repo();
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
