//! The index: which pack holds each blob, and where.
//!
//! In memory the loaded index is one sorted vector of 48-byte records (id +
//! location), searched by binary search; blobs added during a run go to a
//! small hash map until [`Index::compact`] merges them. That keeps a large
//! repository's index near 48 bytes per blob, against the 100+ of a general
//! hash map.
//!
//! Index files (sealed, kind `Index`) are written in pieces while a backup
//! runs, so an interrupted run keeps what it uploaded:
//!
//! ```text
//! index  = version (1) || superseded count (u32 LE) || superseded index ids (32 each)
//!          || pack count (u32 LE) || pack*
//! pack   = pack id (32) || blob type (1) || blob count (u32 LE) || blob*
//! blob   = blob id (32) || offset (u32 LE) || length (u32 LE) || raw length (u32 LE)
//! ```

use std::collections::HashMap;

use crate::blob::BlobType;
use crate::error::{Error, Result};
use crate::id::{BlobId, Id, PackId};
use crate::pack::{PackedBlob, ENTRY_LEN};

const INDEX_VERSION: u8 = 1;

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack holding it.
    pub pack: PackId,
    /// The type of the blob.
    pub blob_type: BlobType,
    /// Offset of its sealed bytes in the pack.
    pub offset: u32,
    /// Length of its sealed bytes.
    pub length: u32,
    /// Length of its plaintext.
    pub raw_length: u32,
}

/// Compact form of a location: the pack as an index into `Index::packs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    pack: u32,
    offset: u32,
    length: u32,
    raw_length: u32,
}

/// One pack's entry in an index file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedPack {
    /// The pack.
    pub id: PackId,
    /// Type of all its blobs.
    pub blob_type: BlobType,
    /// Its blobs.
    pub blobs: Vec<PackedBlob>,
}

/// The decoded content of one index file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexFile {
    /// Index files this one replaces (written by garbage collection).
    pub supersedes: Vec<Id>,
    /// The packs it describes.
    pub packs: Vec<IndexedPack>,
}

impl IndexFile {
    /// Encodes to the on-disk plaintext.
    pub fn encode(&self) -> Vec<u8> {
        let blobs: usize = self.packs.iter().map(|p| p.blobs.len()).sum();
        let mut out =
            Vec::with_capacity(9 + self.supersedes.len() * 32 + self.packs.len() * 37 + blobs * 44);
        out.push(INDEX_VERSION);
        out.extend_from_slice(&(self.supersedes.len() as u32).to_le_bytes());
        for id in &self.supersedes {
            out.extend_from_slice(id.as_bytes());
        }
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for pack in &self.packs {
            out.extend_from_slice(pack.id.0.as_bytes());
            out.push(pack.blob_type as u8);
            out.extend_from_slice(&(pack.blobs.len() as u32).to_le_bytes());
            for blob in &pack.blobs {
                blob.encode_into(&mut out);
            }
        }
        out
    }

    /// Decodes the on-disk plaintext of index file `id`.
    pub fn decode(id: &Id, data: &[u8]) -> Result<IndexFile> {
        let mut reader = Reader { data, pos: 0 };
        let fail = |reason: &str| Error::format(format!("index {id}"), reason);
        let version = reader.u8().ok_or_else(|| fail("empty"))?;
        if version != INDEX_VERSION {
            return Err(fail(&format!("unknown version {version}")));
        }
        let truncated = || fail("truncated");
        let mut file = IndexFile::default();
        let superseded = reader.u32().ok_or_else(truncated)?;
        for _ in 0..superseded {
            file.supersedes.push(reader.id().ok_or_else(truncated)?);
        }
        let packs = reader.u32().ok_or_else(truncated)?;
        for _ in 0..packs {
            let pack_id = PackId(reader.id().ok_or_else(truncated)?);
            let blob_type = BlobType::from_u8(reader.u8().ok_or_else(truncated)?)
                .ok_or_else(|| fail("unknown blob type"))?;
            let count = reader.u32().ok_or_else(truncated)? as usize;
            // The count is checked against the bytes there are before
            // anything is allocated for it.
            let entries = reader
                .take(count.checked_mul(ENTRY_LEN).ok_or_else(truncated)?)
                .ok_or_else(truncated)?;
            let blobs = entries
                .chunks_exact(ENTRY_LEN)
                .map(|e| PackedBlob::decode(e.try_into().expect("entry length")))
                .collect();
            file.packs.push(IndexedPack {
                id: pack_id,
                blob_type,
                blobs,
            });
        }
        if reader.pos != data.len() {
            return Err(fail("trailing bytes"));
        }
        Ok(file)
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let slice = self.data.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(slice)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn id(&mut self) -> Option<Id> {
        self.take(32).map(|b| Id(b.try_into().expect("32 bytes")))
    }
}

/// The in-memory index of every blob in the repository.
#[derive(Default)]
pub struct Index {
    packs: Vec<(PackId, BlobType)>,
    pack_numbers: HashMap<PackId, u32>,
    sorted: Vec<(BlobId, Slot)>,
    recent: HashMap<BlobId, Slot>,
}

impl Index {
    /// An empty index.
    pub fn new() -> Index {
        Index::default()
    }

    /// Adds every blob of a pack. A blob already known keeps its first
    /// location.
    pub fn add_pack(&mut self, id: PackId, blob_type: BlobType, blobs: &[PackedBlob]) {
        let number = self.pack_number(id, blob_type);
        for blob in blobs {
            if self.find_slot(&blob.id).is_none() {
                self.recent.insert(
                    blob.id,
                    Slot {
                        pack: number,
                        offset: blob.offset,
                        length: blob.length,
                        raw_length: blob.raw_length,
                    },
                );
            }
        }
    }

    /// Builds the index from all index files at once: every record goes
    /// straight into the vector, which is sorted once at the end.
    pub fn from_files(files: impl IntoIterator<Item = IndexFile>) -> Index {
        let mut index = Index::new();
        for file in files {
            for pack in file.packs {
                let number = index.pack_number(pack.id, pack.blob_type);
                index.sorted.extend(pack.blobs.iter().map(|blob| {
                    (
                        blob.id,
                        Slot {
                            pack: number,
                            offset: blob.offset,
                            length: blob.length,
                            raw_length: blob.raw_length,
                        },
                    )
                }));
            }
        }
        index.sorted.sort_unstable_by_key(|entry| entry.0);
        // A blob stored twice (two runs raced) needs only one location.
        index.sorted.dedup_by(|a, b| a.0 == b.0);
        index.sorted.shrink_to_fit();
        index
    }

    fn pack_number(&mut self, id: PackId, blob_type: BlobType) -> u32 {
        *self.pack_numbers.entry(id).or_insert_with(|| {
            self.packs.push((id, blob_type));
            (self.packs.len() - 1) as u32
        })
    }

    /// Moves recently added blobs into the sorted vector. Call after bulk
    /// loading; lookups work either way.
    pub fn compact(&mut self) {
        if self.recent.is_empty() {
            return;
        }
        self.sorted.reserve_exact(self.recent.len());
        self.sorted.extend(self.recent.drain());
        self.sorted.sort_unstable_by_key(|entry| entry.0);
        self.sorted.shrink_to_fit();
        self.recent.shrink_to_fit();
    }

    fn find_slot(&self, id: &BlobId) -> Option<Slot> {
        if let Ok(pos) = self.sorted.binary_search_by(|probe| probe.0.cmp(id)) {
            return Some(self.sorted[pos].1);
        }
        self.recent.get(id).copied()
    }

    /// Where blob `id` is stored, if anywhere.
    pub fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        self.find_slot(id).map(|slot| {
            let (pack, blob_type) = self.packs[slot.pack as usize];
            BlobLocation {
                pack,
                blob_type,
                offset: slot.offset,
                length: slot.length,
                raw_length: slot.raw_length,
            }
        })
    }

    /// Whether blob `id` is stored.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.find_slot(id).is_some()
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether pack `id` is indexed.
    pub fn has_pack(&self, id: &PackId) -> bool {
        self.pack_numbers.contains_key(id)
    }

    /// Number of packs.
    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }

    /// Heap bytes held, for the bytes-per-blob figure.
    pub fn memory_bytes(&self) -> usize {
        self.sorted.capacity() * std::mem::size_of::<(BlobId, Slot)>()
            + self.recent.capacity() * (std::mem::size_of::<(BlobId, Slot)>() + 1)
            + self.packs.capacity() * std::mem::size_of::<(PackId, BlobType)>()
            + self.pack_numbers.capacity() * (std::mem::size_of::<(PackId, u32)>() + 1)
    }

    /// Every blob with its location.
    pub fn iter(&self) -> impl Iterator<Item = (BlobId, BlobLocation)> + '_ {
        self.sorted
            .iter()
            .map(|(id, slot)| (*id, *slot))
            .chain(self.recent.iter().map(|(id, slot)| (*id, *slot)))
            .map(|(id, slot)| {
                let (pack, blob_type) = self.packs[slot.pack as usize];
                (
                    id,
                    BlobLocation {
                        pack,
                        blob_type,
                        offset: slot.offset,
                        length: slot.length,
                        raw_length: slot.raw_length,
                    },
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: u8) -> PackedBlob {
        PackedBlob {
            id: BlobId(Id([n; 32])),
            offset: n as u32 * 100,
            length: 100,
            raw_length: 90,
        }
    }

    #[test]
    fn encode_decode() {
        let file = IndexFile {
            supersedes: vec![Id([9; 32])],
            packs: vec![
                IndexedPack {
                    id: PackId(Id([1; 32])),
                    blob_type: BlobType::Data,
                    blobs: vec![blob(1), blob(2)],
                },
                IndexedPack {
                    id: PackId(Id([2; 32])),
                    blob_type: BlobType::Tree,
                    blobs: vec![blob(3)],
                },
            ],
        };
        let bytes = file.encode();
        assert_eq!(IndexFile::decode(&Id::default(), &bytes).unwrap(), file);
        assert!(IndexFile::decode(&Id::default(), &bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn lookups_before_and_after_compaction() {
        let mut index = Index::new();
        index.add_pack(PackId(Id([1; 32])), BlobType::Data, &[blob(1), blob(2)]);
        index.add_pack(PackId(Id([2; 32])), BlobType::Tree, &[blob(3), blob(1)]);
        let check = |index: &Index| {
            assert_eq!(index.len(), 3);
            let one = index.get(&blob(1).id).unwrap();
            assert_eq!(one.pack, PackId(Id([1; 32])));
            assert_eq!(one.offset, 100);
            assert_eq!(index.get(&blob(3).id).unwrap().blob_type, BlobType::Tree);
            assert!(!index.contains(&blob(4).id));
        };
        check(&index);
        index.compact();
        check(&index);
    }

    #[test]
    fn compact_index_stays_under_64_bytes_per_blob() {
        let mut files = Vec::new();
        for pack in 0..1000u32 {
            let mut blobs = Vec::new();
            for i in 0..100u32 {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&pack.to_le_bytes());
                id[4..8].copy_from_slice(&i.to_le_bytes());
                blobs.push(PackedBlob {
                    id: BlobId(Id(*blake3::hash(&id).as_bytes())),
                    offset: i,
                    length: 1,
                    raw_length: 1,
                });
            }
            let mut pack_id = [0u8; 32];
            pack_id[..4].copy_from_slice(&pack.to_le_bytes());
            files.push(IndexFile {
                supersedes: Vec::new(),
                packs: vec![IndexedPack {
                    id: PackId(Id(pack_id)),
                    blob_type: BlobType::Data,
                    blobs,
                }],
            });
        }
        let index = Index::from_files(files);
        assert_eq!(index.len(), 100_000);
        let per_blob = index.memory_bytes() as f64 / index.len() as f64;
        eprintln!("in-memory index: {per_blob:.1} bytes per blob");
        assert!(per_blob < 64.0, "{per_blob} bytes per blob");
    }
}
