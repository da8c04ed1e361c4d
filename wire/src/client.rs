//! The synchronous client a runner-aware tool calls.
//!
//! Inside vt (`VT_IPC_FD` set) each call is one request/response on this process's private
//! channel, opened on first use and reopened after `fork`. Outside vt every call is a cheap
//! no-op that answers from the process environment, so tools can call it unconditionally.
//!
//! ```no_run
//! # fn main() -> Result<(), wire::ClientError> {
//! let vt = wire::Client::from_env()?;
//! // Tracked: the name and its value (or its absence) become part of this task's cache key.
//! let mode = vt.get_env("NODE_ENV", true)?;
//! // Every VITE_* variable, tracked as a set: one appearing or changing is a miss.
//! let public = vt.get_envs("VITE_*", true)?;
//! // This tool's own cache is neither input nor output of the task.
//! vt.ignore_input("node_modules/.cache/my-tool")?;
//! vt.ignore_output("node_modules/.cache/my-tool")?;
//! // Something vt cannot see decided the output: do not store this run.
//! if std::env::var_os("MY_TOOL_NONDETERMINISTIC").is_some() {
//!     vt.disable_cache()?;
//! }
//! # let _ = (mode, public);
//! # Ok(())
//! # }
//! ```

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::channel::{self, Channel, ChannelError};
use crate::message::{Hello, PROTOCOL_VERSION, Request, Response, WireError};
use crate::{IPC_FD_ENV, MAX_MESSAGE_LEN, env_glob};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{IPC_FD_ENV}={value:?} is not a usable vt IPC socket: {reason}")]
    BadInheritedFd { value: OsString, reason: String },
    #[error("talking to vt failed: {0}")]
    Channel(#[from] ChannelError),
    #[error("vt refused the request: {0}")]
    Refused(#[from] WireError),
    #[error("vt answered {got:?} to {request}")]
    UnexpectedResponse {
        request: &'static str,
        got: Box<Response>,
    },
    #[error("cannot make {path:?} absolute: {source}")]
    Cwd {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A connection to the vt running this process, or a detached stand-in outside vt.
#[derive(Debug)]
pub struct Client {
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    Detached,
    Attached(Mutex<Attached>),
}

#[derive(Debug)]
struct Attached {
    /// Close-on-exec duplicate of the inherited socket; only ever carries `Hello`s.
    shared: Channel,
    /// This process's private channel and the pid that opened it (a forked child must not
    /// reuse its parent's channel: replies would be read by whichever process asks first).
    private: Option<(u32, Channel)>,
    buf: Vec<u8>,
}

impl Client {
    /// Connects to vt if this process runs under it (`VT_IPC_FD` set), else a detached client.
    pub fn from_env() -> Result<Client, ClientError> {
        match std::env::var_os(IPC_FD_ENV) {
            None => Ok(Client::detached()),
            Some(value) => {
                let raw: RawFd = value
                    .to_str()
                    .and_then(|s| s.trim().parse().ok())
                    .filter(|fd| *fd >= 0)
                    .ok_or_else(|| ClientError::BadInheritedFd {
                        value: value.clone(),
                        reason: "not a file descriptor number".into(),
                    })?;
                Client::connect(raw).map_err(|e| ClientError::BadInheritedFd {
                    value,
                    reason: e.to_string(),
                })
            }
        }
    }

    /// A client that never talks to vt and answers from the process environment.
    pub fn detached() -> Client {
        Client {
            mode: Mode::Detached,
        }
    }

    /// Connects through an inherited SEQPACKET fd. The private channel opens on first use.
    pub fn connect(inherited: RawFd) -> Result<Client, ChannelError> {
        let shared = Channel::dup_inherited(inherited)?;
        Ok(Client {
            mode: Mode::Attached(Mutex::new(Attached {
                shared,
                private: None,
                buf: vec![0; MAX_MESSAGE_LEN],
            })),
        })
    }

    pub fn is_attached(&self) -> bool {
        matches!(self.mode, Mode::Attached(_))
    }

    /// The value of `name` in the task's environment. When `tracked`, vt makes the name and
    /// value (or its absence) part of the cache key.
    pub fn get_env(
        &self,
        name: impl AsRef<OsStr>,
        tracked: bool,
    ) -> Result<Option<OsString>, ClientError> {
        let name = name.as_ref();
        match self.call(Request::GetEnv {
            name: name.to_owned(),
            tracked,
        })? {
            Some(Response::Env(value)) => Ok(value),
            None => Ok(std::env::var_os(name)),
            Some(other) => Err(unexpected("GetEnv", other)),
        }
    }

    /// Every variable whose name matches `glob`, sorted by name.
    pub fn get_envs(
        &self,
        glob: &str,
        tracked: bool,
    ) -> Result<Vec<(OsString, OsString)>, ClientError> {
        match self.call(Request::GetEnvs {
            glob: glob.to_owned(),
            tracked,
        })? {
            Some(Response::Envs(pairs)) => Ok(pairs),
            None => Ok(env_glob::matching(glob, std::env::vars_os())?),
            Some(other) => Err(unexpected("GetEnvs", other)),
        }
    }

    /// Excludes a file or directory subtree (relative to the cwd, or absolute) from inputs.
    pub fn ignore_input(&self, path: impl AsRef<Path>) -> Result<(), ClientError> {
        let path = absolute(path.as_ref())?;
        self.expect_done("IgnoreInput", Request::IgnoreInput { path })
    }

    /// Excludes a file or directory subtree (relative to the cwd, or absolute) from outputs.
    pub fn ignore_output(&self, path: impl AsRef<Path>) -> Result<(), ClientError> {
        let path = absolute(path.as_ref())?;
        self.expect_done("IgnoreOutput", Request::IgnoreOutput { path })
    }

    /// Asks vt not to store this run.
    pub fn disable_cache(&self) -> Result<(), ClientError> {
        self.expect_done("DisableCache", Request::DisableCache)
    }

    fn expect_done(&self, name: &'static str, request: Request) -> Result<(), ClientError> {
        match self.call(request)? {
            Some(Response::Done) | None => Ok(()),
            Some(other) => Err(unexpected(name, other)),
        }
    }

    /// One round trip; `None` when detached.
    fn call(&self, request: Request) -> Result<Option<Response>, ClientError> {
        let Mode::Attached(attached) = &self.mode else {
            return Ok(None);
        };
        // A poisoned lock only means another thread panicked mid-call; the channel state is
        // still consistent at message granularity, so keep going.
        let mut guard = attached
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let attached = &mut *guard;
        let pid = std::process::id();
        let reuse = matches!(&attached.private, Some((owner, _)) if *owner == pid);
        if !reuse {
            attached.private = None;
            let channel = open_private(&attached.shared, pid, &mut attached.buf)?;
            attached.private = Some((pid, channel));
        }
        let Some((_, private)) = &attached.private else {
            unreachable!("private channel was just set");
        };
        let result = private.send_message(&request, None).and_then(|()| {
            // vt answers in microseconds: wait for it awake rather than asleep.
            private.spin_until_readable(SPIN);
            private.recv_message::<Response>(&mut attached.buf)
        });
        match result {
            Ok((Response::Error(e), _)) => Err(e.into()),
            Ok((response, _)) => Ok(Some(response)),
            Err(e) => {
                // Do not reuse a channel that failed mid-exchange: a late reply would answer
                // the next request.
                attached.private = None;
                Err(e.into())
            }
        }
    }
}

/// How long a caller polls for a reply before sleeping (see
/// [`Channel::spin_until_readable`]).
const SPIN: std::time::Duration = std::time::Duration::from_micros(100);

fn open_private(shared: &Channel, pid: u32, buf: &mut [u8]) -> Result<Channel, ClientError> {
    let (mine, theirs) = channel::pair()?;
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        pid,
    };
    shared.send_message(&hello, Some(theirs.as_fd()))?;
    drop(theirs);
    match mine.recv_message::<Response>(buf)? {
        (Response::Welcome { .. }, _) => Ok(mine),
        (Response::Error(e), _) => Err(e.into()),
        (other, _) => Err(unexpected("Hello", other)),
    }
}

fn unexpected(request: &'static str, got: Response) -> ClientError {
    ClientError::UnexpectedResponse {
        request,
        got: Box::new(got),
    }
}

fn absolute(path: &Path) -> Result<PathBuf, ClientError> {
    std::path::absolute(path).map_err(|source| ClientError::Cwd {
        path: path.to_owned(),
        source,
    })
}
