//! `holdfast datasafed …`, and the binary started as `datasafed`: KubeBlocks' storage CLI with its
//! flags, environment and output formats, storing into a deduplicating holdfast repository.
//! The contract is `docs/datasafed.md`.

mod codec;
pub(crate) mod config;
mod tree;
mod vpath;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use holdfast_controllers::repository_access::DATA_PATH_LOCK_WAIT;
use holdfast_repository::backup::{self, BackupOptions, ParentChoice};
use holdfast_repository::forget;
use holdfast_repository::location::{DatasafedConfig, Location, LocationError};
use holdfast_repository::snapshot::{VirtualFile, VirtualKind};
use holdfast_repository::tree::NodeType;
use holdfast_repository::{Error as RepoError, Id, InitOptions, Repository};

use tree::{Listed, Tree};

/// The environment variable that scopes every remote path (datasafed's).
const BASE_PATH_ENV: &str = "DATASAFED_BACKEND_BASE_PATH";

/// datasafed's global options and command.
#[derive(Args, Debug)]
pub struct DatasafedArgs {
    /// Config file.
    #[arg(
        short = 'c',
        long = "conf",
        global = true,
        default_value = "/etc/datasafed/datasafed.conf"
    )]
    conf: PathBuf,
    #[command(subcommand)]
    command: DsCommand,
}

#[derive(Parser, Debug)]
#[command(
    name = "datasafed",
    about = "datasafed-compatible storage CLI over a holdfast repository"
)]
struct DatasafedCli {
    #[command(flatten)]
    args: DatasafedArgs,
}

#[derive(Subcommand, Debug)]
enum DsCommand {
    /// Push a file (or stdin, `-`) to a remote path.
    Push {
        /// Compress with this algorithm (stored plain, applied on pull; docs/datasafed.md §5).
        #[arg(short = 'z', long = "compress", value_parser = codec::ALGORITHMS)]
        compress: Option<String>,
        /// Local file, or `-` for stdin.
        lpath: String,
        /// Remote path.
        rpath: String,
    },
    /// Pull a remote file to a local path (or stdout, `-`).
    Pull {
        /// Decompress with this algorithm.
        #[arg(short = 'd', long = "decompress", value_parser = codec::ALGORITHMS)]
        decompress: Option<String>,
        /// Remote path.
        rpath: String,
        /// Local file, or `-` for stdout.
        lpath: String,
    },
    /// List contents of a remote directory or file.
    List(ListArgs),
    /// Print the total size and number of entries below a remote path.
    Stat {
        /// Output in JSON.
        #[arg(long)]
        json: bool,
        /// Remote path.
        rpath: String,
    },
    /// Remove a remote file, or everything below a directory with -r.
    Rm {
        /// Remove recursively.
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Remote path.
        rpath: String,
    },
    /// Create an empty remote directory.
    Mkdir {
        /// Remote path.
        rpath: String,
    },
    /// Remove an empty remote directory.
    Rmdir {
        /// Remote path.
        rpath: String,
    },
    /// Print the value of a config item (`section.key`).
    Getconf {
        /// `section.key`.
        item: String,
    },
    /// Show the version.
    Version {
        /// Verbose.
        #[arg(short = 'v', long)]
        verbose: bool,
    },
}

#[derive(Args, Debug)]
struct ListArgs {
    /// List directories only.
    #[arg(short = 'd', long = "dirs-only", conflicts_with = "files_only")]
    dirs_only: bool,
    /// List files only.
    #[arg(short = 'f', long = "files-only")]
    files_only: bool,
    /// List recursively.
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Maximum depth (0: 1, or unlimited with -r).
    #[arg(long = "max-depth", default_value_t = 0, allow_negative_numbers = true)]
    max_depth: i64,
    /// Sort by path, size or mtime.
    #[arg(short = 's', long = "sort", default_value = "path", value_parser = ["path", "size", "mtime"])]
    sort: String,
    /// Reverse the order.
    #[arg(long)]
    reverse: bool,
    /// Only entries modified after this Unix time (exclusive).
    #[arg(long = "newer-than", default_value_t = 0, allow_negative_numbers = true)]
    newer_than: i64,
    /// Only entries modified before this Unix time (exclusive).
    #[arg(long = "older-than", default_value_t = 0, allow_negative_numbers = true)]
    older_than: i64,
    /// Only entries whose name matches this pattern (Go filepath.Match).
    #[arg(long)]
    name: Option<String>,
    /// Output format: short, long or json.
    #[arg(short = 'o', long = "output-format", default_value = "short", value_parser = ["short", "long", "json"])]
    format: String,
    /// Remote path.
    rpath: String,
}

/// Whether the binary was started under the name `datasafed` (argv[0]'s basename).
pub fn invoked_as_datasafed(argv0: &std::ffi::OsStr) -> bool {
    Path::new(argv0).file_name().is_some_and(|n| n == "datasafed")
}

/// Entry point for `datasafed …` (`args[0]` is the program name). Parse errors, like every
/// other error, are one `Error: …` line and exit status 1, as datasafed reports them.
pub fn main(args: Vec<OsString>) -> anyhow::Result<()> {
    match DatasafedCli::try_parse_from(args) {
        Ok(cli) => run(cli.args),
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("Error: {}", line.trim_start_matches("error: "));
            std::process::exit(1);
        }
    }
}

/// Runs a command; on failure prints one line and exits 1.
pub fn run(args: DatasafedArgs) -> anyhow::Result<()> {
    if let Err(e) = execute(args) {
        eprintln!("Error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
    Ok(())
}

/// The repository location, the base path and the password of one invocation.
struct Session {
    location: Location,
    password: String,
    /// Base path in relative form ("" for none).
    base: String,
}

impl Session {
    fn new(config: &DatasafedConfig, conf: &Path) -> anyhow::Result<Self> {
        let location = config.location()?;
        let base = vpath::base(&std::env::var(BASE_PATH_ENV).unwrap_or_default())?;
        let password = config::password(config, conf)?;
        Ok(Self { location, password, base })
    }

    /// The absolute directory every remote path is relative to.
    fn base_abs(&self) -> String {
        format!("/{}", self.base)
    }

    fn abs(&self, rpath: &str) -> anyhow::Result<String> {
        vpath::absolute(&self.base, rpath)
    }

    /// The repository, or `None` when the location holds none (readers see an empty tree).
    fn open_existing(&self) -> anyhow::Result<Option<Repository>> {
        // A reader must not create a local directory: none means no repository.
        let backend = match self.location.open_existing() {
            Ok(b) => b,
            Err(LocationError::NoDirectory { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match Repository::open(backend, self.password.as_bytes()) {
            Ok(r) => {
                r.set_lock_wait(DATA_PATH_LOCK_WAIT);
                Ok(Some(r))
            }
            Err(RepoError::NoRepository { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The repository, created with the defaults if the location holds none.
    fn open_or_create(&self) -> anyhow::Result<Repository> {
        let repo = self.open_or_create_unlocked()?;
        // A Job's push or pull queues behind a running prune instead of failing the Backup.
        repo.set_lock_wait(DATA_PATH_LOCK_WAIT);
        Ok(repo)
    }

    fn open_or_create_unlocked(&self) -> anyhow::Result<Repository> {
        let backend = self.location.open()?;
        match Repository::open(backend.clone(), self.password.as_bytes()) {
            Ok(r) => Ok(r),
            Err(RepoError::NoRepository { .. }) => {
                match Repository::init(
                    backend.clone(),
                    self.password.as_bytes(),
                    &InitOptions::default(),
                ) {
                    Ok(r) => Ok(r),
                    // A concurrent first writer created it; use theirs.
                    Err(RepoError::AlreadyInitialized { .. }) => {
                        Ok(Repository::open(backend, self.password.as_bytes())?)
                    }
                    Err(e) => Err(e).context("creating the repository"),
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn execute(args: DatasafedArgs) -> anyhow::Result<()> {
    match &args.command {
        DsCommand::Version { verbose } => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "datasafed: {}", env!("CARGO_PKG_VERSION"))?;
            if *verbose {
                writeln!(out, "  Implementation: holdfast {}", env!("CARGO_PKG_VERSION"))?;
                writeln!(out, "  Platform: {}/{}", std::env::consts::OS, std::env::consts::ARCH)?;
            }
            return Ok(());
        }
        DsCommand::Getconf { item } => {
            let config = config::load(&args.conf)?;
            let Some((section, key)) = item.split_once('.') else {
                bail!("invalid config item name {item:?}");
            };
            let Some(v) = config.get(section, key) else {
                bail!("config item {item:?} not found");
            };
            writeln!(std::io::stdout().lock(), "{v}")?;
            return Ok(());
        }
        _ => {}
    }
    let config = config::load(&args.conf)?;
    let session = Session::new(&config, &args.conf)?;
    match args.command {
        DsCommand::Push { compress, lpath, rpath } => push(&session, compress, &lpath, &rpath),
        DsCommand::Pull { decompress, rpath, lpath } => pull(&session, decompress, &rpath, &lpath),
        DsCommand::List(a) => list(&session, &a),
        DsCommand::Stat { json, rpath } => stat(&session, json, &rpath),
        DsCommand::Rm { recursive, rpath } => rm(&session, recursive, &rpath),
        DsCommand::Mkdir { rpath } => mkdir(&session, &rpath),
        DsCommand::Rmdir { rpath } => rmdir(&session, &rpath),
        DsCommand::Version { .. } | DsCommand::Getconf { .. } => Ok(()),
    }
}

fn no_trailing_slash(rpath: &str) -> anyhow::Result<()> {
    if rpath.ends_with('/') {
        bail!("rpath {rpath:?} ends with '/'");
    }
    Ok(())
}

fn load_tree(repo: &Repository) -> anyhow::Result<Tree> {
    Ok(Tree::new(tree::load(repo)?))
}

/// Stores one stream as the virtual file (or directory marker) `path`.
fn store(
    repo: &Repository,
    path: &str,
    kind: VirtualKind,
    compression: Option<String>,
    input: impl Read,
) -> anyhow::Result<Id> {
    let name = vpath::base_name(path);
    let opts = BackupOptions {
        parent: ParentChoice::None,
        xattrs: false,
        scan: false,
        tags: vec!["datasafed".into()],
        virtual_file: Some(VirtualFile { path: path.to_string(), kind, size: 0, compression }),
        ..BackupOptions::new()
    };
    Ok(backup::backup_reader(repo, input, name, &opts)?.id)
}

fn push(
    session: &Session,
    compress: Option<String>,
    lpath: &str,
    rpath: &str,
) -> anyhow::Result<()> {
    no_trailing_slash(rpath)?;
    let path = session.abs(rpath).with_context(|| format!("push to {rpath:?}"))?;
    if path == "/" {
        bail!("push to {rpath:?}: the path names the root directory");
    }
    // Open the input before touching the repository, so a missing file creates nothing.
    let file = if lpath == "-" {
        None
    } else {
        Some(std::fs::File::open(lpath).with_context(|| format!("opening {lpath}"))?)
    };
    let repo = session.open_or_create()?;
    let tree = load_tree(&repo)?;
    if tree.is_dir(&path) {
        bail!("push to {rpath:?}: is a directory");
    }
    if let Some(f) = tree.file_ancestor(&path) {
        bail!("push to {rpath:?}: {} is a file", vpath::display(&session.base_abs(), f));
    }
    let old: Vec<Id> = tree.file_versions(&path).iter().map(|e| e.id).collect();
    let result = match file {
        Some(f) => store(&repo, &path, VirtualKind::File, compress, f),
        None => store(&repo, &path, VirtualKind::File, compress, std::io::stdin().lock()),
    };
    let new = result.with_context(|| format!("push to {rpath:?}"))?;
    // The new snapshot is committed: the older versions of the path are now hidden; drop them.
    let old: Vec<Id> = old.into_iter().filter(|id| *id != new).collect();
    forget::remove_snapshots(&repo, &old)?;
    Ok(())
}

/// A `Read` over a file's chunks, fetched in order by a few threads ahead of the reader.
struct ChunkReader {
    order: Receiver<Receiver<anyhow::Result<Vec<u8>>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            let Ok(next) = self.order.recv() else {
                return Ok(0);
            };
            match next.recv() {
                Ok(Ok(data)) => {
                    self.cur = data;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(std::io::Error::other(format!("{e:#}"))),
                Err(_) => return Err(std::io::Error::other("a chunk reader stopped")),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Runs `sink` over a reader of the chunks `ids`, prefetching up to 8 chunks on 4 threads.
fn with_content<T>(
    repo: &Repository,
    ids: &[Id],
    sink: impl FnOnce(&mut dyn Read) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    const AHEAD: usize = 8;
    const WORKERS: usize = 4;
    type Job = (Id, SyncSender<anyhow::Result<Vec<u8>>>);
    let (job_tx, job_rx) = sync_channel::<Job>(AHEAD);
    let job_rx = Mutex::new(job_rx);
    let (order_tx, order_rx) = sync_channel(AHEAD);
    std::thread::scope(|s| {
        s.spawn(move || {
            for id in ids {
                let (tx, rx) = sync_channel(1);
                // A closed channel means the reader stopped early: stop feeding.
                if order_tx.send(rx).is_err() || job_tx.send((*id, tx)).is_err() {
                    break;
                }
            }
        });
        for _ in 0..WORKERS {
            let job_rx = &job_rx;
            s.spawn(move || {
                loop {
                    let job = job_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((id, tx)) = job else { break };
                    let _ = tx.send(repo.load_blob(&id).map_err(anyhow::Error::from));
                }
            });
        }
        let mut reader = ChunkReader { order: order_rx, cur: Vec::new(), pos: 0 };
        sink(&mut reader)
    })
}

fn pull(
    session: &Session,
    decompress: Option<String>,
    rpath: &str,
    lpath: &str,
) -> anyhow::Result<()> {
    no_trailing_slash(rpath)?;
    let path = session.abs(rpath).with_context(|| format!("pull {rpath:?}"))?;
    let not_found = || anyhow::anyhow!("pull {rpath:?}: object not found");
    let repo = session.open_existing()?.ok_or_else(not_found)?;
    let tree = load_tree(&repo)?;
    let Some(entry) = tree.file(&path) else {
        if tree.is_dir(&path) {
            bail!("pull {rpath:?}: is a directory");
        }
        return Err(not_found());
    };
    let plan = codec::plan(entry.compression.as_deref(), decompress.as_deref())?;
    let root = repo.load_tree(&entry.tree)?;
    let node = match root.nodes.as_slice() {
        [n] if n.kind() == NodeType::File => n.clone(),
        _ => bail!("pull {rpath:?}: snapshot {} does not hold one file", entry.id.short()),
    };
    let write = |out: &mut dyn Write| -> anyhow::Result<()> {
        with_content(&repo, &node.content, |input| {
            match &plan {
                codec::PullPlan::Plain => {
                    let n = std::io::copy(input, out)?;
                    if n != node.size {
                        bail!("pull {rpath:?}: read {n} bytes, the file has {}", node.size);
                    }
                    out.flush()?;
                }
                codec::PullPlan::Encode(a) => codec::encode(a, input, out)?,
                codec::PullPlan::Decode(a) => codec::decode(a, input, out)?,
            }
            Ok(())
        })
        .with_context(|| format!("pull {rpath:?}"))
    };
    if lpath == "-" {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        return write(&mut out);
    }
    if lpath.is_empty() || lpath.ends_with('/') {
        bail!("invalid local path {lpath:?}");
    }
    let target = std::path::absolute(lpath)?;
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Write beside the target and rename, so a failed pull leaves no partial file behind.
    let tmp = target.with_file_name(format!(
        ".{}.holdfast-{}",
        target.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    let result = (|| {
        let f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
        write(&mut out)?;
        let f = out.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target).with_context(|| format!("renaming to {}", target.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn list(session: &Session, a: &ListArgs) -> anyhow::Result<()> {
    let path = session.abs(&a.rpath)?;
    let tree = match session.open_existing()? {
        Some(repo) => load_tree(&repo)?,
        None => Tree::default(),
    };
    let mut entries: Vec<Listed> = match tree.file(&path) {
        Some(f) if !a.rpath.ends_with('/') => vec![Listed {
            path: f.path.clone(),
            is_dir: false,
            size: i64::try_from(f.size).unwrap_or(i64::MAX),
            mtime: f.mtime,
        }],
        _ => {
            // rclone's depth: --max-depth when given, else 1, or unlimited with -r.
            let depth = if a.max_depth > 0 {
                Some(usize::try_from(a.max_depth).unwrap_or(usize::MAX))
            } else if a.recursive {
                None
            } else {
                Some(1)
            };
            tree.list_dir(&path, depth)
        }
    };
    entries.retain(|e| {
        let t = e.mtime.as_second();
        (!a.dirs_only || e.is_dir)
            && (!a.files_only || !e.is_dir)
            && (a.newer_than <= 0 || t > a.newer_than)
            && (a.older_than <= 0 || t < a.older_than)
            && a.name.as_deref().is_none_or(|p| vpath::glob_match(p, vpath::base_name(&e.path)))
    });
    let base = session.base_abs();
    entries.sort_by(|x, y| {
        let primary = match a.sort.as_str() {
            "size" => x.size.cmp(&y.size),
            "mtime" => x.mtime.cmp(&y.mtime),
            _ => vpath::display(&base, &x.path).cmp(&vpath::display(&base, &y.path)),
        };
        let primary = if a.reverse { primary.reverse() } else { primary };
        primary.then_with(|| x.path.cmp(&y.path))
    });
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let shown = |e: &Listed| {
        let p = vpath::display(&base, &e.path);
        if e.is_dir && !p.ends_with('/') { format!("{p}/") } else { p }
    };
    let rfc3339 = |t: jiff::Timestamp| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    match a.format.as_str() {
        "long" => {
            for e in &entries {
                writeln!(out, "{}\t{}\t{}", rfc3339(e.mtime), e.size, shown(e))?;
            }
        }
        "json" => {
            if entries.is_empty() {
                writeln!(out, "[]")?;
            } else {
                writeln!(out, "[")?;
                for (i, e) in entries.iter().enumerate() {
                    if i > 0 {
                        writeln!(out, "  ,")?;
                    }
                    let v = serde_json::json!({
                        "path": vpath::display(&base, &e.path),
                        "size": e.size,
                        "mtime": e.mtime.as_second(),
                        "mtime_str": rfc3339(e.mtime),
                        "is_dir": e.is_dir,
                    });
                    writeln!(out, "  {}", go_json_indented(&v)?)?;
                }
                writeln!(out, "]")?;
            }
        }
        _ => {
            for e in &entries {
                writeln!(out, "{}", shown(e))?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// JSON as Go's `json.Encoder` with `SetIndent("  ", "  ")` writes it: 4-space members after the
/// first line, the closing brace at 2 spaces, and `<`, `>`, `&` escaped.
fn go_json_indented(v: &serde_json::Value) -> anyhow::Result<String> {
    let pretty = serde_json::to_string_pretty(v)?;
    let indented = pretty.replace('\n', "\n  ");
    Ok(indented.replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026"))
}

fn stat(session: &Session, json: bool, rpath: &str) -> anyhow::Result<()> {
    let path = session.abs(rpath)?;
    let tree = match session.open_existing()? {
        Some(repo) => load_tree(&repo)?,
        None => Tree::default(),
    };
    let s = match tree.file(&path) {
        Some(f) if !rpath.ends_with('/') => tree::Stat { total_size: f.size, dirs: 0, files: 1 },
        _ => tree.stat_dir(&path),
    };
    let entries = s.dirs + s.files;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({"dirs": s.dirs, "entries": entries, "files": s.files, "total_size": s.total_size})
        )?;
    } else {
        writeln!(
            out,
            "TotalSize: {}\nEntries: {entries}\nDirs: {}\nFiles: {}",
            s.total_size, s.dirs, s.files
        )?;
    }
    Ok(())
}

fn rm(session: &Session, recursive: bool, rpath: &str) -> anyhow::Result<()> {
    let path = session.abs(rpath)?;
    let Some(repo) = session.open_existing()? else {
        return Ok(());
    };
    let tree = load_tree(&repo)?;
    let ids: Vec<Id> = if recursive {
        tree.file_versions(&path)
            .iter()
            .chain(tree.markers(&path))
            .chain(tree.below(&path))
            .map(|e| e.id)
            .collect()
    } else {
        if tree.file(&path).is_none() && tree.is_dir(&path) {
            bail!("rm {rpath:?}: is a directory (use -r)");
        }
        tree.file_versions(&path).iter().map(|e| e.id).collect()
    };
    forget::remove_snapshots(&repo, &ids)?;
    Ok(())
}

fn mkdir(session: &Session, rpath: &str) -> anyhow::Result<()> {
    let path = session.abs(rpath)?;
    if path == "/" {
        return Ok(());
    }
    let repo = session.open_or_create()?;
    let tree = load_tree(&repo)?;
    if tree.file(&path).is_some() {
        bail!("mkdir {rpath:?}: is a file");
    }
    if let Some(f) = tree.file_ancestor(&path) {
        bail!("mkdir {rpath:?}: {} is a file", vpath::display(&session.base_abs(), f));
    }
    if tree.is_dir(&path) {
        return Ok(());
    }
    store(&repo, &path, VirtualKind::Dir, None, std::io::empty())?;
    Ok(())
}

fn rmdir(session: &Session, rpath: &str) -> anyhow::Result<()> {
    let path = session.abs(rpath)?;
    if path == "/" {
        bail!("rmdir {rpath:?}: cannot remove the root directory");
    }
    let not_found = || anyhow::anyhow!("rmdir {rpath:?}: directory not found");
    let repo = session.open_existing()?.ok_or_else(not_found)?;
    let tree = load_tree(&repo)?;
    if tree.file(&path).is_some() {
        bail!("rmdir {rpath:?}: is a file");
    }
    if tree.below(&path).next().is_some() {
        bail!("rmdir {rpath:?}: directory not empty");
    }
    let markers: Vec<Id> = tree.markers(&path).iter().map(|e| e.id).collect();
    if markers.is_empty() {
        return Err(not_found());
    }
    forget::remove_snapshots(&repo, &markers)?;
    Ok(())
}
