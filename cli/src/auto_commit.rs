//! `mount --commit-every` and `--commit-on-unmount`: the mount commits its
//! staging area by itself, so that a folder people simply work in is
//! backed up without anyone running `commit`.
//!
//! A commit waits until the staging area is quiet: nothing changed for
//! [`QUIET`] and no file open for writing (a file half written would be
//! committed half written). Nothing changed since the last snapshot means
//! no commit (`Committed::NothingToCommit`). Automatic snapshots carry the
//! tag [`TAG`], so that `forget --tag auto` policies can thin them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mapache_fs::staging::{Change, CommitRequest, Committed, Staging};
use mapache_fs::Namespace;

/// How long nothing may have changed before an automatic commit.
pub const QUIET: Duration = Duration::from_secs(3);

/// The tag of automatic snapshots.
pub const TAG: &str = "auto";

/// When and how the mount commits by itself.
pub struct AutoCommit {
    namespace: Arc<Namespace>,
    staging: Arc<Staging>,
    every: Option<Duration>,
    on_unmount: bool,
    host: String,
    /// When the last commit was made or found nothing to do.
    last: Instant,
}

impl AutoCommit {
    /// Commits `staging` (through `namespace`, which shows the snapshot at
    /// once) every `every` when quiet, and at unmount if `on_unmount`.
    pub fn new(
        namespace: Arc<Namespace>,
        staging: Arc<Staging>,
        every: Option<Duration>,
        on_unmount: bool,
    ) -> AutoCommit {
        AutoCommit {
            namespace,
            staging,
            every,
            on_unmount,
            host: mapache_store::hostname(),
            last: Instant::now(),
        }
    }

    /// Called now and then while mounted: commits if it is time and the
    /// staging area is quiet.
    pub fn tick(&mut self) {
        let Some(every) = self.every else {
            return;
        };
        if self.last.elapsed() < every {
            return;
        }
        let activity = self.staging.activity();
        let quiet =
            !activity.writing && activity.last_change.is_none_or(|at| at.elapsed() >= QUIET);
        if quiet {
            self.commit("automatic commit");
            self.last = Instant::now();
        }
    }

    /// Called once unmounted.
    pub fn unmounted(&mut self) {
        if self.on_unmount {
            self.commit("commit at unmount");
        }
    }

    /// Commits what is staged, saying in the mount's log what the new
    /// snapshot holds; a failure is logged and tried again next time.
    fn commit(&self, why: &str) {
        let changes = match self.staging.status() {
            Ok(changes) => changes,
            Err(e) => {
                eprintln!("mapache mount: {why} skipped: {e}");
                return;
            }
        };
        if changes.is_empty() {
            return;
        }
        let request = CommitRequest {
            description: why.to_string(),
            tags: vec![TAG.to_string()],
            host: self.host.clone(),
            allow_empty: false,
        };
        match self.namespace.commit(&request) {
            Ok(Committed::Snapshot(id, _)) => {
                eprintln!(
                    "mapache mount: {why}: snapshot {} ({})",
                    id.short(),
                    summary(&changes)
                );
            }
            Ok(Committed::NothingToCommit { .. }) => {}
            Err(e) => eprintln!("mapache mount: {why} failed, to be tried again: {e}"),
        }
    }
}

/// `2 added, 1 modified, 0 removed`.
fn summary(changes: &[Change]) -> String {
    let (mut added, mut modified, mut removed) = (0, 0, 0);
    for change in changes {
        match change {
            Change::Added(_) => added += 1,
            Change::Modified(_) => modified += 1,
            Change::Removed(_) => removed += 1,
        }
    }
    format!("{added} added, {modified} modified, {removed} removed")
}
