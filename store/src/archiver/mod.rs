//! `snapshot`: scanning directory trees into the repository.
//!
//! Three stages run at once, connected by bounded channels:
//!
//! 1. the **walker** lists directories in name order, compares each entry
//!    with the parent snapshot (a file whose size, mtime, ctime and inode
//!    did not change keeps its old content without being read) and queues
//!    the files that must be read;
//! 2. **readers** chunk and hash those files and hand new blobs to the
//!    [`BlobSaver`](crate::saver::BlobSaver), whose workers compress, encrypt and pack them;
//! 3. the **assembler** (the calling thread) consumes the walker's events in
//!    order, waits for each file's blob list, and writes a tree blob as each
//!    directory ends.
//!
//! Memory stays bounded by the channel sizes, whatever the tree's size.

mod stdin;
mod walker;

pub use stdin::snapshot_stream;

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::bounded;

use crate::blob::BlobType;
use crate::error::{Error, Result};
use crate::host::now;
use crate::id::{BlobId, SnapshotId};
use crate::metadata::OwnerNames;
use crate::patterns::Patterns;
use crate::repository::IndexedRepository;
use crate::saver::BlobSaver;
use crate::snapshot::{Snapshot, SnapshotSource, Summary};
use crate::tree::{Node, Tree};
use walker::{Event, FileJob, FileOutcome, FileStatus, Walker};

/// Which snapshot to compare against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParentChoice {
    /// The newest snapshot of the same host and the same paths.
    Auto,
    /// None: read every file.
    None,
    /// This one.
    Given(SnapshotId),
}

/// Settings of one snapshot run.
#[derive(Clone, Debug)]
pub struct ArchiveOptions {
    /// Entries not to back up.
    pub excludes: Patterns,
    /// Do not descend into other filesystems.
    pub one_file_system: bool,
    /// Tags for the snapshot.
    pub tags: Vec<String>,
    /// Free text for the snapshot.
    pub description: String,
    /// The snapshot to compare against.
    pub parent: ParentChoice,
    /// Worker threads for reading and for sealing.
    pub threads: usize,
    /// Host name to record.
    pub host: String,
    /// Folders never to back up, such as the repository itself when it
    /// lies inside a source; left out with a note.
    pub skip_dirs: Vec<PathBuf>,
    /// Leave out files larger than this many bytes.
    pub exclude_larger_than: Option<u64>,
    /// Leave out folders that hold a file of one of these names, with
    /// the marker's required first bytes (CACHEDIR.TAG's signature) if any.
    pub exclude_if_present: Vec<(String, Option<Vec<u8>>)>,
    /// The time to record instead of now.
    pub time: Option<crate::tree::Timestamp>,
}

/// The first bytes of a CACHEDIR.TAG file (bford.info/cachedir).
pub const CACHEDIR_TAG_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

impl Default for ArchiveOptions {
    fn default() -> Self {
        ArchiveOptions {
            excludes: Patterns::none(),
            one_file_system: false,
            tags: Vec::new(),
            description: String::new(),
            parent: ParentChoice::Auto,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            host: crate::host::hostname(),
            skip_dirs: Vec::new(),
            exclude_larger_than: None,
            exclude_if_present: Vec::new(),
            time: None,
        }
    }
}

/// Counters a progress display can poll while a run goes on.
#[derive(Debug, Default)]
pub struct Progress {
    /// Entries finished.
    pub entries: AtomicU64,
    /// File bytes finished (read or taken from the parent).
    pub bytes: AtomicU64,
    /// Entries that could not be read.
    pub errors: AtomicU64,
}

/// The outcome of a snapshot run.
#[derive(Debug)]
pub struct Archived {
    /// The new snapshot's id.
    pub id: SnapshotId,
    /// The new snapshot.
    pub snapshot: Snapshot,
    /// One line per entry that could not be read.
    pub warnings: Vec<String>,
    /// One line per thing left out on purpose (not an error).
    pub notes: Vec<String>,
}

/// Makes `path` absolute and clean without following a symlink in its last
/// component (that symlink itself is what gets backed up).
fn absolute_source(path: &Path) -> Result<PathBuf> {
    let absolute = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
    let mut clean = PathBuf::from("/");
    for component in absolute.components() {
        match component {
            Component::Normal(c) => clean.push(c),
            Component::ParentDir => {
                clean.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    // Resolve symlinks in the parent folders so that the same data always
    // gets the same path in the snapshot.
    if let (Some(parent), Some(name)) = (clean.parent(), clean.file_name()) {
        if let Ok(real_parent) = std::fs::canonicalize(parent) {
            clean = real_parent.join(name);
        }
    }
    std::fs::symlink_metadata(&clean).map_err(|e| Error::io(path, e))?;
    Ok(clean)
}

/// Backs up `paths` into a new snapshot.
///
/// Entries that cannot be read are skipped and reported in
/// [`Archived::warnings`]; anything else that fails (the repository, a
/// missing source path) fails the run before a snapshot is written.
pub fn snapshot(
    repo: Arc<IndexedRepository>,
    paths: &[PathBuf],
    options: &ArchiveOptions,
    progress: &Progress,
) -> Result<Archived> {
    let started = Instant::now();
    let time = options.time.unwrap_or_else(now);
    if paths.is_empty() {
        return Err(Error::InvalidInput("no paths to back up".into()));
    }
    let mut sources = paths
        .iter()
        .map(|p| absolute_source(p))
        .collect::<Result<Vec<_>>>()?;
    sources.sort();
    sources.dedup();
    // A path inside another source is already covered by it.
    let covered: Vec<PathBuf> = sources.clone();
    sources.retain(|p| {
        !covered
            .iter()
            .any(|other| other != p && p.starts_with(other))
    });
    let path_strings: Vec<String> = sources
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();

    let parent = match &options.parent {
        ParentChoice::None => None,
        ParentChoice::Given(id) => Some((*id, repo.load_snapshot(id)?)),
        ParentChoice::Auto => repo
            .snapshots()?
            .into_iter()
            .rev()
            .find(|(_, s)| s.host == options.host && s.paths == path_strings),
    };
    let mut warnings = Vec::new();
    let mut notes = Vec::new();
    let parent_root = match &parent {
        Some((id, snap)) => match repo.load_tree(&snap.tree) {
            Ok(tree) => Some(tree),
            Err(e) => {
                notes.push(format!(
                    "parent snapshot {} is unreadable, reading every file: {e}",
                    id.short()
                ));
                None
            }
        },
        None => None,
    };

    let saver = BlobSaver::new(repo.clone(), options.threads);
    let owners = OwnerNames::default();
    let abort = AtomicBool::new(false);
    let mut summary = Summary::default();

    let root = std::thread::scope(|scope| -> Result<BlobId> {
        let (event_tx, event_rx) = bounded::<Event>(4096);
        let (job_tx, job_rx) = bounded::<FileJob>(256);
        let walker = Walker {
            repo: &repo,
            options,
            owners: &owners,
            events: event_tx,
            jobs: job_tx,
            skip_dirs: options
                .skip_dirs
                .iter()
                .filter_map(|dir| std::fs::metadata(dir).ok())
                .map(|meta| (meta.dev(), meta.ino()))
                .collect(),
        };
        let sources = &sources;
        let parent_root = &parent_root;
        let walk = scope.spawn(move || walker.run(sources, parent_root.as_ref()));
        for _ in 0..options.threads.max(1) {
            let job_rx = job_rx.clone();
            let (saver, abort) = (&saver, &abort);
            scope.spawn(move || {
                let mut buffer = Vec::new();
                for job in job_rx {
                    let outcome = if abort.load(Ordering::Relaxed) {
                        FileOutcome::Failed(Error::Interrupted)
                    } else {
                        walker::read_file(saver, &job.path, &mut buffer)
                    };
                    let _ = job.result.send(outcome);
                }
            });
        }
        drop(job_rx);
        let mut report = Report {
            summary: &mut summary,
            warnings: &mut warnings,
            notes: &mut notes,
        };
        let assembled = assemble(&event_rx, &saver, &mut report, progress);
        if assembled.is_err() {
            abort.store(true, Ordering::Relaxed);
        }
        // Unblock the walker if we stopped early, then collect its verdict.
        drop(event_rx);
        let walked = walk.join().expect("walker thread panicked");
        // A walker failure explains an assembler that ran out of events.
        walked?;
        assembled
    })?;

    let stats = saver.finish()?;
    summary.blobs_added = stats.blobs_added;
    summary.bytes_added = stats.bytes_added;
    summary.bytes_stored = stats.bytes_stored;
    summary.duration_secs = started.elapsed().as_secs_f64();
    let mut snapshot = Snapshot::new(&options.host, path_strings, root, SnapshotSource::Scan);
    snapshot.time = time;
    snapshot.tags = options.tags.clone();
    snapshot.description = options.description.clone();
    snapshot.parent = parent.map(|(id, _)| id);
    snapshot.summary = summary;
    let id = repo.save_snapshot(&snapshot)?;
    Ok(Archived {
        id,
        snapshot,
        warnings,
        notes,
    })
}

struct Frame {
    node: Option<Node>,
    children: Vec<Node>,
}

/// Writes `children` as a tree blob.
pub(crate) fn save_tree(saver: &BlobSaver, mut children: Vec<Node>) -> Result<BlobId> {
    let mut tree = Tree {
        nodes: std::mem::take(&mut children),
    };
    tree.sort();
    saver.save(BlobType::Tree, tree.encode())
}

/// What the assembler writes into besides trees.
struct Report<'a> {
    summary: &'a mut Summary,
    warnings: &'a mut Vec<String>,
    notes: &'a mut Vec<String>,
}

fn assemble(
    events: &crossbeam_channel::Receiver<Event>,
    saver: &BlobSaver,
    report: &mut Report<'_>,
    progress: &Progress,
) -> Result<BlobId> {
    let Report {
        summary,
        warnings,
        notes,
    } = report;
    let mut stack = vec![Frame {
        node: None,
        children: Vec::new(),
    }];
    for event in events {
        match event {
            Event::EnterDir(node) => stack.push(Frame {
                node: Some(node),
                children: Vec::new(),
            }),
            Event::LeaveDir => {
                let frame = stack.pop().expect("walker balances directories");
                let mut node = frame.node.expect("only the root frame has no node");
                node.subtree = Some(save_tree(saver, frame.children)?);
                summary.dirs += 1;
                progress.entries.fetch_add(1, Ordering::Relaxed);
                stack
                    .last_mut()
                    .expect("root frame stays")
                    .children
                    .push(node);
            }
            Event::Leaf {
                mut node,
                status,
                content,
            } => {
                match content {
                    walker::Content::Ready(blobs) => node.content = blobs,
                    walker::Content::Pending(result) => match result.recv() {
                        Ok(FileOutcome::Read {
                            content,
                            size,
                            changed,
                        }) => {
                            node.content = content;
                            node.size = size;
                            summary.bytes_read += size;
                            if let Some(message) = changed {
                                summary.changed_while_read += 1;
                                warnings.push(message);
                            }
                        }
                        Ok(FileOutcome::Unreadable(message)) => {
                            summary.errors += 1;
                            progress.errors.fetch_add(1, Ordering::Relaxed);
                            warnings.push(message);
                            continue;
                        }
                        Ok(FileOutcome::Failed(e)) => return Err(e),
                        Err(_) => return Err(Error::Interrupted),
                    },
                }
                match status {
                    FileStatus::New => summary.files_new += 1,
                    FileStatus::Changed => summary.files_changed += 1,
                    FileStatus::Unchanged => summary.files_unchanged += 1,
                    FileStatus::NotAFile => summary.others += 1,
                }
                summary.total_bytes += node.size;
                progress.entries.fetch_add(1, Ordering::Relaxed);
                progress.bytes.fetch_add(node.size, Ordering::Relaxed);
                stack
                    .last_mut()
                    .expect("root frame stays")
                    .children
                    .push(node);
            }
            Event::Warning(message) => {
                summary.errors += 1;
                progress.errors.fetch_add(1, Ordering::Relaxed);
                warnings.push(message);
            }
            Event::Note(message) => notes.push(message),
        }
    }
    let root = stack.pop().expect("root frame");
    if !stack.is_empty() {
        // The walker stopped in the middle: it failed, and says why.
        return Err(Error::Interrupted);
    }
    save_tree(saver, root.children)
}
