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
