//! Streaming WAL into the archive through a replication slot, as Barman and `pg_receivewal` do:
//! nothing to configure on the server beyond `wal_level = replica` and a user allowed to
//! replicate, and no segment is lost when the archiver falls behind or stops, because the slot
//! keeps the server from recycling WAL it has not received.
//!
//! `pg_receivewal --slot S --synchronous` writes into a spool directory: the segment being
//! received as `<segment>.partial`, fsynced as it arrives and renamed to `<segment>` once whole.
//! Each whole segment (and timeline history file) is pushed into the archive like `wal-push`
//! does, then removed from the spool, except the newest pushed one: `pg_receivewal` resumes after
//! the newest segment it finds, so after a restart (of it, or of this process after `kill -9`)
//! streaming continues exactly where it stopped, and pushing the kept segment again is a no-op.
//! The partial segment stays in the spool until it is whole.
//!
//! `pg_receivewal` runs under `setpriv --pdeathsig TERM` where available, so it ends with this
//! process however that ends, and the slot is free for the next run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use holdfast_repository::Repository;
use holdfast_repository::progress::CancelToken;

use crate::Error;
use crate::lsn::{DEFAULT_SEGMENT_SIZE, WalFile};
use crate::server::Connection;
use crate::tools::{StderrTail, Tools, failure};
use crate::wal_archive::{self, Pushed};
use crate::wal_reader::summarize;

/// How often the spool is looked at.
const POLL: Duration = Duration::from_millis(500);
/// Longest wait before starting `pg_receivewal` again after it stopped.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How to stream.
#[derive(Clone, Default)]
pub struct Options {
    /// Where the server is; the user needs REPLICATION.
    pub connection: Connection,
    /// PostgreSQL's programs.
    pub tools: Tools,
    /// The replication slot (created when missing).
    pub slot: String,
    /// The spool directory (created when missing); keep it on durable storage.
    pub spool: PathBuf,
    /// Stop after this long (tests and one-shot catch-ups); run until cancelled otherwise.
    pub duration: Option<Duration>,
    /// Stops the stream.
    pub cancel: CancelToken,
}

/// What a stream did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Streamed {
    /// Files archived (not counting ones already there).
    pub archived: u64,
    /// Bytes of WAL archived.
    pub bytes: u64,
    /// Times `pg_receivewal` was (re)started.
    pub starts: u64,
}

fn receivewal(opts: &Options, extra: &[&str]) -> Result<Command, Error> {
    let program = opts.tools.path("pg_receivewal")?;
    let mut cmd = match crate::tools::on_path("setpriv") {
        Some(setpriv) => {
            let mut c = Command::new(setpriv);
            c.args(["--pdeathsig", "TERM", "--"]).arg(program);
            c
        }
        None => Command::new(program),
    };
    opts.connection.apply(&mut cmd);
    cmd.args(["--slot", &opts.slot]).args(extra);
    Ok(cmd)
}

/// Creates the slot when it does not exist, reserving WAL from that moment: a slot made by
/// `pg_receivewal --create-slot` reserves nothing until a stream first connects, so WAL written
/// in between could be recycled, and the stream would start after it.
fn ensure_slot(opts: &Options) -> Result<(), Error> {
    let slot = &opts.slot;
    if slot.is_empty()
        || slot.len() > 63
        || !slot.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(Error::Invalid(format!(
            "replication slot name {slot:?}: use up to 63 lower-case letters, digits and '_'"
        )));
    }
    opts.connection.query(
        &opts.tools,
        &format!(
            "SELECT pg_create_physical_replication_slot('{slot}', true) WHERE NOT EXISTS \
             (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{slot}')"
        ),
    )?;
    Ok(())
}

/// Whole files in the spool ready to archive, oldest first: segments and history files.
fn ready(spool: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(spool)
        .map_err(Error::io(format!("reading {}", spool.display())))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            matches!(
                WalFile::parse(&name, DEFAULT_SEGMENT_SIZE),
                Some(WalFile::Segment(_) | WalFile::History(_))
            )
            .then(|| (name, e.path()))
        })
        .collect();
    // History files first (a new timeline's segments refer to them), then segments by name,
    // which is timeline then position.
    files.sort_by_key(|(n, _)| (!n.ends_with(".history"), n.clone()));
    Ok(files)
}

/// Archives what is whole in the spool; removes what is archived except the newest segment.
/// `cluster` is the system identifier the segments carry, learnt from the first one.
fn drain(
    repo: &Repository,
    spool: &Path,
    out: &mut Streamed,
    cluster: &mut Option<u64>,
) -> Result<(), Error> {
    let files = ready(spool)?;
    let newest = files.iter().rev().find(|(n, _)| !n.ends_with(".history")).map(|(n, _)| n.clone());
    for (name, path) in &files {
        // The cluster is the one the segments say, so the streamer needs no data directory.
        let system_identifier = if name.ends_with(".history") {
            None
        } else {
            let data =
                std::fs::read(path).map_err(Error::io(format!("reading {}", path.display())))?;
            Some(summarize(&data)?.system_identifier)
        };
        let Some(id) = system_identifier.or(*cluster) else {
            // A history file before any segment: archived once a segment names the cluster.
            continue;
        };
        if cluster.is_some_and(|c| c != id) {
            return Err(Error::Invalid(format!(
                "{name} belongs to the cluster {id}, but this stream's is {}: the slot's server \
                 was replaced",
                cluster.unwrap_or_default()
            )));
        }
        *cluster = Some(id);
        let Pushed { already_archived, size, .. } = wal_archive::push(repo, path, id)?;
        if !already_archived {
            out.archived += 1;
            out.bytes += size;
            tracing::info!(file = %name, "streamed WAL archived");
        }
        if Some(name) != newest.as_ref() {
            std::fs::remove_file(path)
                .map_err(Error::io(format!("removing {}", path.display())))?;
        }
    }
    Ok(())
}

/// Streams until cancelled (or `duration` passes): `pg_receivewal` restarted with a backoff when
/// it stops, whole segments archived as they appear. Returns what was archived.
///
/// # Errors
/// The slot cannot be created, the spool cannot be used, the repository refuses a segment.
pub fn run(repo: &Repository, opts: &Options) -> Result<Streamed, Error> {
    std::fs::create_dir_all(&opts.spool)
        .map_err(Error::io(format!("creating {}", opts.spool.display())))?;
    ensure_slot(opts)?;
    let deadline = opts.duration.map(|d| Instant::now() + d);
    let mut out = Streamed::default();
    let mut child: Option<(Child, StderrTail)> = None;
    let mut backoff = Duration::from_secs(1);
    let mut next_start = Instant::now();
    let mut cluster = None;
    let result = loop {
        if opts.cancel.is_cancelled() || deadline.is_some_and(|d| Instant::now() >= d) {
            break Ok(());
        }
        let exited = child.as_mut().and_then(|(c, _)| c.try_wait().ok().flatten());
        if let (Some(status), Some((_, tail))) = (exited, exited.and_then(|_| child.take())) {
            let why = failure(status, &tail.text());
            tracing::warn!(status = %why, "pg_receivewal stopped; starting it again");
            next_start = Instant::now() + backoff;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        if child.is_none() && Instant::now() >= next_start {
            let mut cmd = receivewal(opts, &["-D"])?;
            cmd.arg(&opts.spool).args(["--synchronous", "--no-loop"]);
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
            let mut c = cmd.spawn().map_err(|e| Error::Tool {
                program: "pg_receivewal".into(),
                message: format!("cannot start: {e}"),
            })?;
            let tail = StderrTail::collect(c.stderr.take());
            out.starts += 1;
            child = Some((c, tail));
        }
        if let Err(e) = drain(repo, &opts.spool, &mut out, &mut cluster) {
            break Err(e);
        }
        if child.is_some() {
            backoff = Duration::from_secs(1).max(backoff / 2);
        }
        std::thread::sleep(POLL);
    };
    if let Some((mut c, _)) = child {
        // SIGTERM would let it finish a write; a kill is as safe, since every write is synced
        // and it resumes from the spool, and it cannot hang here.
        let _ = c.kill();
        let _ = c.wait();
    }
    result?;
    drain(repo, &opts.spool, &mut out, &mut cluster)?;
    Ok(out)
}
