//! Cache keys: BLAKE3 over length-prefixed fields, so no two field lists collide.

use std::fmt;

use super::path_set::{Base, Observation};

#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Key(pub [u8; 32]);

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

impl Key {
    pub fn hex(&self) -> String {
        // By hand: a `format!` per byte was 32 allocations for every file a lookup values.
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = String::with_capacity(64);
        for b in self.0 {
            hex.push(char::from(DIGITS[usize::from(b >> 4)]));
            hex.push(char::from(DIGITS[usize::from(b & 0xf)]));
        }
        hex
    }

    /// The key [`Key::hex`] printed, `None` for anything else.
    pub fn from_hex(text: &str) -> Option<Key> {
        if text.len() != 64 {
            return None;
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Key(key))
    }
}

/// Builds a key from a sequence of fields.
pub struct KeyHasher(blake3::Hasher);

impl KeyHasher {
    pub fn new(domain: &str) -> KeyHasher {
        let mut hasher = KeyHasher(blake3::Hasher::new());
        hasher.field(domain.as_bytes());
        hasher
    }

    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    pub fn finish(&self) -> Key {
        Key(*self.0.finalize().as_bytes())
    }
}

/// The content hash of bytes (blob keys).
pub fn content(bytes: &[u8]) -> Key {
    Key(*blake3::hash(bytes).as_bytes())
}

/// The id of a path set (its observations, sorted).
pub fn path_set_id(observations: &[Observation]) -> Key {
    let mut hasher = KeyHasher::new("path-set");
    for o in observations {
        let base: &[u8] = match &o.base {
            Base::Root => b"",
            Base::Var(name) => name.as_bytes(),
        };
        // A variable's name is never empty: the empty field is the root's.
        hasher.field(&[o.kind as u8]).field(base).field(&o.path.0);
    }
    hasher.finish()
}

/// The post-run key: pre-run key + path set + what was observed.
pub fn post_key(pre: &Key, path_set: &Key, values: &[String]) -> Key {
    let mut hasher = KeyHasher::new("post-run");
    hasher.field(&pre.0).field(&path_set.0);
    for value in values {
        hasher.field(value.as_bytes());
    }
    hasher.finish()
}

/// The content hash used for blobs.
pub fn blob_key(bytes: &[u8]) -> Key {
    content(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_boundaries_matter() {
        let a = KeyHasher::new("t").field(b"ab").field(b"c").finish();
        let b = KeyHasher::new("t").field(b"a").field(b"bc").finish();
        assert_ne!(a, b);
    }

    #[test]
    fn hex_round_trips_and_rejects_anything_else() {
        let key = content(b"x");
        assert_eq!(Key::from_hex(&key.hex()), Some(key));
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37 + 5) as u8);
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(Key(bytes).hex(), expected, "lowercase, two digits a byte");
        assert_eq!(Key::from_hex("uncached-12-ab"), None);
        assert_eq!(Key::from_hex(&"zz".repeat(32)), None);
        assert_eq!(Key::from_hex(""), None);
    }
}
