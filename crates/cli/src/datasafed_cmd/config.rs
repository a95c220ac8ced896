//! datasafed's INI config file, the repository location it names, and the password.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use holdfast_repository::backend::object::S3Options;

/// The environment variable that forces a local backend (datasafed's).
pub const LOCAL_BACKEND_PATH_ENV: &str = "DATASAFED_LOCAL_BACKEND_PATH";

/// A parsed INI file: section -> key -> value, in go-ini's reading of the format.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ini {
    sections: BTreeMap<String, BTreeMap<String, String>>,
}

impl Ini {
    /// Parses INI text the way go-ini (datasafed's parser) reads it: `[section]` headers, `key =
    /// value` or `key: value`, `#`/`;` comment lines, and — for unquoted values — everything from
    /// the first `#` or `;` on is an inline comment. Quoted values (`"…"`, `` `…` ``, `'''…'''`)
    /// are taken verbatim. Keys before any header belong to `DEFAULT`.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut ini = Ini::default();
        let mut section = "DEFAULT".to_string();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let Some(name) = rest.strip_suffix(']') else {
                    bail!("config line {}: unclosed section header {line:?}", n + 1);
                };
                section = name.trim().to_string();
                ini.sections.entry(section.clone()).or_default();
                continue;
            }
            let Some(at) = line.find(['=', ':']) else {
                bail!("config line {}: expected `key = value`, found {line:?}", n + 1);
            };
            let mut key = line[..at].trim().to_string();
            let value = unquote(line[at + 1..].trim());
            // datasafed replaces `key.need_obscure` by `key` holding the rclone-obscured value;
            // holdfast hands values to no rclone, so the plain value is the right one.
            if let Some(k) = key.strip_suffix(".need_obscure") {
                key = k.to_string();
            }
            ini.sections.entry(section.clone()).or_default().insert(key, value);
        }
        Ok(ini)
    }

    /// One value.
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.sections.get(section)?.get(key).map(String::as_str)
    }

    /// Replaces a whole section.
    pub fn set_section(&mut self, section: &str, values: BTreeMap<String, String>) {
        self.sections.insert(section.to_string(), values);
    }
}

fn unquote(v: &str) -> String {
    for q in ["'''", "\"", "`"] {
        if v.len() >= 2 * q.len()
            && let Some(inner) = v.strip_prefix(q).and_then(|s| s.strip_suffix(q))
        {
            return inner.to_string();
        }
    }
    match v.find(['#', ';']) {
        Some(i) => v[..i].trim().to_string(),
        None => v.to_string(),
    }
}

/// Reads the config the way datasafed does: with `DATASAFED_LOCAL_BACKEND_PATH` set, the storage
/// is that directory (which must exist) and the file is optional (only its `[holdfast]` section
/// is used); otherwise the file must exist.
pub fn load(conf: &Path) -> anyhow::Result<Ini> {
    let local = std::env::var(LOCAL_BACKEND_PATH_ENV).ok().filter(|s| !s.is_empty());
    let read = |p: &Path| -> anyhow::Result<Ini> {
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("reading config file {}", p.display()))?;
        Ini::parse(&text).with_context(|| format!("config file {}", p.display()))
    };
    let Some(local) = local else {
        return read(conf);
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
    let mut ini = if conf.exists() { read(conf)? } else { Ini::default() };
    ini.set_section(
        "storage",
        BTreeMap::from([
            ("type".to_string(), "local".to_string()),
            ("root".to_string(), dir.display().to_string()),
        ]),
    );
    Ok(ini)
}

/// Where the repository lives.
#[derive(Debug, Clone)]
pub enum Location {
    /// A directory.
    Local(PathBuf),
    /// An S3 bucket and prefix.
    S3(S3Options),
}

/// The repository location named by the `[storage]` section.
pub fn location(ini: &Ini) -> anyhow::Result<Location> {
    let get = |k: &str| ini.get("storage", k).map(str::trim).filter(|v| !v.is_empty());
    let Some(kind) = get("type") else {
        bail!("the config has no [storage] type (local or s3)");
    };
    match kind {
        "local" => {
            let Some(root) = get("root") else {
                bail!("storage type local needs a root directory (storage.root)");
            };
            Ok(Location::Local(PathBuf::from(root)))
        }
        "s3" => {
            let Some(root) = get("root") else {
                bail!("storage type s3 needs the bucket in storage.root");
            };
            let root = root.trim_matches('/');
            let (bucket, prefix) = root.split_once('/').unwrap_or((root, ""));
            let endpoint = get("endpoint")
                .map(|e| if e.contains("://") { e.to_string() } else { format!("https://{e}") });
            Ok(Location::S3(S3Options {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
                endpoint,
                region: get("region").map(str::to_string),
                access_key_id: get("access_key_id").map(str::to_string),
                secret_access_key: get("secret_access_key").map(str::to_string),
            }))
        }
        other => bail!(
            "storage type {other:?} is not supported by holdfast's datasafed (use local or s3)"
        ),
    }
}

/// The repository password: `[holdfast] password`, `HOLDFAST_PASSWORD`, the first line of
/// `HOLDFAST_PASSWORD_FILE`, then `DATASAFED_ENCRYPTION_PASS_PHRASE`.
pub fn password(ini: &Ini, conf: &Path) -> anyhow::Result<String> {
    if let Some(p) = ini.get("holdfast", "password").filter(|p| !p.is_empty()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_datasafed_style_ini() {
        let ini = Ini::parse(
            "# comment\n[storage]\ntype = s3\nroot=bucket/pre/fix/ \naccess_key_id: AK\n\
             secret_access_key.need_obscure = \"se#cret\"\nregion = eu-west-1 ; inline\n\
             endpoint = minio:9000\n\n[holdfast]\npassword = pw\n",
        )
        .unwrap();
        assert_eq!(ini.get("storage", "secret_access_key"), Some("se#cret"));
        assert_eq!(ini.get("storage", "region"), Some("eu-west-1"));
        assert_eq!(ini.get("holdfast", "password"), Some("pw"));
        let Location::S3(o) = location(&ini).unwrap() else { panic!("not s3") };
        assert_eq!((o.bucket.as_str(), o.prefix.as_str()), ("bucket", "pre/fix"));
        assert_eq!(o.endpoint.as_deref(), Some("https://minio:9000"));
        assert_eq!(o.access_key_id.as_deref(), Some("AK"));
        assert!(Ini::parse("[storage\n").is_err());
        let bad = Ini::parse("[storage]\ntype = azureblob\n").unwrap();
        assert!(location(&bad).unwrap_err().to_string().contains("azureblob"));
    }
}
