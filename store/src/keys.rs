//! Key files and the keys derived from the master secret.
//!
//! A repository has one random 256-bit master secret. Each key file wraps it
//! with a key-encryption key that Argon2id derives from one password, so a
//! repository can have several passwords. The key file is JSON: only the
//! KDF parameters, the salt and the sealed secret are in the clear; who made
//! the key and when travel inside the sealed part.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::backend::{Backend, FileKind, CONFIG_ID};
use crate::crypto::{Cipher, IdHasher, ObjectKind, SecretKey};
use crate::error::{Error, Result};
use crate::id::Id;

/// Cost parameters of Argon2id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
    /// Degree of parallelism.
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: about a quarter second on one core, and
    /// expensive to attack on GPUs.
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    /// Cheap parameters (8 MiB, 1 pass) for tests and throw-away
    /// repositories; never for real data.
    pub fn insecure_fast() -> Self {
        KdfParams {
            memory_kib: 8 * 1024,
            iterations: 1,
            parallelism: 1,
        }
    }

    fn derive(&self, password: &[u8], salt: &[u8]) -> Result<SecretKey> {
        let params =
            argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
                .map_err(|e| Error::InvalidInput(format!("invalid KDF parameters: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(password, salt, out.as_mut())
            .map_err(|e| Error::InvalidInput(format!("key derivation failed: {e}")))?;
        Ok(SecretKey::from_bytes(*out))
    }
}

/// The stored form of a key file.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    kdf: String,
    #[serde(flatten)]
    params: KdfParams,
    salt: String,
    sealed: String,
}

/// What is sealed inside a key file.
#[derive(Serialize, Deserialize)]
struct SealedKey {
    master: String,
    created: String,
    host: String,
    user: String,
}

/// Public facts about a key file, for `key list` and `cat key`.
#[derive(Clone, Debug, Serialize)]
pub struct KeyInfo {
    /// The key file's id.
    pub id: Id,
    /// When it was made (RFC 3339).
    pub created: String,
    /// On which host.
    pub host: String,
    /// By which user.
    pub user: String,
    /// Its KDF parameters.
    pub kdf: KdfParams,
}

/// The keys derived from the master secret.
#[derive(Clone, Debug)]
pub struct Keys {
    master: SecretKey,
    /// Encrypts every stored object.
    pub cipher: Cipher,
    /// Computes blob and snapshot ids.
    pub hasher: IdHasher,
    /// Keys the chunker's gear table.
    pub chunker_key: SecretKey,
}

impl Keys {
    /// Derives all sub-keys from a master secret.
    pub fn from_master(master: SecretKey) -> Keys {
        Keys {
            cipher: Cipher::new(&master.derive("mapache 2026-11-26 data encryption")),
            hasher: IdHasher::new(&master.derive("mapache 2026-11-26 content ids")),
            chunker_key: master.derive("mapache 2026-11-26 chunker gear table"),
            master,
        }
    }

    /// A fresh random master secret.
    pub fn generate() -> Keys {
        Keys::from_master(SecretKey::random())
    }
}

/// Writes a new key file wrapping `keys`' master secret with `password`.
pub fn add_key(
    backend: &dyn Backend,
    keys: &Keys,
    password: &[u8],
    params: KdfParams,
) -> Result<Id> {
    let mut salt = [0u8; 16];
    crate::crypto::fill_random(&mut salt);
    let kek = Cipher::new(&params.derive(password, &salt)?);
    let sealed = SealedKey {
        master: hex::encode(keys.master.expose()),
        created: chrono::Utc::now().to_rfc3339(),
        host: crate::snapshot::hostname(),
        user: crate::snapshot::username(),
    };
    let plaintext = Zeroizing::new(serde_json::to_vec(&sealed).expect("serializable"));
    let file = KeyFile {
        version: 1,
        kdf: "argon2id".into(),
        params,
        salt: hex::encode(salt),
        sealed: hex::encode(kek.encrypt(ObjectKind::MasterSecret, &CONFIG_ID, &plaintext)),
    };
    let bytes = serde_json::to_vec_pretty(&file).expect("serializable");
    let id = Id::hash_of(&bytes);
    backend.write(FileKind::Key, &id, &bytes)?;
    Ok(id)
}

fn parse_key_file(id: &Id, bytes: &[u8]) -> Result<KeyFile> {
    let file: KeyFile =
        serde_json::from_slice(bytes).map_err(|e| Error::format(format!("key {id}"), e))?;
    if file.version != 1 || file.kdf != "argon2id" {
        return Err(Error::format(
            format!("key {id}"),
            "unknown key file version or KDF",
        ));
    }
    Ok(file)
}

fn open_key_file(id: &Id, bytes: &[u8], password: &[u8]) -> Result<Option<(Keys, KeyInfo)>> {
    let file = parse_key_file(id, bytes)?;
    let salt = hex::decode(&file.salt).map_err(|e| Error::format(format!("key {id}"), e))?;
    let sealed = hex::decode(&file.sealed).map_err(|e| Error::format(format!("key {id}"), e))?;
    let kek = Cipher::new(&file.params.derive(password, &salt)?);
    let Ok(plaintext) = kek.decrypt(ObjectKind::MasterSecret, &CONFIG_ID, &sealed) else {
        return Ok(None);
    };
    let plaintext = Zeroizing::new(plaintext);
    let inner: SealedKey =
        serde_json::from_slice(&plaintext).map_err(|e| Error::format(format!("key {id}"), e))?;
    let mut master = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(&inner.master, master.as_mut())
        .map_err(|e| Error::format(format!("key {id}"), e))?;
    let info = KeyInfo {
        id: *id,
        created: inner.created,
        host: inner.host,
        user: inner.user,
        kdf: file.params,
    };
    Ok(Some((
        Keys::from_master(SecretKey::from_bytes(*master)),
        info,
    )))
}

/// Finds the key file that `password` opens and returns the keys. Tries
/// every key file; none matching is [`Error::WrongPassword`].
pub fn open_keys(backend: &dyn Backend, password: &[u8]) -> Result<(Keys, KeyInfo)> {
    let files = backend.list(FileKind::Key)?;
    if files.is_empty() {
        return Err(Error::RepositoryNotFound(format!(
            "{} (it has no key files)",
            backend.location()
        )));
    }
    for file in files {
        let bytes = backend.read(FileKind::Key, &file.id)?;
        if Id::hash_of(&bytes) != file.id {
            return Err(Error::integrity(
                FileKind::Key,
                file.id,
                "content does not match its name",
            ));
        }
        if let Some(found) = open_key_file(&file.id, &bytes, password)? {
            return Ok(found);
        }
    }
    Err(Error::WrongPassword)
}

/// The plaintext JSON of a key file (no secrets in it), for `cat key`.
pub fn key_file_json(backend: &dyn Backend, id: &Id) -> Result<serde_json::Value> {
    let bytes = backend.read(FileKind::Key, id)?;
    parse_key_file(id, &bytes)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::format(format!("key {id}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;

    #[test]
    fn wrap_and_unwrap() {
        let backend = MemoryBackend::new();
        let keys = Keys::generate();
        add_key(&backend, &keys, b"secret", KdfParams::insecure_fast()).unwrap();
        let (opened, info) = open_keys(&backend, b"secret").unwrap();
        assert_eq!(opened.master.expose(), keys.master.expose());
        assert_eq!(info.kdf, KdfParams::insecure_fast());
        assert!(matches!(
            open_keys(&backend, b"wrong"),
            Err(Error::WrongPassword)
        ));
    }

    #[test]
    fn key_file_holds_no_secret_in_clear() {
        let backend = MemoryBackend::new();
        let keys = Keys::generate();
        let id = add_key(&backend, &keys, b"pw", KdfParams::insecure_fast()).unwrap();
        let stored = backend.read(FileKind::Key, &id).unwrap();
        let text = String::from_utf8(stored).unwrap();
        assert!(!text.contains(&hex::encode(keys.master.expose())));
        assert!(!text.contains(&crate::snapshot::hostname()));
    }
}
