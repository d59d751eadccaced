//! Random access into a file stored as a list of blobs.

use std::sync::Arc;

use mapache_store::tree::Node;
use mapache_store::{BlobId, IndexedRepository};

use crate::blob_cache::BlobCache;
use crate::error::{FsError, FsResult};

/// How many blobs past the last one read are fetched ahead.
const READ_AHEAD_BLOBS: usize = 8;

/// A file's blobs and where each ends, so that a read at any offset finds
/// its blob by binary search instead of walking from the start.
#[derive(Debug)]
pub struct FileContent {
    blobs: Vec<BlobId>,
    ends: Vec<u64>,
}

impl FileContent {
    /// Looks up the length of every blob of `node`.
    pub fn new(repo: &IndexedRepository, node: &Node) -> FsResult<FileContent> {
        let index = repo.index();
        let mut ends = Vec::with_capacity(node.content.len());
        let mut end = 0u64;
        for id in &node.content {
            let location = index.get(id).ok_or_else(|| {
                FsError::Store(mapache_store::Error::NotFound {
                    what: format!("blob {id} of {} not found in the index", node.name_lossy()),
                })
            })?;
            end += location.raw_length as u64;
            ends.push(end);
        }
        Ok(FileContent {
            blobs: node.content.clone(),
            ends,
        })
    }

    /// The file's length.
    pub fn len(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads up to `size` bytes at `offset`; short only at the end of the file.
    pub fn read(&self, cache: &Arc<BlobCache>, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let mut out = Vec::new();
        self.read_into(cache, offset, size, &mut out)?;
        Ok(out)
    }

    /// Reads up to `size` bytes at `offset` and hands them to `reply`: a
    /// read within one blob (most are) straight from the cached blob, one
    /// across blobs gathered into `out` first. Copying every read into a
    /// buffer was a memmove of everything read through the mount.
    pub fn read_with<T>(
        &self,
        cache: &Arc<BlobCache>,
        offset: u64,
        size: u32,
        out: &mut Vec<u8>,
        reply: impl FnOnce(&[u8]) -> T,
    ) -> FsResult<T> {
        let end = self.len().min(offset.saturating_add(size as u64));
        let blob = self.ends.partition_point(|&e| e <= offset);
        if offset < end && end <= self.ends[blob] {
            let start = if blob == 0 { 0 } else { self.ends[blob - 1] };
            let data = cache.get(&self.blobs[blob])?;
            self.read_ahead(cache, blob + 1);
            return Ok(reply(
                &data[(offset - start) as usize..(end - start) as usize],
            ));
        }
        self.read_into(cache, offset, size, out)?;
        Ok(reply(out))
    }

    /// Queues the blobs from number `next` on to be fetched ahead.
    fn read_ahead(&self, cache: &Arc<BlobCache>, next: usize) {
        let from = next.min(self.blobs.len());
        let to = (next + READ_AHEAD_BLOBS).min(self.blobs.len());
        cache.prefetch(&self.blobs[from..to]);
    }

    /// Like [`FileContent::read`], into `out` (replacing what it held), so
    /// that a thread answering many reads reuses one buffer.
    pub fn read_into(
        &self,
        cache: &Arc<BlobCache>,
        offset: u64,
        size: u32,
        out: &mut Vec<u8>,
    ) -> FsResult<()> {
        out.clear();
        let end = self.len().min(offset.saturating_add(size as u64));
        if offset >= end {
            return Ok(());
        }
        let mut blob = self.ends.partition_point(|&e| e <= offset);
        let mut position = offset;
        while position < end {
            let start = if blob == 0 { 0 } else { self.ends[blob - 1] };
            let data = cache.get(&self.blobs[blob])?;
            let from = (position - start) as usize;
            let to = ((end.min(self.ends[blob])) - start) as usize;
            out.extend_from_slice(&data[from..to]);
            position = start + to as u64;
            blob += 1;
        }
        self.read_ahead(cache, blob);
        Ok(())
    }
}
