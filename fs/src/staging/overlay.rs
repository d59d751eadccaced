//! The staging view in memory: the base snapshot's tree, loaded lazily
//! folder by folder, with the changes applied on top.
//!
//! A folder nobody touched stays `Children::Base(tree id)`; committing
//! reuses that id without reading it. Only folders along changed paths are
//! loaded and written again, so a commit costs what changed, not the size
//! of the base.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mapache_store::tree::{Node, NodeKind};
use mapache_store::{BlobId, IndexedRepository, OwnerNames};
use parking_lot::Mutex;

use super::journal::{Meta, Op};
use crate::error::{FsError, FsResult};

/// Where the current bytes of a staged file are.
#[derive(Debug)]
pub enum Bytes {
    /// In the repository: the node's content (a base file never changed,
    /// an imported one, or one uploaded whose local copy is gone).
    Stored,
    /// A small new file's bytes, kept in memory and in the journal instead
    /// of a local file; not uploaded yet.
    Inline(Vec<u8>),
    /// In local data file `number` of the state folder. `dirty`: newer
    /// than the node's content, to be uploaded; otherwise a copy kept
    /// while the file is open (or of a file without a name, which nothing
    /// could replay).
    Local {
        /// The data file's number.
        number: u64,
        /// Whether the bytes are newer than the stored content.
        dirty: bool,
    },
}

impl Bytes {
    /// Whether the bytes are newer than the stored content.
    pub fn is_dirty(&self) -> bool {
        match self {
            Bytes::Stored => false,
            Bytes::Inline(_) => true,
            Bytes::Local { dirty, .. } => *dirty,
        }
    }

    /// The local data file, if the bytes are in one.
    pub fn local(&self) -> Option<u64> {
        match self {
            Bytes::Local { number, .. } => Some(*number),
            _ => None,
        }
    }

    /// The bytes of a small new file, if they are in memory.
    pub fn inline(&self) -> Option<&Vec<u8>> {
        match self {
            Bytes::Inline(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// Lets go of the local copy of bytes that are stored: they are read
    /// from the repository from now on. Returns the data file to remove.
    pub fn drop_local_copy(&mut self) -> Option<u64> {
        match *self {
            Bytes::Local {
                number,
                dirty: false,
            } => {
                *self = Bytes::Stored;
                Some(number)
            }
            _ => None,
        }
    }
}

/// A regular file of the staging view. Hard links share one.
#[derive(Debug)]
pub struct FileEntry {
    /// Journal id; 0 while the file is an untouched base file.
    pub fid: u64,
    /// Metadata and the stored content.
    pub node: Node,
    /// Where the current bytes are.
    pub bytes: Bytes,
    /// Open write handles.
    pub writers: u32,
    /// When the file was last written by a writer without a handle (the
    /// mount gets no open or close of files the kernel opens itself, see
    /// `fuse/mod.rs`): such a writer may still be at it.
    pub loose_write: Option<Instant>,
    /// Blob offsets of the stored content, once computed for reading.
    pub stored: Option<Arc<crate::FileContent>>,
    /// Counts changes to the bytes: an upload that started at another
    /// version is stale and not recorded.
    pub version: u64,
    /// An upload of this file runs outside the staging lock.
    pub uploading: bool,
}

/// How long after a write without a handle a file counts as still being
/// written: uploading it sooner would most likely upload it again.
const LOOSE_IDLE: Duration = Duration::from_secs(2);

impl FileEntry {
    /// Whether someone may still be writing: an open writer, or a write
    /// without a handle in the last [`LOOSE_IDLE`].
    pub fn in_use(&self) -> bool {
        self.writers > 0 || self.loose_write.is_some_and(|at| at.elapsed() < LOOSE_IDLE)
    }
}

/// A shared file.
pub type FileRef = Arc<Mutex<FileEntry>>;

/// A symlink, fifo, device or socket; hard links share one, as they share
/// a [`FileRef`].
pub type SpecialRef = Arc<Mutex<Node>>;

/// A loaded folder's entries by name.
pub type Entries = BTreeMap<Vec<u8>, Entry>;

/// The entries of a folder: still the base tree, or loaded.
#[derive(Debug)]
pub enum Children {
    /// Unchanged since the base: this tree (none for an empty folder).
    Base(Option<BlobId>),
    /// Loaded, possibly changed.
    Loaded(Entries),
}

/// One entry of the staging view.
#[derive(Debug)]
pub enum Entry {
    /// A folder: its own metadata (boxed: a folder's map holds mostly
    /// files, whose variant is a pointer) and its entries.
    Dir(Box<Node>, Children),
    /// A regular file.
    File(FileRef),
    /// Anything else (symlink, fifo, device, socket), metadata only.
    Other(SpecialRef),
}

impl Entry {
    /// The node for `stat`.
    pub fn node(&self) -> Node {
        match self {
            Entry::Dir(node, _) => (**node).clone(),
            Entry::File(file) => file.lock().node.clone(),
            Entry::Other(special) => special.lock().clone(),
        }
    }

    /// Runs `change` on the entry's node (shared by all names of a hard
    /// link).
    fn change_node<T>(&mut self, change: impl FnOnce(&mut Node) -> T) -> T {
        match self {
            Entry::Dir(node, _) => change(node),
            Entry::File(file) => change(&mut file.lock().node),
            Entry::Other(special) => change(&mut special.lock()),
        }
    }

    /// Another name of the same file or special node (none for folders,
    /// which have one name).
    fn share(&self) -> Option<Entry> {
        match self {
            Entry::Dir(..) => None,
            Entry::File(file) => Some(Entry::File(file.clone())),
            Entry::Other(special) => Some(Entry::Other(special.clone())),
        }
    }

    /// Whether `self` and `other` are names of one file or special node.
    fn same_as(&self, other: &Entry) -> bool {
        match (self, other) {
            (Entry::File(a), Entry::File(b)) => Arc::ptr_eq(a, b),
            (Entry::Other(a), Entry::Other(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// The link count of a file or special node (folders: 0, as they are
    /// never hard-linked).
    fn links(&self) -> u64 {
        match self {
            Entry::Dir(..) => 0,
            Entry::File(file) => file.lock().node.links,
            Entry::Other(special) => special.lock().links,
        }
    }

    /// Takes the name `name` after a rename (its change time with it).
    fn moved_to(&mut self, name: &[u8]) {
        self.change_node(|node| {
            node.name = name.to_vec();
            node.ctime = now();
        })
    }
}

/// The staging path of `name` in folder `dir` (the root for an empty one).
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

/// Splits a staging path (`a/b/c`, slashes at either end ignored) into names.
pub fn components(path: &[u8]) -> Vec<&[u8]> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect()
}

fn now() -> mapache_store::tree::Timestamp {
    mapache_store::now()
}

/// A folder node with the given metadata.
pub fn dir_node(name: &[u8], meta: &Meta) -> Node {
    let mut node = Node::new(name, NodeKind::Dir);
    apply_meta(&mut node, meta);
    node.ctime = now();
    node
}

/// The names of this machine's users and groups, looked up once each.
fn owner_names() -> &'static OwnerNames {
    static NAMES: std::sync::OnceLock<OwnerNames> = std::sync::OnceLock::new();
    NAMES.get_or_init(OwnerNames::default)
}

/// Applies chmod/chown/utimes metadata. An owner that changes (or one
/// without a name) is named as this machine names it, as `snapshot`
/// records names: `ls -l` of the snapshot and restores by name need them.
pub fn apply_meta(node: &mut Node, meta: &Meta) {
    node.mode = meta.mode & 0o7777;
    if node.uid != meta.uid || node.user.is_empty() {
        node.user = owner_names().user(meta.uid);
    }
    if node.gid != meta.gid || node.group.is_empty() {
        node.group = owner_names().group(meta.gid);
    }
    node.uid = meta.uid;
    node.gid = meta.gid;
    node.atime = meta.atime;
    node.mtime = meta.mtime;
    node.ctime = now();
}

/// An entry taken from its folder (unlinked, removed with its folder, or
/// renamed over): a file's or special node's other names see one link
/// less, and its ctime moves. Folders not loaded hold no entry seen here.
fn lose_name(entry: &Entry) {
    visit(entry, b"", &mut |_, entry| {
        if let Some(mut name) = entry.share() {
            name.change_node(|node| {
                node.links = node.links.saturating_sub(1).max(1);
                node.ctime = now();
            })
        }
    });
}

/// Base files and special nodes recorded as hard links (same device and
/// inode, more than one link) become one shared entry, whichever folder is
/// loaded first.
type BaseLinks = HashMap<(u64, u64), Entry>;

fn entry_from_base(node: Node, links: &mut BaseLinks) -> Entry {
    let key = (node.device, node.inode);
    let linked = node.kind != NodeKind::Dir && node.links > 1;
    if let Some(shared) = links.get(&key).filter(|_| linked) {
        return shared.share().expect("not a folder");
    }
    let entry = match node.kind {
        NodeKind::Dir => {
            let subtree = node.subtree;
            return Entry::Dir(Box::new(node), Children::Base(subtree));
        }
        NodeKind::File => Entry::File(Arc::new(Mutex::new(FileEntry {
            fid: 0,
            node,
            bytes: Bytes::Stored,
            writers: 0,
            loose_write: None,
            stored: None,
            version: 0,
            uploading: false,
        }))),
        _ => Entry::Other(Arc::new(Mutex::new(node))),
    };
    if linked {
        links.insert(key, entry.share().expect("not a folder"));
    }
    entry
}

/// The staging tree.
pub struct Overlay {
    repo: Arc<IndexedRepository>,
    root: Entry,
    base_links: BaseLinks,
    /// A file that the base records as hard-linked was changed: its other
    /// names may sit in folders not loaded yet, which the commit must load.
    base_link_changed: bool,
    /// Files by journal id.
    pub files: HashMap<u64, FileRef>,
    /// The next journal id for a file.
    pub next_fid: u64,
}

impl Overlay {
    /// A view of `root_tree` (none: empty), with `root_meta` as the root
    /// folder's metadata.
    pub fn new(
        repo: Arc<IndexedRepository>,
        root_tree: Option<BlobId>,
        root_meta: Node,
    ) -> Overlay {
        Overlay {
            repo,
            root: Entry::Dir(Box::new(root_meta), Children::Base(root_tree)),
            base_links: HashMap::new(),
            base_link_changed: false,
            files: HashMap::new(),
            next_fid: 1,
        }
    }

    fn load(
        repo: &IndexedRepository,
        links: &mut BaseLinks,
        children: &mut Children,
    ) -> FsResult<()> {
        if let Children::Base(id) = children {
            let mut loaded = BTreeMap::new();
            if let Some(id) = id {
                for node in repo.load_tree(id)?.nodes {
                    loaded.insert(node.name.clone(), entry_from_base(node, links));
                }
            }
            *children = Children::Loaded(loaded);
        }
        Ok(())
    }

    /// The entries of a folder entry, loading them if needed.
    fn children_of<'a>(
        repo: &IndexedRepository,
        links: &mut BaseLinks,
        entry: &'a mut Entry,
    ) -> FsResult<&'a mut Entries> {
        match entry {
            Entry::Dir(_, children) => {
                Self::load(repo, links, children)?;
                match children {
                    Children::Loaded(map) => Ok(map),
                    Children::Base(_) => unreachable!("just loaded"),
                }
            }
            _ => Err(FsError::NotDir),
        }
    }

    /// The entry at `path` (the root for an empty path).
    pub fn get(&mut self, path: &[u8]) -> FsResult<&mut Entry> {
        self.walk(&components(path)).map(|(entry, _)| entry)
    }

    /// Follows `names` from the root, loading folders on the way; returns
    /// the entry reached and the base links table, which loading its
    /// entries needs too.
    fn walk(&mut self, names: &[&[u8]]) -> FsResult<(&mut Entry, &mut BaseLinks)> {
        let Overlay {
            repo,
            root,
            base_links,
            ..
        } = self;
        let mut entry = root;
        for name in names {
            let map = Self::children_of(repo, base_links, entry)?;
            entry = map.get_mut(*name).ok_or(FsError::NotFound)?;
        }
        Ok((entry, base_links))
    }

    /// The loaded entries of the folder reached by `names`.
    fn entries(&mut self, names: &[&[u8]]) -> FsResult<&mut Entries> {
        let repo = self.repo.clone();
        let (entry, links) = self.walk(names)?;
        Self::children_of(&repo, links, entry)
    }

    /// The folder holding `path`, and the last name of `path`.
    fn parent<'a, 'p>(&'a mut self, path: &'p [u8]) -> FsResult<(&'a mut Entries, &'p [u8])> {
        let mut parts = components(path);
        let name = parts.pop().ok_or(FsError::Invalid)?;
        Ok((self.entries(&parts)?, name))
    }

    /// Touches the parent folder's mtime and ctime, as a change of its
    /// entries does.
    fn touch_parent(&mut self, path: &[u8]) {
        let mut parts = components(path);
        parts.pop();
        let parent: Vec<u8> = parts.join(&b'/');
        if let Ok(Entry::Dir(node, _)) = self.get(&parent) {
            node.mtime = now();
            node.ctime = node.mtime;
        }
    }

    /// The entries of the folder at `path`, sorted by name.
    pub fn list(&mut self, path: &[u8]) -> FsResult<Vec<Node>> {
        let map = self.entries(&components(path))?;
        // The key is the name: hard links share one node but not its name.
        Ok(map
            .iter()
            .map(|(name, entry)| Node {
                name: name.clone(),
                ..entry.node()
            })
            .collect())
    }

    /// The file at `path`.
    pub fn file(&mut self, path: &[u8]) -> FsResult<FileRef> {
        match self.get(path)? {
            Entry::File(file) => Ok(file.clone()),
            Entry::Dir(..) => Err(FsError::IsDir),
            Entry::Other(_) => Err(FsError::Invalid),
        }
    }

    fn insert_new(&mut self, path: &[u8], entry: Entry) -> FsResult<()> {
        let (map, name) = self.parent(path)?;
        if map.contains_key(name) {
            return Err(FsError::Exists);
        }
        map.insert(name.to_vec(), entry);
        self.touch_parent(path);
        Ok(())
    }

    /// Applies one journal operation. Live changes and replay both go
    /// through here, so replay rebuilds exactly what was there.
    pub fn apply(&mut self, op: &Op) -> FsResult<()> {
        match op {
            Op::Base(_) => Ok(()), // handled by the owner, which knows the snapshot
            Op::Mkdir { path, meta } => {
                let name = components(path)
                    .last()
                    .copied()
                    .ok_or(FsError::Exists)?
                    .to_vec();
                self.insert_new(
                    path,
                    Entry::Dir(
                        Box::new(dir_node(&name, meta)),
                        Children::Loaded(BTreeMap::new()),
                    ),
                )
            }
            Op::Create {
                path,
                fid,
                inode,
                meta,
            } => {
                let name = components(path)
                    .last()
                    .copied()
                    .ok_or(FsError::Exists)?
                    .to_vec();
                let mut node = Node::new(&name, NodeKind::File);
                apply_meta(&mut node, meta);
                node.links = 1;
                node.device = STAGED_DEVICE;
                node.inode = *inode;
                let file = Arc::new(Mutex::new(FileEntry {
                    fid: *fid,
                    node,
                    bytes: Bytes::Inline(Vec::new()),
                    writers: 0,
                    loose_write: None,
                    stored: None,
                    version: 0,
                    uploading: false,
                }));
                self.insert_new(path, Entry::File(file.clone()))?;
                self.files.insert(*fid, file);
                self.next_fid = self.next_fid.max(fid + 1);
                Ok(())
            }
            Op::Special { path, node } => {
                let mut node = (**node).clone();
                node.name = components(path)
                    .last()
                    .copied()
                    .ok_or(FsError::Exists)?
                    .to_vec();
                self.insert_new(path, Entry::Other(Arc::new(Mutex::new(node))))
            }
            Op::Remove { path } => {
                let (map, name) = self.parent(path)?;
                let removed = map.remove(name).ok_or(FsError::NotFound)?;
                lose_name(&removed);
                self.note_base_link_changes(&removed);
                self.touch_parent(path);
                Ok(())
            }
            Op::Rename { from, to } => self.rename(from, to),
            Op::Exchange { a, b } => self.exchange(a, b),
            Op::Link { from, to, inode } => {
                let Some(mut name) = self.get(from)?.share() else {
                    return Err(FsError::IsDir);
                };
                // The new name must be free before the link count moves.
                let (map, new_name) = self.parent(to)?;
                if map.contains_key(new_name) {
                    return Err(FsError::Exists);
                }
                name.change_node(|node| {
                    if node.links <= 1 {
                        node.device = STAGED_DEVICE;
                        node.inode = *inode;
                    }
                    node.links = node.links.max(1) + 1;
                    node.ctime = now();
                });
                self.note_base_link_change(&name);
                self.insert_new(to, name)
            }
            Op::SetMeta { path, meta } => {
                let entry = self.get(path)?;
                entry.change_node(|node| apply_meta(node, meta));
                let changed = entry.share();
                if let Some(entry) = changed {
                    self.note_base_link_change(&entry);
                }
                Ok(())
            }
            Op::Xattr { path, name, value } => {
                let set = |node: &mut Node| {
                    node.xattrs.retain(|(n, _)| n != name);
                    if let Some(value) = value {
                        node.xattrs.push((name.clone(), value.clone()));
                        node.xattrs.sort();
                    }
                    node.ctime = now();
                };
                let entry = self.get(path)?;
                entry.change_node(set);
                let changed = entry.share();
                if let Some(entry) = changed {
                    self.note_base_link_change(&entry);
                }
                Ok(())
            }
            Op::Local { path, fid, local } => {
                let file = self.file(path)?;
                self.note_base_link_change(&Entry::File(file.clone()));
                {
                    let mut f = file.lock();
                    f.fid = *fid;
                    f.bytes = Bytes::Local {
                        number: *local,
                        dirty: true,
                    };
                }
                self.files.insert(*fid, file);
                self.next_fid = self.next_fid.max(fid + 1);
                Ok(())
            }
            Op::Content { fid, content, size } => {
                let file = self.files.get(fid).ok_or(FsError::NotFound)?;
                let mut f = file.lock();
                f.node.content = content.clone();
                f.node.size = *size;
                f.stored = None;
                // A local copy stays (clean) until it is dropped.
                f.bytes = match f.bytes {
                    Bytes::Local { number, .. } => Bytes::Local {
                        number,
                        dirty: false,
                    },
                    _ => Bytes::Stored,
                };
                Ok(())
            }
            Op::Write { fid, offset, data } => {
                let file = self.files.get(fid).ok_or(FsError::NotFound)?;
                let mut f = file.lock();
                let Bytes::Inline(buf) = &mut f.bytes else {
                    return Err(FsError::Invalid);
                };
                let end = *offset as usize + data.len();
                if buf.len() < end {
                    buf.resize(end, 0);
                }
                buf[*offset as usize..end].copy_from_slice(data);
                let size = buf.len() as u64;
                f.version += 1;
                f.node.size = size;
                f.node.mtime = now();
                f.node.ctime = f.node.mtime;
                Ok(())
            }
            Op::Resize { fid, size } => {
                let file = self.files.get(fid).ok_or(FsError::NotFound)?;
                let mut f = file.lock();
                let Bytes::Inline(buf) = &mut f.bytes else {
                    return Err(FsError::Invalid);
                };
                buf.resize(*size as usize, 0);
                f.version += 1;
                f.node.size = *size;
                f.node.mtime = now();
                f.node.ctime = f.node.mtime;
                Ok(())
            }
        }
    }

    fn rename(&mut self, from: &[u8], to: &[u8]) -> FsResult<()> {
        let from_parts = components(from);
        let to_parts = components(to);
        if from_parts.is_empty() || to_parts.is_empty() {
            return Err(FsError::Invalid);
        }
        let source = self.get(from)?.share();
        let source_is_dir = source.is_none();
        if from_parts == to_parts {
            return Ok(());
        }
        // POSIX: renaming one name of a file onto another name of the same
        // file does nothing.
        if let (Some(source), Ok(target)) = (&source, self.get(to)) {
            if source.same_as(target) {
                return Ok(());
            }
        }
        // A folder cannot move into itself.
        if to_parts.len() > from_parts.len() && to_parts[..from_parts.len()] == from_parts[..] {
            return Err(FsError::Invalid);
        }
        match self.get(to) {
            Ok(Entry::Dir(_, _)) if !source_is_dir => return Err(FsError::IsDir),
            Ok(Entry::Dir(..)) => {
                if !self.list(to)?.is_empty() {
                    return Err(FsError::NotEmpty);
                }
            }
            Ok(_) if source_is_dir => return Err(FsError::NotDir),
            Ok(_) | Err(FsError::NotFound) => {}
            Err(e) => return Err(e),
        }
        // Check the target's folder exists before taking the source out.
        self.parent(to)?;
        let (map, name) = self.parent(from)?;
        let mut entry = map.remove(name).ok_or(FsError::NotFound)?;
        self.touch_parent(from);
        let new_name = to_parts.last().expect("not empty").to_vec();
        entry.moved_to(&new_name);
        let (map, _) = self.parent(to)?;
        // A file renamed over loses that name, as unlink takes it.
        if let Some(replaced) = map.insert(new_name, entry) {
            lose_name(&replaced);
            self.note_base_link_changes(&replaced);
        }
        self.touch_parent(to);
        Ok(())
    }

    /// Swaps the entries at `a` and `b`, which must both exist and neither
    /// contain the other (`renameat2` with `RENAME_EXCHANGE`).
    fn exchange(&mut self, a: &[u8], b: &[u8]) -> FsResult<()> {
        let (a_parts, b_parts) = (components(a), components(b));
        if a_parts.is_empty() || b_parts.is_empty() {
            return Err(FsError::Invalid);
        }
        self.get(a)?;
        self.get(b)?;
        if a_parts == b_parts {
            return Ok(());
        }
        if a_parts.starts_with(&b_parts) || b_parts.starts_with(&a_parts) {
            return Err(FsError::Invalid);
        }
        let (map, name) = self.parent(a)?;
        let mut at_a = map.remove(name).ok_or(FsError::NotFound)?;
        let (map, name) = self.parent(b)?;
        let mut at_b = map.remove(name).ok_or(FsError::NotFound)?;
        let a_name = a_parts.last().expect("not empty").to_vec();
        let b_name = b_parts.last().expect("not empty").to_vec();
        at_a.moved_to(&b_name);
        at_b.moved_to(&a_name);
        self.parent(a)?.0.insert(a_name, at_b);
        self.parent(b)?.0.insert(b_name, at_a);
        self.touch_parent(a);
        self.touch_parent(b);
        Ok(())
    }

    /// [`Overlay::note_base_link_change`] for `entry` and every entry below
    /// it.
    fn note_base_link_changes(&mut self, entry: &Entry) {
        let mut changed = false;
        visit(entry, b"", &mut |_, entry| {
            changed |= entry.links() > 1 && entry.node().device != STAGED_DEVICE;
        });
        self.base_link_changed |= changed;
    }

    /// Notes a change to `entry` if the base records it as hard-linked:
    /// its other names may sit in folders not loaded yet, which the commit
    /// must then load to write them with the change.
    fn note_base_link_change(&mut self, entry: &Entry) {
        if entry.links() > 1 && entry.node().device != STAGED_DEVICE {
            self.base_link_changed = true;
        }
    }

    /// For each hard-linked file or special node at or below `path` (in
    /// loaded folders), its path and a name it has outside `path`, if any:
    /// the names that remain when `path` goes.
    pub fn survivors(&mut self, path: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let gone: Vec<u8> = components(path).join(&b'/');
        let Ok(entry) = self.get(&gone) else {
            return Vec::new();
        };
        let mut linked = Vec::new();
        visit(entry, &gone, &mut |at, entry| {
            if entry.links() > 1 {
                linked.extend(entry.share().map(|shared| (at.to_vec(), shared)));
            }
        });
        let mut found = Vec::new();
        for (at, wanted) in linked {
            let mut survivor = None;
            visit(&self.root, b"", &mut |other, entry| {
                if survivor.is_none() && entry.same_as(&wanted) && !is_at_or_below(other, &gone) {
                    survivor = Some(other.to_vec());
                }
            });
            found.extend(survivor.map(|name| (at, name)));
        }
        found
    }

    /// Whether `a` and `b` are names of one file or special node.
    pub fn same_entry(&mut self, a: &[u8], b: &[u8]) -> bool {
        match (self.get(a).ok().and_then(|e| e.share()), self.get(b)) {
            (Some(a), Ok(b)) => a.same_as(b),
            _ => false,
        }
    }

    /// Forgets the files nothing reaches any more — no name, no open
    /// handle, no upload running: only the file table still holds them —
    /// and returns their local data files, whose bytes nobody can read
    /// again.
    pub fn forget_unreachable(&mut self) -> Vec<u64> {
        let mut locals = Vec::new();
        self.files.retain(|_, file| {
            let reached = Arc::strong_count(file) > 1;
            if !reached {
                locals.extend(file.lock().bytes.local());
            }
            reached
        });
        locals
    }

    /// Whether any file is open for writing or was just written.
    pub fn any_file_in_use(&self) -> bool {
        self.files.values().any(|f| f.lock().in_use())
    }

    /// Every file with local data newer than its stored content, in the
    /// order they were made: a copy writes a folder's files one after the
    /// other, and uploading them in that order keeps them side by side in
    /// the packs, where one read fetches many (the table's own order is
    /// random).
    pub fn dirty_files(&self) -> Vec<FileRef> {
        let mut dirty: Vec<(u64, FileRef)> = self
            .files
            .iter()
            .filter(|(_, f)| f.lock().bytes.is_dirty())
            .map(|(fid, f)| (*fid, f.clone()))
            .collect();
        dirty.sort_unstable_by_key(|(fid, _)| *fid);
        dirty.into_iter().map(|(_, f)| f).collect()
    }

    /// Writes the trees of every loaded folder, bottom-up, with `save_tree`;
    /// untouched folders keep their tree id. Returns the root tree's id.
    pub fn build(
        &mut self,
        save_tree: &mut dyn FnMut(Vec<Node>) -> FsResult<BlobId>,
    ) -> FsResult<BlobId> {
        fn build_dir(
            children: &mut Children,
            save_tree: &mut dyn FnMut(Vec<Node>) -> FsResult<BlobId>,
        ) -> FsResult<BlobId> {
            match children {
                Children::Base(Some(id)) => Ok(*id),
                Children::Base(None) => save_tree(Vec::new()),
                Children::Loaded(map) => {
                    let mut nodes = Vec::with_capacity(map.len());
                    for (name, entry) in map.iter_mut() {
                        let mut node = match entry {
                            Entry::Dir(node, children) => {
                                let mut node = (**node).clone();
                                node.subtree = Some(build_dir(children, save_tree)?);
                                node
                            }
                            Entry::File(file) => file.lock().node.clone(),
                            Entry::Other(special) => special.lock().clone(),
                        };
                        node.name = name.clone();
                        nodes.push(node);
                    }
                    save_tree(nodes)
                }
            }
        }
        if self.base_link_changed {
            let Overlay {
                repo,
                root,
                base_links,
                ..
            } = self;
            Self::load_all(repo, base_links, root)?;
            self.base_link_changed = false;
        }
        match &mut self.root {
            Entry::Dir(_, children) => build_dir(children, save_tree),
            _ => unreachable!("the root is a folder"),
        }
    }

    /// Loads every folder below `entry`, so that all names of a changed
    /// hard-linked base file are written with its new content.
    fn load_all(
        repo: &IndexedRepository,
        links: &mut BaseLinks,
        entry: &mut Entry,
    ) -> FsResult<()> {
        if let Entry::Dir(..) = entry {
            for child in Self::children_of(repo, links, entry)?.values_mut() {
                Self::load_all(repo, links, child)?;
            }
        }
        Ok(())
    }
}

/// Calls `visit` with `entry` at `path` and every entry below it in loaded
/// folders.
fn visit(entry: &Entry, path: &[u8], visitor: &mut dyn FnMut(&[u8], &Entry)) {
    visitor(path, entry);
    if let Entry::Dir(_, Children::Loaded(children)) = entry {
        for (name, child) in children {
            let child_path = if path.is_empty() {
                name.clone()
            } else {
                [path, b"/", name].concat()
            };
            visit(child, &child_path, visitor);
        }
    }
}

/// Whether `path` is `top` or inside it (`top` empty: everything is).
fn is_at_or_below(path: &[u8], top: &[u8]) -> bool {
    top.is_empty() || path == top || path.starts_with(top) && path.get(top.len()) == Some(&b'/')
}

/// Device number recorded for files hard-linked inside the staging view,
/// so that restore links them again.
pub const STAGED_DEVICE: u64 = u64::MAX;
