//! The error type of the store crate.

use std::path::PathBuf;

use crate::backend::FileKind;

/// Everything that can go wrong inside the repository layer.
///
/// Callers match on the variants that need a distinct reaction (a wrong
/// password, a lock held by someone else, data that failed authentication);
/// the rest are reported as they are.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No repository exists at the location.
    #[error("no repository at {0}")]
    RepositoryNotFound(String),

    /// `init` was asked to create a repository where one already exists.
    #[error("a repository already exists at {0}")]
    RepositoryExists(String),

    /// No key file could be opened with the given password.
    #[error("wrong password: no key in this repository matches it")]
    WrongPassword,

    /// Another process holds a lock that conflicts with the one requested.
    #[error("repository is locked {0}")]
    LockConflict(String),

    /// A stored object failed authentication or its hash did not match:
    /// storage corruption or tampering.
    #[error("integrity failure in {kind} {id}: {reason}")]
    Integrity {
        /// The kind of object that failed.
        kind: FileKind,
        /// Its id, hex encoded.
        id: String,
        /// What exactly did not match.
        reason: String,
    },

    /// An object that should exist does not.
    #[error("{what}")]
    NotFound {
        /// What was looked for and not found, as a sentence.
        what: String,
    },

    /// A snapshot id prefix matched more than one snapshot (the text names
    /// the prefix and the candidates).
    #[error("snapshot id {0}")]
    Ambiguous(String),

    /// Decoding a stored structure failed after authentication succeeded:
    /// a format version this build does not understand, or a bug.
    #[error("cannot decode {what}: {reason}")]
    Format {
        /// What was being decoded.
        what: String,
        /// Why it failed.
        reason: String,
    },

    /// The operation was asked to stop (Ctrl-C).
    #[error("interrupted")]
    Interrupted,

    /// Input given by the user is not valid.
    #[error("{0}")]
    InvalidInput(String),

    /// An I/O error with the path it happened on.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An integrity failure of the object `kind`/`id`.
    pub fn integrity(
        kind: FileKind,
        id: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Error::Integrity {
            kind,
            id: id.to_string(),
            reason: reason.into(),
        }
    }

    /// A decoding failure.
    pub fn format(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Format {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// The result type of the store crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
