//! The tree side of a backup: the walker visits entries in name order and emits events; file
//! workers read the files it queues (small ones in batches); the assembler consumes the events in
//! walk order, waits for each batch's results and builds and saves the trees.

use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use super::chunker::{FilePrints, ParentPrints, save_small_file, save_stream, wants_prints};
use super::metadata::node_from_metadata;
use super::pipeline::{BlobTx, Shared, save_tree, send_blobs, store_content_list};
use crate::error::{Error, Result};
use crate::progress::{CancelToken, Counters};
use crate::tree::{Node, NodeType, Tree};
use crate::{Id, Repository};

/// What reading one file produced: its content ids, byte count, and prints blob (format §9.2).
type FileResult = Result<(Vec<Id>, u64, Option<Id>)>;

pub(super) enum Event {
    Enter,
    Leaf(Node),
    /// Files of one directory read as one job, in walk order; their results arrive together.
    Files(Vec<Node>, Receiver<Vec<FileResult>>),
    Leave(Node),
}

/// Files read by one worker in one go: a large file alone, or a batch of small ones.
pub(super) struct FileJob {
    files: Vec<FileToRead>,
    result: SyncSender<Vec<FileResult>>,
}

/// A file to read: its path, its size, and the parent snapshot's prints blob of it (format §9.2).
type FileToRead = (PathBuf, u64, Option<ParentPrints>);

/// Small files are batched up to this many per job...
const BATCH_FILES: usize = 64;
/// ...and this many bytes; a file larger than `BATCH_FILE_MAX` goes alone.
const BATCH_BYTES: u64 = 4 * 1024 * 1024;
const BATCH_FILE_MAX: u64 = 1024 * 1024;

/// The tree assembler: consumes walk events in order, builds and saves trees.
pub(super) fn assembler(
    repo: &Repository,
    shared: &Shared,
    rx: &Receiver<Event>,
    tx: &BlobTx,
) -> Result<Id> {
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
                    let (content, size, prints) = match r {
                        // Unreadable (already recorded as a warning): left out of the tree.
                        Err(Error::Io { .. }) => continue,
                        r => r?,
                    };
                    // A file that changed while being read is stored as read. What the walk
                    // left in the node is the parent snapshot's version, if any: the base of
                    // its content list.
                    let previous = std::mem::replace(&mut n.content, content);
                    let chain = std::mem::take(&mut n.content_lists);
                    n.size = size;
                    n.prints = prints;
                    store_content_list(repo, shared, tx, &mut n, Some((&previous, &chain)))?;
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

pub(super) fn file_worker(
    repo: &Repository,
    shared: &Shared,
    jobs: &Mutex<Receiver<FileJob>>,
    tx: &BlobTx,
) {
    let max = u64::from(repo.config().chunker.max_size);
    let mut window = Vec::new();
    loop {
        let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(job) = job else { return };
        let mut batch = Vec::new();
        let mut results = Vec::with_capacity(job.files.len());
        for (path, size, parent_prints) in &job.files {
            let result = shared.check().and_then(|()| {
                let mut prints =
                    wants_prints(repo, *size).then(|| FilePrints::new(repo, *parent_prints));
                let (content, read) = if *size <= max {
                    let f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
                    save_small_file(repo, shared, &mut batch, f, *size, path, prints.as_mut())?
                } else {
                    let f = crate::direct::SequentialReader::open(path)
                        .map_err(|e| Error::io("open", path, e))?;
                    save_stream(repo, shared, tx, f, path, &mut window, prints.as_mut())?
                };
                // A file that shrank below the threshold while read is described all the same.
                let prints = prints.map(|p| p.finish(repo, shared, tx)).transpose()?;
                Ok((content, read, prints))
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

/// Visits the entries below the backup's roots, in name order, on the calling thread.
pub(super) struct Walker<'a> {
    pub(super) repo: &'a Repository,
    pub(super) shared: &'a Shared,
    pub(super) events: SyncSender<Event>,
    pub(super) jobs: SyncSender<FileJob>,
    pub(super) xattrs: bool,
    pub(super) excludes: &'a super::exclude::Excludes,
    /// The device of the backed-up path being walked (for `one_file_system`).
    pub(super) root_dev: std::cell::Cell<u64>,
    /// Files to read, not yet handed to a worker: nodes, (path, size), bytes.
    pub(super) pending: std::cell::RefCell<PendingFiles>,
}

#[derive(Default)]
pub(super) struct PendingFiles {
    nodes: Vec<Node>,
    files: Vec<FileToRead>,
    bytes: u64,
}

impl Walker<'_> {
    /// Sends an event, after the pending files (events stay in walk order).
    pub(super) fn send(&self, ev: Event) -> Result<()> {
        self.flush_files()?;
        self.events.send(ev).map_err(|_| Error::Pipeline("tree assembler stopped".into()))
    }

    /// Queues a file to be read; small files are batched within their directory.
    fn queue_file(
        &self,
        node: Node,
        path: &Path,
        parent_prints: Option<ParentPrints>,
    ) -> Result<()> {
        let full = {
            let mut p = self.pending.borrow_mut();
            p.bytes += node.size;
            p.files.push((path.to_path_buf(), node.size, parent_prints));
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

    /// Whether the exclusion rules leave this entry out.
    fn excluded(&self, path: &Path, meta: &Metadata) -> bool {
        let ex = self.excludes;
        ex.matches(path)
            || (meta.is_file() && ex.larger_than.is_some_and(|limit| meta.len() > limit))
            || (meta.is_dir() && !ex.if_present.is_empty() && ex.has_marker(path))
    }

    /// Handles one entry; `parent` is the same-named node of the parent snapshot.
    pub(super) fn entry(
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
                if self.excludes.one_file_system && meta.dev() != self.root_dev.get() {
                    // A mount point: recorded, its content is another file system's.
                    return self.send(Event::Leave(node));
                }
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
                    if !self.excludes.is_empty() && self.excluded(&child_path, &meta) {
                        continue;
                    }
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
                        && p.content.iter().all(|b| self.shared.stored(b))
                        && p.content_lists.iter().all(|b| self.shared.stored(b))
                }) {
                    node.content = p.content.clone();
                    node.content_lists = p.content_lists.clone();
                    // A hint: kept while it is stored, else the next change stores whole chunks.
                    node.prints = p.prints.filter(|b| self.shared.stored(b));
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
                // The parent's list rides along as the base of this version's content list.
                if let Some(p) = parent.filter(|p| !p.content_lists.is_empty()) {
                    node.content = p.content.clone();
                    node.content_lists = p.content_lists.clone();
                }
                let parent_prints = parent.filter(|p| p.kind() == NodeType::File).and_then(|p| {
                    Some(ParentPrints { id: p.prints?, size: p.size, chunks: p.content.len() })
                });
                self.queue_file(node, path, parent_prints)
            }
            _ => self.send(Event::Leaf(node)),
        }
    }
}

pub(super) fn scan(paths: &[PathBuf], counters: &Counters, cancel: &CancelToken) {
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
