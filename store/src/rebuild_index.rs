//! `rebuild-index`: the index made again from the packs themselves.
//!
//! Every pack's footer lists its blobs, so the index can always be rebuilt
//! from the packs: packs no index lists (a crashed run's) are added,
//! entries of packs that are missing or unreadable are dropped. With
//! `read_data` each pack is read whole and only blobs that open are
//! indexed, so damaged data stops being reused by later snapshots.
//!
//! Crash safety: the new index files are written first; then one more
//! file that lists no pack but names every old file as superseded (from
//! then on readers ignore the old files, see
//! [`crate::Repository::read_index_files`]); then the old files are
//! removed, and last that marker. Stopped anywhere, the repository has
//! either the old index, the old and new together (both true), or the new.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use serde::Serialize;

use crate::backend::FileKind;
use crate::blob::BlobDecoder;
use crate::error::{Error, Result};
use crate::id::{Id, PackId};
use crate::index::{IndexFile, IndexedPack};
use crate::pack::{self, fetch_footer, read_footer};
use crate::repository::{IndexFiles, IndexedRepository, Repository};

/// Blobs per index file written.
pub(crate) const BLOBS_PER_INDEX_FILE: usize = 65_536;

/// Counters a progress display can poll.
#[derive(Debug, Default)]
pub struct RebuildProgress {
    /// Packs to look at.
    pub packs_total: AtomicU64,
    /// Packs looked at.
    pub packs_done: AtomicU64,
}

/// A pack left out of the new index, and why.
#[derive(Clone, Debug, Serialize)]
pub struct DroppedPack {
    /// The pack.
    pub pack: PackId,
    /// Why.
    pub reason: String,
}

/// What `rebuild-index` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RebuildReport {
    /// Packs in the new index.
    pub packs: u64,
    /// Blobs in the new index.
    pub blobs: u64,
    /// Packs that no index listed before.
    pub packs_added: Vec<PackId>,
    /// Packs listed before that are missing or unreadable.
    pub packs_dropped: Vec<DroppedPack>,
    /// Damaged blobs left out of packs that are otherwise kept.
    pub blobs_dropped: u64,
    /// Damaged index files among those replaced.
    pub damaged_index_files: Vec<Id>,
    /// Index files removed.
    pub old_index_files: u64,
    /// Index files written.
    pub new_index_files: u64,
}

/// What one pack contributes to the new index.
enum Outcome {
    Indexed { pack: IndexedPack, dropped: u64 },
    Dropped(String),
}

/// Rebuilds the index of `repo` from its packs. The caller holds an
/// exclusive lock.
pub fn rebuild_index(
    repo: &Repository,
    read_data: bool,
    threads: usize,
    progress: &RebuildProgress,
) -> Result<RebuildReport> {
    let IndexFiles {
        in_force: old_files,
        listed: old_listed,
    } = repo.read_index_files()?;
    // Damaged index files are replaced like the others: said here, not
    // reported as skipped.
    let damaged_index_files: Vec<Id> = repo
        .skipped()
        .take_kind(FileKind::Index)
        .into_iter()
        .map(|s| s.id)
        .collect();
    let old: HashMap<PackId, IndexedPack> = old_files
        .into_iter()
        .flat_map(|(_, file)| file.packs)
        .map(|pack| (pack.id, pack))
        .collect();
    let mut packs = repo.backend().list(FileKind::Pack)?;
    packs.sort_unstable_by_key(|f| f.id);
    progress
        .packs_total
        .store(packs.len() as u64, Ordering::Relaxed);

    let next = AtomicUsize::new(0);
    let outcomes = Mutex::new(Vec::with_capacity(packs.len()));
    let failure = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                let mut decoder = BlobDecoder::new();
                let mut buffer = Vec::new();
                while let Some(file) = packs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let pack = PackId(file.id);
                    let outcome = if read_data {
                        index_from_whole(
                            repo,
                            pack,
                            file.size,
                            old.get(&pack),
                            &mut decoder,
                            &mut buffer,
                        )
                    } else {
                        index_from_footer(repo, pack, file.size, old.get(&pack), &mut decoder)
                    };
                    progress.packs_done.fetch_add(1, Ordering::Relaxed);
                    match outcome {
                        Ok(outcome) => outcomes.lock().push((pack, outcome)),
                        Err(e) => {
                            failure.lock().get_or_insert(e);
                            break;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner() {
        return Err(e);
    }
    let mut outcomes = outcomes.into_inner();
    outcomes.sort_unstable_by_key(|(pack, _)| *pack);

    let mut report = RebuildReport {
        damaged_index_files,
        ..RebuildReport::default()
    };
    let mut kept = Vec::new();
    let on_disk: HashSet<PackId> = packs.iter().map(|f| PackId(f.id)).collect();
    for (pack, outcome) in outcomes {
        match outcome {
            Outcome::Indexed {
                pack: entry,
                dropped,
            } => {
                if !old.contains_key(&pack) {
                    report.packs_added.push(pack);
                }
                report.blobs_dropped += dropped;
                report.blobs += entry.blobs.len() as u64;
                kept.push(entry);
            }
            Outcome::Dropped(reason) => report.packs_dropped.push(DroppedPack { pack, reason }),
        }
    }
    let mut missing: Vec<&PackId> = old.keys().filter(|id| !on_disk.contains(id)).collect();
    missing.sort_unstable();
    for pack in missing {
        report.packs_dropped.push(DroppedPack {
            pack: *pack,
            reason: "the pack file is missing".into(),
        });
    }
    report.packs = kept.len() as u64;

    let new_ids = write_index_files(repo, kept)?;
    report.new_index_files = new_ids.len() as u64;
    let mut superseded: Vec<Id> = old_listed
        .into_iter()
        .filter(|id| !new_ids.contains(id))
        .collect();
    superseded.sort_unstable();
    if !superseded.is_empty() {
        let marker = IndexFile {
            supersedes: superseded.clone(),
            packs: Vec::new(),
        };
        let marker_id = repo.save(&marker)?;
        for id in &superseded {
            repo.backend().remove(FileKind::Index, id)?;
        }
        repo.backend().remove(FileKind::Index, &marker_id)?;
    }
    report.old_index_files = superseded.len() as u64;
    Ok(report)
}

/// Writes `packs` as index files of about [`BLOBS_PER_INDEX_FILE`] blobs;
/// returns their ids.
pub(crate) fn write_index_files(repo: &Repository, packs: Vec<IndexedPack>) -> Result<HashSet<Id>> {
    let mut ids = HashSet::new();
    let mut file = IndexFile::default();
    let mut blobs = 0;
    let total = packs.len();
    for (n, pack) in packs.into_iter().enumerate() {
        blobs += pack.blobs.len();
        file.packs.push(pack);
        if blobs >= BLOBS_PER_INDEX_FILE || n + 1 == total {
            ids.insert(repo.save(&file)?);
            file = IndexFile::default();
            blobs = 0;
        }
    }
    Ok(ids)
}

/// Whether `error` means this pack is unusable rather than the repository
/// unreachable.
fn is_pack_trouble(error: &Error) -> bool {
    crate::skipped::is_damage(error) || matches!(error, Error::NotFound { .. })
}

/// A pack's entry from its footer alone. A pack whose footer cannot be read
/// keeps the blobs its old index entry names that still open.
fn index_from_footer(
    repo: &Repository,
    pack: PackId,
    size: u64,
    old: Option<&IndexedPack>,
    decoder: &mut BlobDecoder,
) -> Result<Outcome> {
    match fetch_footer(repo.backend().as_ref(), &repo.keys().cipher, &pack, size) {
        Ok((blob_type, blobs)) => {
            if blobs.iter().any(|b| b.end() + 4 > size || b.length == 0) {
                return Ok(Outcome::Dropped(
                    "its footer lists blobs beyond its end".into(),
                ));
            }
            Ok(Outcome::Indexed {
                pack: IndexedPack {
                    id: pack,
                    blob_type,
                    blobs,
                },
                dropped: 0,
            })
        }
        // Its old description tells where the blobs are: those that open stay.
        Err(e) if is_pack_trouble(&e) => match old {
            Some(old) => index_from_whole(repo, pack, size, Some(old), decoder, &mut Vec::new()),
            None => Ok(Outcome::Dropped(e.to_string())),
        },
        Err(e) => Err(e),
    }
}

/// A pack's entry after reading it whole: only blobs that open are kept.
fn index_from_whole(
    repo: &Repository,
    pack: PackId,
    size: u64,
    old: Option<&IndexedPack>,
    decoder: &mut BlobDecoder,
    buffer: &mut Vec<u8>,
) -> Result<Outcome> {
    let data = match pack::read_whole(repo.backend().as_ref(), &pack, size, buffer) {
        Ok(data) => data,
        Err(e) if is_pack_trouble(&e) => return Ok(Outcome::Dropped(e.to_string())),
        Err(e) => return Err(e),
    };
    let entry = match read_footer(&repo.keys().cipher, &pack, data) {
        Ok((blob_type, blobs)) => IndexedPack {
            id: pack,
            blob_type,
            blobs,
        },
        Err(e) => match old {
            Some(old) => old.clone(),
            None => return Ok(Outcome::Dropped(e.to_string())),
        },
    };
    Ok(keep_opening(repo, entry, data, decoder))
}

/// `entry` without the blobs that do not open from `data`.
fn keep_opening(
    repo: &Repository,
    mut entry: IndexedPack,
    data: &[u8],
    decoder: &mut BlobDecoder,
) -> Outcome {
    let before = entry.blobs.len();
    let blob_type = entry.blob_type;
    entry.blobs.retain(|blob| {
        repo.check_packed_blob(decoder, blob_type, blob, data)
            .is_ok()
    });
    let dropped = (before - entry.blobs.len()) as u64;
    if entry.blobs.is_empty() {
        return Outcome::Dropped("no blob in it opens".into());
    }
    Outcome::Indexed {
        pack: entry,
        dropped,
    }
}

/// Indexes packs that no index lists, after checking each against its
/// name: what a run stopped before its index piece had uploaded. Returns
/// the packs added. Cheap when there are none (one listing).
pub fn index_unindexed_packs(repo: &IndexedRepository) -> Result<Vec<PackId>> {
    // Only ids: this runs at the start of every snapshot, and a pack's
    // size is needed only for the rare pack no index lists.
    let unindexed: Vec<PackId> = {
        let index = repo.index();
        repo.backend()
            .list_ids(FileKind::Pack)?
            .into_iter()
            .map(PackId)
            .filter(|pack| !index.has_pack(pack))
            .collect()
    };
    let mut found = Vec::new();
    for pack in unindexed {
        let data = match repo.backend().read(FileKind::Pack, &pack.0) {
            Ok(data) => data,
            Err(e) if is_pack_trouble(&e) => continue,
            Err(e) => return Err(e),
        };
        if Id::hash_of(&data) != pack.0 {
            continue; // damaged: `verify` names it
        }
        if let Ok((blob_type, blobs)) = read_footer(&repo.keys().cipher, &pack, &data) {
            found.push(IndexedPack {
                id: pack,
                blob_type,
                blobs,
            });
        }
    }
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let file = IndexFile {
        supersedes: Vec::new(),
        packs: found,
    };
    repo.save(&file)?;
    let mut index = repo.index_mut();
    for pack in &file.packs {
        index.add_pack(pack.id, pack.blob_type, &pack.blobs);
    }
    Ok(file.packs.iter().map(|p| p.id).collect())
}
