//! The `staging/` folder of the namespace: inode numbers for staging paths,
//! and every change a writable filesystem supports, passed on to
//! [`Staging`]. Everything outside `staging/` is read-only (EROFS).

use std::sync::Arc;

use mapache_store::tree::{Node, NodeKind, Timestamp};

use super::{Attr, DirEntry, Entry, Key, Namespace, Stale, Table};
use crate::acl;
use crate::error::{FsError, FsResult};
use crate::staging::{
    join, CommitRequest, Committed, Meta, OpenFile, RenameMode, StageAnswer, StageError,
    StageRequest, Staging, TreeChange,
};

/// Path of an entry that no longer exists (unlinked, or replaced by a
/// rename); it never resolves.
pub(super) const GONE: &[u8] = b"\0gone";

/// Attribute changes of `setattr`; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New length (truncate or extend).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<Timestamp>,
    /// New modification time.
    pub mtime: Option<Timestamp>,
}

impl SetAttr {
    fn changes_meta(&self) -> bool {
        self.mode.is_some()
            || self.uid.is_some()
            || self.gid.is_some()
            || self.atime.is_some()
            || self.mtime.is_some()
    }

    /// `node`'s metadata with these changes.
    fn meta(&self, node: &Node) -> Meta {
        Meta {
            mode: self.mode.unwrap_or(node.mode) & 0o7777,
            uid: self.uid.unwrap_or(node.uid),
            gid: self.gid.unwrap_or(node.gid),
            atime: self.atime.unwrap_or(node.atime),
            mtime: self.mtime.unwrap_or(node.mtime),
        }
    }
}

impl Namespace {
    pub(super) fn staging(&self) -> FsResult<&Arc<Staging>> {
        self.staging.as_ref().ok_or(FsError::ReadOnly)
    }

    /// The staging path of `ino`, if it is inside `staging/`.
    pub fn staged_path(&self, ino: u64) -> Option<Vec<u8>> {
        match self.table.lock().get(ino) {
            Ok(Entry::Staged(path)) if path != GONE => Some(path),
            _ => None,
        }
    }

    /// Whether `ino` is inside `staging/` (whose entries change at any time).
    pub fn is_staged(&self, ino: u64) -> bool {
        matches!(self.table.lock().get(ino), Ok(Entry::Staged(_)))
    }

    fn path_of(&self, ino: u64) -> FsResult<Vec<u8>> {
        match self.table.lock().get(ino)? {
            Entry::Staged(path) if path == GONE => Err(FsError::NotFound),
            Entry::Staged(path) => Ok(path),
            _ => Err(FsError::ReadOnly),
        }
    }

    /// The staging path of `name` in folder `parent`; changes outside the
    /// staging area are refused as read-only.
    fn child_path(&self, parent: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        if name.is_empty() || name.contains(&b'/') || name == b"." || name == b".." {
            return Err(FsError::Invalid);
        }
        super::check_name_length(name)?;
        Ok(join(&self.path_of(parent)?, name))
    }

    /// The inode number of the staged entry at `path`; all names of a
    /// hard-linked file share one.
    fn intern_staged(&self, path: &[u8], node: &Node) -> u64 {
        let key = if node.kind != NodeKind::Dir && node.links > 1 {
            Key::StagedLink(node.device, node.inode)
        } else {
            Key::Staged(path.to_vec())
        };
        self.table
            .lock()
            .intern(key, 0, || Entry::Staged(path.to_vec()))
    }

    pub(super) fn staged_attr(&self, ino: u64, path: &[u8]) -> FsResult<Attr> {
        if path == GONE {
            return Err(FsError::NotFound);
        }
        let node = self.staging()?.stat(path)?;
        self.staged_node_attr(ino, path, &node)
    }

    pub(super) fn staged_lookup(&self, dir: &[u8], name: &[u8]) -> FsResult<Attr> {
        let path = join(dir, name);
        let node = self.staging()?.stat(&path)?;
        self.staged_node_attr(self.intern_staged(&path, &node), &path, &node)
    }

    /// The attributes of staged `node` at `path`; a folder's link count
    /// counts its subfolders.
    fn staged_node_attr(&self, ino: u64, path: &[u8], node: &Node) -> FsResult<Attr> {
        let mut attr = Attr::of_node(ino, node);
        if node.kind == NodeKind::Dir {
            attr.nlink = 2 + super::subfolders(&self.staging()?.list(path)?);
        }
        Ok(attr)
    }

    pub(super) fn staged_readdir(&self, dir: &[u8]) -> FsResult<Vec<DirEntry>> {
        let nodes = self.staging()?.list(dir)?;
        Ok(nodes
            .into_iter()
            .map(|node| {
                let path = join(dir, &node.name);
                DirEntry {
                    ino: self.intern_staged(&path, &node),
                    kind: node.kind,
                    name: node.name,
                }
            })
            .collect())
    }

    fn created(&self, path: &[u8]) -> FsResult<Attr> {
        let node = self.staging()?.stat(path)?;
        let ino = self.intern_staged(path, &node);
        // A new name of a linked file keeps the inode of its first name.
        self.staged_attr(ino, &self.path_of(ino)?)
    }

    /// Makes a folder.
    pub fn mkdir(&self, parent: u64, name: &[u8], meta: Meta, umask: u32) -> FsResult<Attr> {
        let path = self.child_path(parent, name)?;
        let staging = self.staging()?;
        let (mode, acls) = self.inherit(parent, meta.mode, umask, true)?;
        staging.mkdir(&path, Meta { mode, ..meta })?;
        self.created_with(&path, acls)
    }

    /// Makes an empty regular file.
    pub fn create(&self, parent: u64, name: &[u8], meta: Meta, umask: u32) -> FsResult<Attr> {
        let path = self.child_path(parent, name)?;
        let staging = self.staging()?;
        let (mode, acls) = self.inherit(parent, meta.mode, umask, false)?;
        staging.create(&path, Meta { mode, ..meta })?;
        self.created_with(&path, acls)
    }

    /// Makes a symlink, fifo, device or socket described by `node` (whose
    /// mode is the one asked for, before `umask`).
    pub fn make_special(
        &self,
        parent: u64,
        name: &[u8],
        mut node: Node,
        umask: u32,
    ) -> FsResult<Attr> {
        let path = self.child_path(parent, name)?;
        let staging = self.staging()?;
        // Symlinks have no permissions of their own, hence no ACLs.
        let mut acls = Vec::new();
        if node.kind != NodeKind::Symlink {
            (node.mode, acls) = self.inherit(parent, node.mode, umask, false)?;
        }
        staging.make_special(&path, node)?;
        self.created_with(&path, acls)
    }

    /// The mode and ACLs a new entry in folder `parent` gets (see
    /// [`acl::inherit`]).
    fn inherit(
        &self,
        parent: u64,
        mode: u32,
        umask: u32,
        is_dir: bool,
    ) -> FsResult<(u32, acl::AclAttrs)> {
        let folder = self.staging()?.stat(&self.path_of(parent)?)?;
        let default = folder
            .xattrs
            .iter()
            .find(|(name, _)| name == acl::DEFAULT)
            .map(|(_, value)| value.as_slice());
        let inherited = acl::inherit(default, mode, umask, is_dir);
        Ok((inherited.mode, inherited.acls))
    }

    /// The attributes of the entry just made at `path`, after giving it
    /// `acls`.
    fn created_with(&self, path: &[u8], acls: acl::AclAttrs) -> FsResult<Attr> {
        let staging = self.staging()?;
        for (name, value) in acls {
            staging.set_xattr(path, name, Some(value))?;
        }
        self.created(path)
    }

    /// Removes a file (not a folder).
    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        let path = self.child_path(parent, name)?;
        let staging = self.staging()?;
        if staging.stat(&path)?.kind == NodeKind::Dir {
            return Err(FsError::IsDir);
        }
        staging.remove(&path, false)
    }

    /// Removes an empty folder.
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        let path = self.child_path(parent, name)?;
        let staging = self.staging()?;
        if staging.stat(&path)?.kind != NodeKind::Dir {
            return Err(FsError::NotDir);
        }
        staging.remove(&path, false)
    }

    /// Renames (or swaps, see [`RenameMode`]); inode numbers follow the
    /// moved entries.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        mode: RenameMode,
    ) -> FsResult<()> {
        let from = self.child_path(parent, name)?;
        let to = self.child_path(new_parent, new_name)?;
        self.staging()?.rename(&from, &to, mode)
    }

    /// Makes `new_name` in `new_parent` another name of file `ino`.
    pub fn link(&self, ino: u64, new_parent: u64, new_name: &[u8]) -> FsResult<Attr> {
        let from = self.path_of(ino)?;
        let to = self.child_path(new_parent, new_name)?;
        let staging = self.staging()?;
        staging.link(&from, &to)?;
        // The new name shares the inode number the first name already has.
        let node = staging.stat(&from)?;
        let mut table = self.table.lock();
        let key = Key::StagedLink(node.device, node.inode);
        match table.by_key.get(&key) {
            Some(&linked) if !table.is_gone(linked) => {}
            _ => {
                table.by_key.insert(key, ino);
            }
        }
        drop(table);
        self.created(&to)
    }

    /// Changes mode, owner, size or times; of a file unlinked while open
    /// too (`ftruncate`, `fchmod` of a temporary file).
    pub fn setattr(&self, ino: u64, change: SetAttr) -> FsResult<Attr> {
        let path = match self.path_of(ino) {
            Err(FsError::NotFound) => return self.setattr_unlinked(ino, change),
            path => path?,
        };
        let staging = self.staging()?;
        if let Some(size) = change.size {
            staging.truncate(&path, size)?;
        }
        if change.changes_meta() {
            let node = staging.stat(&path)?;
            staging.set_meta(&path, change.meta(&node))?;
        }
        self.staged_attr(ino, &path)
    }

    fn setattr_unlinked(&self, ino: u64, change: SetAttr) -> FsResult<Attr> {
        let file = self.open_staged(ino)?;
        let staging = self.staging()?;
        if let Some(size) = change.size {
            staging.truncate_unlinked(&file, size)?;
        }
        if change.changes_meta() {
            let node = staging.stat_open(&file)?;
            staging.set_meta_unlinked(&file, &change.meta(&node))?;
        }
        self.getattr_open(ino, &file)
    }

    /// Writes into file `ino`.
    pub fn write(&self, ino: u64, offset: u64, data: &[u8]) -> FsResult<usize> {
        let path = self.path_of(ino)?;
        self.staging()?.write(&path, offset, data)
    }

    /// Writes into file `ino` through its open handle `file`, which works
    /// after the name it was opened by is gone too.
    pub fn write_open(
        &self,
        ino: u64,
        file: &OpenFile,
        offset: u64,
        data: &[u8],
    ) -> FsResult<usize> {
        match self.path_of(ino) {
            Ok(path) => self.staging()?.write(&path, offset, data),
            Err(FsError::NotFound) => self.staging()?.write_unlinked(file, offset, data),
            Err(e) => Err(e),
        }
    }

    /// Attributes of staged file `ino` through its open handle `file`,
    /// which work after the name it was opened by is gone too.
    pub fn getattr_open(&self, ino: u64, file: &OpenFile) -> FsResult<Attr> {
        match self.getattr(ino) {
            Err(FsError::NotFound) => {
                // No name left: a link count of 0, as `fstat` of an
                // unlinked file shows on Linux.
                let mut attr = Attr::of_node(ino, &self.staging()?.stat_open(file)?);
                attr.nlink = 0;
                Ok(attr)
            }
            other => other,
        }
    }

    /// Counts a writer of the file behind an open handle in or out.
    pub fn writer_open(&self, file: &OpenFile, opening: bool) -> FsResult<()> {
        self.staging()?.writer_open(file, opening)
    }

    /// Notes a write into `file` that came without a writer's handle.
    pub fn loose_write(&self, file: &OpenFile) -> FsResult<()> {
        self.staging()?.loose_write(file);
        Ok(())
    }

    /// Makes the file behind an open handle durable, whatever its names.
    pub fn fsync_open(&self, file: &OpenFile) -> FsResult<()> {
        self.staging()?.fsync_open(file)
    }

    /// Staged file `ino`, held for reading even after its names go away;
    /// found also after they went, until the kernel forgets the inode.
    pub fn open_staged(&self, ino: u64) -> FsResult<OpenFile> {
        match self.path_of(ino) {
            Ok(path) => self.staging()?.open_file(&path),
            Err(FsError::NotFound) => {
                let table = self.table.lock();
                table.unlinked.get(&ino).cloned().ok_or(FsError::NotFound)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads from a staged file held with [`Namespace::open_staged`].
    pub fn read_open(&self, file: &OpenFile, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        self.staging()?.read_open(file, offset, size)
    }

    /// Sets or (with `None`) removes an extended attribute.
    pub fn set_xattr(&self, ino: u64, name: &[u8], value: Option<Vec<u8>>) -> FsResult<()> {
        let path = self.path_of(ino)?;
        self.staging()?.set_xattr(&path, name, value)
    }

    /// Runs a `stage` subcommand for another process (`mapache stage ...`
    /// while mounted); the kernel then forgets what it cached of the names
    /// the request changed, so that they show as they are when the command
    /// returns.
    pub fn stage_request(&self, request: StageRequest) -> Result<StageAnswer, StageError> {
        let staging = self.staging().map_err(|cause| StageError {
            what: "this mount does not hold the staging area".into(),
            cause,
        })?;
        let added_to = match &request {
            StageRequest::Add { to, .. } => Some(to.clone()),
            _ => None,
        };
        self.table.lock().changed_outside = Some(Default::default());
        let answer = staging.run_request(request);
        let mut table = self.table.lock();
        let changed = table.changed_outside.take().unwrap_or_default();
        let number = |path: &[u8]| table.by_key.get(&Key::Staged(path.to_vec())).copied();
        let mut stale = Vec::new();
        for path in &changed.names {
            let (folder, name) = match path.iter().rposition(|&b| b == b'/') {
                Some(cut) => (&path[..cut], &path[cut + 1..]),
                None => (&path[..0], &path[..]),
            };
            if let Some(folder) = number(folder) {
                stale.push(Stale::Name(folder, name.to_vec()));
                // Its link count and times changed too.
                stale.push(Stale::Attributes(folder));
            }
        }
        let attributes_changed = changed.links.iter().chain(&added_to);
        stale.extend(attributes_changed.filter_map(|path| number(path).map(Stale::Attributes)));
        drop(table);
        if let Some(forget) = self.on_stale.get() {
            stale.dedup();
            for stale in &stale {
                forget(stale);
            }
        }
        answer
    }

    /// Commits the staging area; the snapshot shows under `snapshots/` at
    /// once.
    pub fn commit(&self, request: &CommitRequest) -> FsResult<Committed> {
        let committed = self.staging()?.commit(request)?;
        if let Committed::Snapshot(..) = committed {
            self.refresh_snapshots();
            if let Some(hook) = self.on_commit.get() {
                hook();
            }
        }
        Ok(committed)
    }

    /// The staging area's state folder (for `statfs`).
    pub fn state_dir(&self) -> Option<&std::path::Path> {
        self.staging.as_ref().map(|s| s.dir())
    }

    /// Uploads everything staged and makes the journal durable (unmount).
    pub fn checkpoint(&self) -> FsResult<()> {
        match &self.staging {
            Some(staging) => staging.checkpoint(),
            None => Ok(()),
        }
    }
}

impl Table {
    /// Follows a change to the staging tree's names: inode numbers move
    /// with their entries, and those of entries gone are never reused.
    pub(super) fn follow(&mut self, change: &TreeChange) {
        if let Some(changed) = &mut self.changed_outside {
            match change {
                TreeChange::Removed {
                    path, survivors, ..
                } => {
                    changed.names.push(path.clone());
                    changed
                        .links
                        .extend(survivors.iter().map(|(_, kept)| kept.clone()));
                }
                TreeChange::Moved { from: a, to: b } | TreeChange::Exchanged { a, b } => {
                    changed.names.extend([a.clone(), b.clone()])
                }
                TreeChange::Reset => {}
            }
        }
        match change {
            TreeChange::Removed {
                path,
                survivors,
                file,
            } => {
                for (old, survivor) in survivors {
                    self.name_moved(old, survivor);
                }
                self.forget_path(path, file.as_ref());
            }
            TreeChange::Moved { from, to } => {
                self.move_paths(&[(from, to)]);
            }
            TreeChange::Exchanged { a, b } => {
                self.move_paths(&[(a, b), (b, a)]);
            }
            TreeChange::Reset => {
                let below_root: Vec<Vec<u8>> = self
                    .staged
                    .iter()
                    .filter(|(path, _)| !path.is_empty())
                    .map(|(path, _)| path.clone())
                    .collect();
                for path in below_root {
                    self.forget_path(&path, None);
                    if let Some(changed) = &mut self.changed_outside {
                        changed.names.push(path);
                    }
                }
            }
        }
    }

    /// The hard-linked entry at `old` lost that name and keeps `survivor`:
    /// its number goes there, as on a local filesystem.
    fn name_moved(&mut self, old: &[u8], survivor: &[u8]) {
        let moved = self.move_paths(&[(old, survivor)]);
        self.by_key.remove(&Key::Staged(old.to_vec()));
        // Looked up by path from now on if it has a single name left.
        if let Some(&ino) = moved.first() {
            self.by_key.insert(Key::Staged(survivor.to_vec()), ino);
        }
    }

    /// Marks the inodes of `path` and everything below it as gone; their
    /// numbers are never reused. `file`, the regular file that was at
    /// `path`, stays reachable by its number until the kernel forgets it.
    fn forget_path(&mut self, path: &[u8], file: Option<&OpenFile>) {
        for (old, ino) in staged_under(self, path) {
            if let (true, Some(file)) = (old == path, file) {
                self.unlinked.insert(ino, file.clone());
            }
            self.staged.remove(&(old.clone(), ino));
            self.set(ino, Entry::Staged(GONE.to_vec()));
            let key = Key::Staged(old);
            if self.by_key.get(&key) == Some(&ino) {
                self.by_key.remove(&key);
            }
        }
    }

    /// Gives the inode numbers of entries at (or below) each `from` the
    /// matching path below `to`, all moves at once; returns those numbers.
    fn move_paths(&mut self, moves: &[(&[u8], &[u8])]) -> Vec<u64> {
        // All moves are found before any is made: with a swap, one entry's
        // new path is another's old one.
        let mut moved: Vec<(Vec<u8>, Vec<u8>, u64)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (from, to) in moves {
            for (old, ino) in staged_under(self, from) {
                if seen.insert(ino) {
                    let new = [*to, &old[from.len()..]].concat();
                    moved.push((old, new, ino));
                }
            }
        }
        for (old, new, ino) in &moved {
            self.staged.remove(&(old.clone(), *ino));
            self.set(*ino, Entry::Staged(new.clone()));
        }
        let inos = moved.iter().map(|(_, _, ino)| *ino).collect();
        // Drop the old keys first, for the same reason.
        let mut rekeyed = Vec::new();
        for (old, new, ino) in moved {
            self.staged.insert((new.clone(), ino));
            if self.by_key.get(&Key::Staged(old.clone())) == Some(&ino) {
                self.by_key.remove(&Key::Staged(old));
                rekeyed.push((new, ino));
            }
        }
        for (new, ino) in rekeyed {
            self.by_key.insert(Key::Staged(new), ino);
        }
        inos
    }
}

/// The staged entries at `path` and below it, with their paths.
fn staged_under(table: &Table, path: &[u8]) -> Vec<(Vec<u8>, u64)> {
    let at = (path.to_vec(), 0)..=(path.to_vec(), u64::MAX);
    // Everything below starts with "path/", and sorts before "path0"
    // ('0' follows '/').
    let below = ([path, b"/"].concat(), 0)..([path, b"0"].concat(), 0);
    table
        .staged
        .range(at)
        .chain(table.staged.range(below))
        .cloned()
        .collect()
}
