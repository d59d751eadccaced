//! Pack files: many sealed blobs followed by a sealed footer that lists them.
//!
//! ```text
//! pack   = blob* || sealed_footer || footer_len (u32 LE, length of sealed_footer)
//! footer = version (1) || blob type (1) || count (u32 LE)
//!          || count × (blob id (32) || offset (u32 LE) || length (u32 LE) || raw length (u32 LE))
//! ```
//! The pack id is the BLAKE3 hash of the whole file, so storage corruption
//! shows without the key; the footer lets `rebuild-index` recover a pack
//! that no index names.

use crate::backend::{Backend, FileKind};
use crate::blob::BlobType;
use crate::crypto::{Cipher, ObjectKind};
use crate::error::{Error, Result};
use crate::id::{BlobId, Id, PackId};
use crate::index::BlobLocation;

const FOOTER_VERSION: u8 = 1;
/// Bytes of one encoded [`PackedBlob`], in pack footers and index files.
pub(crate) const ENTRY_LEN: usize = 32 + 4 + 4 + 4;
/// Bytes of a footer before its entries: version, blob type, count.
const FOOTER_HEADER_LEN: usize = 6;

/// Where one blob sits inside a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PackedBlob {
    /// The blob's id.
    pub id: BlobId,
    /// Offset of its sealed bytes in the pack.
    pub offset: u32,
    /// Length of its sealed bytes.
    pub length: u32,
    /// Length of its plaintext.
    pub raw_length: u32,
}

impl PackedBlob {
    /// Appends the entry's encoding (id, offset, length, raw length), the
    /// same in pack footers and index files.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.id.0.as_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.raw_length.to_le_bytes());
    }

    /// Decodes one entry of [`ENTRY_LEN`] bytes.
    pub(crate) fn decode(entry: &[u8; ENTRY_LEN]) -> PackedBlob {
        let u32_at = |at: usize| u32::from_le_bytes(entry[at..at + 4].try_into().expect("4 bytes"));
        PackedBlob {
            id: BlobId(Id(entry[..32].try_into().expect("32 bytes"))),
            offset: u32_at(32),
            length: u32_at(36),
            raw_length: u32_at(40),
        }
    }

    /// Where the blob's sealed bytes end in the pack.
    pub fn end(&self) -> u64 {
        u64::from(self.offset) + u64::from(self.length)
    }
}

/// A made-up entry numbered `n`, for tests of the index.
#[cfg(test)]
pub(crate) fn test_blob(n: u8) -> PackedBlob {
    PackedBlob {
        id: BlobId(Id([n; 32])),
        offset: u32::from(n) * 100,
        length: 100,
        raw_length: 90,
    }
}

/// The smallest size a pack holding `blobs` can have: up to the end of its
/// last blob, then the sealed footer listing them and the footer length.
pub fn min_pack_size(blobs: &[PackedBlob]) -> u64 {
    let end = blobs.iter().map(PackedBlob::end).max().unwrap_or(0);
    end + trailer_len(blobs.len())
}

/// Bytes after the last blob of a pack of `count` blobs: sealed footer and
/// its length.
fn trailer_len(count: usize) -> u64 {
    (crate::crypto::OVERHEAD + FOOTER_HEADER_LEN + count * ENTRY_LEN + 4) as u64
}

/// Collects sealed blobs of one type into a pack.
pub struct PackWriter {
    blob_type: BlobType,
    data: Vec<u8>,
    blobs: Vec<PackedBlob>,
}

/// A finished pack, ready to upload.
pub struct FinishedPack {
    /// BLAKE3 of `data`.
    pub id: PackId,
    /// Type of every blob in it.
    pub blob_type: BlobType,
    /// The file's bytes.
    pub data: Vec<u8>,
    /// What it holds.
    pub blobs: Vec<PackedBlob>,
}

impl PackWriter {
    /// An empty pack for blobs of `blob_type`, with room for `capacity` bytes.
    #[cfg(test)]
    pub fn new(blob_type: BlobType, capacity: usize) -> PackWriter {
        PackWriter {
            blob_type,
            data: Vec::with_capacity(capacity),
            blobs: Vec::new(),
        }
    }

    /// An empty pack for blobs of `blob_type` built in `buffer` (emptied
    /// first), reusing its allocation.
    pub fn with_buffer(blob_type: BlobType, mut buffer: Vec<u8>) -> PackWriter {
        buffer.clear();
        PackWriter {
            blob_type,
            data: buffer,
            blobs: Vec::new(),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Appends a blob, sealing it with `seal`, which appends the sealed
    /// bytes to the buffer it is given.
    pub fn add(&mut self, id: BlobId, raw_length: u32, seal: impl FnOnce(&mut Vec<u8>)) {
        let offset = self.data.len();
        seal(&mut self.data);
        self.blobs.push(PackedBlob {
            id,
            offset: offset as u32,
            length: (self.data.len() - offset) as u32,
            raw_length,
        });
    }

    /// Seals the footer and returns the whole pack.
    pub fn finish(mut self, cipher: &Cipher) -> FinishedPack {
        let mut footer = Vec::with_capacity(FOOTER_HEADER_LEN + self.blobs.len() * ENTRY_LEN);
        footer.push(FOOTER_VERSION);
        footer.push(self.blob_type as u8);
        footer.extend_from_slice(&(self.blobs.len() as u32).to_le_bytes());
        for blob in &self.blobs {
            blob.encode_into(&mut footer);
        }
        let before = self.data.len();
        cipher.encrypt_into(
            ObjectKind::PackFooter,
            &Id::default(),
            &footer,
            &mut self.data,
        );
        let sealed_len = (self.data.len() - before) as u32;
        self.data.extend_from_slice(&sealed_len.to_le_bytes());
        FinishedPack {
            id: PackId(Id::hash_of(&self.data)),
            blob_type: self.blob_type,
            data: self.data,
            blobs: self.blobs,
        }
    }
}

/// Reads the footer of a whole pack file.
pub fn read_footer(
    cipher: &Cipher,
    id: &PackId,
    data: &[u8],
) -> Result<(BlobType, Vec<PackedBlob>)> {
    let fail = |reason: &str| Error::integrity(FileKind::Pack, id, reason);
    if data.len() < 4 {
        return Err(fail("too short to be a pack"));
    }
    let (body, len) = data.split_at(data.len() - 4);
    let sealed_len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    if sealed_len > body.len() {
        return Err(fail("footer length out of range"));
    }
    open_footer(cipher, id, &body[body.len() - sealed_len..])
}

/// Reads the footer of pack `id` of `size` bytes from `backend` with two
/// small reads (its length, then the footer), without the blobs.
pub fn fetch_footer(
    backend: &dyn Backend,
    cipher: &Cipher,
    id: &PackId,
    size: u64,
) -> Result<(BlobType, Vec<PackedBlob>)> {
    let fail = |reason: &str| Error::integrity(FileKind::Pack, id, reason);
    if size < 4 {
        return Err(fail("too short to be a pack"));
    }
    let len = backend.read_range(FileKind::Pack, &id.0, size - 4, 4)?;
    let sealed_len = u32::from_le_bytes(len[..4].try_into().expect("4 bytes"));
    if u64::from(sealed_len) > size - 4 {
        return Err(fail("footer length out of range"));
    }
    let sealed = backend.read_range(
        FileKind::Pack,
        &id.0,
        size - 4 - u64::from(sealed_len),
        sealed_len,
    )?;
    open_footer(cipher, id, &sealed)
}

/// Reads pack `id` of `size` bytes whole into `buffer` (once, around the
/// page cache) and returns its bytes.
pub(crate) fn read_whole<'b>(
    backend: &dyn Backend,
    id: &PackId,
    size: u64,
    buffer: &'b mut Vec<u8>,
) -> Result<&'b [u8]> {
    let len = u32::try_from(size)
        .map_err(|_| Error::integrity(FileKind::Pack, id, "larger than a pack can be"))?;
    let start = backend.read_range_into(
        FileKind::Pack,
        &id.0,
        0,
        len,
        crate::backend::Access::Once,
        buffer,
    )?;
    Ok(&buffer[start..start + len as usize])
}

fn open_footer(cipher: &Cipher, id: &PackId, sealed: &[u8]) -> Result<(BlobType, Vec<PackedBlob>)> {
    let footer = cipher
        .decrypt(ObjectKind::PackFooter, &Id::default(), sealed)
        .map_err(|_| Error::integrity(FileKind::Pack, id, "footer failed authentication"))?;
    decode_footer(id, &footer)
}

/// Decodes the plaintext of pack `id`'s footer.
pub fn decode_footer(id: &PackId, footer: &[u8]) -> Result<(BlobType, Vec<PackedBlob>)> {
    let fail = |reason: &str| Error::integrity(FileKind::Pack, id, reason);
    if footer.len() < FOOTER_HEADER_LEN || footer[0] != FOOTER_VERSION {
        return Err(fail("unknown footer version"));
    }
    let blob_type = BlobType::from_u8(footer[1]).ok_or_else(|| fail("unknown blob type"))?;
    let count = u32::from_le_bytes(footer[2..6].try_into().expect("4 bytes")) as usize;
    let entries = &footer[FOOTER_HEADER_LEN..];
    if entries.len() / ENTRY_LEN != count || entries.len() % ENTRY_LEN != 0 {
        return Err(fail("footer length does not match its count"));
    }
    let blobs = entries
        .chunks_exact(ENTRY_LEN)
        .map(|e| PackedBlob::decode(e.try_into().expect("entry length")))
        .collect();
    Ok((blob_type, blobs))
}

/// Groups blobs of one pack, sorted by offset, into ranged reads: a new
/// read starts where the gap to the next blob exceeds `max_gap` (reading
/// it would cost more than a second request) or the read would exceed
/// `max_read` bytes.
pub fn ranged_reads(
    blobs: &[(BlobId, BlobLocation)],
    max_gap: u32,
    max_read: u32,
) -> Vec<&[(BlobId, BlobLocation)]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=blobs.len() {
        let split = i == blobs.len() || {
            let first = &blobs[start].1;
            let prev = &blobs[i - 1].1;
            let next = &blobs[i].1;
            next.offset.saturating_sub(prev.offset + prev.length) > max_gap
                || (next.offset + next.length).saturating_sub(first.offset) > max_read
        };
        if split {
            out.push(&blobs[start..i]);
            start = i;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{open_blob, BlobEncoder};
    use crate::crypto::{IdHasher, SecretKey};

    #[test]
    fn pack_round_trip() {
        let cipher = Cipher::new(&SecretKey::random());
        let hasher = IdHasher::new(&SecretKey::random());
        let mut encoder = BlobEncoder::new(3);
        let mut writer = PackWriter::new(BlobType::Data, 1024);
        let blobs: Vec<Vec<u8>> = vec![vec![b'a'; 5000], b"short".to_vec(), Vec::new()];
        for data in &blobs {
            let id = BlobId(hasher.hash(data));
            writer.add(id, data.len() as u32, |out| {
                encoder.seal_into(&cipher, BlobType::Data, &id, data, out);
            });
        }
        let pack = writer.finish(&cipher);
        assert_eq!(pack.id.0, Id::hash_of(&pack.data));
        let (blob_type, listed) = read_footer(&cipher, &pack.id, &pack.data).unwrap();
        assert_eq!(blob_type, BlobType::Data);
        assert_eq!(listed, pack.blobs);
        // The compressible blob shrank.
        assert!(listed[0].length < 5000);
        for (entry, data) in listed.iter().zip(&blobs) {
            let sealed = &pack.data[entry.offset as usize..(entry.offset + entry.length) as usize];
            let opened = open_blob(
                &cipher,
                &hasher,
                BlobType::Data,
                &entry.id,
                sealed,
                entry.raw_length,
            )
            .unwrap();
            assert_eq!(&opened, data);
            // Opening as the wrong type fails.
            assert!(open_blob(
                &cipher,
                &hasher,
                BlobType::Tree,
                &entry.id,
                sealed,
                entry.raw_length
            )
            .is_err());
        }
        let mut truncated = pack.data.clone();
        truncated.truncate(truncated.len() - 10);
        assert!(read_footer(&cipher, &pack.id, &truncated).is_err());
    }
}
