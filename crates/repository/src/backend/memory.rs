//! An in-memory backend for tests; behaves like the real ones (create-only, ranges, listing).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;

use super::{Backend, BackendError, BackendResult, FileType, ObjectInfo};

/// Objects kept in a map keyed by path.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    objects: Mutex<BTreeMap<String, (Bytes, SystemTime)>>,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the bytes of an existing object, bypassing create-only rules. Tests use it to
    /// simulate bit rot.
    pub fn corrupt(&self, ft: FileType, name: &str, f: impl FnOnce(&mut Vec<u8>)) {
        let mut map = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((bytes, _)) = map.get_mut(&ft.path(name)) {
            let mut v = bytes.to_vec();
            f(&mut v);
            *bytes = Bytes::from(v);
        }
    }

    fn not_found(path: String) -> BackendError {
        BackendError::NotFound { backend: "memory".into(), path }
    }
}

impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory".into()
    }

    fn create(&self, ft: FileType, name: &str, data: Bytes) -> BackendResult<()> {
        let path = ft.path(name);
        let mut map = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        if map.contains_key(&path) {
            return Err(BackendError::AlreadyExists { backend: "memory".into(), path });
        }
        map.insert(path, (data, SystemTime::now()));
        Ok(())
    }

    fn get(&self, ft: FileType, name: &str) -> BackendResult<Bytes> {
        let path = ft.path(name);
        let map = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&path).map(|(b, _)| b.clone()).ok_or_else(|| Self::not_found(path))
    }

    fn get_range(
        &self,
        ft: FileType,
        name: &str,
        offset: u64,
        length: u64,
    ) -> BackendResult<Bytes> {
        let all = self.get(ft, name)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(usize::try_from(length).unwrap_or(usize::MAX));
        if end > all.len() {
            return Err(BackendError::Permanent {
                backend: "memory".into(),
                op: "get_range",
                path: ft.path(name),
                message: format!("range {start}..{end} beyond object size {}", all.len()),
            });
        }
        Ok(all.slice(start..end))
    }

    fn list(&self, ft: FileType) -> BackendResult<Vec<ObjectInfo>> {
        let map = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        let prefix =
            if ft == FileType::Config { "config".to_string() } else { format!("{}/", ft.dir()) };
        Ok(map
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, (b, t))| ObjectInfo {
                name: k.rsplit('/').next().unwrap_or(k).to_string(),
                size: b.len() as u64,
                last_modified: *t,
            })
            .collect())
    }

    fn delete(&self, ft: FileType, name: &str) -> BackendResult<()> {
        let mut map = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&ft.path(name));
        Ok(())
    }

    fn stat(&self, ft: FileType, name: &str) -> BackendResult<ObjectInfo> {
        let path = ft.path(name);
        let map = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&path)
            .map(|(b, t)| ObjectInfo {
                name: name.to_string(),
                size: b.len() as u64,
                last_modified: *t,
            })
            .ok_or_else(|| Self::not_found(path))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn conformance() {
        super::super::conformance::run(&super::MemoryBackend::new());
    }
}
