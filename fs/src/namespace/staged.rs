//! The `staging/` folder of the namespace: inode numbers for staged
//! entries, and every change a writable filesystem supports, passed on to
//! [`Staging`]. Everything outside `staging/` is read-only (EROFS).

use std::sync::Arc;

use mapache_store::tree::{Node, NodeKind, Timestamp};

use super::{Attr, DirEntry, Entry, Key, Namespace, Stale, Table};
use crate::acl;
use crate::error::{FsError, FsResult};
use crate::staging::Entry as StagedEntry;
use crate::staging::{
    join, CommitRequest, Committed, Meta, RenameMode, StageAnswer, StageError, StageRequest,
    Staging, TreeChange,
};

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

    /// Whether `ino` is inside `staging/` (whose entries change at any time).
    pub fn is_staged(&self, ino: u64) -> bool {
        matches!(
            self.table.lock().entries.get(&ino).map(|slot| &slot.entry),
            Some(Entry::Staged(_) | Entry::StagingRoot)
        )
    }

    /// The staged entry `ino` is: alive while it has a name, or while an
    /// open file reaches it (NotFound after); read-only outside `staging/`.
    pub fn staged(&self, ino: u64) -> FsResult<StagedEntry> {
        let weak = match self.table.lock().entries.get(&ino).map(|slot| &slot.entry) {
            Some(Entry::Staged(weak)) => weak.clone(),
            Some(Entry::StagingRoot) => return Ok(self.staging()?.root()),
            Some(_) => return Err(FsError::ReadOnly),
            None => return Err(FsError::NotFound),
        };
        weak.upgrade().ok_or(FsError::NotFound)
    }

    /// The number of staged `entry`, counted `lookups` more times as
    /// handed to the kernel: all names of a hard link share it, and it
    /// follows the entry wherever it moves.
    fn intern_staged(&self, entry: &StagedEntry, lookups: u64) -> u64 {
        self.table.lock().intern_staged(entry, lookups)
    }

    /// Folder `parent` and the staging path of `name` in it, for changes;
    /// changes outside the staging area are refused as read-only.
    fn child_path(&self, parent: u64, name: &[u8]) -> FsResult<(StagedEntry, Vec<u8>)> {
        if name.is_empty() || name.contains(&b'/') || name == b"." || name == b".." {
            return Err(FsError::Invalid);
        }
        super::check_name_length(name)?;
        let dir = self.staged(parent)?;
        let path = self.staging()?.path_of(&dir).ok_or(FsError::NotFound)?;
        Ok((dir, join(&path, name)))
    }

    /// The attributes of staged `entry`, numbered `ino`. A folder's link
    /// count counts its subfolders; a file without a name left (open after
    /// unlink) has none, as `fstat` shows on Linux; anything else without a
    /// name is gone.
    pub(super) fn staged_attr(&self, ino: u64, entry: &StagedEntry) -> FsResult<Attr> {
        let staging = self.staging()?;
        let node = staging.stat(entry)?;
        let mut attr = Attr::of_node(ino, &node);
        match (entry, staging.has_name(entry)) {
            (StagedEntry::File(_), true) => {}
            (StagedEntry::File(_), false) => attr.nlink = 0,
            (_, false) => return Err(FsError::NotFound),
            (StagedEntry::Dir(_), true) => attr.nlink = 2 + staging.subfolders(entry)?,
            (StagedEntry::Other(_), true) => {}
        }
        Ok(attr)
    }

    /// Looks up `name` in staged folder `parent`.
    pub(super) fn staged_lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        let entry = self.staging()?.lookup(&self.staged(parent)?, name)?;
        self.staged_attr(self.intern_staged(&entry, 1), &entry)
    }

    pub(super) fn staged_readdir(&self, ino: u64) -> FsResult<Vec<DirEntry>> {
        let listed = self.staging()?.list(&self.staged(ino)?)?;
        let kinds: Vec<NodeKind> = listed.iter().map(|(_, entry)| entry.kind()).collect();
        let mut table = self.table.lock();
        Ok(listed
            .into_iter()
            .zip(kinds)
            .map(|((name, entry), kind)| DirEntry {
                ino: table.intern_staged(&entry, 0),
                kind,
                name,
            })
            .collect())
    }

    /// Makes a folder.
    pub fn mkdir(&self, parent: u64, name: &[u8], meta: Meta, umask: u32) -> FsResult<Attr> {
        let (dir, path) = self.child_path(parent, name)?;
        let (mode, acls) = self.inherit(&dir, meta.mode, umask, true)?;
        self.staging()?.mkdir(&path, Meta { mode, ..meta })?;
        self.created(&dir, name, acls)
    }

    /// Makes an empty regular file.
    pub fn create(&self, parent: u64, name: &[u8], meta: Meta, umask: u32) -> FsResult<Attr> {
        let (dir, path) = self.child_path(parent, name)?;
        let (mode, acls) = self.inherit(&dir, meta.mode, umask, false)?;
        self.staging()?.create(&path, Meta { mode, ..meta })?;
        self.created(&dir, name, acls)
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
        let (dir, path) = self.child_path(parent, name)?;
        // Symlinks have no permissions of their own, hence no ACLs.
        let mut acls = Vec::new();
        if node.kind != NodeKind::Symlink {
            (node.mode, acls) = self.inherit(&dir, node.mode, umask, false)?;
        }
        self.staging()?.make_special(&path, node)?;
        self.created(&dir, name, acls)
    }

    /// The mode and ACLs a new entry in folder `dir` gets (see
    /// [`acl::inherit`]).
    fn inherit(
        &self,
        dir: &StagedEntry,
        mode: u32,
        umask: u32,
        is_dir: bool,
    ) -> FsResult<(u32, acl::AclAttrs)> {
        let folder = self.staging()?.stat(dir)?;
        let default = folder
            .xattrs
            .iter()
            .find(|(name, _)| name == acl::DEFAULT)
            .map(|(_, value)| value.as_slice());
        let inherited = acl::inherit(default, mode, umask, is_dir);
        Ok((inherited.mode, inherited.acls))
    }

    /// The attributes of the entry just named `name` in folder `dir`, after
    /// giving it `acls`; handed to the kernel as a lookup.
    fn created(&self, dir: &StagedEntry, name: &[u8], acls: acl::AclAttrs) -> FsResult<Attr> {
        let staging = self.staging()?;
        let entry = staging.lookup(dir, name)?;
        for (name, value) in acls {
            staging.set_xattr(&entry, name, Some(value))?;
        }
        self.staged_attr(self.intern_staged(&entry, 1), &entry)
    }

    /// Removes a file (not a folder).
    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        let (dir, path) = self.child_path(parent, name)?;
        let staging = self.staging()?;
        if let StagedEntry::Dir(_) = staging.lookup(&dir, name)? {
            return Err(FsError::IsDir);
        }
        staging.remove(&path, false)
    }

    /// Removes an empty folder.
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        let (dir, path) = self.child_path(parent, name)?;
        let staging = self.staging()?;
        if !matches!(staging.lookup(&dir, name)?, StagedEntry::Dir(_)) {
            return Err(FsError::NotDir);
        }
        staging.remove(&path, false)
    }

    /// Renames (or swaps, see [`RenameMode`]); inode numbers stay with the
    /// entries.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        mode: RenameMode,
    ) -> FsResult<()> {
        let (_, from) = self.child_path(parent, name)?;
        let (_, to) = self.child_path(new_parent, new_name)?;
        self.staging()?.rename(&from, &to, mode)
    }

    /// Makes `new_name` in `new_parent` another name of `ino`, which keeps
    /// its number.
    pub fn link(&self, ino: u64, new_parent: u64, new_name: &[u8]) -> FsResult<Attr> {
        let staging = self.staging()?;
        let from = staging
            .path_of(&self.staged(ino)?)
            .ok_or(FsError::NotFound)?;
        let (dir, to) = self.child_path(new_parent, new_name)?;
        staging.link(&from, &to)?;
        self.created(&dir, new_name, Vec::new())
    }

    /// Changes mode, owner, size or times; of a file unlinked while open
    /// too (`ftruncate`, `fchmod` of a temporary file).
    pub fn setattr(&self, ino: u64, change: SetAttr) -> FsResult<Attr> {
        let entry = self.staged(ino)?;
        let staging = self.staging()?;
        if let Some(size) = change.size {
            staging.truncate(&entry, size)?;
        }
        if change.changes_meta() {
            let node = staging.stat(&entry)?;
            staging.set_meta(&entry, change.meta(&node))?;
        }
        self.staged_attr(ino, &entry)
    }

    /// Writes into staged file `file` (also after its names went).
    pub fn write(&self, file: &StagedEntry, offset: u64, data: &[u8]) -> FsResult<usize> {
        self.staging()?.write(file, offset, data)
    }

    /// Reads from staged file `file` (also after its names went).
    pub fn read(&self, file: &StagedEntry, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        self.staging()?.read(file, offset, size)
    }

    /// Counts a writer of staged file `file` in or out.
    pub fn writer(&self, file: &StagedEntry, opening: bool) -> FsResult<()> {
        self.staging()?.writer(file, opening)
    }

    /// Notes a write into `file` that came without a writer's handle.
    pub fn loose_write(&self, file: &StagedEntry) -> FsResult<()> {
        self.staging()?.loose_write(file)
    }

    /// Makes staged file `file` durable, whatever its names.
    pub fn fsync(&self, file: &StagedEntry) -> FsResult<()> {
        self.staging()?.fsync(file)
    }

    /// Staged file `ino`, to hold while it is open: reads and writes reach
    /// it after its names go away.
    pub fn open_staged(&self, ino: u64) -> FsResult<StagedEntry> {
        let entry = self.staged(ino)?;
        entry.file()?;
        Ok(entry)
    }

    /// Sets or (with `None`) removes an extended attribute.
    pub fn set_xattr(&self, ino: u64, name: &[u8], value: Option<Vec<u8>>) -> FsResult<()> {
        self.staging()?.set_xattr(&self.staged(ino)?, name, value)
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
        self.table.lock().changed_outside = Some(Vec::new());
        let answer = staging.run_request(request);
        // The folder added to has new times and perhaps new subfolders.
        let added_to = added_to.and_then(|to| staging.resolve(&to).ok());
        let mut table = self.table.lock();
        let mut stale = table.changed_outside.take().unwrap_or_default();
        stale.extend(
            added_to
                .and_then(|folder| table.number_of(&folder))
                .map(Stale::Attributes),
        );
        drop(table);
        if let Some(forget) = self.on_stale.get() {
            let mut told = std::collections::HashSet::new();
            for stale in stale.iter().filter(|stale| told.insert(*stale)) {
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
    /// See [`Namespace::intern_staged`].
    fn intern_staged(&mut self, entry: &StagedEntry, lookups: u64) -> u64 {
        let weak = || Entry::Staged(entry.downgrade());
        self.intern(Key::Staged(entry.identity()), lookups, weak)
    }

    /// The number the kernel knows staged `entry` by, if it was given one.
    fn number_of(&self, entry: &StagedEntry) -> Option<u64> {
        let key = match entry.is_root() {
            true => Key::Child(super::ROOT, b"staging".to_vec()),
            false => Key::Staged(entry.identity()),
        };
        self.by_key.get(&key).copied()
    }

    /// Follows a change to the staging tree's names: a file that lost a
    /// name stays reachable by its number while the kernel holds it (it
    /// may be open), and while a `stage` request from another process
    /// runs, what the kernel cached of the names it changes is noted.
    pub(super) fn follow(&mut self, change: &TreeChange) {
        match change {
            TreeChange::Name { folder, name } => {
                let folder = self.number_of(folder);
                if let (Some(stale), Some(folder)) = (&mut self.changed_outside, folder) {
                    stale.push(Stale::Name(folder, name.clone()));
                    // Its link count and times changed too.
                    stale.push(Stale::Attributes(folder));
                }
            }
            TreeChange::LostName(entry) => {
                let Some(ino) = self.number_of(entry) else {
                    return;
                };
                if let StagedEntry::File(_) = entry {
                    self.unlinked.insert(ino, entry.clone());
                }
                if let Some(stale) = &mut self.changed_outside {
                    stale.push(Stale::Attributes(ino));
                }
            }
            TreeChange::Reset { names } => {
                let root = self
                    .by_key
                    .get(&Key::Child(super::ROOT, b"staging".to_vec()));
                if let (Some(stale), Some(&root)) = (&mut self.changed_outside, root) {
                    stale.extend(names.iter().map(|name| Stale::Name(root, name.clone())));
                    stale.push(Stale::Attributes(root));
                }
            }
        }
    }
}
