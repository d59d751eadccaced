//! Decrypted blobs, kept in an LRU bounded by bytes, with read-ahead.
//!
//! Snapshot content never changes, so a blob once decrypted can serve every
//! later read of any file that contains it. Read-ahead fetches the next
//! blobs of a file on background threads while the reader consumes the
//! current one.

use std::collections::HashSet;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use lru::LruCache;
use mapache_store::blob::BlobDecoder;
use mapache_store::{BlobId, IndexedRepository};
use parking_lot::{Condvar, Mutex};

use crate::error::FsResult;

struct State {
    lru: LruCache<BlobId, Arc<Vec<u8>>>,
    bytes: usize,
    loading: HashSet<BlobId>,
}

/// A shared cache of decrypted blobs.
pub struct BlobCache {
    repo: Arc<IndexedRepository>,
    state: Mutex<State>,
    loaded: Condvar,
    capacity_bytes: usize,
    prefetch: Sender<BlobId>,
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
            }),
            loaded: Condvar::new(),
            capacity_bytes,
            prefetch,
        });
        for n in 0..prefetch_threads {
            let weak = Arc::downgrade(&cache);
            let requests: Receiver<BlobId> = requests.clone();
            std::thread::Builder::new()
                .name(format!("readahead-{n}"))
                .spawn(move || {
                    let mut decoder = BlobDecoder::new();
                    for id in requests {
                        let Some(cache) = weak.upgrade() else { break };
                        // A failed read-ahead is not an error: the real read
                        // will try again and report it.
                        let _ = cache.get_with(&id, &mut decoder);
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
        let state = self.state.lock();
        for id in ids {
            if !state.lru.contains(id) && !state.loading.contains(id) {
                // When the queue is full, read-ahead is simply skipped.
                let _ = self.prefetch.try_send(*id);
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
        state.bytes += data.len();
        state.lru.put(*id, data.clone());
        while state.bytes > self.capacity_bytes {
            match state.lru.pop_lru() {
                Some((_, old)) => state.bytes -= old.len(),
                None => break,
            }
        }
        Ok(data)
    }
}
