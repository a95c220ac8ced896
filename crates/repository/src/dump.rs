//! `dump`: a file of a snapshot as its bytes, or a directory as a tar stream (restic's
//! `dump --archive tar`), written as it is read so memory does not grow with the tree.
//!
//! The tar is POSIX ustar, with PAX records for what ustar cannot hold (paths and link targets
//! over 100 bytes, sizes of 8 GiB and more, modification times to the nanosecond). Entry
//! names are the snapshot paths without the leading `/` (`src/sub/a.txt`), as restic writes them.

use std::io::Write;

use crate::error::{Error, Result};
use crate::stats::try_walk;
use crate::tree::{Node, NodeType};
use crate::{Id, Repository};

const BLOCK: usize = 512;

/// Writes the node at `path` of a snapshot: a file's content, or a directory's entries as tar.
/// Returns the bytes of file content written.
///
/// # Errors
/// `PathNotFound`; unreadable blobs or trees; write errors (a closed pipe among them).
pub fn dump(repo: &Repository, root: &Id, path: &str, out: &mut dyn Write) -> Result<u64> {
    let node = repo.find_node(root, path)?;
    match node.kind() {
        NodeType::File => crate::restore::dump(repo, &node, out),
        NodeType::Dir => {
            let sub = node.subtree.ok_or_else(|| Error::corrupt("tree", "dir without subtree"))?;
            let base = path.trim_matches('/').to_string();
            tar_tree(repo, &sub, &base, out)
        }
        other => Err(Error::Invalid(format!(
            "{path} is a {other:?}, not a file or directory; nothing to dump"
        ))),
    }
}

/// Writes every entry below tree `root` as tar, names prefixed with `base/` (when not empty),
/// then the two zero blocks that end an archive.
///
/// # Errors
/// As [`dump`].
pub fn tar_tree(repo: &Repository, root: &Id, base: &str, out: &mut dyn Write) -> Result<u64> {
    let mut total = 0;
    let w = |out: &mut dyn Write, b: &[u8]| {
        out.write_all(b).map_err(|e| Error::io("write", "<output>", e))
    };
    try_walk(repo, root, &mut |path, node| {
        let rel = path.trim_start_matches('/');
        let name = if base.is_empty() { rel.to_string() } else { format!("{base}/{rel}") };
        let (flag, size) = match node.kind() {
            NodeType::File => (b'0', node.size),
            NodeType::Dir => (b'5', 0),
            NodeType::Symlink => (b'2', 0),
            NodeType::Chardev => (b'3', 0),
            NodeType::Blockdev => (b'4', 0),
            NodeType::Fifo => (b'6', 0),
            // A socket cannot be archived (tar has no type for it; restic skips them too).
            NodeType::Socket => return Ok(()),
        };
        let name = if flag == b'5' { format!("{name}/") } else { name };
        w(out, &header(&name, node, flag, size))?;
        if flag == b'0' {
            let written = crate::restore::dump(repo, node, out)?;
            if written != size {
                return Err(Error::corrupt(
                    format!("file {path}"),
                    format!("content is {written} bytes, the tree says {size}"),
                ));
            }
            total += written;
            let pad = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
            w(out, &vec![0u8; pad])?;
        }
        Ok(())
    })?;
    w(out, &[0u8; 2 * BLOCK])?;
    out.flush().map_err(|e| Error::io("write", "<output>", e))?;
    Ok(total)
}

/// The header block(s) of one entry: a PAX extended header first when ustar cannot hold it.
fn header(name: &str, node: &Node, flag: u8, size: u64) -> Vec<u8> {
    let target = node.target.clone().unwrap_or_default();
    let mut pax = Vec::new();
    if name.len() > 100 {
        pax_record(&mut pax, "path", name.as_bytes());
    }
    if target.len() > 100 {
        pax_record(&mut pax, "linkpath", &target);
    }
    let nanos = node.mtime.rem_euclid(1_000_000_000);
    if nanos != 0 {
        let secs = node.mtime.div_euclid(1_000_000_000);
        pax_record(&mut pax, "mtime", format!("{secs}.{nanos:09}").as_bytes());
    }
    if size >= 0o77777777777 {
        pax_record(&mut pax, "size", size.to_string().as_bytes());
    }
    let mut blocks = Vec::new();
    if !pax.is_empty() {
        let mut h = ustar(b"././@PaxHeader", 0o644, 0, 0, pax.len() as u64, 0, b'x', b"", (0, 0));
        h.extend_from_slice(&pax);
        h.resize(h.len().div_ceil(BLOCK) * BLOCK, 0);
        blocks = h;
    }
    // st_rdev as glibc encodes it.
    let major = ((node.rdev >> 8) & 0xfff) | ((node.rdev >> 32) & !0xfff);
    let minor = (node.rdev & 0xff) | ((node.rdev >> 12) & !0xff);
    blocks.extend(ustar(
        name.as_bytes(),
        node.mode & 0o7777,
        node.uid,
        node.gid,
        size,
        node.mtime.div_euclid(1_000_000_000),
        flag,
        &target,
        (major, minor),
    ));
    blocks
}

/// One PAX record: `"<len> <key>=<value>\n"`, where len counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = key.len() + value.len() + 3; // space, '=', newline
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// A ustar header block. Fields too long for it are truncated (the PAX record holds them).
#[allow(clippy::too_many_arguments)]
fn ustar(
    name: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: i64,
    flag: u8,
    link: &[u8],
    (major, minor): (u64, u64),
) -> Vec<u8> {
    let mut h = vec![0u8; BLOCK];
    let put = |h: &mut [u8], at: usize, len: usize, v: &[u8]| {
        let n = v.len().min(len);
        h[at..at + n].copy_from_slice(&v[..n]);
    };
    let octal = |h: &mut [u8], at: usize, len: usize, v: u64| {
        let s = format!("{:0w$o}", v, w = len - 1);
        // Too large for the field: leave it zero (a PAX record carries the value).
        if s.len() < len {
            h[at..at + len - 1].copy_from_slice(s.as_bytes());
        }
    };
    put(&mut h, 0, 100, name);
    octal(&mut h, 100, 8, u64::from(mode));
    octal(&mut h, 108, 8, u64::from(uid));
    octal(&mut h, 116, 8, u64::from(gid));
    octal(&mut h, 124, 12, size);
    octal(&mut h, 136, 12, u64::try_from(mtime).unwrap_or(0));
    h[156] = flag;
    put(&mut h, 157, 100, link);
    put(&mut h, 257, 8, b"ustar\x0000");
    if flag == b'3' || flag == b'4' {
        octal(&mut h, 329, 8, major);
        octal(&mut h, 337, 8, minor);
    }
    // The checksum is computed with its own field as eight spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let mut v = Vec::new();
        pax_record(&mut v, "path", b"a");
        assert_eq!(v, b"9 path=a\n");
        let mut v = Vec::new();
        pax_record(&mut v, "path", &[b'x'; 95]);
        assert_eq!(v.len(), 105);
        assert!(v.starts_with(b"105 path="));
    }
}
