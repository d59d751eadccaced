//! Staging records: what an uncommitted staging area holds, made visible in
//! the repository so that `clean` on any machine keeps it.
//!
//! A staging area lives in one machine's state folder; its uploaded content
//! is referenced only by its journal there. Each area therefore writes
//! sealed records (kind `staging`, random names) naming its base snapshot,
//! that snapshot's root tree (so that forgetting the base does not orphan
//! the area) and the blobs its changes refer to. Records are written
//! before the journal refers to what they name, appended while the area
//! changes and folded into one when there are many, at a commit and at a
//! reset. They go away only by `mapache stage forget-area`.

use serde::{Deserialize, Serialize};

use crate::id::{BlobId, Id, SnapshotId};
use crate::tree::Timestamp;

/// One record of a staging area.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagingRecord {
    /// Format version of the record.
    pub version: u32,
    /// Which staging area (the same for all its records).
    pub area: Id,
    /// The machine the area lives on.
    pub host: String,
    /// Its state folder there, for people.
    pub path: String,
    /// Its base snapshot.
    pub base: Option<SnapshotId>,
    /// The base snapshot's root tree.
    pub base_tree: Option<BlobId>,
    /// Blobs the area's changes refer to (or some of them: an area's
    /// records together name all).
    pub blobs: Vec<BlobId>,
    /// When it was written.
    pub time: Timestamp,
}

impl StagingRecord {
    /// The id of the staging area in state folder `path` on `host`.
    pub fn area_id(host: &str, path: &str) -> Id {
        let mut named = Vec::with_capacity(host.len() + path.len() + 1);
        named.extend_from_slice(host.as_bytes());
        named.push(0);
        named.extend_from_slice(path.as_bytes());
        Id::hash_of(&named)
    }
}
