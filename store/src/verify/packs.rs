//! The index against the packs: what the listing shows, and with
//! `--read-data` what the packs hold.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::{Problem, VerifyProgress, VerifyReport};
use crate::backend::FileKind;
use crate::blob::BlobDecoder;
use crate::error::Result;
use crate::id::{BlobId, Id, PackId};
use crate::index::{IndexFile, IndexedPack};
use crate::pack::{self, min_pack_size, read_footer, PackedBlob};
use crate::repository::{IndexFiles, IndexedRepository, Repository};

/// Why each damaged blob cannot be read, by blob.
pub(super) type DamagedBlobs = HashMap<BlobId, String>;

/// The index files in force, checked against the pack listing.
pub(super) struct CheckedIndex {
    files: Vec<(Id, IndexFile)>,
    listed: HashSet<Id>,
    pack_sizes: HashMap<PackId, u64>,
    /// Each indexed pack: (file, pack) position in `files`.
    packs: HashMap<PackId, (usize, usize)>,
    /// Blobs of missing or truncated packs.
    pub(super) damaged: DamagedBlobs,
}

impl CheckedIndex {
    fn entry(&self, pack: &PackId) -> Option<&IndexedPack> {
        self.packs
            .get(pack)
            .map(|&(file, at)| &self.files[file].1.packs[at])
    }

    /// Packs the index lists that exist, with their sizes, by id.
    pub(super) fn readable_packs(&self) -> Vec<(PackId, u64)> {
        let mut out: Vec<(PackId, u64)> = self
            .packs
            .keys()
            .filter_map(|id| self.pack_sizes.get(id).map(|size| (*id, *size)))
            .collect();
        out.sort_unstable();
        out
    }

    /// The repository with this index loaded.
    pub(super) fn into_indexed(self, repo: Repository) -> IndexedRepository {
        repo.with_index_files(IndexFiles {
            in_force: self.files,
            listed: self.listed,
        })
    }
}

/// Reads the pack listing and every index file, and checks them against
/// each other.
pub(super) fn check_index(repo: &Repository, report: &mut VerifyReport) -> Result<CheckedIndex> {
    let pack_sizes = repo.pack_sizes()?;
    report.packs = pack_sizes.len() as u64;
    let IndexFiles { in_force, listed } = repo.read_index_files()?;
    report.index_files = listed.len() as u64;
    for skipped in repo.skipped().take_kind(FileKind::Index) {
        report.problems.push(Problem::DamagedIndexFile {
            index: skipped.id,
            reason: skipped.reason,
        });
    }
    let mut checked = CheckedIndex {
        files: in_force,
        listed,
        pack_sizes,
        packs: HashMap::new(),
        damaged: HashMap::new(),
    };
    for (file_at, (file_id, file)) in checked.files.iter().enumerate() {
        for (at, pack) in file.packs.iter().enumerate() {
            if let Some(&(other, other_at)) = checked.packs.get(&pack.id) {
                let (other_id, other_file) = &checked.files[other];
                if other_file.packs[other_at] != *pack {
                    report.problems.push(Problem::ConflictingIndexEntries {
                        pack: pack.id,
                        index_files: [*other_id, *file_id],
                    });
                }
                continue;
            }
            checked.packs.insert(pack.id, (file_at, at));
            match checked.pack_sizes.get(&pack.id) {
                None => {
                    report.problems.push(Problem::MissingPack {
                        pack: pack.id,
                        index: *file_id,
                    });
                    for blob in &pack.blobs {
                        checked
                            .damaged
                            .insert(blob.id, format!("its pack {} is missing", pack.id.short()));
                    }
                }
                Some(&size) if size < min_pack_size(&pack.blobs) => {
                    report.problems.push(Problem::TruncatedPack {
                        pack: pack.id,
                        expected_at_least: min_pack_size(&pack.blobs),
                        size,
                    });
                    // Blobs inside what is left may still open, but the
                    // footer is gone and the rest cannot be trusted.
                    for blob in &pack.blobs {
                        checked.damaged.insert(
                            blob.id,
                            format!("its pack {} is truncated", pack.id.short()),
                        );
                    }
                }
                Some(_) => {}
            }
        }
    }
    let mut unindexed: Vec<PackId> = checked
        .pack_sizes
        .keys()
        .filter(|id| !checked.packs.contains_key(id))
        .copied()
        .collect();
    unindexed.sort_unstable();
    report.unindexed_packs = unindexed;
    Ok(checked)
}

/// Reads `selected` packs on `threads` threads; returns the blobs found
/// damaged (added to the report as problems).
pub(super) fn read_packs(
    repo: &Repository,
    checked: &CheckedIndex,
    selected: &[(PackId, u64)],
    threads: usize,
    progress: &VerifyProgress,
    report: &mut VerifyReport,
) -> DamagedBlobs {
    progress
        .packs_total
        .store(selected.len() as u64, Ordering::Relaxed);
    let next = AtomicUsize::new(0);
    let found = Mutex::new((Vec::new(), HashMap::new()));
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1).min(selected.len().max(1)) {
            scope.spawn(|| {
                let mut decoder = BlobDecoder::new();
                let mut buffer = Vec::new();
                loop {
                    let at = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(pack, size)) = selected.get(at) else {
                        break;
                    };
                    let entry = checked.entry(&pack).expect("selected from the index");
                    let (problems, damaged) =
                        read_pack(repo, entry, size, &mut decoder, &mut buffer);
                    progress.packs_read.fetch_add(1, Ordering::Relaxed);
                    progress.bytes_read.fetch_add(size, Ordering::Relaxed);
                    let mut found = found.lock();
                    found.0.extend(problems);
                    found.1.extend(damaged);
                }
            });
        }
    });
    let (mut problems, damaged) = found.into_inner();
    problems.sort_by_key(|p| p.to_string());
    report.problems.extend(problems);
    report.packs_read = selected.len() as u64;
    report.bytes_read = selected.iter().map(|(_, size)| size).sum();
    damaged
}

/// Reads one pack whole and checks its name, footer and every blob.
fn read_pack(
    repo: &Repository,
    entry: &IndexedPack,
    size: u64,
    decoder: &mut BlobDecoder,
    buffer: &mut Vec<u8>,
) -> (Vec<Problem>, Vec<(BlobId, String)>) {
    let pack = entry.id;
    let mut problems = Vec::new();
    let all_damaged = |reason: &str| -> Vec<(BlobId, String)> {
        entry
            .blobs
            .iter()
            .map(|b| (b.id, reason.to_string()))
            .collect()
    };
    let data = match pack::read_whole(repo.backend().as_ref(), &pack, size, buffer) {
        Ok(data) => data,
        Err(e) => {
            problems.push(Problem::PackFooter {
                pack,
                reason: format!("cannot be read: {e}"),
            });
            return (problems, all_damaged(&format!("its pack {}", pack.short())));
        }
    };
    let actual = Id::hash_of(data);
    if actual != pack.0 {
        problems.push(Problem::PackHashMismatch { pack, actual });
    }
    match read_footer(&repo.keys().cipher, &pack, data) {
        Err(e) => problems.push(Problem::PackFooter {
            pack,
            reason: e.to_string(),
        }),
        Ok((blob_type, footer)) => {
            let footer: HashSet<&PackedBlob> = footer.iter().collect();
            let disagreeing = entry.blobs.iter().filter(|b| !footer.contains(b)).count();
            if blob_type != entry.blob_type || disagreeing > 0 {
                problems.push(Problem::PackFooter {
                    pack,
                    reason: format!(
                        "{disagreeing} of its {} index entries disagree with its footer",
                        entry.blobs.len()
                    ),
                });
            }
        }
    }
    let mut damaged = Vec::new();
    for blob in &entry.blobs {
        let opened = repo.check_packed_blob(decoder, entry.blob_type, blob, data);
        if let Err(reason) = opened {
            problems.push(Problem::DamagedBlob {
                blob: blob.id,
                pack,
                reason,
            });
            damaged.push((blob.id, format!("damaged in pack {}", pack.short())));
        }
    }
    (problems, damaged)
}
