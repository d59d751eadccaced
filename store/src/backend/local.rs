//! A repository in a local directory.
//!
//! Layout: `config`, `keys/<id>`, `snapshots/<id>`, `index/<id>`,
//! `locks/<id>` and `packs/<first two hex digits>/<id>`. Files are written
//! to a temporary name in their final folder, fsynced, renamed into place,
//! and the folder is fsynced, so a crash leaves either the whole file or
//! none of it (plus, at worst, a `.tmp-*` file that listing ignores).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{direct_io, Access, Backend, FileInfo, FileKind, CONFIG_ID};
use crate::error::{Error, Result};
use crate::id::Id;

const TEMP_PREFIX: &str = ".tmp-";
/// Repository files are readable by their owner only, whatever the umask:
/// they are encrypted, but their number and sizes are still information.
const FILE_MODE: u32 = 0o600;
/// And so are its folders.
const DIR_MODE: u32 = 0o700;

/// A repository stored in a directory of the local filesystem.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    /// A backend rooted at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> LocalBackend {
        LocalBackend { root: root.into() }
    }

    /// The repository folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, kind: FileKind, id: &Id) -> PathBuf {
        self.root.join(super::relative_path(kind, id))
    }

    /// Reads a range into `buf`, with direct I/O if `direct` and the range
    /// is large; returns where in `buf` the range starts.
    fn read_range_with(
        &self,
        kind: FileKind,
        id: &Id,
        offset: u64,
        len: u32,
        buf: &mut Vec<u8>,
        direct: bool,
    ) -> Result<usize> {
        let path = self.path(kind, id);
        let file = File::open(&path).map_err(|e| match e.kind() {
            ErrorKind::NotFound => self.not_found(kind, id),
            _ => Error::io(&path, e),
        })?;
        let mut read = || {
            if direct {
                if let Some(start) = direct_io::read_range(&file, offset, len as usize, buf)? {
                    return Ok(start);
                }
            }
            // Growing zero-fills only the new part; a reused buffer costs nothing.
            buf.resize(len as usize, 0);
            file.read_exact_at(buf, offset).map(|()| 0)
        };
        read().map_err(|e| match e.kind() {
            ErrorKind::UnexpectedEof => {
                Error::integrity(kind, id, "file is shorter than its index says (truncated)")
            }
            _ => Error::io(&path, e),
        })
    }

    fn not_found(&self, kind: FileKind, id: &Id) -> Error {
        if kind == FileKind::Config {
            Error::RepositoryNotFound(self.root.display().to_string())
        } else {
            Error::NotFound {
                what: format!("{kind} {id} not found"),
            }
        }
    }
}

impl LocalBackend {
    /// Lists the files of `kind`, with sizes when `sizes`.
    fn list_with(&self, kind: FileKind, sizes: bool) -> Result<Vec<FileInfo>> {
        let mut out = Vec::new();
        match kind {
            FileKind::Config => {
                if let Ok(meta) = fs::metadata(self.path(kind, &CONFIG_ID)) {
                    out.push(FileInfo {
                        id: CONFIG_ID,
                        size: meta.len(),
                    });
                }
            }
            FileKind::Pack => {
                for folder in super::pack_folders() {
                    list_ids(&self.root.join(folder), &mut out, sizes)?;
                }
            }
            // (A missing repository is still an error, from list_ids.)
            _ if super::added_later(kind)
                && self.root.is_dir()
                && !self.root.join(kind.dir_name()).exists() => {}
            _ => list_ids(&self.root.join(kind.dir_name()), &mut out, sizes)?,
        }
        Ok(out)
    }

    /// Writes to a temporary name, fsyncs, and moves it into place: by
    /// rename, or with `exclusive` by a hard link, which fails if the name
    /// exists (then nothing is written and the answer is false).
    fn put(&self, kind: FileKind, id: &Id, data: &[u8], exclusive: bool) -> Result<bool> {
        let path = self.path(kind, id);
        let dir = path.parent().expect("repository paths have a parent");
        if super::added_later(kind) && !dir.exists() {
            make_dir(dir)?;
        }
        let mut suffix = [0u8; 8];
        crate::crypto::fill_random(&mut suffix);
        let temp = dir.join(format!("{TEMP_PREFIX}{}", hex::encode(suffix)));
        let result = (|| {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&temp)?;
            direct_io::write_all(&file, data)?;
            file.sync_all()?;
            if exclusive {
                let linked = fs::hard_link(&temp, &path);
                fs::remove_file(&temp)?;
                match linked {
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
                    other => other.map(|()| true),
                }
            } else {
                fs::rename(&temp, &path).map(|()| true)
            }
        })();
        match result {
            Ok(written) => {
                sync_dir(dir)?;
                Ok(written)
            }
            Err(e) => {
                let _ = fs::remove_file(&temp);
                Err(Error::io(&path, e))
            }
        }
    }
}

/// Makes folder `dir` (and missing parents) private; one that exists is
/// left as it is.
fn make_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| Error::io(dir, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// The files of `dir` named by an id, with their sizes when `sizes` (one
/// `stat` each, which a caller that needs only the ids is spared).
fn list_ids(dir: &Path, out: &mut Vec<FileInfo>, sizes: bool) -> Result<()> {
    // Every folder exists from `init` on: a missing one means the
    // repository is gone (unmounted, moved), not that it is empty.
    let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.parse::<Id>().ok()) else {
            continue; // temporary files and strays
        };
        let size = if sizes {
            entry
                .metadata()
                .map_err(|e| Error::io(entry.path(), e))?
                .len()
        } else {
            0
        };
        out.push(FileInfo { id, size });
    }
    Ok(())
}

impl Backend for LocalBackend {
    fn remove_stale_temporaries(&self, older_than: std::time::Duration) -> Result<u64> {
        let mut removed = 0;
        for folder in super::all_folders() {
            // A folder a repository made before it existed may be missing.
            let Ok(entries) = fs::read_dir(self.root.join(folder)) else {
                continue;
            };
            for entry in entries.flatten() {
                if !entry
                    .file_name()
                    .as_encoded_bytes()
                    .starts_with(TEMP_PREFIX.as_bytes())
                {
                    continue;
                }
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                let age = meta.modified().ok().and_then(|at| at.elapsed().ok());
                if age.is_some_and(|age| age >= older_than) && fs::remove_file(entry.path()).is_ok()
                {
                    removed += meta.len();
                }
            }
        }
        Ok(removed)
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn is_repository(&self) -> Result<bool> {
        Ok(self.path(FileKind::Config, &CONFIG_ID).is_file())
    }

    fn create(&self) -> Result<()> {
        match fs::read_dir(&self.root) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(Error::InvalidInput(format!(
                        "{} is not empty: a repository needs a folder of its own",
                        self.root.display()
                    )));
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => make_dir(&self.root)?,
            Err(e) => return Err(Error::io(&self.root, e)),
        }
        for kind in super::FOLDERS {
            make_dir(&self.root.join(kind.dir_name()))?;
        }
        // All 256 pack folders up front: a write then never has to create one.
        for folder in super::pack_folders() {
            make_dir(&self.root.join(folder))?;
        }
        sync_dir(&self.root.join("packs"))?;
        sync_dir(&self.root)
    }

    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>> {
        self.list_with(kind, true)
    }

    fn list_ids(&self, kind: FileKind) -> Result<Vec<Id>> {
        Ok(self
            .list_with(kind, false)?
            .into_iter()
            .map(|f| f.id)
            .collect())
    }

    fn read(&self, kind: FileKind, id: &Id) -> Result<Vec<u8>> {
        let path = self.path(kind, id);
        fs::read(&path).map_err(|e| match e.kind() {
            ErrorKind::NotFound => self.not_found(kind, id),
            _ => Error::io(path, e),
        })
    }

    fn read_range(&self, kind: FileKind, id: &Id, offset: u64, len: u32) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_range_with(kind, id, offset, len, &mut buf, false)?;
        Ok(buf)
    }

    /// Large ranges read once go around the page cache.
    fn read_range_into(
        &self,
        kind: FileKind,
        id: &Id,
        offset: u64,
        len: u32,
        access: Access,
        buf: &mut Vec<u8>,
    ) -> Result<usize> {
        self.read_range_with(kind, id, offset, len, buf, access == Access::Once)
    }

    fn write(&self, kind: FileKind, id: &Id, data: &[u8]) -> Result<()> {
        self.put(kind, id, data, false).map(|_| ())
    }

    fn write_new(&self, kind: FileKind, id: &Id, data: &[u8]) -> Result<bool> {
        self.put(kind, id, data, true)
    }

    fn remove(&self, kind: FileKind, id: &Id) -> Result<()> {
        let path = self.path(kind, id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temporaries_go_and_fresh_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        backend.create().unwrap();
        let stale = dir.path().join("packs/ab/.tmp-0011223344556677");
        let fresh = dir.path().join("snapshots/.tmp-8899aabbccddeeff");
        fs::write(&stale, vec![0u8; 1000]).unwrap();
        fs::write(&fresh, b"being written").unwrap();
        let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(day_ago)
            .unwrap();
        let id = Id::hash_of(b"x");
        backend.write(FileKind::Snapshot, &id, b"x").unwrap();
        let hour = std::time::Duration::from_secs(3600);
        assert_eq!(backend.remove_stale_temporaries(hour).unwrap(), 1000);
        assert!(!stale.exists());
        assert!(fresh.exists());
        assert_eq!(backend.read(FileKind::Snapshot, &id).unwrap(), b"x");
    }

    #[test]
    fn write_read_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path().join("repo"));
        backend.create().unwrap();
        let id = Id::random();
        backend.write(FileKind::Pack, &id, b"0123456789").unwrap();
        assert_eq!(backend.read(FileKind::Pack, &id).unwrap(), b"0123456789");
        assert_eq!(
            backend.read_range(FileKind::Pack, &id, 2, 3).unwrap(),
            b"234"
        );
        assert!(matches!(
            backend.read_range(FileKind::Pack, &id, 8, 3),
            Err(Error::Integrity { .. })
        ));
        let listed = backend.list(FileKind::Pack).unwrap();
        assert_eq!(listed, vec![FileInfo { id, size: 10 }]);
        assert_eq!(backend.list_ids(FileKind::Pack).unwrap(), vec![id]);
        backend.remove(FileKind::Pack, &id).unwrap();
        assert!(matches!(
            backend.read(FileKind::Pack, &id),
            Err(Error::NotFound { .. })
        ));
        assert!(!backend.is_repository().unwrap());
    }
}
