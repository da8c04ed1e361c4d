//! The cache: fingerprints, the RocksDB store, output archives and replay.
//! (Fingerprinting and replay arrive with the executor issue; the store is here first so
//! RocksDB's native build is paid and proven from the start.)
pub mod store;
