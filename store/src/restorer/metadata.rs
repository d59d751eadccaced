//! Owner, mode, extended attributes and times of restored entries, set
//! through open files or relative to open folders, never through a path
//! that could lead outside the target.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use nix::fcntl::AtFlags;
use nix::sys::stat::{FchmodatFlags, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::target::{self, Existing};
use crate::tree::{Node, NodeKind, Timestamp};

fn time(t: Timestamp) -> TimeSpec {
    TimeSpec::new(t.secs, i64::from(t.nanos))
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Sets the metadata of an open file or folder; the times last. What fails
/// becomes a warning naming `shown`.
pub(super) fn apply_open(file: &File, node: &Node, shown: &str, warnings: &mut Vec<String>) {
    // Owner before mode: changing the owner clears setuid and setgid.
    if is_root() {
        let (uid, gid) = (
            nix::unistd::Uid::from_raw(node.uid),
            nix::unistd::Gid::from_raw(node.gid),
        );
        if let Err(e) = nix::unistd::fchown(file.as_fd(), Some(uid), Some(gid)) {
            warnings.push(format!("{shown}: cannot set owner: {e}"));
        }
    }
    if let Err(e) = nix::sys::stat::fchmod(file.as_fd(), Mode::from_bits_truncate(node.mode)) {
        warnings.push(format!("{shown}: cannot set mode: {e}"));
    }
    for (name, value) in &node.xattrs {
        if let Err(e) = xattr::FileExt::set_xattr(file, OsStr::from_bytes(name), value) {
            warnings.push(format!(
                "{shown}: cannot set xattr {}: {e}",
                String::from_utf8_lossy(name)
            ));
        }
    }
    if let Err(e) = nix::sys::stat::futimens(file.as_fd(), &time(node.atime), &time(node.mtime)) {
        warnings.push(format!("{shown}: cannot set times: {e}"));
    }
}

/// Sets the metadata of the file `name` in `dir`.
pub(super) fn apply_file(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    node: &Node,
    shown: &str,
    warnings: &mut Vec<String>,
) {
    match target::open_for_reading(dir, name) {
        Ok(file) => apply_open(&file, node, shown, warnings),
        Err(e) => warnings.push(format!("{shown}: cannot set metadata: {e}")),
    }
}

/// Sets the metadata of the symlink or special file `name` in `dir`
/// (opening a device could have effects; a symlink cannot be opened).
pub(super) fn apply_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    node: &Node,
    shown: &str,
    warnings: &mut Vec<String>,
) {
    if is_root() {
        let (uid, gid) = (
            nix::unistd::Uid::from_raw(node.uid),
            nix::unistd::Gid::from_raw(node.gid),
        );
        if let Err(e) = nix::unistd::fchownat(
            dir,
            name,
            Some(uid),
            Some(gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            warnings.push(format!("{shown}: cannot set owner: {e}"));
        }
    }
    // Linux has no mode of its own for symlinks; chmod of anything else is
    // only done once it is known not to be a symlink (which it would follow).
    if node.kind != NodeKind::Symlink
        && matches!(target::existing(dir, name), Ok(Existing::Special))
    {
        let mode = Mode::from_bits_truncate(node.mode);
        if let Err(e) = nix::sys::stat::fchmodat(dir, name, mode, FchmodatFlags::FollowSymlink) {
            warnings.push(format!("{shown}: cannot set mode: {e}"));
        }
    }
    let path = target::proc_path(dir, name);
    for (key, value) in &node.xattrs {
        if let Err(e) = xattr::set(&path, OsStr::from_bytes(key), value) {
            warnings.push(format!(
                "{shown}: cannot set xattr {}: {e}",
                String::from_utf8_lossy(key)
            ));
        }
    }
    if let Err(e) = nix::sys::stat::utimensat(
        dir,
        name,
        &time(node.atime),
        &time(node.mtime),
        UtimensatFlags::NoFollowSymlink,
    ) {
        warnings.push(format!("{shown}: cannot set times: {e}"));
    }
}
