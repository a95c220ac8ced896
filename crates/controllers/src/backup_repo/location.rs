//! Where a BackupRepo's holdfast repository lives, read from its rendered datasafed
//! configuration with the rules of `holdfast datasafed` (docs/datasafed.md §2), and the
//! pre-check: a real write, read and delete at that location, then opening (or creating) the
//! repository with the BackupRepo's key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use holdfast_repository::backend::object::{ObjectStoreBackend, S3Options};
use holdfast_repository::backend::{Backend, BackendError, FileType};
use holdfast_repository::{InitOptions, Repository};

use crate::Error;

/// The repository location a datasafed configuration names.
#[derive(Debug, Clone, PartialEq)]
pub enum RepositoryLocation {
    /// A directory on the holdfast host.
    Local(PathBuf),
    /// A bucket and key prefix.
    S3 {
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
        region: Option<String>,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
    },
}

impl fmt::Display for RepositoryLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepositoryLocation::Local(p) => write!(f, "{}", p.display()),
            RepositoryLocation::S3 { bucket, prefix, endpoint, .. } => {
                write!(f, "s3://{bucket}")?;
                if !prefix.is_empty() {
                    write!(f, "/{prefix}")?;
                }
                if let Some(ep) = endpoint {
                    write!(f, " at {ep}")?;
                }
                Ok(())
            }
        }
    }
}

/// INI as go-ini (datasafed's parser) reads it: `[section]`, `key = value` or `key: value`,
/// `#`/`;` comments, quoted values verbatim, `key.need_obscure` read as `key`.
fn parse_ini(text: &str) -> Result<BTreeMap<String, BTreeMap<String, String>>, String> {
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = "DEFAULT".to_owned();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(format!("line {}: unclosed section header {line:?}", n + 1));
            };
            section = name.trim().to_owned();
            sections.entry(section.clone()).or_default();
            continue;
        }
        let Some(at) = line.find(['=', ':']) else {
            return Err(format!("line {}: expected `key = value`, found {line:?}", n + 1));
        };
        let key = line[..at].trim();
        let key = key.strip_suffix(".need_obscure").unwrap_or(key).to_owned();
        sections.entry(section.clone()).or_default().insert(key, unquote(line[at + 1..].trim()));
    }
    Ok(sections)
}

fn unquote(v: &str) -> String {
    for q in ["'''", "\"", "`"] {
        if v.len() >= 2 * q.len()
            && let Some(inner) = v.strip_prefix(q).and_then(|s| s.strip_suffix(q))
        {
            return inner.to_owned();
        }
    }
    match v.find(['#', ';']) {
        Some(i) => v[..i].trim().to_owned(),
        None => v.to_owned(),
    }
}

/// The repository location named by the `[storage]` section of a rendered datasafed config.
///
/// # Errors
/// [`Error::Invalid`] naming what is missing or unsupported.
pub fn repository_location(rendered_conf: &str) -> Result<RepositoryLocation, Error> {
    let ini = parse_ini(rendered_conf)
        .map_err(|e| Error::Invalid(format!("the rendered datasafed config: {e}")))?;
    let storage = ini.get("storage");
    let get = |k: &str| storage.and_then(|s| s.get(k)).map(|v| v.trim()).filter(|v| !v.is_empty());
    match get("type") {
        None => Err(Error::Invalid(
            "the rendered datasafed config has no [storage] type (local or s3)".into(),
        )),
        Some("local") => {
            let Some(root) = get("root") else {
                return Err(Error::Invalid(
                    "storage type local needs a root directory (storage.root)".into(),
                ));
            };
            let root = PathBuf::from(root);
            // Jobs and the server run in different directories: only an absolute path means the
            // same place to both.
            if !root.is_absolute() {
                return Err(Error::Invalid(format!(
                    "storage root {} must be an absolute path",
                    root.display()
                )));
            }
            Ok(RepositoryLocation::Local(root))
        }
        Some("s3") => {
            let Some(root) = get("root") else {
                return Err(Error::Invalid(
                    "storage type s3 needs the bucket in storage.root".into(),
                ));
            };
            let root = root.trim_matches('/');
            let (bucket, prefix) = root.split_once('/').unwrap_or((root, ""));
            Ok(RepositoryLocation::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
                endpoint: get("endpoint")
                    .map(|e| if e.contains("://") { e.to_owned() } else { format!("https://{e}") }),
                region: get("region").map(str::to_owned),
                access_key_id: get("access_key_id").map(str::to_owned),
                secret_access_key: get("secret_access_key").map(str::to_owned),
            })
        }
        Some(other) => Err(Error::Invalid(format!(
            "storage type {other:?} is not supported by holdfast's datasafed (use local or s3)"
        ))),
    }
}

impl RepositoryLocation {
    /// A backend at this location, or at `sub` below it.
    fn backend(&self, sub: Option<&str>) -> Result<ObjectStoreBackend, BackendError> {
        match self {
            RepositoryLocation::Local(root) => {
                ObjectStoreBackend::local(&sub.map_or_else(|| root.clone(), |s| root.join(s)))
            }
            RepositoryLocation::S3 {
                bucket,
                prefix,
                endpoint,
                region,
                access_key_id,
                secret_access_key,
            } => {
                let prefix = match (prefix.is_empty(), sub) {
                    (_, None) => prefix.clone(),
                    (true, Some(s)) => s.to_owned(),
                    (false, Some(s)) => format!("{prefix}/{s}"),
                };
                ObjectStoreBackend::s3(&S3Options {
                    bucket: bucket.clone(),
                    prefix,
                    endpoint: endpoint.clone(),
                    region: region.clone(),
                    access_key_id: access_key_id.clone(),
                    secret_access_key: secret_access_key.clone(),
                })
            }
        }
    }

    /// The pre-check: writes, reads back and deletes a probe object beside the repository (so
    /// a failure never leaves anything inside it), then opens the repository with `password`,
    /// creating it when the location holds none. Blocking: call from `spawn_blocking`.
    ///
    /// Returns whether the repository was created. The error is one line naming the cause.
    pub fn precheck(&self, password: &str) -> Result<bool, String> {
        let probe_name = format!("precheck-{:016x}", rand::random::<u64>());
        let probe =
            self.backend(Some(&probe_name)).map_err(|e| format!("cannot open storage: {e}"))?;
        let payload = Bytes::from(format!("holdfast pre-check {probe_name}\n"));
        let round_trip = (|| {
            probe
                .create(FileType::Config, "config", payload.clone())
                .map_err(|e| format!("cannot write: {e}"))?;
            let read = probe
                .get(FileType::Config, "config")
                .map_err(|e| format!("cannot read back: {e}"))?;
            if read != payload {
                return Err(format!(
                    "read back {} bytes that differ from the {} written",
                    read.len(),
                    payload.len()
                ));
            }
            probe.delete(FileType::Config, "config").map_err(|e| format!("cannot delete: {e}"))
        })();
        if let RepositoryLocation::Local(root) = self {
            // The probe's directory is ours alone; S3 has no directories to remove.
            let _ = std::fs::remove_dir_all(root.join(&probe_name));
        }
        drop(probe);
        round_trip.map_err(|e| format!("pre-check of {self} failed: {e}"))?;

        let backend: Arc<dyn Backend> =
            Arc::new(self.backend(None).map_err(|e| format!("cannot open storage: {e}"))?);
        let wrong_key = || {
            format!(
                "a holdfast repository exists at {self} but this BackupRepo's key does not open it \
                 (it belongs to another BackupRepo, or its key Secret was recreated)"
            )
        };
        match Repository::open(backend.clone(), password.as_bytes()) {
            Ok(_) => Ok(false),
            Err(holdfast_repository::Error::NoRepository { .. }) => {
                match Repository::init(
                    backend.clone(),
                    password.as_bytes(),
                    &InitOptions::default(),
                ) {
                    Ok(_) => Ok(true),
                    // Another writer created it meanwhile: it must open with our key.
                    Err(holdfast_repository::Error::AlreadyInitialized { .. }) => {
                        Repository::open(backend, password.as_bytes())
                            .map(|_| false)
                            .map_err(|_| wrong_key())
                    }
                    Err(e) => Err(format!("cannot create the repository at {self}: {e}")),
                }
            }
            Err(holdfast_repository::Error::WrongPassword { .. }) => Err(wrong_key()),
            Err(e) => Err(format!("cannot open the repository at {self}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_local_and_s3_locations() {
        assert_eq!(
            repository_location("[storage]\ntype = local\nroot = /srv/b\n").unwrap(),
            RepositoryLocation::Local("/srv/b".into())
        );
        let s3 = repository_location(
            "[storage]\ntype = s3\nroot = bucket/a/b/\nendpoint = minio:9000 # inline\naccess_key_id = AK\nsecret_access_key.need_obscure = \"x#y\"\n[holdfast]\npassword = p\n",
        )
        .unwrap();
        assert_eq!(
            s3,
            RepositoryLocation::S3 {
                bucket: "bucket".into(),
                prefix: "a/b".into(),
                endpoint: Some("https://minio:9000".into()),
                region: None,
                access_key_id: Some("AK".into()),
                secret_access_key: Some("x#y".into()),
            }
        );
        assert_eq!(s3.to_string(), "s3://bucket/a/b at https://minio:9000");
    }

    #[test]
    fn refuses_what_it_cannot_reach() {
        let e = |c: &str| repository_location(c).unwrap_err().to_string();
        assert_eq!(
            e("[storage]\ntype = ftp\n"),
            "storage type \"ftp\" is not supported by holdfast's datasafed (use local or s3)"
        );
        assert_eq!(
            e("[storage]\ntype = local\nroot = rel/dir\n"),
            "storage root rel/dir must be an absolute path"
        );
        assert_eq!(
            e("[storage]\ntype = local\nroot = \n"),
            "storage type local needs a root directory (storage.root)"
        );
        assert_eq!(
            e("x\n"),
            "the rendered datasafed config: line 1: expected `key = value`, found \"x\""
        );
    }

    #[test]
    fn precheck_creates_the_repository_once_and_refuses_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let loc = RepositoryLocation::Local(dir.path().join("repo"));
        assert_eq!(loc.precheck("k1"), Ok(true));
        assert!(dir.path().join("repo/config").is_file());
        assert_eq!(loc.precheck("k1"), Ok(false));
        let err = loc.precheck("k2").unwrap_err();
        assert!(err.contains("does not open it"), "{err}");
        // No probe directory is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("repo"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("precheck-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn precheck_reports_an_unwritable_location() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = RepositoryLocation::Local(file.join("repo")).precheck("k").unwrap_err();
        assert!(err.contains("cannot open storage"), "{err}");
    }
}
