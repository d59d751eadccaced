//! Opening, creating and reading a repository.
//!
//! [`Repository`] is an opened repository: keys unlocked, config read. It
//! reads and writes whole sealed files (snapshots, index files, locks).
//! [`IndexedRepository`] adds the loaded index, which everything that reads
//! or writes blobs needs; that operation only exists once the index is there.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::backend::{Access, Backend, FileKind, CONFIG_ID};
use crate::blob::{BlobDecoder, BlobType};
use crate::chunker::Chunker;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::id::{BlobId, Id, PackId, SnapshotId};
use crate::index::{BlobLocation, Index, IndexFile};
use crate::keys::{add_key, open_keys, KdfParams, KeyInfo, Keys};
use crate::lock::LockGuard;
use crate::repo_file::{self, RepoFile};
use crate::skipped::{is_damage, SkipLog};
use crate::snapshot::Snapshot;
use crate::staging_record::StagingRecord;
use crate::tree::Tree;

/// Why and when a snapshot was forgotten (sealed JSON in `forgotten/`,
/// named by the snapshot's id).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Forgotten {
    /// Format version of the mark.
    #[serde(default = "crate::repo_file::first_version")]
    pub version: u32,
    /// When.
    pub time: crate::tree::Timestamp,
    /// Why, for people.
    pub reason: String,
}

/// The index files of a repository as read.
pub struct IndexFiles {
    /// The files in force, decoded, with their ids.
    pub in_force: Vec<(Id, IndexFile)>,
    /// Every index file listed (also damaged and superseded ones): what a
    /// reload need not read again.
    pub listed: HashSet<Id>,
}

/// An opened repository.
pub struct Repository {
    backend: Arc<dyn Backend>,
    keys: Keys,
    key_info: Option<KeyInfo>,
    config: Config,
    chunker: Chunker,
    skipped: SkipLog,
}

impl Repository {
    /// Creates a new repository with one key for `password`.
    ///
    /// Fails with [`Error::RepositoryExists`] if there is one already.
    pub fn init(
        backend: Arc<dyn Backend>,
        password: &[u8],
        kdf: KdfParams,
        config: Config,
    ) -> Result<Repository> {
        if backend.is_repository()? {
            return Err(Error::RepositoryExists(backend.location()));
        }
        config.chunker.validate().map_err(Error::InvalidInput)?;
        kdf.validate()
            .map_err(|e| Error::InvalidInput(format!("invalid KDF parameters: {e}")))?;
        backend.create()?;
        let keys = Keys::generate();
        let key = add_key(backend.as_ref(), &keys, password, kdf)?;
        // The config is written last, exclusively: its presence is what
        // makes the folder a repository, so a failed init leaves nothing
        // that looks like one, and of two racing inits exactly one wins.
        let sealed = repo_file::seal(&keys.cipher, &CONFIG_ID, &config);
        if !backend.write_new(FileKind::Config, &CONFIG_ID, &sealed)? {
            backend.remove(FileKind::Key, &key)?;
            return Err(Error::RepositoryExists(backend.location()));
        }
        let chunker = Chunker::new(config.chunker, &keys.chunker_key);
        Ok(Repository {
            backend,
            keys,
            key_info: None,
            config,
            chunker,
            skipped: SkipLog::default(),
        })
    }

    /// Opens a repository with `password`.
    ///
    /// Errors: [`Error::RepositoryNotFound`] when there is none,
    /// [`Error::WrongPassword`] when no key file opens with the password,
    /// [`Error::Integrity`] when the config does not authenticate.
    pub fn open(backend: Arc<dyn Backend>, password: &[u8]) -> Result<Repository> {
        // The config is fetched while the key is found and derived: on a
        // remote store each is a round trip (or more) of its own.
        let (opened, sealed) = std::thread::scope(|scope| {
            let config = scope.spawn(|| backend.read(FileKind::Config, &CONFIG_ID));
            let opened = open_keys(backend.as_ref(), password);
            (
                opened,
                config.join().expect("the config read does not panic"),
            )
        });
        let sealed = match sealed {
            Err(Error::NotFound { .. }) => {
                return Err(Error::RepositoryNotFound(backend.location()))
            }
            other => other?,
        };
        let (keys, key_info) = opened?;
        let config: Config = repo_file::open(&keys.cipher, &CONFIG_ID, &sealed)?;
        let chunker = Chunker::new(config.chunker, &keys.chunker_key);
        Ok(Repository {
            backend,
            keys,
            key_info: Some(key_info),
            config,
            chunker,
            skipped: SkipLog::default(),
        })
    }

    /// The same repository reached through another backend (a wrapper
    /// around the original, such as [`crate::backend::DryRunBackend`]).
    pub fn with_backend(self, backend: Arc<dyn Backend>) -> Repository {
        Repository { backend, ..self }
    }

    /// The storage backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The derived keys (for the store's own operations only).
    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The key file that was used to open the repository (none right after
    /// `init`).
    pub fn key_info(&self) -> Option<&KeyInfo> {
        self.key_info.as_ref()
    }

    /// The repository config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The chunker configured for this repository.
    pub fn chunker(&self) -> &Chunker {
        &self.chunker
    }

    /// The damaged files this repository's readers went past.
    pub fn skipped(&self) -> &SkipLog {
        &self.skipped
    }

    /// Removes stale and unreadable locks (every lock with `all`);
    /// returns how many.
    pub fn remove_locks(&self, all: bool) -> Result<usize> {
        crate::lock::remove_locks(self.backend.as_ref(), &self.keys.cipher, all)
    }

    /// Reads the footer of pack `id` whose whole bytes are `data`.
    pub fn pack_footer(
        &self,
        id: &PackId,
        data: &[u8],
    ) -> Result<(BlobType, Vec<crate::pack::PackedBlob>)> {
        crate::pack::read_footer(&self.keys.cipher, id, data)
    }

    /// Opens `blob` of a pack of `blob_type` whose whole bytes are `data`
    /// (authentication, decompression, keyed id), to check it; says why
    /// it does not open.
    pub(crate) fn check_packed_blob(
        &self,
        decoder: &mut BlobDecoder,
        blob_type: BlobType,
        blob: &crate::pack::PackedBlob,
        data: &[u8],
    ) -> std::result::Result<(), String> {
        let sealed = data
            .get(blob.offset as usize..blob.end() as usize)
            .ok_or("lies beyond the end of its pack")?;
        let keys = &self.keys;
        decoder
            .open_ref(
                &keys.cipher,
                &keys.hasher,
                blob_type,
                &blob.id,
                sealed,
                blob.raw_length,
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Takes a shared or exclusive lock.
    pub fn lock(&self, exclusive: bool) -> Result<LockGuard> {
        LockGuard::acquire(self.backend.clone(), &self.keys.cipher, exclusive)
    }

    /// Like [`Repository::lock`], waiting up to `wait` for a conflicting
    /// lock to go; with `upgrading`, an exclusive lock that this process's
    /// shared lock does not hinder.
    pub fn lock_waiting(
        &self,
        exclusive: bool,
        wait: std::time::Duration,
        upgrading: Option<&LockGuard>,
    ) -> Result<LockGuard> {
        LockGuard::acquire_waiting(
            self.backend.clone(),
            &self.keys.cipher,
            exclusive,
            wait,
            upgrading,
        )
    }

    /// Seals `file` and stores it under the keyed hash of its plaintext.
    /// Returns the id.
    pub fn save<F: RepoFile>(&self, file: &F) -> Result<Id> {
        let plaintext = file.encode();
        let id = self.keys.hasher.hash(&plaintext);
        let sealed = repo_file::seal_encoded::<F>(&self.keys.cipher, &id, &plaintext);
        self.backend.write(F::KIND, &id, &sealed)?;
        Ok(id)
    }

    /// Seals `file` and stores it under the name `id`.
    fn save_as<F: RepoFile>(&self, id: &Id, file: &F) -> Result<()> {
        let sealed = repo_file::seal(&self.keys.cipher, id, file);
        self.backend.write(F::KIND, id, &sealed)
    }

    /// Reads, opens and decodes the file `id` of type `F`.
    pub fn load<F: RepoFile>(&self, id: &Id) -> Result<F> {
        repo_file::open(&self.keys.cipher, id, &self.backend.read(F::KIND, id)?)
    }

    /// Stores a snapshot record.
    pub fn save_snapshot(&self, snapshot: &Snapshot) -> Result<SnapshotId> {
        self.save(snapshot).map(SnapshotId)
    }

    /// Loads one snapshot record.
    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        self.load(&id.0)
    }

    /// Every snapshot that can be read and is not forgotten, oldest
    /// first. A damaged one is noted in [`Repository::skipped`] and left
    /// out; one removed since the listing is left out silently.
    pub fn snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let forgotten: HashSet<Id> = self.forgotten()?.into_iter().map(|(id, _)| id.0).collect();
        let mut out = Vec::new();
        for file in self.backend.list(FileKind::Snapshot)? {
            if forgotten.contains(&file.id) {
                continue;
            }
            let id = SnapshotId(file.id);
            match self.load_snapshot(&id) {
                Ok(snapshot) => out.push((id, snapshot)),
                Err(e) if is_damage(&e) => self.skipped.note(FileKind::Snapshot, file.id, &e),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// The forgotten snapshots with their marks. A mark that cannot be
    /// read is noted in [`Repository::skipped`] and counts as forgotten
    /// (hiding a snapshot is safer than showing one meant to be gone).
    pub fn forgotten(&self) -> Result<Vec<(SnapshotId, Forgotten)>> {
        let mut out = Vec::new();
        for file in self.backend.list(FileKind::Forgotten)? {
            match self.load::<Forgotten>(&file.id) {
                Ok(mark) => out.push((SnapshotId(file.id), mark)),
                Err(e) if is_damage(&e) => {
                    self.skipped.note(FileKind::Forgotten, file.id, &e);
                    out.push((
                        SnapshotId(file.id),
                        Forgotten {
                            version: 1,
                            time: crate::host::now(),
                            reason: format!("unreadable mark: {e}"),
                        },
                    ));
                }
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Marks snapshot `id` forgotten: it stays in the repository, hidden
    /// from every listing, until `recall` brings it back or `clean`
    /// removes it.
    pub fn forget(&self, id: &SnapshotId, reason: &str) -> Result<()> {
        let mark = Forgotten {
            version: 1,
            time: crate::host::now(),
            reason: reason.to_string(),
        };
        self.save_as(&id.0, &mark)
    }

    /// Brings forgotten snapshot `id` back.
    pub fn recall(&self, id: &SnapshotId) -> Result<()> {
        self.backend.remove(FileKind::Forgotten, &id.0)
    }

    /// Stores a staging record under a fresh name; returns it.
    pub fn save_staging_record(&self, record: &StagingRecord) -> Result<Id> {
        let id = Id::random();
        self.save_as(&id, record)?;
        Ok(id)
    }

    /// Every staging record, oldest first. Unlike other listings this
    /// fails on a damaged record: what it protects is unknown, and `clean`
    /// must not guess.
    pub fn staging_records(&self) -> Result<Vec<(Id, StagingRecord)>> {
        let mut out = Vec::new();
        for file in self.backend.list(FileKind::Staging)? {
            match self.load::<StagingRecord>(&file.id) {
                Ok(record) => out.push((file.id, record)),
                Err(Error::NotFound { .. }) => {}
                Err(e) if is_damage(&e) => {
                    return Err(Error::InvalidInput(format!(
                        "{e}; what it protects is unknown: remove it with `mapache stage forget-area {}` \
                         once no staging area needs it",
                        file.id.short()
                    )))
                }
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Removes staging record `id`.
    pub fn remove_staging_record(&self, id: &Id) -> Result<()> {
        self.backend.remove(FileKind::Staging, id)
    }

    /// Finds a snapshot by `latest`, a unique id prefix, or a full id.
    ///
    /// Errors: [`Error::NotFound`] when nothing matches,
    /// [`Error::Ambiguous`] when a prefix matches several.
    pub fn find_snapshot(&self, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        if spec == "latest" {
            return self.snapshots()?.pop().ok_or_else(|| Error::NotFound {
                what: "no snapshots in the repository, so there is no `latest`".into(),
            });
        }
        let spec_lower = spec.to_ascii_lowercase();
        if spec_lower.is_empty() || !spec_lower.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidInput(format!(
                "{spec:?} is not a snapshot id: use hex digits of an id, or `latest`"
            )));
        }
        let matches: Vec<Id> = self
            .backend
            .list(FileKind::Snapshot)?
            .into_iter()
            .map(|f| f.id)
            .filter(|id| id.to_hex().starts_with(&spec_lower))
            .collect();
        let first = match matches.as_slice() {
            [] => {
                return Err(Error::NotFound {
                    what: format!("snapshot {spec} not found"),
                })
            }
            [one] => *one,
            many => {
                let shown: Vec<String> = many.iter().take(10).map(Id::short).collect();
                return Err(Error::Ambiguous(format!(
                    "{spec} is ambiguous: it starts {} snapshots ({}{})",
                    many.len(),
                    shown.join(", "),
                    if many.len() > 10 { ", ..." } else { "" }
                )));
            }
        };
        let id = SnapshotId(first);
        Ok((id, self.load_snapshot(&id)?))
    }

    /// The size of every pack file, by pack.
    pub fn pack_sizes(&self) -> Result<HashMap<PackId, u64>> {
        Ok(self
            .backend
            .list(FileKind::Pack)?
            .into_iter()
            .map(|file| (PackId(file.id), file.size))
            .collect())
    }

    /// Reads and decodes one index file.
    pub fn load_index_file(&self, id: &Id) -> Result<IndexFile> {
        self.load(id)
    }

    /// Reads every index file that is in force: damaged ones are noted in
    /// [`Repository::skipped`] and left out, and so are those that another
    /// file supersedes (a rebuilt index whose old files were not removed
    /// yet). Also returns the ids of every file listed.
    pub fn read_index_files(&self) -> Result<IndexFiles> {
        let listed = self.backend.list(FileKind::Index)?;
        let mut files = Vec::with_capacity(listed.len());
        for file in &listed {
            match self.load_index_file(&file.id) {
                Ok(decoded) => files.push((file.id, decoded)),
                Err(e) if is_damage(&e) => self.skipped.note(FileKind::Index, file.id, &e),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let superseded: HashSet<Id> = files
            .iter()
            .flat_map(|(_, file)| file.supersedes.iter().copied())
            .collect();
        files.retain(|(id, _)| !superseded.contains(id));
        Ok(IndexFiles {
            in_force: files,
            listed: listed.iter().map(|f| f.id).collect(),
        })
    }

    /// Reads every index file and builds the in-memory index.
    pub fn load_index(self) -> Result<IndexedRepository> {
        let files = self.read_index_files()?;
        Ok(self.with_index_files(files))
    }

    /// The repository with the index made of `files`.
    pub fn with_index_files(self, files: IndexFiles) -> IndexedRepository {
        self.backend.keep_packs(
            &mut files
                .in_force
                .iter()
                .flat_map(|(_, file)| &file.packs)
                .filter(|pack| pack.blob_type == crate::blob::BlobType::Tree)
                .map(|pack| pack.id.0),
        );
        let index = Index::from_files(files.in_force.into_iter().map(|(_, file)| file));
        IndexedRepository {
            repo: Arc::new(self),
            index: RwLock::new(index),
            index_files: Mutex::new(files.listed),
        }
    }
}

/// A repository with its index loaded: blobs can be read and written.
pub struct IndexedRepository {
    repo: Arc<Repository>,
    index: RwLock<Index>,
    /// Index files already read, so that a reload reads only new ones.
    index_files: Mutex<HashSet<Id>>,
}

impl std::ops::Deref for IndexedRepository {
    type Target = Repository;
    fn deref(&self) -> &Repository {
        &self.repo
    }
}

impl IndexedRepository {
    /// The index, for reading.
    pub fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read()
    }

    /// The index, for adding packs.
    pub fn index_mut(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write()
    }

    /// Reads index files written since the index was loaded (by another
    /// process, say) and adds what they list.
    pub fn reload_index(&self) -> Result<()> {
        let mut known = self.index_files.lock();
        for file in self.backend.list(FileKind::Index)? {
            if known.contains(&file.id) {
                continue;
            }
            let decoded = match self.load_index_file(&file.id) {
                Ok(decoded) => decoded,
                Err(e) if is_damage(&e) => {
                    self.skipped.note(FileKind::Index, file.id, &e);
                    known.insert(file.id);
                    continue;
                }
                Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            let mut index = self.index.write();
            for pack in &decoded.packs {
                index.add_pack(pack.id, pack.blob_type, &pack.blobs);
            }
            known.insert(file.id);
        }
        Ok(())
    }

    /// Reads, authenticates and decompresses one blob.
    pub fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        self.read_blob_with(id, &mut BlobDecoder::new())
    }

    /// Like [`IndexedRepository::read_blob`] with a caller's decoder, whose
    /// zstd context is reused across calls.
    pub fn read_blob_with(&self, id: &BlobId, decoder: &mut BlobDecoder) -> Result<Vec<u8>> {
        let location = self.index.read().get(id).ok_or_else(|| Error::NotFound {
            what: format!("blob {id} not found in the index"),
        })?;
        let mut blob = None;
        let opened: std::result::Result<(), std::convert::Infallible> =
            self.open_run(&[(*id, location)], Access::Repeated, decoder, |_, data| {
                blob = Some(data.map(<[u8]>::to_vec));
                Ok(())
            });
        let Ok(()) = opened;
        blob.expect("a run of one blob opens one blob")
    }

    /// Reads a run of neighbouring blobs of one pack (sorted by offset, as
    /// [`crate::pack::ranged_reads`] groups them) with one request, opens
    /// each and hands its plaintext, or why it could not be had, to `each`
    /// (in the decoder's buffer, valid during the call). If the range cannot
    /// be read (a truncated pack, say), the blobs are read one by one, so
    /// that those before the damage still open. Stops at the first error
    /// `each` returns.
    pub fn open_run<E>(
        &self,
        run: &[(BlobId, BlobLocation)],
        access: Access,
        decoder: &mut BlobDecoder,
        mut each: impl FnMut(&BlobId, Result<&[u8]>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let (Some((_, first)), Some((_, last))) = (run.first(), run.last()) else {
            return Ok(());
        };
        // The decoder's read buffer, borrowed while the decoder works.
        let mut buffer = decoder.take_read_buffer();
        let whole = self.backend.read_range_into(
            FileKind::Pack,
            &first.pack.0,
            u64::from(first.offset),
            last.offset + last.length - first.offset,
            access,
            &mut buffer,
        );
        let at = match whole {
            Ok(at) => Some(at),
            // A single blob: the failed read is its answer.
            Err(e) if run.len() == 1 => {
                decoder.put_read_buffer(buffer);
                return each(&run[0].0, Err(e));
            }
            Err(_) => None,
        };
        let mut result = Ok(());
        for (id, location) in run {
            let sealed = match at {
                Some(at) => {
                    let start = at + (location.offset - first.offset) as usize;
                    Ok(std::borrow::Cow::Borrowed(
                        &buffer[start..start + location.length as usize],
                    ))
                }
                None => self
                    .backend
                    .read_range(
                        FileKind::Pack,
                        &location.pack.0,
                        u64::from(location.offset),
                        location.length,
                    )
                    .map(std::borrow::Cow::Owned),
            };
            let data = sealed.and_then(|sealed| {
                let (kind, raw_length) = (location.blob_type, location.raw_length);
                let keys = &self.keys;
                decoder.open_ref(&keys.cipher, &keys.hasher, kind, id, &sealed, raw_length)
            });
            result = each(id, data);
            if result.is_err() {
                break;
            }
        }
        decoder.put_read_buffer(buffer);
        result
    }

    /// Reads and decodes a tree.
    pub fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        let data = self.read_blob(id)?;
        Tree::decode(id, &data)
    }

    /// Whether the index holds blob `id` of type `blob_type`.
    pub fn has_blob(&self, id: &BlobId, blob_type: BlobType) -> bool {
        self.index
            .read()
            .get(id)
            .is_some_and(|loc| loc.blob_type == blob_type)
    }
}
