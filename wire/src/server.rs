//! The runner's side: an async server that accepts private channels from any number of
//! processes of one task and hands each decoded request to a [`Handler`].
//!
//! Nothing a tool sends can crash the server: every malformed, oversized or mis-versioned
//! message is answered with an error (or the channel is closed) and reported to
//! [`Handler::protocol_error`], so the runner can refuse to cache a run it could not fully
//! understand.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use tokio::task::JoinSet;
use tokio_seqpacket::UnixSeqpacket;
use tokio_seqpacket::ancillary::OwnedAncillaryMessage;

use crate::MAX_MESSAGE_LEN;
use crate::codec::{self, CodecError};
use crate::message::{ErrorKind, Hello, PROTOCOL_VERSION, Request, Response, WireError};

/// Who is on the other end of a private channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The pid the kernel reports for the channel's creator (`SO_PEERCRED`), which a tool
    /// cannot forge; falls back to the claimed pid if the kernel gives none.
    pub pid: u32,
    /// The pid the tool wrote in its `Hello`.
    pub claimed_pid: u32,
}

/// What went wrong with a message from a tool.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("a Hello arrived without a channel fd attached")]
    HelloWithoutChannel,
    #[error("a message exceeded {MAX_MESSAGE_LEN} bytes")]
    TooLarge,
    #[error("undecodable message: {0}")]
    Malformed(#[from] CodecError),
    #[error("client speaks protocol version {client}, vt speaks {PROTOCOL_VERSION}")]
    UnsupportedVersion { client: u32 },
    #[error("socket I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("reply could not be encoded: {0}")]
    Reply(CodecError),
}

/// Serves the requests of one task.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, peer: &Peer, request: Request) -> Response;

    /// Called for every message the server could not serve as the tool intended.
    fn protocol_error(&self, peer: Option<&Peer>, error: &ProtocolError);
}

/// Creates the two ends of a task's socket: `(runner_end, task_end)`, both close-on-exec.
/// The spawner makes `task_end` inheritable in the child only, names it in `VT_IPC_FD`, and
/// drops its own copy after spawning so the server sees end-of-stream when the task is gone.
pub fn endpoints() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

pub struct Server {
    socket: UnixSeqpacket,
}

impl Server {
    /// Wraps the runner end; must be called inside a tokio runtime.
    pub fn new(runner_end: OwnedFd) -> std::io::Result<Server> {
        Ok(Server {
            socket: async_socket(runner_end)?,
        })
    }

    /// Accepts private channels until every copy of the task end is closed and every
    /// channel has hung up.
    pub async fn serve<H: Handler>(self, handler: Arc<H>) {
        let mut channels = JoinSet::new();
        let mut buf = vec![0u8; MAX_MESSAGE_LEN];
        let mut ancillary = [0u8; 256];
        loop {
            let (info, reader) = match self
                .socket
                .recv_with_ancillary(&mut buf, &mut ancillary)
                .await
            {
                Ok(received) => received,
                Err(e) => {
                    handler.protocol_error(None, &ProtocolError::Io(e));
                    break;
                }
            };
            let mut fds: Vec<OwnedFd> = Vec::new();
            for message in reader.into_messages() {
                if let OwnedAncillaryMessage::FileDescriptors(received) = message {
                    fds.extend(received);
                }
            }
            if info.bytes_read() == 0 && fds.is_empty() {
                break; // end of stream: the task and all its descendants closed their copies
            }
            // Extra fds are dropped (closed) here; only the first is the channel.
            let channel = fds.into_iter().next();
            let hello = if info.truncated() {
                Err(ProtocolError::TooLarge)
            } else {
                codec::decode::<Hello>(&buf[..info.bytes_read()]).map_err(ProtocolError::from)
            };
            match (hello, channel) {
                (Ok(hello), Some(channel)) => {
                    channels.spawn(serve_channel(channel, hello, Arc::clone(&handler)));
                }
                (Ok(_), None) => handler.protocol_error(None, &ProtocolError::HelloWithoutChannel),
                (Err(error), channel) => {
                    handler.protocol_error(None, &error);
                    if let Some(channel) = channel {
                        // Tell the sender why, then hang up on it.
                        if let Ok(socket) = async_socket(channel) {
                            let _ = send(&socket, &error_response(&error)).await;
                        }
                    }
                }
            }
        }
        while channels.join_next().await.is_some() {}
    }
}

async fn serve_channel<H: Handler>(channel: OwnedFd, hello: Hello, handler: Arc<H>) {
    let socket = match async_socket(channel) {
        Ok(socket) => socket,
        Err(e) => return handler.protocol_error(None, &ProtocolError::Io(e)),
    };
    let kernel_pid = socket
        .peer_cred()
        .ok()
        .and_then(|cred| cred.pid())
        .and_then(|pid| u32::try_from(pid).ok());
    let peer = Peer {
        pid: kernel_pid.unwrap_or(hello.pid),
        claimed_pid: hello.pid,
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        let error = ProtocolError::UnsupportedVersion {
            client: hello.protocol_version,
        };
        handler.protocol_error(Some(&peer), &error);
        let _ = send(&socket, &error_response(&error)).await;
        return; // dropping the socket closes the channel
    }
    if let Err(e) = send(
        &socket,
        &Response::Welcome {
            protocol_version: PROTOCOL_VERSION,
        },
    )
    .await
    {
        return handler.protocol_error(Some(&peer), &e);
    }
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    loop {
        // A tool that just got an answer often asks again at once: poll briefly before the
        // runtime puts this thread to sleep (a cross-CPU wake-up costs more than the spin).
        crate::channel::spin_until_readable(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            std::time::Duration::from_micros(50),
        );
        let info = match socket.recv(&mut buf).await {
            Ok(info) => info,
            Err(e) => return handler.protocol_error(Some(&peer), &ProtocolError::Io(e)),
        };
        if info.bytes_read() == 0 {
            return; // the client hung up
        }
        let request = if info.truncated() {
            Err(ProtocolError::TooLarge)
        } else {
            codec::decode::<Request>(&buf[..info.bytes_read()]).map_err(ProtocolError::from)
        };
        let response = match request {
            Ok(request) => handler.handle(&peer, request),
            Err(error) => {
                handler.protocol_error(Some(&peer), &error);
                error_response(&error)
            }
        };
        if let Err(error) = send(&socket, &response).await {
            handler.protocol_error(Some(&peer), &error);
            if matches!(error, ProtocolError::Io(_)) {
                return;
            }
        }
    }
}

/// Registers a socket with tokio. `UnixSeqpacket::try_from` keeps the fd's blocking mode,
/// and a blocking fd would stall the whole runtime thread in `recv`, so switch it first.
/// (Received fds are the client's *other* end of its pair: no one else shares this flag.)
fn async_socket(fd: OwnedFd) -> std::io::Result<UnixSeqpacket> {
    let flags = OFlag::from_bits_retain(fcntl(&fd, FcntlArg::F_GETFL)?);
    fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    UnixSeqpacket::try_from(fd)
}

/// Sends a response; one too large to encode is replaced by a `TooLarge` error reply.
async fn send(socket: &UnixSeqpacket, response: &Response) -> Result<(), ProtocolError> {
    let (bytes, outcome) = match codec::encode(response) {
        Ok(bytes) => (bytes, Ok(())),
        Err(e) => {
            let fallback = Response::Error(WireError::new(ErrorKind::TooLarge, e.to_string()));
            (
                codec::encode(&fallback).map_err(ProtocolError::Reply)?,
                Err(ProtocolError::Reply(e)),
            )
        }
    };
    socket.send(&bytes).await?;
    outcome
}

fn error_response(error: &ProtocolError) -> Response {
    let kind = match error {
        ProtocolError::UnsupportedVersion { .. } => ErrorKind::UnsupportedVersion,
        ProtocolError::TooLarge => ErrorKind::TooLarge,
        ProtocolError::Malformed(_) | ProtocolError::HelloWithoutChannel => ErrorKind::Malformed,
        ProtocolError::Io(_) | ProtocolError::Reply(_) => ErrorKind::Internal,
    };
    Response::Error(WireError::new(kind, error.to_string()))
}
