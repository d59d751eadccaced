//! The staging journal: an append-only log of every change to the staging
//! view, replayed over the base snapshot to rebuild it after an unmount, a
//! crash or `kill -9`.
//!
//! ```text
//! journal = "mapache journal\n" || version (u32 LE = 2) || repository id (32) || record*
//! record  = length (u32 LE) || checksum (first 8 bytes of BLAKE3 of length || payload) || payload
//! payload = postcard(Op)
//! ```
//!
//! A torn record at the end (the process died while appending) fails its
//! length or checksum and ends the replay; everything before it stands. A
//! bad record that intact records follow is damage, not a crash: opening
//! fails and says so, instead of silently dropping the later changes.
//! Version 1 journals (no header, checksum of the payload only) are read
//! and rewritten as version 2.
//! Records are written with one `write` each; the file is fsynced when the
//! user asks for durability (fsync, commit, unmount). Killing the process
//! loses nothing the kernel already has, so `kill -9` loses nothing.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use mapache_store::tree::{Node, Timestamp};
use mapache_store::{BlobId, Id, SnapshotId};
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
    /// The repository it belongs to (in its header).
    repository: Id,
}

/// First bytes of a journal since version 2 (version 1 had no header).
const MAGIC: &[u8; 16] = b"mapache journal\n";
/// The journal format this build writes.
const VERSION: u32 = 2;
/// Magic, version, repository id.
const HEADER_LEN: usize = 16 + 4 + 32;
/// Length and checksum before each record's payload.
const RECORD_HEAD: usize = 12;

/// How a record's checksum is computed: version 2 covers the length too,
/// so that a damaged length is caught like a damaged payload.
#[derive(Clone, Copy)]
enum Checksum {
    PayloadOnly,
    LengthAndPayload,
}

impl Checksum {
    fn of(self, length: &[u8], payload: &[u8]) -> [u8; 8] {
        let mut hasher = blake3::Hasher::new();
        if let Checksum::LengthAndPayload = self {
            hasher.update(length);
        }
        hasher.update(payload);
        hasher.finalize().as_bytes()[..8]
            .try_into()
            .expect("8 bytes")
    }
}

/// The record starting at `pos`, if a whole, intact one does.
fn record_at(bytes: &[u8], pos: usize, checksum: Checksum) -> Option<(Op, usize)> {
    let head = bytes.get(pos..pos + RECORD_HEAD)?;
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    let payload = bytes.get(pos + RECORD_HEAD..(pos + RECORD_HEAD).checked_add(len)?)?;
    if checksum.of(&head[..4], payload) != head[4..] {
        return None;
    }
    let op = postcard::from_bytes::<Op>(payload).ok()?;
    Some((op, pos + RECORD_HEAD + len))
}

/// Where replaying stopped.
enum Replayed {
    /// At the end, or at a torn last record (cut off at `end`).
    Whole { ops: Vec<Op>, end: usize },
    /// At a damaged record at `at` that intact records follow.
    Damaged { ops: Vec<Op>, at: usize },
}

/// Replays the records from `start`. A bad record with nothing intact
/// after it is what a crash while appending leaves, and is cut off; one
/// followed by an intact record is damage, which must not silently drop
/// the changes after it.
fn replay(bytes: &[u8], start: usize, checksum: Checksum) -> Replayed {
    let mut ops = Vec::new();
    let mut pos = start;
    while pos < bytes.len() {
        match record_at(bytes, pos, checksum) {
            Some((op, next)) => {
                ops.push(op);
                pos = next;
            }
            None => {
                let later = (pos + 1..bytes.len()).any(|p| record_at(bytes, p, checksum).is_some());
                if later {
                    return Replayed::Damaged { ops, at: pos };
                }
                break;
            }
        }
    }
    Replayed::Whole { ops, end: pos }
}

fn encode_record(op: &Op) -> Vec<u8> {
    let payload = postcard::to_stdvec(op).expect("serializable");
    let length = (payload.len() as u32).to_le_bytes();
    let mut record = Vec::with_capacity(RECORD_HEAD + payload.len());
    record.extend_from_slice(&length);
    record.extend_from_slice(&Checksum::LengthAndPayload.of(&length, &payload));
    record.extend_from_slice(&payload);
    record
}

fn header(repository: &Id) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(repository.as_bytes());
    out
}

/// The journal's records and how to read them: past a version 2 header
/// (checked against `repository`), or a version 1 journal from its start.
fn parse(path: &Path, bytes: &[u8], repository: &Id) -> FsResult<(Replayed, bool)> {
    if !bytes.starts_with(MAGIC) {
        // Version 1: no header; rewritten as version 2 once read.
        return Ok((replay(bytes, 0, Checksum::PayloadOnly), true));
    }
    let fail =
        |what: String| FsError::Journal(format!("staging journal {}: {what}", path.display()));
    let head = bytes
        .get(..HEADER_LEN)
        .ok_or_else(|| fail("its header is cut short".into()))?;
    let version = u32::from_le_bytes(head[16..20].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(fail(format!(
            "format version {version} is not known to this build (it knows 1 and {VERSION})"
        )));
    }
    let owner = Id(head[20..].try_into().expect("32 bytes"));
    if owner != *repository {
        return Err(fail(format!(
            "it belongs to repository {}, not to {}",
            owner.short(),
            repository.short()
        )));
    }
    Ok((replay(bytes, HEADER_LEN, Checksum::LengthAndPayload), false))
}

impl Journal {
    /// Opens (or creates) the journal at `path` for `repository` and
    /// returns it with the operations it holds. A damaged record followed
    /// by intact ones is an error naming the journal and what to do.
    pub fn open(path: &Path, repository: &Id) -> FsResult<(Journal, Vec<Op>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| io(path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io(path, e))?;
        let mut journal = Journal {
            path: path.to_path_buf(),
            file,
            repository: *repository,
        };
        if bytes.is_empty() {
            journal.rewrite(&[])?;
            return Ok((journal, Vec::new()));
        }
        match parse(path, &bytes, repository)? {
            (Replayed::Damaged { ops, at }, _) => Err(FsError::Journal(format!(
                "staging journal {} is damaged at byte {at}, and intact changes follow it; \
                 nothing was changed: `mapache stage recover` keeps the {} changes before the damage \
                 (a copy of the damaged journal is kept beside it)",
                path.display(),
                ops.len()
            ))),
            (Replayed::Whole { ops, end }, upgrade) => {
                if upgrade {
                    journal.rewrite(&ops)?;
                } else if end < bytes.len() {
                    // Drop the torn tail so that new records follow valid ones.
                    journal.file.set_len(end as u64).map_err(|e| io(path, e))?;
                }
                Ok((journal, ops))
            }
        }
    }

    /// Keeps the records of the journal at `path` before its first damaged
    /// one and drops the rest, after copying it to `journal.damaged-<time>`
    /// beside it. Returns how many records were kept and dropped bytes.
    pub fn recover(path: &Path, repository: &Id) -> FsResult<(usize, usize)> {
        let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
        let (ops, end) = match parse(path, &bytes, repository)?.0 {
            Replayed::Whole { ops, end } => (ops, end),
            Replayed::Damaged { ops, at } => (ops, at),
        };
        let stamp = mapache_store::now().secs;
        let copy = path.with_extension(format!("damaged-{stamp}"));
        std::fs::copy(path, &copy).map_err(|e| io(&copy, e))?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| io(path, e))?;
        let mut journal = Journal {
            path: path.to_path_buf(),
            file,
            repository: *repository,
        };
        journal.rewrite(&ops)?;
        Ok((ops.len(), bytes.len() - end))
    }

    /// Appends one operation (not yet fsynced).
    pub fn append(&mut self, op: &Op) -> FsResult<()> {
        self.file
            .write_all(&encode_record(op))
            .map_err(|e| io(&self.path, e))
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
            let mut fresh = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)
                .map_err(|e| io(&temp, e))?;
            let mut content = header(&self.repository);
            for op in ops {
                content.extend_from_slice(&encode_record(op));
            }
            fresh.write_all(&content).map_err(|e| io(&temp, e))?;
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

    const REPO: Id = Id([5; 32]);

    fn sample_ops() -> Vec<Op> {
        (0..6)
            .map(|n| Op::Remove {
                path: format!("folder/file{n}").into_bytes(),
            })
            .collect()
    }

    fn write_journal(path: &Path, ops: &[Op]) {
        let (mut journal, _) = Journal::open(path, &REPO).unwrap();
        for op in ops {
            journal.append(op).unwrap();
        }
    }

    #[test]
    fn damage_before_intact_records_is_an_error_and_recover_keeps_what_precedes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let ops = sample_ops();
        write_journal(&path, &ops);
        let clean = std::fs::read(&path).unwrap();
        let record = encode_record(&ops[0]).len();
        // A flipped byte in the payload of the third record, and in its length.
        for at in [HEADER_LEN + 2 * record + 14, HEADER_LEN + 2 * record + 1] {
            let mut bytes = clean.clone();
            bytes[at] ^= 0x55;
            std::fs::write(&path, &bytes).unwrap();
            let error = Journal::open(&path, &REPO)
                .err()
                .expect("damage is refused");
            let message = error.to_string();
            assert!(
                message.contains("damaged") && message.contains("journal"),
                "{message}"
            );
            assert!(message.contains("mapache stage recover"), "{message}");
            // Nothing was changed by the refusal.
            assert_eq!(std::fs::read(&path).unwrap(), bytes);
            assert_eq!(Journal::recover(&path, &REPO).unwrap().0, 2);
            assert_eq!(Journal::open(&path, &REPO).unwrap().1, ops[..2]);
        }
    }

    #[test]
    fn a_journal_of_another_repository_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        write_journal(&path, &sample_ops());
        let message = Journal::open(&path, &Id([6; 32]))
            .err()
            .unwrap()
            .to_string();
        assert!(message.contains("belongs to repository"), "{message}");
    }

    #[test]
    fn a_version_1_journal_is_read_and_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let ops = sample_ops();
        let mut v1 = Vec::new();
        for op in &ops {
            let payload = postcard::to_stdvec(op).unwrap();
            v1.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            v1.extend_from_slice(&Checksum::PayloadOnly.of(&[], &payload));
            v1.extend_from_slice(&payload);
        }
        std::fs::write(&path, &v1).unwrap();
        assert_eq!(Journal::open(&path, &REPO).unwrap().1, ops);
        assert!(std::fs::read(&path).unwrap().starts_with(MAGIC));
        assert_eq!(Journal::open(&path, &REPO).unwrap().1, ops);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Arbitrary bytes after a valid header, or as a version 1 journal:
        /// replayed or refused, never a panic.
        #[test]
        fn arbitrary_journals_never_panic(
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            headed in proptest::prelude::any::<bool>(),
        ) {
            let mut bytes = if headed { header(&REPO) } else { Vec::new() };
            bytes.extend_from_slice(&tail);
            let _ = parse(Path::new("journal"), &bytes, &REPO);
        }
    }

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
            let (mut journal, replayed) = Journal::open(&path, &REPO).unwrap();
            assert!(replayed.is_empty());
            for op in &ops {
                journal.append(op).unwrap();
            }
        }
        let (_, replayed) = Journal::open(&path, &REPO).unwrap();
        assert_eq!(replayed, ops);
        // Tear the last record.
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let (mut journal, replayed) = Journal::open(&path, &REPO).unwrap();
        assert_eq!(replayed, ops[..2]);
        journal
            .append(&Op::Remove {
                path: b"c".to_vec(),
            })
            .unwrap();
        drop(journal);
        let (mut journal, replayed) = Journal::open(&path, &REPO).unwrap();
        assert_eq!(replayed.len(), 3);
        journal.rewrite(&[Op::Base(None)]).unwrap();
        drop(journal);
        assert_eq!(Journal::open(&path, &REPO).unwrap().1, vec![Op::Base(None)]);
    }
}
