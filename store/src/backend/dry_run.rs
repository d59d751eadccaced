//! A wrapper that reads through and discards every write, for `--dry-run`.

use std::sync::Arc;

use super::{Backend, FileInfo, FileKind};
use crate::error::Result;
use crate::id::Id;

/// Reads from the wrapped backend; writes and removals do nothing.
pub struct DryRunBackend {
    inner: Arc<dyn Backend>,
}

impl DryRunBackend {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Backend>) -> DryRunBackend {
        DryRunBackend { inner }
    }
}

impl Backend for DryRunBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn is_repository(&self) -> Result<bool> {
        self.inner.is_repository()
    }
    fn create(&self) -> Result<()> {
        Ok(())
    }
    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>> {
        self.inner.list(kind)
    }
    fn read(&self, kind: FileKind, id: &Id) -> Result<Vec<u8>> {
        self.inner.read(kind, id)
    }
    fn read_range(&self, kind: FileKind, id: &Id, offset: u64, len: u32) -> Result<Vec<u8>> {
        self.inner.read_range(kind, id, offset, len)
    }
    fn write(&self, _kind: FileKind, _id: &Id, _data: &[u8]) -> Result<()> {
        Ok(())
    }
    fn remove(&self, _kind: FileKind, _id: &Id) -> Result<()> {
        Ok(())
    }
}
