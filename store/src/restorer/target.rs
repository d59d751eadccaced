//! The restore target, reached only through open folders.
//!
//! Every entry is created, replaced, changed or removed relative to an
//! already opened parent folder, by its single name, never following a
//! symlink (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`); folders are opened with
//! `O_DIRECTORY | O_NOFOLLOW`, and a path below the target is resolved with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (component by component
//! with `O_NOFOLLOW` where the kernel lacks it). Whatever the snapshot or
//! the target hold, nothing outside the target is created, changed or
//! chmodded: a symlink in the target where the snapshot has a folder is a
//! conflict or is replaced, never entered.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

/// What sits at a name in the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Existing {
    /// Nothing.
    Absent,
    /// A regular file.
    File { size: u64, mtime: (i64, i64) },
    /// A folder.
    Dir,
    /// A symlink.
    Symlink,
    /// A fifo, socket or device.
    Special,
}

impl Existing {
    fn of(stat: &FileStat) -> Existing {
        match SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFREG => Existing::File {
                size: stat.st_size as u64,
                mtime: (stat.st_mtime, stat.st_mtime_nsec),
            },
            SFlag::S_IFDIR => Existing::Dir,
            SFlag::S_IFLNK => Existing::Symlink,
            _ => Existing::Special,
        }
    }
}

fn io_err(e: Errno) -> io::Error {
    io::Error::from(e)
}

/// Opens folder `name` in `parent` without following a symlink.
pub(crate) fn open_dir(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    nix::fcntl::openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err)
}

/// Opens the target folder itself (creating it and its parents if missing).
/// Above the target, paths are the user's: they may go through symlinks.
pub(crate) fn open_root(path: &Path) -> io::Result<OwnedFd> {
    std::fs::create_dir_all(path)?;
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err)
}

/// Opens the folder `rel` below `root` (`""` is the root itself), never
/// following a symlink and never leaving the root.
pub(crate) fn open_beneath(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    if rel.as_os_str().is_empty() {
        return root.try_clone_to_owned();
    }
    let how = nix::fcntl::OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(
            nix::fcntl::ResolveFlag::RESOLVE_BENEATH
                | nix::fcntl::ResolveFlag::RESOLVE_NO_SYMLINKS
                | nix::fcntl::ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    match nix::fcntl::openat2(root, rel, how) {
        Err(Errno::ENOSYS) => {}
        other => return other.map_err(io_err),
    }
    // Kernels before 5.6: one component at a time.
    let mut dir = root.try_clone_to_owned()?;
    for part in rel.components() {
        match part {
            Component::Normal(name) => dir = open_dir(dir.as_fd(), name)?,
            _ => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
        }
    }
    Ok(dir)
}

/// What is at `name` in `parent`, without following a symlink.
pub(crate) fn existing(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<Existing> {
    match nix::sys::stat::fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Existing::of(&stat)),
        Err(Errno::ENOENT) => Ok(Existing::Absent),
        Err(e) => Err(io_err(e)),
    }
}

/// Makes folder `name` in `parent` (private until its metadata is set).
pub(crate) fn make_dir(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    nix::sys::stat::mkdirat(parent, name, Mode::from_bits_truncate(0o700)).map_err(io_err)
}

/// Creates (or empties) file `name` in `parent` for writing, refusing to
/// write through a symlink.
pub(crate) fn create_file(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    let fd = nix::fcntl::openat(
        parent,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(io_err)?;
    Ok(File::from(fd))
}

/// Opens file `name` in `parent` for writing (no symlink, no creation).
pub(crate) fn open_for_writing(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    let fd = nix::fcntl::openat(
        parent,
        name,
        OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err)?;
    Ok(File::from(fd))
}

/// Opens file `name` in `parent` for reading (no symlink).
pub(crate) fn open_for_reading(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    let fd = nix::fcntl::openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .map_err(io_err)?;
    Ok(File::from(fd))
}

/// Removes the non-folder entry `name`, or the empty folder `name`.
pub(crate) fn remove(parent: BorrowedFd<'_>, name: &OsStr, is_dir: bool) -> io::Result<()> {
    let flag = if is_dir {
        nix::unistd::UnlinkatFlags::RemoveDir
    } else {
        nix::unistd::UnlinkatFlags::NoRemoveDir
    };
    nix::unistd::unlinkat(parent, name, flag).map_err(io_err)
}

/// Removes folder `name` of `parent` and everything in it, entering
/// folders only through `O_NOFOLLOW` opens.
pub(crate) fn remove_tree(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let dir = open_dir(parent, name)?;
    for (child, kind) in list(dir.as_fd())? {
        if kind == Existing::Dir {
            remove_tree(dir.as_fd(), &child)?;
        } else {
            remove(dir.as_fd(), &child, false)?;
        }
    }
    remove(parent, name, true)
}

/// The entries of folder `dir` (without `.` and `..`), with their kinds.
pub(crate) fn list(dir: BorrowedFd<'_>) -> io::Result<Vec<(OsString, Existing)>> {
    let mut handle = nix::dir::Dir::from_fd(dir.try_clone_to_owned()?).map_err(io_err)?;
    let mut out = Vec::new();
    for entry in handle.iter() {
        let entry = entry.map_err(io_err)?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let kind = existing(dir, name)?;
        out.push((name.to_os_string(), kind));
    }
    Ok(out)
}

/// Renames `from` to `to` inside folder `dir`, replacing what `to` was
/// (unless that is a non-empty folder).
pub(crate) fn rename(dir: BorrowedFd<'_>, from: &OsStr, to: &OsStr) -> io::Result<()> {
    nix::fcntl::renameat(dir, from, dir, to).map_err(io_err)
}

/// Makes `name` in `link_dir` another name of `target` in `target_dir`.
pub(crate) fn hard_link(
    target_dir: BorrowedFd<'_>,
    target: &OsStr,
    link_dir: BorrowedFd<'_>,
    name: &OsStr,
) -> io::Result<()> {
    nix::unistd::linkat(target_dir, target, link_dir, name, AtFlags::empty()).map_err(io_err)
}

/// Makes the symlink `name` in `parent` pointing at `to`.
pub(crate) fn symlink(parent: BorrowedFd<'_>, name: &OsStr, to: &OsStr) -> io::Result<()> {
    nix::unistd::symlinkat(to, parent, name).map_err(io_err)
}

/// Makes a fifo, socket or device node `name` in `parent`.
pub(crate) fn make_node(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    kind: SFlag,
    rdev: u64,
) -> io::Result<()> {
    nix::sys::stat::mknodat(parent, name, kind, Mode::from_bits_truncate(0o600), rdev)
        .map_err(io_err)
}

/// The name a file is written under before it is complete: in its own
/// folder (so that the rename is atomic), hidden, and derived from its
/// name, so that a rerun after a crash reuses it instead of littering.
pub(crate) fn temp_name(name: &OsStr) -> OsString {
    const SUFFIX: &str = ".mapache-restore";
    if 1 + name.len() + SUFFIX.len() <= 255 {
        let mut temp = OsString::from(".");
        temp.push(name);
        temp.push(SUFFIX);
        temp
    } else {
        let hash = blake3::hash(name.as_bytes()).to_hex();
        OsString::from(format!(".{}{SUFFIX}", &hash[..32]))
    }
}

/// The path of `name` in `dir` under /proc, for the calls that have no
/// `at` form (xattrs of symlinks and special files): the folder part is
/// the open folder itself, so nothing in it is followed but the last name,
/// which the `l` calls do not follow.
pub(crate) fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
}
