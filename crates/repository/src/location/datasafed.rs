//! datasafed's configuration file: rclone's `[storage]` section (written with go-ini by
//! KubeBlocks StorageProvider templates) names where the repository lives. The contract is
//! `docs/datasafed.md` §2.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ini::Ini;
use super::s3::{S3Options, endpoint_url, parse_bool};
use super::{Location, LocationError};

/// The section that names the storage.
const STORAGE: &str = "storage";

/// A parsed datasafed configuration, with the name of where it came from for errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasafedConfig {
    origin: String,
    ini: Ini,
}

impl DatasafedConfig {
    /// Parses configuration text. `origin` says where it came from (`config file /etc/…`, `the
    /// rendered datasafed config`) and begins every error about it.
    ///
    /// # Errors
    /// [`LocationError::Syntax`] naming the line.
    pub fn parse(origin: impl Into<String>, text: &str) -> Result<Self, LocationError> {
        let origin = origin.into();
        match Ini::parse(text) {
            Ok(ini) => Ok(Self { origin, ini }),
            Err(e) => Err(LocationError::Syntax { origin, line: e.line, problem: e.problem }),
        }
    }

    /// An empty configuration (no file), named `origin` in errors.
    pub fn empty(origin: impl Into<String>) -> Self {
        Self { origin: origin.into(), ini: Ini::default() }
    }

    /// One value of one section, as written (after unquoting).
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.ini.get(section, key)
    }

    /// Replaces the `[storage]` section by a local directory (datasafed's
    /// `DATASAFED_LOCAL_BACKEND_PATH` rule).
    pub fn use_local_storage(&mut self, dir: &Path) {
        self.ini.set_section(
            STORAGE,
            BTreeMap::from([
                ("type".to_owned(), "local".to_owned()),
                ("root".to_owned(), dir.display().to_string()),
            ]),
        );
    }

    /// The repository location the `[storage]` section names: `type = local` is the directory
    /// `root`; `type = s3` is `s3://<root>` (first component the bucket, the rest the prefix)
    /// with `endpoint`, `region`, `force_path_style`, `access_key_id` and `secret_access_key`.
    /// Empty values count as absent; rclone keys holdfast has no use for (`provider`,
    /// `env_auth`, `chunk_size`, …) are ignored.
    ///
    /// # Errors
    /// No or an unsupported `type`, no `root`, no bucket, or a `force_path_style` that is not a
    /// boolean; each names the origin and the field.
    pub fn location(&self) -> Result<Location, LocationError> {
        let get = |k: &str| self.ini.get(STORAGE, k).map(str::trim).filter(|v| !v.is_empty());
        let missing = |kind: &'static str, what: &'static str| LocationError::MissingField {
            origin: self.origin.clone(),
            kind,
            field: "storage.root",
            what,
        };
        match get("type") {
            None => Err(LocationError::NoStorageType { origin: self.origin.clone() }),
            Some("local") => {
                let root = get("root").ok_or_else(|| missing("local", "a root directory"))?;
                Ok(Location::Local(PathBuf::from(root)))
            }
            Some("s3") => {
                let root = get("root").ok_or_else(|| missing("s3", "the bucket"))?;
                let root = root.trim_matches('/');
                let (bucket, prefix) = root.split_once('/').unwrap_or((root, ""));
                if bucket.is_empty() {
                    return Err(LocationError::NoBucket {
                        origin: format!("{}: storage.root", self.origin),
                    });
                }
                let path_style = match get("force_path_style") {
                    None => None,
                    Some(v) => Some(parse_bool(v).ok_or_else(|| LocationError::InvalidField {
                        origin: self.origin.clone(),
                        field: "storage.force_path_style".into(),
                        value: v.to_owned(),
                        expected: "true or false",
                    })?),
                };
                Ok(Location::S3(S3Options {
                    bucket: bucket.to_owned(),
                    prefix: prefix.trim_matches('/').to_owned(),
                    endpoint: get("endpoint").map(endpoint_url),
                    region: get("region").map(str::to_owned),
                    path_style,
                    access_key_id: get("access_key_id").map(str::to_owned),
                    secret_access_key: get("secret_access_key").map(str::to_owned),
                }))
            }
            Some(other) => Err(LocationError::UnsupportedType {
                origin: self.origin.clone(),
                kind: other.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "the rendered datasafed config";

    fn location(text: &str) -> Result<Location, LocationError> {
        DatasafedConfig::parse(ORIGIN, text)?.location()
    }

    fn err(text: &str) -> String {
        location(text).unwrap_err().to_string()
    }

    #[test]
    fn local_storage_is_the_root_directory() {
        assert_eq!(
            location("[storage]\ntype = local\nroot = /srv/b\n").unwrap(),
            Location::Local("/srv/b".into())
        );
        // A relative root is relative to the working directory, as rclone reads it; callers
        // that run elsewhere (the BackupRepo controller) refuse it themselves.
        assert_eq!(
            location("[storage]\ntype=local\nroot=repo\n").unwrap(),
            Location::Local("repo".into())
        );
    }

    #[test]
    fn s3_storage_splits_root_into_bucket_and_prefix() {
        let s3 = location(
            "[storage]\ntype = s3\nprovider = Minio\nenv_auth = false\nroot = /bucket/a/b/ \n\
             endpoint = minio:9000 # inline\naccess_key_id = AK\n\
             secret_access_key.need_obscure = \"x#y\"\nregion = eu-west-1 ; inline\n\
             [holdfast]\npassword = p\n",
        )
        .unwrap();
        let want = S3Options {
            bucket: "bucket".into(),
            prefix: "a/b".into(),
            endpoint: Some("https://minio:9000".into()),
            region: Some("eu-west-1".into()),
            path_style: None,
            access_key_id: Some("AK".into()),
            secret_access_key: Some("x#y".into()),
        };
        assert_eq!(s3, Location::S3(want));
        assert_eq!(s3.to_string(), "s3://bucket/a/b at https://minio:9000");
        // A bucket alone, an endpoint with its scheme, empty values as absent.
        let Location::S3(o) = location(
            "[storage]\ntype = s3\nroot = bucket\nendpoint = http://127.0.0.1:9000\nregion =\n",
        )
        .unwrap() else {
            panic!("not s3")
        };
        assert_eq!((o.bucket.as_str(), o.prefix.as_str()), ("bucket", ""));
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!((o.region, o.access_key_id), (None, None));
        // Slashes around the prefix are dropped.
        let Location::S3(o) = location("[storage]\ntype = s3\nroot = b//x//\n").unwrap() else {
            panic!("not s3")
        };
        assert_eq!(o.prefix, "x");
    }

    #[test]
    fn force_path_style_is_rclones_boolean() {
        let style = |v: &str| match location(&format!(
            "[storage]\ntype = s3\nroot = b\nforce_path_style = {v}\n"
        )) {
            Ok(Location::S3(o)) => Ok(o.path_style),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(style("true"), Ok(Some(true)));
        assert_eq!(style("false"), Ok(Some(false)));
        assert_eq!(style("0"), Ok(Some(false)));
        assert_eq!(style(""), Ok(None));
        assert_eq!(
            style("sometimes"),
            Err(format!(
                "{ORIGIN}: storage.force_path_style = \"sometimes\" (expected true or false)"
            ))
        );
    }

    #[test]
    fn what_cannot_be_reached_is_refused_with_its_origin_and_field() {
        assert_eq!(
            err("[storage]\ntype = ftp\n"),
            format!(
                "{ORIGIN}: storage type \"ftp\" is not supported by holdfast's datasafed (use local or s3)"
            )
        );
        assert_eq!(
            err("[storage]\nroot = /x\n"),
            format!("{ORIGIN} has no [storage] type (local or s3)")
        );
        assert_eq!(
            err("[other]\ntype = s3\n"),
            format!("{ORIGIN} has no [storage] type (local or s3)")
        );
        assert_eq!(
            err("[storage]\ntype = local\nroot = \n"),
            format!("{ORIGIN}: storage type local needs a root directory (storage.root)")
        );
        assert_eq!(
            err("[storage]\ntype = s3\n"),
            format!("{ORIGIN}: storage type s3 needs the bucket (storage.root)")
        );
        assert_eq!(
            err("[storage]\ntype = s3\nroot = /\n"),
            format!("{ORIGIN}: storage.root has no bucket")
        );
        assert_eq!(err("x\n"), format!("{ORIGIN}: line 1: expected `key = value`, found \"x\""));
    }

    #[test]
    fn local_storage_can_replace_the_section() {
        let mut c = DatasafedConfig::parse(
            "config file c",
            "[storage]\ntype = s3\nroot = b\n[holdfast]\npassword = pw\n",
        )
        .unwrap();
        c.use_local_storage(Path::new("/data/repo"));
        assert_eq!(c.location().unwrap(), Location::Local("/data/repo".into()));
        assert_eq!(c.get("storage", "root"), Some("/data/repo"));
        assert_eq!(c.get("holdfast", "password"), Some("pw"));
        let mut e = DatasafedConfig::empty("none");
        assert_eq!(e.get("storage", "type"), None);
        e.use_local_storage(Path::new("/d"));
        assert_eq!(e.location().unwrap(), Location::Local("/d".into()));
    }
}
