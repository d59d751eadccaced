//! The entries of the staging view as shared handles: the mount's inode
//! table holds them, and every name an entry has is recorded with it, so
//! that an operation on a handle finds the entry at once and its path only
//! when the journal needs one.
//!
//! Locking: folders are locked only while the staging area's own lock is
//! held, a folder before the entries it holds, and one folder at a time
//! when climbing towards the root.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use mapache_store::tree::{Node, NodeKind};
use mapache_store::BlobId;
use parking_lot::Mutex;

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

/// A name of an entry: the folder holding it, and the name in there.
#[derive(Clone, Debug)]
pub struct Place {
    folder: Weak<Mutex<Folder>>,
    name: Vec<u8>,
}

impl Place {
    /// Name `name` in `folder`.
    pub fn new(folder: &FolderRef, name: &[u8]) -> Place {
        Place {
            folder: Arc::downgrade(folder),
            name: name.to_vec(),
        }
    }

    fn is(&self, folder: &FolderRef, name: &[u8]) -> bool {
        std::ptr::eq(self.folder.as_ptr(), Arc::as_ptr(folder)) && self.name == name
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
    /// Its names in loaded folders.
    names: Vec<Place>,
}

/// How long after a write without a handle a file counts as still being
/// written: uploading it sooner would most likely upload it again.
const LOOSE_IDLE: Duration = Duration::from_secs(2);

impl FileEntry {
    /// A file with `node` as its metadata and content, and no name yet.
    pub fn new(fid: u64, node: Node, bytes: Bytes) -> FileEntry {
        FileEntry {
            fid,
            node,
            bytes,
            writers: 0,
            loose_write: None,
            stored: None,
            version: 0,
            uploading: false,
            names: Vec::new(),
        }
    }

    /// Whether someone may still be writing: an open writer, or a write
    /// without a handle in the last [`LOOSE_IDLE`].
    pub fn in_use(&self) -> bool {
        self.writers > 0 || self.loose_write.is_some_and(|at| at.elapsed() < LOOSE_IDLE)
    }
}

/// A shared file.
pub type FileRef = Arc<Mutex<FileEntry>>;

/// A symlink, fifo, device or socket. Hard links share one, as they share
/// a [`FileRef`].
#[derive(Debug)]
pub struct Special {
    /// Its metadata.
    pub node: Node,
    /// Its names in loaded folders.
    names: Vec<Place>,
}

/// A shared special node.
pub type SpecialRef = Arc<Mutex<Special>>;

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

/// A folder of the staging view.
#[derive(Debug)]
pub struct Folder {
    /// Its metadata.
    pub node: Node,
    /// What it holds.
    pub children: Children,
    /// Its name; none for the root and for a folder taken out of the tree.
    place: Option<Place>,
    /// Whether it is the root of the current tree (a reset ends that).
    pub is_root: bool,
}

impl Folder {
    /// A folder with `node` as its metadata holding `children`, with no
    /// name yet.
    pub fn new(node: Node, children: Children) -> Folder {
        Folder {
            node,
            children,
            place: None,
            is_root: false,
        }
    }

    /// Its entries; it must be loaded.
    pub fn entries(&mut self) -> &mut Entries {
        match &mut self.children {
            Children::Loaded(entries) => entries,
            Children::Base(_) => unreachable!("the folder was loaded first"),
        }
    }
}

/// A shared folder.
pub type FolderRef = Arc<Mutex<Folder>>;

/// One entry of the staging view, as a handle: clones are the same entry.
#[derive(Clone, Debug)]
pub enum Entry {
    /// A folder.
    Dir(FolderRef),
    /// A regular file.
    File(FileRef),
    /// Anything else (symlink, fifo, device, socket), metadata only.
    Other(SpecialRef),
}

/// An [`Entry`] held without keeping it alive.
#[derive(Clone, Debug)]
pub enum WeakEntry {
    /// A folder.
    Dir(Weak<Mutex<Folder>>),
    /// A regular file.
    File(Weak<Mutex<FileEntry>>),
    /// Anything else.
    Other(Weak<Mutex<Special>>),
}

impl WeakEntry {
    /// The entry, if it is still alive.
    pub fn upgrade(&self) -> Option<Entry> {
        Some(match self {
            WeakEntry::Dir(dir) => Entry::Dir(dir.upgrade()?),
            WeakEntry::File(file) => Entry::File(file.upgrade()?),
            WeakEntry::Other(special) => Entry::Other(special.upgrade()?),
        })
    }

    /// See [`Entry::identity`]; stays the entry's while this is held.
    pub fn identity(&self) -> usize {
        match self {
            WeakEntry::Dir(dir) => dir.as_ptr() as usize,
            WeakEntry::File(file) => file.as_ptr() as usize,
            WeakEntry::Other(special) => special.as_ptr() as usize,
        }
    }
}

impl Entry {
    /// A new folder, with no name yet.
    pub fn new_folder(node: Node, children: Children) -> Entry {
        Entry::Dir(Arc::new(Mutex::new(Folder::new(node, children))))
    }

    /// A new file.
    pub fn new_file(file: FileEntry) -> Entry {
        Entry::File(Arc::new(Mutex::new(file)))
    }

    /// A new symlink, fifo, device or socket.
    pub fn new_special(node: Node) -> Entry {
        Entry::Other(Arc::new(Mutex::new(Special {
            node,
            names: Vec::new(),
        })))
    }

    /// What tells this entry from every other one alive: all its names
    /// and clones share it.
    pub fn identity(&self) -> usize {
        match self {
            Entry::Dir(dir) => Arc::as_ptr(dir) as usize,
            Entry::File(file) => Arc::as_ptr(file) as usize,
            Entry::Other(special) => Arc::as_ptr(special) as usize,
        }
    }

    /// The entry held without keeping it alive.
    pub fn downgrade(&self) -> WeakEntry {
        match self {
            Entry::Dir(dir) => WeakEntry::Dir(Arc::downgrade(dir)),
            Entry::File(file) => WeakEntry::File(Arc::downgrade(file)),
            Entry::Other(special) => WeakEntry::Other(Arc::downgrade(special)),
        }
    }

    /// Whether `self` and `other` are the same entry.
    pub fn same_as(&self, other: &Entry) -> bool {
        self.identity() == other.identity()
    }

    /// The file, if it is one.
    pub fn file(&self) -> FsResult<&FileRef> {
        match self {
            Entry::File(file) => Ok(file),
            Entry::Dir(_) => Err(FsError::IsDir),
            Entry::Other(_) => Err(FsError::Invalid),
        }
    }

    /// The folder, if it is one.
    pub fn folder(&self) -> FsResult<&FolderRef> {
        match self {
            Entry::Dir(dir) => Ok(dir),
            _ => Err(FsError::NotDir),
        }
    }

    /// Its type.
    pub fn kind(&self) -> NodeKind {
        match self {
            Entry::Dir(_) => NodeKind::Dir,
            Entry::File(_) => NodeKind::File,
            Entry::Other(special) => special.lock().node.kind,
        }
    }

    /// A copy of its node.
    pub fn node(&self) -> Node {
        match self {
            Entry::Dir(dir) => dir.lock().node.clone(),
            Entry::File(file) => file.lock().node.clone(),
            Entry::Other(special) => special.lock().node.clone(),
        }
    }

    /// Runs `change` on its node (shared by all names of a hard link).
    pub fn change_node<T>(&self, change: impl FnOnce(&mut Node) -> T) -> T {
        match self {
            Entry::Dir(dir) => change(&mut dir.lock().node),
            Entry::File(file) => change(&mut file.lock().node),
            Entry::Other(special) => change(&mut special.lock().node),
        }
    }

    /// The link count of a file or special node (folders: 0, as they are
    /// never hard-linked).
    pub fn links(&self) -> u64 {
        match self {
            Entry::Dir(_) => 0,
            _ => self.change_node(|node| node.links),
        }
    }

    /// Records that it is named `place` (a folder has one name).
    pub fn add_name(&self, place: Place) {
        match self {
            Entry::Dir(dir) => dir.lock().place = Some(place),
            Entry::File(file) => file.lock().names.push(place),
            Entry::Other(special) => special.lock().names.push(place),
        }
    }

    /// Records that it is no longer named `name` in `folder`.
    pub fn remove_name(&self, folder: &FolderRef, name: &[u8]) {
        let drop_it = |names: &mut Vec<Place>| {
            if let Some(at) = names.iter().position(|p| p.is(folder, name)) {
                names.swap_remove(at);
            }
        };
        match self {
            Entry::Dir(dir) => {
                let mut dir = dir.lock();
                if dir.place.as_ref().is_some_and(|p| p.is(folder, name)) {
                    dir.place = None;
                }
            }
            Entry::File(file) => drop_it(&mut file.lock().names),
            Entry::Other(special) => drop_it(&mut special.lock().names),
        }
    }

    /// Its names, each as the folder holding it and the name in there.
    fn places(&self) -> Vec<Place> {
        match self {
            Entry::Dir(dir) => dir.lock().place.iter().cloned().collect(),
            Entry::File(file) => file.lock().names.clone(),
            Entry::Other(special) => special.lock().names.clone(),
        }
    }

    /// Its path from the root of the current tree (empty for the root
    /// itself), by any of its names; none when it has no name left there
    /// (removed, or in a tree a reset dropped).
    pub fn path(&self) -> Option<Vec<u8>> {
        if self.is_root() {
            return Some(Vec::new());
        }
        self.places().into_iter().find_map(|place| {
            let mut names = vec![place.name];
            if !climb(place.folder, |name| names.push(name.to_vec())) {
                return None;
            }
            names.reverse();
            Some(names.join(&b'/'))
        })
    }

    /// Whether it has a name in the current tree (or is its root).
    pub fn has_name(&self) -> bool {
        let folders: Vec<Weak<Mutex<Folder>>> = match self {
            Entry::Dir(dir) => {
                let dir = dir.lock();
                if dir.is_root {
                    return true;
                }
                dir.place.iter().map(|p| p.folder.clone()).collect()
            }
            Entry::File(file) => file.lock().names.iter().map(|p| p.folder.clone()).collect(),
            Entry::Other(special) => {
                let names = &special.lock().names;
                names.iter().map(|p| p.folder.clone()).collect()
            }
        };
        folders.into_iter().any(|folder| climb(folder, |_| ()))
    }

    /// Whether it is the root of the current tree.
    pub fn is_root(&self) -> bool {
        matches!(self, Entry::Dir(dir) if dir.lock().is_root)
    }
}

/// Climbs from `folder` to the root of the current tree, telling `name`
/// the name of each folder on the way below the root (the lowest first);
/// whether the way ends there (not in a folder removed, or in a tree a
/// reset dropped).
fn climb(mut folder: Weak<Mutex<Folder>>, mut name: impl FnMut(&[u8])) -> bool {
    loop {
        let Some(dir) = folder.upgrade() else {
            return false;
        };
        let dir = dir.lock();
        if dir.is_root {
            return true;
        }
        let Some(place) = &dir.place else {
            return false;
        };
        name(&place.name);
        folder = place.folder.clone();
    }
}
