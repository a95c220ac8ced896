//! A [`Backend`] over the `object_store` crate: the local file system and S3.
//!
//! `object_store` is async; this backend owns a small private tokio runtime and blocks on it, so
//! the engine stays synchronous (as rustic does for opendal). Do not call it from inside an async
//! task; use `spawn_blocking`.

use std::os::unix::fs::DirBuilderExt as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer};
use object_store::client::{HttpConnector as _, HttpRequestBody, ReqwestConnector};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig,
};

use super::{Backend, BackendError, BackendResult, FileType, ObjectInfo};

/// Everything the S3 backend needs, resolved: the caller (`crate::location`) has filled in
/// defaults and the environment and checked the credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Connection {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket (may be empty).
    pub prefix: String,
    /// Endpoint URL of an S3-compatible server; `None` is AWS.
    pub endpoint: Option<String>,
    /// Region.
    pub region: String,
    /// Path-style (`endpoint/bucket/key`) rather than virtual-hosted-style requests.
    pub path_style: bool,
    /// Static keys; `None` leaves authentication to object_store's credential chain (web
    /// identity, container credentials, instance metadata).
    pub keys: Option<S3Keys>,
}

/// A static access key pair.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Keys {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Connection")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.keys.as_ref().map(|k| &k.access_key_id))
            .finish_non_exhaustive()
    }
}

/// A backend over any `object_store` implementation.
#[derive(Debug)]
pub struct ObjectStoreBackend {
    store: Arc<dyn ObjectStore>,
    prefix: Option<StorePath>,
    location: String,
    /// Always `Some` until dropped: taken out in `drop` to shut it down without blocking.
    runtime: Option<tokio::runtime::Runtime>,
    /// Pack uploads in flight during a backup (see [`Backend::upload_concurrency`]).
    uploads: usize,
    /// The directory of a local repository: range reads go straight to the file there.
    local_root: Option<std::path::PathBuf>,
}

fn runtime(location: &str) -> BackendResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("holdfast-backend")
        .enable_all()
        .build()
        .map_err(|e| BackendError::Permanent {
            backend: location.to_string(),
            op: "start runtime",
            path: String::new(),
            message: e.to_string(),
        })
}

impl Drop for ObjectStoreBackend {
    /// Shuts the runtime down without waiting for it: a plain drop blocks, which panics when the
    /// last handle to a repository goes away inside an async task (a controller's reconcile).
    /// Nothing is lost: every operation waits for its own futures with `block_on`.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl ObjectStoreBackend {
    fn rt(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime lives until the backend is dropped")
    }

    /// A repository in a local directory, created if missing.
    ///
    /// # Errors
    /// The directory cannot be created or opened.
    pub fn local(dir: &std::path::Path) -> BackendResult<Self> {
        let location = dir.display().to_string();
        let perm = |message: String| BackendError::Permanent {
            backend: location.clone(),
            op: "open",
            path: String::new(),
            message,
        };
        // Owner-only, like the key files inside it: the repository holds wrapped keys and
        // everyone's data, and other local users have no business listing it. Only directories
        // created here get the mode; an existing one keeps what its owner chose.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| perm(e.to_string()))?;
        // fsync files and directory entries before reporting success: a local repository should
        // be as durable as S3 claims to be, and the cost is one sync per tens-of-MiB pack.
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| perm(e.to_string()))?
            .with_fsync(true);
        // One pack written (and fsynced) while the next is built: the disk is one device, so
        // more concurrent writes do not finish sooner and each holds a whole pack in memory.
        Ok(Self {
            store: Arc::new(store),
            prefix: None,
            runtime: Some(runtime(&location)?),
            location,
            uploads: 1,
            // Absolute, so a later change of working directory cannot redirect reads.
            local_root: Some(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())),
        })
    }

    /// A repository in an S3 bucket under a prefix.
    ///
    /// # Errors
    /// object_store refuses the configuration (a bad endpoint URL).
    pub fn s3(conn: &S3Connection) -> BackendResult<Self> {
        let location = if conn.prefix.is_empty() {
            format!("s3://{}", conn.bucket)
        } else {
            format!("s3://{}/{}", conn.bucket, conn.prefix)
        };
        let store = s3_store(conn, &location)?;
        let prefix = (!conn.prefix.is_empty()).then(|| StorePath::from(conn.prefix.as_str()));
        Ok(Self {
            store: Arc::new(store),
            prefix,
            runtime: Some(runtime(&location)?),
            location,
            uploads: 4,
            local_root: None,
        })
    }

    fn store_path(&self, rel: &str) -> StorePath {
        match &self.prefix {
            Some(p) => StorePath::from(format!("{p}/{rel}")),
            None => StorePath::from(rel),
        }
    }

    /// A range read of a local file in the calling thread. Restores read many small ranges; going
    /// through the async runtime's blocking pool costs a thread hand-off each and spreads the
    /// buffers over that pool's allocator arenas.
    fn local_range(
        &self,
        file: &std::path::Path,
        rel: &str,
        offset: u64,
        length: u64,
    ) -> BackendResult<Bytes> {
        use std::os::unix::fs::FileExt;
        let fail = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::NotFound {
                BackendError::NotFound { backend: self.location.clone(), path: rel.to_string() }
            } else {
                BackendError::Permanent {
                    backend: self.location.clone(),
                    op: "get_range",
                    path: rel.to_string(),
                    message: if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        format!("short read: the object ends before {length} bytes at {offset}")
                    } else {
                        e.to_string()
                    },
                }
            }
        };
        let len = usize::try_from(length).map_err(|e| fail(std::io::Error::other(e)))?;
        // Large ranges (a restore's chunks and pack windows) bypass the page cache: a pack is
        // rarely read twice, and caching it costs CPU and evicts the user's pages. Small ones (a
        // pack header) are cheap either way and may be read again soon.
        if len >= DIRECT_READ_MIN {
            return crate::direct::read_at(file, offset, len).map_err(fail);
        }
        let f = std::fs::File::open(file).map_err(fail)?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset).map_err(fail)?;
        Ok(Bytes::from(buf))
    }

    fn map_err(&self, op: &'static str, path: &str, e: object_store::Error) -> BackendError {
        let backend = self.location.clone();
        let path = path.to_string();
        match e {
            // S3 answers 404 for a missing bucket too: that is not a missing object.
            object_store::Error::NotFound { .. } if one_line(&e).contains("NoSuchBucket") => {
                BackendError::Permanent { backend, op, path, message: NO_BUCKET.into() }
            }
            object_store::Error::NotFound { .. } => BackendError::NotFound { backend, path },
            object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. } => {
                BackendError::AlreadyExists { backend, path }
            }
            object_store::Error::Generic { .. } => {
                let message = one_line(&e);
                // Local I/O failures (full disk, permissions) do not pass on retry; network ones may.
                let permanent = [
                    "No space",
                    "Permission denied",
                    "Read-only",
                    "InvalidAccessKeyId",
                    "SignatureDoesNotMatch",
                    "AccessDenied",
                    "NoSuchBucket",
                    "Connection refused",
                    "dns error",
                ]
                .iter()
                .any(|m| message.contains(m));
                if message.contains("NoSuchBucket") {
                    BackendError::Permanent { backend, op, path, message: NO_BUCKET.into() }
                } else if permanent {
                    BackendError::Permanent { backend, op, path, message }
                } else {
                    BackendError::Transient { backend, op, path, message }
                }
            }
            other => BackendError::Permanent { backend, op, path, message: one_line(&other) },
        }
    }
}

/// The object_store client of an S3 connection.
fn s3_store(conn: &S3Connection, location: &str) -> BackendResult<AmazonS3> {
    // The environment supplies only what the connection leaves to object_store: the
    // credential chain (web identity, container credentials, a session token).
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(&conn.bucket)
        .with_region(&conn.region)
        .with_virtual_hosted_style_request(!conn.path_style);
    let allow_http = conn.endpoint.as_deref().is_some_and(|ep| ep.starts_with("http://"));
    if let Some(ep) = &conn.endpoint {
        b = b.with_endpoint(ep);
    }
    if let Some(k) = &conn.keys {
        b = b.with_access_key_id(&k.access_key_id).with_secret_access_key(&k.secret_access_key);
        if let Some(token) = &k.session_token {
            b = b.with_token(token);
        }
    }
    // This is the only retry layer of S3 operations (`Location::open` adds none on top): it
    // sees HTTP status codes and resumes interrupted downloads. object_store's default retries
    // for up to 3 minutes; an unreachable endpoint should fail within seconds.
    let retry = RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 5,
        retry_timeout: Duration::from_secs(20),
    };
    b = b.with_retry(retry).with_client_options(
        ClientOptions::new()
            .with_allow_http(allow_http)
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(300)),
    );
    b.build().map_err(|e| BackendError::Permanent {
        backend: location.to_owned(),
        op: "configure",
        path: String::new(),
        message: one_line(&e),
    })
}

/// S3's CreateBucket for the bucket of `conn`: `Ok(true)` when it was created, `Ok(false)` when
/// this account already owns it. object_store has no bucket operations, so this signs the one
/// request itself with object_store's SigV4 signer and credential chain.
///
/// # Errors
/// The bucket belongs to another account, the credentials may not create buckets, or the
/// server cannot be reached; the message says which.
pub fn create_s3_bucket(conn: &S3Connection) -> BackendResult<bool> {
    let location = format!("s3://{}", conn.bucket);
    let fail = |message: String| BackendError::Permanent {
        backend: location.clone(),
        op: "create bucket",
        path: String::new(),
        message,
    };
    let store = s3_store(conn, &location)?;
    let base = conn
        .endpoint
        .clone()
        .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", conn.region));
    let base = base.trim_end_matches('/');
    let url = if conn.path_style {
        format!("{base}/{}", conn.bucket)
    } else {
        match base.split_once("://") {
            Some((scheme, host)) => format!("{scheme}://{}.{host}/", conn.bucket),
            None => return Err(fail(format!("endpoint {base} has no scheme"))),
        }
    };
    // Outside us-east-1, AWS wants the region stated in the body.
    let body = if conn.region == "us-east-1" {
        String::new()
    } else {
        format!(
            "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
            conn.region
        )
    };
    let allow_http = url.starts_with("http://");
    let rt = runtime(&location)?;
    let (status, text) = rt.block_on(async {
        let credential =
            store.credentials().get_credential().await.map_err(|e| fail(one_line(&e)))?;
        let mut request = http::Request::builder()
            .method(http::Method::PUT)
            .uri(&url)
            .body(HttpRequestBody::from(body))
            .map_err(|e| fail(e.to_string()))?;
        AwsAuthorizer::new(&credential, "s3", &conn.region)
            .try_authorize(&mut request, None)
            .map_err(|e| fail(one_line(&e)))?;
        let client = ReqwestConnector::default()
            .connect(
                &ClientOptions::new()
                    .with_allow_http(allow_http)
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(60)),
            )
            .map_err(|e| fail(one_line(&e)))?;
        let response = client.execute(request).await.map_err(|e| fail(one_line(&e)))?;
        let status = response.status();
        let text = response.into_body().bytes().await.unwrap_or_default();
        Ok::<_, BackendError>((status, String::from_utf8_lossy(&text).into_owned()))
    })?;
    rt.shutdown_background();
    let code = text
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map_or("", |(code, _)| code);
    match (status.as_u16(), code) {
        (200, _) => Ok(true),
        (409, "BucketAlreadyOwnedByYou") => Ok(false),
        (409, "BucketAlreadyExists") => Err(fail(format!(
            "bucket {} exists and belongs to another account: choose another name",
            conn.bucket
        ))),
        (403, _) => Err(fail(format!(
            "access denied ({code}): these credentials may not create buckets; create {} \
             yourself",
            conn.bucket
        ))),
        (status, _) => Err(fail(format!("HTTP {status} {code}"))),
    }
}

/// What an operation on a bucket that does not exist fails with.
const NO_BUCKET: &str = "the bucket does not exist (`holdfast repo init` creates it)";

/// Range reads of at least this many bytes use direct I/O.
const DIRECT_READ_MIN: usize = 64 * 1024;

/// Where a local repository stages packs while they are written (format §2, §7.1).
pub const STAGING_DIR: &str = "tmp";

/// Makes a directory's entries durable.
fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The whole error chain on one line.
fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s.replace('\n', " ")
}

impl Backend for ObjectStoreBackend {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn upload_concurrency(&self) -> usize {
        self.uploads
    }

    fn staging_dir(&self) -> Option<std::path::PathBuf> {
        self.local_root.as_ref().map(|root| root.join(STAGING_DIR))
    }

    fn create_from_file(
        &self,
        ft: FileType,
        name: &str,
        file: &std::path::Path,
    ) -> BackendResult<()> {
        let Some(root) = &self.local_root else {
            return self.create(ft, name, super::read_staged(&self.location, file)?);
        };
        let rel = ft.path(name);
        let fail = |op: &'static str, e: std::io::Error| BackendError::Permanent {
            backend: self.location.clone(),
            op,
            path: rel.clone(),
            message: e.to_string(),
        };
        let dest = root.join(&rel);
        let dir = dest.parent().unwrap_or(root);
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| fail("create directory", e))?;
            // The new directory's own entry must be durable too.
            if let Some(up) = dir.parent() {
                sync_dir(up).map_err(|e| fail("sync directory", e))?;
            }
        }
        // A hard link is create-only: it fails when the name exists and never replaces it.
        match std::fs::hard_link(file, &dest) {
            Ok(()) => sync_dir(dir).map_err(|e| fail("sync directory", e)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(BackendError::AlreadyExists { backend: self.location.clone(), path: rel })
            }
            Err(e) => Err(fail("link staged file", e)),
        }
    }

    fn create(&self, ft: FileType, name: &str, data: Bytes) -> BackendResult<()> {
        let rel = ft.path(name);
        let path = self.store_path(&rel);
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        self.rt()
            .block_on(self.store.put_opts(&path, PutPayload::from_bytes(data), opts))
            .map_err(|e| self.map_err("create", &rel, e))?;
        // The key files and the config are the repository's secrets at rest (wrapped keys,
        // the chunker's keyed parameters): owner-only, as restic keeps them. object_store
        // writes through a temporary file with the umask's mode, so the mode is narrowed right
        // after; inside a repository directory created here (0700) nobody else could reach the
        // file meanwhile. The object is stored either way, so a failure here is a warning, not
        // a failed write (a retry would find the object and fail as "already exists").
        if let (Some(root), FileType::Key | FileType::Config) = (&self.local_root, ft) {
            use std::os::unix::fs::PermissionsExt as _;
            let file = root.join(&rel);
            if let Err(e) = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
            {
                tracing::warn!(path = %file.display(), error = %e, "could not make owner-only");
            }
        }
        Ok(())
    }

    fn get(&self, ft: FileType, name: &str) -> BackendResult<Bytes> {
        let rel = ft.path(name);
        let path = self.store_path(&rel);
        self.rt()
            .block_on(async { self.store.get(&path).await?.bytes().await })
            .map_err(|e| self.map_err("get", &rel, e))
    }

    fn get_range(
        &self,
        ft: FileType,
        name: &str,
        offset: u64,
        length: u64,
    ) -> BackendResult<Bytes> {
        let rel = ft.path(name);
        if let Some(root) = &self.local_root {
            return self.local_range(&root.join(&rel), &rel, offset, length);
        }
        let path = self.store_path(&rel);
        let bytes = self
            .rt()
            .block_on(self.store.get_range(&path, offset..offset + length))
            .map_err(|e| self.map_err("get_range", &rel, e))?;
        if bytes.len() as u64 != length {
            return Err(BackendError::Permanent {
                backend: self.location.clone(),
                op: "get_range",
                path: rel,
                message: format!("short read: {} of {length} bytes", bytes.len()),
            });
        }
        Ok(bytes)
    }

    fn list(&self, ft: FileType) -> BackendResult<Vec<ObjectInfo>> {
        let rel = if ft == FileType::Config { String::new() } else { ft.dir().to_string() };
        let prefix = if rel.is_empty() { self.prefix.clone() } else { Some(self.store_path(&rel)) };
        let metas: Vec<object_store::ObjectMeta> = if ft == FileType::Config {
            // The config is a single object at the root; a stat answers "is it there".
            return match self.stat(ft, "config") {
                Ok(info) => Ok(vec![info]),
                Err(e) if e.is_not_found() => Ok(Vec::new()),
                Err(e) => Err(e),
            };
        } else {
            self.rt()
                .block_on(self.store.list(prefix.as_ref()).try_collect())
                .map_err(|e| self.map_err("list", &rel, e))?
        };
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let name = m.location.filename()?.to_string();
                // LocalFileSystem may expose in-progress temporary files (`name#N`); skip them.
                if name.contains('#') {
                    return None;
                }
                Some(ObjectInfo {
                    name,
                    size: m.size,
                    last_modified: SystemTime::from(m.last_modified),
                })
            })
            .collect())
    }

    fn delete(&self, ft: FileType, name: &str) -> BackendResult<()> {
        let rel = ft.path(name);
        let path = self.store_path(&rel);
        match self.rt().block_on(self.store.delete(&path)) {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.map_err("delete", &rel, e)),
        }
    }

    fn stat(&self, ft: FileType, name: &str) -> BackendResult<ObjectInfo> {
        let rel = ft.path(name);
        let path = self.store_path(&rel);
        let m = self
            .rt()
            .block_on(self.store.head(&path))
            .map_err(|e| self.map_err("stat", &rel, e))?;
        Ok(ObjectInfo {
            name: name.to_string(),
            size: m.size,
            last_modified: SystemTime::from(m.last_modified),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let b = super::ObjectStoreBackend::local(dir.path()).unwrap();
        super::super::conformance::run(&b);
    }

    #[test]
    fn local_range_reads_report_missing_objects_and_short_reads() {
        use super::{Backend, FileType};
        let dir = tempfile::tempdir().unwrap();
        let b = super::ObjectStoreBackend::local(dir.path()).unwrap();
        let name = "ab".repeat(32);
        let err = b.get_range(FileType::Pack, &name, 0, 10).unwrap_err();
        assert!(err.is_not_found(), "{err}");
        b.create(FileType::Pack, &name, bytes::Bytes::from(vec![7u8; 100])).unwrap();
        assert_eq!(b.get_range(FileType::Pack, &name, 90, 10).unwrap(), vec![7u8; 10]);
        let err = b.get_range(FileType::Pack, &name, 95, 10).unwrap_err();
        assert!(!err.is_transient() && err.to_string().contains("short read"), "{err}");

        // Large ranges take the direct-I/O path: same bytes, same errors.
        let big = "cd".repeat(32);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        b.create(FileType::Pack, &big, bytes::Bytes::from(data.clone())).unwrap();
        let got = b.get_range(FileType::Pack, &big, 4_097, 200_000).unwrap();
        assert_eq!(&got[..], &data[4_097..204_097]);
        let err = b.get_range(FileType::Pack, &big, 200_000, 100_001).unwrap_err();
        assert!(err.to_string().contains("short read"), "{err}");
        let missing = "ef".repeat(32);
        assert!(b.get_range(FileType::Pack, &missing, 0, 100_000).unwrap_err().is_not_found());
    }
}
