//! Fetching blobs pack by pack and writing them into the files being
//! restored (under their temporary names).

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::plan::Planner;
use super::{target, Damaged, RestoreProgress};
use crate::backend::Access;
use crate::blob::BlobDecoder;
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};
use crate::index::BlobLocation;
use crate::pack::ranged_reads;
use crate::repository::IndexedRepository;

/// Blobs further apart than this in a pack are fetched with separate reads.
const MAX_GAP: u32 = 256 * 1024;
/// Upper bound of one ranged read: large enough that a read costs little
/// more than the transfer, small enough that the buffer each fetcher keeps
/// stays small.
const MAX_READ: u32 = 4 * 1024 * 1024;

pub(super) struct Fetched {
    pub bytes: u64,
    pub damaged: Damaged,
}

pub(super) fn fetch(
    repo: &IndexedRepository,
    planner: &Planner<'_>,
    root: &OwnedFd,
    threads: usize,
    progress: &RestoreProgress,
) -> Result<Fetched> {
    let mut by_pack: HashMap<PackId, Vec<(BlobId, BlobLocation)>> = HashMap::new();
    {
        let index = repo.index();
        for id in planner.uses.keys() {
            if let Some(location) = index.get(id) {
                by_pack
                    .entry(location.pack)
                    .or_default()
                    .push((*id, location));
            }
        }
    }
    let (sender, receiver) = crossbeam_channel::unbounded();
    for mut blobs in by_pack.into_values() {
        blobs.sort_by_key(|(_, l)| l.offset);
        let _ = sender.send(blobs);
    }
    drop(sender);
    let damaged = Mutex::new(Damaged::new());
    let bytes = AtomicU64::new(0);
    let fatal: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            let receiver = receiver.clone();
            let (damaged, bytes, fatal) = (&damaged, &bytes, &fatal);
            scope.spawn(move || {
                let mut worker = FetchWorker {
                    repo,
                    progress,
                    target: TargetFiles {
                        planner,
                        root,
                        dir: None,
                        open: None,
                    },
                    decoder: BlobDecoder::new(),
                };
                for blobs in receiver {
                    if fatal.lock().is_some() {
                        return;
                    }
                    let result = worker.restore_pack(&blobs, |file, reason| {
                        damaged.lock().entry(file).or_insert(reason);
                    });
                    match result {
                        Ok(n) => {
                            bytes.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => {
                            *fatal.lock() = Some(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = fatal.into_inner() {
        return Err(e);
    }
    Ok(Fetched {
        bytes: bytes.into_inner(),
        damaged: damaged.into_inner(),
    })
}

/// One fetching thread: its zstd context and the file it wrote last, kept
/// open because consecutive blobs usually go to the same file.
struct FetchWorker<'a> {
    repo: &'a IndexedRepository,
    progress: &'a RestoreProgress,
    target: TargetFiles<'a>,
    /// Also holds the read buffer, kept so that reading allocates nothing.
    decoder: BlobDecoder,
}

/// The files being restored, with the one written last and its folder
/// kept open.
struct TargetFiles<'a> {
    planner: &'a Planner<'a>,
    root: &'a OwnedFd,
    dir: Option<(PathBuf, OwnedFd)>,
    open: Option<(u32, File)>,
}

impl TargetFiles<'_> {
    fn write(&mut self, file: u32, offset: u64, data: &[u8]) -> Result<()> {
        let planned = &self.planner.files[file as usize];
        let place = &planned.place;
        let error = |e| Error::io(self.planner.root.join(&place.dir).join(&place.name), e);
        if self.open.as_ref().map(|(n, _)| *n) != Some(file) {
            if self.dir.as_ref().map(|(d, _)| d) != Some(&place.dir) {
                let fd = target::open_beneath(self.root.as_fd(), &place.dir).map_err(error)?;
                self.dir = Some((place.dir.clone(), fd));
            }
            let (_, dir) = self.dir.as_ref().expect("just opened");
            let handle = target::open_for_writing(dir.as_fd(), &target::temp_name(&place.name))
                .map_err(error)?;
            self.open = Some((file, handle));
        }
        let (_, handle) = self.open.as_ref().expect("just opened");
        handle.write_all_at(data, offset).map_err(error)
    }
}

impl FetchWorker<'_> {
    /// Restores the wanted blobs of one pack. Errors only when the target
    /// cannot be written; unreadable blobs go to `mark_damaged`.
    fn restore_pack(
        &mut self,
        blobs: &[(BlobId, BlobLocation)],
        mut mark_damaged: impl FnMut(u32, String),
    ) -> Result<u64> {
        let FetchWorker {
            repo,
            progress,
            target,
            decoder,
        } = self;
        let mut written = 0;
        for run in ranged_reads(blobs, MAX_GAP, MAX_READ) {
            repo.open_run(run, Access::Once, decoder, |id, data| -> Result<()> {
                let uses = &target.planner.uses[id];
                match data {
                    Ok(data) => {
                        let zero = data.iter().all(|&b| b == 0);
                        for blob_use in uses {
                            if !zero {
                                // A full disk fails the files it hits,
                                // each named; the rest goes on.
                                if let Err(e) = target.write(blob_use.file, blob_use.offset, data) {
                                    mark_damaged(blob_use.file, format!("cannot be written: {e}"));
                                    continue;
                                }
                            }
                            written += data.len() as u64;
                            progress
                                .bytes
                                .fetch_add(data.len() as u64, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        for blob_use in uses {
                            mark_damaged(blob_use.file, e.to_string());
                        }
                    }
                }
                Ok(())
            })?;
        }
        Ok(written)
    }
}
