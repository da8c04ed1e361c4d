//! Any bytes into every decoder: never a panic, and whatever decodes re-encodes to a value
//! that decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::codec;
use wire::{Hello, Request, Response};

fn check<T>(data: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = codec::decode::<T>(data) {
        let bytes = codec::encode(&value).expect("a decoded message re-encodes");
        assert_eq!(codec::decode::<T>(&bytes).expect("re-encoded message decodes"), value);
    }
}

fuzz_target!(|data: &[u8]| {
    check::<Hello>(data);
    check::<Request>(data);
    check::<Response>(data);
});
