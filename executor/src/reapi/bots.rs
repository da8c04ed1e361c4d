//! The Remote Workers API (`google.devtools.remoteworkers.v1test2`), the half of REAPI a
//! worker speaks: a bot opens a session, long-polls it for leases, and reports each lease
//! completed with its `ActionResult`.
//!
//! These protos are not in `bazel-remote-apis` (nor in bazel's repository); the messages
//! below are written by hand with the field numbers of Google's `bots.proto` and
//! `worker.proto` (checked against the descriptors BuildGrid 0.4.4 ships). Only the fields
//! vt reads or sets are declared: protobuf skips unknown fields on decode, and a field vt
//! does not send is simply absent.

use std::time::Duration;

use bazel_remote_apis::google::protobuf::{Any, Timestamp};
use bazel_remote_apis::google::rpc::Status;
use tonic::codegen::http::uri::PathAndQuery;

use super::{Client, RemoteError};

#[derive(Clone, PartialEq, prost::Message)]
pub struct BotSession {
    /// Assigned by the server: `{instance}/{uuid}`.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Chosen by the bot; unique per bot.
    #[prost(string, tag = "2")]
    pub bot_id: String,
    #[prost(enumeration = "BotStatus", tag = "3")]
    pub status: i32,
    #[prost(message, optional, tag = "4")]
    pub worker: Option<Worker>,
    #[prost(message, repeated, tag = "5")]
    pub leases: Vec<Lease>,
    #[prost(message, optional, tag = "6")]
    pub expire_time: Option<Timestamp>,
    /// Opaque to the bot; BuildGrid uses it to tell a changed session from a keepalive.
    #[prost(string, tag = "7")]
    pub version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Lease {
    #[prost(string, tag = "7")]
    pub id: String,
    /// The work: an `Action`, or the `Digest` of one.
    #[prost(message, optional, tag = "8")]
    pub payload: Option<Any>,
    /// Set by the bot on completion: the `ActionResult`.
    #[prost(message, optional, tag = "9")]
    pub result: Option<Any>,
    #[prost(enumeration = "LeaseState", tag = "2")]
    pub state: i32,
    #[prost(message, optional, tag = "3")]
    pub status: Option<Status>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Worker {
    #[prost(message, repeated, tag = "1")]
    pub devices: Vec<Device>,
    #[prost(message, repeated, tag = "2")]
    pub properties: Vec<Property>,
    /// `Worker.Config`: settings such as BuildGrid's `capacity`.
    #[prost(message, repeated, tag = "3")]
    pub configs: Vec<Property>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Device {
    #[prost(string, tag = "1")]
    pub handle: String,
    #[prost(message, repeated, tag = "2")]
    pub properties: Vec<Property>,
}

/// `Worker.Property`, `Worker.Config` and `Device.Property` have the same shape.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Property {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum BotStatus {
    Unspecified = 0,
    Ok = 1,
    Unhealthy = 2,
    HostRebooting = 3,
    BotTerminating = 4,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum LeaseState {
    Unspecified = 0,
    Pending = 1,
    Active = 2,
    Completed = 4,
    Cancelled = 5,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateBotSessionRequest {
    /// The instance name.
    #[prost(string, tag = "1")]
    pub parent: String,
    #[prost(message, optional, tag = "2")]
    pub bot_session: Option<BotSession>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateBotSessionRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub bot_session: Option<BotSession>,
}

const CREATE: &str = "/google.devtools.remoteworkers.v1test2.Bots/CreateBotSession";
const UPDATE: &str = "/google.devtools.remoteworkers.v1test2.Bots/UpdateBotSession";

impl Client {
    /// Opens a session. The server may hold the call until it has work (up to `wait`).
    pub async fn create_bot_session(
        &self,
        session: BotSession,
        wait: Duration,
    ) -> Result<BotSession, RemoteError> {
        let request = CreateBotSessionRequest {
            parent: self.instance.clone(),
            bot_session: Some(session),
        };
        self.bots_call("CreateBotSession", CREATE, request, wait)
            .await
    }

    /// Reports the session's leases and long-polls for new ones (up to `wait`).
    pub async fn update_bot_session(
        &self,
        session: BotSession,
        wait: Duration,
    ) -> Result<BotSession, RemoteError> {
        let request = UpdateBotSessionRequest {
            name: session.name.clone(),
            bot_session: Some(session),
        };
        self.bots_call("UpdateBotSession", UPDATE, request, wait)
            .await
    }

    async fn bots_call<Req: prost::Message + 'static>(
        &self,
        method: &'static str,
        path: &'static str,
        message: Req,
        wait: Duration,
    ) -> Result<BotSession, RemoteError> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| RemoteError::Protocol(format!("{method}: {e}")))?;
        let mut request = self.request(message);
        // The deadline travels as `grpc-timeout`: BuildGrid long-polls for at most 80% of it.
        request.set_timeout(wait);
        let path = PathAndQuery::from_static(path);
        let codec = tonic_prost::ProstCodec::<Req, BotSession>::default();
        grpc.unary(request, path, codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| RemoteError::Call {
                call: method,
                status: Box::new(status),
            })
    }
}

/// An `Any` holding `message` under its protobuf type name.
pub fn pack<M: prost::Message>(type_name: &str, message: &M) -> Any {
    Any {
        type_url: format!("type.googleapis.com/{type_name}"),
        value: message.encode_to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn lease_fields_use_the_proto_numbers() {
        // `Lease.id` is field 7 (a string, wire type 2): tag byte (7 << 3) | 2 = 0x3a.
        let lease = Lease {
            id: "x".into(),
            state: LeaseState::Completed as i32,
            ..Lease::default()
        };
        let bytes = lease.encode_to_vec();
        assert_eq!(bytes, vec![0x10, 4, 0x3a, 1, b'x']);
        assert_eq!(Lease::decode(bytes.as_slice()).ok(), Some(lease));
    }

    #[test]
    fn session_round_trips() {
        let session = BotSession {
            name: "/abc".into(),
            bot_id: "host-1".into(),
            status: BotStatus::Ok as i32,
            leases: vec![Lease {
                id: "op".into(),
                payload: Some(pack("x.Y", &Status::default())),
                ..Lease::default()
            }],
            version: "3".into(),
            ..BotSession::default()
        };
        let decoded = BotSession::decode(session.encode_to_vec().as_slice());
        assert_eq!(decoded.ok(), Some(session));
    }
}
