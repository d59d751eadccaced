//! Changes to the names of the staging tree, told to whoever watches them
//! (the mount's inode table), whoever made them: the mount itself, or a
//! `stage` command the mount runs for another process.

use super::Entry;

/// A change to the names of the staging tree, after it was made.
pub enum TreeChange {
    /// What `name` in `folder` leads to changed: it was made, removed,
    /// replaced, or an entry moved there or away.
    Name {
        /// The folder.
        folder: Entry,
        /// The name.
        name: Vec<u8>,
    },
    /// `entry` lost a name (it, or a folder holding it, was removed, or a
    /// rename replaced it). It may keep others (hard links), or have none
    /// left while open files still reach it.
    LostName(Entry),
    /// Every change was dropped and the tree is the base again; these were
    /// the names in its root.
    Reset {
        /// The root's names before.
        names: Vec<Vec<u8>>,
    },
}

/// Told each [`TreeChange`], while the staging area's lock is held: it
/// must not call into the staging area.
pub type Watcher = Box<dyn Fn(&TreeChange) + Send + Sync>;
