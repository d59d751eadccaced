//! What differs between two trees: entries added, removed, with changed
//! content, or with changed metadata only. Subtrees with the same id are
//! equal and not descended.

use std::cmp::Ordering;

use serde::Serialize;

use crate::error::Result;
use crate::id::BlobId;
use crate::repository::IndexedRepository;
use crate::tree::{Node, NodeKind, Tree};

/// How an entry differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Only in the second tree.
    Added,
    /// Only in the first tree.
    Removed,
    /// A file whose content differs (or an entry whose type or target
    /// does).
    Modified,
    /// Same content, other metadata (mode, owner, times, xattrs).
    Metadata,
}

/// One difference.
#[derive(Clone, Debug, Serialize)]
pub struct Difference {
    /// What changed.
    pub change: Change,
    /// The path (lossy UTF-8), folders ending in `/`.
    pub path: String,
    /// Bytes of the file in the second tree (the first for removals).
    pub size: u64,
}

/// Counts of a comparison.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DiffTotals {
    /// Entries added, and the bytes of added files.
    pub added: u64,
    /// Bytes added.
    pub added_bytes: u64,
    /// Entries removed.
    pub removed: u64,
    /// Bytes removed.
    pub removed_bytes: u64,
    /// Entries with changed content.
    pub modified: u64,
    /// Entries with changed metadata only.
    pub metadata: u64,
}

/// Compares two lists of entries (the roots of two trees, or of two
/// folders in them) below `path`.
pub fn diff(
    repo: &IndexedRepository,
    first: &[Node],
    second: &[Node],
    path: &str,
    out: &mut Vec<Difference>,
) -> Result<()> {
    pair_by_name(first, second, |a, b| match (a, b) {
        (Some(a), Some(b)) => compare(repo, a, b, path, out),
        (Some(a), None) => everything(repo, a, path, Change::Removed, out),
        (None, Some(b)) => everything(repo, b, path, Change::Added, out),
        (None, None) => unreachable!("every name is on one side at least"),
    })
}

/// Pairs the entries of two folders (each sorted by name) by name, in
/// name order: `each` gets every name once, with its entry in `first`,
/// in `second`, or in both.
pub fn pair_by_name<'a, E>(
    first: &'a [Node],
    second: &'a [Node],
    mut each: impl FnMut(Option<&'a Node>, Option<&'a Node>) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let (mut i, mut j) = (0, 0);
    while i < first.len() || j < second.len() {
        let order = match (first.get(i), second.get(j)) {
            (Some(a), Some(b)) => a.name.cmp(&b.name),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                each(Some(&first[i]), None)?;
                i += 1;
            }
            Ordering::Greater => {
                each(None, Some(&second[j]))?;
                j += 1;
            }
            Ordering::Equal => {
                each(Some(&first[i]), Some(&second[j]))?;
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

fn child_path(path: &str, node: &Node) -> String {
    let slash = if node.kind == NodeKind::Dir { "/" } else { "" };
    format!("{path}/{}{slash}", node.name_lossy())
}

fn children(repo: &IndexedRepository, id: Option<BlobId>) -> Result<Vec<Node>> {
    match id {
        Some(id) => Ok(repo.load_tree(&id)?.nodes),
        None => Ok(Tree::default().nodes),
    }
}

/// `node` and everything below it, as added or removed.
fn everything(
    repo: &IndexedRepository,
    node: &Node,
    path: &str,
    change: Change,
    out: &mut Vec<Difference>,
) -> Result<()> {
    let shown = child_path(path, node);
    out.push(Difference {
        change,
        path: shown.clone(),
        size: node.size,
    });
    if node.kind == NodeKind::Dir {
        for child in children(repo, node.subtree)? {
            everything(repo, &child, shown.trim_end_matches('/'), change, out)?;
        }
    }
    Ok(())
}

fn same_metadata(a: &Node, b: &Node) -> bool {
    a.mode == b.mode
        && a.uid == b.uid
        && a.gid == b.gid
        && a.mtime == b.mtime
        && a.xattrs == b.xattrs
}

fn compare(
    repo: &IndexedRepository,
    a: &Node,
    b: &Node,
    path: &str,
    out: &mut Vec<Difference>,
) -> Result<()> {
    let shown = child_path(path, b);
    if a.kind != b.kind {
        everything(repo, a, path, Change::Removed, out)?;
        return everything(repo, b, path, Change::Added, out);
    }
    let content_differs = match a.kind {
        NodeKind::File => a.content != b.content,
        NodeKind::Symlink => a.link_target != b.link_target,
        NodeKind::CharDevice | NodeKind::BlockDevice => a.rdev != b.rdev,
        _ => false,
    };
    let change = if content_differs {
        Some(Change::Modified)
    } else if !same_metadata(a, b) {
        Some(Change::Metadata)
    } else {
        None
    };
    if let Some(change) = change {
        out.push(Difference {
            change,
            path: shown.clone(),
            size: b.size,
        });
    }
    if a.kind == NodeKind::Dir && a.subtree != b.subtree {
        let (first, second) = (children(repo, a.subtree)?, children(repo, b.subtree)?);
        diff(repo, &first, &second, shown.trim_end_matches('/'), out)?;
    }
    Ok(())
}

/// The totals of `differences`.
pub fn totals(differences: &[Difference]) -> DiffTotals {
    let mut totals = DiffTotals::default();
    for d in differences {
        match d.change {
            Change::Added => {
                totals.added += 1;
                totals.added_bytes += d.size;
            }
            Change::Removed => {
                totals.removed += 1;
                totals.removed_bytes += d.size;
            }
            Change::Modified => totals.modified += 1,
            Change::Metadata => totals.metadata += 1,
        }
    }
    totals
}
