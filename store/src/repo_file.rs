//! Repository files that are sealed whole and named by the keyed hash of
//! their plaintext (snapshots and index files): one trait says how each
//! encodes, so that `Repository::save` and `Repository::load` are typed
//! and a snapshot can never be stored as, or read from, an index file.

use crate::backend::FileKind;
use crate::error::Result;
use crate::id::{Id, SnapshotId};
use crate::index::IndexFile;
use crate::snapshot::Snapshot;

/// A file kind stored sealed under the keyed hash of its plaintext.
pub trait RepoFile: Sized {
    /// Where files of this type live, and the object kind of their seal.
    const KIND: FileKind;

    /// The plaintext to seal.
    fn encode(&self) -> Vec<u8>;

    /// Decodes the plaintext of file `id`, refusing versions this build
    /// does not know.
    fn decode(id: &Id, plaintext: &[u8]) -> Result<Self>;
}

impl RepoFile for Snapshot {
    const KIND: FileKind = FileKind::Snapshot;

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serializable")
    }

    fn decode(id: &Id, plaintext: &[u8]) -> Result<Self> {
        Snapshot::decode(&SnapshotId(*id), plaintext)
    }
}

impl RepoFile for IndexFile {
    const KIND: FileKind = FileKind::Index;

    fn encode(&self) -> Vec<u8> {
        IndexFile::encode(self)
    }

    fn decode(id: &Id, plaintext: &[u8]) -> Result<Self> {
        IndexFile::decode(id, plaintext)
    }
}
