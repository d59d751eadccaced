//! Changes to the names of the staging tree, told to whoever watches them
//! (the mount's inode table), whoever made them: the mount itself, or a
//! `stage` command the mount runs for another process.

use super::OpenFile;

/// A change to the names of the staging tree, after it was made.
pub enum TreeChange {
    /// The entry at `path` and everything below it lost these names.
    Removed {
        /// Where the entry was.
        path: Vec<u8>,
        /// Hard-linked files and special nodes that were at or below
        /// `path` and keep a name elsewhere: (old path, a name they have).
        survivors: Vec<(Vec<u8>, Vec<u8>)>,
        /// The regular file that was at `path`, still readable and
        /// writable through open handles.
        file: Option<OpenFile>,
    },
    /// The entry at `from`, with everything below it, is now at `to`
    /// (whatever was at `to` was reported removed first).
    Moved {
        /// The old path.
        from: Vec<u8>,
        /// The new path.
        to: Vec<u8>,
    },
    /// The entries at `a` and `b` swapped places.
    Exchanged {
        /// One path.
        a: Vec<u8>,
        /// The other.
        b: Vec<u8>,
    },
    /// Every change was dropped; the tree is the base again.
    Reset,
}

/// Told each [`TreeChange`], outside the staging area's lock.
pub type Watcher = Box<dyn Fn(&TreeChange) + Send + Sync>;
