//! The repository config: the parameters every writer must agree on.

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::id::Id;

/// The repository format version this build writes.
pub const FORMAT_VERSION: u32 = 1;

/// Stored encrypted as JSON in the `config` file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Format version; readers refuse versions they do not know.
    pub version: u32,
    /// Random id of this repository (names its local cache and state).
    pub id: Id,
    /// Chunk size bounds.
    pub chunker: ChunkerParams,
    /// zstd level for blobs (0 disables compression).
    pub compression_level: i32,
    /// Target size of a pack file in bytes.
    pub pack_size: u32,
}

impl Config {
    /// A config for a new repository with default parameters.
    pub fn new() -> Config {
        Config {
            version: FORMAT_VERSION,
            id: Id::random(),
            chunker: ChunkerParams::default(),
            compression_level: 3,
            pack_size: 16 * 1024 * 1024,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}
