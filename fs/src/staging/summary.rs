//! The summary a commit records, as `snapshot` records one: what the new
//! tree holds, and which files are new or changed since the base. Only
//! folders whose tree differs from the base's are read, so a commit of
//! one changed file reads the trees on its path, not the whole snapshot.

use mapache_store::diff::pair_by_name;
use mapache_store::snapshot::Summary;
use mapache_store::tree::{Node, NodeKind};
use mapache_store::{BlobId, IndexedRepository};

use crate::error::FsResult;

/// How the new tree differs from the base's, in counts.
#[derive(Debug, Default)]
struct Delta {
    files: i64,
    dirs: i64,
    others: i64,
    bytes: i64,
    files_new: u64,
    files_changed: u64,
}

impl Delta {
    fn count(&mut self, node: &Node, sign: i64) {
        match node.kind {
            NodeKind::File => {
                self.files += sign;
                self.bytes += sign * node.size as i64;
            }
            NodeKind::Dir => self.dirs += sign,
            _ => self.others += sign,
        }
    }
}

/// Fills the counts of `summary` for a commit of tree `new` on the base
/// tree `old`, whose snapshot's summary is `old_summary` (none: no base).
pub(super) fn summarize(
    repo: &IndexedRepository,
    new: BlobId,
    old: Option<(BlobId, &Summary)>,
    summary: &mut Summary,
) -> FsResult<()> {
    let mut totals = Delta::default();
    if let Some((old_tree, old_summary)) = old {
        if old_summary.counts_known() {
            totals.files = old_summary.files() as i64;
            totals.dirs = old_summary.dirs as i64;
            totals.others = old_summary.others as i64;
            totals.bytes = old_summary.total_bytes as i64;
        } else {
            // A base recorded without counts: count it once.
            compare(repo, Some(old_tree), None, &mut totals)?;
        }
    }
    let mut delta = Delta::default();
    compare(repo, Some(new), old.map(|(tree, _)| tree), &mut delta)?;
    let files = (totals.files + delta.files).max(0) as u64;
    summary.files_new = delta.files_new;
    summary.files_changed = delta.files_changed;
    summary.files_unchanged = files.saturating_sub(delta.files_new + delta.files_changed);
    summary.dirs = (totals.dirs + delta.dirs).max(0) as u64;
    summary.others = (totals.others + delta.others).max(0) as u64;
    summary.total_bytes = (totals.bytes + delta.bytes).max(0) as u64;
    Ok(())
}

/// Adds to `delta` how the folder `new` differs from `old` (either may be
/// missing: an added or removed folder), descending where they differ.
fn compare(
    repo: &IndexedRepository,
    new: Option<BlobId>,
    old: Option<BlobId>,
    delta: &mut Delta,
) -> FsResult<()> {
    if new == old {
        return Ok(());
    }
    let load = |id: Option<BlobId>| -> FsResult<Vec<Node>> {
        Ok(match id {
            Some(id) => repo.load_tree(&id)?.nodes,
            None => Vec::new(),
        })
    };
    let (old_nodes, new_nodes) = (load(old)?, load(new)?);
    pair_by_name(&old_nodes, &new_nodes, |old, new| match (old, new) {
        (None, Some(new)) => added(repo, new, delta),
        (Some(old), None) => removed(repo, old, delta),
        (Some(old), Some(new)) => match (new.kind, old.kind) {
            (NodeKind::Dir, NodeKind::Dir) => compare(repo, new.subtree, old.subtree, delta),
            (NodeKind::File, NodeKind::File) => {
                delta.bytes += new.size as i64 - old.size as i64;
                if new.content != old.content {
                    delta.files_changed += 1;
                }
                Ok(())
            }
            (x, y) if x == y => Ok(()),
            _ => {
                removed(repo, old, delta)?;
                added(repo, new, delta)
            }
        },
        (None, None) => unreachable!("every name is on one side at least"),
    })
}

fn added(repo: &IndexedRepository, node: &Node, delta: &mut Delta) -> FsResult<()> {
    delta.count(node, 1);
    match node.kind {
        NodeKind::File => delta.files_new += 1,
        NodeKind::Dir => compare(repo, node.subtree, None, delta)?,
        _ => {}
    }
    Ok(())
}

fn removed(repo: &IndexedRepository, node: &Node, delta: &mut Delta) -> FsResult<()> {
    delta.count(node, -1);
    if node.kind == NodeKind::Dir {
        // What it held goes with it: counted as a walk counts it, then
        // taken off.
        let mut inner = Delta::default();
        compare(repo, node.subtree, None, &mut inner)?;
        delta.files -= inner.files;
        delta.dirs -= inner.dirs;
        delta.others -= inner.others;
        delta.bytes -= inner.bytes;
    }
    Ok(())
}
