//! Uploading closed files in batches without holding the staging lock.
//!
//! A batch marks its files as uploading and lets the lock go while it
//! chunks and stores them, so that the copy filling the staging area goes
//! on (with the lock held, every batch stalled all other requests). Then it
//! takes the lock again and records the content of each file whose version
//! did not change meanwhile; a file written during its upload stays dirty
//! for the next batch.

use std::fs::File;
use std::sync::Arc;

use mapache_store::BlobId;
use mapache_store::{BlobSaver, StreamError};
use parking_lot::MutexGuard;

use super::journal::Op;
use super::overlay::{Bytes, FileRef};
use super::{Inner, Staging, CHECKPOINT_FILES};
use crate::error::{FsError, FsResult};

/// Closed files being uploaded outside the staging lock.
pub(super) struct Batch {
    uploads: Vec<Upload>,
    saver: Arc<BlobSaver>,
    /// The chunker's read buffer, borrowed from `Inner`.
    buffer: Vec<u8>,
    /// What each upload stored: blob ids and size, in `uploads` order.
    contents: Vec<(Vec<BlobId>, u64)>,
}

/// A file being uploaded outside the staging lock.
struct Upload {
    file: FileRef,
    fid: u64,
    /// Its version when the upload began.
    version: u64,
    source: Source,
}

/// Where an upload reads a file's bytes.
pub(super) enum Source {
    /// A copy of a small file's bytes.
    Inline(Vec<u8>),
    /// Its local data file.
    Local(u64),
}

impl Source {
    /// Where to read `bytes` for an upload (none when they are stored).
    pub(super) fn of(bytes: &Bytes) -> Option<Source> {
        match bytes {
            Bytes::Inline(bytes) => Some(Source::Inline(bytes.clone())),
            Bytes::Local { number, .. } => Some(Source::Local(*number)),
            Bytes::Stored => None,
        }
    }
}

impl Staging {
    /// Uploads the closed files with new data, chunking them without
    /// holding the staging lock so that copying in goes on meanwhile (with
    /// the lock held, each batch stalled every other request). A file
    /// written again during its upload stays dirty for the next batch.
    pub(super) fn upload_closed_files(&self, inner: MutexGuard<'_, Inner>) -> FsResult<()> {
        match self.start_batch(inner) {
            Some(mut batch) => {
                let failure = self.chunk_batch(&mut batch);
                self.finish_batch(batch, failure)
            }
            None => Ok(()),
        }
    }

    /// Marks the closed dirty files as uploading and lets the lock go.
    pub(super) fn start_batch(&self, mut inner: MutexGuard<'_, Inner>) -> Option<Batch> {
        self.drop_unreachable(&mut inner);
        let uploads: Vec<Upload> = inner
            .overlay
            .dirty_files()
            .into_iter()
            .filter_map(|file| {
                let mut f = file.lock();
                if f.in_use() || f.uploading {
                    return None;
                }
                let source = Source::of(&f.bytes)?;
                f.uploading = true;
                let (fid, version) = (f.fid, f.version);
                drop(f);
                Some(Upload {
                    file,
                    fid,
                    version,
                    source,
                })
            })
            .collect();
        inner.pending_files = 0;
        inner.pending_bytes = 0;
        if uploads.is_empty() {
            return None;
        }
        inner.uploads_in_flight += 1;
        Some(Batch {
            saver: inner.saver.clone(),
            buffer: std::mem::take(&mut inner.buffer),
            contents: Vec::with_capacity(uploads.len()),
            uploads,
        })
    }

    /// Chunks and stores the batch's files, without the lock.
    pub(super) fn chunk_batch(&self, batch: &mut Batch) -> Option<StreamError> {
        for upload in &batch.uploads {
            let result = match &upload.source {
                Source::Inline(bytes) => {
                    batch.saver.save_stream(bytes.as_slice(), &mut batch.buffer)
                }
                Source::Local(local) => match File::open(self.local_path(*local)) {
                    Ok(input) => batch.saver.save_stream(input, &mut batch.buffer),
                    Err(e) => Err(StreamError::Read(e)),
                },
            };
            match result {
                Ok(stored) => batch.contents.push(stored),
                Err(e) => return Some(e),
            }
        }
        batch.saver.flush().err().map(StreamError::Store)
    }

    /// Takes the lock again and records the content of every file not
    /// written since its upload began.
    pub(super) fn finish_batch(&self, batch: Batch, failure: Option<StreamError>) -> FsResult<()> {
        let mut inner = self.inner.lock();
        inner.buffer = batch.buffer;
        inner.uploads_in_flight -= 1;
        for upload in &batch.uploads {
            upload.file.lock().uploading = false;
        }
        self.uploads_done.notify_all();
        match failure {
            Some(StreamError::Read(e)) => return Err(FsError::Io(e)),
            // Only the first to see the saver fail replaces it.
            Some(StreamError::Store(e)) if Arc::ptr_eq(&inner.saver, &batch.saver) => {
                return Err(self.saver_failed(&mut inner, e))
            }
            Some(StreamError::Store(e)) => return Err(FsError::Store(e)),
            None => {}
        }
        let blobs = batch
            .contents
            .iter()
            .flat_map(|(content, _)| content.iter().copied())
            .collect();
        self.publish(&mut inner, blobs)?;
        for (upload, (content, size)) in batch.uploads.iter().zip(batch.contents) {
            let unchanged = upload.file.lock().version == upload.version;
            if !unchanged {
                continue;
            }
            let op = Op::Content {
                fid: upload.fid,
                content,
                size,
            };
            self.record_stored(&mut inner, &upload.file, op)?;
        }
        if inner.unsynced_locals.len() >= CHECKPOINT_FILES {
            self.sync_journal(&mut inner)?;
        }
        Ok(())
    }

    /// Waits until no upload runs outside the lock, so that what follows
    /// sees every file either uploaded or still dirty.
    pub(super) fn wait_for_uploads(&self, inner: &mut MutexGuard<'_, Inner>) {
        while inner.uploads_in_flight > 0 {
            self.uploads_done.wait(inner);
        }
    }
}
