//! The few facts read straight from a data directory's files.

use std::path::Path;

use crate::Error;

/// The system identifier in a `global/pg_control` file's bytes: its first eight bytes, in the
/// byte order of the machine that wrote it (every platform PostgreSQL runs on here is
/// little-endian).
///
/// # Errors
/// A file too short to be a control file.
pub fn system_identifier(pg_control: &[u8]) -> Result<u64, Error> {
    let first: [u8; 8] = pg_control
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::Invalid("global/pg_control is too short".into()))?;
    Ok(u64::from_le_bytes(first))
}

/// The system identifier of the cluster in `data_dir`.
///
/// # Errors
/// The control file cannot be read.
pub fn system_identifier_of(data_dir: &Path) -> Result<u64, Error> {
    let path = data_dir.join("global/pg_control");
    let bytes = std::fs::read(&path).map_err(Error::io(format!("reading {}", path.display())))?;
    system_identifier(&bytes)
}
