//! The messages of the protocol.
//!
//! [`Hello`] travels once over the shared, inherited fd together with the client's private
//! channel end; everything else travels on the private channel as [`Request`]/[`Response`].

use std::ffi::OsString;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::os_bytes;

/// Bumped on any incompatible change to these types. The server refuses other versions.
pub const PROTOCOL_VERSION: u32 = 1;

/// Opens a private channel: sent over the inherited fd with one fd attached (`SCM_RIGHTS`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u32,
    /// The pid the client believes it has; the server prefers the kernel's `SO_PEERCRED`.
    pub pid: u32,
}

/// A tool's request on its private channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The value the task's environment has for `name`. When `tracked`, the name and its
    /// value (including "unset") become part of the task's cache key.
    GetEnv {
        #[serde(with = "os_bytes")]
        name: OsString,
        tracked: bool,
    },
    /// Every variable whose name matches the glob (globset syntax).
    GetEnvs { glob: String, tracked: bool },
    /// Exclude a file or directory subtree from the task's recorded inputs.
    IgnoreInput {
        #[serde(with = "os_bytes::path")]
        path: PathBuf,
    },
    /// Exclude a file or directory subtree from the task's recorded outputs.
    IgnoreOutput {
        #[serde(with = "os_bytes::path")]
        path: PathBuf,
    },
    /// Do not store this run in the cache.
    DisableCache,
}

/// The runner's reply to a [`Hello`] or a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The private channel is open; the server speaks this version.
    Welcome { protocol_version: u32 },
    /// Reply to [`Request::GetEnv`].
    Env(#[serde(with = "os_bytes::option")] Option<OsString>),
    /// Reply to [`Request::GetEnvs`], sorted by name.
    Envs(#[serde(with = "os_bytes::pairs")] Vec<(OsString, OsString)>),
    /// Reply to requests that return nothing.
    Done,
    /// The request was not served.
    Error(WireError),
}

/// Why a request was not served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The peer speaks another protocol version.
    UnsupportedVersion,
    /// The message could not be decoded.
    Malformed,
    /// The message (or its reply) exceeds [`crate::MAX_MESSAGE_LEN`].
    TooLarge,
    /// The request was well formed but invalid (e.g. a bad glob).
    InvalidArgument,
    /// The runner failed to serve it.
    Internal,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::UnsupportedVersion => "unsupported protocol version",
            ErrorKind::Malformed => "malformed message",
            ErrorKind::TooLarge => "message too large",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::Internal => "internal error",
        })
    }
}

impl WireError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        WireError {
            kind,
            message: message.into(),
        }
    }
}
