//! The virtual file tree: every snapshot with a `virtual_file`, read from manifests alone.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;

use holdfast_repository::backend::FileType;
use holdfast_repository::snapshot::{Snapshot, VirtualKind};
use holdfast_repository::{Id, Repository};
use serde::{Deserialize, Serialize};

use super::vpath;

/// One virtual-tree snapshot, as much as listing needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Snapshot id.
    pub id: Id,
    /// Absolute virtual path.
    pub path: String,
    /// File or directory marker.
    pub kind: VirtualKind,
    /// Plaintext size.
    pub size: u64,
    /// Push completion time.
    pub mtime: jiff::Timestamp,
    /// Compression asked for at push.
    pub compression: Option<String>,
    /// Root tree of the snapshot.
    pub tree: Id,
}

impl Entry {
    fn from_snapshot(id: Id, s: &Snapshot) -> Option<Self> {
        let v = s.virtual_file.as_ref()?;
        Some(Entry {
            id,
            path: v.path.clone(),
            kind: v.kind,
            size: v.size,
            mtime: s.summary.backup_end.unwrap_or(s.time),
            compression: v.compression.clone(),
            tree: s.tree,
        })
    }
}

/// Cached knowledge of one snapshot: manifests are immutable and named by their hash, so a cached
/// entry never goes stale; `None` records "not a virtual-tree snapshot".
#[derive(Serialize, Deserialize)]
struct Cached(Option<Entry>);

fn cache_dir(repo: &Repository) -> Option<PathBuf> {
    if std::env::var_os("HOLDFAST_NO_CACHE").is_some() {
        return None;
    }
    let base = std::env::var_os("HOLDFAST_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("holdfast")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/holdfast")))?;
    Some(base.join("datasafed").join(&repo.config().id))
}

/// Every snapshot in the virtual tree.
///
/// Manifests are fetched in parallel and remembered in a local cache (best effort: a cache that
/// cannot be read or written only costs the fetch).
pub fn load(repo: &Repository) -> anyhow::Result<Vec<Entry>> {
    let names: Vec<String> =
        repo.backend().list(FileType::Snapshot)?.into_iter().map(|i| i.name).collect();
    let cache = cache_dir(repo);
    if let Some(dir) = &cache {
        let _ = std::fs::create_dir_all(dir);
    }
    let todo = Mutex::new(names.iter());
    let out = Mutex::new(Vec::new());
    let first_err: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let workers = names.len().clamp(1, 16);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let Some(name) = todo.lock().unwrap_or_else(|e| e.into_inner()).next() else {
                        break;
                    };
                    match fetch(repo, cache.as_ref(), name) {
                        Ok(Some(e)) => out.lock().unwrap_or_else(|e| e.into_inner()).push(e),
                        Ok(None) => {}
                        Err(e) => {
                            first_err.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_err.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    if let Some(dir) = &cache {
        // Forget cached manifests of snapshots that are gone, so the cache tracks the repository.
        let live: HashSet<&str> = names.iter().map(String::as_str).collect();
        if let Ok(rd) = std::fs::read_dir(dir) {
            for f in rd.flatten() {
                let n = f.file_name();
                if n.to_str().is_some_and(|n| !live.contains(n)) {
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
    }
    Ok(out.into_inner().unwrap_or_else(|e| e.into_inner()))
}

fn fetch(repo: &Repository, cache: Option<&PathBuf>, name: &str) -> anyhow::Result<Option<Entry>> {
    let id: Id = name.parse().map_err(|e| anyhow::anyhow!("snapshot name {name}: {e}"))?;
    if let Some(dir) = cache
        && let Ok(bytes) = std::fs::read(dir.join(name))
        && let Ok(Cached(e)) = serde_json::from_slice::<Cached>(&bytes)
        && e.as_ref().is_none_or(|e| e.id == id)
    {
        return Ok(e);
    }
    let snap = match repo.load_snapshot(&id) {
        Ok(s) => s,
        // Removed by a concurrent rm between list and get.
        Err(holdfast_repository::Error::Backend(e)) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let entry = Entry::from_snapshot(id, &snap);
    if let Some(dir) = cache
        && let Ok(json) = serde_json::to_vec(&Cached(entry.clone()))
    {
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        if std::fs::write(&tmp, json).is_ok() && std::fs::rename(&tmp, dir.join(name)).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok(entry)
}

/// The tree as one command sees it.
#[derive(Debug, Default)]
pub struct Tree {
    /// Path -> its file snapshots, newest first.
    files: BTreeMap<String, Vec<Entry>>,
    /// Path -> its directory markers.
    markers: BTreeMap<String, Vec<Entry>>,
}

/// One line of `list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Absolute virtual path.
    pub path: String,
    /// Directory or file.
    pub is_dir: bool,
    /// Size (-1 for directories, rclone's value).
    pub size: i64,
    /// Modification time.
    pub mtime: jiff::Timestamp,
}

/// Totals of `stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    /// Sum of file sizes.
    pub total_size: u64,
    /// Directories.
    pub dirs: u64,
    /// Files.
    pub files: u64,
}

impl Tree {
    /// Builds the tree from snapshot entries.
    pub fn new(entries: Vec<Entry>) -> Self {
        let mut t = Tree::default();
        for e in entries {
            let map = match e.kind {
                VirtualKind::File => &mut t.files,
                VirtualKind::Dir => &mut t.markers,
            };
            map.entry(e.path.clone()).or_default().push(e);
        }
        for v in t.files.values_mut().chain(t.markers.values_mut()) {
            v.sort_by(|a, b| b.mtime.cmp(&a.mtime).then(b.id.cmp(&a.id)));
        }
        t
    }

    /// The file at `path` (its newest snapshot).
    pub fn file(&self, path: &str) -> Option<&Entry> {
        self.files.get(path).and_then(|v| v.first())
    }

    /// Every snapshot of the file at `path`.
    pub fn file_versions(&self, path: &str) -> &[Entry] {
        self.files.get(path).map(Vec::as_slice).unwrap_or_default()
    }

    /// The directory marker snapshots at `path`.
    pub fn markers(&self, path: &str) -> &[Entry] {
        self.markers.get(path).map(Vec::as_slice).unwrap_or_default()
    }

    /// Every snapshot strictly below `dir`.
    pub fn below(&self, dir: &str) -> impl Iterator<Item = &Entry> {
        self.files
            .iter()
            .chain(self.markers.iter())
            .filter(move |(p, _)| p.as_str() != dir && vpath::is_within(p, dir))
            .flat_map(|(_, v)| v.iter())
    }

    /// Whether `path` is a directory: the root, a marker, or an ancestor of anything.
    pub fn is_dir(&self, path: &str) -> bool {
        path == "/" || self.markers.contains_key(path) || self.below(path).next().is_some()
    }

    /// The nearest proper ancestor of `path` that is a file, if any.
    pub fn file_ancestor(&self, path: &str) -> Option<&str> {
        let mut p = path;
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            if p.is_empty() {
                return None;
            }
            if let Some((k, _)) = self.files.get_key_value(p) {
                return Some(k.as_str());
            }
        }
        None
    }

    /// Entries below the directory `dir`, to `depth` levels (`None`: unlimited).
    pub fn list_dir(&self, dir: &str, depth: Option<usize>) -> Vec<Listed> {
        let prefix_len = if dir == "/" { 1 } else { dir.len() + 1 };
        let mut dirs: BTreeMap<String, jiff::Timestamp> = BTreeMap::new();
        let mut out = Vec::new();
        let within = |d: usize| depth.is_none_or(|max| d <= max);
        let mut visit = |path: &str, mtime: jiff::Timestamp, file: Option<&Entry>| {
            let rel = &path[prefix_len..];
            let comps: Vec<&str> = rel.split('/').collect();
            // Every ancestor between `dir` and the entry is a directory of the listing.
            let dir_levels = if file.is_some() { comps.len() - 1 } else { comps.len() };
            for level in 1..=dir_levels {
                if !within(level) {
                    break;
                }
                let d = format!("{}{}", &path[..prefix_len], comps[..level].join("/"));
                let m = dirs.entry(d).or_insert(mtime);
                *m = (*m).max(mtime);
            }
            if let Some(f) = file
                && within(comps.len())
            {
                out.push(Listed {
                    path: f.path.clone(),
                    is_dir: false,
                    size: i64::try_from(f.size).unwrap_or(i64::MAX),
                    mtime: f.mtime,
                });
            }
        };
        for (p, v) in
            self.files.iter().filter(|(p, _)| p.as_str() != dir && vpath::is_within(p, dir))
        {
            visit(p, v[0].mtime, Some(&v[0]));
        }
        for (p, v) in
            self.markers.iter().filter(|(p, _)| p.as_str() != dir && vpath::is_within(p, dir))
        {
            visit(p, v[0].mtime, None);
        }
        out.extend(dirs.into_iter().map(|(path, mtime)| Listed {
            path,
            is_dir: true,
            size: -1,
            mtime,
        }));
        out
    }

    /// Totals below `dir` (not counting `dir` itself).
    pub fn stat_dir(&self, dir: &str) -> Stat {
        let mut s = Stat::default();
        for l in self.list_dir(dir, None) {
            if l.is_dir {
                s.dirs += 1;
            } else {
                s.files += 1;
                s.total_size += u64::try_from(l.size).unwrap_or(0);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(n: u8, path: &str, kind: VirtualKind, size: u64, secs: i64) -> Entry {
        Entry {
            id: Id([n; 32]),
            path: path.into(),
            kind,
            size,
            mtime: jiff::Timestamp::from_second(secs).unwrap(),
            compression: None,
            tree: Id::default(),
        }
    }

    #[test]
    fn lists_implied_directories_and_newest_files() {
        use VirtualKind::*;
        let t = Tree::new(vec![
            e(1, "/b/x.tar", File, 10, 100),
            e(2, "/b/x.tar", File, 20, 200),
            e(3, "/b/wal/1.zst", File, 5, 300),
            e(4, "/b/empty", Dir, 0, 50),
            e(5, "/other", File, 7, 10),
        ]);
        assert_eq!(t.file("/b/x.tar").unwrap().size, 20);
        assert!(t.is_dir("/b/wal") && t.is_dir("/b/empty") && !t.is_dir("/b/x.tar"));
        assert_eq!(t.file_ancestor("/b/x.tar/y"), Some("/b/x.tar"));
        let mut top: Vec<_> =
            t.list_dir("/b", Some(1)).into_iter().map(|l| (l.path, l.is_dir, l.size)).collect();
        top.sort();
        assert_eq!(
            top,
            vec![
                ("/b/empty".into(), true, -1),
                ("/b/wal".into(), true, -1),
                ("/b/x.tar".into(), false, 20)
            ]
        );
        assert_eq!(t.stat_dir("/"), Stat { total_size: 32, dirs: 3, files: 3 });
        assert_eq!(t.stat_dir("/b"), Stat { total_size: 25, dirs: 2, files: 2 });
        let wal = t.list_dir("/b", None).into_iter().find(|l| l.path == "/b/wal").unwrap();
        assert_eq!(wal.mtime.as_second(), 300);
    }
}
