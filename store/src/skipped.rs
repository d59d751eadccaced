//! Damaged repository files that a command went past.
//!
//! One damaged snapshot or index file must not stop `log`, `restore` of
//! other snapshots or a new `snapshot`: readers skip it and note it here,
//! and the command line reports every note once, at the end, with an exit
//! code that says something was left out.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::backend::FileKind;
use crate::error::Error;
use crate::id::Id;

/// A file that was skipped, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// What kind of file.
    pub kind: FileKind,
    /// Its id.
    pub id: Id,
    /// Why it could not be used.
    pub reason: String,
}

/// The notes of one opened repository; clones share them.
#[derive(Clone, Debug, Default)]
pub struct SkipLog(Arc<Mutex<Vec<Skipped>>>);

impl SkipLog {
    /// Notes that `kind` file `id` was skipped because of `error`; a file
    /// noted before is not noted again.
    pub fn note(&self, kind: FileKind, id: Id, error: &Error) {
        let mut notes = self.0.lock();
        if !notes.iter().any(|s| s.kind == kind && s.id == id) {
            notes.push(Skipped {
                kind,
                id,
                reason: error.to_string(),
            });
        }
    }

    /// Every note so far, taken out of the log: whoever takes them
    /// reports them.
    pub fn take(&self) -> Vec<Skipped> {
        std::mem::take(&mut *self.0.lock())
    }

    /// The notes about files of `kind`, taken out of the log; the others
    /// stay for whoever reports the rest.
    pub fn take_kind(&self, kind: FileKind) -> Vec<Skipped> {
        let mut notes = self.0.lock();
        let (taken, kept) = std::mem::take(&mut *notes)
            .into_iter()
            .partition(|note| note.kind == kind);
        *notes = kept;
        taken
    }
}

/// Whether `error` says a stored file is damaged (it failed authentication
/// or does not decode), as opposed to the repository being unreachable.
pub fn is_damage(error: &Error) -> bool {
    matches!(error, Error::Integrity { .. } | Error::Format { .. })
}
