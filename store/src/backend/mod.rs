//! Storage backends: where the repository's files live.
//!
//! A backend stores opaque byte strings keyed by (kind, id). It knows nothing
//! of encryption or formats; behaviour such as caching or retries wraps the
//! trait instead of living in an implementation.

mod cache;
mod direct_io;
mod dry_run;
mod faulty;
mod local;
mod location;
mod memory;
mod s3;
mod sftp;

use std::fmt;

pub use cache::{folder_size, CacheBackend};
pub use dry_run::DryRunBackend;
pub use faulty::FaultyBackend;
pub use local::LocalBackend;
pub use location::{Location, S3Location, SftpLocation};
pub use memory::MemoryBackend;
pub use s3::S3Backend;
pub use sftp::{SftpBackend, SftpOptions, SshClient};

use crate::error::Result;
use crate::id::Id;

/// The kinds of file a repository holds. The names are used in paths and
/// messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKind {
    /// The single repository config file (id is all zeros).
    Config,
    /// Key files, each wrapping the master secret with one password.
    Key,
    /// Snapshot files.
    Snapshot,
    /// Index files.
    Index,
    /// Pack files holding blobs.
    Pack,
    /// Lock files.
    Lock,
    /// Marks of forgotten snapshots, named by the snapshot's id.
    Forgotten,
    /// Records of uncommitted staging areas.
    Staging,
}

impl FileKind {
    /// The folder (or, for the config, the file) name of this kind.
    pub fn dir_name(self) -> &'static str {
        match self {
            FileKind::Config => "config",
            FileKind::Key => "keys",
            FileKind::Snapshot => "snapshots",
            FileKind::Index => "index",
            FileKind::Pack => "packs",
            FileKind::Lock => "locks",
            FileKind::Forgotten => "forgotten",
            FileKind::Staging => "staging",
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            FileKind::Config => "config",
            FileKind::Key => "key",
            FileKind::Snapshot => "snapshot",
            FileKind::Index => "index",
            FileKind::Pack => "pack",
            FileKind::Lock => "lock",
            FileKind::Forgotten => "forgotten mark",
            FileKind::Staging => "staging record",
        };
        f.write_str(name)
    }
}

/// A stored file's id and size, as listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// The file's id.
    pub id: Id,
    /// Its size in bytes.
    pub size: u64,
}

/// A place that stores the repository's files.
///
/// Writes are atomic and durable: when `write` returns, the file is complete
/// and survives a crash; a reader never sees a partial file.
pub trait Backend: Send + Sync {
    /// A human-readable location, for messages.
    fn location(&self) -> String;

    /// Whether a repository (its config file) exists here.
    fn is_repository(&self) -> Result<bool>;

    /// Creates the layout for a new repository.
    fn create(&self) -> Result<()>;

    /// Lists every file of `kind`.
    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>>;

    /// Lists the ids of every file of `kind`, which a backend may do more
    /// cheaply than [`Backend::list`] (no sizes).
    fn list_ids(&self, kind: FileKind) -> Result<Vec<Id>> {
        Ok(self.list(kind)?.into_iter().map(|f| f.id).collect())
    }

    /// Reads a whole file. A missing file is `Error::NotFound`.
    fn read(&self, kind: FileKind, id: &Id) -> Result<Vec<u8>>;

    /// Reads `len` bytes at `offset`. A file too short for the range is an
    /// integrity error: something truncated it.
    fn read_range(&self, kind: FileKind, id: &Id, offset: u64, len: u32) -> Result<Vec<u8>>;

    /// Like [`Backend::read_range`], into `buf` (replacing what it held), so
    /// that a caller reading many ranges can reuse one buffer; `access` says
    /// whether the range may be read again soon. Returns where the range
    /// starts in `buf`: it is `buf[start..start + len]`.
    fn read_range_into(
        &self,
        kind: FileKind,
        id: &Id,
        offset: u64,
        len: u32,
        access: Access,
        buf: &mut Vec<u8>,
    ) -> Result<usize> {
        let _ = access;
        *buf = self.read_range(kind, id, offset, len)?;
        Ok(0)
    }

    /// Writes a whole file atomically and durably.
    fn write(&self, kind: FileKind, id: &Id, data: &[u8]) -> Result<()>;

    /// Writes a file atomically and durably unless one of that name exists;
    /// returns whether it wrote. Of two racing callers exactly one wins
    /// (for `init`'s config).
    fn write_new(&self, kind: FileKind, id: &Id, data: &[u8]) -> Result<bool> {
        if self.list(kind)?.iter().any(|f| f.id == *id) {
            return Ok(false);
        }
        self.write(kind, id, data)?;
        Ok(true)
    }

    /// Removes a file. Removing a missing file is not an error.
    fn remove(&self, kind: FileKind, id: &Id) -> Result<()>;

    /// Removes the temporary files that writes cut short left behind (a
    /// process killed while writing), untouched for `older_than` — longer
    /// than any write takes, so that no running write loses its file;
    /// returns the bytes removed. Backends whose writes are atomic leave
    /// none.
    fn remove_stale_temporaries(&self, _older_than: std::time::Duration) -> Result<u64> {
        Ok(0)
    }

    /// Names packs worth keeping close (those holding trees), for a
    /// backend with a cache; others ignore it.
    fn keep_packs(&self, packs: &mut dyn Iterator<Item = Id>) {
        let _ = packs;
    }

    /// Lists these kinds of files now, side by side, for the next listing
    /// of each to use: a command about to list them one after the other
    /// waits for one round trip instead of one each. Each listing taken
    /// ahead is used once. Backends that list quickly ignore it.
    fn list_ahead(&self, kinds: &[FileKind]) {
        let _ = kinds;
    }

    /// How many reads in flight at once pay off: a store that answers
    /// each request slowly but many side by side (an object store) says
    /// more than a disk. Readers of many packs run at least this many.
    fn parallel_reads(&self) -> usize {
        1
    }
}

/// How a read range will be used, so that a backend can choose how to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read once, in bulk (a restore): not worth caching.
    Once,
    /// May be read again soon (the mount).
    Repeated,
}

/// Where a file lives inside a repository, relative to its root: the
/// layout every backend shares (`config`, `packs/<xx>/<id>`, `<kind>/<id>`).
pub(crate) fn relative_path(kind: FileKind, id: &Id) -> String {
    match kind {
        FileKind::Config => "config".into(),
        FileKind::Pack => {
            let hex = id.to_hex();
            format!("packs/{}/{hex}", &hex[..2])
        }
        _ => format!("{}/{}", kind.dir_name(), id.to_hex()),
    }
}

/// Kinds kept in a folder of their own, which `create` makes (packs are
/// spread below theirs, over [`pack_folders`]).
pub(crate) const FOLDERS: [FileKind; 6] = [
    FileKind::Key,
    FileKind::Snapshot,
    FileKind::Index,
    FileKind::Lock,
    FileKind::Forgotten,
    FileKind::Staging,
];

/// Whether repositories made before `kind` existed lack its folder: a
/// missing one is empty, and the first write into it makes it.
pub(crate) fn added_later(kind: FileKind) -> bool {
    matches!(kind, FileKind::Forgotten | FileKind::Staging)
}

/// Every folder of a repository, relative to its root: the root itself,
/// each kind's, and the pack folders.
pub(crate) fn all_folders() -> impl Iterator<Item = String> + Send {
    std::iter::once(String::new())
        .chain(FOLDERS.iter().map(|kind| kind.dir_name().to_string()))
        .chain(pack_folders())
}

/// The 256 folders packs are spread over, relative to the root.
pub(crate) fn pack_folders() -> impl Iterator<Item = String> {
    (0..=255u8).map(|byte| format!("packs/{byte:02x}"))
}

/// A small runtime of its own for a backend whose client crate is
/// asynchronous, called from whichever threads call the backend (they
/// give the parallelism). `client` names it in thread names and errors.
pub(crate) fn client_runtime(client: &str) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(client)
        .enable_all()
        .build()
        .map_err(|e| crate::error::Error::io(format!("the {client} client's runtime"), e))
}

/// [`Backend::read_range`] by way of [`Backend::read_range_into`], for
/// backends whose own range read is the latter.
pub(crate) fn read_range_via_into(
    backend: &dyn Backend,
    kind: FileKind,
    id: &Id,
    offset: u64,
    len: u32,
    access: Access,
) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let start = backend.read_range_into(kind, id, offset, len, access, &mut buf)?;
    buf.drain(..start);
    buf.truncate(len as usize);
    Ok(buf)
}

/// The id under which the config file is stored.
pub const CONFIG_ID: Id = Id([0u8; 32]);
