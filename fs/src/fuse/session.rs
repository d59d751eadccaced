//! Mounting: the session's settings, threads and kernel tuning, and the
//! handle that unmounts.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use fuser::{Config, INodeNo, MountOption, SessionACL};
use lru::LruCache;
use parking_lot::Mutex;

use super::{MapacheFs, READING_FILES};
use crate::blob_cache::BlobCache;
use crate::namespace::{Namespace, Stale};
use crate::page_push::PagePusher;

/// Mount settings.
#[derive(Clone, Debug, Default)]
pub struct MountOptions {
    /// Let other users (and root) use the mount.
    pub allow_other: bool,
    /// Blob cache size in bytes.
    pub cache_bytes: usize,
    /// Threads answering requests and reading ahead.
    pub threads: usize,
}

/// A mounted repository; unmounts when dropped.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
}

impl Mounted {
    /// Whether the session ended on its own (someone ran `umount`).
    pub fn is_finished(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    /// Unmounts (unless someone else did) and waits for the session to end.
    pub fn unmount(mut self) -> io::Result<()> {
        match self.session.take() {
            Some(session) if session.guard.is_finished() => session.join(),
            Some(session) => session.umount_and_join(),
            None => Ok(()),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}

/// Mounts the namespace at `mountpoint` and serves it on background
/// threads until the returned handle is dropped. Snapshots are read-only;
/// `staging/` (when the namespace has one) is writable.
pub fn mount(
    namespace: Arc<Namespace>,
    mountpoint: &Path,
    options: &MountOptions,
) -> io::Result<Mounted> {
    let threads = options.threads.max(1);
    let cache = BlobCache::new(
        namespace.repo().clone(),
        options.cache_bytes.max(64 << 20),
        threads,
    );
    let pusher = Arc::new(PagePusher::new(namespace.clone(), cache.clone()));
    let committing = namespace.clone();
    let notifier = Arc::new(OnceLock::new());
    let fs = MapacheFs {
        namespace,
        cache,
        pusher: pusher.clone(),
        allow_other: options.allow_other,
        notifier: notifier.clone(),
        handles: Mutex::new(HashMap::new()),
        next_handle: AtomicU64::new(1),
        opens_without_asking: false,
        reading: Mutex::new(LruCache::new(READING_FILES)),
        listings: Mutex::new(HashMap::new()),
    };
    let mut config = Config::default();
    config.mount_options = vec![
        // The process serving it, for whoever finds the mount point taken
        // (`mapache:PID` in /proc/self/mountinfo and `df`).
        MountOption::FSName(format!("mapache:{}", std::process::id())),
        MountOption::Subtype("mapache".into()),
        MountOption::DefaultPermissions,
        // Without it the kernel forgets a file's attributes after each
        // read (to refresh atime), and `tar`'s fstat after reading costs a
        // round trip per file. Access times are not kept anyway.
        MountOption::NoAtime,
    ];
    if options.allow_other {
        config.acl = SessionACL::All;
    }
    // Request threads mostly wait for the kernel or for a blob; more of
    // them than cores keeps one ready for each request in flight (reading
    // the bench snapshot with `tar`: 2.7 s with 2 threads, 2.3 s with 8).
    config.n_threads = Some((threads * 4).clamp(8, 64));
    let session = fuser::spawn_mount(fs, mountpoint, &config)?;
    let _ = notifier.set(session.notifier());
    // The kernel keeps `latest` for its TTL: after a commit it must ask
    // again, so that the new snapshot is `latest` when `commit` returns.
    let invalidate = session.notifier();
    committing.on_commit(Box::new(move || {
        let _ = invalidate.inval_entry(INodeNo(crate::namespace::ROOT), OsStr::new("latest"));
    }));
    // A `stage` command run for another process changes names the kernel
    // may have cached: it must ask again.
    let forget = session.notifier();
    committing.on_stale(Box::new(move |stale| {
        let _ = match stale {
            Stale::Name(folder, name) => {
                forget.inval_entry(INodeNo(*folder), OsStr::from_bytes(name))
            }
            // A negative offset: the attributes only, not the cached pages.
            Stale::Attributes(ino) => forget.inval_inode(INodeNo(*ino), -1, 0),
        };
    }));
    let store = session.notifier();
    pusher.connect(Box::new(move |ino, data| {
        store.store(INodeNo(ino), 0, data)
    }));
    raise_readahead(mountpoint);
    Ok(Mounted {
        session: Some(session),
    })
}

/// The kernel reads ahead only 128 KiB at a time on a FUSE mount (its
/// backing device's default, which the mount cannot raise at INIT); reading
/// a snapshot through the mount is then mostly round trips. As root the
/// device's `read_ahead_kb` can be raised after mounting: 1 MiB made
/// `tar cf - | wc -c` of the bench snapshot 6.8 s -> 5.0 s. Best effort:
/// without permission nothing changes.
fn raise_readahead(mountpoint: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(mountpoint) else {
        return;
    };
    let dev = meta.dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let _ = std::fs::write(
        format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb"),
        "1024",
    );
}
