//! The FUSE adapter: translates kernel requests into [`Namespace`] calls
//! and their results into replies. The only file that knows `fuser`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
    SessionACL,
};
use mapache_store::tree::{NodeKind, Timestamp};
use parking_lot::Mutex;

use crate::blob_cache::BlobCache;
use crate::error::{FsError, FsResult};
use crate::file_reader::FileContent;
use crate::namespace::{Attr, Namespace};

/// Entries inside snapshots never change: the kernel may cache them long.
const IMMUTABLE_TTL: Duration = Duration::from_secs(3600);
/// The virtual folders change as snapshots are made.
const VIRTUAL_TTL: Duration = Duration::from_secs(1);

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

struct MapacheFs {
    namespace: Arc<Namespace>,
    cache: Arc<BlobCache>,
    open_files: Mutex<HashMap<u64, (Arc<FileContent>, String)>>,
    next_handle: AtomicU64,
}

fn to_system_time(t: Timestamp) -> SystemTime {
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::new(t.secs as u64, t.nanos)
    } else {
        // -1.5 s is secs = -2, nanos = 0.5e9.
        UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs())
            + Duration::from_nanos(t.nanos as u64)
    }
}

fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
        NodeKind::Socket => FileType::Socket,
    }
}

fn file_attr(attr: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: to_system_time(attr.atime),
        mtime: to_system_time(attr.mtime),
        ctime: to_system_time(attr.ctime),
        crtime: to_system_time(attr.mtime),
        kind: file_type(attr.kind),
        perm: attr.perm,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: attr.rdev as u32,
        blksize: 128 * 1024,
        flags: 0,
    }
}

fn errno(error: &FsError) -> Errno {
    Errno::from_i32(error.errno())
}

impl MapacheFs {
    fn ttl(&self, attr: &Attr) -> Duration {
        // Inode 1 and the folders around the snapshots are virtual; entries
        // of snapshot trees are everything with a non-zero-ish identity.
        if self.namespace.is_virtual(attr.ino) {
            VIRTUAL_TTL
        } else {
            IMMUTABLE_TTL
        }
    }

    fn reply_entry(&self, result: FsResult<Attr>, reply: ReplyEntry) {
        match result {
            Ok(attr) => reply.entry(&self.ttl(&attr), &file_attr(&attr), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open_file(&self, ino: u64) -> FsResult<u64> {
        let node = self.namespace.file(ino)?;
        let content = FileContent::new(self.namespace.repo(), &node)?;
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.open_files
            .lock()
            .insert(handle, (Arc::new(content), node.name_lossy()));
        Ok(handle)
    }
}

impl Filesystem for MapacheFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Large reads: fewer round trips per blob. Values the kernel refuses
        // are clamped by it; both results are fine.
        let _ = config.set_max_readahead(1024 * 1024);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.reply_entry(self.namespace.lookup(parent.0, name.as_bytes()), reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.namespace.getattr(ino.0) {
            Ok(attr) => reply.attr(&self.ttl(&attr), &file_attr(&attr)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.namespace.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(errno(&FsError::ReadOnly));
        }
        match self.open_file(ino.0) {
            // Snapshot content never changes: let the page cache keep it.
            Ok(handle) => reply.opened(FileHandle(handle), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some((content, name)) = self.open_files.lock().get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        match content.read(&self.cache, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => {
                // The mount stays up; the reader gets EIO and the log says why.
                eprintln!("mapache mount: reading {name} at offset {offset}: {e}");
                reply.error(errno(&e));
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.open_files.lock().remove(&fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.namespace.readdir(ino.0) {
            Ok(entries) => entries,
            Err(e) => return reply.error(errno(&e)),
        };
        let dots = [
            (ino.0, FileType::Directory, b".".as_slice()),
            (ino.0, FileType::Directory, b".."),
        ];
        let all = dots.into_iter().chain(
            entries
                .iter()
                .map(|e| (e.ino, file_type(e.kind), e.name.as_slice())),
        );
        for (i, (child, kind, name)) in all.enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(child),
                (i + 1) as u64,
                kind,
                OsStr::from_bytes(name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let value = match self.namespace.xattrs(ino.0) {
            Ok(xattrs) => xattrs
                .into_iter()
                .find(|(n, _)| n == name.as_bytes())
                .map(|(_, v)| v),
            Err(e) => return reply.error(errno(&e)),
        };
        match value {
            None => reply.error(errno(&FsError::NoAttribute)),
            Some(v) if size == 0 => reply.size(v.len() as u32),
            Some(v) if v.len() > size as usize => reply.error(errno(&FsError::Range)),
            Some(v) => reply.data(&v),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let names = match self.namespace.xattrs(ino.0) {
            Ok(xattrs) => xattrs.into_iter().fold(Vec::new(), |mut out, (n, _)| {
                out.extend_from_slice(&n);
                out.push(0);
                out
            }),
            Err(e) => return reply.error(errno(&e)),
        };
        if size == 0 {
            reply.size(names.len() as u32);
        } else if names.len() > size as usize {
            reply.error(errno(&FsError::Range));
        } else {
            reply.data(&names);
        }
    }
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

    /// Unmounts and waits for the session to end.
    pub fn unmount(mut self) -> io::Result<()> {
        match self.session.take() {
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

/// Mounts the namespace at `mountpoint` (read-only) and serves it on
/// background threads until the returned handle is dropped.
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
    let fs = MapacheFs {
        namespace,
        cache,
        open_files: Mutex::new(HashMap::new()),
        next_handle: AtomicU64::new(1),
    };
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("mapache".into()),
        MountOption::Subtype("mapache".into()),
        MountOption::RO,
        MountOption::DefaultPermissions,
    ];
    if options.allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(threads);
    let session = fuser::spawn_mount(fs, mountpoint, &config)?;
    Ok(Mounted {
        session: Some(session),
    })
}
