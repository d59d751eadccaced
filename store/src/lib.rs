//! mapache-store: the repository layer of mapache.
//!
//! An encrypted, content-addressed, de-duplicating object store: backends,
//! keys and encryption, the chunker, packs, the index, trees and snapshots,
//! locks, and the operations built on them (snapshot, restore).
//! It knows nothing of terminals or command lines.

// Operations, each with its own options and report types.
pub mod archiver;
pub mod clean;
pub mod diff;
pub mod rebuild_index;
pub mod repair;
pub mod restorer;
pub mod retention;
pub mod verify;
// Where files live, and the data model they hold.
pub mod backend;
pub mod snapshot;
pub mod tree;
// Primitives, public for the benches and for tools that read the format.
pub mod crypto;

mod blob;
mod buffer_pool;
mod chunker;
mod config;
mod error;
mod host;
mod id;
mod index;
mod keys;
mod lock;
mod metadata;
mod pack;
mod patterns;
mod repo_file;
mod repository;
mod saver;
mod size;
mod skipped;
mod staging_record;

pub use blob::{BlobDecoder, BlobType};
pub use chunker::{Chunker, ChunkerParams};
pub use config::Config;
pub use error::{Error, Result};
pub use host::{hostname, now, username};
pub use id::{BlobId, Id, PackId, SnapshotId};
pub use index::{BlobLocation, Index, IndexFile, IndexedPack};
pub use keys::{key_file_json, key_file_params, KdfParams, KeyInfo};
pub use lock::{release_all_held, LockGuard, LockInfo};
pub use metadata::{node_from_metadata, OwnerNames};
pub use pack::{decode_footer, ranged_reads, PackedBlob};
pub use patterns::Patterns;
pub use repo_file::RepoFile;
pub use repository::{Forgotten, IndexFiles, IndexedRepository, Repository};
pub use saver::{BlobSaver, SaverStats, StreamError};
pub use size::parse_size;
pub use skipped::{is_damage, SkipLog, Skipped};
pub use staging_record::StagingRecord;
