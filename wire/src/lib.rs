//! The protocol between vt and the tools it runs ("runner-aware tools").
//!
//! vt creates a `SOCK_SEQPACKET` socketpair per task and leaves one end open in the task,
//! named by the environment variable [`IPC_FD_ENV`]. Every process of the task tree inherits
//! that same fd, so a client first opens a **private channel**: it makes its own socketpair,
//! sends one end to vt together with a [`Hello`] (via `SCM_RIGHTS`), and then talks
//! request/response on its private end. Replies therefore never cross between processes.
//!
//! Layers, from the bytes up:
//! - [`codec`]: postcard encoding with a hard size limit and strict decoding.
//! - [`channel`]: blocking SEQPACKET sockets that carry one message (and optionally one fd).
//! - [`client`]: the synchronous client tools call (a no-op outside vt).
//! - `server` (feature `server`): the async building block the runner uses.

pub mod channel;
pub mod client;
pub mod codec;
pub mod env_glob;
pub mod message;
mod os_bytes;
#[cfg(feature = "server")]
pub mod server;

pub use client::{Client, ClientError};
pub use message::{ErrorKind, Hello, PROTOCOL_VERSION, Request, Response, WireError};

/// Environment variable naming the inherited SEQPACKET fd in a task.
pub const IPC_FD_ENV: &str = "VT_IPC_FD";

/// Largest encoded message, in bytes, in either direction.
///
/// Bounded by what one AF_UNIX datagram can carry with the default socket buffers
/// (`net.core.wmem_default` is 208 KiB); a bigger reply is answered with
/// [`ErrorKind::TooLarge`] instead of being silently cut.
pub const MAX_MESSAGE_LEN: usize = 128 * 1024;
