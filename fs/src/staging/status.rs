//! What the staging view changes against its base snapshot, for `stage
//! status` and `stage diff`.

use mapache_store::tree::{Node, NodeKind};
use mapache_store::BlobId;

use super::overlay::{Children, Entry};
use super::{Change, Staging};
use crate::error::FsResult;

impl Staging {
    /// What differs from the base, path by path.
    pub fn status(&self) -> FsResult<Vec<Change>> {
        let base_tree = match self.base() {
            Some(id) => Some(self.repo.load_snapshot(&id)?.tree),
            None => None,
        };
        let mut changes = Vec::new();
        self.compare_dir(b"", base_tree, &mut changes)?;
        Ok(changes)
    }

    fn compare_dir(
        &self,
        path: &[u8],
        base: Option<BlobId>,
        changes: &mut Vec<Change>,
    ) -> FsResult<()> {
        let base_nodes = match base {
            Some(id) => self.repo.load_tree(&id)?.nodes,
            None => Vec::new(),
        };
        // Untouched folders are not loaded: compare cheaply by tree id.
        let current = self.list_nodes(&self.resolve(path)?)?;
        let show = |name: &[u8]| {
            let joined = if path.is_empty() {
                name.to_vec()
            } else {
                [path, b"/", name].concat()
            };
            String::from_utf8_lossy(&joined).into_owned()
        };
        let mut old = base_nodes.iter().peekable();
        let mut new = current.iter().peekable();
        loop {
            match (old.peek(), new.peek()) {
                (None, None) => break,
                (Some(o), n) if n.is_none_or(|n| o.name < n.name) => {
                    changes.push(Change::Removed(show(&o.name)));
                    old.next();
                }
                (o, Some(n)) if o.is_none_or(|o| n.name < o.name) => {
                    changes.push(Change::Added(show(&n.name)));
                    self.collect_added(&show(&n.name), n, changes)?;
                    new.next();
                }
                (Some(o), Some(n)) => {
                    let child = if path.is_empty() {
                        n.name.clone()
                    } else {
                        [path, b"/", &n.name].concat()
                    };
                    if o.kind == NodeKind::Dir && n.kind == NodeKind::Dir {
                        if self.dir_differs(&child, o)? {
                            self.compare_dir(&child, o.subtree, changes)?;
                        }
                    } else if !same_entry(o, n) {
                        changes.push(Change::Modified(show(&n.name)));
                    }
                    old.next();
                    new.next();
                }
                _ => unreachable!("all cases covered"),
            }
        }
        Ok(())
    }

    fn collect_added(&self, shown: &str, node: &Node, changes: &mut Vec<Change>) -> FsResult<()> {
        if node.kind != NodeKind::Dir {
            return Ok(());
        }
        for child in self.list_nodes(&self.resolve(shown.as_bytes())?)? {
            let name = format!("{shown}/{}", child.name_lossy());
            changes.push(Change::Added(name.clone()));
            self.collect_added(&name, &child, changes)?;
        }
        Ok(())
    }

    /// Whether a folder may differ from its base version: any folder that
    /// was loaded is compared entry by entry.
    fn dir_differs(&self, path: &[u8], base: &Node) -> FsResult<bool> {
        let mut inner = self.inner.lock();
        Ok(match inner.overlay.get(path)? {
            Entry::Dir(dir) => match &dir.lock().children {
                Children::Base(id) => *id != base.subtree,
                Children::Loaded(_) => true,
            },
            _ => true,
        })
    }
}

/// Whether a staged entry is unchanged from its base node.
fn same_entry(old: &Node, new: &Node) -> bool {
    old.kind == new.kind
        && old.mode == new.mode
        && old.uid == new.uid
        && old.gid == new.gid
        && old.size == new.size
        && old.mtime == new.mtime
        && old.content == new.content
        && old.link_target == new.link_target
        && old.xattrs == new.xattrs
}
