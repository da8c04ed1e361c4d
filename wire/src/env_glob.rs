//! Matching environment variable names against a glob, shared by the runner (which answers
//! `GetEnvs`) and the detached client (which answers from its own environment), so both
//! agree on what a glob means.

use std::ffi::OsString;

use globset::GlobBuilder;

use crate::message::{ErrorKind, WireError};

/// The `(name, value)` pairs whose name matches `glob`, sorted by name.
pub fn matching(
    glob: &str,
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Vec<(OsString, OsString)>, WireError> {
    let matcher = GlobBuilder::new(glob)
        // Env names have no path structure: `*` matches any run of characters.
        .literal_separator(false)
        .backslash_escape(true)
        .build()
        .map_err(|e| {
            WireError::new(
                ErrorKind::InvalidArgument,
                format!("bad env glob {glob:?}: {e}"),
            )
        })?
        .compile_matcher();
    let mut pairs: Vec<_> = vars
        .into_iter()
        .filter(|(name, _)| matcher.is_match(name))
        .collect();
    pairs.sort();
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(names: &[&str]) -> Vec<(OsString, OsString)> {
        names
            .iter()
            .map(|n| (OsString::from(n), OsString::from("v")))
            .collect()
    }

    #[test]
    fn star_matches_prefix_and_sorts() {
        let got = matching("VITE_*", vars(&["VITE_B", "NODE_ENV", "VITE_A", "XVITE_C"]))
            .expect("valid glob");
        let names: Vec<_> = got.into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            vec![OsString::from("VITE_A"), OsString::from("VITE_B")]
        );
    }

    #[test]
    fn bad_glob_is_invalid_argument() {
        let err = matching("VITE_[", vars(&[])).expect_err("unclosed class");
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
    }
}
