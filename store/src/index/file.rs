//! Index files: the stored form of the index, sealed (kind `Index`) and
//! written in pieces while a backup runs, so that an interrupted run keeps
//! what it uploaded.
//!
//! ```text
//! index  = version (1) || superseded count (u32 LE) || superseded index ids (32 each)
//!          || pack count (u32 LE) || pack*
//! pack   = pack id (32) || blob type (1) || blob count (u32 LE) || blob*
//! blob   = blob id (32) || offset (u32 LE) || length (u32 LE) || raw length (u32 LE)
//! ```

use crate::blob::BlobType;
use crate::error::{Error, Result};
use crate::id::{Id, PackId};
use crate::pack::{PackedBlob, ENTRY_LEN};

const INDEX_VERSION: u8 = 1;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::test_blob as blob;

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
}
