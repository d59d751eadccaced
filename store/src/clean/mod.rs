//! `clean`: garbage collection.
//!
//! Everything reachable from a root is kept. The roots are the live
//! snapshots, the forgotten snapshots that can still be recalled (marked
//! less than `keep_forgotten` ago), and the staging areas' records (their
//! base trees and the blobs they name). Packs holding nothing reachable are
//! deleted; packs partly unused are repacked (their reachable blobs copied,
//! still sealed, into new packs) until the unused bytes left are within
//! `max_unused`; the index files are merged into few.
//!
//! It runs in two phases so that snapshots and commits can go on meanwhile:
//!
//! 1. Under the caller's shared lock: plan (walk every root) and repack.
//!    New packs and their index file only add to the repository.
//! 2. Under an exclusive lock (the shared one upgraded, waiting for other
//!    processes to finish): look at what changed since the plan (snapshots,
//!    recalled snapshots, staging records, index files), keep every pack
//!    that now-reachable blobs need, then write the merged index, remove
//!    the old index files, the expired forgotten snapshots and last the
//!    packs.
//!
//! That order leaves, wherever it is killed, a repository whose every
//! index entry points into a pack that exists: before the merged index is
//! in force, the old files still list everything; after, the packs it
//! leaves out are unreferenced until removed. A rerun finishes the job
//! (packs left out of the index are indexed again and then found unused).

mod plan;
mod repack;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

use crate::backend::FileKind;
use crate::error::Result;
use crate::id::{BlobId, Id, PackId, SnapshotId};
use crate::index::{IndexFile, IndexedPack};
use crate::lock::LockGuard;
use crate::repository::IndexedRepository;

use plan::Plan;

/// What `clean` keeps and how hard it tries.
#[derive(Clone, Debug)]
pub struct CleanOptions {
    /// Unused bytes tolerated in partly used packs, as a fraction of the
    /// bytes in use, before they are repacked.
    pub max_unused: f64,
    /// Forgotten snapshots marked less than this many seconds ago stay
    /// (they can be recalled).
    pub keep_forgotten_secs: i64,
    /// Only report what would be done.
    pub dry_run: bool,
    /// How long to wait for other processes' locks before deleting.
    pub lock_wait: Duration,
}

/// The steps of a clean, in order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CleanPhase {
    /// Indexing packs that no index lists.
    #[default]
    IndexingPacks,
    /// Reading the index files.
    ReadingIndex,
    /// Walking the trees of every root ([`CleanProgress::trees`]).
    WalkingSnapshots,
    /// Copying the live blobs of partly used packs
    /// ([`CleanProgress::repacked_bytes`]).
    Repacking,
    /// Waiting for the exclusive lock.
    Waiting,
    /// Looking at what other processes wrote meanwhile.
    CheckingMeanwhile,
    /// Writing the merged index.
    WritingIndex,
    /// Removing forgotten snapshots.
    RemovingSnapshots,
    /// Deleting packs ([`CleanProgress::packs_deleted`]).
    DeletingPacks,
}

impl CleanPhase {
    /// The phase in words, for people.
    pub fn describe(self) -> &'static str {
        match self {
            CleanPhase::IndexingPacks => "indexing packs no index lists",
            CleanPhase::ReadingIndex => "reading the index",
            CleanPhase::WalkingSnapshots => "walking snapshots",
            CleanPhase::Repacking => "repacking",
            CleanPhase::Waiting => "waiting for other processes to release the repository",
            CleanPhase::CheckingMeanwhile => "checking for snapshots made meanwhile",
            CleanPhase::WritingIndex => "writing the index",
            CleanPhase::RemovingSnapshots => "removing forgotten snapshots",
            CleanPhase::DeletingPacks => "deleting packs",
        }
    }
}

/// What a running clean has done so far, for a progress display.
#[derive(Default)]
pub struct CleanProgress {
    /// What it does now.
    pub phase: Mutex<CleanPhase>,
    /// Trees read.
    pub trees: AtomicU64,
    /// Bytes of packs repacked so far.
    pub repacked_bytes: AtomicU64,
    /// Bytes of the packs to repack.
    pub repack_bytes_total: AtomicU64,
    /// Packs deleted so far.
    pub packs_deleted: AtomicU64,
    /// Packs to delete.
    pub packs_to_delete: AtomicU64,
}

impl CleanProgress {
    fn enter(&self, phase: CleanPhase) {
        *self.phase.lock() = phase;
    }
}

/// What `clean` did (or, with `dry_run`, would do).
#[derive(Debug, Default, Serialize)]
pub struct CleanReport {
    /// Only planned.
    pub dry_run: bool,
    /// Live snapshots.
    pub snapshots: u64,
    /// Forgotten snapshots kept (still recallable, or a staging base).
    pub forgotten_kept: u64,
    /// Forgotten snapshots removed for good.
    pub forgotten_removed: Vec<SnapshotId>,
    /// Staging areas whose records were honoured.
    pub staging_areas: u64,
    /// Blobs reachable.
    pub blobs_used: u64,
    /// Blobs stored but unreachable (or stored twice).
    pub blobs_unused: u64,
    /// Packs before.
    pub packs: u64,
    /// Packs deleted whole (nothing in them reachable).
    pub packs_deleted: u64,
    /// Packs repacked.
    pub packs_repacked: u64,
    /// Packs written for them.
    pub packs_written: u64,
    /// Packs planned for deletion kept because a snapshot made during the
    /// clean uses them.
    pub packs_rescued: u64,
    /// Bytes in packs before.
    pub bytes: u64,
    /// Bytes of reachable blobs.
    pub bytes_used: u64,
    /// Bytes the repository shrinks by.
    pub bytes_freed: u64,
    /// Unused bytes left in partly used packs (within `max_unused`).
    pub bytes_unused_left: u64,
    /// Index files before.
    pub index_files_before: u64,
    /// Index files after.
    pub index_files_after: u64,
    /// Indexed packs whose file is missing and that held nothing
    /// reachable: left out of the index.
    pub missing_packs: Vec<PackId>,
    /// Bytes of temporary files that interrupted writes left behind,
    /// removed (see [`STALE_TEMPORARIES`]).
    pub temporaries_removed: u64,
}

/// How long a temporary file must have gone untouched before `clean`
/// takes it for what a killed write left behind: far longer than writing
/// one repository file takes, so that the writes of snapshots running
/// beside the clean keep theirs.
pub const STALE_TEMPORARIES: Duration = Duration::from_secs(3600);

/// Collects garbage in `repo`, whose caller holds the `shared` lock (see
/// the module documentation).
pub fn clean(
    repo: &IndexedRepository,
    shared: &LockGuard,
    options: &CleanOptions,
    progress: &CleanProgress,
) -> Result<CleanReport> {
    progress.enter(CleanPhase::IndexingPacks);
    // Packs an interrupted run left unindexed: their blobs may be in use
    // (a resumed snapshot), or they are garbage a killed clean left out of
    // the index; either way they must be known before planning.
    if !options.dry_run {
        crate::rebuild_index::index_unindexed_packs(repo)?;
    }
    let plan = Plan::make(repo, options, progress)?;
    let mut report = plan.report(options.dry_run);
    if options.dry_run {
        return Ok(report);
    }

    progress.enter(CleanPhase::Repacking);
    let repacked = repack::repack(repo, &plan, progress)?;
    let repack_index = if repacked.is_empty() {
        None
    } else {
        Some(repo.save(&IndexFile {
            supersedes: Vec::new(),
            packs: repacked.clone(),
        })?)
    };
    report.packs_written = repacked.len() as u64;

    progress.enter(CleanPhase::Waiting);
    let _exclusive = repo.lock_waiting(true, options.lock_wait, Some(shared))?;
    finish(repo, plan, repacked, repack_index, progress, &mut report)?;
    report.temporaries_removed = repo.backend().remove_stale_temporaries(STALE_TEMPORARIES)?;
    Ok(report)
}

/// The exclusive phase: takes in what changed since the plan, then writes
/// the merged index and deletes.
fn finish(
    repo: &IndexedRepository,
    mut plan: Plan,
    repacked: Vec<IndexedPack>,
    repack_index: Option<Id>,
    progress: &CleanProgress,
    report: &mut CleanReport,
) -> Result<()> {
    progress.enter(CleanPhase::CheckingMeanwhile);
    repo.reload_index()?;
    let copied: HashSet<BlobId> = repacked
        .iter()
        .flat_map(|pack| pack.blobs.iter().map(|blob| blob.id))
        .collect();
    let doomed: HashSet<PackId> = plan.doomed().collect();
    let holding = plan.doomed_blobs();
    let mut rescued = HashSet::new();
    for blob in plan.newly_reachable(repo, progress)? {
        if copied.contains(&blob) {
            continue;
        }
        let elsewhere = repo
            .index()
            .get(&blob)
            .is_some_and(|location| !doomed.contains(&location.pack));
        if !elsewhere {
            rescued.extend(holding.get(&blob).into_iter().flatten().copied());
        }
    }
    // Index files written meanwhile stay in force: a doomed pack one of
    // them lists (another process indexed a pack no index listed, as
    // every run does at its start) must stay too.
    for id in repo.backend().list_ids(FileKind::Index)? {
        if plan.knew_index_file(&id) || Some(id) == repack_index {
            continue;
        }
        let file = match repo.load_index_file(&id) {
            Ok(file) => file,
            // Gone again, or damaged (verify reports it; it lists nothing
            // that counts).
            Err(e)
                if matches!(e, crate::error::Error::NotFound { .. })
                    || crate::skipped::is_damage(&e) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        rescued.extend(
            file.packs
                .iter()
                .map(|pack| pack.id)
                .filter(|pack| doomed.contains(pack)),
        );
    }
    plan.rescue(&rescued);
    report.packs_rescued = rescued.len() as u64;

    progress.enter(CleanPhase::WritingIndex);
    let mut packs = plan.kept_entries();
    packs.extend(repacked);
    let written = crate::rebuild_index::write_index_files(repo, packs)?;
    let mut old: Vec<Id> = plan.old_index_files().chain(repack_index).collect();
    old.retain(|id| !written.contains(id));
    if !old.is_empty() {
        // One small file supersedes all the old ones at once: readers
        // ignore them from here on, even if removing them is cut short.
        let marker = repo.save(&IndexFile {
            supersedes: old.clone(),
            packs: Vec::new(),
        })?;
        for id in &old {
            repo.backend().remove(FileKind::Index, id)?;
        }
        repo.backend().remove(FileKind::Index, &marker)?;
    }
    report.index_files_after = repo.backend().list_ids(FileKind::Index)?.len() as u64;

    progress.enter(CleanPhase::RemovingSnapshots);
    report.forgotten_removed = plan.expired_still_forgotten(repo)?;
    for id in &report.forgotten_removed {
        repo.backend().remove(FileKind::Snapshot, &id.0)?;
        repo.backend().remove(FileKind::Forgotten, &id.0)?;
    }
    for id in &plan.orphan_marks {
        repo.backend().remove(FileKind::Forgotten, &id.0)?;
    }

    progress.enter(CleanPhase::DeletingPacks);
    let delete: Vec<PackId> = plan.doomed().collect();
    progress
        .packs_to_delete
        .store(delete.len() as u64, Ordering::Relaxed);
    for pack in &delete {
        repo.backend().remove(FileKind::Pack, &pack.0)?;
        progress.packs_deleted.fetch_add(1, Ordering::Relaxed);
    }
    plan.settle(report);
    Ok(())
}

/// The doomed packs holding each of their blobs, for rescues.
type DoomedBlobs = HashMap<BlobId, Vec<PackId>>;
