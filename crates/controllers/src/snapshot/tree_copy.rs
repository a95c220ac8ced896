//! Copying a directory tree as cheaply as the filesystem allows, keeping what a volume's
//! application relies on: contents (sparse holes stay holes), modes, owners, times, symlinks,
//! hard links, FIFOs and device nodes, extended attributes where present. Each regular file is
//! first cloned with `FICLONE` (a reflink: btrfs, XFS, bcachefs, overlayfs on those), which
//! shares the data blocks copy-on-write and takes no time whatever the size; where the
//! filesystem cannot clone (ext4, or two filesystems), only the data regions are copied
//! (`SEEK_DATA`/`SEEK_HOLE` and `copy_file_range`), so a hole is never written.
//!
//! [`build_then_rename`] makes the result appear all at once: a crash or an error leaves only a
//! staging directory that the next attempt removes, never a half tree under the final name.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, SeekFrom, Timespec, Timestamps};
use rustix::io::Errno;

use crate::Error;

/// What a copy wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// Logical bytes of the regular files (each inode once, holes included).
    pub bytes: u64,
    /// Regular files (each inode once).
    pub files: u64,
    /// Files whose data was cloned (shared copy-on-write) rather than copied.
    pub cloned: u64,
}

/// Copies the tree at `src` to `dst`, which must not exist yet; `dst` gets `src`'s own
/// metadata too.
///
/// # Errors
/// [`Error::Io`] naming the path that could not be read or written.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<Copied, Error> {
    let meta = fs::symlink_metadata(src).map_err(Error::io(format!("stat {}", src.display())))?;
    if !meta.is_dir() {
        return Err(Error::io(format!("copy {}", src.display()))(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory",
        )));
    }
    let mut copy = TreeCopy::default();
    copy.dir(src, dst, &meta)?;
    Ok(copy.copied)
}

/// Builds a directory at `staging` with `fill` (which must create it), flushes it to disk, and
/// renames it to `target`. A `target` that exists is complete (only a rename ever makes it) and
/// is left as it is; a `staging` left by an attempt that crashed is removed first. Both must sit
/// on one filesystem.
///
/// # Errors
/// What `fill` returns, or [`Error::Io`] for the staging, flush and rename steps.
pub fn build_then_rename(
    staging: &Path,
    target: &Path,
    fill: impl FnOnce(&Path) -> Result<(), Error>,
) -> Result<bool, Error> {
    if target.exists() {
        return Ok(false);
    }
    remove_tree(staging)?;
    let parent = staging.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(parent).map_err(Error::io(format!("create {}", parent.display())))?;
    if let Err(error) = fill(staging) {
        // Best effort: the next attempt removes it anyway.
        let _ = remove_tree(staging);
        return Err(error);
    }
    // Everything under the staging directory reaches the disk before the name that makes it
    // count does: after a power cut the tree is either complete under `target` or not there.
    let dir = File::open(staging).map_err(Error::io(format!("open {}", staging.display())))?;
    rustix::fs::syncfs(&dir)
        .map_err(|e| Error::io(format!("flush {}", staging.display()))(e.into()))?;
    if let Some(target_parent) = target.parent() {
        fs::create_dir_all(target_parent)
            .map_err(Error::io(format!("create {}", target_parent.display())))?;
    }
    fs::rename(staging, target).map_err(Error::io(format!(
        "rename {} to {}",
        staging.display(),
        target.display()
    )))?;
    if let Some(target_parent) = target.parent() {
        File::open(target_parent)
            .and_then(|d| d.sync_all())
            .map_err(Error::io(format!("flush {}", target_parent.display())))?;
    }
    Ok(true)
}

/// Removes the tree at `path` if it is there, making directories writable where a copied mode
/// forbids removing their entries (a volume may hold read-only directories).
///
/// # Errors
/// [`Error::Io`] naming the path that could not be removed.
pub fn remove_tree(path: &Path) -> Result<(), Error> {
    match fs::remove_dir_all(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() != io::ErrorKind::PermissionDenied => {
            return Err(Error::io(format!("remove {}", path.display()))(e));
        }
        Err(_) => {}
    }
    make_writable(path)?;
    fs::remove_dir_all(path).map_err(Error::io(format!("remove {}", path.display())))
}

fn make_writable(path: &Path) -> Result<(), Error> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("stat {}", path.display()))(e)),
    };
    if !meta.is_dir() {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(Error::io(format!("chmod {}", path.display())))?;
    let entries = fs::read_dir(path).map_err(Error::io(format!("list {}", path.display())))?;
    for entry in entries {
        let entry = entry.map_err(Error::io(format!("list {}", path.display())))?;
        make_writable(&entry.path())?;
    }
    Ok(())
}

/// The state of one copy: the hard links seen so far and the totals.
#[derive(Default)]
struct TreeCopy {
    /// (device, inode) of each multiply-linked file copied so far, and where its copy is.
    links: HashMap<(u64, u64), PathBuf>,
    copied: Copied,
}

impl TreeCopy {
    fn dir(&mut self, src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<(), Error> {
        // Owner-only while it fills; its own mode, owner and times come last, since adding
        // entries changes a directory's times and a read-only mode would refuse them.
        fs::create_dir(dst).map_err(Error::io(format!("create {}", dst.display())))?;
        fs::set_permissions(dst, fs::Permissions::from_mode(0o700))
            .map_err(Error::io(format!("chmod {}", dst.display())))?;
        let entries = fs::read_dir(src).map_err(Error::io(format!("list {}", src.display())))?;
        for entry in entries {
            let entry = entry.map_err(Error::io(format!("list {}", src.display())))?;
            let (from, to) = (entry.path(), dst.join(entry.file_name()));
            let meta = match fs::symlink_metadata(&from) {
                Ok(meta) => meta,
                // Deleted since it was listed (a temporary file of a busy volume): it is not
                // part of the snapshot, and must not fail it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("stat {}", from.display()))(e)),
            };
            self.entry(&from, &to, &meta)?;
        }
        set_owner(dst, meta, false)?;
        copy_xattrs(src, dst);
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(Error::io(format!("chmod {}", dst.display())))?;
        set_times(dst, meta, AtFlags::empty())
    }

    fn entry(&mut self, src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<(), Error> {
        let kind = meta.file_type();
        if kind.is_dir() {
            return self.dir(src, dst, meta);
        }
        if kind.is_symlink() {
            let target =
                fs::read_link(src).map_err(Error::io(format!("read link {}", src.display())))?;
            std::os::unix::fs::symlink(&target, dst)
                .map_err(Error::io(format!("create symlink {}", dst.display())))?;
            set_owner(dst, meta, true)?;
            // The link's own times, never its target's.
            return set_times(dst, meta, AtFlags::SYMLINK_NOFOLLOW);
        }
        if kind.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = self.links.get(&key) {
                    return fs::hard_link(first, dst).map_err(Error::io(format!(
                        "link {} to {}",
                        dst.display(),
                        first.display()
                    )));
                }
                self.links.insert(key, dst.to_path_buf());
            }
            return self.file(src, dst, meta);
        }
        special(src, dst, meta)
    }

    fn file(&mut self, src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<(), Error> {
        let from = match File::open(src) {
            Ok(from) => from,
            // Deleted since it was listed: not part of the snapshot.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("open {}", src.display()))(e)),
        };
        let to = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dst)
            .map_err(Error::io(format!("create {}", dst.display())))?;
        let cloned = meta.len() > 0 && rustix::fs::ioctl_ficlone(&to, &from).is_ok();
        if !cloned {
            copy_data(&from, &to, meta.len()).map_err(Error::io(format!(
                "copy {} to {}",
                src.display(),
                dst.display()
            )))?;
        }
        set_owner(dst, meta, false)?;
        copy_xattrs(src, dst);
        to.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(Error::io(format!("chmod {}", dst.display())))?;
        set_times(dst, meta, AtFlags::empty())?;
        self.copied.bytes += meta.len();
        self.copied.files += 1;
        self.copied.cloned += u64::from(cloned);
        Ok(())
    }
}

/// Copies the data regions of `from` into `to` and gives `to` the length `len`: the holes
/// between and after them stay holes.
fn copy_data(from: &File, to: &File, len: u64) -> io::Result<()> {
    let mut pos = 0;
    while pos < len {
        let data = match rustix::fs::seek(from, SeekFrom::Data(pos)) {
            Ok(offset) => offset,
            // Only holes from here to the end.
            Err(Errno::NXIO) => break,
            // A filesystem without hole reporting: all of it is data.
            Err(Errno::INVAL | Errno::OPNOTSUPP) => pos,
            Err(e) => return Err(e.into()),
        };
        let hole = match rustix::fs::seek(from, SeekFrom::Hole(data)) {
            Ok(offset) => offset.min(len),
            Err(Errno::INVAL | Errno::OPNOTSUPP) => len,
            Err(e) => return Err(e.into()),
        };
        copy_range(from, to, data, hole.saturating_sub(data))?;
        pos = hole.max(data + 1);
    }
    to.set_len(len)
}

/// Copies `count` bytes at `offset` from `from` to the same offset of `to`: in the kernel where
/// it can (`copy_file_range`), else through a buffer.
fn copy_range(from: &File, to: &File, offset: u64, count: u64) -> io::Result<()> {
    let (mut read_at, mut write_at, end) = (offset, offset, offset + count);
    while read_at < end {
        let chunk = usize::try_from(end - read_at).unwrap_or(usize::MAX).min(1 << 30);
        match rustix::fs::copy_file_range(from, Some(&mut read_at), to, Some(&mut write_at), chunk)
        {
            // The file shrank meanwhile: what is left reads as nothing.
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(Errno::XDEV | Errno::NOSYS | Errno::INVAL | Errno::OPNOTSUPP) => {
                return copy_range_buffered(from, to, read_at, end);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn copy_range_buffered(from: &File, to: &File, mut at: u64, end: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    while at < end {
        let want = usize::try_from(end - at).unwrap_or(usize::MAX).min(buf.len());
        let n = from.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all_at(&buf[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// FIFOs and device nodes are recreated; device nodes need CAP_MKNOD, and sockets cannot be
/// copied at all: both are skipped with a warning rather than failing the whole copy.
fn special(src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<(), Error> {
    use rustix::fs::{FileType, Mode};
    use std::os::unix::fs::FileTypeExt as _;
    let kind = meta.file_type();
    let file_type = if kind.is_fifo() {
        FileType::Fifo
    } else if kind.is_char_device() {
        FileType::CharacterDevice
    } else if kind.is_block_device() {
        FileType::BlockDevice
    } else {
        tracing::warn!(path = %src.display(), "a socket cannot be copied; skipped");
        return Ok(());
    };
    let mode = Mode::from_raw_mode(meta.mode() & 0o7777);
    match rustix::fs::mknodat(CWD, dst, file_type, mode, meta.rdev()) {
        Ok(()) => {}
        Err(Errno::PERM) if file_type != FileType::Fifo => {
            tracing::warn!(path = %src.display(), "not permitted to create a device node; skipped");
            return Ok(());
        }
        Err(e) => return Err(Error::io(format!("create {}", dst.display()))(e.into())),
    }
    set_owner(dst, meta, false)?;
    // By path, never by opening: opening a FIFO blocks until a writer appears.
    fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(Error::io(format!("chmod {}", dst.display())))?;
    set_times(dst, meta, AtFlags::empty())
}

/// Gives `dst` the owner of the source. Only root may give files away; anyone else keeps
/// owning the copies (as `cp -a` does), which is not an error.
fn set_owner(dst: &Path, meta: &fs::Metadata, link: bool) -> Result<(), Error> {
    let (uid, gid) = (Some(meta.uid()), Some(meta.gid()));
    let result = if link {
        std::os::unix::fs::lchown(dst, uid, gid)
    } else {
        std::os::unix::fs::chown(dst, uid, gid)
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        Err(e) => Err(Error::io(format!("chown {}", dst.display()))(e)),
    }
}

/// Extended attributes, best effort: a filesystem without them, or a namespace this process may
/// not write (`trusted.*`, `security.*` without privileges), loses them with a debug line.
fn copy_xattrs(src: &Path, dst: &Path) {
    let Ok(names) = xattr::list(src) else { return };
    for name in names {
        let copied = xattr::get(src, &name)
            .and_then(|value| value.map_or(Ok(()), |v| xattr::set(dst, &name, &v)));
        if let Err(error) = copied {
            tracing::debug!(path = %dst.display(), ?name, %error, "extended attribute not copied");
        }
    }
}

/// Gives `dst` the source's access and modification times, to the nanosecond.
fn set_times(dst: &Path, meta: &fs::Metadata, flags: AtFlags) -> Result<(), Error> {
    let times = Timestamps {
        last_access: Timespec { tv_sec: meta.atime(), tv_nsec: meta.atime_nsec() },
        last_modification: Timespec { tv_sec: meta.mtime(), tv_nsec: meta.mtime_nsec() },
    };
    rustix::fs::utimensat(CWD, dst, &times, flags)
        .map_err(|e| Error::io(format!("set times of {}", dst.display()))(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::os::unix::fs::symlink;

    fn write(path: &Path, data: &[u8]) {
        let mut f = File::create(path).unwrap();
        f.write_all(data).unwrap();
    }

    /// Everything a copy must keep, per path, in a form two trees can be compared by.
    fn manifest(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let m = fs::symlink_metadata(&path).unwrap();
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                let body = if m.is_file() {
                    format!("{:?}", blake3::hash(&fs::read(&path).unwrap()))
                } else if m.is_symlink() {
                    fs::read_link(&path).unwrap().display().to_string()
                } else if m.is_dir() {
                    stack.push(path.clone());
                    String::new()
                } else {
                    "special".into()
                };
                out.push(format!(
                    "{rel} {:o} {} {}.{} {}",
                    m.mode(),
                    m.len() * u64::from(!m.is_dir()),
                    m.mtime(),
                    m.mtime_nsec(),
                    body
                ));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn the_copy_keeps_contents_modes_times_links_and_holes_and_ignores_later_writes() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("sub/deeper")).unwrap();
        write(&src.join("small"), b"hello");
        write(&src.join("sub/deeper/big"), &vec![7u8; 3 << 20]);
        write(&src.join("empty"), b"");
        fs::set_permissions(src.join("small"), fs::Permissions::from_mode(0o640)).unwrap();
        symlink("sub/deeper/big", src.join("link")).unwrap();
        symlink("/nowhere", src.join("dangling")).unwrap();
        fs::hard_link(src.join("small"), src.join("small-again")).unwrap();
        // 64 MiB logical with one block of data in the middle.
        let sparse = File::create(src.join("sparse")).unwrap();
        sparse.set_len(64 << 20).unwrap();
        sparse.write_all_at(b"middle", 32 << 20).unwrap();
        drop(sparse);
        rustix::fs::mknodat(
            CWD,
            src.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        fs::set_permissions(src.join("sub"), fs::Permissions::from_mode(0o555)).unwrap();

        let dst = tmp.path().join("dst");
        let copied = copy_tree(&src, &dst).unwrap();
        assert_eq!(manifest(&src), manifest(&dst));
        assert_eq!(copied.files, 4, "small (once), big, empty, sparse: {copied:?}");
        assert_eq!(copied.bytes, 5 + (3 << 20) + (64 << 20));
        assert_eq!(
            fs::metadata(dst.join("small")).unwrap().ino(),
            fs::metadata(dst.join("small-again")).unwrap().ino(),
            "a hard link stays one file"
        );
        let holes = fs::metadata(dst.join("sparse")).unwrap();
        assert!(holes.blocks() * 512 < 1 << 20, "the holes stay holes: {} blocks", holes.blocks());
        use std::os::unix::fs::FileTypeExt as _;
        assert!(fs::symlink_metadata(dst.join("fifo")).unwrap().file_type().is_fifo());

        // The copy does not follow later writes to the source.
        fs::set_permissions(src.join("sub"), fs::Permissions::from_mode(0o755)).unwrap();
        write(&src.join("sub/deeper/big"), b"changed");
        write(&src.join("new"), b"new");
        assert_eq!(fs::read(dst.join("sub/deeper/big")).unwrap().len(), 3 << 20);
        assert!(!dst.join("new").exists());
        remove_tree(&dst).unwrap();
        assert!(!dst.exists());
    }

    #[test]
    fn a_failed_build_leaves_nothing_under_the_target_name() {
        let tmp = tempfile::tempdir().unwrap();
        let (staging, target) = (tmp.path().join(".staging/t"), tmp.path().join("t"));
        let failed = build_then_rename(&staging, &target, |dir| {
            fs::create_dir(dir).unwrap();
            write(&dir.join("half"), b"x");
            Err(Error::Invalid("the source went away".into()))
        });
        assert!(failed.is_err());
        assert!(!target.exists() && !staging.exists());
        // A staging directory a crash left behind is replaced, and the result appears whole.
        fs::create_dir_all(&staging).unwrap();
        write(&staging.join("stale"), b"x");
        let built = build_then_rename(&staging, &target, |dir| {
            fs::create_dir(dir).map_err(Error::io("create"))?;
            write(&dir.join("whole"), b"y");
            Ok(())
        });
        assert!(built.unwrap());
        assert!(target.join("whole").exists() && !target.join("stale").exists());
        // Once there, it is complete and left alone.
        assert!(!build_then_rename(&staging, &target, |_| unreachable!()).unwrap());
    }
}
