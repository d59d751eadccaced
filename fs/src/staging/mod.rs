//! The writable staging view: a base snapshot plus an overlay of changes,
//! kept in a per-repository state folder (mode 0700) that survives
//! unmounting, crashes and `kill -9`, and committed as a new snapshot.
//!
//! State folder layout:
//!
//! ```text
//! lock        flock()ed by the one process that has the staging open
//! journal     every change since the base (see journal.rs)
//! data/<n>    local bytes of files written since their last upload
//! ```
//!
//! File data is written to local files first; it is chunked, de-duplicated
//! and uploaded at a checkpoint: when a file is fsynced (then it is durable
//! in the repository before fsync returns), when many files are pending,
//! and before a commit. Only after the upload is durable does the journal
//! say where the content is, and only then is the local file dropped.

mod attributes;
mod batch;
mod changes;
mod file_data;
mod import;
mod journal;
mod overlay;
mod records;
mod requests;
mod status;
mod summary;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use mapache_store::now;
use mapache_store::snapshot::{Snapshot, SnapshotSource};
use mapache_store::tree::{Node, NodeKind, Timestamp, Tree};
use mapache_store::BlobType;
use mapache_store::{BlobId, IndexedRepository, SnapshotId};
use mapache_store::{BlobSaver, SaverStats, StreamError};
use parking_lot::Mutex;

pub use changes::{TreeChange, Watcher};
pub use import::Added;
pub use journal::Meta;
#[cfg(feature = "fuse")]
pub(crate) use overlay::apply_meta;
pub use overlay::join;
pub use requests::{ResetTo, StageAnswer, StageError, StageRequest};

/// What a rename does with an entry already at the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenameMode {
    /// Replace it (a file, or an empty folder), like `rename(2)`.
    Replace,
    /// Fail with [`FsError::Exists`] (`RENAME_NOREPLACE`).
    NoReplace,
    /// Swap the two entries (`RENAME_EXCHANGE`); both must exist.
    Exchange,
}
use batch::Source;
use journal::Op;
use overlay::{components, Bytes, FileRef, Overlay};
pub use overlay::{Entry, WeakEntry};

use crate::error::{FsError, FsResult};

/// New files stay in memory and in the journal up to this size; past it
/// their data moves to a local file.
const INLINE_MAX: u64 = 1 << 20;

/// Checkpoint once this many closed files wait for upload...
const CHECKPOINT_FILES: usize = 1024;
/// ... or this many bytes.
const CHECKPOINT_BYTES: u64 = 64 << 20;

/// What changed compared with the base, for `stage status`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Change {
    /// Not in the base.
    Added(String),
    /// In both, different.
    Modified(String),
    /// Only in the base.
    Removed(String),
}

struct Inner {
    /// Seals and uploads blobs. Replaced by a fresh one after a failure
    /// (say, the repository was unreachable): a saver that failed refuses
    /// everything after, while the staged data is still here to retry.
    saver: Arc<BlobSaver>,
    /// Uploads running outside the lock (see `upload_closed_files`).
    uploads_in_flight: usize,
    base: Option<SnapshotId>,
    /// The base snapshot's root tree.
    base_tree: Option<BlobId>,
    /// The area's records in the repository.
    records: records::Records,
    overlay: Overlay,
    journal: journal::Journal,
    next_local: u64,
    /// Closed dirty files waiting for a checkpoint, and their bytes.
    pending_files: usize,
    pending_bytes: u64,
    /// Imported files whose blobs were handed to the saver: their content
    /// is journaled at the next checkpoint, once the blobs are durable.
    imports: Vec<Op>,
    /// The chunker's read buffer, kept across files (allocating and zeroing
    /// 12 MiB per small file would dominate).
    buffer: Vec<u8>,
    /// Local data files kept open: FUSE writes arrive in pieces of at most
    /// 1 MiB, and opening the file for each cost more than the write.
    open_locals: HashMap<u64, Arc<File>>,
    /// Local files whose content the journal records, but not durably yet:
    /// they are deleted after the next journal fsync.
    unsynced_locals: Vec<u64>,
    /// When anything staged last changed (in this process).
    last_change: Option<Instant>,
    /// What the saver had stored at the last commit (or when it was
    /// made): a commit's summary counts what was stored since.
    stored_before: SaverStats,
}

/// How busy the staging area is, for committing it when it is quiet.
#[derive(Clone, Copy, Debug)]
pub struct Activity {
    /// When something last changed (none: not since it was opened).
    pub last_change: Option<Instant>,
    /// Whether a file is open for writing (or was written without a handle
    /// a moment ago).
    pub writing: bool,
}

impl Inner {
    fn local_file(&mut self, dir: &Path, local: u64) -> FsResult<Arc<File>> {
        if let Some(file) = self.open_locals.get(&local) {
            return Ok(file.clone());
        }
        if self.open_locals.len() >= 256 {
            self.open_locals.clear();
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join("data").join(local.to_string()))
            .map_err(FsError::Io)?;
        let file = Arc::new(file);
        self.open_locals.insert(local, file.clone());
        Ok(file)
    }
}

/// An open staging view. Only one process at a time has it open.
pub struct Staging {
    repo: Arc<IndexedRepository>,
    dir: PathBuf,
    /// Held while open; says who holds it (`pid N`, and what for).
    lock: nix::fcntl::Flock<File>,
    /// Decrypted blobs of stored files read through the staging view.
    cache: Arc<crate::BlobCache>,
    inner: Mutex<Inner>,
    /// Signalled when an upload outside the lock ends.
    uploads_done: parking_lot::Condvar,
    /// Told every change to the tree's names.
    watcher: std::sync::OnceLock<Watcher>,
}

fn new_saver(repo: &Arc<IndexedRepository>) -> Arc<BlobSaver> {
    Arc::new(BlobSaver::new(
        repo.clone(),
        std::thread::available_parallelism().map_or(2, |n| n.get()),
    ))
}

fn io(path: &Path, e: std::io::Error) -> FsError {
    FsError::Store(mapache_store::Error::io(path, e))
}

fn root_node(snapshot: Option<&Snapshot>) -> Node {
    let mut node = Node::new(b"", NodeKind::Dir);
    node.mode = 0o755;
    node.uid = nix::unistd::getuid().as_raw();
    node.gid = nix::unistd::getgid().as_raw();
    let time = snapshot.map_or_else(now, |s| s.time);
    node.mtime = time;
    node.ctime = time;
    node.atime = time;
    node
}

/// The newest snapshot committed from a staging area on this machine.
fn last_committed_from_staging(repo: &IndexedRepository) -> FsResult<Option<SnapshotId>> {
    let host = mapache_store::hostname();
    Ok(repo
        .snapshots()?
        .into_iter()
        .filter(|(_, s)| s.source == SnapshotSource::Staging && s.host == host)
        .max_by_key(|(_, s)| s.time)
        .map(|(id, _)| id))
}

/// What a commit is asked to record.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CommitRequest {
    /// The snapshot's description.
    pub description: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// The host name to record.
    pub host: String,
    /// Write a snapshot even if nothing changed since the base.
    #[serde(default)]
    pub allow_empty: bool,
}

/// What a commit did.
#[derive(Debug)]
pub enum Committed {
    /// It wrote this snapshot.
    Snapshot(SnapshotId, Box<Snapshot>),
    /// Nothing differs from the base (none: an empty staging area of a
    /// new repository), so it wrote none.
    NothingToCommit {
        /// The snapshot the staging area is based on.
        base: Option<SnapshotId>,
    },
}

impl Staging {
    /// Opens the staging in `dir` (created with mode 0700 if missing) and
    /// replays its journal.
    ///
    /// Fails with [`FsError::Busy`] when another process has it open.
    pub fn open(repo: Arc<IndexedRepository>, dir: &Path) -> FsResult<Staging> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join("data"))
            .map_err(|e| io(dir, e))?;
        let lock = lock_dir(dir)?;
        let (journal, ops) = journal::Journal::open(&dir.join("journal"), &repo.config().id)?;
        let base = match ops.first() {
            Some(Op::Base(base)) => *base,
            _ => None,
        };
        let base_snapshot = base.map(|id| repo.load_snapshot(&id)).transpose()?;
        let records = records::Records::find(&repo, &dir.display().to_string())?;
        let mut overlay = Overlay::new(
            repo.clone(),
            base_snapshot.as_ref().map(|s| s.tree),
            root_node(base_snapshot.as_ref()),
        );
        let mut next_local = 1;
        for op in ops.iter().skip(1) {
            if let Op::Local { local, .. } = op {
                next_local = next_local.max(local + 1);
            }
            // An operation that failed live was never journaled; one that
            // fails now means the journal and the base disagree, and the
            // rest still applies as well as it can.
            let _ = overlay.apply(op);
        }
        // A file whose upload was journaled may have lost its local copy
        // (that is the normal end of an upload): read it from the store.
        for file in overlay.files.values() {
            let mut f = file.lock();
            if let Bytes::Local {
                number,
                dirty: false,
            } = f.bytes
            {
                if !dir.join("data").join(number.to_string()).exists() {
                    f.bytes = Bytes::Stored;
                }
            }
        }
        // Local files nothing refers to any more (their content was stored
        // just before a crash) are dropped.
        let referenced: std::collections::HashSet<u64> = overlay
            .files
            .values()
            .filter_map(|f| f.lock().bytes.local())
            .collect();
        if let Ok(entries) = std::fs::read_dir(dir.join("data")) {
            for entry in entries.flatten() {
                let number = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u64>().ok());
                if number.is_some_and(|n| !referenced.contains(&n)) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let fresh = ops.is_empty();
        let mut inner = Inner {
            saver: new_saver(&repo),
            uploads_in_flight: 0,
            base,
            base_tree: base_snapshot.as_ref().map(|s| s.tree),
            records,
            overlay,
            journal,
            next_local,
            pending_files: 0,
            pending_bytes: 0,
            imports: Vec::new(),
            buffer: Vec::new(),
            open_locals: HashMap::new(),
            unsynced_locals: Vec::new(),
            last_change: None,
            stored_before: SaverStats::default(),
        };
        if ops.is_empty() {
            inner.journal.append(&Op::Base(None))?;
        }
        let cache = crate::BlobCache::new(repo.clone(), 64 << 20, 1);
        let staging = Staging {
            cache,
            repo,
            dir: dir.to_path_buf(),
            lock,
            inner: Mutex::new(inner),
            uploads_done: parking_lot::Condvar::new(),
            watcher: std::sync::OnceLock::new(),
        };
        {
            // An area from before records existed, or whose records were
            // forgotten: make what it holds visible again.
            let mut inner = staging.inner.lock();
            let holds_something =
                inner.base.is_some() || inner.overlay.files.values().any(|f| f.lock().fid != 0);
            if inner.records.is_empty() && holds_something {
                staging.fold(&mut inner)?;
            }
        }
        if fresh {
            // A new staging area continues the last snapshot committed from
            // staging on this machine: a commit from it must not drop what
            // the ones before held.
            if let Some(base) = last_committed_from_staging(&staging.repo)? {
                staging.reset(Some(base))?;
            }
        }
        Ok(staging)
    }

    /// Says in the lock file what holds the staging area (`mount on
    /// /path`), for the messages of whoever finds it in use.
    pub fn note_holder(&self, what: &str) {
        use std::os::unix::fs::FileExt;
        let text = format!("pid {} ({what})", std::process::id());
        let _ = self.lock.set_len(0);
        let _ = self.lock.write_all_at(text.as_bytes(), 0);
    }

    /// The state folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The snapshot the staging is based on.
    pub fn base(&self) -> Option<SnapshotId> {
        self.inner.lock().base
    }

    fn local_path(&self, local: u64) -> PathBuf {
        self.dir.join("data").join(local.to_string())
    }

    /// Applies `op` and journals it; the watcher hears what it changed of
    /// the tree's names.
    fn record(&self, inner: &mut Inner, op: Op) -> FsResult<()> {
        inner.last_change = Some(Instant::now());
        let changes = inner.overlay.apply(&op)?;
        inner.journal.append(&op)?;
        if let Some(watcher) = self.watcher.get() {
            changes.iter().for_each(watcher);
        }
        Ok(())
    }

    /// How recently anything changed, and whether a file is being written.
    pub fn activity(&self) -> Activity {
        let inner = self.inner.lock();
        Activity {
            last_change: inner.last_change,
            writing: inner.overlay.any_file_in_use(),
        }
    }

    /// Has `watcher` told every change to the tree's names from now on
    /// (one watcher per staging area: the mount's).
    pub fn watch(&self, watcher: Watcher) {
        let _ = self.watcher.set(watcher);
    }

    /// The root folder.
    pub fn root(&self) -> Entry {
        self.inner.lock().overlay.root()
    }

    /// The entry at `path` (the root for an empty path).
    pub fn resolve(&self, path: &[u8]) -> FsResult<Entry> {
        self.inner.lock().overlay.get(path)
    }

    /// The entry named `name` in folder `dir`, which must still have a
    /// name itself.
    pub fn lookup(&self, dir: &Entry, name: &[u8]) -> FsResult<Entry> {
        let mut inner = self.inner.lock();
        if !dir.has_name() {
            return Err(FsError::NotFound);
        }
        inner.overlay.child(dir, name)
    }

    /// The path of `entry` (by any of its names), for the changes that are
    /// journaled by path; none when it has no name left.
    pub fn path_of(&self, entry: &Entry) -> Option<Vec<u8>> {
        let _inner = self.inner.lock();
        entry.path()
    }

    /// Metadata of `entry`, with a file's current size.
    pub fn stat(&self, entry: &Entry) -> FsResult<Node> {
        let _inner = self.inner.lock();
        let mut node = entry.node();
        if let Entry::File(file) = entry {
            node.size = self.current_size(file)?;
        }
        Ok(node)
    }

    /// Whether `entry` still has a name: a file without one is reached only
    /// through open handles (its link count shows 0).
    pub fn has_name(&self, entry: &Entry) -> bool {
        let _inner = self.inner.lock();
        entry.has_name()
    }

    /// The entries of folder `dir`, which must still have a name, in name
    /// order.
    pub fn list(&self, dir: &Entry) -> FsResult<Vec<(Vec<u8>, Entry)>> {
        let mut inner = self.inner.lock();
        if !dir.has_name() {
            return Err(FsError::NotFound);
        }
        inner.overlay.children(dir)
    }

    /// The entries of folder `dir` as nodes carrying their names and
    /// current sizes, in name order.
    pub fn list_nodes(&self, dir: &Entry) -> FsResult<Vec<Node>> {
        let mut nodes = Vec::new();
        for (name, entry) in self.list(dir)? {
            let node = self.stat(&entry)?;
            nodes.push(Node { name, ..node });
        }
        Ok(nodes)
    }

    /// How many folders folder `dir` holds (its link count is 2 + that).
    pub fn subfolders(&self, dir: &Entry) -> FsResult<u32> {
        self.inner.lock().overlay.subfolders(dir)
    }

    /// Makes a folder.
    pub fn mkdir(&self, path: &[u8], meta: Meta) -> FsResult<()> {
        let mut inner = self.inner.lock();
        self.record(
            &mut inner,
            Op::Mkdir {
                path: path.to_vec(),
                meta,
            },
        )
    }

    /// Makes an empty regular file.
    pub fn create(&self, path: &[u8], meta: Meta) -> FsResult<()> {
        let mut inner = self.inner.lock();
        self.record_create(&mut inner, path, meta).map(|_| ())
    }

    /// Journals a new empty file with a fresh id and identity; returns the id.
    fn record_create(&self, inner: &mut Inner, path: &[u8], meta: Meta) -> FsResult<u64> {
        let fid = inner.overlay.next_fid;
        let op = Op::Create {
            path: path.to_vec(),
            fid,
            inode: random_inode(),
            meta,
        };
        self.record(inner, op)?;
        Ok(fid)
    }

    /// Makes a symlink, fifo, device node or socket described by `node`.
    pub fn make_special(&self, path: &[u8], node: Node) -> FsResult<()> {
        let mut inner = self.inner.lock();
        self.record(
            &mut inner,
            Op::Special {
                path: path.to_vec(),
                node: Box::new(node),
            },
        )
    }

    /// Removes a file or an empty folder (`recursive`: any folder).
    pub fn remove(&self, path: &[u8], recursive: bool) -> FsResult<()> {
        let mut inner = self.inner.lock();
        if components(path).is_empty() {
            return Err(FsError::Invalid);
        }
        let entry = inner.overlay.get(path)?;
        if let Entry::Dir(_) = entry {
            if !recursive && !inner.overlay.children(&entry)?.is_empty() {
                return Err(FsError::NotEmpty);
            }
        }
        self.record(
            &mut inner,
            Op::Remove {
                path: path.to_vec(),
            },
        )
    }

    /// Renames, replacing a file or empty folder at `to`.
    pub fn rename(&self, from: &[u8], to: &[u8], mode: RenameMode) -> FsResult<()> {
        let mut inner = self.inner.lock();
        let exists = inner.overlay.get(to).is_ok();
        // Two names of one file: nothing moves (RENAME_NOREPLACE still
        // finds the target taken, below).
        let same = components(from) == components(to) || inner.overlay.same_entry(from, to);
        let op = match mode {
            RenameMode::NoReplace if exists => return Err(FsError::Exists),
            _ if same => {
                inner.overlay.get(from)?;
                return Ok(());
            }
            RenameMode::Exchange => Op::Exchange {
                a: from.to_vec(),
                b: to.to_vec(),
            },
            RenameMode::Replace | RenameMode::NoReplace => Op::Rename {
                from: from.to_vec(),
                to: to.to_vec(),
            },
        };
        self.record(&mut inner, op)
    }

    /// Makes `to` another name of the file `from`.
    pub fn link(&self, from: &[u8], to: &[u8]) -> FsResult<()> {
        let mut inner = self.inner.lock();
        let inode = random_inode();
        self.record(
            &mut inner,
            Op::Link {
                from: from.to_vec(),
                to: to.to_vec(),
                inode,
            },
        )
    }

    /// Makes the journal durable, then drops the local copies it no longer
    /// needs (in that order: a power cut in between loses nothing).
    fn sync_journal(&self, inner: &mut Inner) -> FsResult<()> {
        inner.journal.sync()?;
        for local in std::mem::take(&mut inner.unsynced_locals) {
            let _ = std::fs::remove_file(self.local_path(local));
        }
        Ok(())
    }

    /// Lets go of files nothing reaches any more, so that a file written and
    /// unlinked before its upload is never uploaded. Their local copies go
    /// after the next journal sync: until the unlink is durable, a power
    /// cut could bring the name back.
    fn drop_unreachable(&self, inner: &mut Inner) {
        for local in inner.overlay.forget_unreachable() {
            inner.open_locals.remove(&local);
            inner.unsynced_locals.push(local);
        }
    }

    /// Uploads every file with new data and makes the journal durable.
    pub fn checkpoint(&self) -> FsResult<()> {
        let mut inner = self.inner.lock();
        self.wait_for_uploads(&mut inner);
        self.checkpoint_locked(&mut inner, true)
    }

    fn checkpoint_locked(&self, inner: &mut Inner, including_open: bool) -> FsResult<()> {
        self.drop_unreachable(inner);
        let files: Vec<FileRef> = inner
            .overlay
            .dirty_files()
            .into_iter()
            .filter(|f| including_open || f.lock().writers == 0)
            .collect();
        self.upload(inner, &files)?;
        inner.pending_files = 0;
        inner.pending_bytes = 0;
        // Batches while files are being copied in need not wait for the
        // disk; an explicit checkpoint (commit, unmount) does.
        if including_open || inner.unsynced_locals.len() >= CHECKPOINT_FILES {
            self.sync_journal(inner)?;
        }
        Ok(())
    }

    /// Adds a regular file at `path` with the content read from `source`,
    /// chunked straight into the repository (no local copy). Its content
    /// counts as staged from the next checkpoint on.
    pub fn import(
        &self,
        path: &[u8],
        source: impl Read,
        meta: Meta,
        xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> FsResult<u64> {
        let mut inner = self.inner.lock();
        let fid = self.record_create(&mut inner, path, meta)?;
        // The content comes from `source`, not from writes: not an inline
        // file (if the import does not finish, replay finds it empty).
        if let Some(file) = inner.overlay.files.get(&fid) {
            file.lock().bytes = Bytes::Stored;
        }
        for (name, value) in xattrs {
            self.record(
                &mut inner,
                Op::Xattr {
                    path: path.to_vec(),
                    name,
                    value: Some(value),
                },
            )?;
        }
        let (content, size) = self.chunk_and_save(&mut inner, source)?;
        inner.imports.push(Op::Content { fid, content, size });
        inner.pending_bytes += size;
        if inner.imports.len() >= 4 * CHECKPOINT_FILES
            || inner.pending_bytes >= 4 * CHECKPOINT_BYTES
        {
            self.checkpoint_locked(&mut inner, false)?;
        }
        Ok(size)
    }

    /// Chunks `source` and hands its blobs to the saver.
    fn chunk_and_save(&self, inner: &mut Inner, source: impl Read) -> FsResult<(Vec<BlobId>, u64)> {
        let result = inner.saver.save_stream(source, &mut inner.buffer);
        result.map_err(|e| match e {
            StreamError::Read(e) => FsError::Io(e),
            StreamError::Store(e) => self.saver_failed(inner, e),
        })
    }

    /// After the saver failed: blobs it had not made durable are lost with
    /// it, so imports that counted on them are dropped (their files stay,
    /// empty, as after a crash) and a fresh saver takes over. Files written
    /// through the mount keep their local data and are uploaded again.
    fn saver_failed(&self, inner: &mut Inner, error: mapache_store::Error) -> FsError {
        inner.imports.clear();
        inner.saver = new_saver(&self.repo);
        inner.stored_before = SaverStats::default();
        FsError::Store(error)
    }

    /// Chunks and uploads the local data of `files`, then records their
    /// content (and that of imported files). Local files of closed files
    /// are dropped afterwards.
    fn upload(&self, inner: &mut Inner, files: &[FileRef]) -> FsResult<()> {
        let mut done = Vec::new();
        for file in files {
            let (fid, source) = {
                let f = file.lock();
                if !f.bytes.is_dirty() {
                    continue;
                }
                (f.fid, Source::of(&f.bytes))
            };
            let (content, size) = match source {
                Some(Source::Inline(bytes)) => self.chunk_and_save(inner, bytes.as_slice())?,
                Some(Source::Local(local)) => {
                    let input = File::open(self.local_path(local)).map_err(FsError::Io)?;
                    self.chunk_and_save(inner, input)?
                }
                None => continue,
            };
            done.push((file.clone(), Op::Content { fid, content, size }));
        }
        if done.is_empty() && inner.imports.is_empty() {
            return Ok(());
        }
        // Durable in the repository before the journal points at it, and
        // the journal durable before the local copies go.
        if let Err(e) = inner.saver.flush() {
            return Err(self.saver_failed(inner, e));
        }
        let blobs = inner
            .imports
            .iter()
            .chain(done.iter().map(|(_, op)| op))
            .flat_map(|op| match op {
                Op::Content { content, .. } => content.clone(),
                _ => Vec::new(),
            })
            .collect();
        self.publish(inner, blobs)?;
        for op in std::mem::take(&mut inner.imports) {
            self.record(inner, op)?;
        }
        for (file, op) in done {
            self.record_stored(inner, &file, op)?;
        }
        Ok(())
    }

    /// Records `op`, the stored content of `file`; the local copy of a
    /// closed file goes after the next journal sync.
    fn record_stored(&self, inner: &mut Inner, file: &FileRef, op: Op) -> FsResult<()> {
        self.record(inner, op)?;
        let local = {
            let mut f = file.lock();
            if f.writers == 0 {
                f.bytes.drop_local_copy()
            } else {
                None
            }
        };
        if let Some(local) = local {
            inner.open_locals.remove(&local);
            inner.unsynced_locals.push(local);
        }
        Ok(())
    }

    /// Writes what is staged as a new snapshot and continues from it;
    /// with nothing changed since the base, none is written unless
    /// `allow_empty`.
    pub fn commit(&self, request: &CommitRequest) -> FsResult<Committed> {
        let started = std::time::Instant::now();
        let mut inner = self.inner.lock();
        self.wait_for_uploads(&mut inner);
        self.checkpoint_locked(&mut inner, true)?;
        // Every blob a written tree names, with the entry naming it, to be
        // checked against the index once the trees are durable.
        let mut references: Vec<(BlobId, BlobType, Vec<u8>)> = Vec::new();
        // Entries of the tree saved last: the root's (folders are saved
        // after what they hold).
        let mut last_saved_len = 0;
        let built = {
            let Inner { saver, overlay, .. } = &mut *inner;
            let mut save_tree = |nodes: Vec<Node>| -> FsResult<BlobId> {
                last_saved_len = nodes.len();
                for node in &nodes {
                    references.extend(
                        node.content
                            .iter()
                            .map(|id| (*id, BlobType::Data, node.name.clone())),
                    );
                    references.extend(
                        node.subtree
                            .map(|id| (id, BlobType::Tree, node.name.clone())),
                    );
                }
                let mut tree = Tree { nodes };
                tree.sort();
                Ok(saver.save(BlobType::Tree, tree.encode())?)
            };
            overlay
                .build(&mut save_tree)
                .and_then(|root| Ok(saver.flush().map(|()| root)?))
        };
        let root = match built {
            Ok(root) => root,
            Err(FsError::Store(e)) => return Err(self.saver_failed(&mut inner, e)),
            Err(e) => return Err(e),
        };
        self.check_references(&references)?;
        // The same tree as the base (or an empty one and no base): nothing
        // would tell the new snapshot from the last.
        let unchanged = match inner.base_tree {
            Some(base) => base == root,
            None => last_saved_len == 0,
        };
        if unchanged && !request.allow_empty {
            return Ok(Committed::NothingToCommit { base: inner.base });
        }
        let mut snapshot = Snapshot::new(
            &request.host,
            vec!["/".into()],
            root,
            SnapshotSource::Staging,
        );
        snapshot.tags = request.tags.clone();
        snapshot.description = request.description.clone();
        snapshot.parent = inner.base;
        let base_summary = inner
            .base
            .map(|id| self.repo.load_snapshot(&id).map(|s| s.summary))
            .transpose()?;
        let base = inner.base_tree.zip(base_summary.as_ref());
        summary::summarize(&self.repo, root, base, &mut snapshot.summary)?;
        let stored = inner.saver.stats();
        let before = inner.stored_before;
        snapshot.summary.blobs_added = stored.blobs_added.saturating_sub(before.blobs_added);
        snapshot.summary.bytes_added = stored.bytes_added.saturating_sub(before.bytes_added);
        snapshot.summary.bytes_stored = stored.bytes_stored.saturating_sub(before.bytes_stored);
        snapshot.summary.duration_secs = started.elapsed().as_secs_f64();
        let id = self.repo.save_snapshot(&snapshot)?;
        // Rebase: what is in memory now equals the new snapshot.
        inner.journal.rewrite(&[Op::Base(Some(id))])?;
        inner.base = Some(id);
        inner.base_tree = Some(root);
        inner.stored_before = stored;
        // Everything staged is in the new base now.
        self.replace_records(&mut inner, Vec::new())?;
        Ok(Committed::Snapshot(id, Box::new(snapshot)))
    }

    /// Refuses a commit whose trees name a blob that the index does not
    /// list: a damaged repository, or one that is not where these changes
    /// were staged. Nothing would restore such a snapshot.
    fn check_references(&self, references: &[(BlobId, BlobType, Vec<u8>)]) -> FsResult<()> {
        let missing: Vec<&(BlobId, BlobType, Vec<u8>)> = references
            .iter()
            .filter(|(id, kind, _)| !self.repo.has_blob(id, *kind))
            .collect();
        let Some((blob, _, name)) = missing.first() else {
            return Ok(());
        };
        Err(FsError::Store(mapache_store::Error::InvalidInput(format!(
            "commit refused: {} entries refer to data the repository does not have \
             (first: {:?}, blob {}); run `mapache verify`, and `mapache rebuild-index` \
             if it finds damage, then add the files again",
            missing.len(),
            String::from_utf8_lossy(name),
            blob.short()
        ))))
    }

    /// Drops every change and starts over from `base` (none: empty).
    pub fn reset(&self, base: Option<SnapshotId>) -> FsResult<()> {
        let mut inner = self.inner.lock();
        let snapshot = base.map(|id| self.repo.load_snapshot(&id)).transpose()?;
        inner.journal.rewrite(&[Op::Base(base)])?;
        let names = inner.overlay.root_names();
        inner.overlay = Overlay::new(
            self.repo.clone(),
            snapshot.as_ref().map(|s| s.tree),
            root_node(snapshot.as_ref()),
        );
        inner.base = base;
        inner.base_tree = snapshot.as_ref().map(|s| s.tree);
        self.replace_records(&mut inner, Vec::new())?;
        inner.pending_files = 0;
        inner.pending_bytes = 0;
        inner.open_locals.clear();
        for entry in std::fs::read_dir(self.dir.join("data")).map_err(|e| io(&self.dir, e))? {
            let _ = std::fs::remove_file(entry.map_err(FsError::Io)?.path());
        }
        if let Some(watcher) = self.watcher.get() {
            watcher(&TreeChange::Reset { names });
        }
        Ok(())
    }
}

/// Takes the exclusive `flock` on the staging folder `dir`, or fails with
/// [`FsError::Busy`] naming the holder.
fn lock_dir(dir: &Path) -> FsResult<nix::fcntl::Flock<std::fs::File>> {
    let lock_path = dir.join("lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| io(&lock_path, e))?;
    let mut lock = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
    {
        Ok(lock) => lock,
        Err(_) => {
            let holder = match holder(dir) {
                named if !named.is_empty() => named,
                _ => "another process".to_string(),
            };
            return Err(FsError::Busy(format!(
            "the staging area is in use by {holder} (a mount or another command); use the mount, or wait for it to end"
        )));
        }
    };
    lock.set_len(0).map_err(|e| io(&lock_path, e))?;
    let _ = write!(lock, "pid {}", std::process::id());
    Ok(lock)
}

/// What the lock file of the staging area in `dir` says holds it (empty
/// when nothing wrote there).
pub fn holder(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("lock"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Keeps the changes of the staging journal in `dir` before its first
/// damaged record and drops the rest (a copy of the journal is kept);
/// returns the changes kept and the bytes dropped. Refused while the
/// staging area is open.
pub fn recover_journal(dir: &Path, repository: &mapache_store::Id) -> FsResult<(usize, usize)> {
    let _lock = lock_dir(dir)?;
    journal::Journal::recover(&dir.join("journal"), repository)
}

/// A random identity for a new file, recorded so that its hard links can be
/// told apart from every file of the base.
fn random_inode() -> u64 {
    let id = mapache_store::Id::random();
    u64::from_le_bytes(id.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Metadata for a new entry owned by the current user with `mode`, times now.
pub fn meta_now(mode: u32) -> Meta {
    let t: Timestamp = now();
    Meta {
        mode,
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        atime: t,
        mtime: t,
    }
}

#[cfg(test)]
mod tests;
