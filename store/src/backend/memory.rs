//! An in-memory backend, for tests.

use std::collections::BTreeMap;

use parking_lot::Mutex;

use super::{Backend, FileInfo, FileKind};
use crate::error::{Error, Result};
use crate::id::Id;

/// Keeps every file in a map; nothing survives the process.
#[derive(Default)]
pub struct MemoryBackend {
    files: Mutex<BTreeMap<(FileKind, Id), Vec<u8>>>,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    /// A backend holding a copy of every file of this one.
    pub fn duplicate(&self) -> MemoryBackend {
        MemoryBackend {
            files: Mutex::new(self.files.lock().clone()),
        }
    }

    /// Changes a stored file in place, for fault-injection tests.
    pub fn tamper(&self, kind: FileKind, id: &Id, change: impl FnOnce(&mut Vec<u8>)) {
        if let Some(data) = self.files.lock().get_mut(&(kind, *id)) {
            change(data);
        }
    }
}

fn not_found(kind: FileKind, id: &Id) -> Error {
    Error::NotFound {
        what: format!("{kind} {id} not found"),
    }
}

impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory".into()
    }

    fn is_repository(&self) -> Result<bool> {
        Ok(self
            .files
            .lock()
            .contains_key(&(FileKind::Config, super::CONFIG_ID)))
    }

    fn create(&self) -> Result<()> {
        Ok(())
    }

    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>> {
        Ok(self
            .files
            .lock()
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, id), data)| FileInfo {
                id: *id,
                size: data.len() as u64,
            })
            .collect())
    }

    fn read(&self, kind: FileKind, id: &Id) -> Result<Vec<u8>> {
        self.files
            .lock()
            .get(&(kind, *id))
            .cloned()
            .ok_or_else(|| not_found(kind, id))
    }

    fn read_range(&self, kind: FileKind, id: &Id, offset: u64, len: u32) -> Result<Vec<u8>> {
        let files = self.files.lock();
        let data = files.get(&(kind, *id)).ok_or_else(|| not_found(kind, id))?;
        let start = offset as usize;
        let end = start + len as usize;
        if end > data.len() {
            return Err(Error::integrity(
                kind,
                id,
                "file is shorter than its index says",
            ));
        }
        Ok(data[start..end].to_vec())
    }

    fn write(&self, kind: FileKind, id: &Id, data: &[u8]) -> Result<()> {
        self.files.lock().insert((kind, *id), data.to_vec());
        Ok(())
    }

    fn remove(&self, kind: FileKind, id: &Id) -> Result<()> {
        self.files.lock().remove(&(kind, *id));
        Ok(())
    }
}
