//! Trees compared the way a restore must reproduce them, and the data the comparisons run on:
//! shared by the end-to-end tests that restore files (included with `#[path]` by each).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

pub use holdfast_testkit::random_bytes;

/// Everything observable about one entry.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime_ns: i128,
    content: Option<(u64, u64)>,
    target: Option<Vec<u8>>,
    rdev: u64,
    link_group: Option<Vec<u8>>,
}

/// Length and a 64-bit hash of the content (enough to tell any realistic difference).
fn digest(data: &[u8]) -> (u64, u64) {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut h);
    (data.len() as u64, h.finish())
}

pub fn describe(root: &Path) -> BTreeMap<Vec<u8>, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().as_os_str().as_bytes().to_vec();
            let ft = m.file_type();
            let (kind, content, target) = if ft.is_dir() {
                stack.push(p.clone());
                ("dir", None, None)
            } else if ft.is_symlink() {
                ("symlink", None, Some(fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec()))
            } else if ft.is_fifo() {
                ("fifo", None, None)
            } else if ft.is_char_device() {
                ("chardev", None, None)
            } else if ft.is_block_device() {
                ("blockdev", None, None)
            } else {
                ("file", Some(digest(&fs::read(&p).unwrap())), None)
            };
            let link_group = (kind == "file" && m.nlink() > 1)
                .then(|| inodes.entry(m.ino()).or_insert_with(|| rel.clone()).clone());
            let symlink = kind == "symlink";
            out.insert(
                rel,
                Entry {
                    kind,
                    mode: if symlink { 0 } else { m.mode() & 0o7777 },
                    uid: m.uid(),
                    gid: m.gid(),
                    size: if kind == "file" { m.size() } else { 0 },
                    mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                    content,
                    target,
                    rdev: if kind.ends_with("dev") { m.rdev() } else { 0 },
                    link_group,
                },
            );
        }
    }
    out
}

pub fn assert_same_tree(a: &Path, b: &Path) {
    let (da, db) = (describe(a), describe(b));
    for (k, ea) in &da {
        let eb = db
            .get(k)
            .unwrap_or_else(|| panic!("{} missing from restore", String::from_utf8_lossy(k)));
        assert_eq!(ea, eb, "entry {} differs", String::from_utf8_lossy(k));
    }
    assert_eq!(da.len(), db.len(), "the restore has extra entries");
}
