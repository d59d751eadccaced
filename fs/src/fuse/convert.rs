//! Attributes, times and errors between the namespace's types and fuser's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo, Request, TimeOrNow};
use mapache_store::tree::{Node, NodeKind, Timestamp};

use crate::error::FsError;
use crate::namespace::Attr;
use crate::staging::Meta;

pub(super) fn to_system_time(t: Timestamp) -> SystemTime {
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::new(t.secs as u64, t.nanos)
    } else {
        // -1.5 s is secs = -2, nanos = 0.5e9.
        UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs())
            + Duration::from_nanos(t.nanos as u64)
    }
}

/// A time the kernel sent. fuser 0.18 turns a pre-1970 kernel time
/// (secs < 0, nsec) into `UNIX_EPOCH - (|secs| + nsec)` instead of
/// `UNIX_EPOCH - |secs| + nsec`; this reads its result back accordingly.
pub(super) fn from_kernel_time(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp {
            secs: d.as_secs() as i64,
            nanos: d.subsec_nanos(),
        },
        Err(before) => Timestamp {
            secs: -(before.duration().as_secs() as i64),
            nanos: before.duration().subsec_nanos(),
        },
    }
}

pub(super) fn time_or_now(t: TimeOrNow) -> Timestamp {
    match t {
        TimeOrNow::SpecificTime(t) => from_kernel_time(t),
        TimeOrNow::Now => mapache_store::now(),
    }
}

pub(super) fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
        NodeKind::Socket => FileType::Socket,
    }
}

pub(super) fn file_attr(attr: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: to_system_time(attr.atime),
        mtime: to_system_time(attr.mtime),
        ctime: to_system_time(attr.ctime),
        crtime: to_system_time(attr.mtime),
        kind: file_type(attr.kind),
        perm: attr.perm,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: attr.rdev as u32,
        blksize: 128 * 1024,
        flags: 0,
    }
}

pub(super) fn errno(error: &FsError) -> Errno {
    Errno::from_i32(error.errno())
}

/// Metadata for an entry a request creates: its owner is the caller, its
/// mode the one asked for (the umask is applied later, unless the folder
/// has a default ACL: see `acl::inherit`).
pub(super) fn meta_for(req: &Request, mode: u32) -> Meta {
    let now = mapache_store::now();
    Meta {
        mode: mode & 0o7777,
        uid: req.uid(),
        gid: req.gid(),
        atime: now,
        mtime: now,
    }
}

/// A symlink, fifo, device or socket node a request creates.
pub(super) fn special_node(name: &[u8], kind: NodeKind, meta: &Meta) -> Node {
    let mut node = Node::new(name, kind);
    crate::staging::apply_meta(&mut node, meta);
    node.links = 1;
    node
}
