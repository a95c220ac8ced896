//! Where a repository lives, and the one way to open a backend there.
//!
//! A [`Location`] comes from a URL ([`Location::parse`]: a directory, `file://dir` or
//! `s3://bucket/prefix`), from datasafed's rclone-style configuration
//! ([`DatasafedConfig::location`]), or is built from separate fields by a caller that has them
//! (`Location::S3(S3Options { bucket, prefix, region, … })`). [`Location::open`] turns it into a
//! backend with the decorators every caller wants, applied here and nowhere else.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::object::ObjectStoreBackend;
use crate::backend::retry::RetryBackend;
use crate::backend::{Backend, BackendError};

mod datasafed;
mod ini;
mod s3;

pub use datasafed::DatasafedConfig;
pub use s3::{S3Options, endpoint_url};

/// Why a location could not be read or opened. Every variant names the location or the
/// configuration it came from, and the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    /// A configuration line that is not INI.
    #[error("{origin}: line {line}: {problem}")]
    Syntax {
        /// Where the text came from.
        origin: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        problem: String,
    },
    /// The configuration names no storage.
    #[error("{origin} has no [storage] type (local or s3)")]
    NoStorageType {
        /// Where the configuration came from.
        origin: String,
    },
    /// The storage type needs a field that is absent or empty.
    #[error("{origin}: storage type {kind} needs {what} ({field})")]
    MissingField {
        /// Where the configuration came from.
        origin: String,
        /// The storage type.
        kind: &'static str,
        /// The field, `section.key`.
        field: &'static str,
        /// What the field holds.
        what: &'static str,
    },
    /// A storage type holdfast cannot keep a repository in.
    #[error(
        "{origin}: storage type {kind:?} is not supported by holdfast's datasafed (use local or s3)"
    )]
    UnsupportedType {
        /// Where the configuration came from.
        origin: String,
        /// The type as written.
        kind: String,
    },
    /// A field whose value does not parse.
    #[error("{origin}: {field} = {value:?} (expected {expected})")]
    InvalidField {
        /// The location or configuration.
        origin: String,
        /// The field or environment variable.
        field: String,
        /// The value as written.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// An S3 location without a bucket.
    #[error("{origin} has no bucket")]
    NoBucket {
        /// The URL or field that should have named it.
        origin: String,
    },
    /// Opening a local repository that must exist found no directory.
    #[error("no repository at {}: the directory does not exist", path.display())]
    NoDirectory {
        /// The directory.
        path: PathBuf,
    },
    /// No credentials for an S3-compatible server.
    #[error(
        "{location}: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a \
         profile in ~/.aws/credentials (AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE)"
    )]
    NoCredentials {
        /// `s3://bucket/prefix`.
        location: String,
    },
    /// The backend refused to open (it names its location).
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Where a repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory.
    Local(PathBuf),
    /// A bucket and key prefix on S3 or an S3-compatible server.
    S3(S3Options),
}

/// Attempts of an operation on a backend without retries of its own, and the first wait.
const RETRY_ATTEMPTS: u32 = 3;
const RETRY_FIRST_DELAY: Duration = Duration::from_millis(200);

impl Location {
    /// A location URL: `s3://bucket/prefix`, `file:///dir` or a plain directory path.
    ///
    /// # Errors
    /// An `s3://` URL without a bucket.
    pub fn parse(url: &str) -> Result<Self, LocationError> {
        let Some(rest) = url.strip_prefix("s3://") else {
            return Ok(Location::Local(PathBuf::from(url.strip_prefix("file://").unwrap_or(url))));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(LocationError::NoBucket { origin: format!("repository URL {url}") });
        }
        Ok(Location::S3(S3Options {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            ..Default::default()
        }))
    }

    /// The location `sub` below this one (a subdirectory, or a longer key prefix).
    pub fn join(&self, sub: &str) -> Location {
        match self {
            Location::Local(dir) => Location::Local(dir.join(sub)),
            Location::S3(o) => {
                let sub = sub.trim_matches('/');
                let prefix = if o.prefix.is_empty() {
                    sub.to_owned()
                } else {
                    format!("{}/{sub}", o.prefix)
                };
                Location::S3(S3Options { prefix, ..o.clone() })
            }
        }
    }

    /// Creates the bucket of an S3 location when it does not exist (what `init` does first):
    /// `Some(true)` when it was created, `Some(false)` when it existed, `None` for a directory.
    ///
    /// # Errors
    /// The options do not resolve (see [`S3Options`]), or the bucket cannot be created (owned
    /// by another account, credentials without the right); the message says which.
    pub fn create_bucket(&self) -> Result<Option<bool>, LocationError> {
        match self {
            Location::Local(_) => Ok(None),
            Location::S3(o) => Ok(Some(crate::backend::object::create_s3_bucket(
                &o.resolve(&process_env, &read_file)?,
            )?)),
        }
    }

    /// Opens the backend, creating a local directory that does not exist yet (for `init` and
    /// writers that create the repository on first use). Unset S3 options are read from the
    /// process environment (see [`S3Options`]).
    ///
    /// Transient failures are retried by exactly one layer: S3 by object_store's HTTP client,
    /// which knows which status codes and requests may be retried and resumes an interrupted
    /// download where it stopped; a local directory, which has no retries of its own, by
    /// [`RetryBackend`].
    ///
    /// # Errors
    /// Incomplete S3 options (see [`S3Options`]) or a directory that cannot be created.
    pub fn open(&self) -> Result<Arc<dyn Backend>, LocationError> {
        self.open_with(&process_env, &read_file)
    }

    /// Like [`Location::open`], but a local directory must exist already: anything but creating
    /// a repository on a missing path is a typo, and must not leave a directory behind.
    ///
    /// # Errors
    /// [`LocationError::NoDirectory`], or what [`Location::open`] reports.
    pub fn open_existing(&self) -> Result<Arc<dyn Backend>, LocationError> {
        if let Location::Local(dir) = self
            && !dir.exists()
        {
            return Err(LocationError::NoDirectory { path: dir.clone() });
        }
        self.open()
    }

    fn open_with(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        read_file: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Arc<dyn Backend>, LocationError> {
        Ok(match self {
            Location::Local(dir) => Arc::new(RetryBackend::new(
                ObjectStoreBackend::local(dir)?,
                RETRY_ATTEMPTS,
                RETRY_FIRST_DELAY,
            )),
            Location::S3(o) => Arc::new(ObjectStoreBackend::s3(&o.resolve(env, read_file)?)?),
        })
    }
}

/// A variable of the process environment.
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A file's text, `None` when it cannot be read (the AWS shared files are optional).
fn read_file(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

impl FromStr for Location {
    type Err = LocationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Location::parse(s)
    }
}

impl fmt::Display for Location {
    /// The directory, or `s3://bucket/prefix` and the endpoint when one is given.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3(o) => {
                write!(f, "{}", o.url())?;
                if let Some(ep) = &o.endpoint {
                    write!(f, " at {ep}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(bucket: &str, prefix: &str) -> S3Options {
        S3Options { bucket: bucket.into(), prefix: prefix.into(), ..Default::default() }
    }

    fn s3(bucket: &str, prefix: &str) -> Location {
        Location::S3(options(bucket, prefix))
    }

    #[test]
    fn urls_name_a_directory_or_a_bucket_and_prefix() {
        assert_eq!(Location::parse("/srv/repo").unwrap(), Location::Local("/srv/repo".into()));
        assert_eq!(Location::parse("rel/repo").unwrap(), Location::Local("rel/repo".into()));
        assert_eq!(Location::parse("file:///srv/r").unwrap(), Location::Local("/srv/r".into()));
        assert_eq!(Location::parse("s3://b").unwrap(), s3("b", ""));
        assert_eq!(Location::parse("s3://b/").unwrap(), s3("b", ""));
        assert_eq!(Location::parse("s3://b/p/q/").unwrap(), s3("b", "p/q"));
        assert_eq!("s3://b//p".parse::<Location>().unwrap(), s3("b", "p"));
        assert_eq!(
            Location::parse("s3:///p").unwrap_err().to_string(),
            "repository URL s3:///p has no bucket"
        );
    }

    #[test]
    fn display_names_the_place_and_the_endpoint() {
        assert_eq!(Location::Local("/srv/b".into()).to_string(), "/srv/b");
        assert_eq!(s3("b", "").to_string(), "s3://b");
        let mut l = s3("b", "p");
        if let Location::S3(o) = &mut l {
            o.endpoint = Some("http://127.0.0.1:9000".into());
        }
        assert_eq!(l.to_string(), "s3://b/p at http://127.0.0.1:9000");
    }

    #[test]
    fn join_goes_below_the_location() {
        assert_eq!(Location::Local("/r".into()).join("x"), Location::Local("/r/x".into()));
        assert_eq!(s3("b", "").join("x"), s3("b", "x"));
        assert_eq!(s3("b", "p").join("/x/"), s3("b", "p/x"));
    }

    #[test]
    fn a_local_location_opens_only_where_asked_to_create() {
        let tmp = tempfile::tempdir().unwrap();
        let loc = Location::Local(tmp.path().join("repo"));
        let e = loc.open_existing().err().expect("missing directory");
        assert!(matches!(e, LocationError::NoDirectory { .. }), "{e}");
        assert!(e.to_string().starts_with("no repository at "), "{e}");
        assert!(!tmp.path().join("repo").exists(), "a refused open created the directory");
        let b = loc.open().unwrap();
        assert_eq!(b.location(), tmp.path().join("repo").display().to_string());
        loc.open_existing().unwrap();
    }

    #[test]
    fn an_opened_local_location_passes_the_conformance_suite() {
        let tmp = tempfile::tempdir().unwrap();
        let b = Location::Local(tmp.path().join("repo")).open().unwrap();
        crate::backend::conformance::run(&*b);
    }

    #[test]
    fn s3_options_are_checked_before_any_request() {
        let loc = Location::S3(S3Options {
            endpoint: Some("http://127.0.0.1:1".into()),
            ..options("b", "p")
        });
        let e = loc.open_with(&|_| None, &|_| None).err().expect("no credentials");
        assert!(matches!(e, LocationError::NoCredentials { .. }), "{e}");
        let e = s3("", "p").open_with(&|_| None, &|_| None).err().expect("no bucket");
        assert!(matches!(e, LocationError::NoBucket { .. }), "{e}");
    }
}
