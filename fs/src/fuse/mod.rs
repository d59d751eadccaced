//! The FUSE adapter: translates kernel requests into [`Namespace`] calls
//! and their results into replies. The only module that knows `fuser`:
//! `convert.rs` turns attributes and times into its types and back,
//! `session.rs` mounts and unmounts.

mod convert;
mod session;

pub use session::{mount, MountOptions, Mounted};

use convert::{errno, file_attr, file_type, meta_for, special_node, time_or_now};

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::num::NonZeroUsize;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use lru::LruCache;
use mapache_store::tree::NodeKind;
use parking_lot::Mutex;

use crate::acl;
use crate::blob_cache::BlobCache;
use crate::error::{FsError, FsResult};
use crate::file_reader::FileContent;
use crate::namespace::{Attr, DirEntry, Namespace, SetAttr, NAME_MAX};
use crate::page_push::PagePusher;
use crate::staging::{Entry as StagedEntry, RenameMode};

/// Entries inside snapshots never change: the kernel may cache them long.
const IMMUTABLE_TTL: Duration = Duration::from_secs(3600);
/// The virtual folders change as snapshots are made.
const VIRTUAL_TTL: Duration = Duration::from_secs(1);
/// Staged entries change only through this mount.
const STAGED_TTL: Duration = Duration::from_secs(1);
/// Bytes of a listed folder's first file blobs fetched ahead, at most:
/// enough to hide latency for small files without queueing in front of
/// the read-ahead of a large file being read.
const FOLDER_READ_AHEAD: u64 = 4 << 20;

/// Snapshot files read lately, by inode number (their blob offsets and
/// read-ahead state), since the kernel opens files without telling the
/// mount (see `open`).
const READING_FILES: NonZeroUsize = NonZeroUsize::new(256).unwrap();

/// An open file.
#[derive(Clone)]
enum Handle {
    /// A file of a snapshot, with its name for error messages.
    Snapshot(Arc<FileContent>, String),
    /// A file of the staging area; reads and writes go to `file`, which
    /// stays reachable after its last name is unlinked. `writer`: counted
    /// as an open writer until released (a handle of `create`).
    Staged {
        ino: u64,
        writer: bool,
        file: StagedEntry,
    },
}

struct MapacheFs {
    namespace: Arc<Namespace>,
    cache: Arc<BlobCache>,
    pusher: Arc<PagePusher>,
    /// Other users may enter the mount (`--allow-other`).
    allow_other: bool,
    /// Tells the kernel to forget cached attributes (set once mounted).
    notifier: Arc<OnceLock<fuser::Notifier>>,
    /// Handles of files made with `create` (and of files opened on kernels
    /// that send OPEN), by number.
    handles: Mutex<HashMap<u64, Handle>>,
    next_handle: AtomicU64,
    /// The kernel opens files itself, without OPEN and RELEASE (see `open`).
    opens_without_asking: bool,
    /// Snapshot files being read, by inode number.
    reading: Mutex<LruCache<u64, Handle>>,
    /// The listing of each open folder, by handle, made when it is read
    /// from the start: the kernel reads a folder in replies of a few dozen
    /// entries, and listing it again for each was quadratic (`ls -f` of
    /// 10,000 / 40,000 / 80,000 entries: 0.09 / 1.11 / 4.58 s).
    listings: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
}

/// A read failed: the reader gets the error (EIO for damage), the log says
/// which file, and the mount stays up.
fn read_failed(name: &str, offset: u64, error: &FsError, reply: ReplyData) {
    eprintln!("mapache mount: reading {name} at offset {offset}: {error}");
    reply.error(errno(error));
}

impl MapacheFs {
    fn ttl(&self, attr: &Attr) -> Duration {
        if self.namespace.is_staged(attr.ino) {
            // Every change to the staging area comes through this mount (it
            // holds the staging lock), so the kernel's view stays right;
            // hard-linked files are not cached: their link count changes
            // through any of their names.
            if attr.kind == NodeKind::File && attr.nlink > 1 {
                Duration::ZERO
            } else {
                STAGED_TTL
            }
        } else if self.namespace.is_virtual(attr.ino) {
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

    fn reply_empty(result: FsResult<()>, reply: ReplyEmpty) {
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// The open file behind `fh`.
    fn handle(&self, fh: FileHandle) -> Option<Handle> {
        self.handles.lock().get(&fh.0).cloned()
    }

    /// The open file a read, write or fsync is about: the one handle `fh`
    /// names, or else (the kernel opens files without telling the mount)
    /// file `ino` itself.
    fn open_file(&self, ino: u64, fh: FileHandle) -> FsResult<Handle> {
        if let Some(handle) = self.handle(fh) {
            return Ok(handle);
        }
        if self.namespace.is_staged(ino) {
            let file = self.namespace.open_staged(ino)?;
            return Ok(Handle::Staged {
                ino,
                writer: false,
                file,
            });
        }
        if let Some(handle) = self.reading.lock().get(&ino) {
            return Ok(handle.clone());
        }
        let handle = self.snapshot_handle(ino)?;
        if let Handle::Snapshot(content, _) = &handle {
            self.pusher.opened(ino, content.len());
        }
        self.reading.lock().put(ino, handle.clone());
        Ok(handle)
    }

    fn new_handle(&self, handle: Handle) -> u64 {
        let number = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(number, handle);
        number
    }

    /// The entries of folder `ino`, `.` and `..` first; from offset 0 on,
    /// the first blobs of its files are fetched ahead, since whoever lists
    /// a folder of a snapshot tends to read its files next.
    fn list(&self, ino: u64, offset: u64) -> FsResult<Vec<DirEntry>> {
        let entries = self.namespace.readdir(ino)?;
        if offset == 0 {
            self.cache
                .prefetch(&self.namespace.first_blobs(ino, FOLDER_READ_AHEAD));
        }
        let dot = |name: &[u8]| DirEntry {
            ino,
            kind: NodeKind::Dir,
            name: name.to_vec(),
        };
        Ok([dot(b"."), dot(b"..")].into_iter().chain(entries).collect())
    }

    /// Hands the entries of folder `ino`, open as `fh`, from `offset` on,
    /// each with the offset of the entry after it, to `add` until it says
    /// the reply is full (readdir and readdirplus differ only in what they
    /// add). Listed at offset 0 (opening or rewinding), kept until then.
    fn fill_listing(
        &self,
        ino: u64,
        fh: FileHandle,
        offset: u64,
        mut add: impl FnMut(u64, &DirEntry) -> bool,
    ) -> FsResult<()> {
        let kept = match offset {
            0 => None,
            _ => self.listings.lock().get(&fh.0).cloned(),
        };
        let entries = match kept {
            Some(entries) => entries,
            None => {
                let entries = Arc::new(self.list(ino, offset)?);
                self.listings.lock().insert(fh.0, entries.clone());
                entries
            }
        };
        for (i, entry) in entries.iter().enumerate().skip(offset as usize) {
            if add((i + 1) as u64, entry) {
                break;
            }
        }
        Ok(())
    }

    fn open_handle(&self, ino: u64, flags: OpenFlags) -> FsResult<Handle> {
        let writing = flags.acc_mode() != OpenAccMode::O_RDONLY;
        if self.namespace.is_staged(ino) {
            // Taken first: nothing can fail after the writer count is up.
            let file = self.namespace.open_staged(ino)?;
            if writing {
                self.namespace.writer(&file, true)?;
                if flags.0 & libc::O_TRUNC != 0 {
                    self.namespace.setattr(
                        ino,
                        SetAttr {
                            size: Some(0),
                            ..SetAttr::default()
                        },
                    )?;
                }
            }
            return Ok(Handle::Staged {
                ino,
                writer: writing,
                file,
            });
        }
        if writing {
            return Err(FsError::ReadOnly);
        }
        self.snapshot_handle(ino)
    }

    /// Snapshot file `ino`, its blob offsets looked up for reading.
    fn snapshot_handle(&self, ino: u64) -> FsResult<Handle> {
        let node = self.namespace.file(ino)?;
        let content = FileContent::new(self.namespace.repo(), &node)?;
        Ok(Handle::Snapshot(Arc::new(content), node.name_lossy()))
    }
}

impl Filesystem for MapacheFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Large requests: fewer round trips per blob. Values the kernel
        // refuses are clamped by it; both results are fine.
        let _ = config.set_max_readahead(1024 * 1024);
        let _ = config.set_max_write(1024 * 1024);
        // Listings carry attributes (see `readdirplus`); kernels without
        // it keep sending plain readdir.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        // Modes of new entries arrive before the umask: a folder's default
        // ACL replaces the umask (see `acl::inherit`).
        let _ = config.add_capabilities(InitFlags::FUSE_DONT_MASK);
        // Symlink targets never change under one inode number (snapshots
        // are immutable, a staged symlink replaced is a new inode, and
        // `latest` gets a new number per target): the kernel may keep them
        // instead of asking again for every path through `latest`.
        let _ = config.add_capabilities(InitFlags::FUSE_CACHE_SYMLINKS);
        self.opens_without_asking = config
            .capabilities()
            .contains(InitFlags::FUSE_NO_OPEN_SUPPORT);
        // With other users in the mount, the kernel must check their access
        // against ACLs (snapshots record them, staging keeps them), not
        // only the mode bits. It then asks each file's ACL once (GETXATTR),
        // a round trip per file the mount's own user does not pay.
        if self.allow_other && config.add_capabilities(InitFlags::FUSE_POSIX_ACL).is_err() {
            return Err(io::Error::other(
                "the kernel cannot enforce ACLs on FUSE mounts: --allow-other would expose files they protect",
            ));
        }
        Ok(())
    }

    fn destroy(&mut self) {
        // Unmounting: make everything staged durable.
        if let Err(e) = self.namespace.checkpoint() {
            eprintln!("mapache mount: saving the staging area at unmount: {e}");
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        // Sent when the kernel evicts the inode (with all its lookups), or
        // drops an entry it was handed: the namespace lets the entry go
        // once the kernel holds it no more.
        self.namespace.forget(ino.0, nlookup);
        self.reading.lock().pop(&ino.0);
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.reply_entry(self.namespace.lookup(parent.0, name.as_bytes()), reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        // A staged file unlinked while open still has attributes: the
        // namespace keeps it while the kernel holds the inode.
        match self.namespace.getattr(ino.0) {
            Ok(attr) => reply.attr(&self.ttl(&attr), &file_attr(&attr)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_or_now),
            mtime: mtime.map(time_or_now),
        };
        match self.namespace.setattr(ino.0, change) {
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

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let kind = match mode & libc::S_IFMT {
            libc::S_IFREG | 0 => {
                let result =
                    self.namespace
                        .create(parent.0, name.as_bytes(), meta_for(req, mode), umask);
                return self.reply_entry(result, reply);
            }
            libc::S_IFIFO => NodeKind::Fifo,
            libc::S_IFCHR => NodeKind::CharDevice,
            libc::S_IFBLK => NodeKind::BlockDevice,
            libc::S_IFSOCK => NodeKind::Socket,
            _ => return reply.error(Errno::EINVAL),
        };
        let mut node = special_node(name.as_bytes(), kind, &meta_for(req, mode));
        node.rdev = rdev as u64;
        self.reply_entry(
            self.namespace
                .make_special(parent.0, name.as_bytes(), node, umask),
            reply,
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let result = self
            .namespace
            .mkdir(parent.0, name.as_bytes(), meta_for(req, mode), umask);
        self.reply_entry(result, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::reply_empty(self.namespace.unlink(parent.0, name.as_bytes()), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::reply_empty(self.namespace.rmdir(parent.0, name.as_bytes()), reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let mut node = special_node(
            link_name.as_bytes(),
            NodeKind::Symlink,
            &meta_for(req, 0o777),
        );
        node.link_target = target.as_os_str().as_bytes().to_vec();
        self.reply_entry(
            self.namespace
                .make_special(parent.0, link_name.as_bytes(), node, 0),
            reply,
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mode = match flags.bits() {
            0 => RenameMode::Replace,
            libc::RENAME_NOREPLACE => RenameMode::NoReplace,
            libc::RENAME_EXCHANGE => RenameMode::Exchange,
            // Both at once, or RENAME_WHITEOUT (overlayfs only).
            _ => return reply.error(Errno::EINVAL),
        };
        let result = self.namespace.rename(
            parent.0,
            name.as_bytes(),
            newparent.0,
            newname.as_bytes(),
            mode,
        );
        Self::reply_empty(result, reply);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.reply_entry(
            self.namespace.link(ino.0, newparent.0, newname.as_bytes()),
            reply,
        );
    }

    /// Zero-message open: answered ENOSYS once, the kernel opens every
    /// file itself from then on, sending neither OPEN nor RELEASE (nor
    /// FLUSH, see `flush`); reads and writes then name the inode only. That
    /// is a round trip and two wake-ups less per file: `tar` of the bench's
    /// 10,000 small files 0.63 -> 0.30 s. The kernel then keeps the page
    /// cache of every file (all changes to staged files come through it).
    /// What it costs: opening a snapshot file for writing is no longer
    /// refused at `open` (truncating still is), its first write is.
    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.opens_without_asking {
            return reply.error(Errno::ENOSYS);
        }
        match self.open_handle(ino.0, flags) {
            Ok(handle) => {
                // Snapshot content never changes: let the page cache keep it.
                let keep = match &handle {
                    Handle::Snapshot(content, _) => {
                        self.pusher.opened(ino.0, content.len());
                        FopenFlags::FOPEN_KEEP_CACHE
                    }
                    Handle::Staged { .. } => FopenFlags::empty(),
                };
                let flags = keep | FopenFlags::FOPEN_NOFLUSH;
                reply.opened(FileHandle(self.new_handle(handle)), flags);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let result = self
            .namespace
            .create(parent.0, name.as_bytes(), meta_for(req, mode), umask)
            .and_then(|attr| Ok((self.namespace.open_staged(attr.ino)?, attr)))
            .and_then(|(file, attr)| {
                self.namespace.writer(&file, true)?;
                Ok((file, attr))
            });
        match result {
            Ok((file, attr)) => {
                let handle = self.new_handle(Handle::Staged {
                    ino: attr.ino,
                    writer: true,
                    file,
                });
                reply.created(
                    &self.ttl(&attr),
                    &file_attr(&attr),
                    Generation(0),
                    FileHandle(handle),
                    FopenFlags::FOPEN_NOFLUSH,
                );
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let handle = match self.open_file(ino.0, fh) {
            Ok(handle) => handle,
            Err(e) => return reply.error(errno(&e)),
        };
        thread_local! {
            // One reply buffer per thread: a fresh megabyte per request was
            // a fresh mapping whose pages all faulted in.
            static REPLY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        match &handle {
            Handle::Snapshot(content, name) => REPLY.with_borrow_mut(|out| {
                // The reply is sent only once the bytes are there.
                let mut reply = Some(reply);
                let sent = content.read_with(&self.cache, offset, size, out, |bytes| {
                    reply.take().expect("sent once").data(bytes)
                });
                if let (Err(e), Some(reply)) = (sent, reply) {
                    read_failed(name, offset, &e, reply);
                }
            }),
            Handle::Staged { ino, file, .. } => match self.namespace.read(file, offset, size) {
                Ok(data) => reply.data(&data),
                Err(e) => read_failed(&format!("staged file {ino}"), offset, &e, reply),
            },
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let (writer, file) = match self.open_file(ino.0, fh) {
            Ok(Handle::Staged { writer, file, .. }) => (writer, file),
            // A snapshot file opened for writing (see `open`).
            Ok(Handle::Snapshot(..)) => return reply.error(Errno::EROFS),
            Err(e) => return reply.error(errno(&e)),
        };
        let result = self.namespace.write(&file, offset, data);
        let result = result.and_then(|n| {
            if !writer {
                self.namespace.loose_write(&file)?;
            }
            Ok(n)
        });
        match result {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Nothing to do at close. Files opened by the kernel itself (see
    /// `open`) would send FLUSH at every `close`; ENOSYS stops that for
    /// good, as `FOPEN_NOFLUSH` does for handles of `create`.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.opens_without_asking {
            true => reply.error(Errno::ENOSYS),
            false => reply.ok(),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Snapshot files never change.
        if !self.namespace.is_staged(ino.0) {
            return reply.ok();
        }
        // Through the open file: one unlinked while open still has data to
        // make durable if another name of it remains.
        match self.open_file(ino.0, fh) {
            Ok(Handle::Staged { file, .. }) => {
                Self::reply_empty(self.namespace.fsync(&file), reply)
            }
            Ok(Handle::Snapshot(..)) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
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
        let handle = self.handles.lock().remove(&fh.0);
        if let Some(Handle::Staged {
            ino,
            writer: true,
            file,
        }) = handle
        {
            if let Err(e) = self.namespace.writer(&file, false) {
                eprintln!("mapache mount: closing staged file {ino}: {e}");
            }
        }
        reply.ok();
    }

    /// A handle of its own per open folder, under which its listing is
    /// kept between the replies it takes (see `fill_listing`).
    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let number = self.next_handle.fetch_add(1, Ordering::Relaxed);
        reply.opened(FileHandle(number), FopenFlags::empty());
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.listings.lock().remove(&fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listed = self.fill_listing(ino.0, fh, offset, |next, entry| {
            let (child, kind) = (INodeNo(entry.ino), file_type(entry.kind));
            reply.add(child, next, kind, OsStr::from_bytes(&entry.name))
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// A listing with every entry's attributes, which the kernel caches as
    /// if each had been looked up: `tar`, `cp -r`, `find` and `ls -l` then
    /// cost one request per folder instead of one more per entry.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let listed = self.fill_listing(ino.0, fh, offset, |next, entry| {
            // The kernel takes each entry but `.` and `..` as a lookup.
            let dots = entry.name == b"." || entry.name == b"..";
            let attr = match dots {
                true => self.namespace.getattr(entry.ino),
                false => self.namespace.listed(ino.0, &entry.name, entry.ino),
            };
            let attr = match attr {
                Ok(attr) => attr,
                // Gone since the listing (staging): leave it out.
                Err(_) => return false,
            };
            let name = OsStr::from_bytes(&entry.name);
            let (ttl, fuse_attr) = (self.ttl(&attr), file_attr(&attr));
            let full = reply.add(
                INodeNo(attr.ino),
                next,
                name,
                &ttl,
                &fuse_attr,
                Generation(0),
            );
            if full && !dots {
                // Not handed over after all: the next listing call will.
                self.namespace.not_listed(attr.ino);
            }
            full
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Report the space of the state folder, where staged data waits.
        match self
            .namespace
            .state_dir()
            .and_then(|dir| nix::sys::statvfs::statvfs(dir).ok())
        {
            Some(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                NAME_MAX as u32,
                s.fragment_size() as u32,
            ),
            None => reply.statfs(0, 0, 0, 0, 0, 4096, NAME_MAX as u32, 4096),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let name = name.as_bytes();
        let result = self.namespace.set_xattr(ino.0, name, Some(value.to_vec()));
        if result.is_ok() && name == acl::ACCESS {
            // The ACL set the mode bits; the kernel keeps the old ones
            // until told (offset -1: attributes only, no page locks).
            if let Some(notifier) = self.notifier.get() {
                let _ = notifier.inval_inode(ino, -1, 0);
            }
        }
        Self::reply_empty(result, reply);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::reply_empty(
            self.namespace.set_xattr(ino.0, name.as_bytes(), None),
            reply,
        );
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
