//! The `stage` subcommands as requests, one function each: run on a
//! staging area opened here, or sent to the mount that holds it (see
//! [`crate::control`]), which runs them on its own, so that its inode
//! numbers and open files follow what the command changes.

use std::path::PathBuf;

use mapache_store::tree::{Node, NodeKind};
use mapache_store::{BlobId, IndexedRepository, SnapshotId};
use serde::{Deserialize, Serialize};

use super::import::Added;
use super::overlay::components;
use super::{meta_now, Change, RenameMode, Staging};
use crate::error::FsError;

/// A `stage` subcommand. Paths in the staging area are relative to its
/// root; local sources are absolute.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StageRequest {
    /// Copy local files and folders into folder `to`.
    Add {
        /// What to copy.
        sources: Vec<PathBuf>,
        /// The folder to copy into.
        to: Vec<u8>,
    },
    /// Remove entries (`recursive`: folders with what they hold).
    Remove {
        /// The entries.
        paths: Vec<Vec<u8>>,
        /// Whether folders that hold something go too.
        recursive: bool,
    },
    /// Move or rename an entry; into `to` if that is a folder.
    Move {
        /// The entry.
        from: Vec<u8>,
        /// Its new path, or the folder to move it into.
        to: Vec<u8>,
    },
    /// Make folders (`parents`: with their missing parents).
    MakeFolders {
        /// The folders.
        paths: Vec<Vec<u8>>,
        /// Whether missing parents are made too.
        parents: bool,
    },
    /// The entries of a folder.
    List {
        /// The folder.
        path: Vec<u8>,
    },
    /// What differs from the base snapshot (`sizes`: with the sizes).
    Status {
        /// Whether to give each change's sizes before and after.
        sizes: bool,
    },
    /// Drop every change and start over.
    Reset {
        /// From this snapshot (none: empty), or from the current base.
        base: ResetTo,
    },
}

/// Where `stage reset` starts over.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum ResetTo {
    /// The snapshot the staging area is based on now.
    CurrentBase,
    /// An empty tree.
    Empty,
    /// This snapshot.
    Snapshot(SnapshotId),
}

/// What a [`StageRequest`] did or found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StageAnswer {
    /// The change was made.
    Done,
    /// The staging area starts over from this snapshot (none: empty).
    Reset(Option<SnapshotId>),
    /// What `Add` copied.
    Added(Added),
    /// The folder's entries, in name order.
    Listing(Vec<Node>),
    /// The changes since `base`, each with its sizes before and after
    /// when asked for.
    Status {
        /// The base snapshot.
        base: Option<SnapshotId>,
        /// The changes, with the sizes in the base and now.
        changes: Vec<(Change, Option<u64>, Option<u64>)>,
    },
}

/// A request that failed: what it was doing, and why.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {cause}")]
pub struct StageError {
    /// What failed (`cannot remove /a`).
    pub what: String,
    /// Why.
    #[source]
    pub cause: FsError,
}

fn show(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path))
}

fn failed(what: String) -> impl FnOnce(FsError) -> StageError {
    move |cause| StageError { what, cause }
}

impl Staging {
    /// Runs `request`.
    pub fn run_request(&self, request: StageRequest) -> Result<StageAnswer, StageError> {
        match request {
            StageRequest::Add { sources, to } => self
                .add_trees(&sources, &to)
                .map(StageAnswer::Added)
                .map_err(failed(format!("cannot add to {}", show(&to)))),
            StageRequest::Remove { paths, recursive } => self.remove_all(&paths, recursive),
            StageRequest::Move { from, to } => self.move_entry(&from, &to),
            StageRequest::MakeFolders { paths, parents } => self.make_all(&paths, parents),
            StageRequest::List { path } => self
                .resolve(&path)
                .and_then(|dir| self.list_nodes(&dir))
                .map(StageAnswer::Listing)
                .map_err(failed(format!("cannot list {}", show(&path)))),
            StageRequest::Status { sizes } => self
                .status_with(sizes)
                .map_err(failed("cannot compare with the base".into())),
            StageRequest::Reset { base } => {
                let base = match base {
                    ResetTo::CurrentBase => self.base(),
                    ResetTo::Empty => None,
                    ResetTo::Snapshot(id) => Some(id),
                };
                self.reset(base)
                    .map(|()| StageAnswer::Reset(base))
                    .map_err(failed("cannot reset the staging area".into()))
            }
        }
    }

    fn remove_all(&self, paths: &[Vec<u8>], recursive: bool) -> Result<StageAnswer, StageError> {
        for path in paths {
            self.remove(path, recursive)
                .map_err(failed(format!("cannot remove {}", show(path))))?;
        }
        Ok(StageAnswer::Done)
    }

    /// `mv`: into `to` when it is a folder (or the root).
    fn move_entry(&self, from: &[u8], to: &[u8]) -> Result<StageAnswer, StageError> {
        let into_folder =
            components(to).is_empty() || self.resolve(to).is_ok_and(|e| e.kind() == NodeKind::Dir);
        let target = match components(from).last() {
            Some(name) if into_folder => {
                let mut parts = components(to);
                parts.push(name);
                parts.join(&b'/')
            }
            _ => to.to_vec(),
        };
        self.rename(from, &target, RenameMode::Replace)
            .map(|()| StageAnswer::Done)
            .map_err(failed(format!(
                "cannot move {} to {}",
                show(from),
                show(to)
            )))
    }

    fn make_all(&self, paths: &[Vec<u8>], parents: bool) -> Result<StageAnswer, StageError> {
        for path in paths {
            let made = match parents {
                true => self.make_folders(path),
                false => self.mkdir(path, meta_now(0o755)),
            };
            made.map_err(failed(format!("cannot make {}", show(path))))?;
        }
        Ok(StageAnswer::Done)
    }

    fn status_with(&self, sizes: bool) -> Result<StageAnswer, FsError> {
        let base = self.base();
        let changes = self.status()?;
        let base_root = match (sizes, base) {
            (true, Some(id)) => Some(self.repo.load_snapshot(&id)?.tree),
            _ => None,
        };
        let changes = changes
            .into_iter()
            .map(|change| {
                if !sizes {
                    return (change, None, None);
                }
                let path = match &change {
                    Change::Added(p) | Change::Modified(p) | Change::Removed(p) => p.clone(),
                };
                let old = base_root.and_then(|root| base_size(&self.repo, root, &path));
                let new = self.resolve(path.as_bytes());
                let new = new.and_then(|entry| self.stat(&entry)).map(|n| n.size).ok();
                (change, old, new)
            })
            .collect();
        Ok(StageAnswer::Status { base, changes })
    }
}

/// The size of the entry at `path` in the base tree `root`, if it has one.
fn base_size(repo: &IndexedRepository, root: BlobId, path: &str) -> Option<u64> {
    let mut tree = repo.load_tree(&root).ok()?;
    let parts = components(path.as_bytes());
    for (i, part) in parts.iter().enumerate() {
        let node = tree.find(part)?.clone();
        if i + 1 == parts.len() {
            return Some(node.size);
        }
        tree = repo.load_tree(&node.subtree?).ok()?;
    }
    None
}
