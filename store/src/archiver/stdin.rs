//! A snapshot of one stream, such as a database dump piped in, stored as a
//! single file named by the user at the root of the snapshot.

use std::io::Read;
use std::sync::Arc;

use super::{save_tree, ArchiveOptions, Archived};
use crate::error::{Error, Result};
use crate::host::now;
use crate::repository::IndexedRepository;
use crate::saver::{BlobSaver, StreamError};
use crate::snapshot::{Snapshot, SnapshotSource, Summary};
use crate::tree::{Node, NodeKind};

/// Stores everything `source` yields as the file `name` (one path
/// component) of a new snapshot whose path is `/name`.
pub fn snapshot_stream(
    repo: Arc<IndexedRepository>,
    source: impl Read,
    name: &str,
    options: &ArchiveOptions,
) -> Result<Archived> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(Error::InvalidInput(format!(
            "{name:?} cannot name the file: give one name without '/'"
        )));
    }
    let started = std::time::Instant::now();
    let time = options.time.unwrap_or_else(now);
    let saver = BlobSaver::new(repo.clone(), options.threads);
    let (content, size) = saver
        .save_stream(source, &mut Vec::new())
        .map_err(|e| match e {
            StreamError::Read(e) => Error::io("standard input", e),
            StreamError::Store(e) => e,
        })?;
    let mut node = Node::new(name.as_bytes(), NodeKind::File);
    node.mode = 0o644;
    node.uid = nix::unistd::getuid().as_raw();
    node.gid = nix::unistd::getgid().as_raw();
    node.size = size;
    node.mtime = time;
    node.ctime = time;
    node.atime = time;
    node.content = content;
    let root = save_tree(&saver, vec![node])?;
    let stats = saver.finish()?;
    let summary = Summary {
        files_new: 1,
        total_bytes: size,
        bytes_read: size,
        blobs_added: stats.blobs_added,
        bytes_added: stats.bytes_added,
        bytes_stored: stats.bytes_stored,
        duration_secs: started.elapsed().as_secs_f64(),
        ..Summary::default()
    };
    let mut snapshot = Snapshot::new(
        &options.host,
        vec![format!("/{name}")],
        root,
        SnapshotSource::Stdin,
    );
    snapshot.time = time;
    snapshot.tags = options.tags.clone();
    snapshot.description = options.description.clone();
    snapshot.summary = summary;
    let id = repo.save_snapshot(&snapshot)?;
    Ok(Archived {
        id,
        snapshot,
        warnings: Vec::new(),
        notes: Vec::new(),
    })
}
