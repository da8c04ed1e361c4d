//! Encoding and strict decoding of single messages.
//!
//! SEQPACKET preserves message boundaries, so a message is exactly one postcard value:
//! no length prefix, and trailing bytes are an error (they mean a confused or hostile peer).

use serde::{Serialize, de::DeserializeOwned};

use crate::MAX_MESSAGE_LEN;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("message of {len} bytes exceeds the {MAX_MESSAGE_LEN}-byte limit")]
    TooLarge { len: usize },
    #[error("message is empty")]
    Empty,
    #[error("message cannot be decoded: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("message has {0} unexpected trailing bytes")]
    TrailingBytes(usize),
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let bytes = postcard::to_stdvec(value)?;
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(CodecError::TooLarge { len: bytes.len() });
    }
    Ok(bytes)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.is_empty() {
        return Err(CodecError::Empty);
    }
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(CodecError::TooLarge { len: bytes.len() });
    }
    let (value, rest) = postcard::take_from_bytes(bytes)?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes(rest.len()));
    }
    Ok(value)
}
