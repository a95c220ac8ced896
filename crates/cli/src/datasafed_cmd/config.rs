//! datasafed's config file as this process reads it (the environment's override and the
//! password). Its `[storage]` section is read by the repository's `location` module.

use std::path::Path;

use anyhow::{Context, bail};
use holdfast_repository::location::DatasafedConfig;

/// The environment variable that forces a local backend (datasafed's).
pub const LOCAL_BACKEND_PATH_ENV: &str = "DATASAFED_LOCAL_BACKEND_PATH";

/// Reads the config the way datasafed does: with `DATASAFED_LOCAL_BACKEND_PATH` set, the storage
/// is that directory (which must exist) and the file is optional (only its `[holdfast]` section
/// is used); otherwise the file must exist.
pub fn load(conf: &Path) -> anyhow::Result<DatasafedConfig> {
    let local = std::env::var(LOCAL_BACKEND_PATH_ENV).ok().filter(|s| !s.is_empty());
    let origin = format!("config file {}", conf.display());
    let read = || -> anyhow::Result<DatasafedConfig> {
        let text = std::fs::read_to_string(conf)
            .with_context(|| format!("reading config file {}", conf.display()))?;
        Ok(DatasafedConfig::parse(origin.clone(), &text)?)
    };
    let Some(local) = local else {
        return read();
    };
    let dir = std::path::absolute(&local)
        .with_context(|| format!("resolving {LOCAL_BACKEND_PATH_ENV}={local}"))?;
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!(
            "the path \"{}\" specified by {LOCAL_BACKEND_PATH_ENV} is not a directory",
            dir.display()
        ),
        Err(_) => bail!(
            "the path \"{}\" specified by {LOCAL_BACKEND_PATH_ENV} does not exist",
            dir.display()
        ),
    }
    let mut config = if conf.exists() { read()? } else { DatasafedConfig::empty(origin.clone()) };
    config.use_local_storage(&dir);
    Ok(config)
}

/// The repository password: `[holdfast] password`, `HOLDFAST_PASSWORD`, the first line of
/// `HOLDFAST_PASSWORD_FILE`, then `DATASAFED_ENCRYPTION_PASS_PHRASE`.
pub fn password(config: &DatasafedConfig, conf: &Path) -> anyhow::Result<String> {
    if let Some(p) = config.get("holdfast", "password").filter(|p| !p.is_empty()) {
        return Ok(p.to_string());
    }
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(p) = env("HOLDFAST_PASSWORD") {
        return Ok(p);
    }
    if let Some(f) = env("HOLDFAST_PASSWORD_FILE") {
        let s = std::fs::read_to_string(&f)
            .with_context(|| format!("reading HOLDFAST_PASSWORD_FILE {f}"))?;
        let line = s.lines().next().unwrap_or("").to_string();
        if line.is_empty() {
            bail!("HOLDFAST_PASSWORD_FILE {f} is empty");
        }
        return Ok(line);
    }
    if let Some(p) = env("DATASAFED_ENCRYPTION_PASS_PHRASE") {
        return Ok(p);
    }
    bail!(
        "no repository password: set `password` in the [holdfast] section of {}, or HOLDFAST_PASSWORD, HOLDFAST_PASSWORD_FILE or DATASAFED_ENCRYPTION_PASS_PHRASE",
        conf.display()
    )
}
