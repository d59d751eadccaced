//! Small snapshot files handed to the kernel's page cache before they are
//! read.
//!
//! Reading a small file through FUSE costs round trips, not bytes: OPEN,
//! READ, a GETATTR (the kernel drops a file's atime after every READ unless
//! the whole mount is read-only, and `tar` or `cp` stat the file after
//! reading it) and RELEASE. When a small file of a snapshot folder is
//! opened, the small files after it are decrypted on a background thread
//! and stored into the kernel's page cache (FUSE_NOTIFY_STORE): their reads
//! then come from memory, with neither READ nor GETATTR. Listing a folder
//! alone pushes nothing; a file read ahead but never opened costs page
//! cache the kernel reclaims first.

use std::io;
use std::num::NonZeroUsize;
use std::sync::{Arc, OnceLock};

use crossbeam_channel::{Receiver, Sender};
use lru::LruCache;
use mapache_store::tree::Node;
use parking_lot::Mutex;

use crate::blob_cache::BlobCache;
use crate::file_reader::FileContent;
use crate::namespace::Namespace;

/// Files larger than this are read with READ requests (the kernel's own
/// read-ahead makes those few per file).
pub const MAX_FILE: u64 = 128 << 10;
/// Files pushed ahead of the one opened, at most.
const WINDOW_FILES: usize = 64;
/// Inodes remembered as pushed: enough for many windows in flight, small
/// enough to cost nothing.
const REMEMBERED: usize = 64 << 10;

/// Hands `data` to the kernel as the content of inode `ino` from offset 0.
pub type Store = dyn Fn(u64, &[u8]) -> io::Result<()> + Send + Sync;

/// Pushes the files that follow an opened small file of a snapshot folder.
pub struct PagePusher {
    namespace: Arc<Namespace>,
    jobs: Sender<Vec<(u64, Arc<Node>)>>,
    /// Inodes pushed or queued; `true` marks the one whose opening starts
    /// the next window (half-way through the current one, so the next
    /// window is ready before the reader gets there).
    pushed: Mutex<LruCache<u64, bool>>,
    store: Arc<OnceLock<Box<Store>>>,
}

impl PagePusher {
    /// A pusher reading through `cache` on one background thread; nothing
    /// is pushed until [`PagePusher::connect`] says how.
    pub fn new(namespace: Arc<Namespace>, cache: Arc<BlobCache>) -> PagePusher {
        let (jobs, queue) = crossbeam_channel::bounded(16);
        let store: Arc<OnceLock<Box<Store>>> = Arc::new(OnceLock::new());
        let worker_store = store.clone();
        std::thread::Builder::new()
            .name("page-push".into())
            .spawn(move || push_loop(&queue, &cache, &worker_store))
            .expect("spawning a thread");
        PagePusher {
            namespace,
            jobs,
            pushed: Mutex::new(LruCache::new(
                NonZeroUsize::new(REMEMBERED).expect("non-zero"),
            )),
            store,
        }
    }

    /// Sets how data reaches the kernel (known once the mount is up).
    pub fn connect(&self, store: Box<Store>) {
        let _ = self.store.set(store);
    }

    /// Snapshot file `ino` of `size` bytes was opened: push the small files
    /// after it, unless an earlier window already covers them.
    pub fn opened(&self, ino: u64, size: u64) {
        if size > MAX_FILE || self.store.get().is_none() {
            return;
        }
        match self.pushed.lock().get_mut(&ino) {
            Some(mark) if *mark => *mark = false,
            Some(_) => return,
            None => {}
        }
        let following = self.namespace.files_after(ino, MAX_FILE, WINDOW_FILES);
        let batch: Vec<(u64, Arc<Node>)> = {
            let mut pushed = self.pushed.lock();
            let fresh: Vec<_> = following
                .into_iter()
                .filter(|(ino, _)| !pushed.contains(ino))
                .collect();
            for (i, (ino, _)) in fresh.iter().enumerate() {
                pushed.put(*ino, i == fresh.len() / 2);
            }
            fresh
        };
        if !batch.is_empty() {
            // A full queue means the pusher is behind: skip; those files
            // are read the usual way.
            let _ = self.jobs.try_send(batch);
        }
    }
}

fn push_loop(
    queue: &Receiver<Vec<(u64, Arc<Node>)>>,
    cache: &Arc<BlobCache>,
    store: &OnceLock<Box<Store>>,
) {
    let mut data = Vec::new();
    for batch in queue {
        let Some(store) = store.get() else { continue };
        // All blobs at once: the read-ahead workers read neighbours in a
        // pack together while this thread hands files over in order.
        let blobs: Vec<_> = batch
            .iter()
            .flat_map(|(_, node)| node.content.iter().copied())
            .collect();
        cache.prefetch(&blobs);
        for (ino, node) in &batch {
            let Ok(content) = FileContent::new(cache.repo(), node) else {
                continue;
            };
            // Failures only mean the file is read the usual way: a blob
            // that does not decrypt is reported when it is really read, and
            // the kernel refuses inodes it has already forgotten.
            if content
                .read_into(cache, 0, content.len() as u32, &mut data)
                .is_ok()
            {
                let _ = store(*ino, &data);
            }
        }
    }
}
