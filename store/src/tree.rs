//! Trees: one directory's entries, stored as a tree blob.
//!
//! Encoding: `version (1) || postcard(Tree)`; field order and enum ordinals
//! are part of the format (docs/format.md).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::BlobId;

const TREE_VERSION: u8 = 1;

/// A point in time as signed seconds and nanoseconds since the Unix epoch;
/// times before 1970 have negative seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp {
    /// Whole seconds (may be negative).
    pub secs: i64,
    /// Nanoseconds, 0..1e9.
    pub nanos: u32,
}

/// The type of a filesystem entry. Ordinals are part of the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A Unix socket.
    Socket,
}

/// One entry of a directory with all its metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The name as raw bytes (names need not be UTF-8).
    pub name: Vec<u8>,
    /// File, directory, ...
    pub kind: NodeKind,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Owner name, if it resolved when the node was recorded.
    pub user: String,
    /// Group name, if it resolved.
    pub group: String,
    /// Size in bytes (files), or 0.
    pub size: u64,
    /// Modification time.
    pub mtime: Timestamp,
    /// Status change time.
    pub ctime: Timestamp,
    /// Access time.
    pub atime: Timestamp,
    /// Inode number on the source filesystem.
    pub inode: u64,
    /// Device of the source filesystem.
    pub device: u64,
    /// Hard link count.
    pub links: u64,
    /// Device number, for device nodes.
    pub rdev: u64,
    /// Extended attributes, name → value, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Target of a symbolic link.
    pub link_target: Vec<u8>,
    /// Content blobs of a file, in order.
    pub content: Vec<BlobId>,
    /// Tree blob of a directory.
    pub subtree: Option<BlobId>,
}

impl Node {
    /// An empty node of `kind` named `name`, all metadata zero.
    pub fn new(name: &[u8], kind: NodeKind) -> Node {
        Node {
            name: name.to_vec(),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            size: 0,
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            atime: Timestamp::default(),
            inode: 0,
            device: 0,
            links: 0,
            rdev: 0,
            xattrs: Vec::new(),
            link_target: Vec::new(),
            content: Vec::new(),
            subtree: None,
        }
    }

    /// The name as an `OsStr`.
    pub fn name_os(&self) -> &OsStr {
        OsStr::from_bytes(&self.name)
    }

    /// The name for display (non-UTF-8 bytes replaced).
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// The entries of one directory, sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Entries in byte order of their names.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Encodes to a tree blob's plaintext.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![TREE_VERSION];
        postcard::to_io(self, &mut out).expect("writing to a vector cannot fail");
        out
    }

    /// Decodes a tree blob's plaintext.
    pub fn decode(id: &BlobId, data: &[u8]) -> Result<Tree> {
        match data.split_first() {
            Some((&TREE_VERSION, body)) => {
                postcard::from_bytes(body).map_err(|e| Error::format(format!("tree {id}"), e))
            }
            Some((version, _)) => Err(Error::format(
                format!("tree {id}"),
                format!("unknown version {version}"),
            )),
            None => Err(Error::format(format!("tree {id}"), "empty")),
        }
    }

    /// The node named `name`, by binary search.
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }

    /// Sorts nodes by name; call before encoding a tree built by hand.
    pub fn sort(&mut self) {
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;

    #[test]
    fn round_trip_with_odd_values() {
        let mut file = Node::new(b"caf\xe9 \xff.bin", NodeKind::File);
        file.mtime = Timestamp {
            secs: -86_400 * 365,
            nanos: 123_456_789,
        };
        file.size = u64::MAX;
        file.content = vec![BlobId(Id([7; 32]))];
        file.xattrs = vec![(b"user.k".to_vec(), vec![0, 1, 2])];
        let mut dir = Node::new(b"d", NodeKind::Dir);
        dir.subtree = Some(BlobId(Id([8; 32])));
        let mut tree = Tree {
            nodes: vec![file, dir],
        };
        tree.sort();
        let bytes = tree.encode();
        let decoded = Tree::decode(&BlobId::default(), &bytes).unwrap();
        assert_eq!(decoded, tree);
        assert!(decoded.find(b"d").is_some());
        assert!(decoded.find(b"e").is_none());
        assert!(Tree::decode(&BlobId::default(), &[2, 0]).is_err());
    }
}
