//! How big the cache may grow: `VT_CACHE_MAX_SIZE`, else the root task file's
//! `cacheMaxSize`, else a tenth of the file system holding the cache, at most 10 GiB.
//! `0` means no limit.

use std::path::Path;
use std::time::Duration;

/// The default's ceiling.
const DEFAULT_CEILING: u64 = 10 << 30;

/// Where the limit came from (`vt cache stats` says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Env,
    Config,
    Default,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimit {
    /// `None`: unlimited.
    pub bytes: Option<u64>,
    pub source: Source,
}

impl SizeLimit {
    pub fn describe(&self) -> String {
        let size = self.bytes.map_or("none".to_owned(), human);
        let source = match self.source {
            Source::Env => "from VT_CACHE_MAX_SIZE",
            Source::Config => "from cacheMaxSize",
            Source::Default => "default: a tenth of the disk, at most 10 GiB",
        };
        format!("{size} ({source})")
    }
}

/// Bytes in IEC units (`1.5 GiB`).
pub fn human(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

/// `500MB`, `2GiB`, `1.5 G`, `1048576`; `0` for no limit.
pub fn parse_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("{text:?} is not a size ({e}); write it like 500MB or 2GiB"))
}

/// `7d`, `12h`, `30min`, `2weeks`.
pub fn parse_age(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration ({e}); write it like 7d or 12h"))
}

/// The limit for the cache in `dir`, given the root task file's `cacheMaxSize`.
pub fn size_limit(configured: Option<u64>, dir: &Path) -> Result<SizeLimit, String> {
    let of = |bytes: u64, source| SizeLimit {
        bytes: (bytes > 0).then_some(bytes),
        source,
    };
    if let Some(text) = std::env::var_os("VT_CACHE_MAX_SIZE").filter(|v| !v.is_empty()) {
        let text = text.to_string_lossy();
        return parse_size(&text)
            .map(|b| of(b, Source::Env))
            .map_err(|e| format!("VT_CACHE_MAX_SIZE: {e}"));
    }
    if let Some(bytes) = configured {
        return Ok(of(bytes, Source::Config));
    }
    Ok(of(default_limit(dir), Source::Default))
}

fn default_limit(dir: &Path) -> u64 {
    // The directory may not exist yet: ask about the nearest ancestor that does.
    let existing = dir.ancestors().find(|d| d.exists()).unwrap_or(dir);
    match nix::sys::statvfs::statvfs(existing) {
        Ok(fs) => (fs.blocks() * fs.fragment_size() / 10).min(DEFAULT_CEILING),
        Err(_) => DEFAULT_CEILING,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_in_the_words_users_write() {
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("12h"), Ok(Duration::from_secs(12 * 3_600)));
        assert!(parse_age("soon").is_err());
    }

    #[test]
    fn the_default_is_a_tenth_of_the_disk_at_most_ten_gib() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limit = default_limit(&dir.path().join("not/yet"));
        assert!(limit > 0 && limit <= DEFAULT_CEILING, "{limit}");
    }
}
