//! Exit codes, and turning errors into one readable line.

use mapache_fs::FsError;
use mapache_store::Error;

/// A snapshot was written, but some sources could not be read.
pub const PARTIAL: u8 = 3;
/// `verify` found damage.
pub const DAMAGE_FOUND: u8 = 4;
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
    /// `verify` ran and found damage (exit 4).
    Damaged,
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
            Outcome::Damaged => DAMAGE_FOUND,
            Outcome::Code(code) => code,
        }
    }
}

/// The documented exit code for an error.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(FsError::Busy(_)) = cause.downcast_ref::<FsError>() {
            return LOCK_CONFLICT;
        }
        match cause.downcast_ref::<Error>() {
            Some(Error::RepositoryNotFound(_)) => return REPOSITORY_NOT_FOUND,
            Some(Error::LockConflict(_)) => return LOCK_CONFLICT,
            Some(Error::WrongPassword) => return WRONG_PASSWORD,
            Some(Error::Interrupted) => return INTERRUPTED,
            _ => {}
        }
    }
    1
}

/// Whether the error is a closed stdout (`mapache ls | head`): not a
/// failure worth a message.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let io = cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind);
        // JSON written to a closed pipe fails inside serde_json.
        let json = cause
            .downcast_ref::<serde_json::Error>()
            .and_then(serde_json::Error::io_error_kind);
        io.or(json) == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// The error with its causes on one line, each cause once: a message that
/// already includes its source's text (`path: No such file`) is not
/// followed by that text again.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if parts.last().is_some_and(|last| last.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let store = Error::io("/repo/config", io);
        let error = anyhow::Error::from(FsError::Store(store)).context("opening the staging area");
        let line = one_line(&error);
        assert_eq!(line.matches("entity not found").count(), 1, "{line}");
        assert!(line.starts_with("opening the staging area: /repo/config: "));
    }

    #[test]
    fn staging_in_use_is_a_lock_conflict() {
        let error = anyhow::Error::from(FsError::Busy("in use by pid 1".into()));
        assert_eq!(exit_code(&error), LOCK_CONFLICT);
    }
}
