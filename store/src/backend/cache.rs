//! A local cache in front of a remote repository: index files, snapshots
//! and the packs of tree blobs, kept as stored (still sealed) in
//! `<cache dir>/<repository id>/`, so that listing and browsing snapshots
//! and the unchanged second snapshot do not fetch them again.
//!
//! Each entry ends with the BLAKE3 hash of what precedes it; an entry that
//! does not match is dropped and fetched again, never trusted (the seal is
//! checked above this layer too). Entries are used and written by
//! whole files; the cache is bounded, the least recently used entries going
//! first (a use touches the entry's time). Index files and snapshots are
//! named by their content and never change; an entry whose file left the
//! repository (after `clean`) is dropped when the listing shows it gone.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};

use parking_lot::{Mutex, RwLock};

use super::{Access, Backend, FileInfo, FileKind};
use crate::error::{Error, Result};
use crate::id::Id;

/// Bytes of the hash at the end of an entry.
const HASH_LEN: usize = 32;

/// The cache of one repository in front of its backend.
pub struct CacheBackend {
    inner: std::sync::Arc<dyn Backend>,
    dir: PathBuf,
    /// Packs worth keeping (those of tree blobs), as the index says.
    kept_packs: RwLock<HashSet<Id>>,
    /// Pack entries checked whole by this process, which ranges are then
    /// read from.
    checked: Mutex<HashSet<Id>>,
    /// Bytes in the cache, and its bound.
    used: Mutex<u64>,
    limit: u64,
    /// Listings taken ahead ([`Backend::list_ahead`]), each for one use.
    listed_ahead: Mutex<HashMap<FileKind, Vec<FileInfo>>>,
}

/// The kinds with entries (of packs, only those holding trees).
const CACHED: [FileKind; 3] = [FileKind::Index, FileKind::Snapshot, FileKind::Pack];

fn cached_kind(kind: FileKind) -> bool {
    CACHED.contains(&kind)
}

impl CacheBackend {
    /// A cache in `dir` (made if missing, mode 0700) of at most `limit`
    /// bytes in front of `inner`.
    pub fn new(
        inner: std::sync::Arc<dyn Backend>,
        dir: PathBuf,
        limit: u64,
    ) -> Result<CacheBackend> {
        for kind in CACHED {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir.join(kind.dir_name()))
                .map_err(|e| Error::io(&dir, e))?;
        }
        let used = folder_size(&dir);
        Ok(CacheBackend {
            inner,
            dir,
            kept_packs: RwLock::new(HashSet::new()),
            checked: Mutex::new(HashSet::new()),
            used: Mutex::new(used),
            listed_ahead: Mutex::new(HashMap::new()),
            limit,
        })
    }

    fn entry(&self, kind: FileKind, id: &Id) -> PathBuf {
        self.dir.join(kind.dir_name()).join(id.to_hex())
    }

    fn wanted(&self, kind: FileKind, id: &Id) -> bool {
        match kind {
            FileKind::Pack => self.kept_packs.read().contains(id),
            _ => cached_kind(kind),
        }
    }

    /// The entry's bytes if present and intact (and marks it used); a
    /// damaged entry is removed.
    fn lookup(&self, kind: FileKind, id: &Id) -> Option<Vec<u8>> {
        let path = self.entry(kind, id);
        let mut data = fs::read(&path).ok()?;
        let intact = data.len() >= HASH_LEN && {
            let (body, hash) = data.split_at(data.len() - HASH_LEN);
            blake3::hash(body).as_bytes() == hash
        };
        if !intact {
            self.drop_entry(&path);
            return None;
        }
        touch(&path);
        data.truncate(data.len() - HASH_LEN);
        Some(data)
    }

    /// Stores an entry; a cache that cannot be written is only slower.
    fn store(&self, kind: FileKind, id: &Id, data: &[u8]) {
        let path = self.entry(kind, id);
        let mut suffix = [0u8; 8];
        crate::crypto::fill_random(&mut suffix);
        let temp = path.with_file_name(format!(".tmp-{}", hex::encode(suffix)));
        let mut bytes = Vec::with_capacity(data.len() + HASH_LEN);
        bytes.extend_from_slice(data);
        bytes.extend_from_slice(blake3::hash(data).as_bytes());
        if fs::write(&temp, &bytes).is_err() || fs::rename(&temp, &path).is_err() {
            let _ = fs::remove_file(&temp);
            return;
        }
        let over = {
            let mut used = self.used.lock();
            *used += bytes.len() as u64;
            *used > self.limit
        };
        if over {
            self.evict();
        }
    }

    fn drop_entry(&self, path: &Path) {
        if let Ok(meta) = fs::metadata(path) {
            if fs::remove_file(path).is_ok() {
                let mut used = self.used.lock();
                *used = used.saturating_sub(meta.len());
            }
        }
    }

    /// Removes the least recently used entries until the cache is at
    /// nine tenths of its bound.
    fn evict(&self) {
        let mut entries = Vec::new();
        for kind in CACHED {
            let Ok(listing) = fs::read_dir(self.dir.join(kind.dir_name())) else {
                continue;
            };
            for entry in listing.flatten() {
                if let Ok(meta) = entry.metadata() {
                    let used = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                    entries.push((used, meta.len(), entry.path()));
                }
            }
        }
        entries.sort();
        let target = self.limit / 10 * 9;
        for (_, len, path) in entries {
            if *self.used.lock() <= target {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                let mut used = self.used.lock();
                *used = used.saturating_sub(len);
            }
        }
    }

    /// The whole file, from the cache or fetched (and kept).
    fn whole(&self, kind: FileKind, id: &Id) -> Result<Vec<u8>> {
        if let Some(data) = self.lookup(kind, id) {
            return Ok(data);
        }
        let data = self.inner.read(kind, id)?;
        self.store(kind, id, &data);
        Ok(data)
    }
}

fn touch(path: &Path) {
    if let Ok(file) = fs::File::options().write(true).open(path) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// Bytes of every file under `dir`.
pub fn folder_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => folder_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

impl Backend for CacheBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn is_repository(&self) -> Result<bool> {
        self.inner.is_repository()
    }

    fn create(&self) -> Result<()> {
        self.inner.create()
    }

    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>> {
        let ahead = self.listed_ahead.lock().remove(&kind);
        let listed = match ahead {
            Some(listed) => listed,
            None => self.inner.list(kind)?,
        };
        if cached_kind(kind) {
            // Entries of files that left the repository go too.
            let present: HashSet<Id> = listed.iter().map(|f| f.id).collect();
            if let Ok(entries) = fs::read_dir(self.dir.join(kind.dir_name())) {
                for entry in entries.flatten() {
                    let gone = entry
                        .file_name()
                        .to_str()
                        .and_then(|n| n.parse::<Id>().ok())
                        .is_some_and(|id| !present.contains(&id));
                    if gone {
                        self.drop_entry(&entry.path());
                    }
                }
            }
        }
        Ok(listed)
    }

    fn list_ids(&self, kind: FileKind) -> Result<Vec<Id>> {
        let ahead = self.listed_ahead.lock().remove(&kind);
        match ahead {
            Some(listed) => Ok(listed.into_iter().map(|file| file.id).collect()),
            None => self.inner.list_ids(kind),
        }
    }

    /// The remote store lists each kind side by side (a failure is left
    /// for the listing itself to report).
    fn list_ahead(&self, kinds: &[FileKind]) {
        let listed: Vec<(FileKind, Result<Vec<FileInfo>>)> = std::thread::scope(|scope| {
            let listings: Vec<_> = kinds
                .iter()
                .map(|&kind| (kind, scope.spawn(move || self.inner.list(kind))))
                .collect();
            listings
                .into_iter()
                .map(|(kind, listing)| (kind, listing.join().expect("a listing does not panic")))
                .collect()
        });
        let mut ahead = self.listed_ahead.lock();
        for (kind, listing) in listed {
            if let Ok(files) = listing {
                ahead.insert(kind, files);
            }
        }
    }

    fn read(&self, kind: FileKind, id: &Id) -> Result<Vec<u8>> {
        if self.wanted(kind, id) {
            return self.whole(kind, id);
        }
        self.inner.read(kind, id)
    }

    fn read_range(&self, kind: FileKind, id: &Id, offset: u64, len: u32) -> Result<Vec<u8>> {
        super::read_range_via_into(self, kind, id, offset, len, Access::Repeated)
    }

    fn read_range_into(
        &self,
        kind: FileKind,
        id: &Id,
        offset: u64,
        len: u32,
        access: Access,
        buf: &mut Vec<u8>,
    ) -> Result<usize> {
        if !self.wanted(kind, id) {
            return self
                .inner
                .read_range_into(kind, id, offset, len, access, buf);
        }
        let path = self.entry(kind, id);
        if !self.checked.lock().contains(id) {
            // Checked whole once per process (fetched if missing or
            // damaged), then served by ranges.
            self.whole(kind, id)?;
            self.checked.lock().insert(*id);
        }
        let end = offset + u64::from(len);
        let file = fs::File::open(&path);
        let fits = file
            .as_ref()
            .ok()
            .and_then(|f| f.metadata().ok())
            .is_some_and(|meta| end + HASH_LEN as u64 <= meta.len());
        match file {
            Ok(file) if fits => {
                buf.clear();
                buf.resize(len as usize, 0);
                match file.read_exact_at(buf, offset) {
                    Ok(()) => Ok(0),
                    Err(e) if e.kind() == ErrorKind::UnexpectedEof => self
                        .inner
                        .read_range_into(kind, id, offset, len, access, buf),
                    Err(e) => Err(Error::io(&path, e)),
                }
            }
            // Gone meanwhile (evicted), or a range beyond the end: the
            // repository answers.
            _ => self
                .inner
                .read_range_into(kind, id, offset, len, access, buf),
        }
    }

    fn write(&self, kind: FileKind, id: &Id, data: &[u8]) -> Result<()> {
        self.inner.write(kind, id, data)?;
        if matches!(kind, FileKind::Index | FileKind::Snapshot) {
            self.store(kind, id, data);
        }
        Ok(())
    }

    fn write_new(&self, kind: FileKind, id: &Id, data: &[u8]) -> Result<bool> {
        self.inner.write_new(kind, id, data)
    }

    fn remove_stale_temporaries(&self, older_than: std::time::Duration) -> Result<u64> {
        self.inner.remove_stale_temporaries(older_than)
    }

    fn remove(&self, kind: FileKind, id: &Id) -> Result<()> {
        self.inner.remove(kind, id)?;
        if cached_kind(kind) {
            self.drop_entry(&self.entry(kind, id));
        }
        Ok(())
    }

    fn keep_packs(&self, packs: &mut dyn Iterator<Item = Id>) {
        self.kept_packs.write().extend(packs);
    }

    fn parallel_reads(&self) -> usize {
        self.inner.parallel_reads()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::MemoryBackend;

    #[test]
    fn a_listing_taken_ahead_is_used_once() {
        let store = Arc::new(MemoryBackend::new());
        let dir = tempfile::tempdir().unwrap();
        let cache = CacheBackend::new(store.clone(), dir.path().join("cache"), 1 << 20).unwrap();
        let (first, second, pack) = (Id::random(), Id::random(), Id::random());
        store.write(FileKind::Snapshot, &first, b"first").unwrap();
        store.write(FileKind::Pack, &pack, b"pack").unwrap();
        cache.list_ahead(&[FileKind::Snapshot, FileKind::Pack]);
        store.write(FileKind::Snapshot, &second, b"second").unwrap();
        store.remove(FileKind::Pack, &pack).unwrap();
        // The listings taken ahead answer once...
        let ids = |files: Vec<FileInfo>| files.into_iter().map(|f| f.id).collect::<Vec<_>>();
        assert_eq!(ids(cache.list(FileKind::Snapshot).unwrap()), [first]);
        assert_eq!(cache.list_ids(FileKind::Pack).unwrap(), [pack]);
        // ...and every later listing asks the store again.
        let mut now = ids(cache.list(FileKind::Snapshot).unwrap());
        now.sort();
        let mut both = vec![first, second];
        both.sort();
        assert_eq!(now, both);
        assert!(cache.list_ids(FileKind::Pack).unwrap().is_empty());
        // Kinds not taken ahead were never held back.
        assert!(cache.list(FileKind::Index).unwrap().is_empty());
    }
}
