//! `verify`: checking that a repository is whole, and saying what damage
//! breaks.
//!
//! 1. **Index** (`packs.rs`): every index file decodes; every pack it
//!    lists exists and is at least as long as its entries and footer need;
//!    no pack is listed twice with different contents; packs no index
//!    lists are named (a crashed run's, to be indexed by `rebuild-index`).
//! 2. **Data** (`packs.rs`, with `--read-data`): every selected pack is
//!    read once, its name checked against the BLAKE3 hash of its bytes, its
//!    footer against the index, and every blob opened (authenticated,
//!    decompressed, its keyed id checked). Packs are spread over all cores.
//! 3. **Snapshots and trees** (`trees.rs`): every snapshot decodes, every
//!    tree reachable from one decodes, every blob a tree names is indexed
//!    (and, after step 2, not damaged). Each tree is checked once however
//!    many snapshots share it; what is kept per tree is its id and one bit.
//! 4. **Consequences**: for every snapshot that reaches damage, the files
//!    and folders in it that cannot be restored, found by walking only the
//!    trees that lead to damage.

mod packs;
mod subset;
mod trees;

use std::sync::atomic::AtomicU64;

use serde::Serialize;

use crate::error::Result;
use crate::id::{BlobId, Id, PackId, SnapshotId};
use crate::repository::Repository;

pub use subset::DataSubset;

/// What to check.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Read pack data too, all or a slice of it.
    pub read_data: Option<DataSubset>,
    /// Threads reading packs.
    pub threads: usize,
}

/// Counters a progress display can poll.
#[derive(Debug, Default)]
pub struct VerifyProgress {
    /// Packs to read (known once the index is checked).
    pub packs_total: AtomicU64,
    /// Packs read so far.
    pub packs_read: AtomicU64,
    /// Bytes read so far.
    pub bytes_read: AtomicU64,
    /// Trees checked so far.
    pub trees: AtomicU64,
}

/// One thing found wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// An index file that cannot be read: what it lists is not indexed.
    DamagedIndexFile {
        /// The file.
        index: Id,
        /// Why.
        reason: String,
    },
    /// A snapshot file that cannot be read.
    DamagedSnapshot {
        /// The file.
        snapshot: SnapshotId,
        /// Why.
        reason: String,
    },
    /// A pack the index lists does not exist.
    MissingPack {
        /// The pack.
        pack: PackId,
        /// The index file listing it.
        index: Id,
    },
    /// A pack is shorter than its index entries need.
    TruncatedPack {
        /// The pack.
        pack: PackId,
        /// Bytes at least expected.
        expected_at_least: u64,
        /// Bytes it has.
        size: u64,
    },
    /// Two index files list one pack with different contents.
    ConflictingIndexEntries {
        /// The pack.
        pack: PackId,
        /// The two index files.
        index_files: [Id; 2],
    },
    /// A pack's bytes do not hash to its name.
    PackHashMismatch {
        /// The pack.
        pack: PackId,
        /// The hash of its bytes.
        actual: Id,
    },
    /// A pack's footer is unreadable or disagrees with the index.
    PackFooter {
        /// The pack.
        pack: PackId,
        /// What is wrong.
        reason: String,
    },
    /// A blob that does not open (authentication, decompression, id).
    DamagedBlob {
        /// The blob.
        blob: BlobId,
        /// The pack it is in.
        pack: PackId,
        /// Why.
        reason: String,
    },
    /// A blob a tree refers to is not in the index.
    MissingBlob {
        /// The blob.
        blob: BlobId,
        /// "data" or "tree".
        blob_type: String,
    },
    /// A lock file that cannot be read: it protects nothing, but blocks
    /// every exclusive operation until `unlock` removes it.
    DamagedLock {
        /// The lock file.
        lock: Id,
        /// Why.
        reason: String,
    },
    /// A tree that is indexed but does not decode.
    DamagedTree {
        /// The tree blob.
        tree: BlobId,
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::DamagedIndexFile { index, reason } => {
                write!(f, "index file {index} is damaged: {reason}")
            }
            Problem::DamagedSnapshot { snapshot, reason } => {
                write!(f, "snapshot {snapshot} is damaged: {reason}")
            }
            Problem::MissingPack { pack, index } => {
                write!(f, "pack {pack} is missing (listed by index file {index})")
            }
            Problem::TruncatedPack {
                pack,
                expected_at_least,
                size,
            } => write!(
                f,
                "pack {pack} is truncated: {size} bytes, its index entries need at least {expected_at_least}"
            ),
            Problem::ConflictingIndexEntries { pack, index_files } => write!(
                f,
                "pack {pack} is listed differently by index files {} and {}",
                index_files[0], index_files[1]
            ),
            Problem::PackHashMismatch { pack, actual } => {
                write!(f, "pack {pack} is damaged: its bytes hash to {actual}")
            }
            Problem::PackFooter { pack, reason } => write!(f, "pack {pack}: {reason}"),
            Problem::DamagedBlob { blob, pack, reason } => {
                write!(f, "blob {blob} in pack {pack} is damaged: {reason}")
            }
            Problem::MissingBlob { blob, blob_type } => {
                write!(f, "{blob_type} blob {blob} is not in the index")
            }
            Problem::DamagedLock { lock, reason } => write!(
                f,
                "lock file {lock} is damaged ({reason}); `mapache unlock` removes it"
            ),
            Problem::DamagedTree { tree, reason } => {
                write!(f, "tree {tree} does not decode: {reason}")
            }
        }
    }
}

/// A path in a snapshot that cannot be restored, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DamagedPath {
    /// The path inside the snapshot (lossy UTF-8).
    pub path: String,
    /// What is wrong with it.
    pub cause: String,
}

/// A snapshot that reaches damage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DamagedSnapshot {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// Its local time.
    pub time: String,
    /// What in it cannot be restored.
    pub paths: Vec<DamagedPath>,
}

/// What `verify` found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Snapshots read.
    pub snapshots: u64,
    /// Index files read.
    pub index_files: u64,
    /// Packs in the repository.
    pub packs: u64,
    /// Distinct trees checked.
    pub trees: u64,
    /// Distinct data blobs referenced.
    pub data_blobs: u64,
    /// Packs whose data was read.
    pub packs_read: u64,
    /// Bytes read from them.
    pub bytes_read: u64,
    /// Packs no index lists (not damage: `rebuild-index` indexes them).
    pub unindexed_packs: Vec<PackId>,
    /// Everything found wrong.
    pub problems: Vec<Problem>,
    /// The snapshots that reach damage, with what cannot be restored.
    pub damaged_snapshots: Vec<DamagedSnapshot>,
    /// Forgotten snapshots checked.
    pub forgotten_snapshots: u64,
    /// What only forgotten snapshots reach (not counted as damage: it
    /// breaks nothing live, but a recalled snapshot would meet it).
    pub forgotten_problems: Vec<Problem>,
    /// Forgotten snapshots that reach damage.
    pub damaged_forgotten: Vec<DamagedSnapshot>,
}

impl VerifyReport {
    /// Whether anything is damaged.
    pub fn is_damaged(&self) -> bool {
        !self.problems.is_empty()
    }
}

/// Checks `repo` as `options` say.
pub fn verify(
    repo: Repository,
    options: &VerifyOptions,
    progress: &VerifyProgress,
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let cipher = &repo.keys().cipher;
    for (lock, info) in crate::lock::list_locks(repo.backend().as_ref(), cipher)? {
        if let Err(e) = info {
            report.problems.push(Problem::DamagedLock {
                lock,
                reason: e.to_string(),
            });
        }
    }
    let mut checked = packs::check_index(&repo, &mut report)?;
    if let Some(subset) = &options.read_data {
        let selected = subset.select(&checked.readable_packs());
        let found = packs::read_packs(
            &repo,
            &checked,
            &selected,
            options.threads,
            progress,
            &mut report,
        );
        checked.damaged.extend(found);
    }
    let damaged_blobs = std::mem::take(&mut checked.damaged);
    let indexed = checked.into_indexed(repo);
    trees::check_snapshots(&indexed, &damaged_blobs, progress, &mut report)?;
    Ok(report)
}

#[cfg(test)]
mod tests;
