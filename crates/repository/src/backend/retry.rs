//! Retries transient backend failures with exponential backoff. Safe for every operation because
//! objects are create-only and content-addressed: a create whose first attempt landed but whose
//! answer was lost comes back as `AlreadyExists`, which content-addressed callers treat as done.

use std::time::Duration;

use bytes::Bytes;

use super::{Backend, BackendResult, FileType, ObjectInfo};

/// Wraps a backend and retries `Transient` errors.
#[derive(Debug)]
pub struct RetryBackend<B> {
    inner: B,
    attempts: u32,
    first_delay: Duration,
}

impl<B: Backend> RetryBackend<B> {
    /// Retries up to `attempts` times in all, waiting `first_delay`, then doubling.
    pub fn new(inner: B, attempts: u32, first_delay: Duration) -> Self {
        Self { inner, attempts: attempts.max(1), first_delay }
    }

    fn run<T>(&self, mut f: impl FnMut() -> BackendResult<T>) -> BackendResult<T> {
        let mut delay = self.first_delay;
        let mut attempt = 1;
        loop {
            match f() {
                Err(e) if e.is_transient() && attempt < self.attempts => {
                    tracing::warn!(error = %e, attempt, "transient backend error, retrying");
                    std::thread::sleep(delay);
                    delay = delay.saturating_mul(2);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

impl<B: Backend> Backend for RetryBackend<B> {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn upload_concurrency(&self) -> usize {
        self.inner.upload_concurrency()
    }
    fn create(&self, ft: FileType, name: &str, data: Bytes) -> BackendResult<()> {
        self.run(|| self.inner.create(ft, name, data.clone()))
    }
    fn get(&self, ft: FileType, name: &str) -> BackendResult<Bytes> {
        self.run(|| self.inner.get(ft, name))
    }
    fn get_range(
        &self,
        ft: FileType,
        name: &str,
        offset: u64,
        length: u64,
    ) -> BackendResult<Bytes> {
        self.run(|| self.inner.get_range(ft, name, offset, length))
    }
    fn list(&self, ft: FileType) -> BackendResult<Vec<ObjectInfo>> {
        self.run(|| self.inner.list(ft))
    }
    fn delete(&self, ft: FileType, name: &str) -> BackendResult<()> {
        self.run(|| self.inner.delete(ft, name))
    }
    fn stat(&self, ft: FileType, name: &str) -> BackendResult<ObjectInfo> {
        self.run(|| self.inner.stat(ft, name))
    }
    fn staging_dir(&self) -> Option<std::path::PathBuf> {
        self.inner.staging_dir()
    }
    fn create_from_file(
        &self,
        ft: FileType,
        name: &str,
        file: &std::path::Path,
    ) -> BackendResult<()> {
        self.run(|| self.inner.create_from_file(ft, name, file))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::backend::BackendError;
    use crate::backend::memory::MemoryBackend;

    /// Fails the first `n` gets with a transient error.
    struct Flaky {
        inner: MemoryBackend,
        failures: AtomicU32,
    }

    impl Backend for Flaky {
        fn location(&self) -> String {
            "flaky".into()
        }
        fn create(&self, ft: FileType, name: &str, data: Bytes) -> BackendResult<()> {
            self.inner.create(ft, name, data)
        }
        fn get(&self, ft: FileType, name: &str) -> BackendResult<Bytes> {
            if self.failures.load(Ordering::SeqCst) > 0 {
                self.failures.fetch_sub(1, Ordering::SeqCst);
                return Err(BackendError::Transient {
                    backend: "flaky".into(),
                    op: "get",
                    path: name.into(),
                    message: "connection reset".into(),
                });
            }
            self.inner.get(ft, name)
        }
        fn get_range(&self, ft: FileType, n: &str, o: u64, l: u64) -> BackendResult<Bytes> {
            self.inner.get_range(ft, n, o, l)
        }
        fn list(&self, ft: FileType) -> BackendResult<Vec<ObjectInfo>> {
            self.inner.list(ft)
        }
        fn delete(&self, ft: FileType, name: &str) -> BackendResult<()> {
            self.inner.delete(ft, name)
        }
        fn stat(&self, ft: FileType, name: &str) -> BackendResult<ObjectInfo> {
            self.inner.stat(ft, name)
        }
    }

    #[test]
    fn retries_transient_errors_then_gives_up() {
        let flaky = Flaky { inner: MemoryBackend::new(), failures: AtomicU32::new(2) };
        flaky.create(FileType::Index, "a", Bytes::from_static(b"x")).unwrap();
        let b = RetryBackend::new(flaky, 3, Duration::from_millis(1));
        assert_eq!(b.get(FileType::Index, "a").unwrap(), Bytes::from_static(b"x"));
        b.inner.failures.store(5, Ordering::SeqCst);
        assert!(b.get(FileType::Index, "a").unwrap_err().is_transient());
    }
}
