//! Repository files that are sealed whole: the config, snapshots, index
//! files, locks, forgotten marks and staging records. One trait says how each encodes and
//! which kind it is, so that sealing and opening are typed: a snapshot can
//! never be stored as, or read from, an index file, and the seal binds the
//! kind and the name (the AAD) the same way for all. Snapshots and index
//! files are named by the keyed hash of their plaintext
//! (`Repository::save`); the config, locks and marks have fixed or random
//! names. Key files are not sealed whole (their KDF settings must be
//! readable first) and have their own module.

use crate::backend::FileKind;
use crate::config::{Config, FORMAT_VERSION};
use crate::crypto::{Cipher, ObjectKind};
use crate::error::{Error, Result};
use crate::id::{Id, SnapshotId};
use crate::index::IndexFile;
use crate::lock::LockInfo;
use crate::repository::Forgotten;
use crate::snapshot::Snapshot;
use crate::staging_record::StagingRecord;

/// A file kind sealed whole.
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

impl RepoFile for Config {
    const KIND: FileKind = FileKind::Config;

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serializable")
    }

    fn decode(_: &Id, plaintext: &[u8]) -> Result<Self> {
        let config: Config =
            serde_json::from_slice(plaintext).map_err(|e| Error::format("config", e))?;
        if config.version != FORMAT_VERSION {
            return Err(Error::format(
                "config",
                format!(
                    "repository format {} is not supported by this build (it knows {FORMAT_VERSION})",
                    config.version
                ),
            ));
        }
        config
            .chunker
            .validate()
            .map_err(|e| Error::format("config", e))?;
        Ok(config)
    }
}

impl RepoFile for LockInfo {
    const KIND: FileKind = FileKind::Lock;

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serializable")
    }

    fn decode(id: &Id, plaintext: &[u8]) -> Result<Self> {
        let lock: LockInfo = serde_json::from_slice(plaintext)
            .map_err(|e| Error::format(format!("lock {id}"), e))?;
        known_version(lock.version, &format!("lock {id}"))?;
        Ok(lock)
    }
}

impl RepoFile for Forgotten {
    const KIND: FileKind = FileKind::Forgotten;

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serializable")
    }

    fn decode(id: &Id, plaintext: &[u8]) -> Result<Self> {
        let what = format!("forgotten mark {id}");
        let mark: Forgotten =
            serde_json::from_slice(plaintext).map_err(|e| Error::format(&what, e))?;
        known_version(mark.version, &what)?;
        Ok(mark)
    }
}

impl RepoFile for StagingRecord {
    const KIND: FileKind = FileKind::Staging;

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serializable")
    }

    fn decode(id: &Id, plaintext: &[u8]) -> Result<Self> {
        let what = format!("staging record {id}");
        let record: StagingRecord =
            serde_json::from_slice(plaintext).map_err(|e| Error::format(&what, e))?;
        known_version(record.version, &what)?;
        Ok(record)
    }
}

/// The version of records that were written before they had one.
pub(crate) fn first_version() -> u32 {
    1
}

/// Refuses a record version this build does not know (it knows 1).
fn known_version(version: u32, what: &str) -> Result<()> {
    if version == 1 {
        return Ok(());
    }
    Err(Error::format(
        what,
        format!("record version {version} is not known to this build (it knows 1)"),
    ))
}

fn object_kind(kind: FileKind) -> ObjectKind {
    match kind {
        FileKind::Config => ObjectKind::Config,
        FileKind::Snapshot => ObjectKind::Snapshot,
        FileKind::Index => ObjectKind::Index,
        FileKind::Lock => ObjectKind::Lock,
        FileKind::Forgotten => ObjectKind::Forgotten,
        FileKind::Staging => ObjectKind::StagingRecord,
        FileKind::Key | FileKind::Pack => unreachable!("{kind} files are not sealed whole"),
    }
}

/// The stored bytes of `file` named `id`.
pub(crate) fn seal<F: RepoFile>(cipher: &Cipher, id: &Id, file: &F) -> Vec<u8> {
    seal_encoded::<F>(cipher, id, &file.encode())
}

/// The stored bytes of an `F` named `id` whose encoding is `plaintext`.
pub(crate) fn seal_encoded<F: RepoFile>(cipher: &Cipher, id: &Id, plaintext: &[u8]) -> Vec<u8> {
    cipher.encrypt(object_kind(F::KIND), id, plaintext)
}

/// Opens and decodes the stored bytes of the `F` named `id`.
pub(crate) fn open<F: RepoFile>(cipher: &Cipher, id: &Id, sealed: &[u8]) -> Result<F> {
    let plaintext =
        cipher
            .decrypt(object_kind(F::KIND), id, sealed)
            .map_err(|_| match F::KIND {
                // The config's name is fixed: its all-zero id says nothing.
                FileKind::Config => Error::integrity(F::KIND, "file", "failed authentication"),
                _ => Error::integrity(F::KIND, id, "failed authentication"),
            })?;
    F::decode(id, &plaintext)
}
