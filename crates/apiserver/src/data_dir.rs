//! The data directory holds what must stay private to the user running the server: the store
//! (Secrets), tokens, keys, logs. Directories are created 0700 and files 0600 whatever the umask
//! is, and [`restrict`] takes group and other access away from what an earlier version created.

use std::io;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;

/// Mode of every directory the server creates in the data directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the server creates in the data directory.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and missing parents with mode 0700 (an existing `dir` is set to 0700 too; the
/// parents that already exist are left alone).
///
/// # Errors
/// A directory cannot be created or its mode set.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
    // `mode` is filtered by the umask on create; set it exactly.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
}

/// Creates `path` empty with mode 0600 unless it exists, and sets an existing one to 0600: SQLite
/// creates its `-wal` and `-shm` files with the mode of the database file, so a store file created
/// here keeps them private too.
///
/// # Errors
/// The file cannot be created or its mode set.
pub fn create_private_file(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new().append(true).create(true).mode(FILE_MODE).open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE))
}

/// Mode of a data directory that workloads reach into: the owner has it all, others may only
/// pass through to the entries they were told the names of (a claim's directory), never list it.
pub const TRAVERSE_MODE: u32 = 0o711;

/// Takes group and other access away from the data directory `dir` and everything under it
/// (symbolic links are not followed), except its entries named in `workload_owned`: those hold
/// the workloads' own files (volumes, snapshots of them), whose modes are their owners' business
/// and must survive a restart unchanged. For data directories an earlier version created with the
/// umask's modes.
///
/// # Errors
/// A mode cannot be read or set.
pub fn restrict_data_dir(dir: &Path, workload_owned: &[&str]) -> io::Result<()> {
    restrict_one(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !workload_owned.iter().any(|w| entry.file_name() == *w) {
            restrict(&entry.path())?;
        }
    }
    Ok(())
}

fn restrict_one(path: &Path) -> io::Result<std::fs::Metadata> {
    let meta = std::fs::symlink_metadata(path)?;
    let mode = meta.permissions().mode();
    if !meta.file_type().is_symlink() && mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & !0o077))?;
    }
    Ok(meta)
}

/// Takes group and other access away from `path` and, for a directory, everything under it
/// (symbolic links are not followed).
///
/// # Errors
/// A mode cannot be read or set.
pub fn restrict(path: &Path) -> io::Result<()> {
    let meta = restrict_one(path)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            restrict(&entry?.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn private_whatever_the_umask_and_restricted_afterwards() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("f");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        create_private_file(&file).unwrap();
        assert_eq!((mode(&file), std::fs::read(&file).unwrap()), (0o600, b"x".to_vec()));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        restrict(&dir).unwrap();
        assert_eq!((mode(&dir), mode(&file)), (0o700, 0o700));
    }

    #[test]
    fn workload_owned_entries_keep_their_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path();
        let claim = data.join("volumes/pvc-1");
        std::fs::create_dir_all(&claim).unwrap();
        std::fs::create_dir_all(data.join("logs")).unwrap();
        let page = claim.join("index.html");
        std::fs::write(&page, b"x").unwrap();
        std::fs::set_permissions(&page, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(data.join("logs"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        restrict_data_dir(data, &["volumes"]).unwrap();
        assert_eq!(mode(&page), 0o644, "a workload's file keeps its mode");
        assert_eq!(mode(&data.join("logs")), 0o700);
        assert_eq!(mode(data) & 0o077, 0);
    }
}
