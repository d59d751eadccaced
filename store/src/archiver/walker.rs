//! The walker and the file readers of a snapshot run.

use std::fs::{File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crossbeam_channel::{bounded, Receiver, Sender};

use super::ArchiveOptions;
use crate::blob::BlobType;
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::metadata::{node_from_metadata, OwnerNames};
use crate::repository::IndexedRepository;
use crate::saver::{BlobSaver, StreamError};
use crate::tree::{Node, NodeKind, Tree};

/// How a file compares with the parent snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FileStatus {
    New,
    Changed,
    Unchanged,
    NotAFile,
}

/// A file's content: known already, or being read.
pub(super) enum Content {
    Ready(Vec<BlobId>),
    Pending(Receiver<FileOutcome>),
}

/// What the walker tells the assembler, in tree order.
pub(super) enum Event {
    EnterDir(Node),
    LeaveDir,
    Leaf {
        node: Node,
        status: FileStatus,
        content: Content,
    },
    Warning(String),
    /// Something left out on purpose, worth telling (not an error).
    Note(String),
}

/// A file to read.
pub(super) struct FileJob {
    pub path: PathBuf,
    pub result: Sender<FileOutcome>,
}

/// The result of reading one file.
pub(super) enum FileOutcome {
    Read {
        content: Vec<BlobId>,
        size: u64,
        /// Set when the file kept changing while it was read.
        changed: Option<String>,
    },
    /// The file could not be read; the message names it. The run goes on.
    Unreadable(String),
    /// The repository failed; the run stops.
    Failed(Error),
}

/// Why a walk ended early.
enum Halt {
    /// The assembler has gone away; it knows why, so stop quietly.
    Stopped,
    /// Something that is not one unreadable entry went wrong.
    Failed(Error),
}

impl From<Error> for Halt {
    fn from(e: Error) -> Halt {
        Halt::Failed(e)
    }
}

pub(super) struct Walker<'a> {
    pub repo: &'a IndexedRepository,
    pub options: &'a ArchiveOptions,
    pub owners: &'a OwnerNames,
    pub events: Sender<Event>,
    pub jobs: Sender<FileJob>,
    /// Folders never backed up (the repository's own), by device and inode.
    pub skip_dirs: Vec<(u64, u64)>,
}

/// The source paths as a tree of path components, so that `/a/b/c` and
/// `/a/d` share the node for `/a`.
#[derive(Default)]
struct SourceTrie {
    is_source: bool,
    children: std::collections::BTreeMap<Vec<u8>, SourceTrie>,
}

impl SourceTrie {
    fn build(sources: &[PathBuf]) -> SourceTrie {
        let mut root = SourceTrie::default();
        for source in sources {
            let mut node = &mut root;
            for part in source.iter().skip(1) {
                node = node.children.entry(part.as_bytes().to_vec()).or_default();
            }
            node.is_source = true;
        }
        root
    }
}

impl Walker<'_> {
    pub fn run(self, sources: &[PathBuf], parent_root: Option<&Tree>) -> Result<()> {
        let trie = SourceTrie::build(sources);
        let outcome = if trie.is_source {
            self.walk_dir_contents(Path::new("/"), parent_root, None)
        } else {
            self.walk_trie(Path::new("/"), &trie, parent_root)
        };
        match outcome {
            Ok(()) | Err(Halt::Stopped) => Ok(()),
            Err(Halt::Failed(e)) => Err(e),
        }
    }

    fn send(&self, event: Event) -> Result<(), Halt> {
        self.events.send(event).map_err(|_| Halt::Stopped)
    }

    fn warn(&self, path: &Path, what: impl std::fmt::Display) -> Result<(), Halt> {
        self.send(Event::Warning(format!("{}: {what}", path.display())))
    }

    /// Loads the parent's subtree for a directory node, if it has one.
    fn parent_subtree(&self, parent: Option<&Node>, path: &Path) -> Result<Option<Tree>, Halt> {
        let Some(id) = parent
            .filter(|n| n.kind == NodeKind::Dir)
            .and_then(|n| n.subtree)
        else {
            return Ok(None);
        };
        match self.repo.load_tree(&id) {
            Ok(tree) => Ok(Some(tree)),
            // Not an error of the sources: everything below is read again
            // and the snapshot is complete. `verify` names the damage.
            Err(e) => {
                self.send(Event::Note(format!(
                    "{}: the parent snapshot's tree is unreadable, reading everything below again: {e}",
                    path.display()
                )))?;
                Ok(None)
            }
        }
    }

    /// Walks the folders above the sources: recorded with their metadata,
    /// but only the children that lead to a source are entered.
    fn walk_trie(&self, path: &Path, trie: &SourceTrie, parent: Option<&Tree>) -> Result<(), Halt> {
        for (name, child) in &trie.children {
            let child_path = path.join(std::ffi::OsStr::from_bytes(name));
            let meta = match std::fs::symlink_metadata(&child_path) {
                Ok(meta) => meta,
                Err(e) => return Err(Error::io(child_path, e).into()),
            };
            let parent_node = parent.and_then(|t| t.find(name));
            if child.is_source {
                let device = meta.dev();
                self.walk_entry(&child_path, name, &meta, parent_node, device)?;
                continue;
            }
            let node = node_from_metadata(&child_path, name, &meta, self.owners)
                .map_err(|e| Error::io(&child_path, e))?;
            let subtree = self.parent_subtree(parent_node, &child_path)?;
            self.send(Event::EnterDir(node))?;
            self.walk_trie(&child_path, child, subtree.as_ref())?;
            self.send(Event::LeaveDir)?;
        }
        Ok(())
    }

    fn walk_entry(
        &self,
        path: &Path,
        name: &[u8],
        meta: &Metadata,
        parent: Option<&Node>,
        root_device: u64,
    ) -> Result<(), Halt> {
        let mut node = match node_from_metadata(path, name, meta, self.owners) {
            Ok(node) => node,
            Err(e) => {
                self.warn(path, e)?;
                return Ok(());
            }
        };
        match node.kind {
            NodeKind::Dir if self.marked_excluded(path) => {}
            NodeKind::File
                if self
                    .options
                    .exclude_larger_than
                    .is_some_and(|limit| meta.len() > limit) => {}
            NodeKind::Dir => {
                let subtree = self.parent_subtree(parent, path)?;
                self.send(Event::EnterDir(node))?;
                let other_fs = self.options.one_file_system && meta.dev() != root_device;
                if !other_fs {
                    self.walk_dir_contents(path, subtree.as_ref(), Some(root_device))?;
                }
                self.send(Event::LeaveDir)?;
            }
            NodeKind::File => {
                let status = match parent {
                    None => FileStatus::New,
                    Some(old) if self.unchanged(old, &node) => FileStatus::Unchanged,
                    Some(_) => FileStatus::Changed,
                };
                let content = if status == FileStatus::Unchanged {
                    let old = parent.expect("unchanged implies a parent");
                    node.size = old.size;
                    Content::Ready(old.content.clone())
                } else {
                    let (tx, rx) = bounded(1);
                    let job = FileJob {
                        path: path.to_path_buf(),
                        result: tx,
                    };
                    self.jobs.send(job).map_err(|_| Halt::Stopped)?;
                    Content::Pending(rx)
                };
                self.send(Event::Leaf {
                    node,
                    status,
                    content,
                })?;
            }
            _ => self.send(Event::Leaf {
                node,
                status: FileStatus::NotAFile,
                content: Content::Ready(Vec::new()),
            })?,
        }
        Ok(())
    }

    /// Whether folder `path` holds a marker file that excludes it.
    fn marked_excluded(&self, path: &Path) -> bool {
        self.options
            .exclude_if_present
            .iter()
            .any(|(name, signature)| {
                let marker = path.join(name);
                match signature {
                    None => std::fs::symlink_metadata(&marker).is_ok(),
                    Some(signature) => {
                        let mut start = vec![0u8; signature.len()];
                        File::open(&marker)
                            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut start))
                            .is_ok_and(|()| &start == signature)
                    }
                }
            })
    }

    fn unchanged(&self, old: &Node, new: &Node) -> bool {
        old.kind == NodeKind::File
            && old.size == new.size
            && old.mtime == new.mtime
            && old.ctime == new.ctime
            && old.inode == new.inode
            && old
                .content
                .iter()
                .all(|id| self.repo.has_blob(id, BlobType::Data))
    }

    /// Walks the entries of the directory `path` in name order. `root_device`
    /// is the device of the source it belongs to (for one-file-system).
    fn walk_dir_contents(
        &self,
        path: &Path,
        parent: Option<&Tree>,
        root_device: Option<u64>,
    ) -> Result<(), Halt> {
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) => {
                self.warn(path, e)?;
                return Ok(());
            }
        };
        let mut names = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => names.push(entry.file_name()),
                Err(e) => self.warn(path, e)?,
            }
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let root_device = match root_device {
            Some(device) => device,
            None => std::fs::symlink_metadata(path)
                .map_err(|e| Error::io(path, e))?
                .dev(),
        };
        for name in names {
            let child = path.join(&name);
            if self.options.excludes.matches(&child, name.as_bytes()) {
                continue;
            }
            let meta = match std::fs::symlink_metadata(&child) {
                Ok(meta) => meta,
                Err(e) => {
                    self.warn(&child, e)?;
                    continue;
                }
            };
            if meta.is_dir() && self.skip_dirs.contains(&(meta.dev(), meta.ino())) {
                self.send(Event::Note(format!(
                    "{}: left out, it is the repository (or state) folder itself",
                    child.display()
                )))?;
                continue;
            }
            let parent_node = parent.and_then(|t| t.find(name.as_bytes()));
            self.walk_entry(&child, name.as_bytes(), &meta, parent_node, root_device)?;
        }
        Ok(())
    }
}

/// What says a file changed: size, modification and change time.
fn state(meta: &Metadata) -> (u64, i64, i64, i64, i64) {
    (
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    )
}

/// Reads, chunks and saves one file, reading through `buffer`. A file whose
/// size, mtime or ctime differ after reading from before is read once more,
/// so that what is stored is a state the file had; if it changes again, the
/// second read is stored and the outcome says so.
pub(super) fn read_file(saver: &BlobSaver, path: &Path, buffer: &mut Vec<u8>) -> FileOutcome {
    let unreadable =
        |e: std::io::Error| FileOutcome::Unreadable(format!("{}: {e}", path.display()));
    for attempt in 0..2 {
        // O_NOATIME keeps the backup from touching access times; it is
        // only allowed for the file's owner (or root), so fall back without.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOATIME)
            .open(path)
            .or_else(|_| File::open(path));
        let file = match file {
            Ok(file) => file,
            Err(e) => return unreadable(e),
        };
        let before = match file.metadata() {
            Ok(meta) => state(&meta),
            Err(e) => return unreadable(e),
        };
        let (content, size) = match saver.save_stream(&file, buffer) {
            Ok(read) => read,
            Err(StreamError::Read(e)) => return unreadable(e),
            Err(StreamError::Store(e)) => return FileOutcome::Failed(e),
        };
        let after = match file.metadata() {
            Ok(meta) => state(&meta),
            Err(e) => return unreadable(e),
        };
        if before == after && size == after.0 {
            return FileOutcome::Read {
                content,
                size,
                changed: None,
            };
        }
        if attempt == 1 {
            return FileOutcome::Read {
                content,
                size,
                changed: Some(format!(
                    "{}: changed while it was read, twice; stored as last read, which may mix old and new content",
                    path.display()
                )),
            };
        }
    }
    unreachable!("the second attempt returns")
}
