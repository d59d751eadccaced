//! A repository in a folder of another host, reached over SSH (SFTP).
//!
//! The layout is the local backend's. Sessions are carried by OpenSSH's
//! `ssh` when it is installed (`openssh.rs`: the user's ssh configuration
//! applies, and it is fast), else by the built-in libssh2 client
//! (`builtin.rs`); `--ssh-client` chooses. Several sessions run in
//! parallel (a pool, opened as needed), so that the saver's and the
//! restorer's threads keep the link busy. A file is written under a
//! temporary name in its folder, fsynced where the server can
//! (`fsync@openssh.com`), and renamed into place: a dropped link never
//! leaves a partial file under a real name. A failure of the link (not an
//! answer of the server) closes that session, and the operation is tried
//! again on a new one, with growing pauses, before the error names the
//! host.

mod builtin;
mod channel;
mod openssh;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::location::SftpLocation;
use super::{Backend, FileInfo, FileKind, CONFIG_ID};
use crate::error::{Error, Result};
use crate::id::Id;
use builtin::link_error;
use channel::{Channel, Failure, Listed, Status};

/// Attempts of one operation before its error is final.
const ATTEMPTS: u32 = 5;

/// OpenSSH sessions open at most near the server (each carries many
/// requests at once; a second one opens only while the first carries a
/// transfer).
const SHARED_SESSIONS: usize = 2;

/// Far from the server ([`FAR`]), one session's window limits what it
/// carries per round trip and each read waits a round trip for its first
/// bytes: 4 sessions and 12 reads in flight restored the bench dataset
/// 20 ms away in 8.0-8.6 s instead of 14.5-15.4 s. Near the server they
/// cost 15% (more processes on the same cores), hence only when far
/// (docs/benchmarks.md).
const FAR_SESSIONS: usize = 4;
const FAR_READS: usize = 12;

/// A server whose quickest answer took longer than this is far.
const FAR: Duration = Duration::from_millis(5);

/// How long to wait for the server by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Which SSH client carries the sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SshClient {
    /// OpenSSH's `ssh` if it is on the PATH, else the built-in one.
    #[default]
    Auto,
    /// OpenSSH's `ssh`.
    Openssh,
    /// The built-in client (libssh2).
    Builtin,
}

impl std::str::FromStr for SshClient {
    type Err = Error;
    fn from_str(text: &str) -> Result<SshClient> {
        match text {
            "auto" => Ok(SshClient::Auto),
            "openssh" => Ok(SshClient::Openssh),
            "builtin" => Ok(SshClient::Builtin),
            _ => Err(Error::InvalidInput(format!(
                "{text:?} is not an SSH client: use auto, openssh or builtin"
            ))),
        }
    }
}

/// How to reach the host.
#[derive(Clone, Debug)]
pub struct SftpOptions {
    /// Key file to log in with (else ssh-agent, then ~/.ssh's keys).
    pub key_file: Option<PathBuf>,
    /// known_hosts file (default ~/.ssh/known_hosts).
    pub known_hosts: Option<PathBuf>,
    /// ssh configuration file instead of ~/.ssh/config (OpenSSH only).
    pub config_file: Option<PathBuf>,
    /// Sessions to open at most.
    pub sessions: usize,
    /// How long to wait for the server.
    pub timeout: Duration,
    /// Which SSH client to use.
    pub client: SshClient,
}

impl Default for SftpOptions {
    fn default() -> SftpOptions {
        SftpOptions {
            key_file: None,
            known_hosts: None,
            config_file: None,
            sessions: 4,
            timeout: DEFAULT_TIMEOUT,
            client: SshClient::Auto,
        }
    }
}

/// A repository on a host reached by SFTP.
pub struct SftpBackend {
    location: SftpLocation,
    options: SftpOptions,
    root: PathBuf,
    pool: Mutex<Pool>,
    freed: Condvar,
    /// Runs the OpenSSH client's sessions (made on first use).
    runtime: OnceLock<Arc<tokio::runtime::Runtime>>,
    /// The quickest request so far, in microseconds: about the round trip.
    quickest_micros: AtomicU64,
}

type Connection = Arc<dyn Channel>;

/// The sessions. Built-in ones serve one operation at a time and wait
/// idle between; an OpenSSH one carries any number of requests at once,
/// so threads share them: a second one is opened only when all are busy
/// (a login costs ~0.1 s of CPU, and the server answers a session's
/// requests in turn, so one fsync holds up everything behind it).
struct Pool {
    idle: Vec<Connection>,
    shared: Vec<Connection>,
    /// Sessions open or being opened.
    open: usize,
}

impl SftpBackend {
    /// A backend for `location`; connects on first use, so that a wrong
    /// host shows at the first command that needs it.
    pub fn new(location: SftpLocation, mut options: SftpOptions) -> SftpBackend {
        if options.client == SshClient::Auto {
            options.client = match openssh::available() {
                true => SshClient::Openssh,
                false => SshClient::Builtin,
            };
        }
        SftpBackend {
            root: PathBuf::from(&location.path),
            location,
            options,
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                shared: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
            runtime: OnceLock::new(),
            quickest_micros: AtomicU64::new(u64::MAX),
        }
    }

    fn path(&self, kind: FileKind, id: &Id) -> PathBuf {
        self.root.join(super::relative_path(kind, id))
    }

    fn connect(&self) -> Result<Connection> {
        if let Some(key) = &self.options.key_file {
            if !key.exists() {
                return Err(Error::InvalidInput(format!(
                    "{}: no such key file",
                    key.display()
                )));
            }
        }
        match self.options.client {
            SshClient::Builtin if self.options.config_file.is_some() => Err(Error::InvalidInput(
                "the built-in SSH client reads no ssh configuration: use --ssh-client openssh"
                    .into(),
            )),
            SshClient::Builtin => Ok(Arc::new(builtin::connect(&self.location, &self.options)?)),
            _ => {
                let runtime = match self.runtime.get() {
                    Some(runtime) => runtime,
                    None => {
                        let runtime = super::client_runtime("SFTP")?;
                        self.runtime.get_or_init(|| Arc::new(runtime))
                    }
                };
                Ok(Arc::new(openssh::connect(
                    &self.location,
                    &self.options,
                    runtime,
                )?))
            }
        }
    }

    /// Whether the server is far ([`FAR`]), by the quickest request yet
    /// (near until one was answered).
    fn is_far(&self) -> bool {
        let quickest = self.quickest_micros.load(Ordering::Relaxed);
        quickest != u64::MAX && quickest > FAR.as_micros() as u64
    }

    /// Sessions open at most.
    fn most_sessions(&self) -> usize {
        match self.options.client {
            SshClient::Builtin => self.options.sessions.max(1),
            _ if self.is_far() => self.options.sessions.clamp(1, FAR_SESSIONS),
            _ => self.options.sessions.clamp(1, SHARED_SESSIONS),
        }
    }

    /// The least busy shared session, or one from the pool, opened if none
    /// is idle and fewer than the maximum are open. A shared session
    /// counts as taken for a `transfer` (data written and fsynced, or
    /// read in bulk) while anyone uses it; short requests share it anyway.
    fn take(&self, transfer: bool) -> Result<Connection> {
        let mut pool = self.pool.lock();
        loop {
            // Users of a shared session hold clones: the pool's own
            // reference alone means free.
            let least_busy = pool.shared.iter().min_by_key(|c| Arc::strong_count(c));
            if let Some(shared) = least_busy {
                let free = Arc::strong_count(shared) == 1;
                if free || !transfer || pool.open >= self.most_sessions() {
                    return Ok(shared.clone());
                }
            }
            if let Some(connection) = pool.idle.pop() {
                return Ok(connection);
            }
            if pool.open < self.most_sessions() {
                pool.open += 1;
                drop(pool);
                let connection = self.connect().inspect_err(|_| {
                    self.pool.lock().open -= 1;
                    self.freed.notify_all();
                })?;
                if connection.concurrent() {
                    self.pool.lock().shared.push(connection.clone());
                    self.freed.notify_all();
                }
                return Ok(connection);
            }
            self.freed.wait(&mut pool);
        }
    }

    fn give_back(&self, connection: Connection) {
        if !connection.concurrent() {
            self.pool.lock().idle.push(connection);
            self.freed.notify_one();
        }
    }

    /// Closes a session whose link failed (once, however many threads
    /// saw the failure of a shared one).
    fn discard(&self, connection: Connection) {
        let mut pool = self.pool.lock();
        if connection.concurrent() {
            let before = pool.shared.len();
            pool.shared.retain(|c| !Arc::ptr_eq(c, &connection));
            if pool.shared.len() == before {
                return; // another user of it came first
            }
        }
        pool.open -= 1;
        drop(pool);
        self.freed.notify_all();
    }

    /// Runs a short request `op` on a session; see `run_as`.
    fn run<T>(
        &self,
        what: &Path,
        op: impl Fn(&dyn Channel) -> std::result::Result<T, Failure>,
    ) -> Result<T> {
        self.run_as(what, false, op)
    }

    /// Runs `op` on a session; a failed link is tried again on a new
    /// session, with growing pauses. `what` names the file for errors.
    fn run_as<T>(
        &self,
        what: &Path,
        transfer: bool,
        op: impl Fn(&dyn Channel) -> std::result::Result<T, Failure>,
    ) -> Result<T> {
        let mut pause = Duration::from_millis(200);
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(pause);
                pause *= 2;
            }
            let connection = match self.take(transfer) {
                Ok(connection) => connection,
                // The login itself was refused, or the host key: final.
                Err(e @ Error::InvalidInput(_)) => return Err(e),
                // Said without the host, which the final error names.
                Err(Error::Io { source, .. }) => {
                    last = Some(source.to_string());
                    continue;
                }
                Err(e) => {
                    last = Some(e.to_string());
                    continue;
                }
            };
            let started = Instant::now();
            match op(connection.as_ref()) {
                Ok(value) => {
                    self.give_back(connection);
                    let took = started.elapsed().as_micros() as u64;
                    self.quickest_micros.fetch_min(took, Ordering::Relaxed);
                    return Ok(value);
                }
                Err(Failure::Answer(status)) => {
                    self.give_back(connection);
                    return Err(self.answer_error(what, status));
                }
                Err(Failure::Other(e)) => {
                    self.give_back(connection);
                    return Err(e);
                }
                Err(Failure::Link(e)) => {
                    self.discard(connection);
                    last = Some(e);
                }
            }
        }
        Err(link_error(
            &self.location,
            format!(
                "the link failed {ATTEMPTS} times: {}",
                last.unwrap_or_default()
            ),
        ))
    }

    fn answer_error(&self, what: &Path, status: Status) -> Error {
        let shown = format!("{}:{}", self.location.host, what.display());
        match status {
            Status::NoSuchFile => Error::NotFound {
                what: format!("{shown} not found"),
            },
            Status::PermissionDenied => Error::io(
                shown,
                std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            ),
            Status::Other(message) => Error::io(shown, std::io::Error::other(message)),
        }
    }

    /// Lists the ids in `dir` with their sizes; a missing folder is an
    /// error unless `may_be_missing`.
    fn list_dir(&self, dir: &Path, may_be_missing: bool, out: &mut Vec<FileInfo>) -> Result<()> {
        let entries = match self.run(dir, |sftp| sftp.read_dir(dir)) {
            Ok(entries) => entries,
            Err(Error::NotFound { .. }) if may_be_missing => return Ok(()),
            Err(e) => return Err(e),
        };
        for Listed { name, size, .. } in entries {
            // Temporary files and strays have other names.
            if let Ok(id) = name.parse::<Id>() {
                out.push(FileInfo { id, size });
            }
        }
        Ok(())
    }

    /// Lists the 256 pack folders.
    fn list_pack_folders(&self) -> Result<Vec<FileInfo>> {
        self.in_folders(super::pack_folders(), |folder, out| {
            self.list_dir(folder, false, out)
        })
    }

    /// Runs `each` on every folder of `folders` (relative to the root), on
    /// every session at once, gathering what they put out: one after the
    /// other, each costing a few round trips, the 256 pack folders took
    /// seconds on a link of 20 ms.
    fn in_folders<T: Send>(
        &self,
        folders: impl Iterator<Item = String> + Send,
        each: impl Fn(&Path, &mut Vec<T>) -> Result<()> + Sync,
    ) -> Result<Vec<T>> {
        let folders = Mutex::new(folders);
        let lists: Vec<Result<Vec<T>>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..self.options.sessions.clamp(1, 16))
                .map(|_| {
                    scope.spawn(|| {
                        let mut out = Vec::new();
                        loop {
                            // The guard goes at the end of the `let`.
                            let Some(folder) = folders.lock().next() else {
                                return Ok(out);
                            };
                            each(&self.root.join(folder), &mut out)?;
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|worker| worker.join().expect("a listing thread panicked"))
                .collect()
        });
        let mut out = Vec::new();
        for list in lists {
            out.extend(list?);
        }
        Ok(out)
    }

    /// Writes `data` to a temporary file beside `path` and puts it in
    /// place as `how` says. Returns whether the file is ours.
    fn put(&self, path: &Path, data: &[u8], how: Placing) -> Result<bool> {
        let dir = path.parent().expect("repository paths have a parent");
        let mut suffix = [0u8; 8];
        crate::crypto::fill_random(&mut suffix);
        let temp = dir.join(format!(".tmp-{}", hex::encode(suffix)));
        self.run_as(path, true, |sftp| {
            sftp.write_file(&temp, data)?;
            match how {
                Placing::Replace => sftp.replace(&temp, path).map(|()| true),
                Placing::Same => sftp.place_same(&temp, path).map(|()| true),
                Placing::New => sftp.place_new(&temp, path),
            }
        })
    }

    fn make_dir(&self, dir: &Path) -> Result<()> {
        self.run(dir, |sftp| sftp.make_dir(dir))
    }
}

/// How a written file takes its name.
#[derive(Clone, Copy)]
enum Placing {
    /// Over what is there.
    Replace,
    /// A file already there holds the same bytes (its name is their
    /// hash): either may stay.
    Same,
    /// Only if the name is free.
    New,
}

/// How files of `kind` are written: rewritten under the same name, or
/// named by their content.
fn placing(kind: FileKind) -> Placing {
    match kind {
        FileKind::Lock | FileKind::Forgotten | FileKind::Config => Placing::Replace,
        _ => Placing::Same,
    }
}

impl Backend for SftpBackend {
    fn location(&self) -> String {
        self.location.to_string()
    }

    /// Many reads in flight keep a far link busy (see [`FAR_READS`]; the
    /// built-in client's pool runs as many as it has sessions).
    fn parallel_reads(&self) -> usize {
        match self.is_far() {
            true => FAR_READS,
            false => 1,
        }
    }

    fn is_repository(&self) -> Result<bool> {
        let config = self.path(FileKind::Config, &CONFIG_ID);
        match self.run(&config, |sftp| sftp.size(&config)) {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn create(&self) -> Result<()> {
        let root = self.root.clone();
        match self.run(&root, |sftp| sftp.read_dir(&root)) {
            Ok(entries) if !entries.is_empty() => {
                return Err(Error::InvalidInput(format!(
                    "{} is not empty: a repository needs a folder of its own",
                    self.location()
                )))
            }
            Ok(_) => {}
            Err(Error::NotFound { .. }) => {
                // Its parents too, as `mkdir -p`.
                let mut built = PathBuf::new();
                for part in root.components() {
                    built.push(part);
                    if built.parent().is_some() {
                        self.make_dir(&built)?;
                    }
                }
            }
            Err(e) => return Err(e),
        }
        for kind in super::FOLDERS.into_iter().chain([FileKind::Pack]) {
            self.make_dir(&root.join(kind.dir_name()))?;
        }
        for folder in super::pack_folders() {
            self.make_dir(&root.join(folder))?;
        }
        Ok(())
    }

    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>> {
        let mut out = Vec::new();
        match kind {
            FileKind::Config => {
                let config = self.path(kind, &CONFIG_ID);
                if let Ok(size) = self.run(&config, |sftp| sftp.size(&config)) {
                    out.push(FileInfo {
                        id: CONFIG_ID,
                        size,
                    });
                }
            }
            FileKind::Pack => out = self.list_pack_folders()?,
            _ => {
                let dir = self.root.join(kind.dir_name());
                self.list_dir(&dir, super::added_later(kind), &mut out)?
            }
        }
        Ok(out)
    }

    fn read(&self, kind: FileKind, id: &Id) -> Result<Vec<u8>> {
        let path = self.path(kind, id);
        self.run(&path, |sftp| sftp.read_all(&path))
    }

    fn read_range(&self, kind: FileKind, id: &Id, offset: u64, len: u32) -> Result<Vec<u8>> {
        super::read_range_via_into(self, kind, id, offset, len, super::Access::Once)
    }

    fn read_range_into(
        &self,
        kind: FileKind,
        id: &Id,
        offset: u64,
        len: u32,
        _: super::Access,
        buf: &mut Vec<u8>,
    ) -> Result<usize> {
        let path = self.path(kind, id);
        // The caller's buffer is reused: fresh large buffers cost page
        // faults on every read.
        buf.clear();
        buf.resize(len as usize, 0);
        let data = std::cell::RefCell::new(buf);
        self.run_as(&path, true, |sftp| {
            let filled = sftp.read_at(&path, offset, &mut data.borrow_mut())?;
            if filled < len as usize {
                return Err(Failure::Other(Error::integrity(
                    kind,
                    id,
                    format!("shorter than {} bytes: truncated", offset + u64::from(len)),
                )));
            }
            Ok(0)
        })
    }

    fn write(&self, kind: FileKind, id: &Id, data: &[u8]) -> Result<()> {
        self.put(&self.path(kind, id), data, placing(kind))
            .map(|_| ())
    }

    fn write_new(&self, kind: FileKind, id: &Id, data: &[u8]) -> Result<bool> {
        self.put(&self.path(kind, id), data, Placing::New)
    }

    fn remove_stale_temporaries(&self, older_than: std::time::Duration) -> Result<u64> {
        // The server's clock dates the files; `older_than` is long enough
        // for the usual difference between two clocks.
        let now = std::time::SystemTime::now();
        let removed = self.in_folders(super::all_folders(), |folder, out| {
            let entries = match self.run(folder, |sftp| sftp.read_dir(folder)) {
                Ok(entries) => entries,
                // A folder a repository made before it existed.
                Err(Error::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e),
            };
            for entry in entries {
                let age = entry.modified.and_then(|at| now.duration_since(at).ok());
                let stale = age.is_some_and(|age| age >= older_than);
                if !stale || !entry.name.starts_with(".tmp-") {
                    continue;
                }
                let path = folder.join(&entry.name);
                match self.run(&path, |sftp| sftp.remove(&path)) {
                    Ok(()) => out.push(entry.size),
                    Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })?;
        Ok(removed.iter().sum())
    }

    fn remove(&self, kind: FileKind, id: &Id) -> Result<()> {
        let path = self.path(kind, id);
        match self.run(&path, |sftp| sftp.remove(&path)) {
            Err(Error::NotFound { .. }) => Ok(()),
            other => other,
        }
    }
}
