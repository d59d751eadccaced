//! A backend wrapper that injects faults, for tests: failing writes,
//! damaged, shortened or deleted files, slow operations.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::{Access, Backend, FileInfo, FileKind};
use crate::error::{Error, Result};
use crate::id::Id;

/// Passes everything to an inner backend, except the faults it is told to
/// make.
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    /// Writes of a kind in the set fail once this many more have been
    /// let through (`usize::MAX`: none fails).
    writes_left: AtomicUsize,
    failing_kinds: Mutex<Vec<FileKind>>,
    /// Whether removals count (and fail) like writes.
    removals_count: std::sync::atomic::AtomicBool,
    delay_micros: AtomicU64,
}

impl FaultyBackend {
    /// A wrapper that, until told otherwise, changes nothing.
    pub fn new(inner: Arc<dyn Backend>) -> FaultyBackend {
        FaultyBackend {
            inner,
            writes_left: AtomicUsize::new(usize::MAX),
            failing_kinds: Mutex::new(Vec::new()),
            removals_count: std::sync::atomic::AtomicBool::new(false),
            delay_micros: AtomicU64::new(0),
        }
    }

    /// From now on, after `allowed` more writes of the given kinds succeed,
    /// every further write of those kinds fails with an I/O error (as a
    /// full disk or a dropped link would).
    pub fn fail_writes_after(&self, allowed: usize, kinds: &[FileKind]) {
        *self.failing_kinds.lock() = kinds.to_vec();
        self.writes_left.store(allowed, Ordering::SeqCst);
    }

    /// From now on, after `allowed` more changes (writes and removals of
    /// any kind) succeed, every further change fails: the repository as a
    /// process killed at that moment leaves it.
    pub fn fail_changes_after(&self, allowed: usize) {
        self.removals_count.store(true, Ordering::SeqCst);
        self.fail_writes_after(
            allowed,
            &[
                FileKind::Config,
                FileKind::Key,
                FileKind::Snapshot,
                FileKind::Index,
                FileKind::Pack,
                FileKind::Lock,
                FileKind::Forgotten,
                FileKind::Staging,
            ],
        );
    }

    /// Lets every write and removal through again.
    pub fn heal(&self) {
        self.writes_left.store(usize::MAX, Ordering::SeqCst);
        self.removals_count.store(false, Ordering::SeqCst);
    }

    /// Fails when changes of `kind` are failing and the allowance is spent.
    fn spend(&self, kind: FileKind, id: &Id) -> Result<()> {
        if !self.failing_kinds.lock().contains(&kind) {
            return Ok(());
        }
        let allowed = self
            .writes_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                (left != usize::MAX && left > 0).then(|| left - 1)
            });
        match allowed {
            Err(0) => Err(Error::io(
                format!("{}/{kind}/{id}", self.inner.location()),
                std::io::Error::other("injected write failure"),
            )),
            _ => Ok(()),
        }
    }

    /// Makes every operation wait this long first.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_micros
            .store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// Flips every bit of the byte at `offset` of a stored file (counted
    /// from the end when negative).
    pub fn flip_byte(&self, kind: FileKind, id: &Id, offset: i64) -> Result<()> {
        let mut data = self.inner.read(kind, id)?;
        let at = if offset < 0 {
            data.len() as i64 + offset
        } else {
            offset
        };
        let byte = data
            .get_mut(at as usize)
            .ok_or_else(|| Error::InvalidInput(format!("{kind} {id} has no byte {offset}")))?;
        *byte ^= 0xff;
        self.inner.write(kind, id, &data)
    }

    /// Cuts a stored file to `len` bytes.
    pub fn truncate(&self, kind: FileKind, id: &Id, len: usize) -> Result<()> {
        let mut data = self.inner.read(kind, id)?;
        data.truncate(len);
        self.inner.write(kind, id, &data)
    }

    /// Deletes a stored file.
    pub fn delete(&self, kind: FileKind, id: &Id) -> Result<()> {
        self.inner.remove(kind, id)
    }

    fn wait(&self) {
        let micros = self.delay_micros.load(Ordering::Relaxed);
        if micros > 0 {
            std::thread::sleep(Duration::from_micros(micros));
        }
    }
}

impl Backend for FaultyBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn is_repository(&self) -> Result<bool> {
        self.inner.is_repository()
    }

    fn create(&self) -> Result<()> {
        self.inner.create()
    }

    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>> {
        self.wait();
        self.inner.list(kind)
    }

    fn read(&self, kind: FileKind, id: &Id) -> Result<Vec<u8>> {
        self.wait();
        self.inner.read(kind, id)
    }

    fn read_range(&self, kind: FileKind, id: &Id, offset: u64, len: u32) -> Result<Vec<u8>> {
        self.wait();
        self.inner.read_range(kind, id, offset, len)
    }

    fn read_range_into(
        &self,
        kind: FileKind,
        id: &Id,
        offset: u64,
        len: u32,
        access: Access,
        buf: &mut Vec<u8>,
    ) -> Result<usize> {
        self.wait();
        self.inner
            .read_range_into(kind, id, offset, len, access, buf)
    }

    fn write(&self, kind: FileKind, id: &Id, data: &[u8]) -> Result<()> {
        self.wait();
        self.spend(kind, id)?;
        self.inner.write(kind, id, data)
    }

    fn remove_stale_temporaries(&self, older_than: std::time::Duration) -> Result<u64> {
        self.inner.remove_stale_temporaries(older_than)
    }

    fn remove(&self, kind: FileKind, id: &Id) -> Result<()> {
        self.wait();
        if self.removals_count.load(Ordering::SeqCst) {
            self.spend(kind, id)?;
        }
        self.inner.remove(kind, id)
    }
}
