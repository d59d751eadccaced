//! Planning a restore: the snapshot's trees and the target walked side by
//! side, through open folders, deciding for each entry what to do.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::SFlag;

use super::target::{self, Existing};
use super::{BlobUse, Damaged, Overwrite, Place, PlannedFile, RestoreOptions, RestoreReport, Uses};
use crate::error::{Error, Result};
use crate::repository::IndexedRepository;
use crate::tree::{Node, NodeKind};

/// A folder of the target while planning.
enum DirState {
    /// It exists and is open.
    Open(OwnedFd),
    /// It does not exist yet (a dry run): everything below is new.
    New,
    /// Something else is in its place and stays: nothing below is restored.
    Blocked,
}

/// What to do with a regular file of the snapshot.
enum FileDecision {
    /// Write it (under its temporary name); `replacing` says whether
    /// something was there.
    Write { replacing: bool },
    /// What is there already holds its content.
    Unchanged,
    /// The policy keeps what is there.
    Keep,
    /// Something that must stay is in its place.
    Conflict(String),
}

pub(super) struct Planner<'a> {
    pub repo: &'a IndexedRepository,
    pub options: &'a RestoreOptions,
    /// The target as given, for messages.
    pub root: &'a Path,
    pub report: RestoreReport,
    pub files: Vec<PlannedFile>,
    /// Symlinks and special files made or found right, for their metadata.
    pub others: Vec<(Place, Node)>,
    /// Folders below the target, children before their parents.
    pub dirs: Vec<(PathBuf, Node)>,
    /// (first name, further name) of hard-linked files.
    pub hard_links: Vec<(Place, Place)>,
    first_link: HashMap<(u64, u64), Place>,
    pub uses: Uses,
    pub damaged: Damaged,
    include_seen: Vec<bool>,
    exclude_seen: Vec<bool>,
}

fn kind_name(existing: Existing) -> &'static str {
    match existing {
        Existing::Absent => "nothing",
        Existing::File { .. } => "a file",
        Existing::Dir => "a folder",
        Existing::Symlink => "a symlink",
        Existing::Special => "a special file",
    }
}

fn unsafe_name(name: &[u8]) -> bool {
    name.is_empty() || name.contains(&b'/') || name == b"." || name == b".."
}

impl<'a> Planner<'a> {
    pub fn new(repo: &'a IndexedRepository, options: &'a RestoreOptions, root: &'a Path) -> Self {
        Planner {
            repo,
            options,
            root,
            report: RestoreReport::default(),
            files: Vec::new(),
            others: Vec::new(),
            dirs: Vec::new(),
            hard_links: Vec::new(),
            first_link: HashMap::new(),
            uses: HashMap::new(),
            damaged: Damaged::new(),
            include_seen: vec![false; options.includes.len()],
            exclude_seen: vec![false; options.excludes.len()],
        }
    }

    fn io(&self, place: &Place, e: std::io::Error) -> Error {
        Error::io(self.root.join(&place.dir).join(&place.name), e)
    }

    fn act(&mut self, action: &'static str, place: &Place, size: u64) {
        let path = place.show(self.root);
        self.report
            .actions
            .push(super::Action { action, path, size });
    }

    /// Plans the snapshot's root entries into the target folder (`None`:
    /// a dry run into a folder that does not exist yet).
    pub fn plan_root(&mut self, nodes: Vec<Node>, root: Option<&OwnedFd>) -> Result<()> {
        let state = match root {
            Some(fd) => DirState::Open(fd.try_clone().map_err(|e| Error::io(self.root, e))?),
            None => DirState::New,
        };
        let all = self.options.includes.is_empty();
        self.plan_dir(nodes, Path::new("/"), Path::new(""), &state, all)?;
        for pattern in self.options.includes.unmatched(&self.include_seen) {
            self.report.warnings.push(format!(
                "--include {pattern:?} matched nothing in the snapshot"
            ));
        }
        for pattern in self.options.excludes.unmatched(&self.exclude_seen) {
            self.report.warnings.push(format!(
                "--exclude {pattern:?} matched nothing in the snapshot"
            ));
        }
        Ok(())
    }

    pub fn into_report(self) -> RestoreReport {
        self.report
    }

    fn excluded(&mut self, path: &Path, name: &[u8]) -> bool {
        let options = self.options;
        options
            .excludes
            .matches_noting(path, name, &mut self.exclude_seen)
    }

    fn included(&mut self, path: &Path, name: &[u8]) -> bool {
        let options = self.options;
        options
            .includes
            .matches_noting(path, name, &mut self.include_seen)
    }

    fn plan_dir(
        &mut self,
        nodes: Vec<Node>,
        snap_dir: &Path,
        rel: &Path,
        dir: &DirState,
        included: bool,
    ) -> Result<()> {
        let mut names: HashSet<Vec<u8>> = HashSet::new();
        for node in nodes {
            if unsafe_name(&node.name) {
                self.report.warnings.push(format!(
                    "{}: skipped an entry with an unsafe name",
                    snap_dir.display()
                ));
                continue;
            }
            let snap_path = snap_dir.join(node.name_os());
            // What is excluded is neither restored nor deleted; the names
            // are only needed to know what to delete.
            if self.options.delete {
                names.insert(node.name.clone());
            }
            if self.excluded(&snap_path, &node.name) {
                continue;
            }
            let inc = included || self.included(&snap_path, &node.name);
            let place = Place {
                dir: rel.to_path_buf(),
                name: node.name_os().to_os_string(),
            };
            match node.kind {
                NodeKind::Dir => {
                    let children = match node.subtree.map(|id| self.repo.load_tree(&id)) {
                        Some(Ok(tree)) => tree.nodes,
                        Some(Err(e)) => {
                            self.report.damaged.push(format!(
                                "{}/: folder listing unreadable: {e}",
                                place.show(self.root)
                            ));
                            Vec::new()
                        }
                        None => Vec::new(),
                    };
                    if !inc && !self.selects_any(&children, &snap_path) {
                        continue;
                    }
                    let state = self.enter_dir(dir, &place)?;
                    let child_rel = rel.join(&place.name);
                    self.plan_dir(children, &snap_path, &child_rel, &state, inc)?;
                    if !matches!(state, DirState::Blocked) {
                        self.dirs.push((child_rel, node));
                        self.report.dirs += 1;
                    }
                }
                _ if !inc => {}
                NodeKind::File => self.plan_file(dir, place, node)?,
                _ => self.plan_other(dir, place, node)?,
            }
        }
        if self.options.delete && included {
            if let DirState::Open(fd) = dir {
                self.delete_extra(fd.as_fd(), rel, snap_dir, &names)?;
            }
        }
        Ok(())
    }

    /// Whether anything below (`nodes` at `snap_dir`) is selected by the
    /// include patterns, so that their folder must be made.
    fn selects_any(&mut self, nodes: &[Node], snap_dir: &Path) -> bool {
        let mut any = false;
        for node in nodes {
            if unsafe_name(&node.name) {
                continue;
            }
            let path = snap_dir.join(node.name_os());
            if self.options.excludes.matches(&path, &node.name) {
                continue;
            }
            if self.included(&path, &node.name) {
                any = true;
                continue;
            }
            if let Some(Ok(tree)) = node.subtree.map(|id| self.repo.load_tree(&id)) {
                any |= self.selects_any(&tree.nodes, &path);
            }
        }
        any
    }

    /// Opens, makes or refuses the folder at `place`.
    fn enter_dir(&mut self, parent: &DirState, place: &Place) -> Result<DirState> {
        let fd = match parent {
            DirState::Blocked => return Ok(DirState::Blocked),
            DirState::New => {
                self.act("create", place, 0);
                return Ok(DirState::New);
            }
            DirState::Open(fd) => fd.as_fd(),
        };
        let existing = target::existing(fd, &place.name).map_err(|e| self.io(place, e))?;
        match existing {
            Existing::Dir => {}
            Existing::Absent => {
                if self.options.dry_run {
                    self.act("create", place, 0);
                    return Ok(DirState::New);
                }
                target::make_dir(fd, &place.name).map_err(|e| self.io(place, e))?;
                self.report.created += 1;
            }
            other if self.options.overwrite == Overwrite::Never => {
                self.report.conflicts.push(format!(
                    "{}: {} is where the snapshot has a folder; left alone (--overwrite never)",
                    place.show(self.root),
                    kind_name(other)
                ));
                return Ok(DirState::Blocked);
            }
            _ => {
                if self.options.dry_run {
                    self.act("replace", place, 0);
                    return Ok(DirState::New);
                }
                // Never entered: a symlink here is removed, not followed.
                target::remove(fd, &place.name, false).map_err(|e| self.io(place, e))?;
                target::make_dir(fd, &place.name).map_err(|e| self.io(place, e))?;
                self.report.replaced += 1;
            }
        }
        let opened = target::open_dir(fd, &place.name).map_err(|e| self.io(place, e))?;
        Ok(DirState::Open(opened))
    }

    /// Makes room at `place` for an entry that is not a folder, where a
    /// folder is: an empty one goes, one with content only with `delete`.
    fn clear_folder(&mut self, fd: BorrowedFd<'_>, place: &Place) -> Result<Option<String>> {
        let entries = target::open_dir(fd, &place.name)
            .and_then(|d| target::list(d.as_fd()))
            .map_err(|e| self.io(place, e))?;
        if !entries.is_empty() && !self.options.delete {
            return Ok(Some(format!(
                "{}: a folder with content is where the snapshot has no folder; left alone (--delete replaces it)",
                place.show(self.root)
            )));
        }
        if !self.options.dry_run {
            target::remove_tree(fd, &place.name).map_err(|e| self.io(place, e))?;
        }
        Ok(None)
    }

    fn decide_file(
        &mut self,
        fd: BorrowedFd<'_>,
        place: &Place,
        node: &Node,
    ) -> Result<FileDecision> {
        let existing = target::existing(fd, &place.name).map_err(|e| self.io(place, e))?;
        let policy = self.options.overwrite;
        Ok(match existing {
            Existing::Absent => FileDecision::Write { replacing: false },
            _ if policy == Overwrite::Never => FileDecision::Keep,
            Existing::File { size, mtime } => match policy {
                Overwrite::Always => FileDecision::Write { replacing: true },
                Overwrite::IfNewer => {
                    if (node.mtime.secs, i64::from(node.mtime.nanos)) > mtime {
                        FileDecision::Write { replacing: true }
                    } else {
                        FileDecision::Keep
                    }
                }
                Overwrite::IfChanged | Overwrite::Never => {
                    let same = size == node.size
                        && content_matches(self.repo, fd, &place.name, node).unwrap_or(false);
                    if same {
                        FileDecision::Unchanged
                    } else {
                        FileDecision::Write { replacing: true }
                    }
                }
            },
            Existing::Dir => match self.clear_folder(fd, place)? {
                Some(conflict) => FileDecision::Conflict(conflict),
                None => FileDecision::Write { replacing: true },
            },
            Existing::Symlink | Existing::Special => FileDecision::Write { replacing: true },
        })
    }

    fn plan_file(&mut self, dir: &DirState, place: Place, node: Node) -> Result<()> {
        self.report.files += 1;
        if node.links > 1 {
            let key = (node.device, node.inode);
            if let Some(first) = self.first_link.get(&key) {
                self.hard_links.push((first.clone(), place));
                return Ok(());
            }
            self.first_link.insert(key, place.clone());
        }
        let fd = match dir {
            DirState::Blocked => return Ok(()),
            DirState::New => {
                self.act("create", &place, node.size);
                return Ok(());
            }
            DirState::Open(fd) => fd.as_fd(),
        };
        let replacing = match self.decide_file(fd, &place, &node)? {
            FileDecision::Write { replacing } => replacing,
            FileDecision::Unchanged => {
                self.report.files_unchanged += 1;
                self.files.push(PlannedFile {
                    place,
                    node,
                    writing: false,
                });
                return Ok(());
            }
            FileDecision::Keep => {
                self.report.files_kept += 1;
                return Ok(());
            }
            FileDecision::Conflict(message) => {
                self.report.conflicts.push(message);
                return Ok(());
            }
        };
        if self.options.dry_run {
            let action = if replacing { "replace" } else { "create" };
            self.act(action, &place, node.size);
            return Ok(());
        }
        if replacing {
            self.report.replaced += 1;
        } else {
            self.report.created += 1;
        }
        let temp = target::temp_name(&place.name);
        let file = target::create_file(fd, &temp).map_err(|e| self.io(&place, e))?;
        file.set_len(node.size).map_err(|e| self.io(&place, e))?;
        let number = self.files.len() as u32;
        let mut offset = 0u64;
        let index = self.repo.index();
        for id in &node.content {
            match index.get(id) {
                Some(location) => {
                    self.uses.entry(*id).or_default().push(BlobUse {
                        file: number,
                        offset,
                    });
                    offset += u64::from(location.raw_length);
                }
                None => {
                    self.damaged
                        .entry(number)
                        .or_insert_with(|| format!("blob {} is not in the index", id.short()));
                }
            }
        }
        drop(index);
        self.files.push(PlannedFile {
            place,
            node,
            writing: true,
        });
        Ok(())
    }

    /// Symlinks, fifos, sockets and devices.
    fn plan_other(&mut self, dir: &DirState, place: Place, node: Node) -> Result<()> {
        self.report.others += 1;
        let fd = match dir {
            DirState::Blocked => return Ok(()),
            DirState::New => {
                self.act("create", &place, 0);
                return Ok(());
            }
            DirState::Open(fd) => fd.as_fd(),
        };
        let existing = target::existing(fd, &place.name).map_err(|e| self.io(&place, e))?;
        let same_link = existing == Existing::Symlink
            && node.kind == NodeKind::Symlink
            && nix::fcntl::readlinkat(fd, place.name.as_os_str())
                .is_ok_and(|to| to.as_bytes() == node.link_target.as_slice());
        let name = match existing {
            Existing::Absent => {
                if self.options.dry_run {
                    self.act("create", &place, 0);
                    return Ok(());
                }
                self.report.created += 1;
                place.name.clone()
            }
            _ if self.options.overwrite == Overwrite::Never => return Ok(()),
            _ if same_link && self.options.overwrite != Overwrite::Always => {
                self.others.push((place, node));
                return Ok(());
            }
            Existing::Dir => {
                if let Some(conflict) = self.clear_folder(fd, &place)? {
                    self.report.conflicts.push(conflict);
                    return Ok(());
                }
                if self.options.dry_run {
                    self.act("replace", &place, 0);
                    return Ok(());
                }
                self.report.replaced += 1;
                place.name.clone()
            }
            _ => {
                if self.options.dry_run {
                    self.act("replace", &place, 0);
                    return Ok(());
                }
                self.report.replaced += 1;
                // Made beside it, then renamed over it in one step.
                target::temp_name(&place.name)
            }
        };
        let _ = target::remove(fd, &target::temp_name(&place.name), false);
        let made = match node.kind {
            NodeKind::Symlink => target::symlink(fd, &name, OsStr::from_bytes(&node.link_target)),
            kind => {
                let flag = match kind {
                    NodeKind::Fifo => SFlag::S_IFIFO,
                    NodeKind::CharDevice => SFlag::S_IFCHR,
                    NodeKind::BlockDevice => SFlag::S_IFBLK,
                    _ => SFlag::S_IFSOCK,
                };
                target::make_node(fd, &name, flag, node.rdev)
            }
        };
        match made {
            // Devices need privileges; that is a warning, not a failure.
            Err(e) => self
                .report
                .warnings
                .push(format!("{}: {e}", place.show(self.root))),
            Ok(()) => {
                if name != place.name {
                    target::rename(fd, &name, &place.name).map_err(|e| self.io(&place, e))?;
                }
                self.others.push((place, node));
            }
        }
        Ok(())
    }

    /// With `delete`: removes what folder `rel` holds that the snapshot's
    /// folder (whose entries are `names`) does not.
    fn delete_extra(
        &mut self,
        fd: BorrowedFd<'_>,
        rel: &Path,
        snap_dir: &Path,
        names: &HashSet<Vec<u8>>,
    ) -> Result<()> {
        let entries = target::list(fd).map_err(|e| Error::io(self.root.join(rel), e))?;
        for (name, kind) in entries {
            let bytes = name.as_bytes();
            let ours = bytes.starts_with(b".") && bytes.ends_with(b".mapache-restore");
            if ours || names.contains(bytes) {
                continue;
            }
            if self.options.excludes.matches(&snap_dir.join(&name), bytes) {
                continue;
            }
            let place = Place {
                dir: rel.to_path_buf(),
                name,
            };
            if self.options.dry_run {
                let size = match kind {
                    Existing::File { size, .. } => size,
                    _ => 0,
                };
                self.act("delete", &place, size);
                continue;
            }
            let removed = if kind == Existing::Dir {
                target::remove_tree(fd, &place.name)
            } else {
                target::remove(fd, &place.name, false)
            };
            removed.map_err(|e| self.io(&place, e))?;
            self.report.deleted += 1;
        }
        Ok(())
    }
}

/// Whether the file `name` in `dir` holds exactly the content of `node`.
pub(super) fn content_matches(
    repo: &IndexedRepository,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    node: &Node,
) -> std::io::Result<bool> {
    let mut file = target::open_for_reading(dir, name)?;
    if file.metadata()?.len() != node.size {
        return Ok(false);
    }
    let mut buf = Vec::new();
    for id in &node.content {
        let Some(location) = repo.index().get(id) else {
            return Ok(false);
        };
        buf.resize(location.raw_length as usize, 0);
        file.read_exact(&mut buf)?;
        if repo.keys().hasher.hash(&buf) != id.0 {
            return Ok(false);
        }
    }
    Ok(true)
}
