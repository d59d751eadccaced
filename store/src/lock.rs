//! Repository locks.
//!
//! Shared locks (snapshot, restore, ...) may coexist; an exclusive lock
//! (garbage collection, rebuilding the index, ...) excludes every other. A
//! lock is a sealed JSON file in `locks/`, refreshed every
//! [`REFRESH_INTERVAL`] while held. It is stale when it was not refreshed
//! for [`STALE_AFTER`], or when it names a process on this host that no
//! longer exists; stale locks are ignored and `unlock` removes them.
//!
//! Taking a lock writes it first and then checks for conflicts, so two
//! processes racing both see each other and at least one backs off. A
//! process waiting for an exclusive lock keeps its claim written while
//! shared holders finish, which turns new shared lockers away: waiting
//! for the exclusive lock ends even while short snapshots keep coming.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, FileKind};
use crate::crypto::Cipher;
use crate::error::{Error, Result};
use crate::host::{hostname, now, username};
use crate::id::Id;
use crate::repo_file;
use crate::tree::Timestamp;

/// How often a held lock is rewritten.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// After how long without refresh a lock is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

/// What a lock file says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Format version of the record (absent in the first version's
    /// records, which are version 1).
    #[serde(default = "crate::repo_file::first_version")]
    pub version: u32,
    /// Host of the holder.
    pub host: String,
    /// Process id of the holder.
    pub pid: u32,
    /// User of the holder.
    pub user: String,
    /// Last refresh.
    pub time: Timestamp,
    /// Whether it excludes every other lock.
    pub exclusive: bool,
}

impl LockInfo {
    fn current(exclusive: bool) -> LockInfo {
        LockInfo {
            version: 1,
            host: hostname(),
            pid: std::process::id(),
            user: username(),
            time: now(),
            exclusive,
        }
    }

    /// Whether this lock no longer protects anything.
    pub fn is_stale(&self) -> bool {
        let age = now().secs.saturating_sub(self.time.secs);
        if age > STALE_AFTER.as_secs() as i64 {
            return true;
        }
        if self.host == hostname() {
            let pid = nix::unistd::Pid::from_raw(self.pid as i32);
            return matches!(
                nix::sys::signal::kill(pid, None),
                Err(nix::errno::Errno::ESRCH)
            );
        }
        false
    }

    fn describe(&self) -> String {
        let kind = if self.exclusive { "exclusively " } else { "" };
        let age = now().secs.saturating_sub(self.time.secs);
        format!(
            "{kind}by pid {} of {}@{} (refreshed {age} s ago); if that process is gone, run `mapache unlock`",
            self.pid, self.user, self.host
        )
    }
}

fn write_lock(backend: &dyn Backend, cipher: &Cipher, id: &Id, info: &LockInfo) -> Result<()> {
    backend.write(FileKind::Lock, id, &repo_file::seal(cipher, id, info))
}

/// Reads every lock file. Unreadable ones are returned as errors in place.
pub fn list_locks(backend: &dyn Backend, cipher: &Cipher) -> Result<Vec<(Id, Result<LockInfo>)>> {
    read_locks(backend, cipher, &[])
}

/// Reads every lock file but those in `own` (this process's, whose
/// content it knows).
fn read_locks(
    backend: &dyn Backend,
    cipher: &Cipher,
    own: &[Id],
) -> Result<Vec<(Id, Result<LockInfo>)>> {
    let mut out = Vec::new();
    for file in backend.list(FileKind::Lock)? {
        if own.contains(&file.id) {
            continue;
        }
        let info = match backend.read(FileKind::Lock, &file.id) {
            Ok(bytes) => repo_file::open(cipher, &file.id, &bytes),
            // Removed between listing and reading: released meanwhile.
            Err(Error::NotFound { .. }) => continue,
            Err(e) => Err(e),
        };
        out.push((file.id, info));
    }
    Ok(out)
}

/// Describes a lock other than `own` that conflicts with taking one
/// (`exclusive` or not).
fn find_conflict(
    backend: &dyn Backend,
    cipher: &Cipher,
    own: &[Id],
    exclusive: bool,
) -> Result<Option<String>> {
    for (id, info) in read_locks(backend, cipher, own)? {
        match info {
            Ok(info) if info.is_stale() => {}
            Ok(info) if exclusive || info.exclusive => return Ok(Some(info.describe())),
            Ok(_) => {}
            // A lock we cannot read might be anything: assume the worst.
            Err(_) if exclusive => return Ok(Some(format!("by an unreadable lock {id}"))),
            Err(_) => {}
        }
    }
    Ok(None)
}

struct Refresher {
    stop: Mutex<bool>,
    wake: Condvar,
}

/// A held lock; released when dropped.
pub struct LockGuard {
    backend: Arc<dyn Backend>,
    id: Id,
    refresher: Arc<Refresher>,
    thread: Option<JoinHandle<()>>,
}

/// Locks held by this process, so an interrupt handler can release them.
static HELD: Mutex<Vec<(Id, Arc<dyn Backend>)>> = Mutex::new(Vec::new());

/// Removes every lock this process holds; for the Ctrl-C handler, which
/// exits right after.
pub fn release_all_held() {
    for (id, backend) in HELD.lock().iter() {
        let _ = backend.remove(FileKind::Lock, id);
    }
}

impl LockGuard {
    /// Takes a shared or exclusive lock, or fails with
    /// [`Error::LockConflict`] naming the holder.
    pub fn acquire(
        backend: Arc<dyn Backend>,
        cipher: &Cipher,
        exclusive: bool,
    ) -> Result<LockGuard> {
        LockGuard::acquire_waiting(backend, cipher, exclusive, Duration::ZERO, None)
    }

    /// Like [`LockGuard::acquire`], trying again for up to `wait` while a
    /// conflicting lock is held. `upgrading` is a lock of this process
    /// that does not conflict: the shared lock that an exclusive one
    /// replaces.
    pub fn acquire_waiting(
        backend: Arc<dyn Backend>,
        cipher: &Cipher,
        exclusive: bool,
        wait: Duration,
        upgrading: Option<&LockGuard>,
    ) -> Result<LockGuard> {
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(100);
        loop {
            match LockGuard::try_acquire(backend.clone(), cipher, exclusive, upgrading, deadline) {
                Err(Error::LockConflict(holder)) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(Error::LockConflict(holder));
                    }
                    // Jitter, so that two processes claiming the exclusive
                    // lock together do not back off in step forever.
                    let jitter = Duration::from_millis(u64::from(Id::random().0[0]) % 100);
                    std::thread::sleep((pause + jitter).min(deadline - now));
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                other => return other,
            }
        }
    }

    /// One attempt. An exclusive lock is claimed first (written) and then
    /// waited for until `deadline` while shared locks go away: the claim
    /// keeps new shared locks from being taken meanwhile, so a steady
    /// stream of short snapshots cannot starve a clean.
    fn try_acquire(
        backend: Arc<dyn Backend>,
        cipher: &Cipher,
        exclusive: bool,
        upgrading: Option<&LockGuard>,
        deadline: Instant,
    ) -> Result<LockGuard> {
        let mut own: Vec<Id> = upgrading.map(|lock| lock.id).into_iter().collect();
        // What stops us: for a shared lock, an exclusive one; for an
        // exclusive one, another exclusive claim (shared ones are waited
        // out below).
        let blocked = |own: &[Id]| find_conflict(backend.as_ref(), cipher, own, false);
        // A shared lock is written first and checked once: the check after
        // writing is the one that counts, and on a remote store each
        // listing is a round trip. An exclusive claim looks first, so as
        // not to stand in the way of another one that is already waiting.
        if exclusive {
            if let Some(holder) = blocked(&own)? {
                return Err(Error::LockConflict(holder));
            }
        }
        let guard = LockGuard::hold(backend.clone(), cipher, exclusive)?;
        own.push(guard.id);
        if let Some(holder) = blocked(&own)? {
            return Err(Error::LockConflict(holder));
        }
        if exclusive {
            let mut pause = Duration::from_millis(50);
            while let Some(holder) = find_conflict(backend.as_ref(), cipher, &own, true)? {
                if let Some(rival) = blocked(&own)? {
                    return Err(Error::LockConflict(rival));
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err(Error::LockConflict(holder));
                }
                std::thread::sleep(pause.min(deadline - now));
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
        Ok(guard)
    }

    /// Writes a lock and keeps it refreshed until the guard is dropped.
    fn hold(backend: Arc<dyn Backend>, cipher: &Cipher, exclusive: bool) -> Result<LockGuard> {
        let id = Id::random();
        write_lock(backend.as_ref(), cipher, &id, &LockInfo::current(exclusive))?;
        HELD.lock().push((id, backend.clone()));
        let refresher = Arc::new(Refresher {
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let thread = {
            let refresher = refresher.clone();
            let backend = backend.clone();
            let cipher = cipher.clone();
            std::thread::Builder::new()
                .name("lock-refresh".into())
                .spawn(move || {
                    let mut stop = refresher.stop.lock();
                    while !*stop {
                        if refresher
                            .wake
                            .wait_for(&mut stop, REFRESH_INTERVAL)
                            .timed_out()
                        {
                            // A failed refresh is retried next round; the lock
                            // only goes stale after several missed rounds.
                            let _ = write_lock(
                                backend.as_ref(),
                                &cipher,
                                &id,
                                &LockInfo::current(exclusive),
                            );
                        }
                    }
                })
                .map_err(|e| Error::io("lock refresh thread", e))?
        };
        Ok(LockGuard {
            backend,
            id,
            refresher,
            thread: Some(thread),
        })
    }

    /// The lock file's id.
    pub fn id(&self) -> Id {
        self.id
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        *self.refresher.stop.lock() = true;
        self.refresher.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = self.backend.remove(FileKind::Lock, &self.id);
        HELD.lock().retain(|(id, _)| *id != self.id);
    }
}

/// Removes stale and unreadable locks (or all with `all`); returns how
/// many were removed. An unreadable lock protects nothing: no holder can
/// refresh it in a form anyone reads.
pub fn remove_locks(backend: &dyn Backend, cipher: &Cipher, all: bool) -> Result<usize> {
    let mut removed = 0;
    for (id, info) in list_locks(backend, cipher)? {
        let stale = info.as_ref().map_or(true, LockInfo::is_stale);
        if all || stale {
            backend.remove(FileKind::Lock, &id)?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::crypto::SecretKey;

    #[test]
    fn shared_locks_coexist_exclusive_does_not() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let cipher = Cipher::new(&SecretKey::random());
        let a = LockGuard::acquire(backend.clone(), &cipher, false).unwrap();
        let b = LockGuard::acquire(backend.clone(), &cipher, false).unwrap();
        assert!(matches!(
            LockGuard::acquire(backend.clone(), &cipher, true),
            Err(Error::LockConflict(_))
        ));
        drop(a);
        drop(b);
        assert!(backend.list(FileKind::Lock).unwrap().is_empty());
        let x = LockGuard::acquire(backend.clone(), &cipher, true).unwrap();
        assert!(matches!(
            LockGuard::acquire(backend.clone(), &cipher, false),
            Err(Error::LockConflict(_))
        ));
        // The refused shared lock, written before it looked, is gone again.
        assert_eq!(backend.list(FileKind::Lock).unwrap().len(), 1);
        drop(x);
        assert!(backend.list(FileKind::Lock).unwrap().is_empty());
    }

    #[test]
    fn a_shared_lock_upgrades_and_a_waiter_gets_the_lock_once_it_is_free() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let cipher = Cipher::new(&SecretKey::random());
        let shared = LockGuard::acquire(backend.clone(), &cipher, false).unwrap();
        let other = LockGuard::acquire(backend.clone(), &cipher, false).unwrap();
        let short = Duration::from_millis(300);
        assert!(matches!(
            LockGuard::acquire_waiting(backend.clone(), &cipher, true, short, Some(&shared)),
            Err(Error::LockConflict(_))
        ));
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(other);
        });
        let long = Duration::from_secs(10);
        let exclusive =
            LockGuard::acquire_waiting(backend.clone(), &cipher, true, long, Some(&shared))
                .unwrap();
        releaser.join().unwrap();
        drop(shared);
        assert_eq!(backend.list(FileKind::Lock).unwrap().len(), 1);
        drop(exclusive);
    }

    #[test]
    fn dead_process_and_old_locks_are_stale() {
        let backend = MemoryBackend::new();
        let cipher = Cipher::new(&SecretKey::random());
        let mut info = LockInfo::current(true);
        assert!(!info.is_stale());
        // A pid far beyond pid_max never exists.
        info.pid = 999_999_999;
        assert!(info.is_stale());
        let mut old = LockInfo::current(true);
        old.host = "elsewhere".into();
        old.time.secs -= STALE_AFTER.as_secs() as i64 + 1;
        assert!(old.is_stale());
        write_lock(&backend, &cipher, &Id::random(), &info).unwrap();
        write_lock(&backend, &cipher, &Id::random(), &old).unwrap();
        assert_eq!(find_conflict(&backend, &cipher, &[], true).unwrap(), None);
        assert_eq!(remove_locks(&backend, &cipher, false).unwrap(), 2);
    }
}
