//! Snapshots: the root tree of one backup plus who, when and what.
//!
//! Stored sealed (kind `Snapshot`) as JSON, under the keyed hash of that JSON.

use serde::{Deserialize, Serialize};

use crate::id::{BlobId, SnapshotId};
use crate::tree::Timestamp;

/// How a snapshot was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotSource {
    /// `mapache snapshot` scanned the filesystem.
    Scan,
    /// `mapache commit` wrote the staging view.
    Staging,
}

/// Counts of what a snapshot run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Files that were not in the parent snapshot.
    pub files_new: u64,
    /// Files that differ from the parent.
    pub files_changed: u64,
    /// Files taken from the parent without reading them.
    pub files_unchanged: u64,
    /// Directories recorded.
    pub dirs: u64,
    /// Other entries (symlinks, devices, fifos, sockets).
    pub others: u64,
    /// Files and directories that could not be read.
    pub errors: u64,
    /// Bytes of all files in the snapshot.
    pub total_bytes: u64,
    /// Bytes read from files that were new or changed.
    pub bytes_read: u64,
    /// Blobs that were not yet in the repository.
    pub blobs_added: u64,
    /// Plaintext bytes of those blobs.
    pub bytes_added: u64,
    /// Bytes written to packs for them (after compression and encryption).
    pub bytes_stored: u64,
    /// Seconds the run took.
    pub duration_secs: f64,
}

/// A snapshot record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version of this record.
    pub version: u32,
    /// When the snapshot was started.
    pub time: Timestamp,
    /// Host name of the machine.
    pub host: String,
    /// User who made it.
    pub user: String,
    /// Their uid.
    pub uid: u32,
    /// Their gid.
    pub gid: u32,
    /// Absolute source paths.
    pub paths: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Free text.
    pub description: String,
    /// The snapshot this one was compared against, if any.
    pub parent: Option<SnapshotId>,
    /// Root tree.
    pub tree: BlobId,
    /// What the run did.
    pub summary: Summary,
    /// Scan or staging commit.
    pub source: SnapshotSource,
    /// Version of mapache that wrote it.
    pub program_version: String,
}

impl Snapshot {
    /// The time as a local date and time, `YYYY-MM-DD HH:MM:SS`.
    pub fn local_time(&self) -> String {
        use chrono::TimeZone;
        chrono::Local
            .timestamp_opt(self.time.secs, self.time.nanos)
            .single()
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| format!("@{}", self.time.secs))
    }
}

/// The current time as a [`Timestamp`].
pub fn now() -> Timestamp {
    let now = chrono::Utc::now();
    Timestamp {
        secs: now.timestamp(),
        nanos: now.timestamp_subsec_nanos(),
    }
}

/// This machine's host name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The name of the user running this process.
pub fn username() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}
