//! Decrypted blobs, kept in an LRU bounded by bytes, with read-ahead.
//!
//! Snapshot content never changes, so a blob once decrypted can serve every
//! later read of any file that contains it. Read-ahead fetches the next
//! blobs of a file, and the first blobs of a listed folder's files, on
//! background threads while the reader consumes the current one. It reads
//! neighbouring blobs of a pack in one request (small files of a folder
//! usually sit side by side), as a restore does.

use std::collections::HashSet;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use lru::LruCache;
use mapache_store::backend::Access;
use mapache_store::ranged_reads;
use mapache_store::BlobDecoder;
use mapache_store::BlobLocation;
use mapache_store::{BlobId, IndexedRepository};
use parking_lot::{Condvar, Mutex};

use crate::error::FsResult;

/// Read-ahead work is handed out in batches of about this many plaintext
/// bytes: large enough that neighbouring small blobs share one read, small
/// enough that both workers get some and a reader waiting for the first
/// blob of a batch does not wait for a long one.
const BATCH_BYTES: u64 = 256 << 10;
/// Blobs further apart in a pack are read separately.
const MAX_GAP: u32 = 64 << 10;
/// Upper bound of one read.
const MAX_READ: u32 = 4 << 20;
/// Buffers of evicted blobs kept for the next ones.
const SPARE_BUFFERS: usize = 8;
/// Blobs at least this large get recycled buffers: glibc serves smaller
/// ones from its heaps without a fresh mapping.
const RECYCLED_FROM: usize = 128 << 10;

struct State {
    lru: LruCache<BlobId, Arc<Vec<u8>>>,
    bytes: usize,
    loading: HashSet<BlobId>,
    /// Buffers of evicted blobs. Blobs average 1 MiB, above glibc's mmap
    /// threshold: a fresh buffer per blob was a fresh mapping whose pages
    /// all faulted in, and unmapping it again on eviction (a tenth of the
    /// CPU time of reading large files through the mount).
    spare: Vec<Vec<u8>>,
}

impl State {
    /// Caches `data` as blob `id`, evicting the least recently used blobs
    /// beyond `capacity` bytes (of memory held, not of blob length).
    fn insert(&mut self, id: BlobId, data: Arc<Vec<u8>>, capacity: usize) {
        self.bytes += data.capacity();
        if let Some(old) = self.lru.put(id, data) {
            self.bytes -= old.capacity();
        }
        while self.bytes > capacity {
            match self.lru.pop_lru() {
                Some((_, old)) => {
                    self.bytes -= old.capacity();
                    if let Ok(buffer) = Arc::try_unwrap(old) {
                        self.keep_spare(buffer);
                    }
                }
                None => break,
            }
        }
    }

    fn keep_spare(&mut self, mut buffer: Vec<u8>) {
        if buffer.capacity() >= RECYCLED_FROM && self.spare.len() < SPARE_BUFFERS {
            buffer.clear();
            self.spare.push(buffer);
        }
    }

    /// An empty buffer for `len` bytes: for a large blob the smallest
    /// spare one large enough, or a new one (rounded up, so that it fits
    /// later blobs too; the smallest spare makes room for it).
    fn buffer_for(&mut self, len: usize) -> Vec<u8> {
        if len < RECYCLED_FROM {
            // Exactly the size: a cache of many small blobs must not hold a
            // rounded-up megabyte for each.
            return Vec::with_capacity(len);
        }
        let fitting = (0..self.spare.len())
            .filter(|&i| self.spare[i].capacity() >= len)
            .min_by_key(|&i| self.spare[i].capacity());
        if let Some(i) = fitting {
            return self.spare.swap_remove(i);
        }
        if let Some(i) = (0..self.spare.len()).min_by_key(|&i| self.spare[i].capacity()) {
            self.spare.swap_remove(i);
        }
        Vec::with_capacity(len.next_multiple_of(1 << 20))
    }
}

/// A shared cache of decrypted blobs.
pub struct BlobCache {
    repo: Arc<IndexedRepository>,
    state: Mutex<State>,
    loaded: Condvar,
    capacity_bytes: usize,
    prefetch: Sender<Vec<(BlobId, BlobLocation)>>,
}

impl BlobCache {
    /// A cache holding up to `capacity_bytes` of plaintext, with
    /// `prefetch_threads` read-ahead workers.
    pub fn new(
        repo: Arc<IndexedRepository>,
        capacity_bytes: usize,
        prefetch_threads: usize,
    ) -> Arc<BlobCache> {
        let (prefetch, requests) = crossbeam_channel::bounded(256);
        let cache = Arc::new(BlobCache {
            repo,
            state: Mutex::new(State {
                lru: LruCache::unbounded(),
                bytes: 0,
                loading: HashSet::new(),
                spare: Vec::new(),
            }),
            loaded: Condvar::new(),
            capacity_bytes,
            prefetch,
        });
        for n in 0..prefetch_threads {
            let weak = Arc::downgrade(&cache);
            let requests: Receiver<Vec<(BlobId, BlobLocation)>> = requests.clone();
            std::thread::Builder::new()
                .name(format!("readahead-{n}"))
                .spawn(move || {
                    let mut decoder = BlobDecoder::new();
                    for batch in requests {
                        let Some(cache) = weak.upgrade() else { break };
                        cache.fetch_batch(batch, &mut decoder);
                    }
                })
                .expect("spawning a thread");
        }
        cache
    }

    /// The repository behind the cache.
    pub fn repo(&self) -> &Arc<IndexedRepository> {
        &self.repo
    }

    /// Asks the read-ahead workers to load `ids` if they are not cached.
    pub fn prefetch(&self, ids: &[BlobId]) {
        let wanted: Vec<BlobId> = {
            let state = self.state.lock();
            ids.iter()
                .filter(|id| !state.lru.contains(id) && !state.loading.contains(id))
                .copied()
                .collect()
        };
        let located: Vec<(BlobId, BlobLocation)> = {
            let index = self.repo.index();
            wanted
                .iter()
                .filter_map(|id| index.get(id).map(|location| (*id, location)))
                .collect()
        };
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        for (id, location) in located {
            batch_bytes += u64::from(location.raw_length);
            batch.push((id, location));
            if batch_bytes >= BATCH_BYTES {
                // When the queue is full, read-ahead is simply skipped.
                let _ = self.prefetch.try_send(std::mem::take(&mut batch));
                batch_bytes = 0;
            }
        }
        if !batch.is_empty() {
            let _ = self.prefetch.try_send(batch);
        }
    }

    /// Loads a batch of blobs that nobody else holds or fetches, reading
    /// neighbours in a pack together. Failures are not reported: the real
    /// read will try again and say what went wrong.
    fn fetch_batch(&self, mut batch: Vec<(BlobId, BlobLocation)>, decoder: &mut BlobDecoder) {
        {
            let mut state = self.state.lock();
            batch.retain(|(id, _)| !state.lru.contains(id) && state.loading.insert(*id));
        }
        batch.sort_by_key(|(_, location)| (location.pack, location.offset));
        for same_pack in batch.chunk_by(|a, b| a.1.pack == b.1.pack) {
            for run in ranged_reads(same_pack, MAX_GAP, MAX_READ) {
                let opened: Result<(), std::convert::Infallible> =
                    self.repo
                        .open_run(run, Access::Repeated, decoder, |id, data| {
                            let copy = data.map(|data| {
                                let mut buffer = self.state.lock().buffer_for(data.len());
                                buffer.extend_from_slice(data);
                                buffer
                            });
                            let mut state = self.state.lock();
                            state.loading.remove(id);
                            if let Ok(copy) = copy {
                                state.insert(*id, Arc::new(copy), self.capacity_bytes);
                            }
                            self.loaded.notify_all();
                            Ok(())
                        });
                let Ok(()) = opened;
            }
        }
    }

    /// The plaintext of blob `id`, from the cache or the repository.
    pub fn get(&self, id: &BlobId) -> FsResult<Arc<Vec<u8>>> {
        thread_local! {
            // One zstd context per thread: creating one per blob showed up
            // in profiles of reads through the mount.
            static DECODER: std::cell::RefCell<BlobDecoder> = std::cell::RefCell::new(BlobDecoder::new());
        }
        DECODER.with(|decoder| self.get_with(id, &mut decoder.borrow_mut()))
    }

    fn get_with(&self, id: &BlobId, decoder: &mut BlobDecoder) -> FsResult<Arc<Vec<u8>>> {
        {
            let mut state = self.state.lock();
            loop {
                if let Some(data) = state.lru.get(id) {
                    return Ok(data.clone());
                }
                if !state.loading.contains(id) {
                    break;
                }
                // Another thread is fetching it: wait instead of reading twice.
                self.loaded.wait(&mut state);
            }
            state.loading.insert(*id);
        }
        let result = self.repo.read_blob_with(id, decoder);
        let mut state = self.state.lock();
        state.loading.remove(id);
        self.loaded.notify_all();
        let data = Arc::new(result?);
        state.insert(*id, data.clone(), self.capacity_bytes);
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            lru: LruCache::unbounded(),
            bytes: 0,
            loading: HashSet::new(),
            spare: Vec::new(),
        }
    }

    fn id(n: u8) -> BlobId {
        BlobId(mapache_store::Id([n; 32]))
    }

    #[test]
    fn small_blobs_hold_their_size_and_large_ones_recycle_buffers() {
        let mut state = state();
        // Many small blobs: each holds about its own length, so a cache of
        // 1 MiB keeps them all instead of one rounded-up megabyte.
        for n in 0..100 {
            let mut buffer = state.buffer_for(10);
            buffer.extend_from_slice(&[n; 10]);
            state.insert(id(n), Arc::new(buffer), 1 << 20);
        }
        assert_eq!(state.lru.len(), 100);
        assert!(state.bytes < 100 * 64, "{} bytes held", state.bytes);

        // A large blob evicted hands its buffer to the next large one.
        let mut big = state.buffer_for(RECYCLED_FROM * 2);
        big.resize(RECYCLED_FROM * 2, 7);
        let pointer = big.as_ptr();
        state.insert(id(200), Arc::new(big), 1 << 20);
        state.insert(id(201), Arc::new(vec![0; 16]), 0);
        assert!(state.lru.is_empty());
        let recycled = state.buffer_for(RECYCLED_FROM + 1);
        assert_eq!(recycled.as_ptr(), pointer);
        assert_eq!(state.buffer_for(10).capacity(), 10);
    }
}
