//! Opening and initializing a repository, and reading and writing its objects.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use crate::Id;
use crate::backend::{Backend, FileType};
use crate::config::{ChunkerParams, CompressionParams, Config, DEFAULT_PACK_SIZE};
use crate::crypto::{KdfParams, KeyFile, MasterKey, ObjectKind};
use crate::error::{Error, Result};
use crate::index::{Index, IndexBuilder, IndexFile, IndexPack};
use crate::pack::BlobType;
use crate::snapshot::{Snapshot, SnapshotEntry, SnapshotListing, UnreadableSnapshot};
use crate::tree::{Node, NodeType, Tree};

/// Choices made once at `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Chunker sizes.
    pub chunker: ChunkerParams,
    /// Target pack size.
    pub pack_size: u32,
    /// zstd level (0 = store uncompressed).
    pub compression_level: i32,
    /// Argon2id cost of the first key.
    pub kdf: KdfParams,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            chunker: ChunkerParams::default(),
            pack_size: DEFAULT_PACK_SIZE,
            compression_level: 3,
            kdf: KdfParams::default(),
        }
    }
}

/// An open repository: backend, unwrapped master key, config and the loaded index.
pub struct Repository {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) master: Arc<MasterKey>,
    config: Config,
    key_name: String,
    pub(crate) index: RwLock<Arc<Index>>,
    pub(crate) index_files: RwLock<Vec<Id>>,
    /// The names in `index/` and `prune/` when the index was last read.
    index_listing: RwLock<Option<IndexListing>>,
    lock_wait: std::sync::Mutex<std::time::Duration>,
    /// Compression dictionaries read so far (format §7.2).
    dictionaries: crate::dictionary::Cache,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository").field("location", &self.backend.location()).finish()
    }
}

/// The format version new repositories are made with (format §14). Version 2 adds compression
/// dictionaries (§7.2), version 3 content list blobs (§9.1), version 4 patched blobs (§9.2); an
/// older repository is read and
/// written as before, without what its version lacks, so the releases that made it can still
/// read it.
pub const FORMAT_VERSION: u32 = 4;

/// The first format version with content list blobs (format §9.1).
pub const CONTENT_LIST_VERSION: u32 = 3;

/// The first format version with patched data blobs and prints blobs (format §9.2).
pub const PATCH_VERSION: u32 = 4;

/// Blobs per index file when an index is rewritten whole (prune, repair): reading a file holds
/// it whole in memory (its text and its parsed form, a few hundred bytes a blob), so a large
/// index is spread over files of this size. A backup's index files are smaller anyway.
pub const INDEX_FILE_BLOBS: usize = 50_000;

/// Where packs split into groups of at most [`INDEX_FILE_BLOBS`] blobs (a pack with more stays
/// whole): the ranges of `packs` each index file takes.
pub(crate) fn index_groups(packs: &[IndexPack]) -> Vec<std::ops::Range<usize>> {
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    let mut blobs = 0;
    for (i, p) in packs.iter().enumerate() {
        match groups.last_mut() {
            Some(g) if blobs + p.blobs.len() <= INDEX_FILE_BLOBS => g.end = i + 1,
            _ => {
                groups.push(i..i + 1);
                blobs = 0;
            }
        }
        blobs += p.blobs.len();
    }
    groups
}

/// The index files in force, read into a builder (see [`Repository::read_index`]).
#[derive(Default)]
pub(crate) struct LoadedIndex {
    /// Their packs.
    pub(crate) builder: IndexBuilder,
    /// Their names.
    pub(crate) names: Vec<Id>,
    /// Files that could not be read (only when read tolerantly).
    pub(crate) errors: Vec<String>,
}

/// The object names the loaded index was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IndexListing {
    index: Vec<String>,
    plans: Vec<String>,
}

/// A key file as `key list` shows it.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    /// Object name.
    pub name: String,
    /// The key file.
    pub key: KeyFile,
    /// Whether it is the key this handle was opened with.
    pub current: bool,
}

impl Repository {
    /// Creates a new repository: config and the first key file.
    ///
    /// # Errors
    /// `AlreadyInitialized` when a config exists; backend errors.
    pub fn init(backend: Arc<dyn Backend>, password: &[u8], opts: &InitOptions) -> Result<Self> {
        opts.chunker.validate()?;
        if !(1024 * 1024..=512 * 1024 * 1024).contains(&opts.pack_size) {
            return Err(Error::Invalid(format!(
                "pack size {} outside 1 MiB..512 MiB",
                opts.pack_size
            )));
        }
        let location = backend.location();
        match backend.stat(FileType::Config, "config") {
            Ok(_) => return Err(Error::AlreadyInitialized { location }),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let master = MasterKey::generate();
        let config = Config {
            version: FORMAT_VERSION,
            id: Id(crate::crypto::random()).to_hex(),
            chunker: opts.chunker,
            pack_size: opts.pack_size,
            compression: CompressionParams { level: opts.compression_level, ..Default::default() },
        };
        // The key goes first: a config without a key would be a repository no one can open,
        // while a stray key file without a config is harmless and overwritten by a retry.
        let key_name = write_key(&*backend, &master, password, opts.kdf)?;
        let json = serde_json::to_vec(&config).map_err(|e| Error::Invalid(e.to_string()))?;
        let sealed = master.seal_object(ObjectKind::Config, &json);
        if let Err(e) = backend.create(FileType::Config, "config", Bytes::from(sealed)) {
            if e.is_already_exists() {
                // Another init won the race: our key wraps a master key no config uses, and
                // `open` would try it (and fail on the config) before the winner's key.
                let _ = backend.delete(FileType::Key, &key_name);
                return Err(Error::AlreadyInitialized { location });
            }
            return Err(e.into());
        }
        Ok(Self {
            backend,
            master: Arc::new(master),
            config,
            key_name,
            index: RwLock::new(Arc::new(Index::default())),
            index_files: RwLock::new(Vec::new()),
            index_listing: RwLock::new(None),
            lock_wait: std::sync::Mutex::new(std::time::Duration::ZERO),
            dictionaries: Default::default(),
        })
    }

    /// Opens a repository with a password and loads its index.
    ///
    /// # Errors
    /// `NoRepository`, `WrongPassword`, corrupt objects, backend errors.
    pub fn open(backend: Arc<dyn Backend>, password: &[u8]) -> Result<Self> {
        let repo = Self::open_unindexed(backend, password)?;
        repo.reload_index()?;
        Ok(repo)
    }

    /// [`Repository::open`] with a local metadata cache under `cache_root` (format §15): index
    /// files, snapshots and tree packs are read from the repository once and then from there.
    ///
    /// # Errors
    /// As [`Repository::open`], or the cache directory cannot be created.
    pub fn open_cached(
        backend: Arc<dyn Backend>,
        password: &[u8],
        cache_root: &std::path::Path,
    ) -> Result<Self> {
        let mut repo = Self::open_unindexed(backend, password)?;
        let cached =
            crate::cache::CachedBackend::new(repo.backend.clone(), cache_root, &repo.config.id)?;
        repo.backend = Arc::new(cached);
        repo.reload_index()?;
        Ok(repo)
    }

    /// Opens a repository with a password without reading its index files, for what must work
    /// when one of them is damaged (`repair index`). Its index is empty until
    /// [`Repository::reload_index`].
    ///
    /// # Errors
    /// `NoRepository`, `WrongPassword`, a corrupt config or key file, backend errors.
    pub fn open_unindexed(backend: Arc<dyn Backend>, password: &[u8]) -> Result<Self> {
        let location = backend.location();
        let config_bytes = match backend.get(FileType::Config, "config") {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Err(Error::NoRepository { location }),
            Err(e) => return Err(e.into()),
        };
        // A key that unwraps with this password but does not open the config is the stray key
        // of a concurrent `init` that lost the race (it deletes it again right away, so it may
        // also vanish between list and get): skip it and try the others. Only when no key opens
        // the config is the config's own error reported.
        let mut found = None;
        let mut config_error = None;
        for info in backend.list(FileType::Key)? {
            let data = match backend.get(FileType::Key, &info.name) {
                Ok(data) => data,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            let object = format!("keys/{}", info.name);
            let kf: KeyFile = serde_json::from_slice(&data)
                .map_err(|e| Error::corrupt(&object, e.to_string()))?;
            if let Some(m) = kf.unwrap_key(password, &object)? {
                match m.open_object(ObjectKind::Config, "config", &config_bytes) {
                    Ok(json) => {
                        found = Some((m, info.name, json));
                        break;
                    }
                    Err(e) => config_error = Some(e),
                }
            }
        }
        let (master, key_name, json) = match (found, config_error) {
            (Some(found), _) => found,
            (None, Some(e)) => return Err(e),
            (None, None) => return Err(Error::WrongPassword { location }),
        };
        let config: Config =
            serde_json::from_slice(&json).map_err(|e| Error::corrupt("config", e.to_string()))?;
        if !(1..=FORMAT_VERSION).contains(&config.version) {
            return Err(Error::UnsupportedVersion {
                object: "config".into(),
                version: config.version,
            });
        }
        config.chunker.validate()?;
        Ok(Self {
            backend,
            master: Arc::new(master),
            config,
            key_name,
            index: RwLock::new(Arc::new(Index::default())),
            index_files: RwLock::new(Vec::new()),
            index_listing: RwLock::new(None),
            lock_wait: std::sync::Mutex::new(std::time::Duration::ZERO),
            dictionaries: Default::default(),
        })
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// How long [`Repository::lock`] waits for a conflicting lock to go away (default: not at
    /// all; restic's `--retry-lock`).
    pub fn set_lock_wait(&self, wait: std::time::Duration) {
        *self.lock_wait.lock().unwrap_or_else(|e| e.into_inner()) = wait;
    }

    /// The current lock wait.
    pub fn lock_wait(&self) -> std::time::Duration {
        *self.lock_wait.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The name of the key file this handle was opened with.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// The index as loaded (a consistent copy).
    pub fn index(&self) -> Arc<Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-reads the index when `index/` or `prune/` changed since it was read: what an
    /// operation does once it holds its lock, so an index loaded before a prune is not used.
    ///
    /// # Errors
    /// As [`Repository::reload_index`].
    pub fn refresh_index(&self) -> Result<()> {
        let now = self.list_index_names()?;
        if self.index_listing.read().unwrap_or_else(|e| e.into_inner()).as_ref() == Some(&now) {
            return Ok(());
        }
        self.load_index_listed(now)
    }

    fn list_index_names(&self) -> Result<IndexListing> {
        let names = |ft| -> Result<Vec<String>> {
            let mut v: Vec<String> = self.backend.list(ft)?.into_iter().map(|i| i.name).collect();
            v.sort();
            Ok(v)
        };
        Ok(IndexListing { index: names(FileType::Index)?, plans: names(FileType::PrunePlan)? })
    }

    /// Lists `data/` and drops the packs the index names but the repository lacks from the loaded
    /// index (a blob with a copy elsewhere is then read from there); returns them. Call it under a
    /// lock: a prune deleting packs meanwhile would otherwise look like loss.
    ///
    /// # Errors
    /// Backend errors.
    pub fn drop_missing_packs(&self) -> Result<Vec<Id>> {
        let index = self.index();
        let present: HashSet<Id> = self
            .backend
            .list(FileType::Pack)?
            .into_iter()
            .filter_map(|i| i.name.parse().ok())
            .collect();
        let gone: HashSet<Id> = index.all_pack_ids().filter(|p| !present.contains(p)).collect();
        if gone.is_empty() {
            return Ok(Vec::new());
        }
        tracing::warn!(
            missing = gone.len(),
            "packs named by the index are missing; their data is stored again where it is \
             backed up, and `holdfast repo repair index` then `repair snapshots` fix the rest"
        );
        *self.index.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(index.without_packs(&gone));
        let mut gone: Vec<Id> = gone.into_iter().collect();
        gone.sort();
        Ok(gone)
    }

    /// Re-reads every index file.
    ///
    /// # Errors
    /// Backend errors, corrupt index files.
    pub fn reload_index(&self) -> Result<()> {
        // Listed first: a file added while reading makes the next refresh read again.
        self.load_index_listed(self.list_index_names()?)
    }

    fn load_index_listed(&self, listing: IndexListing) -> Result<()> {
        let loaded = self.read_index(false)?;
        let mut index = loaded.builder;
        for plan in crate::prune::load_plans(self)? {
            for p in &plan.packs {
                index.add_planned_pack(p);
            }
        }
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(index.build());
        *self.index_files.write().unwrap_or_else(|e| e.into_inner()) = loaded.names;
        *self.index_listing.write().unwrap_or_else(|e| e.into_inner()) = Some(listing);
        Ok(())
    }

    /// Reads the index files in force into a builder, one file at a time: a file's packs are
    /// added and the file dropped before the next is read, so memory holds the index and one
    /// file, never every file at once.
    ///
    /// A file superseded by another is left out. Which files are superseded is known only once
    /// the superseding one is read; in the rare case one was added before that (a prune was
    /// consolidating, or stopped between writing the new file and deleting the old ones), the
    /// files are read again without it.
    ///
    /// `tolerant`: a file that cannot be read is reported in `errors` instead of failing.
    ///
    /// # Errors
    /// Backend errors; with `tolerant` false, corrupt index files.
    pub(crate) fn read_index(&self, tolerant: bool) -> Result<LoadedIndex> {
        let mut skip: HashSet<Id> = HashSet::new();
        // A concurrent prune deletes the index files it consolidated, but only after writing the
        // files that supersede them: one vanishing between list and read means a fresh listing
        // holds its replacement.
        let mut attempt = 0;
        loop {
            let mut out = LoadedIndex::default();
            let mut superseded: HashSet<Id> = HashSet::new();
            let mut vanished = false;
            for info in self.backend.list(FileType::Index)? {
                let file = info
                    .name
                    .parse::<Id>()
                    .map_err(|e| Error::corrupt(format!("index/{}", info.name), format!("{e}")))
                    .and_then(|id| {
                        if skip.contains(&id) {
                            return Ok(None);
                        }
                        self.load_index_file(&id).map(|f| Some((id, f)))
                    });
                match file {
                    Ok(Some((id, file))) => {
                        superseded.extend(file.supersedes.iter().copied());
                        out.builder.add_file(&file);
                        out.names.push(id);
                    }
                    Ok(None) => {}
                    Err(Error::Backend(e)) if e.is_not_found() && attempt < 10 => {
                        vanished = true;
                        break;
                    }
                    Err(e) if tolerant => out.errors.push(e.to_string()),
                    Err(Error::CorruptObject { object, reason }) => {
                        return Err(Error::CorruptObject {
                            object,
                            reason: format!(
                                "{reason}; run `holdfast repo repair index` to rebuild the index \
                                 from the packs"
                            ),
                        });
                    }
                    Err(e) => return Err(e),
                }
            }
            if vanished {
                attempt += 1;
                continue;
            }
            if attempt < 10 && out.names.iter().any(|n| superseded.contains(n)) {
                skip.extend(superseded);
                attempt += 1;
                continue;
            }
            return Ok(out);
        }
    }

    /// Index files in force (not superseded).
    pub fn index_files(&self) -> Vec<Id> {
        self.index_files.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads and decrypts one index file.
    ///
    /// # Errors
    /// Backend errors, corrupt data.
    pub fn load_index_file(&self, id: &Id) -> Result<IndexFile> {
        let json = self.load_object(ObjectKind::Index, FileType::Index, &id.to_hex())?;
        serde_json::from_slice(&json)
            .map_err(|e| Error::corrupt(format!("index/{id}"), e.to_string()))
    }

    /// Stores a JSON document as a content-addressed encrypted object; returns its name.
    ///
    /// # Errors
    /// Backend errors.
    pub(crate) fn save_object(&self, kind: ObjectKind, ft: FileType, json: &[u8]) -> Result<Id> {
        let sealed = self.master.seal_object(kind, json);
        let id = Id::of_object(&sealed);
        match self.backend.create(ft, &id.to_hex(), Bytes::from(sealed)) {
            Ok(()) => Ok(id),
            // Content-addressed: the same name means the same bytes are already there.
            Err(e) if e.is_already_exists() => Ok(id),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads and decrypts an encrypted object, verifying its name.
    ///
    /// # Errors
    /// Backend errors, corrupt data.
    pub(crate) fn load_object(
        &self,
        kind: ObjectKind,
        ft: FileType,
        name: &str,
    ) -> Result<Vec<u8>> {
        let data = self.backend.get(ft, name)?;
        let object = ft.path(name);
        if Id::of_object(&data).to_hex() != name {
            return Err(Error::corrupt(object, "content does not match its name"));
        }
        self.master.open_object(kind, &object, &data)
    }

    /// Stores an index file.
    ///
    /// # Errors
    /// Backend errors.
    pub fn save_index_file(&self, file: &IndexFile) -> Result<Id> {
        let json = serde_json::to_vec(file).map_err(|e| Error::Invalid(e.to_string()))?;
        self.save_object(ObjectKind::Index, FileType::Index, &json)
    }

    /// Stores packs as index files of at most [`INDEX_FILE_BLOBS`] blobs each (format §8), the
    /// last naming `supersedes`; returns their names in the order written. Until that last file
    /// is stored the files it replaces stay in force (the new ones only repeat packs they list),
    /// so stopping midway loses nothing. Writes nothing when there is nothing to say.
    ///
    /// # Errors
    /// Backend errors.
    pub fn save_index_packs(&self, packs: Vec<IndexPack>, supersedes: Vec<Id>) -> Result<Vec<Id>> {
        let mut packs = packs;
        let mut groups: Vec<Vec<IndexPack>> = Vec::new();
        for range in index_groups(&packs).into_iter().rev() {
            groups.push(packs.split_off(range.start));
        }
        groups.reverse();
        if groups.is_empty() && !supersedes.is_empty() {
            groups.push(Vec::new());
        }
        let last = groups.len().saturating_sub(1);
        let mut names = Vec::with_capacity(groups.len());
        for (i, packs) in groups.into_iter().enumerate() {
            let supersedes = if i == last { supersedes.clone() } else { Vec::new() };
            names.push(self.save_index_file(&IndexFile { supersedes, packs })?);
        }
        Ok(names)
    }

    /// Reads one blob, verifying it.
    ///
    /// # Errors
    /// `MissingBlob`, `CorruptBlob`, backend errors.
    pub fn load_blob(&self, id: &Id) -> Result<Vec<u8>> {
        let index = self.index();
        let loc = index.get(id).ok_or_else(|| Error::MissingBlob { blob: id.to_hex() })?;
        self.load_blob_in(&index, &loc)
    }

    /// Reads the blob at `loc` (found through `index`), verifying it.
    pub(crate) fn load_blob_in(
        &self,
        index: &Index,
        loc: &crate::index::BlobLocation,
    ) -> Result<Vec<u8>> {
        let sealed = self.backend.get_range(
            FileType::Pack,
            &loc.pack.to_hex(),
            loc.blob.offset,
            u64::from(loc.blob.length),
        )?;
        let sealed = match sealed.try_into_mut() {
            Ok(owned) => owned.into(),
            Err(shared) => shared.to_vec(),
        };
        self.open_blob(index, loc, sealed)
    }

    /// Opens a sealed blob read from `loc` (found through `index`): decrypts, decompresses with
    /// its pack's dictionary when its frame names one, and verifies it against its id.
    ///
    /// # Errors
    /// `CorruptBlob` naming blob and pack.
    pub(crate) fn open_blob(
        &self,
        index: &Index,
        loc: &crate::index::BlobLocation,
        sealed: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let dicts = PackDictionaries { repo: self, index, pack: loc.pack };
        let stored = crate::pack::open_blob_owned(
            &self.master,
            &loc.pack,
            &loc.salt,
            &loc.blob,
            sealed,
            &dicts,
        )?;
        self.resolve_in(index, &loc.pack, &loc.blob, stored)
    }

    /// The plaintext of a blob opened from `pack`: `stored` itself, or for a patch (format §9.2)
    /// its payload applied to its base, read through `index` and verified against the blob's id.
    /// A base is stored whole, so this reads at most one more blob.
    ///
    /// # Errors
    /// `CorruptBlob` naming the blob when its base is missing or unreadable or the result does
    /// not match its id.
    pub(crate) fn resolve_in(
        &self,
        index: &Index,
        pack: &Id,
        blob: &crate::pack::PackBlob,
        stored: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let Some(base) = blob.base else { return Ok(stored) };
        let corrupt = |reason: String| Error::CorruptBlob {
            blob: blob.id.to_hex(),
            pack: pack.to_hex(),
            reason,
        };
        let base_loc = index.get_whole(&base).ok_or_else(|| {
            corrupt(format!("a patch of blob {base}, which the index does not have"))
        })?;
        let base_plain = self
            .load_blob_in(index, &base_loc)
            .map_err(|e| corrupt(format!("a patch of blob {base}, which cannot be read: {e}")))?;
        crate::pack::resolve_patch(&self.master, pack, blob, &stored, base_plain)
    }

    /// Reads a tree blob.
    ///
    /// # Errors
    /// As `load_blob`, or a tree that does not parse.
    pub fn load_tree(&self, id: &Id) -> Result<Tree> {
        self.load_tree_in(&self.index(), id)
    }

    /// Reads a tree blob found through `index` rather than the loaded index (`check` builds its
    /// own, reporting the index files it cannot read instead of failing on them).
    pub(crate) fn load_tree_in(&self, index: &Index, id: &Id) -> Result<Tree> {
        let mut tree = self.read_tree(index, id)?;
        for node in &mut tree.nodes {
            if let Some(list) = node.content_lists.first().copied() {
                (node.content, node.content_lists) = self.resolve_content_list(index, &list)?;
            }
        }
        Ok(tree)
    }

    /// Reads a tree as [`Repository::load_tree`] does, except that a file whose content list
    /// cannot be read (format §9.1) does not fail the directory: it is left out of the tree and
    /// returned beside it with the error, so restore and `repair snapshots` lose that file only.
    ///
    /// # Errors
    /// As `load_tree`, and errors resolving a list other than damage (I/O, network).
    pub fn load_tree_sparing(&self, id: &Id) -> Result<(Tree, Vec<(Node, Error)>)> {
        let index = self.index();
        let mut tree = self.read_tree(&index, id)?;
        let mut unreadable = Vec::new();
        let mut nodes = Vec::with_capacity(tree.nodes.len());
        for mut node in std::mem::take(&mut tree.nodes) {
            if let Some(list) = node.content_lists.first().copied() {
                match self.resolve_content_list(&index, &list) {
                    Ok(resolved) => (node.content, node.content_lists) = resolved,
                    Err(e) if e.is_damage() => {
                        unreadable.push((node, e));
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            nodes.push(node);
        }
        tree.nodes = nodes;
        Ok((tree, unreadable))
    }

    /// A tree blob as stored: content lists named, not resolved.
    fn read_tree(&self, index: &Index, id: &Id) -> Result<Tree> {
        let loc = index.get(id).ok_or_else(|| Error::MissingBlob { blob: id.to_hex() })?;
        // Tree packs hold only trees, read many at a time: a cache keeps them whole.
        self.backend.keep_local(FileType::Pack, &loc.pack.to_hex())?;
        let data = self.load_blob_in(index, &loc)?;
        serde_json::from_slice(&data)
            .map_err(|e| Error::corrupt(format!("tree {id}"), e.to_string()))
    }

    /// The list content list blob `id` resolves to (format §9.1), and the chain of blobs it
    /// took, `id` first.
    ///
    /// # Errors
    /// As `load_blob`; a blob that is not a content list, a chain longer than the format
    /// allows, a delta that does not apply (`CorruptObject` naming the blob).
    fn resolve_content_list(&self, index: &Index, id: &Id) -> Result<(Vec<Id>, Vec<Id>)> {
        use crate::content_list::{READ_MAX_CHAIN, Stored, apply, decode};
        let mut chain = vec![*id];
        let mut deltas = Vec::new();
        let mut list = loop {
            let at = chain[chain.len() - 1];
            let loc = index.get(&at).ok_or_else(|| Error::MissingBlob { blob: at.to_hex() })?;
            self.backend.keep_local(FileType::Pack, &loc.pack.to_hex())?;
            let data = self.load_blob_in(index, &loc)?;
            let bad = |e: String| Error::corrupt(format!("content list {at}"), e);
            match decode(&data).map_err(bad)? {
                Stored::Whole(ids) => break ids,
                Stored::Delta { base, len, changes } => {
                    if chain.len() >= READ_MAX_CHAIN {
                        return Err(bad(format!(
                            "a chain of more than {READ_MAX_CHAIN} content lists"
                        )));
                    }
                    deltas.push((at, len, changes));
                    chain.push(base);
                }
            }
        };
        for (at, len, changes) in deltas.into_iter().rev() {
            list = apply(list, len, &changes)
                .map_err(|e| Error::corrupt(format!("content list {at}"), e))?;
        }
        Ok((list, chain))
    }

    /// The id a blob with this plaintext has.
    pub fn blob_id(&self, data: &[u8]) -> Id {
        self.master.blob_id(data)
    }

    /// Every snapshot that loads, oldest first. A damaged snapshot file is skipped (with a
    /// warning in the log) so it does not hide the others; [`Repository::snapshot_listing`] says
    /// which, and prune uses [`Repository::snapshots_strict`].
    ///
    /// # Errors
    /// Backend errors.
    pub fn snapshots(&self) -> Result<Vec<SnapshotEntry>> {
        let listing = self.snapshot_listing()?;
        for bad in &listing.unreadable {
            tracing::warn!(snapshot = %bad.id, error = %bad.error, "skipping an unreadable snapshot");
        }
        Ok(listing.entries)
    }

    /// Every snapshot, failing on the first one that does not load: for what must see every
    /// snapshot to be safe (prune decides what is unused from them).
    ///
    /// # Errors
    /// Backend errors, an unreadable snapshot.
    pub fn snapshots_strict(&self) -> Result<Vec<SnapshotEntry>> {
        let listing = self.snapshot_listing()?;
        if let Some(bad) = listing.unreadable.first() {
            return Err(Error::corrupt(format!("snapshots/{}", bad.id), bad.error.clone()));
        }
        Ok(listing.entries)
    }

    /// Every snapshot file: the readable ones, oldest first, and the damaged ones.
    ///
    /// # Errors
    /// Backend errors (listing, or reading a snapshot for another reason than damage).
    pub fn snapshot_listing(&self) -> Result<SnapshotListing> {
        let mut listing = SnapshotListing::default();
        for info in self.backend.list(FileType::Snapshot)? {
            let Ok(id) = info.name.parse::<Id>() else {
                tracing::warn!(name = %info.name, "ignoring a file in snapshots/ that is not a snapshot name");
                continue;
            };
            match self.load_snapshot(&id) {
                Ok(s) => listing.entries.push(SnapshotEntry { id, snapshot: s }),
                // A snapshot deleted by a concurrent forget between list and get.
                Err(Error::Backend(e)) if e.is_not_found() => {}
                Err(e @ (Error::CorruptObject { .. } | Error::UnsupportedVersion { .. })) => {
                    listing.unreadable.push(UnreadableSnapshot { id, error: e.to_string() });
                }
                Err(e) => return Err(e),
            }
        }
        listing.entries.sort_by(|a, b| a.snapshot.time.cmp(&b.snapshot.time).then(a.id.cmp(&b.id)));
        Ok(listing)
    }

    /// Reads one snapshot.
    ///
    /// # Errors
    /// Backend errors, corrupt data.
    pub fn load_snapshot(&self, id: &Id) -> Result<Snapshot> {
        let json = self.load_object(ObjectKind::Snapshot, FileType::Snapshot, &id.to_hex())?;
        serde_json::from_slice(&json)
            .map_err(|e| Error::corrupt(format!("snapshots/{id}"), e.to_string()))
    }

    /// Stores a snapshot; returns its id.
    ///
    /// # Errors
    /// Backend errors.
    pub fn save_snapshot(&self, s: &Snapshot) -> Result<Id> {
        let json = serde_json::to_vec(s).map_err(|e| Error::Invalid(e.to_string()))?;
        self.save_object(ObjectKind::Snapshot, FileType::Snapshot, &json)
    }

    /// The id of the snapshot `selector` names (`latest` or an id prefix), readable or not: what
    /// `forget` needs to remove a damaged snapshot.
    ///
    /// # Errors
    /// `SnapshotNotFound` when the selector names none or several.
    pub fn find_snapshot_id(&self, selector: &str) -> Result<Id> {
        if selector == "latest" {
            return self.find_snapshot(selector).map(|e| e.id);
        }
        let listing = self.snapshot_listing()?;
        let ids = listing
            .entries
            .iter()
            .map(|e| e.id)
            .chain(listing.unreadable.iter().map(|u| u.id))
            .filter(|id| id.to_hex().starts_with(selector));
        match ids.collect::<Vec<_>>().as_slice() {
            [id] => Ok(*id),
            [] => Err(Error::SnapshotNotFound {
                selector: selector.into(),
                reason: "no snapshot has this id".into(),
            }),
            _ => Err(Error::SnapshotNotFound {
                selector: selector.into(),
                reason: "the prefix matches more than one snapshot".into(),
            }),
        }
    }

    /// Resolves `latest`, a full id or a unique id prefix.
    ///
    /// # Errors
    /// `SnapshotNotFound` when nothing or more than one snapshot matches.
    pub fn find_snapshot(&self, selector: &str) -> Result<SnapshotEntry> {
        let all = self.snapshots()?;
        let not_found = |reason: &str| Error::SnapshotNotFound {
            selector: selector.into(),
            reason: reason.into(),
        };
        if selector == "latest" {
            return all
                .into_iter()
                .last()
                .ok_or_else(|| not_found("the repository has no snapshots"));
        }
        let mut matches: Vec<_> =
            all.into_iter().filter(|s| s.id.to_hex().starts_with(selector)).collect();
        match matches.len() {
            0 => match self.find_snapshot_id(selector) {
                // The selector names a damaged snapshot: say so rather than "no snapshot".
                Ok(id) => Err(self
                    .load_snapshot(&id)
                    .err()
                    .unwrap_or_else(|| not_found("the snapshot could not be read"))),
                Err(_) => Err(not_found("no snapshot has this id")),
            },
            1 => Ok(matches.remove(0)),
            _ => Err(not_found("the prefix matches more than one snapshot")),
        }
    }

    /// Finds the node at `path` ("/a/b" or "a/b") below a root tree; the root itself is a
    /// synthetic directory node.
    ///
    /// # Errors
    /// `PathNotFound`, read errors.
    pub fn find_node(&self, root: &Id, path: &str) -> Result<Node> {
        let mut node = Node {
            node_type: Some(NodeType::Dir),
            subtree: Some(*root),
            mode: 0o755,
            ..Default::default()
        };
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            let subtree = match (node.kind(), node.subtree) {
                (NodeType::Dir, Some(t)) => t,
                _ => return Err(Error::PathNotFound { path: path.into() }),
            };
            let tree = self.load_tree(&subtree)?;
            node = tree
                .find(comp.as_bytes())
                .cloned()
                .ok_or_else(|| Error::PathNotFound { path: path.into() })?;
        }
        Ok(node)
    }

    /// Adds a key file for another password; returns its name.
    ///
    /// # Errors
    /// Backend errors.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<String> {
        write_key(&*self.backend, &self.master, password, kdf)
    }

    /// Lists key files.
    ///
    /// # Errors
    /// Backend errors, malformed key files.
    pub fn keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for info in self.backend.list(FileType::Key)? {
            let data = self.backend.get(FileType::Key, &info.name)?;
            let key: KeyFile = serde_json::from_slice(&data)
                .map_err(|e| Error::corrupt(format!("keys/{}", info.name), e.to_string()))?;
            out.push(KeyInfo { current: info.name == self.key_name, name: info.name, key });
        }
        out.sort_by_key(|k| k.key.created);
        Ok(out)
    }

    /// Removes a key file (by name or unique prefix). The key in use and the last key are refused.
    ///
    /// # Errors
    /// `Key` when refused or not found; backend errors.
    pub fn remove_key(&self, name: &str) -> Result<String> {
        let keys = self.keys()?;
        let matches: Vec<_> = keys.iter().filter(|k| k.name.starts_with(name)).collect();
        let key = match matches.as_slice() {
            [one] => one,
            [] => return Err(Error::Key { key: name.into(), reason: "no such key".into() }),
            _ => return Err(Error::Key { key: name.into(), reason: "prefix is ambiguous".into() }),
        };
        if key.current {
            return Err(Error::Key {
                key: key.name.clone(),
                reason: "refusing to remove the key in use".into(),
            });
        }
        self.backend.delete(FileType::Key, &key.name)?;
        Ok(key.name.clone())
    }

    /// Changes the password of the key in use: adds a new key file, then removes the old one.
    /// Data is untouched. Returns the new key's name; this handle keeps working.
    ///
    /// # Errors
    /// Backend errors.
    pub fn change_password(&mut self, new_password: &[u8], kdf: KdfParams) -> Result<String> {
        let new = write_key(&*self.backend, &self.master, new_password, kdf)?;
        self.backend.delete(FileType::Key, &self.key_name)?;
        self.key_name = new.clone();
        Ok(new)
    }

    /// Blob type of an indexed blob.
    pub fn blob_type(&self, id: &Id) -> Option<BlobType> {
        self.index().get(id).map(|l| l.blob.blob_type)
    }
}

fn write_key(
    backend: &dyn Backend,
    master: &MasterKey,
    password: &[u8],
    kdf: KdfParams,
) -> Result<String> {
    let kf = KeyFile::wrap(master, password, kdf)?;
    let json = serde_json::to_vec_pretty(&kf).map_err(|e| Error::Invalid(e.to_string()))?;
    let name = Id::of_object(&json).to_hex();
    backend.create(FileType::Key, &name, Bytes::from(json))?;
    Ok(name)
}

/// The dictionaries of one pack as the index lists them, read through the repository's cache.
struct PackDictionaries<'a> {
    repo: &'a Repository,
    index: &'a Index,
    pack: Id,
}

impl crate::dictionary::Dictionaries for PackDictionaries<'_> {
    fn get(&self, zstd_id: u32) -> Result<crate::dictionary::Decoder> {
        self.repo.dictionaries.get(&self.pack, zstd_id, || {
            self.index
                .dictionaries_in(&self.pack)
                .iter()
                .map(|loc| {
                    let sealed = self.repo.backend.get_range(
                        FileType::Pack,
                        &loc.pack.to_hex(),
                        loc.blob.offset,
                        u64::from(loc.blob.length),
                    )?;
                    crate::pack::open_blob(
                        &self.repo.master,
                        &loc.pack,
                        &loc.salt,
                        &loc.blob,
                        &sealed,
                        &crate::dictionary::NoDictionaries,
                    )
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::pack::PackBlob;

    fn pack(n: u32, blobs: u32) -> IndexPack {
        IndexPack {
            id: Id(*blake3::hash(&n.to_le_bytes()).as_bytes()),
            salt: [0; 16],
            size: 1 << 30,
            blobs: (0..blobs)
                .map(|i| PackBlob {
                    id: Id(*blake3::hash(format!("{n}/{i}").as_bytes()).as_bytes()),
                    blob_type: BlobType::Data,
                    offset: u64::from(i) * 10,
                    length: 10,
                    uncompressed_length: 0,
                    base: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_large_index_is_written_in_bounded_files_and_only_the_last_supersedes() {
        let opts = InitOptions { kdf: KdfParams::insecure_fast(), ..Default::default() };
        let repo = Repository::init(Arc::new(MemoryBackend::new()), b"pw", &opts).unwrap();
        let old = repo.save_index_packs(vec![pack(0, 10)], Vec::new()).unwrap();
        // 130,000 blobs in packs of 20,000 (and one of 10,000): three files of at most 50,000.
        let packs: Vec<IndexPack> =
            (1..=7).map(|n| pack(n, if n == 7 { 10_000 } else { 20_000 })).collect();
        let names = repo.save_index_packs(packs, old.clone()).unwrap();
        assert_eq!(names.len(), 3);
        for (i, name) in names.iter().enumerate() {
            let f = repo.load_index_file(name).unwrap();
            let blobs: usize = f.packs.iter().map(|p| p.blobs.len()).sum();
            assert!(blobs <= INDEX_FILE_BLOBS, "{blobs}");
            assert_eq!(f.supersedes, if i == 2 { old.clone() } else { Vec::new() });
        }
        // The superseded file is still there (as after a prune stopped before deleting it) and
        // may be read before the file that supersedes it: it is left out either way.
        let loaded = repo.read_index(false).unwrap();
        let mut got = loaded.names.clone();
        got.sort();
        let mut want = names.clone();
        want.sort();
        assert_eq!(got, want);
        let index = loaded.builder.build();
        assert_eq!(index.len(), 130_000);
        assert!(!index.has_pack(&pack(0, 0).id));
        // Nothing to say: nothing written.
        assert!(repo.save_index_packs(Vec::new(), Vec::new()).unwrap().is_empty());
    }
}
