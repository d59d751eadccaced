//! mapache-store: the repository layer of mapache.
//!
//! An encrypted, content-addressed, de-duplicating object store: backends,
//! keys and encryption, the chunker, packs, the index, trees and snapshots,
//! locks, and the operations built on them (snapshot, restore).
//! It knows nothing of terminals or command lines.

pub mod archiver;
pub mod backend;
pub mod blob;
pub mod buffer_pool;
pub mod chunker;
pub mod config;
pub mod crypto;
mod error;
pub mod host;
pub mod id;
pub mod index;
pub mod keys;
pub mod lock;
pub mod metadata;
pub mod pack;
pub mod patterns;
pub mod rebuild_index;
pub mod repair;
mod repo_file;
pub mod repository;
pub mod restorer;
pub mod saver;
pub mod size;
mod skipped;
pub mod snapshot;
pub mod tree;
pub mod verify;

pub use error::{Error, Result};
pub use id::{BlobId, Id, PackId, SnapshotId};
pub use repo_file::RepoFile;
pub use repository::{IndexedRepository, Repository};
pub use skipped::{is_damage, SkipLog, Skipped};
