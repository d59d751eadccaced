//! `restore`: writing a snapshot's tree back to the filesystem, safely in a
//! target that already holds something.
//!
//! 1. **Plan** (`plan.rs`): walk the snapshot's trees and the target side by
//!    side, through open folders only (`target.rs`: nothing is ever reached
//!    through a symlink). Decide for each entry what the overwrite policy
//!    says: create it, replace it, keep what is there, or name a conflict;
//!    with `delete`, remove what the snapshot does not have. Folders,
//!    symlinks and special files are made now; each regular file to write
//!    is created under a temporary name in its folder, and for every blob
//!    each place (file, offset) it goes is noted. A file that already holds
//!    the right content is left alone, so a rerun after an interruption
//!    only does what is missing.
//! 2. **Fetch** (`fetch.rs`): group the blobs by pack, sort them by offset
//!    and read neighbouring blobs with one ranged read; each blob is read
//!    and decrypted once and written to every place it occurs. Packs are
//!    fetched by several threads. All-zero blobs are not written: the file
//!    was created sparse.
//! 3. **Finish** (`finish.rs`): each complete file gets its metadata (the
//!    mtime last) and is renamed over its final name; a file that could not
//!    be restored is removed and named, so none is ever left looking
//!    complete. Then hard links, then the metadata of folders, deepest
//!    first, so that writing into a folder does not change its mtime.
//!
//! A blob that cannot be read (missing, truncated or tampered pack) damages
//! only the files that use it; they are reported and everything else is
//! restored.

mod fetch;
mod finish;
mod metadata;
mod plan;
mod target;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::patterns::Patterns;
use crate::repository::IndexedRepository;
use crate::tree::{Node, Tree};

/// What to do with a file that already exists where the snapshot has one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overwrite {
    /// Replace it, even if it holds the same content.
    Always,
    /// Replace it unless it already holds the snapshot's content (read
    /// and compared blob by blob).
    #[default]
    IfChanged,
    /// Replace it only if the snapshot's version is newer (mtime).
    IfNewer,
    /// Never touch it.
    Never,
}

impl std::str::FromStr for Overwrite {
    type Err = Error;
    fn from_str(text: &str) -> Result<Overwrite> {
        match text {
            "always" => Ok(Overwrite::Always),
            "if-changed" => Ok(Overwrite::IfChanged),
            "if-newer" => Ok(Overwrite::IfNewer),
            "never" => Ok(Overwrite::Never),
            _ => Err(Error::InvalidInput(format!(
                "{text:?} is not an overwrite policy: use always, if-changed, if-newer or never"
            ))),
        }
    }
}

/// Settings of one restore.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Restore only entries matching these (and what is below them); all
    /// when empty.
    pub includes: Patterns,
    /// Skip entries matching these.
    pub excludes: Patterns,
    /// Read every restored file back and check it against the snapshot
    /// before giving it its name.
    pub verify: bool,
    /// Threads fetching packs.
    pub threads: usize,
    /// What to do with existing files.
    pub overwrite: Overwrite,
    /// Remove what restored folders hold that the snapshot does not.
    pub delete: bool,
    /// Change nothing; say what would be done.
    pub dry_run: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            includes: Patterns::none(),
            excludes: Patterns::none(),
            verify: false,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            overwrite: Overwrite::default(),
            delete: false,
            dry_run: false,
        }
    }
}

/// Counters a progress display can poll.
#[derive(Debug, Default)]
pub struct RestoreProgress {
    /// Bytes of file content written (or found already correct).
    pub bytes: AtomicU64,
    /// Bytes to write in total, known once planning is done.
    pub total_bytes: AtomicU64,
}

/// One change to the target, as `dry_run` lists them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Action {
    /// `create`, `replace` or `delete`.
    pub action: &'static str,
    /// The path in the target.
    pub path: String,
    /// Bytes of the file (0 for other entries).
    pub size: u64,
}

/// What a restore did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreReport {
    /// Regular files restored.
    pub files: u64,
    /// Of those, files that were already correct and left alone.
    pub files_unchanged: u64,
    /// Existing files kept as they were by the overwrite policy.
    pub files_kept: u64,
    /// Folders restored.
    pub dirs: u64,
    /// Symlinks, fifos, devices and sockets restored.
    pub others: u64,
    /// Entries that did not exist before.
    pub created: u64,
    /// Entries that replaced something.
    pub replaced: u64,
    /// Entries removed because the snapshot does not have them.
    pub deleted: u64,
    /// Bytes of file content written.
    pub bytes_written: u64,
    /// Files whose content could not be restored, with the reason.
    pub damaged: Vec<String>,
    /// Entries not restored because something else is in their place.
    pub conflicts: Vec<String>,
    /// Metadata that could not be applied, and verification failures.
    pub warnings: Vec<String>,
    /// Files read back and found correct (with `verify`).
    pub verified: u64,
    /// With `dry_run`: what would be created, replaced and deleted.
    pub actions: Vec<Action>,
}

/// Where an entry goes: its folder below the target and its name.
#[derive(Clone, Debug)]
struct Place {
    dir: PathBuf,
    name: OsString,
}

impl Place {
    fn show(&self, root: &Path) -> String {
        root.join(&self.dir).join(&self.name).display().to_string()
    }
}

/// A regular file of the snapshot and what happens to it.
struct PlannedFile {
    place: Place,
    node: Node,
    /// Being written under its temporary name (else already correct, or
    /// kept by the policy).
    writing: bool,
}

#[derive(Clone, Copy)]
struct BlobUse {
    file: u32,
    offset: u64,
}

/// Restores the tree of a snapshot below `target`.
///
/// Errors only for problems that stop everything (the target cannot be
/// written, the root tree cannot be read); damaged files and conflicts
/// are listed in the report instead.
pub fn restore(
    repo: &IndexedRepository,
    root: &BlobId,
    target: &Path,
    options: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<RestoreReport> {
    restore_tree(repo, repo.load_tree(root)?, target, options, progress)
}

/// Restores the entries of `tree` below `target` (a sub-folder of a
/// snapshot, or a tree of chosen nodes).
pub fn restore_tree(
    repo: &IndexedRepository,
    tree: Tree,
    target: &Path,
    options: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<RestoreReport> {
    let root = if options.dry_run && !target.exists() {
        None
    } else {
        Some(target::open_root(target).map_err(|e| Error::io(target, e))?)
    };
    let mut planner = plan::Planner::new(repo, options, target);
    planner.plan_root(tree.nodes, root.as_ref())?;
    if options.dry_run {
        return Ok(planner.into_report());
    }
    let root = root.expect("opened unless a dry run");
    let total: u64 = planner.files.iter().map(|f| f.node.size).sum();
    progress.total_bytes.store(total, Ordering::Relaxed);
    let already: u64 = planner
        .files
        .iter()
        .filter(|f| !f.writing)
        .map(|f| f.node.size)
        .sum();
    progress.bytes.store(already, Ordering::Relaxed);

    // Each fetcher waits for its reads, then decrypts and writes: twice as
    // many as cores keep both busy (measured on the bench: 1.31 s with 2,
    // 1.15 s with 4 on 2 cores); an object store wants more in flight.
    let fetchers = (options.threads * 2).max(repo.backend().parallel_reads());
    let written = fetch::fetch(repo, &planner, &root, fetchers, progress)?;
    planner.report.bytes_written = written.bytes;
    planner.damaged.extend(written.damaged);
    finish::finish(planner, &root)
}

/// Files whose content could not be restored, by file number, and why.
type Damaged = BTreeMap<u32, String>;

/// Where each blob goes.
type Uses = HashMap<BlobId, Vec<BlobUse>>;
