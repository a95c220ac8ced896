//! `holdfast logs`: prints the output of an embedded Job's pod from the data directory (where
//! the Job runner writes `<data_dir>/logs/<ns>/<pod>/<container>.log`), without a server.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// Options of `holdfast logs`.
#[derive(clap::Args)]
pub struct LogsArgs {
    /// A pod name, or `job/NAME` for the latest pod of a Job.
    #[arg(value_name = "POD|job/NAME")]
    pub target: String,
    /// Namespace of the pod or Job.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Print only this container's log (default: every container of the pod).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// The server's data directory (as for `holdfast server`).
    #[arg(long, env = "HOLDFAST_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

pub fn run(args: LogsArgs) -> anyhow::Result<()> {
    if let Err(error) = show(&args) {
        // One line with its causes and a non-zero exit, like `holdfast server`.
        eprintln!("holdfast logs: {error:#}");
        std::process::exit(1);
    }
    Ok(())
}

fn show(args: &LogsArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.clone().unwrap_or_else(crate::server_cmd::default_data_dir);
    let ns_dir = data_dir.join("logs").join(&args.namespace);
    let pod_dir = match args.target.split_once('/') {
        Some(("job" | "jobs" | "job.batch", job)) => latest_pod_of_job(&ns_dir, job)?
            .with_context(|| {
                format!(
                    "no logs of a pod of job {}/{job} under {}",
                    args.namespace,
                    ns_dir.display()
                )
            })?,
        Some((kind, _)) if kind != "pod" && kind != "pods" => {
            bail!("cannot show logs of {:?}: give a pod name or job/NAME", args.target)
        }
        other => {
            let pod = other.map_or(args.target.as_str(), |(_, name)| name);
            let dir = ns_dir.join(pod);
            if !dir.is_dir() {
                bail!("no logs of pod {}/{pod} under {}", args.namespace, ns_dir.display());
            }
            dir
        }
    };
    let files = match &args.container {
        Some(c) => {
            let file = pod_dir.join(format!("{c}.log"));
            if !file.is_file() {
                bail!("no log of container {c:?} in {}", pod_dir.display());
            }
            vec![(c.clone(), file)]
        }
        None => container_logs(&pod_dir)?,
    };
    let mut out = std::io::stdout().lock();
    let many = files.len() > 1;
    for (container, file) in files {
        if many {
            writeln!(out, "==> {container} <==")?;
        }
        let mut f = std::fs::File::open(&file)
            .with_context(|| format!("cannot open {}", file.display()))?;
        std::io::copy(&mut f, &mut out)
            .with_context(|| format!("cannot read {}", file.display()))?;
    }
    out.flush()?;
    Ok(())
}

/// `<container>.log` files of a pod directory, by container name.
fn container_logs(pod_dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for entry in
        std::fs::read_dir(pod_dir).with_context(|| format!("cannot read {}", pod_dir.display()))?
    {
        let path = entry?.path();
        if let Some(name) =
            path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".log"))
        {
            files.push((name.to_string(), path.clone()));
        }
    }
    files.sort();
    Ok(files)
}

/// The most recently written pod directory `<job>-<5 chars>` of a Job.
fn latest_pod_of_job(ns_dir: &Path, job: &str) -> anyhow::Result<Option<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(ns_dir) else { return Ok(None) };
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(suffix) = name.to_str().and_then(|n| n.strip_prefix(job)?.strip_prefix('-'))
        else {
            continue;
        };
        // Pods of job "a" are "a-xxxxx"; "a-b-xxxxx" belongs to job "a-b".
        if suffix.len() != 5 || !suffix.bytes().all(|b| b.is_ascii_alphanumeric()) {
            continue;
        }
        let modified = entry.metadata()?.modified()?;
        if best.as_ref().is_none_or(|(t, _)| modified > *t) {
            best = Some((modified, entry.path()));
        }
    }
    Ok(best.map(|(_, p)| p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_resolves_to_its_latest_pod_only() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("a-b-xyz12"))?;
        assert_eq!(latest_pod_of_job(dir.path(), "a")?, None);
        std::fs::create_dir_all(dir.path().join("a-bcd23"))?;
        assert_eq!(latest_pod_of_job(dir.path(), "a")?, Some(dir.path().join("a-bcd23")));
        assert_eq!(latest_pod_of_job(dir.path(), "a-b")?, Some(dir.path().join("a-b-xyz12")));
        Ok(())
    }
}
