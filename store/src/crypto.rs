//! Authenticated encryption (AES-256-GCM-SIV) and keyed hashing (BLAKE3).
//!
//! Every stored object is `nonce (12) || ciphertext || tag (16)`. The
//! additional authenticated data is one byte naming the kind of object
//! followed by the object's id, so a valid ciphertext moved to another name
//! or kind fails to decrypt.

use aes_gcm_siv::aead::inout::InOutBuf;
use aes_gcm_siv::aead::{AeadInOut, KeyInit, Nonce, Tag};
use aes_gcm_siv::{Aes256GcmSiv, Key};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::id::Id;

/// Length of a nonce.
pub const NONCE_LEN: usize = 12;
/// Length of an authentication tag.
pub const TAG_LEN: usize = 16;
/// Bytes added by encryption to every object.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Fills `buf` from the operating system's random source.
pub fn fill_random(buf: &mut [u8]) {
    // The OS random source failing is not something we can work around:
    // writing predictable nonces or keys would be far worse than stopping.
    getrandom::fill(buf).expect("operating system random source failed");
}

/// What an encrypted object is; written into the AAD. These numbers are part
/// of the format: never reorder or reuse them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ObjectKind {
    /// The repository config file.
    Config = 1,
    /// The master secret inside a key file.
    MasterSecret = 2,
    /// A snapshot file.
    Snapshot = 3,
    /// An index file.
    Index = 4,
    /// A lock file.
    Lock = 5,
    /// A data blob inside a pack.
    DataBlob = 6,
    /// A tree blob inside a pack.
    TreeBlob = 7,
    /// The footer of a pack.
    PackFooter = 8,
    /// The mark that a snapshot is forgotten.
    Forgotten = 9,
    /// A record of an uncommitted staging area.
    StagingRecord = 10,
}

/// A 256-bit secret key. Never printed, wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> SecretKey {
        SecretKey(bytes)
    }

    /// A fresh random key.
    pub fn random() -> SecretKey {
        let mut bytes = [0u8; 32];
        fill_random(&mut bytes);
        SecretKey(bytes)
    }

    /// Derives an independent sub-key for `context` (BLAKE3 `derive_key`).
    pub fn derive(&self, context: &str) -> SecretKey {
        SecretKey(blake3::derive_key(context, &self.0))
    }

    /// The raw bytes, for wrapping into a key file or keying a hash.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// An AES-256-GCM-SIV cipher with its key schedule prepared once.
#[derive(Clone)]
pub struct Cipher {
    aead: Aes256GcmSiv,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(..)")
    }
}

/// The authentication failed: wrong key, or the bytes were changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthError;

fn aad(kind: ObjectKind, id: &Id) -> [u8; 33] {
    let mut aad = [0u8; 33];
    aad[0] = kind as u8;
    aad[1..].copy_from_slice(id.as_bytes());
    aad
}

impl Cipher {
    /// A cipher keyed with `key`.
    pub fn new(key: &SecretKey) -> Cipher {
        Cipher {
            aead: Aes256GcmSiv::new(&Key::<Aes256GcmSiv>::from(*key.expose())),
        }
    }

    /// Encrypts `plaintext` as object `kind`/`id`, appending
    /// `nonce || ciphertext || tag` to `out`.
    pub fn encrypt_into(&self, kind: ObjectKind, id: &Id, plaintext: &[u8], out: &mut Vec<u8>) {
        self.encrypt_parts_into(kind, id, &[plaintext], out);
    }

    /// Like [`Cipher::encrypt_into`] for a plaintext given in pieces, which
    /// saves the caller from joining them first.
    pub fn encrypt_parts_into(
        &self,
        kind: ObjectKind,
        id: &Id,
        plaintext: &[&[u8]],
        out: &mut Vec<u8>,
    ) {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let len: usize = plaintext.iter().map(|part| part.len()).sum();
        out.reserve(len + OVERHEAD);
        out.extend_from_slice(&nonce);
        let start = out.len();
        for part in plaintext {
            out.extend_from_slice(part);
        }
        let tag = self
            .aead
            .encrypt_inout_detached(
                &Nonce::<Aes256GcmSiv>::from(nonce),
                &aad(kind, id),
                (&mut out[start..]).into(),
            )
            // Only fails for plaintexts beyond 2^36 bytes, which we never build.
            .expect("plaintext too large for AES-GCM-SIV");
        out.extend_from_slice(&tag);
    }

    /// Encrypts `plaintext` as object `kind`/`id`.
    pub fn encrypt(&self, kind: ObjectKind, id: &Id, plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        self.encrypt_into(kind, id, plaintext, &mut out);
        out
    }

    /// Decrypts an object produced by [`Cipher::encrypt`] with the same kind
    /// and id.
    pub fn decrypt(&self, kind: ObjectKind, id: &Id, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let mut plaintext = Vec::new();
        self.decrypt_into(kind, id, data, &mut plaintext)?;
        Ok(plaintext)
    }

    /// Like [`Cipher::decrypt`], into `out` (replacing what it held):
    /// decrypts straight from `data`, so a reused `out` costs no allocation
    /// and no copy.
    pub fn decrypt_into(
        &self,
        kind: ObjectKind,
        id: &Id,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), AuthError> {
        if data.len() < OVERHEAD {
            return Err(AuthError);
        }
        let (nonce, rest) = data.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce = Nonce::<Aes256GcmSiv>::try_from(nonce).map_err(|_| AuthError)?;
        let tag = Tag::<Aes256GcmSiv>::try_from(tag).map_err(|_| AuthError)?;
        // Growing zero-fills only the new part; shrinking is free.
        out.resize(ciphertext.len(), 0);
        let buffer = InOutBuf::new(ciphertext, out.as_mut_slice()).map_err(|_| AuthError)?;
        let result = self
            .aead
            .decrypt_inout_detached(&nonce, &aad(kind, id), buffer, &tag);
        if result.is_err() {
            out.clear();
            return Err(AuthError);
        }
        Ok(())
    }
}

/// A keyed BLAKE3 hasher that turns plaintext into ids. Keyed so that an
/// attacker holding the storage cannot confirm that a known file is stored.
#[derive(Clone)]
pub struct IdHasher {
    key: [u8; 32],
}

impl std::fmt::Debug for IdHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdHasher(..)")
    }
}

impl Drop for IdHasher {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl IdHasher {
    /// A hasher keyed with `key`.
    pub fn new(key: &SecretKey) -> IdHasher {
        IdHasher { key: *key.expose() }
    }

    /// The keyed hash of `data`.
    pub fn hash(&self, data: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.key, data).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let cipher = Cipher::new(&SecretKey::random());
        let id = Id::random();
        let sealed = cipher.encrypt(ObjectKind::Snapshot, &id, b"hello");
        assert_eq!(sealed.len(), 5 + OVERHEAD);
        assert_eq!(
            cipher.decrypt(ObjectKind::Snapshot, &id, &sealed).unwrap(),
            b"hello"
        );
        // Another kind or another id must not decrypt.
        assert!(cipher.decrypt(ObjectKind::Index, &id, &sealed).is_err());
        assert!(cipher
            .decrypt(ObjectKind::Snapshot, &Id::random(), &sealed)
            .is_err());
        // A flipped bit anywhere is detected.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(cipher.decrypt(ObjectKind::Snapshot, &id, &bad).is_err());
        }
        assert!(cipher
            .decrypt(ObjectKind::Snapshot, &id, &sealed[..10])
            .is_err());
    }

    #[test]
    fn nonces_are_fresh() {
        let cipher = Cipher::new(&SecretKey::random());
        let id = Id::random();
        let a = cipher.encrypt(ObjectKind::Config, &id, b"same");
        let b = cipher.encrypt(ObjectKind::Config, &id, b"same");
        assert_ne!(a, b);
    }

    #[test]
    fn derived_keys_differ() {
        let master = SecretKey::random();
        assert_ne!(master.derive("a").expose(), master.derive("b").expose());
        assert_eq!(master.derive("a").expose(), master.derive("a").expose());
    }
}
