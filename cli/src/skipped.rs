//! Damaged repository files that the command went past, reported once at
//! the end with the exit code that says something was left out.

use std::sync::Mutex;

use mapache_store::SkipLog;

use crate::exit::Outcome;

/// The logs of the repositories this process opened.
static WATCHED: Mutex<Vec<SkipLog>> = Mutex::new(Vec::new());

/// Reports what `log` collects when the command ends.
pub fn watch(log: &SkipLog) {
    WATCHED.lock().expect("not poisoned").push(log.clone());
}

/// Prints a warning per skipped file; a successful outcome becomes
/// [`Outcome::Partial`] if anything was skipped.
pub fn report(outcome: Outcome) -> Outcome {
    let notes: Vec<_> = WATCHED
        .lock()
        .expect("not poisoned")
        .iter()
        .flat_map(SkipLog::take)
        .collect();
    for note in &notes {
        eprintln!(
            "warning: skipped damaged {} file {}: {}",
            note.kind, note.id, note.reason
        );
    }
    if notes.is_empty() {
        return outcome;
    }
    eprintln!("warning: run `mapache verify` to see what the damage affects");
    match outcome {
        Outcome::Success => Outcome::Partial,
        other => other,
    }
}
