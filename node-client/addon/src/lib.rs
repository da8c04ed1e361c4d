//! `@vt/client`'s native addon: Node cannot make a socketpair or pass an fd with
//! `SCM_RIGHTS`, so the JavaScript side calls the Rust [`wire::Client`] through N-API.
//!
//! One client per process, opened on first use; outside vt (no `VT_IPC_FD`) it is detached
//! and answers from the environment, which the JavaScript side does without loading us.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use napi::{Error, Result, Status};
use napi_derive::napi;

fn client() -> Result<&'static Mutex<wire::Client>> {
    static CLIENT: OnceLock<std::result::Result<Mutex<wire::Client>, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            wire::Client::from_env()
                .map(Mutex::new)
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::new(Status::GenericFailure, format!("vt client: {e}")))
}

fn call<T>(
    f: impl FnOnce(&wire::Client) -> std::result::Result<T, wire::ClientError>,
) -> Result<T> {
    let guard = client()?
        .lock()
        .map_err(|_| Error::new(Status::GenericFailure, "vt client: lock poisoned"))?;
    f(&guard).map_err(|e| Error::new(Status::GenericFailure, format!("vt client: {e}")))
}

/// Whether this process talks to a running vt.
#[napi]
pub fn is_attached() -> Result<bool> {
    call(|c| Ok(c.is_attached()))
}

/// The value of `name` in the environment vt gives tools; `tracked` makes it part of the key.
#[napi]
pub fn get_env(name: String, tracked: bool) -> Result<Option<String>> {
    call(|c| c.get_env(&name, tracked)).map(|v| v.map(|v| v.to_string_lossy().into_owned()))
}

/// Every variable whose name matches `glob`.
#[napi]
pub fn get_envs(glob: String, tracked: bool) -> Result<HashMap<String, String>> {
    call(|c| c.get_envs(&glob, tracked)).map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect()
    })
}

#[napi]
pub fn ignore_input(path: String) -> Result<()> {
    call(|c| c.ignore_input(&path))
}

#[napi]
pub fn ignore_output(path: String) -> Result<()> {
    call(|c| c.ignore_output(&path))
}

#[napi]
pub fn disable_cache() -> Result<()> {
    call(|c| c.disable_cache())
}
