//! The error type of the filesystem view, and its one mapping to errno.

/// What can go wrong answering a filesystem request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// No such entry.
    #[error("no such file or directory")]
    NotFound,
    /// A directory operation on something else.
    #[error("not a directory")]
    NotDir,
    /// A file operation on a directory.
    #[error("is a directory")]
    IsDir,
    /// The entry is not a symlink.
    #[error("not a symbolic link")]
    NotSymlink,
    /// A write to something read-only (every snapshot).
    #[error("read-only file system")]
    ReadOnly,
    /// No such extended attribute.
    #[error("no such attribute")]
    NoAttribute,
    /// The answer does not fit the caller's buffer.
    #[error("buffer too small")]
    Range,
    /// Stored data failed authentication or could not be read.
    #[error("{0}")]
    Store(#[from] mapache_store::Error),
}

impl FsError {
    /// The errno for the kernel: integrity and repository failures are EIO,
    /// never a misleading ENOENT.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotSymlink => libc::EINVAL,
            FsError::ReadOnly => libc::EROFS,
            FsError::NoAttribute => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::Store(_) => libc::EIO,
        }
    }
}

/// The result type of the filesystem view.
pub type FsResult<T> = Result<T, FsError>;
