//! 256-bit object ids, with one newtype per kind of object so that a pack id
//! cannot be passed where a blob id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Length of every id in bytes.
pub const ID_LEN: usize = 32;

/// A raw 256-bit id. Displayed as 64 lowercase hex digits.
///
/// Serialized as a hex string in human-readable formats (JSON snapshots,
/// `--json` output) and as 32 raw bytes in binary ones (trees).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; ID_LEN]);

impl Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Id, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            Ok(Id(<[u8; ID_LEN]>::deserialize(deserializer)?))
        }
    }
}

impl Id {
    /// A fresh random id (for lock files and the repository id).
    pub fn random() -> Id {
        let mut bytes = [0u8; ID_LEN];
        crate::crypto::fill_random(&mut bytes);
        Id(bytes)
    }

    /// The unkeyed BLAKE3 hash of `data`: used where integrity must be
    /// checkable without the repository key (pack and key file names).
    pub fn hash_of(data: &[u8]) -> Id {
        Id(*blake3::hash(data).as_bytes())
    }

    /// Hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex digits, enough to name a snapshot to a person.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl FromStr for Id {
    type Err = Error;

    fn from_str(s: &str) -> Result<Id, Error> {
        let mut bytes = [0u8; ID_LEN];
        hex::decode_to_slice(s, &mut bytes)
            .map_err(|_| Error::InvalidInput(format!("{s:?} is not a 64-digit hex id")))?;
        Ok(Id(bytes))
    }
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Id);

        impl $name {
            /// The untyped id.
            pub fn id(&self) -> Id {
                self.0
            }
            /// Hex form.
            pub fn to_hex(&self) -> String {
                self.0.to_hex()
            }
            /// Short hex form.
            pub fn short(&self) -> String {
                self.0.short()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0.short())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Ok($name(s.parse()?))
            }
        }
    };
}

typed_id!(
    /// Id of a blob: keyed BLAKE3 of its plaintext.
    BlobId
);
typed_id!(
    /// Id of a pack file: BLAKE3 of its stored bytes.
    PackId
);
typed_id!(
    /// Id of a snapshot file: keyed BLAKE3 of its plaintext.
    SnapshotId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_hex_in_json_and_bytes_in_postcard() {
        let id = Id([0xab; 32]);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<Id>(&json).unwrap(), id);
        let bin = postcard::to_stdvec(&id).unwrap();
        assert_eq!(bin, vec![0xab; 32]);
        assert_eq!(postcard::from_bytes::<Id>(&bin).unwrap(), id);
    }

    #[test]
    fn hex_round_trip() {
        let id = Id::random();
        let parsed: Id = id.to_hex().parse().unwrap();
        assert_eq!(id, parsed);
        assert_eq!(id.short().len(), 8);
        assert!("xyz".parse::<Id>().is_err());
    }
}
