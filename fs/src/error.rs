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
    /// The name is taken.
    #[error("file exists")]
    Exists,
    /// A folder that must be empty is not.
    #[error("directory not empty")]
    NotEmpty,
    /// An argument makes no sense (renaming a folder into itself, say).
    #[error("invalid argument")]
    Invalid,
    /// A name longer than `NAME_MAX` bytes.
    #[error("file name too long")]
    NameTooLong,
    /// The operation is not supported here (ACLs the mount could not
    /// enforce for other users).
    #[error("operation not supported")]
    Unsupported,
    /// Not allowed on this kind of entry (a default ACL on a file).
    #[error("permission denied")]
    AccessDenied,
    /// Another process has the staging open.
    #[error("{0}")]
    Busy(String),
    /// The staging journal cannot be used as it is (damaged, another
    /// repository's, an unknown version); the message says what to do.
    #[error("{0}")]
    Journal(String),
    /// A local file operation failed (the state folder is full, say).
    #[error("{0}")]
    Io(#[from] std::io::Error),
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
            FsError::Exists => libc::EEXIST,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::Invalid => libc::EINVAL,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::Unsupported => libc::EOPNOTSUPP,
            FsError::AccessDenied => libc::EACCES,
            FsError::Busy(_) => libc::EBUSY,
            FsError::Journal(_) => libc::EIO,
            FsError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            // A full repository disk says so; anything else the repository
            // does wrong (gone, unreadable) is an I/O error of ours.
            FsError::Store(mapache_store::Error::Io { source, .. }) => {
                match source.raw_os_error() {
                    Some(code @ (libc::ENOSPC | libc::EDQUOT)) => code,
                    _ => libc::EIO,
                }
            }
            FsError::Store(_) => libc::EIO,
        }
    }
}

/// The result type of the filesystem view.
pub type FsResult<T> = Result<T, FsError>;
