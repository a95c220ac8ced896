//! Crash safety of the store with a real `kill -9`.
//!
//! The test binary re-executes itself as a child process (selected by an environment variable)
//! that writes through the store in a loop and prints every acknowledged write. The parent kills it
//! with SIGKILL mid-stream, reopens the store and checks that every acknowledged write is there,
//! with its revision, that the log has no hole, and that a watch replays it all.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use holdfast_apiserver::store::{EventType, Key, Store};
use serde_json::json;

/// Set in the child: the store path it must write to.
const WRITER_ROLE: &str = "HOLDFAST_STORE_CRASH_WRITER";
const TEST_NAME: &str = "acknowledged_writes_survive_sigkill";
const RESOURCE: &str = "velero.io/backups";
const WRITER_TASKS: usize = 6;

#[derive(Debug, Clone, PartialEq)]
enum Ack {
    /// A create (seq 0) or update (seq > 0) of `name` acknowledged at `rev`.
    Put {
        name: String,
        rev: u64,
        seq: u64,
    },
    Delete {
        name: String,
        rev: u64,
    },
}

#[test]
fn acknowledged_writes_survive_sigkill() -> anyhow::Result<()> {
    if let Some(path) = std::env::var_os(WRITER_ROLE) {
        return run_writer(Path::new(&path));
    }
    for (round, kill_after) in [150usize, 700, 1500].into_iter().enumerate() {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("store.db");
        let acks = write_until_killed(&path, kill_after)
            .with_context(|| format!("round {round}: running the writer"))?;
        verify(&path, &acks)
            .with_context(|| format!("round {round}: after {} acks", acks.len()))?;
        // Restart once more on the same file and keep writing: the revision counter continues.
        let more = write_until_killed(&path, 50)
            .with_context(|| format!("round {round}: second writer"))?;
        let first_new = more.iter().map(ack_rev).min().context("no acks in the second run")?;
        let last_old = acks.iter().map(ack_rev).max().context("no acks")?;
        ensure!(first_new > last_old, "revisions restarted: {first_new} after {last_old}");
        let mut all = acks;
        all.extend(more);
        verify(&path, &all).with_context(|| format!("round {round}: after the second kill"))?;
    }
    Ok(())
}

fn ack_rev(ack: &Ack) -> u64 {
    match ack {
        Ack::Put { rev, .. } | Ack::Delete { rev, .. } => *rev,
    }
}

/// Starts the child on `path`, collects its acknowledgements, SIGKILLs it after `kill_after` of
/// them, and returns every acknowledgement it printed (including those printed before it died).
fn write_until_killed(path: &Path, kill_after: usize) -> anyhow::Result<Vec<Ack>> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(WRITER_ROLE, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawning the writer child")?;
    let stdout = child.stdout.take().context("child stdout")?;
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut acks = Vec::new();
    let mut killed = false;
    loop {
        // A bound on a hung child, not a readiness wait: lines arrive continuously.
        let line = match lines.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                child.kill()?;
                bail!("no output from the writer for 120 s");
            }
        };
        if let Some(ack) = parse_ack(&line)? {
            acks.push(ack);
        }
        if !killed && acks.len() >= kill_after {
            child.kill().context("killing the writer")?; // SIGKILL on Unix
            killed = true;
            // Keep reading: lines already in the pipe are acknowledged writes too.
        }
    }
    let status = child.wait()?;
    reader.join().map_err(|_| anyhow::anyhow!("reader thread panicked"))?;
    ensure!(killed, "the writer exited by itself ({status}) after {} acks", acks.len());
    ensure!(status.signal() == Some(9), "the writer was not killed by SIGKILL: {status}");
    Ok(acks)
}

fn parse_ack(line: &str) -> anyhow::Result<Option<Ack>> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    Ok(match fields.as_slice() {
        ["PUT", name, rev, seq] => {
            Some(Ack::Put { name: (*name).to_owned(), rev: rev.parse()?, seq: seq.parse()? })
        }
        ["DEL", name, rev] => Some(Ack::Delete { name: (*name).to_owned(), rev: rev.parse()? }),
        // The test harness's own lines ("running 1 test", …).
        _ => None,
    })
}

fn verify(path: &Path, acks: &[Ack]) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let store = Store::open(path).context("reopening the store")?;
        let current = store.current_rev();
        let max_acked = acks.iter().map(ack_rev).max().unwrap_or(1);
        ensure!(current >= max_acked, "current_rev {current} < acknowledged {max_acked}");

        // The whole log, replayed by a watch from before the first write: contiguous revisions.
        let mut watch = store.watch(RESOURCE, 1)?;
        let mut log = BTreeMap::new();
        let mut expected_rev = 2;
        while expected_rev <= current {
            let event = tokio::time::timeout(Duration::from_secs(60), watch.next())
                .await
                .context("replay stalled")?
                .context("replay ended early")??;
            ensure!(
                event.rev == expected_rev,
                "log hole: got {} expecting {expected_rev}",
                event.rev
            );
            expected_rev += 1;
            log.insert(event.rev, event);
        }

        // Every acknowledged write is in the log at its revision, with its content.
        let mut last_put: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        let mut deleted = Vec::new();
        for ack in acks {
            match ack {
                Ack::Put { name, rev, seq } => {
                    let event =
                        log.get(rev).with_context(|| format!("acked {name}@{rev} missing"))?;
                    ensure!(event.key.name == *name, "rev {rev} is {} not {name}", event.key.name);
                    let kind = if *seq == 0 { EventType::Added } else { EventType::Modified };
                    ensure!(event.kind == kind, "rev {rev}: {:?} not {kind:?}", event.kind);
                    ensure!(event.object["spec"]["seq"] == json!(seq), "rev {rev}: wrong content");
                    ensure!(
                        event.object["metadata"]["resourceVersion"] == json!(rev.to_string()),
                        "rev {rev}: resourceVersion {}",
                        event.object["metadata"]["resourceVersion"]
                    );
                    let entry = last_put.entry(name).or_insert((*rev, *seq));
                    if *rev > entry.0 {
                        *entry = (*rev, *seq);
                    }
                }
                Ack::Delete { name, rev } => {
                    let event = log
                        .get(rev)
                        .with_context(|| format!("acked delete {name}@{rev} missing"))?;
                    ensure!(
                        event.kind == EventType::Deleted && event.key.name == *name,
                        "rev {rev}: {:?} of {}, acked as delete of {name}",
                        event.kind,
                        event.key.name
                    );
                    deleted.push(name.as_str());
                }
            }
        }
        // The current state of each object is its last log event, which is at or after its last
        // acknowledged write (a write may commit and then lose its ack to the kill).
        let mut last_event: BTreeMap<&str, &holdfast_apiserver::store::Event> = BTreeMap::new();
        for event in log.values() {
            last_event.insert(event.key.name.as_str(), event);
        }
        for (name, (rev, _)) in &last_put {
            let event = last_event.get(name).with_context(|| format!("{name} not in the log"))?;
            ensure!(event.rev >= *rev, "{name}: last event {} before acked {rev}", event.rev);
        }
        for name in &deleted {
            let event = last_event.get(name).with_context(|| format!("{name} not in the log"))?;
            ensure!(
                event.kind == EventType::Deleted,
                "{name}: acked delete, then {:?}",
                event.kind
            );
        }
        for (name, event) in &last_event {
            let stored = store.get(&Key::new(RESOURCE, "velero", *name))?;
            match (event.kind, stored) {
                (EventType::Deleted, None) => {}
                (EventType::Deleted, Some(s)) => {
                    bail!("{name} was deleted at {} but is back at {}", event.rev, s.mod_rev)
                }
                (_, None) => bail!(
                    "{name} missing; its last event is {} at {}",
                    event.kind.as_str(),
                    event.rev
                ),
                (_, Some(s)) => {
                    ensure!(
                        s.mod_rev == event.rev,
                        "{name}: mod_rev {} but last event {}",
                        s.mod_rev,
                        event.rev
                    );
                    ensure!(
                        s.object == event.object,
                        "{name}: stored state differs from its last event"
                    );
                }
            }
        }
        Ok(())
    })
}

/// The child: writes forever (creates, updates, deletes from several tasks, so group commit
/// batches are in flight when the kill lands) and prints each acknowledgement.
fn run_writer(path: &Path) -> anyhow::Result<()> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let store = Store::open(path)?;
        let start = store.current_rev();
        let mut tasks = Vec::new();
        for t in 0..WRITER_TASKS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0u64.. {
                    let name = format!("b{start}-{t}-{i}");
                    let key = Key::new(RESOURCE, "velero", &name);
                    let object = |seq: u64| {
                        json!({"apiVersion": "velero.io/v1", "kind": "Backup",
                               "metadata": {"name": name, "namespace": "velero"},
                               "spec": {"seq": seq, "pad": "x".repeat(200)}})
                    };
                    let created = store.create(key.clone(), object(0)).await?;
                    ack(&format!("PUT {name} {} 0", created.mod_rev))?;
                    let updated = store.update(key.clone(), object(1), created.mod_rev).await?;
                    ack(&format!("PUT {name} {} 1", updated.mod_rev))?;
                    if i % 3 == 0 {
                        let deleted = store.delete(key, Some(updated.mod_rev)).await?;
                        ack(&format!("DEL {name} {}", deleted.mod_rev))?;
                    }
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok(())
    })
}

fn ack(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}
