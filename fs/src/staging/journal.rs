//! The staging journal: an append-only log of every change to the staging
//! view, replayed over the base snapshot to rebuild it after an unmount, a
//! crash or `kill -9`.
//!
//! ```text
//! journal = record*
//! record  = length (u32 LE) || checksum (first 8 bytes of BLAKE3 of payload) || payload
//! payload = postcard(Op)
//! ```
//!
//! A torn record at the end (the process died while appending) fails its
//! length or checksum and ends the replay; everything before it stands.
//! Records are written with one `write` each; the file is fsynced when the
//! user asks for durability (fsync, commit, unmount). Killing the process
//! loses nothing the kernel already has, so `kill -9` loses nothing.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use mapache_store::tree::{Node, Timestamp};
use mapache_store::{BlobId, SnapshotId};
use serde::{Deserialize, Serialize};

use crate::error::{FsError, FsResult};

/// Metadata that `chmod`, `chown` and `utimes` change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Access time.
    pub atime: Timestamp,
    /// Modification time.
    pub mtime: Timestamp,
}

impl Meta {
    /// The metadata `node` has now.
    pub fn of_node(node: &Node) -> Meta {
        Meta {
            mode: node.mode,
            uid: node.uid,
            gid: node.gid,
            atime: node.atime,
            mtime: node.mtime,
        }
    }
}

/// One change. Variant numbers are part of the journal format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Op {
    /// The staging starts over from this snapshot (or empty).
    Base(Option<SnapshotId>),
    /// A folder was made.
    Mkdir { path: Vec<u8>, meta: Meta },
    /// An empty regular file was made; `fid` names it from now on, `inode`
    /// is its random identity (recorded for hard links).
    Create {
        path: Vec<u8>,
        fid: u64,
        inode: u64,
        meta: Meta,
    },
    /// A symlink, fifo, device or socket was made (the node carries it all).
    Special { path: Vec<u8>, node: Box<Node> },
    /// An entry (and everything below it) was removed.
    Remove { path: Vec<u8> },
    /// An entry was moved, replacing what was at `to`.
    Rename { from: Vec<u8>, to: Vec<u8> },
    /// `to` became another name of the file at `from`; a file that had no
    /// other name before gets the random identity `inode`.
    Link {
        from: Vec<u8>,
        to: Vec<u8>,
        inode: u64,
    },
    /// Owner, mode or times changed.
    SetMeta { path: Vec<u8>, meta: Meta },
    /// An extended attribute was set (`value: Some`) or removed.
    Xattr {
        path: Vec<u8>,
        name: Vec<u8>,
        value: Option<Vec<u8>>,
    },
    /// The file at `path` got id `fid` and its data now lives in local file
    /// `local` of the state folder, newer than its stored content.
    Local { path: Vec<u8>, fid: u64, local: u64 },
    /// File `fid`'s content is stored: these blobs, this size.
    Content {
        fid: u64,
        content: Vec<BlobId>,
        size: u64,
    },
    /// Bytes written into small new file `fid`, whose data lives in memory
    /// and in the journal itself until it is uploaded (no local file: many
    /// small files would each cost a file creation and deletion).
    Write {
        fid: u64,
        offset: u64,
        data: Vec<u8>,
    },
    /// Small new file `fid` was cut or extended to `size`.
    Resize { fid: u64, size: u64 },
    /// The entries at `a` and `b` swapped places (`RENAME_EXCHANGE`).
    Exchange { a: Vec<u8>, b: Vec<u8> },
}

/// The open journal file.
pub(crate) struct Journal {
    path: PathBuf,
    file: File,
}

fn checksum(payload: &[u8]) -> [u8; 8] {
    blake3::hash(payload).as_bytes()[..8]
        .try_into()
        .expect("8 bytes")
}

impl Journal {
    /// Opens (or creates) the journal at `path` and returns it with the
    /// operations it holds.
    pub fn open(path: &Path) -> FsResult<(Journal, Vec<Op>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| io(path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io(path, e))?;
        let mut ops = Vec::new();
        let mut pos = 0;
        while pos + 12 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
            let Some(payload) = bytes.get(pos + 12..pos + 12 + len) else {
                break;
            };
            if checksum(payload) != bytes[pos + 4..pos + 12] {
                break;
            }
            match postcard::from_bytes::<Op>(payload) {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
            pos += 12 + len;
        }
        if pos < bytes.len() {
            // Drop the torn tail so that new records follow valid ones.
            file.set_len(pos as u64).map_err(|e| io(path, e))?;
        }
        Ok((
            Journal {
                path: path.to_path_buf(),
                file,
            },
            ops,
        ))
    }

    /// Appends one operation (not yet fsynced).
    pub fn append(&mut self, op: &Op) -> FsResult<()> {
        let payload = postcard::to_stdvec(op).expect("serializable");
        let mut record = Vec::with_capacity(12 + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&checksum(&payload));
        record.extend_from_slice(&payload);
        self.file.write_all(&record).map_err(|e| io(&self.path, e))
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> FsResult<()> {
        self.file.sync_data().map_err(|e| io(&self.path, e))
    }

    /// Replaces the journal with one holding only `ops` (after a commit),
    /// atomically: a crash leaves the old or the new journal.
    pub fn rewrite(&mut self, ops: &[Op]) -> FsResult<()> {
        let temp = self.path.with_extension("new");
        {
            let mut fresh = File::create(&temp).map_err(|e| io(&temp, e))?;
            let mut journal = Journal {
                path: temp.clone(),
                file: fresh.try_clone().map_err(|e| io(&temp, e))?,
            };
            for op in ops {
                journal.append(op)?;
            }
            fresh.flush().map_err(|e| io(&temp, e))?;
            fresh.sync_all().map_err(|e| io(&temp, e))?;
        }
        std::fs::rename(&temp, &self.path).map_err(|e| io(&self.path, e))?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io(dir, e))?;
        }
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| io(&self.path, e))?;
        Ok(())
    }
}

fn io(path: &Path, e: std::io::Error) -> FsError {
    FsError::Store(mapache_store::Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_stops_at_a_torn_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let ops = vec![
            Op::Base(None),
            Op::Remove {
                path: b"a/b".to_vec(),
            },
            Op::Content {
                fid: 7,
                content: vec![BlobId::default()],
                size: 3,
            },
        ];
        {
            let (mut journal, replayed) = Journal::open(&path).unwrap();
            assert!(replayed.is_empty());
            for op in &ops {
                journal.append(op).unwrap();
            }
        }
        let (_, replayed) = Journal::open(&path).unwrap();
        assert_eq!(replayed, ops);
        // Tear the last record.
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let (mut journal, replayed) = Journal::open(&path).unwrap();
        assert_eq!(replayed, ops[..2]);
        journal
            .append(&Op::Remove {
                path: b"c".to_vec(),
            })
            .unwrap();
        drop(journal);
        let (mut journal, replayed) = Journal::open(&path).unwrap();
        assert_eq!(replayed.len(), 3);
        journal.rewrite(&[Op::Base(None)]).unwrap();
        drop(journal);
        assert_eq!(Journal::open(&path).unwrap().1, vec![Op::Base(None)]);
    }
}
