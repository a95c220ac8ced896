//! Listing, diffing and statistics over snapshots.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::backend::FileType;
use crate::error::Result;
use crate::tree::{Node, NodeType};
use crate::{Id, Repository};

/// One entry of a recursive listing.
#[derive(Debug, Clone, Serialize)]
pub struct LsEntry {
    /// Path inside the snapshot, starting with `/`.
    pub path: String,
    /// Kind.
    #[serde(rename = "type")]
    pub node_type: NodeType,
    /// Size (files).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, ns.
    pub mtime: i64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link target (symlinks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl LsEntry {
    /// The entry of `node` at `path`.
    pub fn new(path: &str, n: &Node) -> Self {
        Self {
            path: path.to_string(),
            node_type: n.kind(),
            size: n.size,
            mode: n.mode,
            mtime: n.mtime,
            uid: n.uid,
            gid: n.gid,
            target: n.target.as_ref().map(|t| String::from_utf8_lossy(t).into_owned()),
        }
    }

    /// The line `ls --long` prints, as restic's: permissions, uid, gid, size, local mtime,
    /// path (and ` -> target` for a symlink).
    pub fn long_line(&self) -> String {
        let secs = self.mtime.div_euclid(1_000_000_000);
        let time = jiff::Timestamp::from_second(secs)
            .map(|t| {
                t.to_zoned(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S").to_string()
            })
            .unwrap_or_default();
        let target = match &self.target {
            Some(t) if self.node_type == NodeType::Symlink => format!(" -> {t}"),
            _ => String::new(),
        };
        format!(
            "{} {:>5} {:>5} {:>6} {time} {}{target}",
            permissions(self.node_type, self.mode),
            self.uid,
            self.gid,
            self.size,
            self.path
        )
    }
}

/// Permissions as restic (Go's `FileMode`) prints them: type and special-bit letters, then
/// `rwxrwxrwx` (`drwxr-xr-x`, `Lrwxrwxrwx`, `-rw-r--r--`, `g-rwxr-xr-x` for setgid).
pub fn permissions(kind: NodeType, mode: u32) -> String {
    let mut s = String::new();
    match kind {
        NodeType::Dir => s.push('d'),
        NodeType::Symlink => s.push('L'),
        NodeType::Blockdev => s.push('D'),
        NodeType::Fifo => s.push('p'),
        NodeType::Socket => s.push('S'),
        NodeType::Chardev => s.push_str("Dc"),
        NodeType::File => {}
    }
    for (bit, c) in [(0o4000, 'u'), (0o2000, 'g'), (0o1000, 't')] {
        if mode & bit != 0 {
            s.push(c);
        }
    }
    if s.is_empty() {
        s.push('-');
    }
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        s.push(if mode & (1 << (8 - i)) != 0 { c } else { '-' });
    }
    s
}

/// Walks a tree depth-first, calling `f(path, node)` for every node.
///
/// # Errors
/// Unreadable trees.
pub fn walk(repo: &Repository, root: &Id, f: &mut dyn FnMut(&str, &Node)) -> Result<()> {
    try_walk(repo, root, &mut |p, n| {
        f(p, n);
        Ok(())
    })
}

/// Walks a tree depth-first, one directory's tree in memory at a time besides the pending
/// subtree ids, calling `f(path, node)` for every node; an error from `f` ends the walk.
///
/// # Errors
/// Unreadable trees, or what `f` returns.
pub fn try_walk(
    repo: &Repository,
    root: &Id,
    f: &mut dyn FnMut(&str, &Node) -> Result<()>,
) -> Result<()> {
    let mut stack = vec![(String::new(), *root)];
    while let Some((prefix, id)) = stack.pop() {
        let tree = repo.load_tree(&id)?;
        let mut dirs = Vec::new();
        for n in &tree.nodes {
            let path = format!("{prefix}/{}", n.name_lossy());
            f(&path, n)?;
            if let (NodeType::Dir, Some(sub)) = (n.kind(), n.subtree) {
                dirs.push((path, sub));
            }
        }
        stack.extend(dirs.into_iter().rev());
    }
    Ok(())
}

/// Every node of a snapshot tree as a listing.
///
/// # Errors
/// Unreadable trees.
pub fn ls(repo: &Repository, root: &Id) -> Result<Vec<LsEntry>> {
    let mut out = Vec::new();
    walk(repo, root, &mut |path, n| out.push(LsEntry::new(path, n)))?;
    Ok(out)
}

/// Differences between two snapshot trees.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Diff {
    /// Paths only in the second.
    pub added: Vec<String>,
    /// Paths only in the first.
    pub removed: Vec<String>,
    /// Paths whose content or metadata differ.
    pub modified: Vec<String>,
}

/// Compares two trees by path.
///
/// # Errors
/// Unreadable trees.
pub fn diff(repo: &Repository, a: &Id, b: &Id) -> Result<Diff> {
    let collect = |root: &Id| -> Result<BTreeMap<String, Node>> {
        let mut m = BTreeMap::new();
        walk(repo, root, &mut |p, n| {
            let mut n = n.clone();
            n.subtree = None; // directories compare by their own metadata
            n.atime = 0;
            m.insert(p.to_string(), n);
        })?;
        Ok(m)
    };
    let (ma, mb) = (collect(a)?, collect(b)?);
    let mut d = Diff::default();
    for (p, na) in &ma {
        match mb.get(p) {
            None => d.removed.push(p.clone()),
            Some(nb)
                if nb.content != na.content
                    || nb.mode != na.mode
                    || nb.kind() != na.kind()
                    || nb.target != na.target
                    || nb.uid != na.uid
                    || nb.gid != na.gid
                    || (na.kind() != NodeType::Dir && nb.mtime != na.mtime) =>
            {
                d.modified.push(p.clone())
            }
            Some(_) => {}
        }
    }
    d.added = mb.keys().filter(|p| !ma.contains_key(*p)).cloned().collect();
    Ok(d)
}

/// Repository statistics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepoStats {
    /// Snapshots.
    pub snapshots: usize,
    /// Packs in the index.
    pub packs: usize,
    /// Bytes of those packs (what the storage holds).
    pub pack_bytes: u64,
    /// Indexed blobs.
    pub blobs: usize,
    /// Files over all snapshots (counted per snapshot).
    pub total_files: u64,
    /// Restore size over all snapshots.
    pub total_restore_size: u64,
    /// Plaintext bytes of the distinct data blobs snapshots reference.
    pub unique_data_bytes: u64,
}

/// Computes statistics; `snapshot` limits them to one snapshot.
///
/// # Errors
/// Unreadable objects.
pub fn stats(repo: &Repository, snapshot: Option<&Id>) -> Result<RepoStats> {
    let index = repo.index();
    let mut s = RepoStats {
        packs: index.packs().count(),
        pack_bytes: index.packs().map(|(_, size)| size).sum(),
        blobs: index.len(),
        ..Default::default()
    };
    let snaps = match snapshot {
        Some(id) => vec![*id],
        None => repo
            .backend
            .list(FileType::Snapshot)?
            .into_iter()
            .filter_map(|o| o.name.parse().ok())
            .collect(),
    };
    let mut seen: HashSet<Id> = HashSet::new();
    for id in &snaps {
        let snap = repo.load_snapshot(id)?;
        s.snapshots += 1;
        walk(repo, &snap.tree, &mut |_, n| {
            if n.kind() == NodeType::File {
                s.total_files += 1;
                s.total_restore_size += n.size;
                for b in &n.content {
                    if seen.insert(*b)
                        && let Some(loc) = index.get(b)
                    {
                        s.unique_data_bytes += index.plain_len(&loc).unwrap_or(0);
                    }
                }
            }
        })?;
    }
    Ok(s)
}

/// What `stats --mode` counts (restic's modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatsMode {
    /// Files and directories as a restore would write them, every snapshot counted.
    #[default]
    RestoreSize,
    /// Files with distinct contents, each counted once.
    FilesByContents,
    /// Distinct blobs the snapshots reference, as stored.
    RawData,
    /// Distinct files and the distinct blobs they use.
    BlobsPerFile,
}

impl std::str::FromStr for StatsMode {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "restore-size" => Self::RestoreSize,
            "files-by-contents" => Self::FilesByContents,
            "raw-data" => Self::RawData,
            "blobs-per-file" => Self::BlobsPerFile,
            other => {
                return Err(crate::Error::Invalid(format!(
                    "unknown stats mode {other:?}: use restore-size, files-by-contents, \
                     raw-data or blobs-per-file"
                )));
            }
        })
    }
}

/// The figures of one `stats --mode` run, named as restic's JSON names them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModeStats {
    /// Bytes counted (plaintext for raw-data).
    pub total_size: u64,
    /// Files (and for restore-size, directories and other entries) counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_file_count: Option<u64>,
    /// Distinct blobs (raw-data, blobs-per-file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_blob_count: Option<u64>,
    /// Stored bytes of those blobs, compressed and sealed (raw-data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_stored_size: Option<u64>,
    /// Snapshots processed.
    pub snapshots_count: usize,
}

/// Counts `snapshots` the way `mode` says.
///
/// # Errors
/// Unreadable trees.
pub fn mode_stats(
    repo: &Repository,
    snapshots: &[crate::snapshot::SnapshotEntry],
    mode: StatsMode,
) -> Result<ModeStats> {
    let index = repo.index();
    let mut s = ModeStats { snapshots_count: snapshots.len(), ..Default::default() };
    let mut files: HashSet<Vec<Id>> = HashSet::new();
    let mut blobs: HashSet<Id> = HashSet::new();
    let mut file_count = 0u64;
    for snap in snapshots {
        if mode == StatsMode::RawData || mode == StatsMode::BlobsPerFile {
            blobs.insert(snap.snapshot.tree);
        }
        // Hard links: one inode restores once per snapshot.
        let mut inodes: HashSet<(u64, u64)> = HashSet::new();
        try_walk(repo, &snap.snapshot.tree, &mut |_, n| {
            match mode {
                StatsMode::RestoreSize => {
                    file_count += 1;
                    if n.kind() == NodeType::File
                        && (n.links <= 1 || inodes.insert((n.device, n.inode)))
                    {
                        s.total_size += n.size;
                    }
                }
                StatsMode::FilesByContents | StatsMode::BlobsPerFile => {
                    if n.kind() == NodeType::File && files.insert(n.content.clone()) {
                        file_count += 1;
                        if mode == StatsMode::FilesByContents {
                            s.total_size += n.size;
                        } else {
                            blobs.extend(n.content.iter().copied());
                        }
                    }
                }
                StatsMode::RawData => {
                    blobs.extend(n.content.iter().copied());
                    blobs.extend(n.content_lists.iter().copied());
                    blobs.extend(n.prints);
                    if let Some(t) = n.subtree {
                        blobs.insert(t);
                    }
                }
            }
            Ok(())
        })?;
    }
    match mode {
        StatsMode::RestoreSize | StatsMode::FilesByContents => {
            s.total_file_count = Some(file_count);
        }
        StatsMode::BlobsPerFile | StatsMode::RawData => {
            if mode == StatsMode::RawData {
                // What the repository stores for them includes the bases of patches (§9.2).
                let bases: Vec<Id> = blobs.iter().flat_map(|b| index.bases_of(b)).collect();
                blobs.extend(bases);
            }
            let (mut plain, mut stored) = (0, 0);
            for b in &blobs {
                if let Some(loc) = index.get(b) {
                    plain += index.plain_len(&loc).unwrap_or(0);
                    stored += u64::from(loc.blob.length);
                }
            }
            s.total_size = plain;
            s.total_blob_count = Some(blobs.len() as u64);
            if mode == StatsMode::RawData {
                s.total_stored_size = Some(stored);
            } else {
                s.total_file_count = Some(file_count);
            }
        }
    }
    Ok(s)
}
