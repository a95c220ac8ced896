//! A tree node from a file's metadata: type, mode, owners, times, links, symlink target and
//! extended attributes (format §9).

use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::tree::{Node, NodeType, Xattr};

fn ns(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// A node describing `meta` (content and subtree left empty).
pub(super) fn node_from_metadata(name: &[u8], path: &Path, meta: &Metadata, xattrs: bool) -> Node {
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
        content_lists: Vec::new(),
        prints: None,
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
