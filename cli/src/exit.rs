//! Exit codes, and turning errors into one readable line.

use mapache_store::Error;

/// A snapshot was written, but some sources could not be read.
pub const PARTIAL: u8 = 3;
/// No repository at the given location.
pub const REPOSITORY_NOT_FOUND: u8 = 10;
/// Another process holds a conflicting lock.
pub const LOCK_CONFLICT: u8 = 11;
/// No key matches the password.
pub const WRONG_PASSWORD: u8 = 12;
/// Stopped by Ctrl-C or SIGTERM.
pub const INTERRUPTED: u8 = 130;

/// How a command that did not fail outright ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything worked.
    Success,
    /// A snapshot was written but some entries were unreadable (exit 3).
    Partial,
    /// The command finished but what it reported is a failure (exit 1),
    /// such as files a restore could not recover.
    Failed,
    /// Exit with this code: what a background mount that failed returned.
    Code(u8),
}

impl Outcome {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::Partial => PARTIAL,
            Outcome::Failed => 1,
            Outcome::Code(code) => code,
        }
    }
}

/// The documented exit code for an error.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    match error.downcast_ref::<Error>() {
        Some(Error::RepositoryNotFound(_)) => REPOSITORY_NOT_FOUND,
        Some(Error::LockConflict(_)) => LOCK_CONFLICT,
        Some(Error::WrongPassword) => WRONG_PASSWORD,
        Some(Error::Interrupted) => INTERRUPTED,
        _ => 1,
    }
}

/// Whether the error is a closed stdout (`mapache ls | head`): not a
/// failure worth a message.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error with its causes on one line.
pub fn one_line(error: &anyhow::Error) -> String {
    format!("{error:#}").replace('\n', " ")
}
