//! The blob saver, the one write path of blobs (snapshots, staging,
//! repairs): de-duplicates blobs, seals them into packs on worker
//! threads, uploads full packs, and writes index files in pieces.
//!
//! Durability order: a pack is uploaded (atomic, fsynced) before any index
//! file names it, and the snapshot is written only after [`BlobSaver::finish`]
//! flushed the last index piece. An interrupted run therefore leaves
//! uploaded-and-indexed packs that the next run reuses, plus at most the
//! packs uploaded since the last index piece, which nothing references.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;

use crate::backend::FileKind;
use crate::blob::{BlobEncoder, BlobType};
use crate::buffer_pool::BufferPool;
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::index::{IndexFile, IndexedPack};
use crate::pack::{FinishedPack, PackWriter};
use crate::repository::IndexedRepository;

/// An index piece is written at least this often while packs are uploaded,
/// bounding what an interrupted run has to upload again...
const INDEX_FLUSH_INTERVAL: Duration = Duration::from_secs(3);
/// ... or when this many packs wait to be indexed.
const INDEX_FLUSH_PACKS: usize = 16;

/// What the saver stored.
#[derive(Debug, Default, Clone, Copy)]
pub struct SaverStats {
    /// Blobs that were new to the repository.
    pub blobs_added: u64,
    /// Their plaintext bytes.
    pub bytes_added: u64,
    /// Bytes written to packs (sealed blobs and footers).
    pub bytes_stored: u64,
    /// Packs uploaded.
    pub packs: u64,
}

struct Job {
    blob_type: BlobType,
    id: BlobId,
    data: Vec<u8>,
}

/// What the workers are sent.
enum Work {
    Blob(Job),
    /// Upload the packs under construction, then meet at the barrier.
    Flush(Arc<Barrier>),
}

struct Shared {
    repo: Arc<IndexedRepository>,
    in_flight: Mutex<HashSet<BlobId>>,
    pending: Mutex<(Vec<IndexedPack>, Instant)>,
    failed: AtomicBool,
    error: Mutex<Option<Error>>,
    /// What the first error said, for every caller after the one that
    /// took it.
    first_error: Mutex<Option<String>>,
    blobs_added: AtomicU64,
    bytes_added: AtomicU64,
    bytes_stored: AtomicU64,
    packs: AtomicU64,
    /// Chunk buffers, back from the sealers for the next chunk.
    chunk_buffers: BufferPool,
}

/// Capacity of recycled chunk buffers: room for all but the rare chunk
/// beyond twice the average size.
const CHUNK_BUFFER_CAPACITY: usize = 2 << 20;

/// Saves blobs into the repository from any number of threads.
pub struct BlobSaver {
    shared: Arc<Shared>,
    sender: Option<Sender<Work>>,
    workers: Vec<JoinHandle<()>>,
    flushing: Mutex<()>,
}

impl BlobSaver {
    /// Starts `threads` sealing workers.
    pub fn new(repo: Arc<IndexedRepository>, threads: usize) -> BlobSaver {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            repo,
            in_flight: Mutex::new(HashSet::new()),
            pending: Mutex::new((Vec::new(), Instant::now())),
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
            first_error: Mutex::new(None),
            blobs_added: AtomicU64::new(0),
            bytes_added: AtomicU64::new(0),
            bytes_stored: AtomicU64::new(0),
            packs: AtomicU64::new(0),
            // Enough for every chunk queued, being sealed or being read.
            chunk_buffers: BufferPool::new(threads * 4 + 4, CHUNK_BUFFER_CAPACITY),
        });
        let (sender, receiver) = bounded::<Work>(threads * 2);
        let workers = (0..threads)
            .map(|n| {
                let shared = shared.clone();
                let receiver = receiver.clone();
                std::thread::Builder::new()
                    .name(format!("seal-{n}"))
                    .spawn(move || worker(&shared, &receiver))
                    .expect("spawning a thread")
            })
            .collect();
        BlobSaver {
            shared,
            sender: Some(sender),
            workers,
            flushing: Mutex::new(()),
        }
    }

    /// Stores `data` as a blob unless the repository (or this run) already
    /// has it; returns its id either way.
    pub fn save(&self, blob_type: BlobType, data: Vec<u8>) -> Result<BlobId> {
        let id = BlobId(self.shared.repo.keys().hasher.hash(&data));
        self.save_with_id(blob_type, id, data)?;
        Ok(id)
    }

    /// Like [`BlobSaver::save`] for a caller that computed the id.
    pub fn save_with_id(&self, blob_type: BlobType, id: BlobId, data: Vec<u8>) -> Result<()> {
        self.check()?;
        if self.shared.repo.index().contains(&id) || !self.shared.in_flight.lock().insert(id) {
            self.shared.chunk_buffers.put(data);
            return Ok(());
        }
        let sender = self.sender.as_ref().expect("saver used after finish");
        if sender
            .send(Work::Blob(Job {
                blob_type,
                id,
                data,
            }))
            .is_err()
        {
            return Err(self.take_error());
        }
        Ok(())
    }

    fn check(&self) -> Result<()> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(self.take_error());
        }
        Ok(())
    }

    fn take_error(&self) -> Error {
        self.shared.error.lock().take().unwrap_or_else(|| {
            let first = self.shared.first_error.lock().clone().unwrap_or_default();
            Error::InvalidInput(format!("the repository could not be written: {first}"))
        })
    }

    /// Uploads the packs under construction and writes an index piece, and
    /// goes on accepting blobs. When this returns, every blob saved before
    /// is durable and indexed.
    pub fn flush(&self) -> Result<()> {
        // One flush at a time: the flush messages of two interleaved
        // flushes could leave each worker waiting at a different barrier.
        let _one_at_a_time = self.flushing.lock();
        self.check()?;
        let sender = self.sender.as_ref().expect("saver used after finish");
        let barrier = Arc::new(Barrier::new(self.workers.len() + 1));
        for _ in 0..self.workers.len() {
            // Each worker takes exactly one: after taking it, it waits at
            // the barrier until all have.
            if sender.send(Work::Flush(barrier.clone())).is_err() {
                return Err(self.take_error());
            }
        }
        barrier.wait();
        self.check()?;
        flush_index(&self.shared, true)
    }

    /// What was stored so far.
    pub fn stats(&self) -> SaverStats {
        SaverStats {
            blobs_added: self.shared.blobs_added.load(Ordering::Relaxed),
            bytes_added: self.shared.bytes_added.load(Ordering::Relaxed),
            bytes_stored: self.shared.bytes_stored.load(Ordering::Relaxed),
            packs: self.shared.packs.load(Ordering::Relaxed),
        }
    }

    /// Uploads the last packs and writes the last index piece. When this
    /// returns, every saved blob is durable and indexed.
    pub fn finish(mut self) -> Result<SaverStats> {
        drop(self.sender.take());
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        self.check()?;
        flush_index(&self.shared, true)?;
        Ok(self.stats())
    }
}

impl Drop for BlobSaver {
    fn drop(&mut self) {
        drop(self.sender.take());
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// Why [`BlobSaver::save_stream`] stopped.
#[derive(Debug)]
pub enum StreamError {
    /// Reading the source failed (the file is unreadable; others may not be).
    Read(std::io::Error),
    /// Saving failed (the repository; nothing more can be saved).
    Store(Error),
}

impl BlobSaver {
    /// Chunks `source` with the repository's chunker and saves every chunk
    /// as a data blob, reading through `buffer` (kept for the next call).
    /// Returns the blob ids in order and the number of bytes read.
    pub fn save_stream(
        &self,
        source: impl std::io::Read,
        buffer: &mut Vec<u8>,
    ) -> Result<(Vec<BlobId>, u64), StreamError> {
        let mut chunks = self
            .shared
            .repo
            .chunker()
            .chunks_with_buffer(source, std::mem::take(buffer));
        let mut content = Vec::new();
        let mut size = 0u64;
        let result = loop {
            let mut chunk = self.shared.chunk_buffers.take();
            match chunks.next_chunk_into(&mut chunk) {
                Ok(true) => {
                    size += chunk.len() as u64;
                    match self.save(BlobType::Data, chunk) {
                        Ok(id) => content.push(id),
                        Err(e) => break Err(StreamError::Store(e)),
                    }
                }
                Ok(false) => {
                    self.shared.chunk_buffers.put(chunk);
                    break Ok((content, size));
                }
                Err(e) => break Err(StreamError::Read(e)),
            }
        };
        *buffer = chunks.into_buffer();
        result
    }
}

fn worker(shared: &Shared, receiver: &Receiver<Work>) {
    let repo = &shared.repo;
    let pack_size = repo.config().pack_size as usize;
    let mut encoder = BlobEncoder::new(repo.config().compression_level);
    let mut data_pack: Option<PackWriter> = None;
    let mut tree_pack: Option<PackWriter> = None;
    // The buffer of the last uploaded data pack, reused so that its pages
    // stay mapped (tree packs are small and allocate their own).
    let mut spare_buffer: Option<Vec<u8>> = None;
    let fail = |e: Error| {
        let mut first = shared.first_error.lock();
        if first.is_none() {
            *first = Some(e.to_string());
            *shared.error.lock() = Some(e);
        }
        shared.failed.store(true, Ordering::Release);
    };
    for work in receiver {
        let job = match work {
            Work::Blob(job) => job,
            Work::Flush(barrier) => {
                for pack in [data_pack.take(), tree_pack.take()].into_iter().flatten() {
                    if !shared.failed.load(Ordering::Acquire) {
                        if let Err(e) = upload_reusing(shared, pack, &mut spare_buffer) {
                            fail(e);
                        }
                    }
                }
                barrier.wait();
                continue;
            }
        };
        if shared.failed.load(Ordering::Acquire) {
            continue; // drain so that senders never block forever
        }
        let slot = match job.blob_type {
            BlobType::Data => &mut data_pack,
            BlobType::Tree => &mut tree_pack,
        };
        let pack = slot.get_or_insert_with(|| {
            let buffer = match job.blob_type {
                BlobType::Data => spare_buffer
                    .take()
                    .unwrap_or_else(|| Vec::with_capacity(pack_size + pack_size / 8)),
                BlobType::Tree => Vec::new(),
            };
            PackWriter::with_buffer(job.blob_type, buffer)
        });
        pack.add(job.id, job.data.len() as u32, |out| {
            encoder.seal_into(&repo.keys().cipher, job.blob_type, &job.id, &job.data, out);
        });
        shared.blobs_added.fetch_add(1, Ordering::Relaxed);
        shared
            .bytes_added
            .fetch_add(job.data.len() as u64, Ordering::Relaxed);
        shared.chunk_buffers.put(job.data);
        if pack.len() >= pack_size {
            let full = slot.take().expect("just used");
            if let Err(e) = upload_reusing(shared, full, &mut spare_buffer) {
                fail(e);
            }
        }
    }
    for pack in [data_pack, tree_pack].into_iter().flatten() {
        if !shared.failed.load(Ordering::Acquire) {
            if let Err(e) = upload(shared, pack) {
                fail(e);
            }
        }
    }
}

/// Uploads `pack`; its buffer becomes `spare` if it can hold the next data
/// pack.
fn upload_reusing(shared: &Shared, pack: PackWriter, spare: &mut Option<Vec<u8>>) -> Result<()> {
    let buffer = upload(shared, pack)?;
    if buffer.capacity() >= shared.repo.config().pack_size as usize {
        *spare = Some(buffer);
    }
    Ok(())
}

/// Uploads `pack` and indexes it; returns its buffer for the next pack.
fn upload(shared: &Shared, pack: PackWriter) -> Result<Vec<u8>> {
    let repo = &shared.repo;
    let FinishedPack {
        id,
        blob_type,
        data,
        blobs,
    } = pack.finish(&repo.keys().cipher);
    repo.backend().write(FileKind::Pack, &id.0, &data)?;
    shared
        .bytes_stored
        .fetch_add(data.len() as u64, Ordering::Relaxed);
    shared.packs.fetch_add(1, Ordering::Relaxed);
    // Index first, then forget the in-flight mark: a concurrent lookup
    // always finds the blob in one of the two.
    repo.index_mut().add_pack(id, blob_type, &blobs);
    {
        let mut in_flight = shared.in_flight.lock();
        for blob in &blobs {
            in_flight.remove(&blob.id);
        }
    }
    shared.pending.lock().0.push(IndexedPack {
        id,
        blob_type,
        blobs,
    });
    flush_index(shared, false)?;
    Ok(data)
}

fn flush_index(shared: &Shared, force: bool) -> Result<()> {
    let packs = {
        let mut pending = shared.pending.lock();
        let due =
            pending.0.len() >= INDEX_FLUSH_PACKS || pending.1.elapsed() >= INDEX_FLUSH_INTERVAL;
        if pending.0.is_empty() || !(force || due) {
            return Ok(());
        }
        pending.1 = Instant::now();
        std::mem::take(&mut pending.0)
    };
    let file = IndexFile {
        supersedes: Vec::new(),
        packs,
    };
    shared.repo.save(&file)?;
    Ok(())
}
