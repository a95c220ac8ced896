//! Snapshot manifests (format §10).

use serde::{Deserialize, Serialize};

use crate::Id;

/// What a backup did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// When the backup started.
    pub backup_start: Option<jiff::Timestamp>,
    /// When it ended.
    pub backup_end: Option<jiff::Timestamp>,
    /// Files not in the parent.
    pub files_new: u64,
    /// Files changed since the parent.
    pub files_changed: u64,
    /// Files skipped because unchanged.
    pub files_unmodified: u64,
    /// Directories.
    pub dirs: u64,
    /// New data blobs stored.
    pub data_blobs: u64,
    /// New tree blobs stored.
    pub tree_blobs: u64,
    /// Plaintext bytes of new blobs.
    pub data_added: u64,
    /// Stored (compressed, sealed) bytes of new blobs.
    pub data_added_packed: u64,
    /// Files seen.
    pub total_files_processed: u64,
    /// Bytes of the files seen.
    pub total_bytes_processed: u64,
}

/// A snapshot manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When the backup started.
    pub time: jiff::Timestamp,
    /// Root tree.
    pub tree: Id,
    /// What was backed up.
    pub paths: Vec<String>,
    /// Host.
    pub hostname: String,
    /// User.
    pub username: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The parent used for change detection.
    #[serde(default)]
    pub parent: Option<Id>,
    /// The snapshot this one was rewritten from (`tag`, as restic records it): the first one,
    /// kept through later rewrites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<Id>,
    /// Writer.
    pub program_version: String,
    /// Statistics.
    #[serde(default)]
    pub summary: Summary,
    /// Set when the snapshot is a file of the virtual file tree kept by `holdfast datasafed`
    /// (format §10.1); absent on ordinary backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_file: Option<VirtualFile>,
    /// Key-value facts the writer records about what it backed up (format §10.3), such as a
    /// PostgreSQL base backup's LSNs; absent when empty.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

#[cfg(test)]
impl Snapshot {
    /// A snapshot of `paths` on `host` at `time` with `tags` and nothing else, for unit tests.
    pub(crate) fn for_test(time: &str, host: &str, paths: &[&str], tags: &[&str]) -> Snapshot {
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect();
        Snapshot {
            time: time.parse().expect("a test timestamp"),
            tree: Id::default(),
            paths: strings(paths),
            hostname: host.into(),
            username: String::new(),
            tags: strings(tags),
            parent: None,
            original: None,
            program_version: String::new(),
            summary: Summary::default(),
            virtual_file: None,
            labels: Default::default(),
        }
    }
}

/// What a virtual-tree snapshot holds (format §10.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VirtualKind {
    /// A file: the snapshot's single stream.
    File,
    /// An empty-directory marker.
    Dir,
}

/// A file (or directory marker) of the virtual file tree: one snapshot per pushed stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualFile {
    /// Absolute, cleaned virtual path ("/base/x.tar.zst").
    pub path: String,
    /// File or directory marker.
    #[serde(rename = "type")]
    pub kind: VirtualKind,
    /// Plaintext length of the stream.
    #[serde(default)]
    pub size: u64,
    /// The compression the writer asked for; the stored bytes are the plain stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
}

/// A snapshot together with its object name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// Object name: the snapshot id.
    pub id: Id,
    /// The manifest.
    pub snapshot: Snapshot,
}

/// A snapshot file that could not be read or verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableSnapshot {
    /// Object name.
    pub id: Id,
    /// Why it could not be read.
    pub error: String,
}

/// Every snapshot of a repository: those that load, oldest first, and those that do not.
#[derive(Debug, Clone, Default)]
pub struct SnapshotListing {
    /// Readable snapshots, by time then id.
    pub entries: Vec<SnapshotEntry>,
    /// Damaged snapshot files (each is reported; none hides the others).
    pub unreadable: Vec<UnreadableSnapshot>,
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The current user name.
pub fn username() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into())
}
