//! Turning filesystem metadata into tree nodes.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use parking_lot::Mutex;

use crate::tree::{Node, NodeKind, Timestamp};

/// Resolves uids and gids to names, remembering the answers: a lookup
/// reads /etc/passwd each time.
#[derive(Default)]
pub struct OwnerNames {
    users: Mutex<HashMap<u32, String>>,
    groups: Mutex<HashMap<u32, String>>,
}

impl OwnerNames {
    /// The name of user `uid`, or empty if it has none.
    pub fn user(&self, uid: u32) -> String {
        self.users
            .lock()
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_default()
            })
            .clone()
    }

    /// The name of group `gid`, or empty if it has none.
    pub fn group(&self, gid: u32) -> String {
        self.groups
            .lock()
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(gid.into())
                    .ok()
                    .flatten()
                    .map(|g| g.name)
                    .unwrap_or_default()
            })
            .clone()
    }
}

fn kind_of(meta: &Metadata) -> NodeKind {
    let t = meta.file_type();
    if t.is_dir() {
        NodeKind::Dir
    } else if t.is_symlink() {
        NodeKind::Symlink
    } else if t.is_fifo() {
        NodeKind::Fifo
    } else if t.is_char_device() {
        NodeKind::CharDevice
    } else if t.is_block_device() {
        NodeKind::BlockDevice
    } else if t.is_socket() {
        NodeKind::Socket
    } else {
        NodeKind::File
    }
}

/// Builds the node for `path`, whose `lstat` result is `meta`. Reads the
/// symlink target and the extended attributes; a failure to read xattrs
/// (unsupported filesystem) is not an error, they are just absent.
pub fn node_from_metadata(
    path: &Path,
    name: &[u8],
    meta: &Metadata,
    owners: &OwnerNames,
) -> std::io::Result<Node> {
    let kind = kind_of(meta);
    let mut node = Node::new(name, kind);
    node.mode = meta.mode() & 0o7777;
    node.uid = meta.uid();
    node.gid = meta.gid();
    node.user = owners.user(node.uid);
    node.group = owners.group(node.gid);
    node.size = if kind == NodeKind::File {
        meta.size()
    } else {
        0
    };
    node.mtime = Timestamp {
        secs: meta.mtime(),
        nanos: meta.mtime_nsec() as u32,
    };
    node.ctime = Timestamp {
        secs: meta.ctime(),
        nanos: meta.ctime_nsec() as u32,
    };
    node.atime = Timestamp {
        secs: meta.atime(),
        nanos: meta.atime_nsec() as u32,
    };
    node.inode = meta.ino();
    node.device = meta.dev();
    node.links = meta.nlink();
    node.rdev = meta.rdev();
    if kind == NodeKind::Symlink {
        node.link_target = std::fs::read_link(path)?.as_os_str().as_bytes().to_vec();
    }
    if let Ok(names) = xattr::list(path) {
        for attr in names {
            if let Ok(Some(value)) = xattr::get(path, &attr) {
                node.xattrs.push((attr.as_bytes().to_vec(), value));
            }
        }
        node.xattrs.sort();
    }
    Ok(node)
}
