//! The bytes of staged files: small new files in memory (and in the
//! journal), others in local data files of the state folder, unchanged ones
//! as stored blobs; reading, writing, truncating, and counting writers.
//! Handles opened with [`Staging::open_file`] reach a file after its names
//! are gone.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use mapache_store::now;
use mapache_store::BlobId;
use parking_lot::MutexGuard;

use super::journal::Op;
use super::overlay::{Bytes, FileRef};
use super::{Inner, OpenFile, Staging, CHECKPOINT_BYTES, CHECKPOINT_FILES, INLINE_MAX};
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

    /// Writes `data` at `offset` into the file at `path`.
    pub fn write(&self, path: &[u8], offset: u64, data: &[u8]) -> FsResult<usize> {
        let mut inner = self.inner.lock();
        let file = inner.overlay.file(path)?;
        self.write_file(&mut inner, &file, Some(path), offset, data)
    }

    /// Writes into a file opened with [`Staging::open_file`] whose name is
    /// gone (unlinked while open, as POSIX allows). Its bytes stay in
    /// memory or in its local file, reachable through the handle (and any
    /// other name it still has; `fsync_open` makes them durable).
    pub fn write_unlinked(&self, file: &OpenFile, offset: u64, data: &[u8]) -> FsResult<usize> {
        let mut inner = self.inner.lock();
        self.prepare_unlinked(&mut inner, file)?;
        self.write_file(&mut inner, &file.0, None, offset, data)
    }

    /// Sets the length of a file whose name is gone, as
    /// [`Staging::write_unlinked`] writes into it.
    pub fn truncate_unlinked(&self, file: &OpenFile, size: u64) -> FsResult<()> {
        let mut inner = self.inner.lock();
        self.prepare_unlinked(&mut inner, file)?;
        self.truncate_file(&mut inner, &file.0, None, size)
    }

    /// Readies a file whose name is gone for changes to its bytes.
    fn prepare_unlinked(&self, inner: &mut Inner, file: &OpenFile) -> FsResult<()> {
        let (fid, links) = {
            let f = file.0.lock();
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
            let number = self.unrecorded_local(inner, &file.0)?;
            file.0.lock().bytes = Bytes::Local {
                number,
                dirty: false,
            };
        }
        Ok(())
    }

    /// Makes a file opened with [`Staging::open_file`] durable in the
    /// repository, whatever its names are now.
    pub fn fsync_open(&self, file: &OpenFile) -> FsResult<()> {
        let mut inner = self.inner.lock();
        self.upload(&mut inner, std::slice::from_ref(&file.0))?;
        self.sync_journal(&mut inner)
    }

    /// Writes into `file`, known by `path` if it still has one.
    fn write_file(
        &self,
        inner: &mut Inner,
        file: &FileRef,
        path: Option<&[u8]>,
        offset: u64,
        data: &[u8],
    ) -> FsResult<usize> {
        inner.last_change = Some(std::time::Instant::now());
        let inline_fid = {
            let f = file.lock();
            f.bytes.inline().and(Some(f.fid))
        };
        if let Some(fid) = inline_fid {
            if offset + data.len() as u64 <= INLINE_MAX {
                self.record(
                    inner,
                    Op::Write {
                        fid,
                        offset,
                        data: data.to_vec(),
                    },
                )?;
                return Ok(data.len());
            }
        }
        let local = match path {
            Some(path) => self.make_local(inner, path, file, false)?,
            None => self.unrecorded_local(inner, file)?,
        };
        let out = inner.local_file(&self.dir, local)?;
        out.write_all_at(data, offset).map_err(FsError::Io)?;
        let mut f = file.lock();
        f.version += 1;
        f.node.mtime = now();
        f.node.ctime = f.node.mtime;
        Ok(data.len())
    }

    /// Sets the file's length.
    pub fn truncate(&self, path: &[u8], size: u64) -> FsResult<()> {
        let mut inner = self.inner.lock();
        let file = inner.overlay.file(path)?;
        self.truncate_file(&mut inner, &file, Some(path), size)
    }

    /// Sets the length of `file`, found at `path` (`None`: it has no name
    /// left, see [`Staging::write_unlinked`]).
    fn truncate_file(
        &self,
        inner: &mut Inner,
        file: &FileRef,
        path: Option<&[u8]>,
        size: u64,
    ) -> FsResult<()> {
        inner.last_change = Some(std::time::Instant::now());
        let inline_fid = {
            let f = file.lock();
            f.bytes.inline().and(Some(f.fid))
        };
        if let Some(fid) = inline_fid.filter(|_| size <= INLINE_MAX) {
            return self.record(inner, Op::Resize { fid, size });
        }
        let local = match path {
            Some(path) => self.make_local(inner, path, file, size == 0)?,
            None => self.unrecorded_local(inner, file)?,
        };
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

    /// Reads up to `size` bytes at `offset`.
    pub fn read(&self, path: &[u8], offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let mut inner = self.inner.lock();
        let file = inner.overlay.file(path)?;
        self.read_file(inner, &file, offset, size)
    }

    /// The file at `path`, to read later even if its names go away (a file
    /// open while unlinked stays readable, as POSIX wants).
    pub fn open_file(&self, path: &[u8]) -> FsResult<OpenFile> {
        Ok(OpenFile(self.inner.lock().overlay.file(path)?))
    }

    /// Reads from a file opened with [`Staging::open_file`].
    pub fn read_open(&self, file: &OpenFile, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let inner = self.inner.lock();
        self.read_file(inner, &file.0, offset, size)
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

    /// Notes a writer opening (`true`) or closing the file. A closed file
    /// with new data is uploaded at the next checkpoint.
    pub fn writer(&self, path: &[u8], opening: bool) -> FsResult<()> {
        let mut inner = self.inner.lock();
        let file = inner.overlay.file(path)?;
        self.count_writer(inner, &file, opening)
    }

    /// Notes a write into `file` by a writer with no handle counted by
    /// [`Staging::writer_open`]: uploads leave the file alone for a while.
    pub fn loose_write(&self, file: &OpenFile) {
        file.0.lock().loose_write = Some(std::time::Instant::now());
    }

    /// Like [`Staging::writer`] for a file opened with
    /// [`Staging::open_file`], whatever its names are now.
    pub fn writer_open(&self, file: &OpenFile, opening: bool) -> FsResult<()> {
        let inner = self.inner.lock();
        self.count_writer(inner, &file.0, opening)
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
