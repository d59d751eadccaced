//! mapache-fs: the repository as a filesystem.
//!
//! [`Namespace`] is the read-only view of all snapshots as plain Rust;
//! the FUSE adapter (feature `fuse`) serves it to the kernel.

pub mod acl;
mod blob_cache;
pub mod control;
mod error;
mod file_reader;
#[cfg(feature = "fuse")]
mod fuse;
mod namespace;
#[cfg(feature = "fuse")]
mod page_push;
pub mod staging;

pub use blob_cache::BlobCache;
pub use error::{FsError, FsResult};
pub use file_reader::FileContent;
#[cfg(feature = "fuse")]
pub use fuse::{mount, MountOptions, Mounted};
pub use namespace::{Attr, DirEntry, Namespace, SetAttr, Stale, StaleHook, ROOT};
