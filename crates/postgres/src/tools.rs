//! Finding and running PostgreSQL's own programs (`pg_basebackup`, `psql`).
//!
//! A program is looked for in `--pg-bindir` (or `HOLDFAST_PG_BINDIR`), then on `PATH`, then in
//! the newest of the distributions' versioned directories (`/usr/lib/postgresql/N/bin` on Debian,
//! `/usr/pgsql-N/bin` on Red Hat), where servers are installed without being put on `PATH`.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Error;

/// Where PostgreSQL's programs are.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    bindir: Option<PathBuf>,
}

/// Lines of a failed program's error output kept for the error message.
const ERROR_LINES: usize = 5;

fn executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The versioned binary directories present, newest first.
fn versioned_dirs() -> Vec<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    let mut scan = |parent: &str, prefix: &str, suffix: &str| {
        for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(v) = name.strip_prefix(prefix).and_then(|v| v.parse::<u32>().ok()) {
                found.push((v, entry.path().join(suffix)));
            }
        }
    };
    scan("/usr/lib/postgresql", "", "bin");
    scan("/usr", "pgsql-", "bin");
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.into_iter().map(|(_, p)| p).collect()
}

impl Tools {
    /// Programs from `bindir` if given, else from `HOLDFAST_PG_BINDIR`, else searched for.
    pub fn new(bindir: Option<PathBuf>) -> Self {
        let bindir = bindir.or_else(|| {
            std::env::var_os("HOLDFAST_PG_BINDIR").filter(|v| !v.is_empty()).map(PathBuf::from)
        });
        Tools { bindir }
    }

    /// The path of `program`.
    ///
    /// # Errors
    /// Not found anywhere, with where it was looked for.
    pub fn path(&self, program: &str) -> Result<PathBuf, Error> {
        if let Some(dir) = &self.bindir {
            let p = dir.join(program);
            return if executable(&p) {
                Ok(p)
            } else {
                Err(Error::Invalid(format!(
                    "{program} is not in {} (--pg-bindir / HOLDFAST_PG_BINDIR)",
                    dir.display()
                )))
            };
        }
        let on_path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default();
        on_path
            .into_iter()
            .chain(versioned_dirs())
            .map(|d| d.join(program))
            .find(|p| executable(p))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{program} not found on PATH or in /usr/lib/postgresql/*/bin: install \
                     PostgreSQL's client programs or pass --pg-bindir"
                ))
            })
    }

    /// A command for `program`.
    ///
    /// # Errors
    /// The program is not found.
    pub fn command(&self, program: &str) -> Result<Command, Error> {
        Ok(Command::new(self.path(program)?))
    }
}

/// A program on `PATH`, if any.
pub fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| executable(p))
}

/// Runs a command to completion and returns its standard output; a failure carries the last
/// lines of its error output.
///
/// # Errors
/// It cannot be started or exits non-zero.
pub fn output(program: &str, cmd: &mut Command) -> Result<String, Error> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Tool { program: program.into(), message: e.to_string() })?;
    if !out.status.success() {
        return Err(Error::Tool {
            program: program.into(),
            message: failure(out.status, &String::from_utf8_lossy(&out.stderr)),
        });
    }
    String::from_utf8(out.stdout)
        .map_err(|_| Error::Tool { program: program.into(), message: "output is not UTF-8".into() })
}

/// "exit status 1: <last lines>".
pub(crate) fn failure(status: std::process::ExitStatus, stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(ERROR_LINES)..].join(" / ");
    if tail.is_empty() { status.to_string() } else { format!("{status}: {tail}") }
}

/// Collects a child's standard error on a thread, so it can neither block the child nor be lost.
pub(crate) struct StderrTail(Option<std::thread::JoinHandle<String>>);

impl StderrTail {
    pub(crate) fn collect(stderr: Option<std::process::ChildStderr>) -> Self {
        StderrTail(stderr.map(|mut s| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = s.read_to_string(&mut text);
                text
            })
        }))
    }

    pub(crate) fn text(self) -> String {
        self.0.and_then(|h| h.join().ok()).unwrap_or_default()
    }
}
