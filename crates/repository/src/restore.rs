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

use crate::crypto::SEAL_OVERHEAD;
use crate::error::{Error, Result};
use crate::lock::LockKind;
use crate::pattern::PatternSet;
use crate::progress::{CancelToken, Counters, Progress, ProgressFn, Ticker};
use crate::tree::{Node, NodeType};
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

struct ChunkJob {
    state: Arc<FileState>,
    offset: u64,
    id: Id,
}

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
fn is_damage(e: &Error) -> bool {
    match e {
        Error::CorruptBlob { .. } | Error::MissingBlob { .. } | Error::CorruptObject { .. } => true,
        Error::Backend(b) => b.is_not_found(),
        _ => false,
    }
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
fn blob_len(repo: &Repository, index: &crate::index::Index, id: &Id) -> Result<u64> {
    let _ = repo;
    let loc = index.get(id).ok_or_else(|| Error::MissingBlob { blob: id.to_hex() })?;
    Ok(if loc.blob.uncompressed_length > 0 {
        u64::from(loc.blob.uncompressed_length)
    } else {
        u64::from(loc.blob.length).saturating_sub(SEAL_OVERHEAD as u64)
    })
}

/// Blobs below this size are read through [`PackWindows`]; larger ones with one range read each.
const SMALL_BLOB: u32 = 256 * 1024;
/// Bytes of a pack fetched at once for small blobs.
const WINDOW: u64 = 4 * 1024 * 1024;
/// Windows kept (bounds the memory of the cache to `WINDOWS * WINDOW`).
const WINDOWS: usize = 4;

/// A small cache of pack byte ranges for restoring many small blobs. The walk visits files in
/// about the order the backup wrote them, so consecutive small blobs sit next to each other in a
/// pack: one 4 MiB read serves hundreds of them instead of one backend request (open, read,
/// close) each. Windows are aligned to multiples of their size, so blobs stored slightly out of
/// walk order (the backup compresses batches in parallel) still hit the window already read.
struct PackWindows {
    sizes: HashMap<Id, u64>,
    windows: Mutex<std::collections::VecDeque<(Id, u64, bytes::Bytes)>>,
}

impl PackWindows {
    fn new(index: &crate::index::Index) -> Self {
        Self { sizes: index.packs().collect(), windows: Mutex::new(Default::default()) }
    }

    /// The verified plaintext of a blob.
    fn load(&self, repo: &Repository, index: &crate::index::Index, id: &Id) -> Result<Vec<u8>> {
        let loc = index.get(id).ok_or_else(|| Error::MissingBlob { blob: id.to_hex() })?;
        let (offset, length) = (loc.blob.offset, u64::from(loc.blob.length));
        let pack_size = self.sizes.get(&loc.pack).copied();
        let sealed = match pack_size {
            Some(size)
                if loc.blob.length < SMALL_BLOB
                    && offset + length <= size
                    // A blob across a window boundary is read by itself.
                    && offset / WINDOW == (offset + length - 1) / WINDOW =>
            {
                // The lock is held across a miss's read: the workers restoring neighbouring small
                // files all want the same window, and reading it once beats four racing reads.
                let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
                let hit = w.iter().find_map(|(pack, start, data)| {
                    (*pack == loc.pack
                        && offset >= *start
                        && offset + length <= start + data.len() as u64)
                        .then(|| {
                            let from = usize::try_from(offset - start).unwrap_or(usize::MAX);
                            data.slice(from..from + loc.blob.length as usize)
                        })
                });
                match hit {
                    Some(b) => b,
                    None => {
                        let start = offset / WINDOW * WINDOW;
                        let len = WINDOW.min(size - start);
                        let data = repo.backend.get_range(
                            crate::backend::FileType::Pack,
                            &loc.pack.to_hex(),
                            start,
                            len,
                        )?;
                        let from = usize::try_from(offset - start).unwrap_or(usize::MAX);
                        let blob = data.slice(from..from + loc.blob.length as usize);
                        w.push_back((loc.pack, start, data));
                        if w.len() > WINDOWS {
                            w.pop_front();
                        }
                        blob
                    }
                }
            }
            _ => repo.backend.get_range(
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
        crate::pack::open_blob_owned(&repo.master, &loc.pack, &loc.salt, &loc.blob, sealed)
    }
}

/// Files whose chunks are handed out at the same time. Writes into one file are serialized (see
/// [`FileState::writing`]), and filling new page-cache pages is a large part of a restore's CPU,
/// so two files in turn let two cores write instead of one while the others wait.
const FILES_AT_ONCE: usize = 2;

/// The chunk jobs of files being restored, each file's in order.
type ActiveFiles = std::collections::VecDeque<(Arc<FileState>, std::vec::IntoIter<(Id, u64)>)>;

/// Sends the next chunk of the first active file and moves that file to the back.
fn send_round(tx: &std::sync::mpsc::SyncSender<ChunkJob>, active: &mut ActiveFiles) -> Result<()> {
    let Some((state, mut jobs)) = active.pop_front() else { return Ok(()) };
    if let Some((id, offset)) = jobs.next() {
        if tx.send(ChunkJob { state: state.clone(), offset, id }).is_err() {
            return Err(Error::Pipeline("restore workers stopped".into()));
        }
        if !jobs.as_slice().is_empty() {
            active.push_back((state, jobs));
        }
    }
    Ok(())
}

fn worker(
    ctx: &Ctx<'_>,
    index: &crate::index::Index,
    windows: &PackWindows,
    rx: &Mutex<Receiver<ChunkJob>>,
) {
    loop {
        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(job) = job else { return };
        if ctx.stopped() {
            continue; // drain so the walker never blocks
        }
        let r = (|| -> Result<()> {
            match windows.load(ctx.repo, index, &job.id) {
                Ok(data) => {
                    if !(ctx.sparse && data.iter().all(|b| *b == 0)) {
                        let _writing = job.state.writing.lock().unwrap_or_else(|e| e.into_inner());
                        job.state
                            .file
                            .write_all_at(&data, job.offset)
                            .map_err(|e| Error::io("write", &job.state.path, e))?;
                    }
                    Counters::add(&ctx.counters.bytes_read, data.len() as u64);
                    Counters::add(&ctx.counters.bytes_done, data.len() as u64);
                }
                // The rest of the file and every other file are still restored; this one is
                // reported (once) with what could not be read.
                Err(e) if is_damage(&e) => {
                    if !job.state.damaged.swap(true, Ordering::SeqCst) {
                        ctx.damaged(&job.state.path, &e);
                    }
                }
                Err(e) => return Err(e),
            }
            if job.state.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
                finish_file(ctx, &job.state)?;
            }
            Ok(())
        })();
        if let Err(e) = r {
            ctx.fail(e);
        }
    }
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
        let (tx, rx) = sync_channel::<ChunkJob>(threads * 4);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..threads {
            let rx = rx.clone();
            let (ctx, index, windows) = (&ctx, &*index, &windows);
            s.spawn(move || worker(ctx, index, windows, &rx));
        }
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
        if start.kind() == NodeType::Dir {
            let tree = repo.load_tree(
                &start.subtree.ok_or_else(|| Error::corrupt("tree", "dir without subtree"))?,
            )?;
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
                            Err(e)
                                if e.kind() == std::io::ErrorKind::AlreadyExists
                                    && path.is_dir() =>
                            {
                                false
                            }
                            Err(e) => return Err(Error::io("create directory", &path, e)),
                        }
                    } else {
                        false
                    };
                    let tree = node
                        .subtree
                        .ok_or_else(|| Error::corrupt("tree", "dir without subtree"))
                        .and_then(|sub| repo.load_tree(&sub));
                    match tree {
                        Ok(tree) => {
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
                        Err(e) if is_damage(&e) => ctx.damaged(&path, &e),
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
                    if !fresh {
                        let _ = std::fs::remove_file(&path);
                    }
                    let file = File::create(&path).map_err(|e| Error::io("create", &path, e))?;
                    // Sized up front only when writes may skip bytes (sparse holes, or no
                    // content); otherwise the chunk writes give the file its size.
                    if node.size > 0 && (ctx.sparse || node.content.is_empty()) {
                        file.set_len(node.size).map_err(|e| Error::io("truncate", &path, e))?;
                    }
                    if node.content.is_empty() {
                        set_metadata(&ctx, &path, &node, Some(&file))?;
                        Counters::add(&counters.files_done, 1);
                        continue;
                    }
                    // Chunks are placed by the lengths of those before them; past a chunk whose
                    // length is unknown (not in the index) nothing can be placed.
                    let mut offsets = Vec::with_capacity(node.content.len());
                    let mut off = 0u64;
                    let mut unplaced = None;
                    for id in &node.content {
                        offsets.push(off);
                        match blob_len(repo, &index, id) {
                            Ok(len) => off += len,
                            Err(e) if is_damage(&e) => {
                                offsets.pop();
                                unplaced = Some(e);
                                break;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    let content: Vec<Id> = node.content[..offsets.len()].to_vec();
                    let state = Arc::new(FileState {
                        file,
                        path,
                        node,
                        remaining: AtomicUsize::new(content.len()),
                        writing: Mutex::new(()),
                        damaged: AtomicBool::new(unplaced.is_some()),
                    });
                    if let Some(e) = unplaced {
                        ctx.damaged(&state.path, &e);
                        if content.is_empty() {
                            finish_file(&ctx, &state)?;
                            continue;
                        }
                    }
                    if opts.verify {
                        written.push((state.path.clone(), content.clone()));
                    }
                    let jobs: Vec<(Id, u64)> = content.into_iter().zip(offsets).collect();
                    active.push_back((state, jobs.into_iter()));
                    while active.len() >= FILES_AT_ONCE {
                        send_round(&tx, &mut active)?;
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
        while !active.is_empty() && !ctx.stopped() {
            send_round(&tx, &mut active)?;
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
                let len = blob_len(repo, index, id)?;
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
