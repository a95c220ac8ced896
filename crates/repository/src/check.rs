//! `check` (format §13): structure, and with `read_data` every byte of every pack.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::lock::LockKind;
use crate::progress::{CancelToken, Counters, ProgressFn, Ticker};
use crate::tree::NodeType;
use crate::{Id, Repository};

/// Options of a check.
#[derive(Clone, Default)]
pub struct CheckOptions {
    /// Download and verify every pack.
    pub read_data: bool,
    /// Download and verify only these packs (restic's `--read-data-subset`).
    pub read_data_subset: Option<ReadSubset>,
    /// Progress (bytes of packs read).
    pub progress: Option<ProgressFn>,
    /// Cancellation.
    pub cancel: CancelToken,
}

impl std::fmt::Debug for CheckOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckOptions").field("read_data", &self.read_data).finish()
    }
}

/// Which packs `check --read-data-subset` reads, as restic selects them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadSubset {
    /// `n/t`: the packs whose id's first byte modulo `t` is `n - 1`; running 1/t … t/t reads
    /// every pack once.
    Bucket {
        /// Which one, from 1.
        n: u32,
        /// Of how many (at most 256).
        t: u32,
    },
    /// `x%`: that share of the packs, picked at random (at least one).
    Percent(f64),
    /// `500M`, `2G`: packs picked at random until their sizes add up to this.
    Bytes(u64),
}

impl std::str::FromStr for ReadSubset {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Invalid(format!(
                "--read-data-subset {s:?}: {why} (use n/t like 1/5, a percentage like 10%, or a \
                 size like 500M)"
            ))
        };
        let t = s.trim();
        if let Some((n, total)) = t.split_once('/') {
            let n: u32 = n.trim().parse().map_err(|_| bad("n is not a number"))?;
            let total: u32 = total.trim().parse().map_err(|_| bad("t is not a number"))?;
            if total == 0 || total > 256 || n == 0 || n > total {
                return Err(bad("need 1 <= n <= t <= 256"));
            }
            return Ok(Self::Bucket { n, t: total });
        }
        if let Some(p) = t.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad("not a percentage"))?;
            if p.is_nan() || p <= 0.0 || p > 100.0 {
                return Err(bad("the percentage must be above 0 and at most 100"));
            }
            return Ok(Self::Percent(p));
        }
        let (num, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len()));
        let mult: u64 = match unit.to_ascii_uppercase().as_str() {
            "K" => 1 << 10,
            "M" => 1 << 20,
            "G" => 1 << 30,
            "T" => 1 << 40,
            _ => return Err(bad("unknown form")),
        };
        let n: f64 = num.trim().parse().map_err(|_| bad("not a size"))?;
        if n.is_nan() || n <= 0.0 {
            return Err(bad("the size must be above 0"));
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        Ok(Self::Bytes((n * mult as f64) as u64))
    }
}

impl ReadSubset {
    /// The packs to read out of `names` (with their sizes).
    pub fn select(&self, mut names: Vec<Id>, sizes: &HashMap<String, u64>) -> Vec<Id> {
        use rand::seq::SliceRandom as _;
        match *self {
            Self::Bucket { n, t } => {
                names.retain(|p| u32::from(p.0[0]) % t == n - 1);
                names
            }
            Self::Percent(p) => {
                names.shuffle(&mut rand::rng());
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    clippy::cast_precision_loss
                )]
                let want = ((names.len() as f64 * p / 100.0) as usize).max(1).min(names.len());
                names.truncate(want);
                names.sort();
                names
            }
            Self::Bytes(limit) => {
                names.shuffle(&mut rand::rng());
                let mut total = 0;
                let mut out = Vec::new();
                for p in names {
                    if total >= limit {
                        break;
                    }
                    total += sizes.get(&p.to_hex()).copied().unwrap_or(0);
                    out.push(p);
                }
                out.sort();
                out
            }
        }
    }
}

/// What a check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Problems that mean data is missing or corrupt; each names the object.
    pub errors: Vec<String>,
    /// Harmless findings (e.g. packs a crashed backup left without an index).
    pub warnings: Vec<String>,
    /// Snapshots checked.
    pub snapshots: usize,
    /// Packs present.
    pub packs: usize,
    /// Trees verified.
    pub trees: usize,
    /// Blobs whose bytes were verified (read_data only).
    pub blobs_read: usize,
    /// Packs whose bytes were read (read_data only).
    pub packs_read: usize,
}

impl CheckReport {
    /// `Ok` when no error was found.
    ///
    /// # Errors
    /// `CheckFailed` listing every error.
    pub fn into_result(self) -> Result<Self> {
        if self.errors.is_empty() { Ok(self) } else { Err(Error::CheckFailed(self.errors)) }
    }
}

/// Checks the repository. Finding problems is not an `Err`; see [`CheckReport::into_result`].
///
/// # Errors
/// Backend failures that prevent checking at all.
pub fn check(repo: &Repository, opts: &CheckOptions) -> Result<CheckReport> {
    // Shared: a prune deleting packs midway would show up as false damage.
    let _lock = repo.lock(LockKind::Shared, "check")?;
    let mut report = CheckReport::default();
    // Index files, one by one, so one bad file is reported rather than aborting.
    let loaded = repo.read_index(true)?;
    report.errors.extend(loaded.errors);
    let mut index = loaded.builder;
    // Packs marked by prune stay readable until swept; snapshots may still use them.
    match crate::prune::load_plans(repo) {
        Ok(plans) => {
            for plan in &plans {
                for p in &plan.packs {
                    index.add_planned_pack(p);
                }
            }
        }
        Err(e) => report.errors.push(e.to_string()),
    }
    let index = index.build();
    let packs: HashMap<String, u64> =
        repo.backend.list(FileType::Pack)?.into_iter().map(|o| (o.name, o.size)).collect();
    report.packs = packs.len();
    for (id, size) in index.packs() {
        match packs.get(&id.to_hex()) {
            None => report.errors.push(format!(
                "pack {id} is in the index but missing from the backend (snapshots using it \
                     cannot be fully restored; `repair index` drops its entries)"
            )),
            Some(s) if *s != size => {
                report.errors.push(format!("pack {id} has size {s}, the index says {size}"));
            }
            Some(_) => {}
        }
    }
    let mut unindexed_packs = 0usize;
    for name in packs.keys() {
        if !name.parse::<Id>().map(|id| index.knows_pack(&id)).unwrap_or(false) {
            unindexed_packs += 1;
            report.warnings.push(format!(
                "pack {name} is not in any index (left by an interrupted backup, which prune \
                 removes, or listed by a lost index file, which `repair index` restores)"
            ));
        }
    }

    // Snapshots and their trees.
    let mut seen_trees: HashSet<Id> = HashSet::new();
    let mut unindexed_blobs = 0usize;
    for info in repo.backend.list(FileType::Snapshot)? {
        let snap = match info
            .name
            .parse::<Id>()
            .map_err(|e| Error::corrupt(format!("snapshots/{}", info.name), e.to_string()))
            .and_then(|id| repo.load_snapshot(&id))
        {
            Ok(s) => s,
            Err(e) => {
                report.errors.push(e.to_string());
                continue;
            }
        };
        report.snapshots += 1;
        let mut stack = vec![(snap.tree, String::new())];
        while let Some((tree_id, path)) = stack.pop() {
            if opts.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            if !seen_trees.insert(tree_id) {
                continue;
            }
            let tree = match repo.load_tree_in(&index, &tree_id) {
                Ok(t) => t,
                Err(e) => {
                    if matches!(e, Error::MissingBlob { .. }) {
                        unindexed_blobs += 1;
                    }
                    report.errors.push(format!(
                        "snapshot {}: tree at {}/: {e}",
                        &info.name[..8],
                        path
                    ));
                    continue;
                }
            };
            report.trees += 1;
            for n in &tree.nodes {
                let p = format!("{path}/{}", n.name_lossy());
                match n.kind() {
                    NodeType::Dir => match n.subtree {
                        Some(t) => stack.push((t, p)),
                        None => report.errors.push(format!(
                            "snapshot {}: {p}: directory without a subtree",
                            &info.name[..8]
                        )),
                    },
                    NodeType::File => {
                        for b in &n.content {
                            match index.get(b) {
                                None => {
                                    unindexed_blobs += 1;
                                    report.errors.push(format!(
                                        "snapshot {}: {p}: blob {b} is not in the index",
                                        &info.name[..8]
                                    ));
                                }
                                Some(loc) => {
                                    if let Some(base) = loc.blob.base
                                        && index.get_whole(&base).is_none()
                                    {
                                        unindexed_blobs += 1;
                                        report.errors.push(format!(
                                            "snapshot {}: {p}: blob {b} is a patch of blob \
                                             {base}, which the index does not have",
                                            &info.name[..8]
                                        ));
                                    }
                                }
                            }
                        }
                        // A hint for the next backup (format §9.2): losing it loses no data.
                        if let Some(b) = n.prints
                            && !index.readable(&b)
                        {
                            report.warnings.push(format!(
                                "snapshot {}: {p}: prints blob {b} is not in the index (the \
                                 next backup of the file stores its changed chunks whole)",
                                &info.name[..8]
                            ));
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    if unindexed_blobs > 0 && unindexed_packs > 0 {
        report.errors.push(format!(
            "{unindexed_blobs} referenced blob(s) are not in the index while {unindexed_packs} \
             pack(s) are in none: an index file was probably lost; run `holdfast repo repair \
             index` (prune refuses to run until then)"
        ));
    }
    if opts.read_data || opts.read_data_subset.is_some() {
        read_data(repo, &index, &packs, opts, &mut report)?;
    }
    Ok(report)
}

fn read_data(
    repo: &Repository,
    index: &crate::index::Index,
    packs: &HashMap<String, u64>,
    opts: &CheckOptions,
    report: &mut CheckReport,
) -> Result<()> {
    let counters = Arc::new(Counters::default());
    let indexed: HashMap<Id, Vec<Id>> = index.pack_blobs();
    let mut names: Vec<Id> = packs.keys().filter_map(|n| n.parse().ok()).collect();
    names.sort();
    if let Some(subset) = &opts.read_data_subset {
        names = subset.select(names, packs);
    }
    report.packs_read = names.len();
    for n in &names {
        Counters::add(&counters.bytes_total, packs.get(&n.to_hex()).copied().unwrap_or(0));
        Counters::add(&counters.files_total, 1);
    }
    counters.totals_known.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ticker = Ticker::start(counters.clone(), opts.progress.clone());
    let queue = Mutex::new(names.into_iter());
    let errors = Mutex::new(Vec::new());
    let blobs_read = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                loop {
                    if opts.cancel.is_cancelled() {
                        return;
                    }
                    let Some(pack) = queue.lock().unwrap_or_else(|e| e.into_inner()).next() else {
                        return;
                    };
                    let mut errs = Vec::new();
                    let n = check_pack(repo, index, &pack, indexed.get(&pack), &mut errs);
                    blobs_read.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    Counters::add(&counters.files_done, 1);
                    Counters::add(
                        &counters.bytes_done,
                        packs.get(&pack.to_hex()).copied().unwrap_or(0),
                    );
                    errors.lock().unwrap_or_else(|e| e.into_inner()).extend(errs);
                }
            });
        }
    });
    if opts.cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    let mut errs = errors.into_inner().unwrap_or_else(|e| e.into_inner());
    errs.sort();
    report.errors.extend(errs);
    report.blobs_read = blobs_read.into_inner();
    Ok(())
}

/// Verifies one whole pack; returns the number of blobs verified.
fn check_pack(
    repo: &Repository,
    index: &crate::index::Index,
    pack: &Id,
    indexed: Option<&Vec<Id>>,
    errs: &mut Vec<String>,
) -> usize {
    let data = match repo.backend.get(FileType::Pack, &pack.to_hex()) {
        Ok(d) => d,
        Err(e) => {
            errs.push(format!("pack {pack}: {e}"));
            return 0;
        }
    };
    if Id::of_object(&data) != *pack {
        errs.push(format!("pack {pack}: content does not match its name (corrupted)"));
    }
    let (salt, blobs) = match crate::pack::read_header(&repo.master, &pack.to_hex(), &data) {
        Ok(h) => h,
        Err(e) => {
            errs.push(format!("pack {pack}: {e}"));
            return 0;
        }
    };
    let dicts = crate::pack::dictionaries_in(&repo.master, pack, &salt, &blobs, &data);
    let mut n = 0;
    for b in &blobs {
        let end = b.offset as usize + b.length as usize;
        if end > data.len() {
            errs.push(format!("pack {pack}: blob {} lies beyond the end of the pack", b.id));
            continue;
        }
        match crate::pack::open_blob(
            &repo.master,
            pack,
            &salt,
            b,
            &data[b.offset as usize..end],
            &dicts,
        )
        // A patch verifies only applied to its base (format §9.2).
        .and_then(|stored| repo.resolve_in(index, pack, b, stored))
        {
            Ok(_) => n += 1,
            Err(e) => errs.push(format!("pack {pack}: {e}")),
        }
    }
    if let Some(ids) = indexed {
        let in_header: HashSet<Id> = blobs.iter().map(|b| b.id).collect();
        for id in ids {
            if !in_header.contains(id) {
                errs.push(format!("pack {pack}: indexed blob {id} is not in the pack header"));
            }
        }
    }
    n
}
