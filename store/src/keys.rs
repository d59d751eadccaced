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

/// The most memory a key file may ask Argon2id for: 2 GiB.
pub const MAX_MEMORY_KIB: u32 = 2 * 1024 * 1024;
/// The most passes a key file may ask for.
pub const MAX_ITERATIONS: u32 = 32;
/// The most lanes a key file may ask for.
pub const MAX_PARALLELISM: u32 = 16;
/// The most memory times passes (in KiB): 4 GiB-passes, some seconds of
/// work on one core (the default is 64 MiB x 3).
pub const MAX_COST_KIB_PASSES: u64 = 4 * 1024 * 1024;

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

    /// Checks the costs against the documented bounds ([`MAX_MEMORY_KIB`],
    /// [`MAX_ITERATIONS`], [`MAX_PARALLELISM`], [`MAX_COST_KIB_PASSES`]): a
    /// key file written by someone else must not make opening the
    /// repository allocate gigabytes or run for hours.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let KdfParams {
            memory_kib,
            iterations,
            parallelism,
        } = *self;
        if !(1..=MAX_PARALLELISM).contains(&parallelism) {
            return Err(format!(
                "parallelism {parallelism} is outside 1..={MAX_PARALLELISM}"
            ));
        }
        if !(8 * parallelism..=MAX_MEMORY_KIB).contains(&memory_kib) {
            return Err(format!(
                "memory {memory_kib} KiB is outside {}..={MAX_MEMORY_KIB} KiB",
                8 * parallelism
            ));
        }
        if !(1..=MAX_ITERATIONS).contains(&iterations) {
            return Err(format!(
                "{iterations} passes are outside 1..={MAX_ITERATIONS}"
            ));
        }
        if u64::from(memory_kib) * u64::from(iterations) > MAX_COST_KIB_PASSES {
            return Err(format!(
                "memory times passes ({memory_kib} KiB x {iterations}) is above {MAX_COST_KIB_PASSES}"
            ));
        }
        Ok(())
    }

    fn derive(&self, password: &[u8], salt: &[u8]) -> Result<SecretKey> {
        self.validate()
            .map_err(|e| Error::InvalidInput(format!("invalid KDF parameters: {e}")))?;
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
        host: crate::host::hostname(),
        user: crate::host::username(),
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
    file.params
        .validate()
        .map_err(|e| Error::format(format!("key {id}"), format!("KDF settings refused: {e}")))?;
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
    // A damaged key file must not hide a good one: it is passed over, and
    // named only if no other key file opens.
    let mut damaged = None;
    for file in files {
        let bytes = match backend.read(FileKind::Key, &file.id) {
            Err(Error::NotFound { .. }) => continue,
            other => other?,
        };
        let opened = if Id::hash_of(&bytes) != file.id {
            Err(Error::integrity(
                FileKind::Key,
                file.id,
                "content does not match its name",
            ))
        } else {
            open_key_file(&file.id, &bytes, password)
        };
        match opened {
            Ok(Some(found)) => return Ok(found),
            Ok(None) => {}
            Err(e) if crate::skipped::is_damage(&e) => {
                damaged.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    match damaged {
        None => Err(Error::WrongPassword),
        Some(e) => Err(Error::InvalidInput(format!(
            "no key file opens with this password, and one that might is unusable: {e}"
        ))),
    }
}

/// The KDF settings of key file `id` with content `bytes`, checked
/// against the bounds: what opening it would cost.
pub fn key_file_params(id: &Id, bytes: &[u8]) -> Result<KdfParams> {
    Ok(parse_key_file(id, bytes)?.params)
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
    fn crafted_kdf_settings_are_refused_before_any_work() {
        let backend = MemoryBackend::new();
        let keys = Keys::generate();
        let id = add_key(&backend, &keys, b"pw", KdfParams::insecure_fast()).unwrap();
        let json = String::from_utf8(backend.read(FileKind::Key, &id).unwrap()).unwrap();
        for (field, value) in [
            ("memory_kib", "17000000"),
            ("iterations", "4000000000"),
            ("parallelism", "0"),
        ] {
            let mut crafted: serde_json::Value = serde_json::from_str(&json).unwrap();
            crafted[field] = serde_json::from_str(value).unwrap();
            let bytes = serde_json::to_vec(&crafted).unwrap();
            let crafted_id = Id::hash_of(&bytes);
            let alone = MemoryBackend::new();
            alone.write(FileKind::Key, &crafted_id, &bytes).unwrap();
            let started = std::time::Instant::now();
            let error = open_keys(&alone, b"pw").err().unwrap().to_string();
            assert!(error.contains(&crafted_id.to_string()), "{error}");
            assert!(error.contains("KDF settings refused"), "{error}");
            assert!(started.elapsed().as_secs() < 1);
            // Beside a good key file, the good one still opens.
            backend.write(FileKind::Key, &crafted_id, &bytes).unwrap();
            assert!(open_keys(&backend, b"pw").is_ok());
        }
    }

    #[test]
    fn key_file_holds_no_secret_in_clear() {
        let backend = MemoryBackend::new();
        let keys = Keys::generate();
        let id = add_key(&backend, &keys, b"pw", KdfParams::insecure_fast()).unwrap();
        let stored = backend.read(FileKind::Key, &id).unwrap();
        let text = String::from_utf8(stored).unwrap();
        assert!(!text.contains(&hex::encode(keys.master.expose())));
        assert!(!text.contains(&crate::host::hostname()));
    }
}
