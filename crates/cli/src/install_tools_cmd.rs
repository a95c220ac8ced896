//! `holdfast install-tools DIR`: copies this binary into DIR as `holdfast`, with `datasafed`
//! beside it (a symlink, which makes the binary act as datasafed). In cluster mode an init
//! container of each Job runs it from the holdfast image into a shared `emptyDir`, so an
//! ActionSet's own image can call `datasafed` and `holdfast` through `DP_DATASAFED_BIN_PATH`, as
//! KubeBlocks' `dp-copy-datasafed` init container provides `datasafed`. The holdfast image has
//! no shell or `cp`, hence a command of its own.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Options of `holdfast install-tools`.
#[derive(clap::Args)]
pub struct InstallToolsArgs {
    /// The directory to install into (created if missing).
    pub dir: PathBuf,
}

pub fn run(args: InstallToolsArgs) -> anyhow::Result<()> {
    if let Err(error) = install(&args.dir) {
        eprintln!("holdfast install-tools: {error:#}");
        std::process::exit(1);
    }
    Ok(())
}

fn install(dir: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the holdfast executable's path")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Copied under a temporary name and renamed: a reader never sees half a binary, and a
    // second run (an init container restarted) replaces the first whole.
    let target = dir.join("holdfast");
    let partial = dir.join(".holdfast.partial");
    std::fs::copy(&exe, &partial)
        .with_context(|| format!("cannot copy {} to {}", exe.display(), partial.display()))?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", partial.display()))?;
    std::fs::rename(&partial, &target)
        .with_context(|| format!("cannot move {} into place", target.display()))?;
    let link = dir.join("datasafed");
    match std::fs::remove_file(&link) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot replace {}", link.display())),
    }
    std::os::unix::fs::symlink("holdfast", &link)
        .with_context(|| format!("cannot create {}", link.display()))?;
    println!("installed holdfast and datasafed into {}", dir.display());
    Ok(())
}
