//! The bytes of staged files: small new files in memory (and in the
//! journal), others in local data files of the state folder, unchanged ones
//! as stored blobs; reading, writing, truncating, and counting writers.
//! A handle of a file reaches it after its names are gone.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use mapache_store::now;
use mapache_store::BlobId;
use parking_lot::MutexGuard;

use super::journal::Op;
use super::overlay::{Bytes, Entry, FileRef};
use super::{Inner, Staging, CHECKPOINT_BYTES, CHECKPOINT_FILES, INLINE_MAX};
use crate::error::{FsError, FsResult};

impl Staging {
    /// The size of a file's current bytes (in memory, local or stored).
    pub(super) fn current_size(&self, file: &FileRef) -> FsResult<u64> {
        let f = file.lock();
        Ok(match &f.bytes {
            Bytes::Inline(inline) => inline.len() as u64,
            Bytes::Local { number, .. } => std::fs::metadata(self.local_path(*number))
                .map_err(FsError::Io)?
                .len(),
            Bytes::Stored => f.node.size,
        })
    }

    /// The local file of a file without a name, made (from its current
    /// bytes) if needed without a journal record: nothing could replay it.
    fn unrecorded_local(&self, inner: &mut Inner, file: &FileRef) -> FsResult<u64> {
        if let Some(local) = file.lock().bytes.local() {
            return Ok(local);
        }
        let (inline, content) = {
            let f = file.lock();
            (f.bytes.inline().cloned(), f.node.content.clone())
        };
        let local = inner.next_local;
        inner.next_local += 1;
        self.fill_local(local, inline.as_deref(), &content)?;
        file.lock().bytes = Bytes::Local {
            number: local,
            dirty: true,
        };
        Ok(local)
    }

    /// Creates local file `local` holding `inline`, or else the stored
    /// `content`.
    fn fill_local(&self, local: u64, inline: Option<&[u8]>, content: &[BlobId]) -> FsResult<()> {
        let out = File::create(self.local_path(local)).map_err(FsError::Io)?;
        if let Some(bytes) = inline {
            out.write_all_at(bytes, 0).map_err(FsError::Io)?;
            return Ok(());
        }
        let mut offset = 0u64;
        for id in content {
            let data = self.repo.read_blob(id)?;
            out.write_all_at(&data, offset).map_err(FsError::Io)?;
            offset += data.len() as u64;
        }
        Ok(())
    }

    /// Gives the file at `path` a local data file holding its current
    /// content (fetched from the repository unless `truncate`), and
    /// returns it.
    fn make_local(
        &self,
        inner: &mut Inner,
        path: &[u8],
        file: &FileRef,
        truncate: bool,
    ) -> FsResult<u64> {
        let (needs_local, needs_dirty, fid, content, inline) = {
            let f = file.lock();
            (
                f.bytes.local().is_none(),
                !f.bytes.is_dirty(),
                f.fid,
                f.node.content.clone(),
                f.bytes.inline().cloned(),
            )
        };
        if !needs_local && !needs_dirty {
            return Ok(file.lock().bytes.local().expect("has a local file"));
        }
        let local = match file.lock().bytes.local() {
            Some(local) => local,
            None => {
                let local = inner.next_local;
                inner.next_local += 1;
                if truncate {
                    self.fill_local(local, Some(&[]), &[])?;
                } else {
                    self.fill_local(local, inline.as_deref(), &content)?;
                }
                local
            }
        };
        let fid = if fid == 0 {
            inner.overlay.next_fid
        } else {
            fid
        };
        self.record(
            inner,
            Op::Local {
                path: path.to_vec(),
                fid,
                local,
            },
        )?;
        Ok(local)
    }

    /// Writes `data` at `offset` into file `entry`; also into one whose
    /// last name is gone (unlinked while open, as POSIX allows), whose
    /// bytes then stay in memory or in its local file, reachable through
    /// the handle.
    pub fn write(&self, entry: &Entry, offset: u64, data: &[u8]) -> FsResult<usize> {
        let mut inner = self.inner.lock();
        let file = entry.file()?;
        inner.last_change = Some(std::time::Instant::now());
        let inline_fid = {
            let f = file.lock();
            f.bytes.inline().and(Some(f.fid))
        };
        if let Some(fid) = inline_fid {
            if offset + data.len() as u64 <= INLINE_MAX {
                self.record(
                    &mut inner,
                    Op::Write {
                        fid,
                        offset,
                        data: data.to_vec(),
                    },
                )?;
                return Ok(data.len());
            }
        }
        let local = self.writable_local(&mut inner, entry, false)?;
        let out = inner.local_file(&self.dir, local)?;
        out.write_all_at(data, offset).map_err(FsError::Io)?;
        let mut f = file.lock();
        f.version += 1;
        f.node.mtime = now();
        f.node.ctime = f.node.mtime;
        Ok(data.len())
    }

    /// The local data file the bytes of file `entry` change in, holding
    /// its current content (but for `truncate`). For a file with a name the
    /// journal records it; one without a name gets it unrecorded: nothing
    /// could replay it.
    fn writable_local(&self, inner: &mut Inner, entry: &Entry, truncate: bool) -> FsResult<u64> {
        let file = entry.file()?;
        if let Some(path) = entry.path() {
            return self.make_local(inner, &path, file, truncate);
        }
        let (fid, links) = {
            let f = file.lock();
            (f.fid, f.node.links)
        };
        if fid == 0 {
            // A base file never changed here has no journal record, and
            // with no name left nothing could replay one: its bytes live
            // in an unrecorded local copy for as long as it is open, as an
            // unlinked file's do on any file system, and there is nothing
            // to upload. A base hard link may still have names in folders
            // not loaded yet, which would have to show the bytes after a
            // restart too: refused.
            if links > 1 {
                return Err(FsError::NotFound);
            }
            let number = self.unrecorded_local(inner, file)?;
            file.lock().bytes = Bytes::Local {
                number,
                dirty: false,
            };
            return Ok(number);
        }
        self.unrecorded_local(inner, file)
    }

    /// Makes file `entry` durable in the repository, whatever its names
    /// are now.
    pub fn fsync(&self, entry: &Entry) -> FsResult<()> {
        let mut inner = self.inner.lock();
        self.upload(&mut inner, std::slice::from_ref(entry.file()?))?;
        self.sync_journal(&mut inner)
    }

    /// Sets the length of file `entry` (with or without a name, as
    /// [`Staging::write`]).
    pub fn truncate(&self, entry: &Entry, size: u64) -> FsResult<()> {
        let mut inner = self.inner.lock();
        let file = entry.file()?;
        inner.last_change = Some(std::time::Instant::now());
        let inline_fid = {
            let f = file.lock();
            f.bytes.inline().and(Some(f.fid))
        };
        if let Some(fid) = inline_fid.filter(|_| size <= INLINE_MAX) {
            return self.record(&mut inner, Op::Resize { fid, size });
        }
        let local = self.writable_local(&mut inner, entry, size == 0)?;
        inner
            .local_file(&self.dir, local)?
            .set_len(size)
            .map_err(FsError::Io)?;
        let mut f = file.lock();
        f.version += 1;
        f.node.mtime = now();
        f.node.ctime = f.node.mtime;
        Ok(())
    }

    /// Reads up to `size` bytes at `offset` of file `entry` (also of one
    /// whose names are gone).
    pub fn read(&self, entry: &Entry, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let inner = self.inner.lock();
        self.read_file(inner, entry.file()?, offset, size)
    }

    fn read_file(
        &self,
        mut inner: MutexGuard<'_, Inner>,
        file: &FileRef,
        offset: u64,
        size: u32,
    ) -> FsResult<Vec<u8>> {
        if let Bytes::Inline(bytes) = &file.lock().bytes {
            let start = (offset as usize).min(bytes.len());
            let end = (start + size as usize).min(bytes.len());
            return Ok(bytes[start..end].to_vec());
        }
        let local = file.lock().bytes.local();
        if let Some(local) = local {
            let input = inner.local_file(&self.dir, local)?;
            drop(inner);
            let mut buf = vec![0u8; size as usize];
            let mut filled = 0;
            while filled < buf.len() {
                match input
                    .read_at(&mut buf[filled..], offset + filled as u64)
                    .map_err(FsError::Io)?
                {
                    0 => break,
                    n => filled += n,
                }
            }
            buf.truncate(filled);
            return Ok(buf);
        }
        drop(inner);
        let content = {
            let mut f = file.lock();
            match &f.stored {
                Some(content) => content.clone(),
                None => {
                    let content = Arc::new(crate::FileContent::new(&self.repo, &f.node)?);
                    f.stored = Some(content.clone());
                    content
                }
            }
        };
        content.read(&self.cache, offset, size)
    }

    /// Notes a writer of file `entry` opening (`true`) or closing. A closed
    /// file with new data is uploaded at the next checkpoint.
    pub fn writer(&self, entry: &Entry, opening: bool) -> FsResult<()> {
        let inner = self.inner.lock();
        self.count_writer(inner, entry.file()?, opening)
    }

    /// Notes a write into file `entry` by a writer with no handle counted
    /// by [`Staging::writer`]: uploads leave the file alone for a while.
    pub fn loose_write(&self, entry: &Entry) -> FsResult<()> {
        entry.file()?.lock().loose_write = Some(std::time::Instant::now());
        Ok(())
    }

    fn count_writer(
        &self,
        mut inner: MutexGuard<'_, Inner>,
        file: &FileRef,
        opening: bool,
    ) -> FsResult<()> {
        let dirty_closed = {
            let mut f = file.lock();
            if opening {
                f.writers += 1;
                false
            } else {
                f.writers = f.writers.saturating_sub(1);
                f.writers == 0 && f.bytes.is_dirty()
            }
        };
        if dirty_closed {
            inner.pending_files += 1;
            inner.pending_bytes += self.current_size(file).unwrap_or(0);
            if inner.pending_files >= CHECKPOINT_FILES || inner.pending_bytes >= CHECKPOINT_BYTES {
                return self.upload_closed_files(inner);
            }
        }
        Ok(())
    }
}
