//! The read-only namespace of a mounted repository:
//!
//! ```text
//! /snapshots/<YYYY-MM-DDTHH:MM:SS>/...   one tree per snapshot (local time)
//! /ids/<short id>/...                    the same, by id
//! /latest -> snapshots/<newest>
//! /tags/<tag>/<time>/...                 snapshots carrying the tag
//! /hosts/<host>/<time>/...               snapshots of the host
//! /staging/...                           the writable staging area (when mounted with it)
//! ```
//!
//! Plain Rust, no FUSE: the adapter in `fuse/` only translates. Inode
//! numbers are assigned on first lookup and stay stable while mounted; hard
//! links of one snapshot (same device and inode recorded) share one inode
//! number. The snapshot list is re-read at most once a second, so snapshots
//! made by other processes appear without remounting.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use lru::LruCache;
use mapache_store::tree::{Node, NodeKind, Timestamp};
use mapache_store::{BlobId, IndexedRepository};
use parking_lot::Mutex;

use crate::error::{FsError, FsResult};
use crate::staging::{OpenFile, Staging};

mod snapshots;
mod staged;

use snapshots::SnapshotView;

pub use staged::SetAttr;

/// The inode number of the mount's root.
pub const ROOT: u64 = 1;

/// How often the snapshot list is re-read at most.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Attributes of an entry, as `stat` shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Entry type.
    pub kind: NodeKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (with setuid, setgid, sticky).
    pub perm: u16,
    /// Hard link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number of device nodes.
    pub rdev: u64,
    /// Access time.
    pub atime: Timestamp,
    /// Modification time.
    pub mtime: Timestamp,
    /// Status change time.
    pub ctime: Timestamp,
}

impl Attr {
    /// The attributes of a tree node shown as inode `ino`.
    pub fn of_node(ino: u64, node: &Node) -> Attr {
        Attr {
            ino,
            kind: node.kind,
            size: match node.kind {
                NodeKind::File => node.size,
                NodeKind::Symlink => node.link_target.len() as u64,
                _ => 0,
            },
            perm: (node.mode & 0o7777) as u16,
            nlink: match node.kind {
                NodeKind::Dir => 2,
                _ => node.links.clamp(1, u32::MAX as u64) as u32,
            },
            uid: node.uid,
            gid: node.gid,
            rdev: node.rdev,
            atime: node.atime,
            mtime: node.mtime,
            ctime: node.ctime,
        }
    }
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Inode number.
    pub ino: u64,
    /// Entry type.
    pub kind: NodeKind,
    /// Name.
    pub name: Vec<u8>,
}

/// How a group folder groups snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Grouping {
    Tag,
    Host,
}

/// What an inode is.
#[derive(Clone, Debug)]
enum Entry {
    Root,
    /// `snapshots/` (by time) or `ids/` (by short id).
    SnapshotList {
        by_id: bool,
    },
    /// `tags/` or `hosts/`.
    Groups(Grouping),
    /// `tags/<tag>/` or `hosts/<host>/`.
    Group(Grouping, String),
    /// The `latest` symlink, pointing at this target. A new newest
    /// snapshot makes a new entry with a new inode number: the kernel may
    /// then cache each one's target for good (FUSE_CACHE_SYMLINKS).
    Latest(Vec<u8>),
    /// An entry inside a snapshot (the snapshot's root is a synthetic
    /// folder node). `root` names the snapshot's root tree; `parent` is the
    /// folder it was first found in (0 for a snapshot's root).
    Node {
        node: Arc<Node>,
        root: BlobId,
        parent: u64,
    },
    /// A `Node` the kernel forgot: its number stays, and where to find its
    /// node again (entry `name` of folder `parent`), not the node itself.
    Released {
        parent: u64,
        name: Vec<u8>,
        root: BlobId,
    },
    /// The staging entry at this path (empty: the `staging` folder itself).
    Staged(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Child(u64, Vec<u8>),
    HardLink(BlobId, u64, u64),
    Staged(Vec<u8>),
    /// A staged file with more than one name: one inode number for all.
    StagedLink(u64, u64),
    /// `latest` while it points at this target.
    Latest(Vec<u8>),
}

/// The key of virtual entry `entry`, named `name` in folder `parent`; the
/// same whether it is found by a lookup or a listing.
fn virtual_key(parent: u64, name: &[u8], entry: &Entry) -> Key {
    match entry {
        Entry::Staged(path) => Key::Staged(path.clone()),
        Entry::Latest(target) => Key::Latest(target.clone()),
        _ => Key::Child(parent, name.to_vec()),
    }
}

#[derive(Default)]
struct Table {
    entries: Vec<Entry>,
    by_key: HashMap<Key, u64>,
    /// Staged entries by path, in path order: renaming or removing finds
    /// what sits at and below a path with one range instead of a scan of
    /// every inode (which made `rm -r` and `mv` of many staged files
    /// quadratic).
    staged: BTreeSet<(Vec<u8>, u64)>,
    /// Staged files whose last name went while the kernel may still hold
    /// them open, by inode number, until the kernel forgets the inode: the
    /// mount gets no open or close (see `fuse/mod.rs`), so reads, writes
    /// and `fstat` of an unlinked open file find it here.
    unlinked: HashMap<u64, OpenFile>,
}

impl Table {
    fn get(&self, ino: u64) -> FsResult<Entry> {
        ino.checked_sub(1)
            .and_then(|i| self.entries.get(i as usize))
            .cloned()
            .ok_or(FsError::NotFound)
    }

    /// Whether `ino` is a staged entry whose names are all gone.
    fn is_gone(&self, ino: u64) -> bool {
        // By reference: `get` clones the entry, and this runs on every
        // intern.
        let entry = ino
            .checked_sub(1)
            .and_then(|i| self.entries.get(i as usize));
        matches!(entry, Some(Entry::Staged(path)) if path == staged::GONE)
    }

    fn intern(&mut self, key: Key, entry: impl FnOnce() -> Entry) -> u64 {
        // A key of a gone entry (a hard link's identity, say) is stale: its
        // file gets a new number if it shows up again.
        match self.by_key.get(&key) {
            Some(&ino) if !self.is_gone(ino) => {
                let slot = &mut self.entries[ino as usize - 1];
                if matches!(slot, Entry::Released { .. }) {
                    *slot = entry();
                }
                return ino;
            }
            _ => {}
        }
        let entry = entry();
        self.entries.push(entry);
        let ino = self.entries.len() as u64;
        if let Some(Entry::Staged(path)) = self.entries.last() {
            self.staged.insert((path.clone(), ino));
        }
        self.by_key.insert(key, ino);
        ino
    }
}

/// A folder's tree as the namespace caches it: its nodes are shared with
/// the entries made from them, so an entry looked up costs a pointer, not
/// a copy of its node.
struct Folder {
    /// Sorted by name, as trees are stored.
    nodes: Vec<Arc<Node>>,
}

impl Folder {
    fn find(&self, name: &[u8]) -> Option<&Arc<Node>> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

/// The namespace of one mounted repository.
pub struct Namespace {
    repo: Arc<IndexedRepository>,
    table: Mutex<Table>,
    view: Mutex<SnapshotView>,
    staging: Option<Arc<Staging>>,
    trees: Mutex<LruCache<BlobId, Arc<Folder>>>,
    uid: u32,
    gid: u32,
    mounted_at: Timestamp,
}

impl Namespace {
    /// A namespace over `repo`; entries belong to `uid`/`gid` where the
    /// snapshot does not say otherwise.
    pub fn new(repo: Arc<IndexedRepository>, uid: u32, gid: u32) -> Namespace {
        let mut table = Table::default();
        table.entries.push(Entry::Root);
        Namespace {
            repo,
            table: Mutex::new(table),
            view: Mutex::new(SnapshotView::new()),
            trees: Mutex::new(LruCache::new(NonZeroUsize::new(4096).expect("non-zero"))),
            staging: None,
            uid,
            gid,
            mounted_at: mapache_store::snapshot::now(),
        }
    }

    /// Shows `staging` as the writable `staging/` folder.
    pub fn with_staging(mut self, staging: Arc<Staging>) -> Namespace {
        self.staging = Some(staging);
        self
    }

    /// The repository.
    pub fn repo(&self) -> &Arc<IndexedRepository> {
        &self.repo
    }

    fn tree(&self, id: &BlobId) -> FsResult<Arc<Folder>> {
        if let Some(tree) = self.trees.lock().get(id) {
            return Ok(tree.clone());
        }
        let nodes = self.repo.load_tree(id)?.nodes;
        let tree = Arc::new(Folder {
            nodes: nodes.into_iter().map(Arc::new).collect(),
        });
        self.trees.lock().put(*id, tree.clone());
        Ok(tree)
    }

    /// The entries of snapshot folder `node`: `None` for a folder recorded
    /// empty, NotDir for anything else.
    fn folder(&self, node: &Node) -> FsResult<Option<Arc<Folder>>> {
        match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(id)) => Ok(Some(self.tree(&id)?)),
            (NodeKind::Dir, None) => Ok(None),
            _ => Err(FsError::NotDir),
        }
    }

    fn intern_node(&self, parent: u64, node: &Arc<Node>, root: BlobId) -> u64 {
        let key = if node.kind == NodeKind::File && node.links > 1 {
            Key::HardLink(root, node.device, node.inode)
        } else {
            Key::Child(parent, node.name.clone())
        };
        self.table.lock().intern(key, || Entry::Node {
            node: node.clone(),
            root,
            parent,
        })
    }

    /// Entry `ino`, its node found again if the kernel had forgotten it.
    fn entry(&self, ino: u64) -> FsResult<Entry> {
        // Bound first: the table's lock must not be held below.
        let entry = self.table.lock().get(ino)?;
        match entry {
            Entry::Released { parent, name, root } => {
                let Entry::Node { node: folder, .. } = self.entry(parent)? else {
                    return Err(FsError::NotFound);
                };
                let node = self
                    .folder(&folder)?
                    .and_then(|tree| tree.find(&name).cloned())
                    .ok_or(FsError::NotFound)?;
                let entry = Entry::Node { node, root, parent };
                let mut table = self.table.lock();
                let slot = &mut table.entries[ino as usize - 1];
                if matches!(slot, Entry::Released { .. }) {
                    *slot = entry.clone();
                }
                Ok(entry)
            }
            entry => Ok(entry),
        }
    }

    /// The kernel forgot inode `ino`. An entry of a snapshot keeps its
    /// number and where its node is, and lets the node go: memory follows
    /// what the kernel holds, not everything ever looked up.
    pub fn forget(&self, ino: u64) {
        let mut table = self.table.lock();
        table.unlinked.remove(&ino);
        let Some(slot) = ino
            .checked_sub(1)
            .and_then(|i| table.entries.get_mut(i as usize))
        else {
            return;
        };
        if let Entry::Node { node, root, parent } = slot {
            // A snapshot's root (parent 0) stays: it is found by listing.
            if *parent != 0 {
                *slot = Entry::Released {
                    parent: *parent,
                    name: node.name.clone(),
                    root: *root,
                };
            }
        }
    }

    /// Looks up `name` in folder `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        let entry = self.entry(parent)?;
        match &entry {
            Entry::Node { node, root, .. } => {
                let tree = self.folder(node)?.ok_or(FsError::NotFound)?;
                let child = tree.find(name).ok_or(FsError::NotFound)?;
                let ino = self.intern_node(parent, child, *root);
                self.getattr(ino)
            }
            Entry::Latest(_) => Err(FsError::NotDir),
            Entry::Staged(path) => self.staged_lookup(path, name),
            _ => {
                let (_, child) = self
                    .virtual_children(&entry)?
                    .into_iter()
                    .find(|(n, _)| n == name)
                    .ok_or(FsError::NotFound)?;
                let ino = self
                    .table
                    .lock()
                    .intern(virtual_key(parent, name, &child), || child);
                self.getattr(ino)
            }
        }
    }

    /// Whether `ino` is one of the virtual folders around the snapshots,
    /// whose content changes as snapshots come and go.
    pub fn is_virtual(&self, ino: u64) -> bool {
        matches!(
            self.table.lock().get(ino),
            Ok(Entry::Root
                | Entry::SnapshotList { .. }
                | Entry::Groups(_)
                | Entry::Group(..)
                | Entry::Latest(_))
        )
    }

    /// The attributes of inode `ino`.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let entry = self.entry(ino)?;
        let virtual_dir = |nlink| Attr {
            ino,
            kind: NodeKind::Dir,
            size: 0,
            perm: 0o555,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            atime: self.mounted_at,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
        };
        Ok(match entry {
            Entry::Node { node, .. } => Attr::of_node(ino, &node),
            Entry::Staged(path) => self.staged_attr(ino, &path)?,
            Entry::Latest(target) => {
                let mut attr = virtual_dir(1);
                attr.kind = NodeKind::Symlink;
                attr.perm = 0o777;
                attr.size = target.len() as u64;
                attr
            }
            _ => virtual_dir(2),
        })
    }

    /// The entries of folder `ino` (without `.` and `..`).
    pub fn readdir(&self, ino: u64) -> FsResult<Vec<DirEntry>> {
        let entry = self.entry(ino)?;
        match &entry {
            Entry::Node { node, root, .. } => {
                let Some(tree) = self.folder(node)? else {
                    return Ok(Vec::new());
                };
                Ok(tree
                    .nodes
                    .iter()
                    .map(|child| DirEntry {
                        ino: self.intern_node(ino, child, *root),
                        kind: child.kind,
                        name: child.name.clone(),
                    })
                    .collect())
            }
            Entry::Latest(_) => Err(FsError::NotDir),
            Entry::Staged(path) => self.staged_readdir(path),
            _ => {
                let children = self.virtual_children(&entry)?;
                let mut table = self.table.lock();
                Ok(children
                    .into_iter()
                    .map(|(name, child)| {
                        let kind = match child {
                            Entry::Latest(_) => NodeKind::Symlink,
                            _ => NodeKind::Dir,
                        };
                        let key = virtual_key(ino, &name, &child);
                        DirEntry {
                            ino: table.intern(key, || child),
                            kind,
                            name,
                        }
                    })
                    .collect())
            }
        }
    }

    /// The target of symlink `ino`.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        match self.entry(ino)? {
            Entry::Node { node, .. } if node.kind == NodeKind::Symlink => {
                Ok(node.link_target.clone())
            }
            Entry::Latest(target) => Ok(target),
            Entry::Staged(path) => {
                let node = self.staging()?.stat(&path)?;
                match node.kind {
                    NodeKind::Symlink => Ok(node.link_target),
                    _ => Err(FsError::NotSymlink),
                }
            }
            _ => Err(FsError::NotSymlink),
        }
    }

    /// The node of file `ino`, for reading its content.
    pub fn file(&self, ino: u64) -> FsResult<Arc<Node>> {
        match self.entry(ino)? {
            Entry::Node { node, .. } if node.kind == NodeKind::File => Ok(node),
            Entry::Node { node, .. } if node.kind == NodeKind::Dir => Err(FsError::IsDir),
            Entry::Node { .. } => Err(FsError::NotFound),
            _ => Err(FsError::IsDir),
        }
    }

    /// The first blobs of the files in snapshot folder `ino`, in name
    /// order, up to about `budget` bytes (for read-ahead); nothing for other
    /// folders.
    pub fn first_blobs(&self, ino: u64, budget: u64) -> Vec<BlobId> {
        let tree = match self.entry(ino) {
            Ok(Entry::Node { node, .. }) => self.folder(&node),
            _ => Ok(None),
        };
        let Ok(Some(tree)) = tree else {
            return Vec::new();
        };
        let mut spent = 0u64;
        tree.nodes
            .iter()
            .filter(|n| n.kind == NodeKind::File && !n.content.is_empty())
            .take_while(|n| {
                // A first blob is at most the file, and rarely more than 2 MiB.
                spent += n.size.min(2 << 20);
                spent <= budget
            })
            .map(|n| n.content[0])
            .collect()
    }

    /// Up to `count` files of at most `max_size` bytes (and not empty) that
    /// follow snapshot file `ino` in its folder, with their inode numbers:
    /// whoever reads one file of a folder tends to read the next ones.
    pub fn files_after(&self, ino: u64, max_size: u64, count: usize) -> Vec<(u64, Arc<Node>)> {
        let (name, parent) = match self.entry(ino) {
            Ok(Entry::Node { node, parent, .. }) => (node.name.clone(), parent),
            _ => return Vec::new(),
        };
        let (tree, root) = match self.entry(parent) {
            Ok(Entry::Node { node, root, .. }) => (self.folder(&node), root),
            _ => return Vec::new(),
        };
        let Ok(Some(tree)) = tree else {
            return Vec::new();
        };
        let after = tree.nodes.partition_point(|n| n.name <= name);
        tree.nodes[after..]
            .iter()
            .filter(|n| n.kind == NodeKind::File && n.size > 0 && n.size <= max_size)
            .take(count)
            .map(|n| (self.intern_node(parent, n, root), n.clone()))
            .collect()
    }

    /// The extended attributes of `ino`, sorted by name.
    pub fn xattrs(&self, ino: u64) -> FsResult<Vec<(Vec<u8>, Vec<u8>)>> {
        match self.entry(ino)? {
            Entry::Node { node, .. } => Ok(node.xattrs.clone()),
            Entry::Staged(path) => Ok(self.staging()?.stat(&path)?.xattrs),
            _ => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests;
