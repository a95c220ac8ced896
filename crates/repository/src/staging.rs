//! Pack files staged on local disk while they are built (format §7.1).
//!
//! A pack is written straight into a file under the repository's `tmp/` directory instead of a
//! pack-sized buffer in memory, and linked to its content-addressed name once complete, so a
//! backup's memory does not depend on the pack size. The bulk of the file is written with
//! `O_DIRECT` from a small aligned buffer (why: see [`crate::direct`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::direct::{self, AlignedBuf, BLOCK};

/// Bytes gathered before each direct write.
const BUFFER: usize = 4 << 20;

/// A staged file being written. Dropped unfinished (a failed or cancelled backup), it deletes
/// its file.
pub(crate) struct StagedFile {
    file: File,
    guard: StagedPath,
    buf: AlignedBuf,
    filled: usize,
    direct: bool,
}

/// A staged file's path; the file is removed when this is dropped. Once the file has been linked
/// to its final name, removing the staging name is exactly what is wanted; before that, it
/// cleans up after a pack that was never stored.
#[derive(Debug)]
pub struct StagedPath(PathBuf);

impl StagedPath {
    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for StagedPath {
    fn drop(&mut self) {
        // Linked to its content name by the backend (this removes only the staging name), or
        // never stored: either way the staging name must go.
        let _ = std::fs::remove_file(&self.0);
    }
}

impl StagedFile {
    /// A new, uniquely named file in `dir` (created when missing).
    pub(crate) fn create(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let name: String =
            crate::crypto::random::<12>().iter().map(|b| format!("{b:02x}")).collect();
        let path = dir.join(format!("pack-{name}"));
        let flag = direct::flag();
        let opened = OpenOptions::new().write(true).create_new(true).custom_flags(flag).open(&path);
        let (file, direct) = match opened {
            Ok(f) => (f, flag != 0),
            // No O_DIRECT on this file system (tmpfs on older kernels, some FUSE and network
            // file systems). Opening may have created the file before failing, so no create_new.
            Err(e) if direct::unsupported(&e) => {
                (OpenOptions::new().write(true).create(true).truncate(true).open(&path)?, false)
            }
            Err(e) => return Err(e),
        };
        Ok(Self { file, guard: StagedPath(path), buf: AlignedBuf::new(BUFFER), filled: 0, direct })
    }

    /// Where the file is.
    pub(crate) fn path(&self) -> &Path {
        self.guard.path()
    }

    /// Appends bytes.
    pub(crate) fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = data.len().min(BUFFER - self.filled);
            let at = self.filled;
            self.buf.as_mut_slice()[at..at + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == BUFFER {
                self.flush_blocks(BUFFER)?;
            }
        }
        Ok(())
    }

    /// Writes the first `len` buffered bytes (a multiple of [`BLOCK`]) and moves the rest to the
    /// front of the buffer.
    fn flush_blocks(&mut self, len: usize) -> io::Result<()> {
        let mut done = 0;
        while done < len {
            match self.file.write(&self.buf.as_slice()[done..len]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    done += n;
                    // A short direct write leaves the rest unaligned; finish it buffered.
                    if self.direct && done % BLOCK != 0 {
                        self.buffered()?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The file system took the open but not this write (alignment it wants larger
                // than BLOCK, or no direct I/O after all): the same bytes, buffered.
                Err(e) if self.direct && direct::unsupported(&e) => {
                    self.buffered()?;
                }
                Err(e) => return Err(e),
            }
        }
        self.buf.as_mut_slice().copy_within(len..self.filled, 0);
        self.filled -= len;
        Ok(())
    }

    /// Turns `O_DIRECT` off for the rest of the file.
    fn buffered(&mut self) -> io::Result<()> {
        self.direct = false;
        direct::stop_direct(&self.file)
    }

    /// Writes what is buffered, makes the file durable, and hands over its path.
    pub(crate) fn finish(mut self) -> io::Result<StagedPath> {
        let aligned = self.filled / BLOCK * BLOCK;
        if aligned > 0 {
            self.flush_blocks(aligned)?;
        }
        if self.filled > 0 {
            if self.direct {
                self.buffered()?;
            }
            self.file.write_all(&self.buf.as_slice()[..self.filled])?;
            self.filled = 0;
        }
        self.file.sync_data()?;
        Ok(self.guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    #[test]
    fn bytes_written_in_odd_pieces_arrive_whole() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(3 * BUFFER + 12_345);
        let mut f = StagedFile::create(dir.path()).unwrap();
        let mut rest = &data[..];
        for piece in [1usize, 4095, 4097, BUFFER, 3, 2 * BUFFER] {
            let n = piece.min(rest.len());
            f.write(&rest[..n]).unwrap();
            rest = &rest[n..];
        }
        f.write(rest).unwrap();
        let staged = f.finish().unwrap();
        assert_eq!(std::fs::read(staged.path()).unwrap(), data);
        let path = staged.path().to_path_buf();
        drop(staged);
        assert!(!path.exists(), "the staged file is removed with its guard");
    }

    #[test]
    fn an_unfinished_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = StagedFile::create(&dir.path().join("tmp")).unwrap();
        f.write(&pattern(BUFFER + 1)).unwrap();
        drop(f);
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn small_and_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        for n in [0usize, 1, BLOCK - 1, BLOCK, BLOCK + 1] {
            let mut f = StagedFile::create(dir.path()).unwrap();
            f.write(&pattern(n)).unwrap();
            let staged = f.finish().unwrap();
            assert_eq!(std::fs::read(staged.path()).unwrap(), pattern(n), "{n} bytes");
        }
    }
}
