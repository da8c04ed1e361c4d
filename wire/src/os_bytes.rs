//! Serde helpers that carry `OsString`/`PathBuf` as raw bytes.
//!
//! serde's own `OsString` encoding is an enum of `Unix(Vec<u8>)`/`Windows(Vec<u16>)`, which
//! ties the wire format to the platform. On the wire a name is just its bytes, so non-UTF-8
//! names and values survive the round trip unchanged.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer>(value: &OsStr, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(value.as_bytes())
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<OsString, D::Error> {
    let bytes = serde_bytes::ByteBuf::deserialize(deserializer)?;
    Ok(OsString::from_vec(bytes.into_vec()))
}

pub mod path {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Path, serializer: S) -> Result<S::Ok, S::Error> {
        super::serialize(value.as_os_str(), serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PathBuf, D::Error> {
        super::deserialize(deserializer).map(PathBuf::from)
    }
}

pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(
        value: &Option<OsString>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => serializer.serialize_some(&Wrapped(v)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<OsString>, D::Error> {
        let wrapped: Option<Owned> = Option::deserialize(deserializer)?;
        Ok(wrapped.map(|w| w.0))
    }
}

pub mod pairs {
    use super::*;

    pub fn serialize<S: Serializer>(
        value: &[(OsString, OsString)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(value.iter().map(|(k, v)| (Wrapped(k), Wrapped(v))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(OsString, OsString)>, D::Error> {
        let pairs: Vec<(Owned, Owned)> = Vec::deserialize(deserializer)?;
        Ok(pairs.into_iter().map(|(k, v)| (k.0, v.0)).collect())
    }
}

/// Borrowed `OsStr` that serializes as bytes.
struct Wrapped<'a>(&'a OsStr);

impl serde::Serialize for Wrapped<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize(self.0, serializer)
    }
}

/// Owned `OsString` that deserializes from bytes.
struct Owned(OsString);

impl<'de> Deserialize<'de> for Owned {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize(deserializer).map(Owned)
    }
}
