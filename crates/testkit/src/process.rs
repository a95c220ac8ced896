//! Small process helpers shared by the launchers: free ports, program lookup, starting the
//! tools the tests need (failing, never skipping, when one is missing), running a command to
//! completion, and running as an unprivileged user when the tests run as root.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::Error;

/// The script that installs every tool the tests drive (kubectl, moto, PostgreSQL, the Python
/// `kubernetes` client), relative to the repository root; every "not installed" error names it.
pub const INSTALL_SCRIPT: &str = "scripts/install-deps.sh";

/// Spawns `cmd`, whose program is the tool `tool`; a program that is not installed is
/// [`Error::Missing`], so the test fails saying what to install.
pub fn spawn_tool(tool: &str, cmd: &mut Command) -> Result<Child, Error> {
    cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::missing(tool),
        _ => Error::Io { context: format!("start {tool}"), source: e },
    })
}

/// Fails with [`Error::Missing`] unless `probe` (a cheap invocation of `tool`, such as
/// `kubectl version --client`) starts and exits successfully.
pub fn require_tool(tool: &str, probe: &mut Command) -> Result<(), Error> {
    let status =
        spawn_tool(tool, probe.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()))?
            .wait()
            .map_err(Error::io(format!("wait for {tool}")))?;
    if status.success() { Ok(()) } else { Err(Error::missing(tool)) }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> Result<u16, Error> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(Error::io("bind 127.0.0.1:0"))?;
    Ok(listener.local_addr().map_err(Error::io("read the bound address"))?.port())
}

/// `name` on PATH, if it is there.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// Whether this process runs as root (PostgreSQL refuses to).
pub fn is_root() -> bool {
    // The owner of /proc/self is the process's effective user: no libc call needed.
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// An unprivileged account to run servers as when the tests run as root.
#[derive(Clone, Debug)]
pub struct RunAs {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// `postgres` if the system has it (the conventional owner of a data directory), else `nobody`.
    pub fn find() -> Result<RunAs, Error> {
        let passwd =
            std::fs::read_to_string("/etc/passwd").map_err(Error::io("read /etc/passwd"))?;
        for wanted in ["postgres", "nobody"] {
            for line in passwd.lines() {
                let fields: Vec<&str> = line.split(':').collect();
                if fields.len() >= 4
                    && fields[0] == wanted
                    && let (Ok(uid), Ok(gid)) = (fields[2].parse(), fields[3].parse())
                {
                    return Ok(RunAs { user: wanted.into(), uid, gid });
                }
            }
        }
        Err(Error::NotFound("an unprivileged user (postgres or nobody) in /etc/passwd".into()))
    }

    /// A command that runs `program args…` as this user: `runuser -u USER --` where it exists,
    /// else `su -s /bin/sh USER -c`.
    pub fn command(&self, program: &Path, args: &[&OsStr]) -> Command {
        if let Some(runuser) = on_path("runuser").or_else(|| {
            ["/usr/sbin/runuser", "/sbin/runuser"].iter().map(PathBuf::from).find(|p| p.is_file())
        }) {
            let mut cmd = Command::new(runuser);
            cmd.arg("-u").arg(&self.user).arg("--").arg(program).args(args);
            cmd
        } else {
            let mut line = shell_quote(program.as_os_str());
            for a in args {
                line.push(' ');
                line.push_str(&shell_quote(a));
            }
            let mut cmd = Command::new("su");
            cmd.args(["-s", "/bin/sh", &self.user, "-c", &line]);
            cmd
        }
    }

    /// Gives `path` (and everything below it) to this user.
    pub fn chown_tree(&self, path: &Path) -> Result<(), Error> {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
            .map_err(Error::io(format!("chown {}", path.display())))?;
        let meta = std::fs::symlink_metadata(path)
            .map_err(Error::io(format!("stat {}", path.display())))?;
        if meta.is_dir() {
            for entry in
                std::fs::read_dir(path).map_err(Error::io(format!("list {}", path.display())))?
            {
                let entry = entry.map_err(Error::io(format!("list {}", path.display())))?;
                self.chown_tree(&entry.path())?;
            }
        }
        Ok(())
    }
}

fn shell_quote(s: &OsStr) -> String {
    format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"))
}

/// Runs `cmd` to completion; its stdout on success, an [`Error::Command`] with stderr otherwise.
pub fn run(cmd: &mut Command) -> Result<String, Error> {
    let program = format!("{:?}", cmd.get_program());
    let Output { status, stdout, stderr } =
        cmd.output().map_err(Error::io(format!("start {program}")))?;
    if !status.success() {
        let mut text = String::from_utf8_lossy(&stderr).into_owned();
        if text.trim().is_empty() {
            text = String::from_utf8_lossy(&stdout).into_owned();
        }
        return Err(Error::Command { program, status: status.to_string(), stderr: text });
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_an_error_naming_the_install_script() {
        let tool = "holdfast-testkit-no-such-tool";
        let err = spawn_tool(tool, &mut Command::new(tool)).expect_err("the tool does not exist");
        let message = err.to_string();
        assert!(matches!(err, Error::Missing { .. }), "{message}");
        assert!(message.contains(tool) && message.contains(INSTALL_SCRIPT), "{message}");
        let err = require_tool("false", &mut Command::new("false")).expect_err("false fails");
        assert!(err.to_string().contains(INSTALL_SCRIPT), "{err}");
        require_tool("true", &mut Command::new("true")).expect("true is installed");
    }
}
