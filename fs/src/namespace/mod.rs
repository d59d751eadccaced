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
//! numbers are derived from what an entry is (its folder's number and its
//! name, or a hard link's identity), so they stay stable while mounted even
//! though the table only holds the entries the kernel holds; hard links of
//! one snapshot (same device and inode recorded) share one inode number.
//! The snapshot list is re-read at most once a second, so snapshots made
//! by other processes appear without remounting.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use lru::LruCache;
use mapache_store::tree::{Node, NodeKind, Timestamp};
use mapache_store::{BlobId, IndexedRepository};
use nohash_hasher::BuildNoHashHasher;
use parking_lot::Mutex;

use crate::error::{FsError, FsResult};
use crate::staging::Entry as StagedEntry;
use crate::staging::{Staging, WeakEntry};

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
    /// The `staging` folder: the root of the staging tree, whichever it
    /// is now (a reset replaces it).
    StagingRoot,
    /// An entry below it, held without keeping it alive: one removed is
    /// gone (but for open files, see `Table::unlinked`).
    Staged(WeakEntry),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Child(u64, Vec<u8>),
    HardLink(BlobId, u64, u64),
    /// A staged entry, by its identity (shared by all its names).
    Staged(usize),
    /// `latest` while it points at this target.
    Latest(Vec<u8>),
}

/// The key of virtual entry `entry`, named `name` in folder `parent`; the
/// same whether it is found by a lookup or a listing.
fn virtual_key(parent: u64, name: &[u8], entry: &Entry) -> Key {
    match entry {
        Entry::Latest(target) => Key::Latest(target.clone()),
        _ => Key::Child(parent, name.to_vec()),
    }
}

/// The key of snapshot entry `node`, found in folder `parent` of the
/// snapshot with root tree `root`.
fn node_key(parent: u64, node: &Node, root: BlobId) -> Key {
    if node.kind == NodeKind::File && node.links > 1 {
        Key::HardLink(root, node.device, node.inode)
    } else {
        Key::Child(parent, node.name.clone())
    }
}

/// Inode numbers use 63 bits: some tools keep them in signed integers.
const NUMBER_BITS: u64 = u64::MAX >> 1;

/// The inode number entry `key` gets unless another entry has it: the same
/// key gives the same number every time it is looked up again.
fn number_for(key: &Key) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    // `DefaultHasher::new` hashes alike in every run of one build.
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish() & NUMBER_BITS
}

/// An entry and how many times the kernel was handed its number (lookups
/// and listed entries with attributes) less what it has forgotten.
struct Slot {
    entry: Entry,
    lookups: u64,
}

#[derive(Default)]
struct Table {
    /// The entries by inode number. Entries inside snapshots leave when the
    /// kernel forgets them (their numbers come back with their keys); the
    /// virtual folders and staged entries stay. Numbers are hashes already
    /// (`number_for`), so the map uses them as they are.
    entries: HashMap<u64, Slot, BuildNoHashHasher<u64>>,
    by_key: HashMap<Key, u64>,
    /// Staged files that lost a name while the kernel may hold them open,
    /// kept alive by inode number until the kernel forgets the inode: the
    /// mount gets no open or close (see `fuse/mod.rs`), so reads, writes
    /// and `fstat` of an unlinked open file find it through here.
    unlinked: HashMap<u64, StagedEntry>,
    /// While a `stage` request from another process runs: what the kernel
    /// cached that it changed.
    changed_outside: Option<Vec<Stale>>,
}

impl Table {
    fn get(&self, ino: u64) -> FsResult<Entry> {
        self.entries
            .get(&ino)
            .map(|slot| slot.entry.clone())
            .ok_or(FsError::NotFound)
    }

    /// The number of the entry `key` names, made with `entry` if there is
    /// none; `lookups` more times handed to the kernel.
    fn intern(&mut self, key: Key, lookups: u64, entry: impl FnOnce() -> Entry) -> u64 {
        if let Some(&ino) = self.by_key.get(&key) {
            if let Some(slot) = self.entries.get_mut(&ino) {
                slot.lookups += lookups;
            }
            return ino;
        }
        // A number taken (by a gone entry the kernel may still hold open,
        // or another key that hashed alike) is never shared: the next one.
        let mut ino = number_for(&key);
        while ino <= ROOT || self.entries.contains_key(&ino) {
            ino = ino.wrapping_add(1) & NUMBER_BITS;
        }
        self.entries.insert(
            ino,
            Slot {
                entry: entry(),
                lookups,
            },
        );
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
    /// How many of them are folders (for the link count: 2 + this).
    subfolders: u32,
}

impl Folder {
    fn find(&self, name: &[u8]) -> Option<&Arc<Node>> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

/// What the kernel must forget of what it cached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Stale {
    /// The entry of this name in this folder (inode): look it up again.
    Name(u64, Vec<u8>),
    /// The attributes of this inode: ask for them again.
    Attributes(u64),
}

/// Told what the kernel must forget.
pub type StaleHook = Box<dyn Fn(&Stale) + Send + Sync>;

/// The namespace of one mounted repository.
pub struct Namespace {
    repo: Arc<IndexedRepository>,
    /// Shared with the staging area's watcher, which keeps the numbers of
    /// staged entries following their names.
    table: Arc<Mutex<Table>>,
    view: Mutex<SnapshotView>,
    staging: Option<Arc<Staging>>,
    trees: Mutex<LruCache<BlobId, Arc<Folder>>>,
    uid: u32,
    gid: u32,
    mounted_at: Timestamp,
    /// Told when a commit made a snapshot (the mount drops the kernel's
    /// cached `latest`).
    on_commit: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// Told what the kernel cached that a `stage` request from another
    /// process changed.
    on_stale: std::sync::OnceLock<StaleHook>,
}

impl Namespace {
    /// A namespace over `repo`; entries belong to `uid`/`gid` where the
    /// snapshot does not say otherwise.
    pub fn new(repo: Arc<IndexedRepository>, uid: u32, gid: u32) -> Namespace {
        let mut table = Table::default();
        table.entries.insert(
            ROOT,
            Slot {
                entry: Entry::Root,
                lookups: 0,
            },
        );
        Namespace {
            repo,
            table: Arc::new(Mutex::new(table)),
            view: Mutex::new(SnapshotView::new()),
            trees: Mutex::new(LruCache::new(NonZeroUsize::new(4096).expect("non-zero"))),
            staging: None,
            uid,
            gid,
            mounted_at: mapache_store::now(),
            on_commit: std::sync::OnceLock::new(),
            on_stale: std::sync::OnceLock::new(),
        }
    }

    /// Calls `hook` after every commit that made a snapshot (once set).
    pub fn on_commit(&self, hook: Box<dyn Fn() + Send + Sync>) {
        let _ = self.on_commit.set(hook);
    }

    /// Calls `hook` with what the kernel cached that a `stage` request
    /// from another process changed (once set).
    pub fn on_stale(&self, hook: StaleHook) {
        let _ = self.on_stale.set(hook);
    }

    /// Shows `staging` as the writable `staging/` folder.
    pub fn with_staging(mut self, staging: Arc<Staging>) -> Namespace {
        let table = self.table.clone();
        staging.watch(Box::new(move |change| table.lock().follow(change)));
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
            subfolders: subfolders(&nodes),
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

    /// The number of snapshot entry `node` of folder `parent`, handed to
    /// the kernel `lookups` more times.
    fn intern_node(&self, parent: u64, node: &Arc<Node>, root: BlobId, lookups: u64) -> u64 {
        let key = node_key(parent, node, root);
        self.table.lock().intern(key, lookups, || Entry::Node {
            node: node.clone(),
            root,
            parent,
        })
    }

    fn entry(&self, ino: u64) -> FsResult<Entry> {
        self.table.lock().get(ino)
    }

    /// The attributes of entry `ino`, named `name` in folder `parent`,
    /// counted as handed to the kernel in a listing with attributes
    /// (READDIRPLUS), which the kernel takes as a lookup.
    pub fn listed(&self, parent: u64, name: &[u8], ino: u64) -> FsResult<Attr> {
        let counted = match self.table.lock().entries.get_mut(&ino) {
            Some(slot) => {
                slot.lookups += 1;
                true
            }
            None => false,
        };
        match counted {
            true => self.getattr(ino).inspect_err(|_| {
                // Gone since the listing was made (staging): not handed over.
                self.not_listed(ino);
            }),
            // Forgotten since the listing was made: made again, and counted.
            false => self.lookup(parent, name),
        }
    }

    /// Takes back the count of [`Namespace::listed`]: the entry did not fit
    /// in the reply.
    pub fn not_listed(&self, ino: u64) {
        if let Some(slot) = self.table.lock().entries.get_mut(&ino) {
            slot.lookups = slot.lookups.saturating_sub(1);
        }
    }

    /// The kernel forgot `lookups` of the times it was handed inode `ino`
    /// (all of them, when it evicts the inode). An entry inside a snapshot
    /// that the kernel no longer holds leaves the table: memory follows
    /// what the kernel holds, not everything ever looked up, and a later
    /// lookup makes it again under the same number. Counted rather than
    /// dropped at once: a lookup answered while the FORGET was on its way
    /// handed the number out again.
    pub fn forget(&self, ino: u64, lookups: u64) {
        let mut table = self.table.lock();
        // A file unlinked while open is let go when the kernel evicts it
        // (no lookup can race that: it has no name).
        table.unlinked.remove(&ino);
        let Some(slot) = table.entries.get_mut(&ino) else {
            return;
        };
        slot.lookups = slot.lookups.saturating_sub(lookups);
        let key = match &slot.entry {
            // A snapshot's root (parent 0) stays: it is found by listing.
            Entry::Node { node, root, parent } if *parent != 0 && slot.lookups == 0 => {
                node_key(*parent, node, *root)
            }
            // Found again by its identity while it lives.
            Entry::Staged(entry) if slot.lookups == 0 => Key::Staged(entry.identity()),
            _ => return,
        };
        table.entries.remove(&ino);
        if table.by_key.get(&key) == Some(&ino) {
            table.by_key.remove(&key);
        }
    }

    /// Looks up `name` in folder `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        check_name_length(name)?;
        let entry = self.entry(parent)?;
        match &entry {
            Entry::Node { node, root, .. } => {
                let tree = self.folder(node)?.ok_or(FsError::NotFound)?;
                let child = tree.find(name).ok_or(FsError::NotFound)?;
                let ino = self.intern_node(parent, child, *root, 1);
                self.getattr(ino)
            }
            Entry::Latest(_) => Err(FsError::NotDir),
            Entry::Staged(_) | Entry::StagingRoot => self.staged_lookup(parent, name),
            _ => {
                let (_, child) = self
                    .virtual_children(&entry)?
                    .into_iter()
                    .find(|(n, _)| n == name)
                    .ok_or(FsError::NotFound)?;
                let ino = self
                    .table
                    .lock()
                    .intern(virtual_key(parent, name, &child), 1, || child);
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
            Entry::Node { node, .. } => {
                let mut attr = Attr::of_node(ino, &node);
                if let Some(folder) = self.folder(&node).ok().flatten() {
                    attr.nlink = 2 + folder.subfolders;
                }
                attr
            }
            Entry::Staged(_) | Entry::StagingRoot => self.staged_attr(ino, &self.staged(ino)?)?,
            Entry::Latest(target) => {
                let mut attr = virtual_dir(1);
                attr.kind = NodeKind::Symlink;
                attr.perm = 0o777;
                attr.size = target.len() as u64;
                attr
            }
            _ => {
                let children = self.virtual_children(&entry)?;
                let subfolders = children
                    .iter()
                    .filter(|(_, child)| !matches!(child, Entry::Latest(_)))
                    .count();
                virtual_dir(2 + subfolders as u32)
            }
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
                        ino: self.intern_node(ino, child, *root, 0),
                        kind: child.kind,
                        name: child.name.clone(),
                    })
                    .collect())
            }
            Entry::Latest(_) => Err(FsError::NotDir),
            Entry::Staged(_) | Entry::StagingRoot => self.staged_readdir(ino),
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
                            ino: table.intern(key, 0, || child),
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
            Entry::Staged(_) | Entry::StagingRoot => {
                let node = self.staging()?.stat(&self.staged(ino)?)?;
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
        let table = self.table.lock();
        tree.nodes[after..]
            .iter()
            .filter(|n| n.kind == NodeKind::File && n.size > 0 && n.size <= max_size)
            .take(count)
            // Only files the kernel was handed (listed): it refuses to take
            // pages for inodes it does not know.
            .filter_map(|n| {
                let ino = table.by_key.get(&node_key(parent, n, root))?;
                Some((*ino, n.clone()))
            })
            .collect()
    }

    /// The extended attributes of `ino`, sorted by name.
    pub fn xattrs(&self, ino: u64) -> FsResult<Vec<(Vec<u8>, Vec<u8>)>> {
        match self.entry(ino)? {
            Entry::Node { node, .. } => Ok(node.xattrs.clone()),
            Entry::Staged(_) | Entry::StagingRoot => {
                Ok(self.staging()?.stat(&self.staged(ino)?)?.xattrs)
            }
            _ => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests;

/// How many of `nodes` are folders: a folder's link count is 2 (its name
/// and its `.`) plus one for the `..` of each.
fn subfolders(nodes: &[Node]) -> u32 {
    nodes.iter().filter(|n| n.kind == NodeKind::Dir).count() as u32
}

/// The longest name a folder entry may have, as `statfs` reports.
pub const NAME_MAX: usize = 255;

/// Refuses names no filesystem here could hold: ENAMETOOLONG, as ext4
/// answers, for new names and lookups alike.
fn check_name_length(name: &[u8]) -> FsResult<()> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    Ok(())
}
