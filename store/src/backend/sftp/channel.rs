//! What the SFTP backend asks of a session, whichever client carries it:
//! OpenSSH's `ssh` (`openssh.rs`) or the built-in libssh2 (`builtin.rs`).

use std::path::Path;

use crate::error::Error;

/// One logged-in SFTP session. Paths are the server's.
pub(super) trait Channel: Send + Sync {
    /// Whether several threads may use it at once (else one at a time).
    fn concurrent(&self) -> bool;

    /// The entries of `dir`.
    fn read_dir(&self, dir: &Path) -> Result<Vec<Listed>, Failure>;

    /// The size of a file.
    fn size(&self, path: &Path) -> Result<u64, Failure>;

    /// Makes a folder (mode 0700); one that exists already is fine.
    fn make_dir(&self, dir: &Path) -> Result<(), Failure>;

    /// Fills `buf` from `offset`; returns how much the file had (less
    /// than `buf` at its end).
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> Result<usize, Failure>;

    /// The whole file.
    fn read_all(&self, path: &Path) -> Result<Vec<u8>, Failure>;

    /// Creates (or truncates) `path` with mode 0600, writes `data` and
    /// makes it durable where the server can (`fsync@openssh.com`).
    fn write_file(&self, path: &Path, data: &[u8]) -> Result<(), Failure>;

    /// Renames `from` to `to`, replacing what `to` holds.
    fn replace(&self, from: &Path, to: &Path) -> Result<(), Failure>;

    /// Gives `from` the name `to`, where a file of `to` holds the same
    /// bytes: which of the two stays does not matter, but `to` must never
    /// be missing meanwhile.
    fn place_same(&self, from: &Path, to: &Path) -> Result<(), Failure>;

    /// Gives `from` the name `to` unless `to` exists; returns whether it
    /// did. `from` is gone either way.
    fn place_new(&self, from: &Path, to: &Path) -> Result<bool, Failure>;

    /// Removes a file.
    fn remove(&self, path: &Path) -> Result<(), Failure>;
}

/// An entry of a folder listing.
pub(super) struct Listed {
    /// Its name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it last changed, by the server's clock, if the server says.
    pub modified: Option<std::time::SystemTime>,
}

/// Why an operation failed: the server's answer, or the link.
pub(super) enum Failure {
    /// The server answered with an error status.
    Answer(Status),
    /// The session failed (dropped link, timeout): worth a new session.
    Link(String),
    /// Anything else, final.
    Other(Error),
}

/// An error status of the server.
pub(super) enum Status {
    NoSuchFile,
    PermissionDenied,
    Other(String),
}
