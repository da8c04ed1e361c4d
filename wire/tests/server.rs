//! The client against a real server over real SEQPACKET sockets, including hostile input.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use wire::channel::{self, Channel};
use wire::server::{self, Handler, Peer, ProtocolError, Server};
use wire::{
    Client, ClientError, ErrorKind, Hello, MAX_MESSAGE_LEN, PROTOCOL_VERSION, Request, Response,
};

#[derive(Default)]
struct Recorder {
    requests: Mutex<Vec<(u32, Request)>>,
    errors: Mutex<Vec<String>>,
}

impl Handler for Recorder {
    fn handle(&self, peer: &Peer, request: Request) -> Response {
        self.requests
            .lock()
            .expect("lock")
            .push((peer.pid, request.clone()));
        match request {
            Request::GetEnv { name, .. } => {
                let mut value = b"value-of-".to_vec();
                value.extend(name.into_vec());
                Response::Env(Some(OsString::from_vec(value)))
            }
            Request::GetEnvs { glob, .. } => {
                let vars = [("VITE_A", "1"), ("VITE_B", "2"), ("OTHER", "3")]
                    .map(|(k, v)| (OsString::from(k), OsString::from(v)));
                match wire::env_glob::matching(&glob, vars) {
                    Ok(pairs) => Response::Envs(pairs),
                    Err(e) => Response::Error(e),
                }
            }
            Request::IgnoreInput { .. } | Request::IgnoreOutput { .. } | Request::DisableCache => {
                Response::Done
            }
        }
    }

    fn protocol_error(&self, _peer: Option<&Peer>, error: &ProtocolError) {
        self.errors.lock().expect("lock").push(error.to_string());
    }
}

/// Starts a server with a fresh [`Recorder`] on its own runtime thread.
fn start() -> (OwnedFd, Arc<Recorder>, std::thread::JoinHandle<()>) {
    let recorder = Arc::new(Recorder::default());
    let (task_end, thread) = start_with(Arc::clone(&recorder));
    (task_end, recorder, thread)
}

/// Starts a server for `handler` on its own runtime thread; returns the task end and the
/// thread, which ends once every copy of the task end and every channel is closed.
fn start_with<H: Handler>(handler: Arc<H>) -> (OwnedFd, std::thread::JoinHandle<()>) {
    let (runner_end, task_end) = server::endpoints().expect("socketpair");
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            Server::new(runner_end)
                .expect("server")
                .serve(handler)
                .await
        });
    });
    (task_end, thread)
}

#[test]
fn every_call_round_trips() {
    let (task_end, recorder, thread) = start();
    let client = Client::connect(task_end.as_raw_fd()).expect("connect");
    assert!(client.is_attached());
    let name = OsString::from_vec(b"N\xffAME".to_vec());
    let value = client.get_env(&name, true).expect("get_env").expect("some");
    assert_eq!(value.into_vec(), b"value-of-N\xffAME".to_vec());
    let envs = client.get_envs("VITE_*", false).expect("get_envs");
    assert_eq!(
        envs,
        vec![("VITE_A".into(), "1".into()), ("VITE_B".into(), "2".into())]
    );
    client.ignore_input("relative/dir").expect("ignore_input");
    client.ignore_output("/abs/out").expect("ignore_output");
    client.disable_cache().expect("disable_cache");
    let err = client.get_envs("[", true).expect_err("bad glob refused");
    assert!(
        matches!(err, ClientError::Refused(ref e) if e.kind == ErrorKind::InvalidArgument),
        "{err}"
    );

    drop(client);
    drop(task_end);
    thread.join().expect("server ends when the task end closes");
    let requests = recorder.requests.lock().expect("lock");
    assert_eq!(requests.len(), 6);
    assert!(
        requests.iter().all(|(pid, _)| *pid == std::process::id()),
        "peer pid comes from SO_PEERCRED"
    );
    let cwd = std::env::current_dir().expect("cwd");
    assert_eq!(
        requests[2].1,
        Request::IgnoreInput {
            path: cwd.join("relative/dir")
        },
        "relative paths are made absolute"
    );
    assert!(recorder.errors.lock().expect("lock").is_empty());
}

/// Opens a private channel by hand so the test can send what a buggy tool would.
fn raw_private(task_end: &OwnedFd, version: u32) -> (Channel, Response) {
    let shared = Channel::dup_inherited(task_end.as_raw_fd()).expect("dup");
    let (mine, theirs) = channel::pair().expect("pair");
    shared
        .send_message(
            &Hello {
                protocol_version: version,
                pid: 1,
            },
            Some(theirs.as_fd()),
        )
        .expect("send hello");
    drop(theirs);
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    let (reply, _) = mine.recv_message::<Response>(&mut buf).expect("reply");
    (mine, reply)
}

fn expect_error(reply: Response, kind: ErrorKind) {
    match reply {
        Response::Error(e) => assert_eq!(e.kind, kind, "{e}"),
        other => panic!("expected {kind:?} error, got {other:?}"),
    }
}

#[test]
fn hostile_input_gets_errors_and_the_server_keeps_serving() {
    let (task_end, recorder, thread) = start();
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];

    // Unknown protocol version: error reply, then the channel is closed.
    let (old, reply) = raw_private(&task_end, PROTOCOL_VERSION + 1);
    expect_error(reply, ErrorKind::UnsupportedVersion);
    assert!(matches!(
        old.recv(&mut buf),
        Err(channel::ChannelError::Closed)
    ));

    // Garbage Hello with a channel attached: error reply on that channel.
    let shared = Channel::dup_inherited(task_end.as_raw_fd()).expect("dup");
    let (mine, theirs) = channel::pair().expect("pair");
    shared
        .send(b"\xff\xff\xff\xff\xff\xff", Some(theirs.as_fd()))
        .expect("send");
    drop(theirs);
    expect_error(
        mine.recv_message::<Response>(&mut buf).expect("reply").0,
        ErrorKind::Malformed,
    );

    // Garbage Hello without a channel, and a valid Hello without a channel: recorded only.
    shared.send(b"junk", None).expect("send");
    shared
        .send_message(
            &Hello {
                protocol_version: PROTOCOL_VERSION,
                pid: 7,
            },
            None,
        )
        .expect("send");

    // On a good channel: garbage, trailing bytes and an oversize message each get an error
    // reply, and the channel still works afterwards.
    let (good, reply) = raw_private(&task_end, PROTOCOL_VERSION);
    assert_eq!(
        reply,
        Response::Welcome {
            protocol_version: PROTOCOL_VERSION
        }
    );
    good.send(&[250, 1, 2, 3], None).expect("send garbage");
    expect_error(
        good.recv_message::<Response>(&mut buf).expect("reply").0,
        ErrorKind::Malformed,
    );
    let mut trailing = wire::codec::encode(&Request::DisableCache).expect("encode");
    trailing.push(9);
    good.send(&trailing, None).expect("send trailing");
    expect_error(
        good.recv_message::<Response>(&mut buf).expect("reply").0,
        ErrorKind::Malformed,
    );
    good.send(&vec![1u8; MAX_MESSAGE_LEN + 10], None)
        .expect("send oversize");
    expect_error(
        good.recv_message::<Response>(&mut buf).expect("reply").0,
        ErrorKind::TooLarge,
    );
    good.send(&[], None).expect("send empty");
    // An empty SEQPACKET message reads as end-of-stream on the server: the channel closes.
    assert!(matches!(
        good.recv(&mut buf),
        Err(channel::ChannelError::Closed)
    ));

    // A fresh client still gets served.
    let client = Client::connect(task_end.as_raw_fd()).expect("connect");
    assert_eq!(
        client.get_env("X", false).expect("get_env"),
        Some("value-of-X".into())
    );

    drop((client, shared, mine, old, good));
    drop(task_end);
    thread.join().expect("server ends");
    let errors = recorder.errors.lock().expect("lock").len();
    assert_eq!(
        errors,
        7,
        "every bad message is reported: {:?}",
        recorder.errors.lock().expect("lock")
    );
}

#[test]
fn oversize_reply_becomes_too_large_error() {
    struct Huge;
    impl Handler for Huge {
        fn handle(&self, _: &Peer, _: Request) -> Response {
            Response::Env(Some(OsString::from("v".repeat(MAX_MESSAGE_LEN * 2))))
        }
        fn protocol_error(&self, _: Option<&Peer>, _: &ProtocolError) {}
    }
    let (task_end, thread) = start_with(Arc::new(Huge));
    let client = Client::connect(task_end.as_raw_fd()).expect("connect");
    let err = client.get_env("BIG", true).expect_err("too large");
    assert!(
        matches!(err, ClientError::Refused(ref e) if e.kind == ErrorKind::TooLarge),
        "{err}"
    );
    drop((client, task_end));
    thread.join().expect("server ends");
}

#[test]
fn detached_client_reads_the_process_environment() {
    let client = Client::detached();
    assert!(!client.is_attached());
    let path = std::env::var_os("PATH");
    assert_eq!(client.get_env("PATH", true).expect("get_env"), path);
    let envs = client.get_envs("PAT?", true).expect("get_envs");
    assert!(envs.iter().any(|(k, _)| k == "PATH"));
    client.ignore_input("x").expect("no-op");
    client.ignore_output(PathBuf::from("/y")).expect("no-op");
    client.disable_cache().expect("no-op");
}

#[test]
fn a_bad_inherited_fd_is_a_clear_error() {
    let file = tempfile_fd();
    let err = Client::connect(file.as_raw_fd()).expect_err("a regular file is not a socket");
    assert!(err.to_string().contains("socket"), "{err}");
    let err = Client::connect(987_654).expect_err("closed fd");
    assert!(err.to_string().to_lowercase().contains("bad file"), "{err}");
}

fn tempfile_fd() -> std::fs::File {
    std::fs::File::open("/proc/self/status").expect("open a regular file")
}
