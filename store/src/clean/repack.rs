//! Copying the reachable blobs of partly used packs into new packs. Blobs
//! are copied sealed, as stored (their seal names the blob, not the pack),
//! after checking that each opens: a repack never spreads damage.

use std::sync::atomic::Ordering;

use super::plan::Plan;
use super::CleanProgress;
use crate::backend::FileKind;
use crate::blob::{BlobDecoder, BlobType};
use crate::error::{Error, Result};
use crate::index::IndexedPack;
use crate::pack::{self, FinishedPack, PackWriter};
use crate::repository::IndexedRepository;

/// Repacks the plan's packs to repack; returns the new packs, all durable.
pub(super) fn repack(
    repo: &IndexedRepository,
    plan: &Plan,
    progress: &CleanProgress,
) -> Result<Vec<IndexedPack>> {
    let sources: Vec<usize> = plan.to_repack().collect();
    let total: u64 = sources.iter().map(|n| plan.packs[*n].size()).sum();
    progress.repack_bytes_total.store(total, Ordering::Relaxed);
    let pack_size = repo.config().pack_size as usize;
    let mut writers = Writers {
        repo,
        pack_size,
        data: None,
        tree: None,
        written: Vec::new(),
    };
    let mut buffer = Vec::new();
    let mut decoder = BlobDecoder::new();
    for n in sources {
        let source = &plan.packs[n];
        let id = source.entry.id;
        let data = pack::read_whole(repo.backend().as_ref(), &id, source.size(), &mut buffer)?;
        for blob in &source.entry.blobs {
            if !plan.is_live_in(&blob.id, n) {
                continue;
            }
            repo.check_packed_blob(&mut decoder, source.entry.blob_type, blob, data)
                .map_err(|reason| {
                    Error::integrity(
                        FileKind::Pack,
                        id,
                        format!(
                            "blob {} {reason}; clean stopped before deleting anything \
                             (run `mapache verify`)",
                            blob.id.short()
                        ),
                    )
                })?;
            let sealed = &data[blob.offset as usize..blob.end() as usize];
            writers.add(source.entry.blob_type, blob.id, blob.raw_length, sealed)?;
        }
        progress
            .repacked_bytes
            .fetch_add(source.size(), Ordering::Relaxed);
    }
    writers.finish()
}

/// A pack being filled per blob type, and the packs written.
struct Writers<'a> {
    repo: &'a IndexedRepository,
    pack_size: usize,
    data: Option<PackWriter>,
    tree: Option<PackWriter>,
    written: Vec<IndexedPack>,
}

impl Writers<'_> {
    fn add(
        &mut self,
        blob_type: BlobType,
        id: crate::id::BlobId,
        raw_length: u32,
        sealed: &[u8],
    ) -> Result<()> {
        let slot = match blob_type {
            BlobType::Data => &mut self.data,
            BlobType::Tree => &mut self.tree,
        };
        let writer = slot.get_or_insert_with(|| {
            PackWriter::with_buffer(blob_type, Vec::with_capacity(self.pack_size + (1 << 20)))
        });
        writer.add(id, raw_length, |out| out.extend_from_slice(sealed));
        if writer.len() >= self.pack_size {
            let full = slot.take().expect("just filled");
            self.write(full)?;
        }
        Ok(())
    }

    fn write(&mut self, writer: PackWriter) -> Result<()> {
        let FinishedPack {
            id,
            blob_type,
            data,
            blobs,
        } = writer.finish(&self.repo.keys().cipher);
        self.repo.backend().write(FileKind::Pack, &id.0, &data)?;
        self.written.push(IndexedPack {
            id,
            blob_type,
            blobs,
        });
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<IndexedPack>> {
        for writer in [self.data.take(), self.tree.take()].into_iter().flatten() {
            self.write(writer)?;
        }
        Ok(self.written)
    }
}
