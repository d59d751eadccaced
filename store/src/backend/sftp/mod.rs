//! A repository in a folder of another host, reached over SSH (SFTP).
//!
//! The layout is the local backend's. Several sessions run in parallel (a
//! pool, opened as needed), so that the saver's and the restorer's threads
//! keep the link busy; libssh2 pipelines the requests of one large read or
//! write. A file is written under a temporary name in its folder, fsynced
//! where the server can (`fsync@openssh.com`), and renamed into place: a
//! dropped link never leaves a partial file under a real name. A failure
//! of the link (not an answer of the server) closes that session, and the
//! operation is tried again on a new one, with growing pauses, before the
//! error names the host.
//!
//! SFTP version 3 servers (OpenSSH) refuse to rename onto an existing
//! name. For content-addressed files an existing file is the same file, so
//! the new copy is dropped; the few files rewritten under the same name
//! (locks when refreshed, forgotten marks, the config) are removed and
//! renamed again, which leaves a moment without the file.

mod connect;

pub use connect::DEFAULT_TIMEOUT;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use ssh2::{ErrorCode, OpenFlags, OpenType, Sftp};

use super::location::SftpLocation;
use super::{Backend, FileInfo, FileKind, CONFIG_ID};
use crate::error::{Error, Result};
use crate::id::Id;
use connect::{connect, link_error, Connection};

/// SFTP status codes (draft-ietf-secsh-filexfer-02).
const NO_SUCH_FILE: i32 = 2;
const PERMISSION_DENIED: i32 = 3;

/// Attempts of one operation before its error is final.
const ATTEMPTS: u32 = 5;

/// How to reach the host.
#[derive(Clone, Debug)]
pub struct SftpOptions {
    /// Key file to log in with (else ssh-agent, then ~/.ssh's keys).
    pub key_file: Option<PathBuf>,
    /// known_hosts file (default ~/.ssh/known_hosts).
    pub known_hosts: Option<PathBuf>,
    /// Sessions to open at most.
    pub sessions: usize,
    /// How long to wait for the server.
    pub timeout: Duration,
}

impl Default for SftpOptions {
    fn default() -> SftpOptions {
        SftpOptions {
            key_file: None,
            known_hosts: None,
            sessions: 4,
            timeout: DEFAULT_TIMEOUT,
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
}

struct Pool {
    idle: Vec<Connection>,
    open: usize,
}

/// Why an operation failed: the server's answer, or the link.
enum Failure {
    /// The server answered with an error status.
    Answer(ssh2::Error),
    /// The session failed (dropped link, timeout): worth a new session.
    Link(String),
    /// Anything else, final.
    Other(Error),
}

impl From<ssh2::Error> for Failure {
    fn from(e: ssh2::Error) -> Failure {
        match e.code() {
            ErrorCode::SFTP(_) => Failure::Answer(e),
            ErrorCode::Session(_) => Failure::Link(e.to_string()),
        }
    }
}

impl From<std::io::Error> for Failure {
    /// Reads and writes of a remote file report ssh2's errors wrapped in
    /// I/O errors.
    fn from(e: std::io::Error) -> Failure {
        let status = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<ssh2::Error>())
            .and_then(sftp_code);
        match status {
            Some(_) => Failure::Other(Error::io("remote file", e)),
            None => Failure::Link(e.to_string()),
        }
    }
}

fn sftp_code(e: &ssh2::Error) -> Option<i32> {
    match e.code() {
        ErrorCode::SFTP(code) => Some(code),
        ErrorCode::Session(_) => None,
    }
}

impl SftpBackend {
    /// A backend for `location`; connects on first use, so that a wrong
    /// host shows at the first command that needs it.
    pub fn new(location: SftpLocation, options: SftpOptions) -> SftpBackend {
        SftpBackend {
            root: PathBuf::from(&location.path),
            location,
            options,
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        }
    }

    fn path(&self, kind: FileKind, id: &Id) -> PathBuf {
        self.root.join(super::relative_path(kind, id))
    }

    /// A session from the pool, opened if none is idle and fewer than the
    /// maximum are open.
    fn take(&self) -> Result<Connection> {
        let mut pool = self.pool.lock();
        loop {
            if let Some(connection) = pool.idle.pop() {
                return Ok(connection);
            }
            if pool.open < self.options.sessions.max(1) {
                pool.open += 1;
                drop(pool);
                return connect(&self.location, &self.options).inspect_err(|_| {
                    self.pool.lock().open -= 1;
                    self.freed.notify_one();
                });
            }
            self.freed.wait(&mut pool);
        }
    }

    fn give_back(&self, connection: Connection) {
        self.pool.lock().idle.push(connection);
        self.freed.notify_one();
    }

    fn discard(&self, connection: Connection) {
        drop(connection);
        self.pool.lock().open -= 1;
        self.freed.notify_one();
    }

    /// Runs `op` on a session; a failed link is tried again on a new
    /// session, with growing pauses. `what` names the file for errors.
    fn run<T>(
        &self,
        what: &Path,
        op: impl Fn(&Sftp) -> std::result::Result<T, Failure>,
    ) -> Result<T> {
        let mut pause = Duration::from_millis(200);
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(pause);
                pause *= 2;
            }
            let connection = match self.take() {
                Ok(connection) => connection,
                // The login itself was refused, or the host key: final.
                Err(e @ Error::InvalidInput(_)) => return Err(e),
                Err(e) => {
                    last = Some(e.to_string());
                    continue;
                }
            };
            match op(&connection.sftp) {
                Ok(value) => {
                    self.give_back(connection);
                    return Ok(value);
                }
                Err(Failure::Answer(e)) => {
                    self.give_back(connection);
                    return Err(self.answer_error(what, e));
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

    fn answer_error(&self, what: &Path, e: ssh2::Error) -> Error {
        let shown = format!("{}:{}", self.location.host, what.display());
        match sftp_code(&e) {
            Some(NO_SUCH_FILE) => Error::NotFound {
                what: format!("{shown} not found"),
            },
            Some(PERMISSION_DENIED) => Error::io(
                shown,
                std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            ),
            _ => Error::io(shown, std::io::Error::other(e.message().to_string())),
        }
    }

    /// Lists the ids in `dir` with their sizes; a missing folder is an
    /// error unless `may_be_missing`.
    fn list_dir(&self, dir: &Path, may_be_missing: bool, out: &mut Vec<FileInfo>) -> Result<()> {
        let entries = match self.run(dir, |sftp| Ok(sftp.readdir(dir)?)) {
            Ok(entries) => entries,
            Err(Error::NotFound { .. }) if may_be_missing => return Ok(()),
            Err(e) => return Err(e),
        };
        for (path, stat) in entries {
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<Id>().ok())
            else {
                continue; // temporary files and strays
            };
            out.push(FileInfo {
                id,
                size: stat.size.unwrap_or(0),
            });
        }
        Ok(())
    }

    /// Lists the 256 pack folders on every session at once: one after the
    /// other, each costing a few round trips, they took seconds on a link
    /// of 20 ms.
    fn list_pack_folders(&self) -> Result<Vec<FileInfo>> {
        let folders = Mutex::new(super::pack_folders());
        let lists: Vec<Result<Vec<FileInfo>>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..self.options.sessions.clamp(1, 16))
                .map(|_| {
                    scope.spawn(|| {
                        let mut out = Vec::new();
                        loop {
                            // The guard goes at the end of the `let`.
                            let Some(folder) = folders.lock().next() else {
                                return Ok(out);
                            };
                            self.list_dir(&self.root.join(folder), false, &mut out)?;
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

    /// Writes `data` to a temporary file beside `path` and renames it
    /// into place. With `replace`, an existing file is replaced; without,
    /// it is kept. Returns whether the file is ours.
    fn put(&self, path: &Path, data: &[u8], replace: bool) -> Result<bool> {
        let dir = path.parent().expect("repository paths have a parent");
        let mut suffix = [0u8; 8];
        crate::crypto::fill_random(&mut suffix);
        let temp = dir.join(format!(".tmp-{}", hex::encode(suffix)));
        self.run(path, |sftp| {
            let mut file = sftp.open_mode(
                &temp,
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                0o600,
                OpenType::File,
            )?;
            file.write_all(data)?;
            // Servers without the fsync extension answer "unsupported";
            // the rename still makes the whole file appear at once.
            let _ = file.fsync();
            drop(file);
            match sftp.rename(&temp, path, None) {
                Ok(()) => Ok(true),
                Err(e) if sftp_code(&e).is_some() && sftp.stat(path).is_ok() => {
                    if replace {
                        sftp.unlink(path)?;
                        sftp.rename(&temp, path, None)?;
                        Ok(true)
                    } else {
                        sftp.unlink(&temp)?;
                        Ok(false)
                    }
                }
                Err(e) => {
                    let _ = sftp.unlink(&temp);
                    Err(e.into())
                }
            }
        })
    }

    fn make_dir(&self, dir: &Path) -> Result<()> {
        self.run(dir, |sftp| match sftp.mkdir(dir, 0o700) {
            Ok(()) => Ok(()),
            Err(e) if sftp_code(&e).is_some() && sftp.stat(dir).is_ok() => Ok(()),
            Err(e) => Err(e.into()),
        })
    }
}

/// Files rewritten under the same name (all others are named by their
/// content or written once).
fn rewritten(kind: FileKind) -> bool {
    matches!(
        kind,
        FileKind::Lock | FileKind::Forgotten | FileKind::Config
    )
}

impl Backend for SftpBackend {
    fn location(&self) -> String {
        self.location.to_string()
    }

    fn is_repository(&self) -> Result<bool> {
        let config = self.path(FileKind::Config, &CONFIG_ID);
        match self.run(&config, |sftp| Ok(sftp.stat(&config)?)) {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn create(&self) -> Result<()> {
        let root = self.root.clone();
        match self.run(&root, |sftp| Ok(sftp.readdir(&root)?)) {
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
                if let Ok(stat) = self.run(&config, |sftp| Ok(sftp.stat(&config)?)) {
                    out.push(FileInfo {
                        id: CONFIG_ID,
                        size: stat.size.unwrap_or(0),
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
        self.run(&path, |sftp| {
            let mut file = sftp.open(&path)?;
            let mut data = Vec::new();
            file.read_to_end(&mut data)?;
            Ok(data)
        })
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
        self.run(&path, |sftp| {
            let mut data = data.borrow_mut();
            let mut file = sftp.open(&path)?;
            file.seek(SeekFrom::Start(offset))?;
            let mut filled = 0;
            while filled < data.len() {
                match file.read(&mut data[filled..])? {
                    0 => {
                        return Err(Failure::Other(Error::integrity(
                            kind,
                            id,
                            format!("shorter than {} bytes: truncated", offset + u64::from(len)),
                        )))
                    }
                    n => filled += n,
                }
            }
            Ok(0)
        })
    }

    fn write(&self, kind: FileKind, id: &Id, data: &[u8]) -> Result<()> {
        self.put(&self.path(kind, id), data, rewritten(kind))
            .map(|_| ())
    }

    fn write_new(&self, kind: FileKind, id: &Id, data: &[u8]) -> Result<bool> {
        self.put(&self.path(kind, id), data, false)
    }

    fn remove(&self, kind: FileKind, id: &Id) -> Result<()> {
        let path = self.path(kind, id);
        match self.run(&path, |sftp| Ok(sftp.unlink(&path)?)) {
            Err(Error::NotFound { .. }) => Ok(()),
            other => other,
        }
    }
}
