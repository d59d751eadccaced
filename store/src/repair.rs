//! Healing snapshots that refer to lost data: each is written again
//! without what cannot be restored (files whose content is lost, the
//! contents of folders whose tree is lost), and the original is forgotten,
//! so that it stays recallable until `clean` removes it.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;

use crate::blob::BlobType;
use crate::error::Result;
use crate::id::{BlobId, SnapshotId};
use crate::repository::IndexedRepository;
use crate::saver::BlobSaver;
use crate::tree::{Node, Tree};

/// A path left out of a repaired snapshot, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RemovedPath {
    /// The path inside the snapshot.
    pub path: String,
    /// What was lost.
    pub cause: String,
}

/// One snapshot healed.
#[derive(Clone, Debug, Serialize)]
pub struct RepairedSnapshot {
    /// The snapshot that refers to lost data (now forgotten).
    pub original: SnapshotId,
    /// Its repaired copy (`None` when nothing of it could be kept: its
    /// root folder is lost; it is then left as it is).
    pub repaired: Option<SnapshotId>,
    /// What the copy leaves out.
    pub removed: Vec<RemovedPath>,
}

/// The tag repaired snapshots carry.
pub const REPAIRED_TAG: &str = "repaired";

enum Outcome {
    Whole,
    Rewritten(BlobId),
    Lost(String),
}

struct Repairer<'a> {
    repo: &'a IndexedRepository,
    saver: &'a BlobSaver,
    /// Trees known to reach no lost data.
    whole: HashSet<BlobId>,
}

impl Repairer<'_> {
    fn lost_content(&self, node: &Node) -> Option<BlobId> {
        node.content
            .iter()
            .find(|id| !self.repo.has_blob(id, BlobType::Data))
            .copied()
    }

    fn tree(&mut self, id: BlobId, path: &str, removed: &mut Vec<RemovedPath>) -> Result<Outcome> {
        if self.whole.contains(&id) {
            return Ok(Outcome::Whole);
        }
        let tree = match self.repo.load_tree(&id) {
            Ok(tree) => tree,
            Err(e)
                if crate::skipped::is_damage(&e) || matches!(e, crate::Error::NotFound { .. }) =>
            {
                return Ok(Outcome::Lost(e.to_string()))
            }
            Err(e) => return Err(e),
        };
        let mut nodes = Vec::with_capacity(tree.nodes.len());
        let mut changed = false;
        for mut node in tree.nodes {
            let child = format!("{path}/{}", node.name_lossy());
            if let Some(blob) = self.lost_content(&node) {
                removed.push(RemovedPath {
                    path: child,
                    cause: format!("content blob {} is lost", blob.short()),
                });
                changed = true;
                continue;
            }
            if let Some(subtree) = node.subtree {
                match self.tree(subtree, &child, removed)? {
                    Outcome::Whole => {}
                    Outcome::Rewritten(new) => {
                        node.subtree = Some(new);
                        changed = true;
                    }
                    Outcome::Lost(reason) => {
                        removed.push(RemovedPath {
                            path: format!("{child}/*"),
                            cause: format!("the folder's contents are lost ({reason}); kept empty"),
                        });
                        node.subtree =
                            Some(self.saver.save(BlobType::Tree, Tree::default().encode())?);
                        changed = true;
                    }
                }
            }
            nodes.push(node);
        }
        if !changed {
            self.whole.insert(id);
            return Ok(Outcome::Whole);
        }
        let tree = Tree { nodes };
        Ok(Outcome::Rewritten(
            self.saver.save(BlobType::Tree, tree.encode())?,
        ))
    }
}

/// Writes a repaired copy of every snapshot that refers to data the index
/// does not list, and forgets the originals. Run after `rebuild-index`,
/// under an exclusive lock.
pub fn repair_snapshots(
    repo: &Arc<IndexedRepository>,
    threads: usize,
) -> Result<Vec<RepairedSnapshot>> {
    let snapshots = repo.snapshots()?;
    let saver = BlobSaver::new(repo.clone(), threads);
    let mut repairer = Repairer {
        repo,
        saver: &saver,
        whole: HashSet::new(),
    };
    let mut planned = Vec::new();
    for (id, snapshot) in snapshots {
        let mut removed = Vec::new();
        match repairer.tree(snapshot.tree, "", &mut removed)? {
            Outcome::Whole => {}
            Outcome::Rewritten(root) => planned.push((id, snapshot, Some(root), removed)),
            Outcome::Lost(reason) => {
                removed.push(RemovedPath {
                    path: "/".into(),
                    cause: format!("the root folder is lost ({reason})"),
                });
                planned.push((id, snapshot, None, removed));
            }
        }
    }
    // Trees durable and indexed before any snapshot names them.
    saver.finish()?;
    let mut out = Vec::new();
    for (original, mut snapshot, root, removed) in planned {
        let Some(root) = root else {
            out.push(RepairedSnapshot {
                original,
                repaired: None,
                removed,
            });
            continue;
        };
        snapshot.tree = root;
        snapshot.parent = Some(original);
        if !snapshot.tags.iter().any(|t| t == REPAIRED_TAG) {
            snapshot.tags.push(REPAIRED_TAG.into());
        }
        let note = format!(
            "repaired from {}: {} paths left out",
            original.short(),
            removed.len()
        );
        snapshot.description = if snapshot.description.is_empty() {
            note
        } else {
            format!("{} ({note})", snapshot.description)
        };
        let repaired = repo.save_snapshot(&snapshot)?;
        repo.forget(&original, &format!("repaired as {}", repaired.short()))?;
        out.push(RepairedSnapshot {
            original,
            repaired: Some(repaired),
            removed,
        });
    }
    Ok(out)
}
