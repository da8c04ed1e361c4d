//! Every message survives encode → decode unchanged, including non-UTF-8 names, and the
//! decoder rejects (never panics on) anything else.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use proptest::prelude::*;
use wire::codec::{self, CodecError};
use wire::{ErrorKind, Hello, MAX_MESSAGE_LEN, Request, Response, WireError};

fn os_string() -> impl Strategy<Value = OsString> {
    // Arbitrary bytes except NUL: covers invalid UTF-8 like b"\xff\xfe".
    proptest::collection::vec(1u8..=255, 0..64).prop_map(OsString::from_vec)
}

fn error_kind() -> impl Strategy<Value = ErrorKind> {
    prop_oneof![
        Just(ErrorKind::UnsupportedVersion),
        Just(ErrorKind::Malformed),
        Just(ErrorKind::TooLarge),
        Just(ErrorKind::InvalidArgument),
        Just(ErrorKind::Internal),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (os_string(), any::<bool>()).prop_map(|(name, tracked)| Request::GetEnv { name, tracked }),
        (".*", any::<bool>()).prop_map(|(glob, tracked)| Request::GetEnvs { glob, tracked }),
        os_string().prop_map(|p| Request::IgnoreInput {
            path: PathBuf::from(p)
        }),
        os_string().prop_map(|p| Request::IgnoreOutput {
            path: PathBuf::from(p)
        }),
        Just(Request::DisableCache),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        any::<u32>().prop_map(|protocol_version| Response::Welcome { protocol_version }),
        proptest::option::of(os_string()).prop_map(Response::Env),
        proptest::collection::vec((os_string(), os_string()), 0..8).prop_map(Response::Envs),
        Just(Response::Done),
        (error_kind(), ".*")
            .prop_map(|(kind, message)| Response::Error(WireError { kind, message })),
    ]
}

proptest! {
    #[test]
    fn request_round_trips(value in request()) {
        let bytes = codec::encode(&value).expect("small message encodes");
        prop_assert_eq!(codec::decode::<Request>(&bytes).expect("decodes"), value);
    }

    #[test]
    fn response_round_trips(value in response()) {
        let bytes = codec::encode(&value).expect("small message encodes");
        prop_assert_eq!(codec::decode::<Response>(&bytes).expect("decodes"), value);
    }

    #[test]
    fn hello_round_trips(protocol_version in any::<u32>(), pid in any::<u32>()) {
        let value = Hello { protocol_version, pid };
        let bytes = codec::encode(&value).expect("encodes");
        prop_assert_eq!(codec::decode::<Hello>(&bytes).expect("decodes"), value);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = codec::decode::<Request>(&bytes);
        let _ = codec::decode::<Response>(&bytes);
        let _ = codec::decode::<Hello>(&bytes);
    }

    #[test]
    fn every_strict_prefix_is_rejected(value in request()) {
        let bytes = codec::encode(&value).expect("encodes");
        for cut in 0..bytes.len() {
            prop_assert!(codec::decode::<Request>(&bytes[..cut]).is_err(), "prefix of {} bytes decoded", cut);
        }
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut bytes = codec::encode(&Request::DisableCache).expect("encodes");
    bytes.push(0);
    assert!(matches!(
        codec::decode::<Request>(&bytes),
        Err(CodecError::TrailingBytes(1))
    ));
}

#[test]
fn oversize_is_rejected_both_ways() {
    let huge = Request::IgnoreInput {
        path: PathBuf::from("x".repeat(MAX_MESSAGE_LEN)),
    };
    assert!(matches!(
        codec::encode(&huge),
        Err(CodecError::TooLarge { .. })
    ));
    let bytes = vec![0u8; MAX_MESSAGE_LEN + 1];
    assert!(matches!(
        codec::decode::<Request>(&bytes),
        Err(CodecError::TooLarge { .. })
    ));
}

#[test]
fn variant_tag_out_of_range_is_malformed() {
    assert!(matches!(
        codec::decode::<Request>(&[200]),
        Err(CodecError::Malformed(_))
    ));
}
