//! The index: which pack holds each blob, and where.
//!
//! In memory the loaded index is one sorted vector of 48-byte records (id +
//! location), searched by binary search; blobs added during a run go to a
//! small hash map until [`Index::compact`] merges them. That keeps a large
//! repository's index near 48 bytes per blob, against the 100+ of a general
//! hash map.
//!
//! The stored form, index files, is in `file.rs`.

mod file;

use std::collections::HashMap;

pub use file::{IndexFile, IndexedPack};

use crate::blob::BlobType;
use crate::id::{BlobId, PackId};
use crate::pack::PackedBlob;

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

impl Slot {
    /// Where `blob` is in pack number `pack`.
    fn of(pack: u32, blob: &PackedBlob) -> Slot {
        Slot {
            pack,
            offset: blob.offset,
            length: blob.length,
            raw_length: blob.raw_length,
        }
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
                self.recent.insert(blob.id, Slot::of(number, blob));
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
                index.sorted.extend(
                    pack.blobs
                        .iter()
                        .map(|blob| (blob.id, Slot::of(number, blob))),
                );
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
        self.find_slot(id).map(|slot| self.location(slot))
    }

    fn location(&self, slot: Slot) -> BlobLocation {
        let (pack, blob_type) = self.packs[slot.pack as usize];
        BlobLocation {
            pack,
            blob_type,
            offset: slot.offset,
            length: slot.length,
            raw_length: slot.raw_length,
        }
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
            .map(|(id, slot)| (id, self.location(slot)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;
    use crate::pack::test_blob as blob;

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
