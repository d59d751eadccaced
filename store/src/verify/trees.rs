//! Snapshots and the trees they reach, and what damage breaks in them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use super::packs::DamagedBlobs;
use super::{DamagedPath, DamagedSnapshot, Problem, VerifyProgress, VerifyReport};
use crate::backend::FileKind;
use crate::blob::BlobType;
use crate::error::Result;
use crate::id::{BlobId, SnapshotId};
use crate::repository::IndexedRepository;
use crate::snapshot::Snapshot;
use crate::tree::Tree;

/// Checks every snapshot and every tree reachable from one, then names
/// what cannot be restored in each snapshot that reaches damage.
pub(super) fn check_snapshots(
    repo: &IndexedRepository,
    damaged: &DamagedBlobs,
    progress: &VerifyProgress,
    report: &mut VerifyReport,
) -> Result<()> {
    let snapshots = repo.snapshots()?;
    report.snapshots = snapshots.len() as u64;
    for skipped in repo.skipped().take_kind(FileKind::Snapshot) {
        report.problems.push(Problem::DamagedSnapshot {
            snapshot: crate::id::SnapshotId(skipped.id),
            reason: skipped.reason,
        });
    }
    let mut checker = TreeChecker {
        repo,
        damaged,
        reaches_damage: HashMap::new(),
        unreadable_trees: HashMap::new(),
        missing: HashSet::new(),
        data_blobs: HashSet::new(),
        problems: Vec::new(),
        progress,
    };
    for (_, snapshot) in &snapshots {
        checker.check_tree(snapshot.tree);
    }
    report.damaged_snapshots = checker.damaged_snapshots(&snapshots);
    report.problems.append(&mut checker.problems);

    // Forgotten snapshots can be recalled: they are checked too, and what
    // only they reach is reported apart, as notes, since it breaks nothing
    // live (the originals of repaired snapshots refer to lost data).
    let mut forgotten = Vec::new();
    for (id, _) in repo.forgotten()? {
        match repo.load_snapshot(&id) {
            Ok(snapshot) => forgotten.push((id, snapshot)),
            Err(e) if crate::skipped::is_damage(&e) => {
                report.forgotten_problems.push(Problem::DamagedSnapshot {
                    snapshot: id,
                    reason: e.to_string(),
                })
            }
            Err(crate::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    report.forgotten_snapshots = forgotten.len() as u64;
    for (_, snapshot) in &forgotten {
        checker.check_tree(snapshot.tree);
    }
    report.damaged_forgotten = checker.damaged_snapshots(&forgotten);
    report.forgotten_problems.append(&mut checker.problems);
    report.trees = checker.reaches_damage.len() as u64;
    report.data_blobs = checker.data_blobs.len() as u64;
    Ok(())
}

struct TreeChecker<'a> {
    repo: &'a IndexedRepository,
    damaged: &'a DamagedBlobs,
    /// Every tree checked, and whether damage lies at or below it.
    reaches_damage: HashMap<BlobId, bool>,
    /// Trees that could not be read, and why.
    unreadable_trees: HashMap<BlobId, String>,
    /// Blobs found missing from the index (each reported once).
    missing: HashSet<BlobId>,
    /// Data blobs referenced, to count them.
    data_blobs: HashSet<BlobId>,
    problems: Vec<Problem>,
    progress: &'a VerifyProgress,
}

impl TreeChecker<'_> {
    /// The snapshots of `snapshots` that reach damage, with what in them
    /// cannot be restored.
    fn damaged_snapshots(&mut self, snapshots: &[(SnapshotId, Snapshot)]) -> Vec<DamagedSnapshot> {
        let mut out = Vec::new();
        for (id, snapshot) in snapshots {
            if self.reaches_damage.get(&snapshot.tree) == Some(&true) {
                let mut paths = Vec::new();
                self.collect(snapshot.tree, "", &mut paths);
                out.push(DamagedSnapshot {
                    snapshot: *id,
                    time: snapshot.local_time(),
                    paths,
                });
            }
        }
        out
    }

    /// Why blob `id` of `blob_type` cannot be read, if it cannot.
    fn blob_trouble(&mut self, id: &BlobId, blob_type: BlobType) -> Option<String> {
        if let Some(reason) = self.damaged.get(id) {
            return Some(reason.clone());
        }
        if self.repo.has_blob(id, blob_type) {
            return None;
        }
        if self.missing.insert(*id) {
            self.problems.push(Problem::MissingBlob {
                blob: *id,
                blob_type: match blob_type {
                    BlobType::Data => "data",
                    BlobType::Tree => "tree",
                }
                .into(),
            });
        }
        Some("not in the index".into())
    }

    fn load(&mut self, id: BlobId) -> std::result::Result<Tree, String> {
        if let Some(reason) = self.blob_trouble(&id, BlobType::Tree) {
            return Err(reason);
        }
        self.repo.load_tree(&id).map_err(|e| e.to_string())
    }

    /// Checks tree `id` and everything below it once; returns whether
    /// damage lies there.
    fn check_tree(&mut self, id: BlobId) -> bool {
        if let Some(&known) = self.reaches_damage.get(&id) {
            return known;
        }
        // Marked before descending, so that even a crafted cycle ends.
        self.reaches_damage.insert(id, false);
        self.progress.trees.fetch_add(1, Ordering::Relaxed);
        let damage = match self.load(id) {
            Err(reason) => {
                if !self.damaged.contains_key(&id) && !self.missing.contains(&id) {
                    self.problems.push(Problem::DamagedTree {
                        tree: id,
                        reason: reason.clone(),
                    });
                }
                self.unreadable_trees.insert(id, reason);
                true
            }
            Ok(tree) => {
                let mut damage = false;
                for node in &tree.nodes {
                    for blob in &node.content {
                        self.data_blobs.insert(*blob);
                        damage |= self.blob_trouble(blob, BlobType::Data).is_some();
                    }
                    if let Some(subtree) = node.subtree {
                        damage |= self.check_tree(subtree);
                    }
                }
                damage
            }
        };
        self.reaches_damage.insert(id, damage);
        damage
    }

    /// Names what cannot be restored below tree `id` at `path`, walking
    /// only into trees that reach damage.
    fn collect(&mut self, id: BlobId, path: &str, out: &mut Vec<DamagedPath>) {
        let shown = if path.is_empty() { "/" } else { path };
        if let Some(reason) = self.unreadable_trees.get(&id) {
            out.push(DamagedPath {
                path: shown.to_string(),
                cause: format!("folder cannot be read: {reason}"),
            });
            return;
        }
        let tree = match self.repo.load_tree(&id) {
            Ok(tree) => tree,
            Err(e) => {
                out.push(DamagedPath {
                    path: shown.to_string(),
                    cause: format!("folder cannot be read: {e}"),
                });
                return;
            }
        };
        for node in &tree.nodes {
            let child = format!("{path}/{}", node.name_lossy());
            let trouble = node
                .content
                .iter()
                .find_map(|blob| Some((blob, self.blob_trouble(blob, BlobType::Data)?)));
            if let Some((blob, reason)) = trouble {
                out.push(DamagedPath {
                    path: child.clone(),
                    cause: format!("content blob {} {reason}", blob.short()),
                });
            }
            if let Some(subtree) = node.subtree {
                if self.reaches_damage.get(&subtree) == Some(&true) {
                    self.collect(subtree, &child, out);
                }
            }
        }
    }
}
