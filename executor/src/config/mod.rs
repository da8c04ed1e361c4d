//! Config: the workspace, its packages, and their tasks (docs/architecture.md, "Config").
//!
//! A workspace is found from the cwd upward ([`workspace`]); each package's `package.json`
//! scripts are tasks ([`package`]), shaped by `vt.json` / `vite-task.json` ([`tasks`]).
//! Everything is validated before anything runs: a broken file stops the run with its path,
//! line and column.

pub mod package;
pub mod settings;
pub mod tasks;
pub mod workspace;

use std::path::PathBuf;

pub use package::Package;
pub use tasks::{PathSpec, TaskConfig};
pub use workspace::{Scope, Workspace};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no package.json found in {0} or any directory above it")]
    NoPackage(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "both {first} and {second} exist; vt reads one of them.\n  hint: merge them into vt.json"
    )]
    TwoConfigs { first: PathBuf, second: PathBuf },
    #[error("two packages are named {name:?}: {first} and {second}")]
    DuplicateName {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
}

/// Parses JSON with comments and trailing commas (JSONC), keeping line and column numbers
/// of errors exact: comments are replaced by spaces, not removed.
pub fn parse_jsonc<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    text: &str,
) -> Result<T, ConfigError> {
    let mut stripped = text.to_owned();
    json_strip_comments::strip(&mut stripped).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        line: 1,
        column: 1,
        message: format!("cannot strip comments: {e}"),
    })?;
    serde_json::from_str(&stripped).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        line: e.line(),
        column: e.column(),
        message: clean_serde_message(&e.to_string()),
    })
}

/// serde_json appends " at line L column C"; we already print `path:L:C:`.
fn clean_serde_message(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

pub fn read(path: &std::path::Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}
