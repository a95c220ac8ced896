//! Direct I/O (`O_DIRECT`) on pack files of local repositories.
//!
//! Packs are written once and read rarely (a restore, a `check --read-data`), so caching them
//! only costs: filling page-cache pages is as expensive as compressing the data on a virtual
//! machine whose free memory is handed back to the host, and it evicts the pages the user's
//! workload is using. Direct I/O needs block-aligned buffers, offsets and lengths; file systems
//! that refuse it (tmpfs before Linux 6.6, some FUSE and network file systems) get ordinary
//! buffered I/O instead.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use bytes::Bytes;

/// Alignment for buffer addresses, file offsets and lengths: the largest logical block size in
/// common use.
pub(crate) const BLOCK: usize = 4096;

/// The `O_DIRECT` open flag, 0 where there is none.
#[cfg(target_os = "linux")]
pub(crate) fn flag() -> i32 {
    // A C `int` flag: its bit pattern fits an i32.
    rustix::fs::OFlags::DIRECT.bits().cast_signed()
}

/// The `O_DIRECT` open flag, 0 where there is none.
#[cfg(not(target_os = "linux"))]
pub(crate) fn flag() -> i32 {
    0
}

/// Whether an error means "no direct I/O here" (rather than a real failure).
pub(crate) fn unsupported(e: &io::Error) -> bool {
    flag() != 0 && e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
}

/// Turns `O_DIRECT` off for the rest of an open file (Linux lets `F_SETFL` clear it on any file).
pub(crate) fn stop_direct(file: &File) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    rustix::fs::fcntl_setfl(file, flags - rustix::fs::OFlags::DIRECT)?;
    Ok(())
}

/// A heap buffer whose usable part starts at a [`BLOCK`]-aligned address. Allocated with a block
/// of slack and offset into, which needs no unsafe code.
pub(crate) struct AlignedBuf {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// `len` zeroed bytes.
    pub(crate) fn new(len: usize) -> Self {
        let buf = vec![0u8; len + BLOCK];
        // `align_offset` may decline to compute (never for u8 in practice); then the buffer is
        // unaligned and a direct transfer fails with EINVAL, which callers treat as unsupported.
        let start = buf.as_ptr().align_offset(BLOCK).min(BLOCK);
        Self { buf, start, len }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }

    /// The bytes `from..from + len` of the usable part, without a copy.
    fn into_bytes(self, from: usize, len: usize) -> Bytes {
        Bytes::from(self.buf).slice(self.start + from..self.start + from + len)
    }
}

/// Opens a file for direct reads; `None` when the file system does not do direct I/O.
fn open_direct(path: &Path) -> io::Result<Option<File>> {
    if flag() == 0 {
        return Ok(None);
    }
    match OpenOptions::new().read(true).custom_flags(flag()).open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if unsupported(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads `len` bytes at `offset` of a file, bypassing the page cache where the file system
/// allows. Fails with `UnexpectedEof` when the file ends first.
pub(crate) fn read_at(path: &Path, offset: u64, len: usize) -> io::Result<Bytes> {
    let buffered = |f: &File| {
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset).map(|()| Bytes::from(buf))
    };
    let Some(file) = open_direct(path)? else {
        return buffered(&File::open(path)?);
    };
    let block = BLOCK as u64;
    let first = offset / block * block;
    let skip = usize::try_from(offset - first).map_err(io::Error::other)?;
    let span = (skip + len).div_ceil(BLOCK) * BLOCK;
    let mut buf = AlignedBuf::new(span);
    let mut got = 0;
    while got < skip + len {
        // Every read but the one that meets the end of the file returns whole blocks, so the
        // position stays aligned.
        match file.read_at(&mut buf.as_mut_slice()[got..], first + got as u64) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if unsupported(&e) => return buffered(&File::open(path)?),
            Err(e) => return Err(e),
        }
        if got % BLOCK != 0 && got < skip + len {
            // A short read before the end: finish the rest through the page cache.
            let rest = &mut buf.as_mut_slice()[got..skip + len];
            File::open(path)?.read_exact_at(rest, first + got as u64)?;
            got = skip + len;
        }
    }
    Ok(buf.into_bytes(skip, len))
}

/// Bytes a [`SequentialReader`] reads at once.
const READ_AHEAD: usize = 1 << 20;

/// Reads a file from start to end, bypassing the page cache where the file system allows: a
/// backup reads each large file once, and pulling it through the cache costs the kernel more
/// than the copy out of a small aligned buffer costs us (and evicts the workload's own pages).
/// Linux writes back dirty cached pages of the range before a direct read, so the reader sees
/// what buffered writers wrote.
pub(crate) struct SequentialReader {
    file: File,
    buf: AlignedBuf,
    pos: usize,
    len: usize,
    offset: u64,
    direct: bool,
}

impl SequentialReader {
    /// Opens `path` for reading.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let (file, direct) = match open_direct(path)? {
            Some(f) => (f, true),
            None => (File::open(path)?, false),
        };
        let buf = AlignedBuf::new(READ_AHEAD);
        Ok(Self { file, buf, pos: 0, len: 0, offset: 0, direct })
    }

    fn refill(&mut self) -> io::Result<()> {
        loop {
            match self.file.read_at(self.buf.as_mut_slice(), self.offset) {
                Ok(n) => {
                    // A direct read returns whole blocks except at the end of the file; after a
                    // short one the next offset is unaligned, so the rest goes buffered.
                    if self.direct && n % BLOCK != 0 {
                        stop_direct(&self.file)?;
                        self.direct = false;
                    }
                    self.offset += n as u64;
                    self.pos = 0;
                    self.len = n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.direct && unsupported(&e) => {
                    stop_direct(&self.file)?;
                    self.direct = false;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl io::Read for SequentialReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.len {
            self.refill()?;
        }
        let n = out.len().min(self.len - self.pos);
        out[..n].copy_from_slice(&self.buf.as_slice()[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_any_range_and_reports_the_end_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3 * BLOCK + 100).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        for (offset, len) in [(0, 1), (1, BLOCK), (BLOCK - 1, 2), (100, 3 * BLOCK), (0, data.len())]
        {
            let got = read_at(&path, offset as u64, len).unwrap();
            assert_eq!(&got[..], &data[offset..offset + len], "{offset}+{len}");
        }
        let e = read_at(&path, 10, data.len()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn sequential_reads_return_the_whole_file() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        for n in [0, 1, BLOCK, READ_AHEAD, READ_AHEAD + 1, 3 * READ_AHEAD + 4097] {
            let path = dir.path().join(format!("f{n}"));
            let data: Vec<u8> = (0..n).map(|i| (i % 249) as u8).collect();
            std::fs::write(&path, &data).unwrap();
            let mut got = Vec::new();
            SequentialReader::open(&path).unwrap().read_to_end(&mut got).unwrap();
            assert!(got == data, "{n} bytes");
        }
    }

    #[test]
    fn aligned_buffers_are_aligned() {
        for len in [1, BLOCK, 3 * BLOCK + 5] {
            let mut b = AlignedBuf::new(len);
            assert_eq!(b.as_slice().as_ptr() as usize % BLOCK, 0);
            assert_eq!(b.as_mut_slice().len(), len);
        }
    }
}
