//! The staging view in memory: the base snapshot's tree, loaded lazily
//! folder by folder, with the changes applied on top.
//!
//! A folder nobody touched stays `Children::Base(tree id)`; committing
//! reuses that id without reading it. Only folders along changed paths are
//! loaded and written again, so a commit costs what changed, not the size
//! of the base.

mod entry;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mapache_store::tree::{Node, NodeKind};
use mapache_store::{BlobId, IndexedRepository, OwnerNames};
use parking_lot::MutexGuard;

pub use entry::{Bytes, Children, Entry, FileEntry, FileRef, Folder, FolderRef, Place, WeakEntry};

use super::changes::TreeChange;
use super::journal::{Meta, Op};
use crate::error::{FsError, FsResult};

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

/// Marks a folder's entries changed now, as adding or removing one does.
fn touch(node: &mut Node) {
    node.mtime = now();
    node.ctime = node.mtime;
}

/// Takes the name `name` after a rename (its change time with it).
fn moved_to(entry: &Entry, name: &[u8]) {
    entry.change_node(|node| {
        node.name = name.to_vec();
        node.ctime = now();
    })
}

/// An entry taken out of the tree (unlinked, removed with its folder, or
/// renamed over): everything below it in loaded folders loses its name
/// there, and a file's or special node's other names see one link less
/// and a new ctime. Returns every entry that lost a name.
fn take_out(entry: &Entry) -> Vec<Entry> {
    fn visit(entry: &Entry, lost: &mut Vec<Entry>) {
        match entry {
            Entry::Dir(dir) => {
                let children: Vec<(Vec<u8>, Entry)> = match &dir.lock().children {
                    Children::Loaded(map) => {
                        map.iter().map(|(n, e)| (n.clone(), e.clone())).collect()
                    }
                    Children::Base(_) => Vec::new(),
                };
                for (name, child) in children {
                    child.remove_name(dir, &name);
                    visit(&child, lost);
                }
            }
            _ => entry.change_node(|node| {
                node.links = node.links.saturating_sub(1).max(1);
                node.ctime = now();
            }),
        }
        lost.push(entry.clone());
    }
    let mut lost = Vec::new();
    visit(entry, &mut lost);
    lost
}

/// Base files and special nodes recorded as hard links (same device and
/// inode, more than one link) become one shared entry, whichever folder is
/// loaded first.
type BaseLinks = HashMap<(u64, u64), Entry>;

fn entry_from_base(node: Node, links: &mut BaseLinks) -> Entry {
    let key = (node.device, node.inode);
    let linked = node.kind != NodeKind::Dir && node.links > 1;
    if let Some(shared) = links.get(&key).filter(|_| linked) {
        return shared.clone();
    }
    let entry = match node.kind {
        NodeKind::Dir => {
            let subtree = node.subtree;
            return Entry::new_folder(node, Children::Base(subtree));
        }
        NodeKind::File => Entry::new_file(FileEntry::new(0, node, Bytes::Stored)),
        _ => Entry::new_special(node),
    };
    if linked {
        links.insert(key, entry.clone());
    }
    entry
}

/// The staging tree.
pub struct Overlay {
    repo: Arc<IndexedRepository>,
    root: FolderRef,
    base_links: BaseLinks,
    /// A file that the base records as hard-linked was changed: its other
    /// names may sit in folders not loaded yet, which the commit must load.
    base_link_changed: bool,
    /// Files by journal id.
    pub files: HashMap<u64, FileRef>,
    /// The next journal id for a file.
    pub next_fid: u64,
}

impl Drop for Overlay {
    /// Entries of a dropped tree that open files or the mount still hold
    /// have no path from now on: nothing they do may land in the next tree.
    fn drop(&mut self) {
        self.root.lock().is_root = false;
    }
}

impl Overlay {
    /// A view of `root_tree` (none: empty), with `root_meta` as the root
    /// folder's metadata.
    pub fn new(
        repo: Arc<IndexedRepository>,
        root_tree: Option<BlobId>,
        root_meta: Node,
    ) -> Overlay {
        let mut root = Folder::new(root_meta, Children::Base(root_tree));
        root.is_root = true;
        Overlay {
            repo,
            root: Arc::new(parking_lot::Mutex::new(root)),
            base_links: HashMap::new(),
            base_link_changed: false,
            files: HashMap::new(),
            next_fid: 1,
        }
    }

    /// The root folder.
    pub fn root(&self) -> Entry {
        Entry::Dir(self.root.clone())
    }

    /// Folder `dir`, locked, with its entries loaded.
    fn loaded<'a>(&mut self, dir: &'a FolderRef) -> FsResult<MutexGuard<'a, Folder>> {
        let mut folder = dir.lock();
        if let Children::Base(id) = &folder.children {
            let mut loaded = BTreeMap::new();
            if let Some(id) = *id {
                for node in self.repo.load_tree(&id)?.nodes {
                    let name = node.name.clone();
                    let entry = entry_from_base(node, &mut self.base_links);
                    entry.add_name(Place::new(dir, &name));
                    loaded.insert(name, entry);
                }
            }
            folder.children = Children::Loaded(loaded);
        }
        Ok(folder)
    }

    /// The entry named `name` in folder `dir`.
    pub fn child(&mut self, dir: &Entry, name: &[u8]) -> FsResult<Entry> {
        let mut folder = self.loaded(dir.folder()?)?;
        folder.entries().get(name).cloned().ok_or(FsError::NotFound)
    }

    /// The entries of folder `dir`, in name order.
    pub fn children(&mut self, dir: &Entry) -> FsResult<Vec<(Vec<u8>, Entry)>> {
        let mut folder = self.loaded(dir.folder()?)?;
        Ok(folder
            .entries()
            .iter()
            .map(|(name, entry)| (name.clone(), entry.clone()))
            .collect())
    }

    /// How many folders folder `dir` holds.
    pub fn subfolders(&mut self, dir: &Entry) -> FsResult<u32> {
        let mut folder = self.loaded(dir.folder()?)?;
        let entries = folder.entries().values();
        Ok(entries.filter(|e| matches!(e, Entry::Dir(_))).count() as u32)
    }

    /// The names in the root folder, if it was loaded (none were shown
    /// otherwise).
    pub fn root_names(&self) -> Vec<Vec<u8>> {
        match &self.root.lock().children {
            Children::Loaded(map) => map.keys().cloned().collect(),
            Children::Base(_) => Vec::new(),
        }
    }

    /// The entry at `path` (the root for an empty path).
    pub fn get(&mut self, path: &[u8]) -> FsResult<Entry> {
        let mut entry = self.root();
        for name in components(path) {
            entry = self.child(&entry, name)?;
        }
        Ok(entry)
    }

    /// The folder holding `path`, and the last name of `path`.
    fn parent<'p>(&mut self, path: &'p [u8]) -> FsResult<(FolderRef, &'p [u8])> {
        let mut parts = components(path);
        let name = parts.pop().ok_or(FsError::Invalid)?;
        let mut entry = self.root();
        for part in parts {
            entry = self.child(&entry, part)?;
        }
        Ok((entry.folder()?.clone(), name))
    }

    /// Takes the entry named `name` out of folder `dir`.
    fn detach(&mut self, dir: &FolderRef, name: &[u8]) -> FsResult<Entry> {
        let entry = {
            let mut folder = self.loaded(dir)?;
            let entry = folder.entries().remove(name).ok_or(FsError::NotFound)?;
            touch(&mut folder.node);
            entry
        };
        entry.remove_name(dir, name);
        Ok(entry)
    }

    /// Puts `entry` into folder `dir` as `name`; returns what was there.
    fn attach(&mut self, dir: &FolderRef, name: &[u8], entry: Entry) -> FsResult<Option<Entry>> {
        let replaced = {
            let mut folder = self.loaded(dir)?;
            let replaced = folder.entries().insert(name.to_vec(), entry.clone());
            touch(&mut folder.node);
            replaced
        };
        if let Some(replaced) = &replaced {
            replaced.remove_name(dir, name);
        }
        entry.add_name(Place::new(dir, name));
        Ok(replaced)
    }

    fn insert_new(&mut self, path: &[u8], entry: Entry) -> FsResult<Vec<TreeChange>> {
        let (dir, name) = self.parent(path)?;
        if self.loaded(&dir)?.entries().contains_key(name) {
            return Err(FsError::Exists);
        }
        self.attach(&dir, name, entry)?;
        Ok(vec![TreeChange::Name {
            folder: Entry::Dir(dir),
            name: name.to_vec(),
        }])
    }

    /// Applies one journal operation; returns what it changed of the
    /// tree's names. Live changes and replay both go through here, so
    /// replay rebuilds exactly what was there.
    pub fn apply(&mut self, op: &Op) -> FsResult<Vec<TreeChange>> {
        let last_name = |path: &[u8]| -> FsResult<Vec<u8>> {
            Ok(components(path).last().ok_or(FsError::Exists)?.to_vec())
        };
        match op {
            Op::Base(_) => Ok(Vec::new()), // handled by the owner, which knows the snapshot
            Op::Mkdir { path, meta } => {
                let node = dir_node(&last_name(path)?, meta);
                let folder = Entry::new_folder(node, Children::Loaded(BTreeMap::new()));
                self.insert_new(path, folder)
            }
            Op::Create {
                path,
                fid,
                inode,
                meta,
            } => {
                let mut node = Node::new(&last_name(path)?, NodeKind::File);
                apply_meta(&mut node, meta);
                node.links = 1;
                node.device = STAGED_DEVICE;
                node.inode = *inode;
                let file = Entry::new_file(FileEntry::new(*fid, node, Bytes::Inline(Vec::new())));
                let changes = self.insert_new(path, file.clone())?;
                self.files.insert(*fid, file.file()?.clone());
                self.next_fid = self.next_fid.max(fid + 1);
                Ok(changes)
            }
            Op::Special { path, node } => {
                let mut node = (**node).clone();
                node.name = last_name(path)?;
                self.insert_new(path, Entry::new_special(node))
            }
            Op::Remove { path } => {
                let (dir, name) = self.parent(path)?;
                let removed = self.detach(&dir, name)?;
                Ok(self.taken_out(&dir, name, &removed))
            }
            Op::Rename { from, to } => self.rename(from, to),
            Op::Exchange { a, b } => self.exchange(a, b),
            Op::Link { from, to, inode } => {
                let entry = self.get(from)?;
                if let Entry::Dir(_) = entry {
                    return Err(FsError::IsDir);
                }
                // The new name must be free before the link count moves.
                let (dir, name) = self.parent(to)?;
                if self.loaded(&dir)?.entries().contains_key(name) {
                    return Err(FsError::Exists);
                }
                entry.change_node(|node| {
                    if node.links <= 1 {
                        node.device = STAGED_DEVICE;
                        node.inode = *inode;
                    }
                    node.links = node.links.max(1) + 1;
                    node.ctime = now();
                });
                self.note_base_link_changes(std::slice::from_ref(&entry));
                self.insert_new(to, entry)
            }
            Op::SetMeta { path, meta } => {
                let entry = self.get(path)?;
                entry.change_node(|node| apply_meta(node, meta));
                self.note_base_link_changes(&[entry]);
                Ok(Vec::new())
            }
            Op::Xattr { path, name, value } => {
                let entry = self.get(path)?;
                entry.change_node(|node| {
                    node.xattrs.retain(|(n, _)| n != name);
                    if let Some(value) = value {
                        node.xattrs.push((name.clone(), value.clone()));
                        node.xattrs.sort();
                    }
                    node.ctime = now();
                });
                self.note_base_link_changes(&[entry]);
                Ok(Vec::new())
            }
            Op::Local { path, fid, local } => {
                let entry = self.get(path)?;
                let file = entry.file()?.clone();
                self.note_base_link_changes(&[entry]);
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
                Ok(Vec::new())
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
                Ok(Vec::new())
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
                touch(&mut f.node);
                Ok(Vec::new())
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
                touch(&mut f.node);
                Ok(Vec::new())
            }
        }
    }

    /// After `entry` was taken from `name` in `dir`: what it held loses its
    /// names, and what changed of the tree's names.
    fn taken_out(&mut self, dir: &FolderRef, name: &[u8], entry: &Entry) -> Vec<TreeChange> {
        let lost = take_out(entry);
        self.note_base_link_changes(&lost);
        let mut changes = vec![TreeChange::Name {
            folder: Entry::Dir(dir.clone()),
            name: name.to_vec(),
        }];
        changes.extend(lost.into_iter().map(TreeChange::LostName));
        changes
    }

    fn rename(&mut self, from: &[u8], to: &[u8]) -> FsResult<Vec<TreeChange>> {
        let from_parts = components(from);
        let to_parts = components(to);
        if from_parts.is_empty() || to_parts.is_empty() {
            return Err(FsError::Invalid);
        }
        let source = self.get(from)?;
        let source_is_dir = matches!(source, Entry::Dir(_));
        if from_parts == to_parts {
            return Ok(Vec::new());
        }
        let target = self.get(to);
        // POSIX: renaming one name of a file onto another name of the same
        // file does nothing.
        if target.as_ref().is_ok_and(|target| source.same_as(target)) {
            return Ok(Vec::new());
        }
        // A folder cannot move into itself.
        if to_parts.len() > from_parts.len() && to_parts[..from_parts.len()] == from_parts[..] {
            return Err(FsError::Invalid);
        }
        match target {
            Ok(Entry::Dir(_)) if !source_is_dir => return Err(FsError::IsDir),
            Ok(target @ Entry::Dir(_)) => {
                if !self.children(&target)?.is_empty() {
                    return Err(FsError::NotEmpty);
                }
            }
            Ok(_) if source_is_dir => return Err(FsError::NotDir),
            Ok(_) | Err(FsError::NotFound) => {}
            Err(e) => return Err(e),
        }
        // The target's folder must exist before the source is taken out.
        let (to_dir, new_name) = self.parent(to)?;
        let (from_dir, old_name) = self.parent(from)?;
        let entry = self.detach(&from_dir, old_name)?;
        moved_to(&entry, new_name);
        let mut changes = vec![TreeChange::Name {
            folder: Entry::Dir(from_dir),
            name: old_name.to_vec(),
        }];
        match self.attach(&to_dir, new_name, entry)? {
            // What was there loses that name, as unlink takes it.
            Some(replaced) => changes.extend(self.taken_out(&to_dir, new_name, &replaced)),
            None => changes.push(TreeChange::Name {
                folder: Entry::Dir(to_dir),
                name: new_name.to_vec(),
            }),
        }
        Ok(changes)
    }

    /// Swaps the entries at `a` and `b`, which must both exist and neither
    /// contain the other (`renameat2` with `RENAME_EXCHANGE`).
    fn exchange(&mut self, a: &[u8], b: &[u8]) -> FsResult<Vec<TreeChange>> {
        let (a_parts, b_parts) = (components(a), components(b));
        if a_parts.is_empty() || b_parts.is_empty() {
            return Err(FsError::Invalid);
        }
        self.get(a)?;
        self.get(b)?;
        if a_parts == b_parts {
            return Ok(Vec::new());
        }
        if a_parts.starts_with(&b_parts) || b_parts.starts_with(&a_parts) {
            return Err(FsError::Invalid);
        }
        let (dir_a, name_a) = self.parent(a)?;
        let (dir_b, name_b) = self.parent(b)?;
        let at_a = self.detach(&dir_a, name_a)?;
        let at_b = self.detach(&dir_b, name_b)?;
        moved_to(&at_a, name_b);
        moved_to(&at_b, name_a);
        self.attach(&dir_a, name_a, at_b)?;
        self.attach(&dir_b, name_b, at_a)?;
        Ok(vec![
            TreeChange::Name {
                folder: Entry::Dir(dir_a),
                name: name_a.to_vec(),
            },
            TreeChange::Name {
                folder: Entry::Dir(dir_b),
                name: name_b.to_vec(),
            },
        ])
    }

    /// Notes a change to any of `entries` that the base records as
    /// hard-linked: its other names may sit in folders not loaded yet,
    /// which the commit must then load to write them with the change.
    fn note_base_link_changes(&mut self, entries: &[Entry]) {
        self.base_link_changed |= entries.iter().any(|entry| {
            entry.links() > 1 && entry.change_node(|node| node.device) != STAGED_DEVICE
        });
    }

    /// Whether `a` and `b` are names of one file or special node.
    pub fn same_entry(&mut self, a: &[u8], b: &[u8]) -> bool {
        match (self.get(a), self.get(b)) {
            (Ok(a), Ok(b)) => !matches!(a, Entry::Dir(_)) && a.same_as(&b),
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
            dir: &FolderRef,
            save_tree: &mut dyn FnMut(Vec<Node>) -> FsResult<BlobId>,
        ) -> FsResult<BlobId> {
            let entries: Vec<(Vec<u8>, Entry)> = match &dir.lock().children {
                Children::Base(Some(id)) => return Ok(*id),
                Children::Base(None) => Vec::new(),
                Children::Loaded(map) => map.iter().map(|(n, e)| (n.clone(), e.clone())).collect(),
            };
            let mut nodes = Vec::with_capacity(entries.len());
            for (name, entry) in entries {
                let mut node = entry.node();
                if let Entry::Dir(sub) = &entry {
                    node.subtree = Some(build_dir(sub, save_tree)?);
                }
                node.name = name;
                nodes.push(node);
            }
            save_tree(nodes)
        }
        if self.base_link_changed {
            let root = self.root();
            self.load_all(&root)?;
            self.base_link_changed = false;
        }
        build_dir(&self.root, save_tree)
    }

    /// Loads every folder below `dir`, so that all names of a changed
    /// hard-linked base file are written with its new content.
    fn load_all(&mut self, dir: &Entry) -> FsResult<()> {
        for (_, child) in self.children(dir)? {
            if let Entry::Dir(_) = child {
                self.load_all(&child)?;
            }
        }
        Ok(())
    }
}

/// Device number recorded for files hard-linked inside the staging view,
/// so that restore links them again.
pub const STAGED_DEVICE: u64 = u64::MAX;
