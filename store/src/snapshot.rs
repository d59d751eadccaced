//! Snapshots: the root tree of one backup plus who, when and what.
//!
//! Stored sealed (kind `Snapshot`) as JSON, under the keyed hash of that JSON.

use serde::{Deserialize, Serialize};

use crate::host::{now, username};
use crate::id::{BlobId, SnapshotId};
use crate::tree::Timestamp;

/// The version of the snapshot record this build writes (and the only one
/// it reads).
pub const SNAPSHOT_VERSION: u32 = 1;

/// How a snapshot was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotSource {
    /// `mapache snapshot` scanned the filesystem.
    Scan,
    /// `mapache commit` wrote the staging view.
    Staging,
    /// `mapache snapshot --stdin` stored a stream as one file.
    Stdin,
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
    /// Files that changed while they were read, even when read again
    /// (stored as last read; they may mix old and new content).
    #[serde(default)]
    pub changed_while_read: u64,
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

impl Summary {
    /// Files in the snapshot.
    pub fn files(&self) -> u64 {
        self.files_new + self.files_changed + self.files_unchanged
    }

    /// Whether it counts what the snapshot holds (commits of versions
    /// before 2026-11-30 recorded only their duration).
    pub fn counts_known(&self) -> bool {
        self.files() > 0 || self.dirs > 0 || self.others > 0
    }
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
    /// Decodes the plaintext of snapshot `id`, refusing record versions
    /// this build does not know.
    pub fn decode(id: &SnapshotId, json: &[u8]) -> crate::Result<Snapshot> {
        let fail = |reason: String| crate::Error::format(format!("snapshot {id}"), reason);
        let snapshot: Snapshot = serde_json::from_slice(json).map_err(|e| fail(e.to_string()))?;
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(fail(format!(
                "record version {} is not known to this build (it knows {SNAPSHOT_VERSION})",
                snapshot.version
            )));
        }
        Ok(snapshot)
    }

    /// A record for a snapshot of `paths` with root `tree`, made now by
    /// this process's user on `host`, with no tags, description, parent or
    /// summary yet.
    pub fn new(host: &str, paths: Vec<String>, tree: BlobId, source: SnapshotSource) -> Snapshot {
        Snapshot {
            version: SNAPSHOT_VERSION,
            time: now(),
            host: host.to_string(),
            user: username(),
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            paths,
            tags: Vec::new(),
            description: String::new(),
            parent: None,
            tree,
            summary: Summary::default(),
            source,
            program_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

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
