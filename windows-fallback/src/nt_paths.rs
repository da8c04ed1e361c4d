//! NT object paths, as the kernel's file events carry them, → Win32 paths, as the cache
//! and users spell them.
//!
//! `\Device\HarddiskVolume3\src\a.ts` → `C:\src\a.ts` (with the volume map from
//! `QueryDosDeviceW` on each drive letter), `\??\C:\x` and `\\?\C:\x` → `C:\x`,
//! `\Device\Mup\server\share\x` and `\??\UNC\server\share\x` → `\\server\share\x`.
//! `.`/`..` are removed, separators unified to `\`, and drive letters upper-cased (NTFS
//! names are case-insensitive, but vt keeps the rest of the case it was given).

/// Device name → drive (`\Device\HarddiskVolume3` → `C:`), as `QueryDosDeviceW` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeMap {
    devices: Vec<(String, String)>,
}

impl VolumeMap {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> VolumeMap {
        let mut devices: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(device, drive)| {
                (
                    device.trim_end_matches('\\').to_owned(),
                    drive.to_uppercase(),
                )
            })
            .collect();
        // Longest device first: `\Device\HarddiskVolume10` before `\Device\HarddiskVolume1`.
        devices.sort_by_key(|(device, _)| std::cmp::Reverse(device.len()));
        VolumeMap { devices }
    }

    /// The Win32 path of `nt`, or `None` for a device vt cannot name (a named pipe, a
    /// volume without a drive letter): the caller records a gap unless it is ignorable.
    pub fn to_win32(&self, nt: &str) -> Option<String> {
        let path = nt.replace('/', "\\");
        let rest = if let Some(rest) = path
            .strip_prefix(r"\??\UNC\")
            .or_else(|| path.strip_prefix(r"\\?\UNC\"))
            .or_else(|| path.strip_prefix(r"\Device\Mup\"))
        {
            return Some(clean(&format!(r"\\{rest}"), 2 + unc_root_len(rest)));
        } else if let Some(rest) = path
            .strip_prefix(r"\??\")
            .or_else(|| path.strip_prefix(r"\\?\"))
        {
            rest.to_owned()
        } else if path.starts_with(r"\Device\") {
            let (device, drive) = self.devices.iter().find(|(device, _)| {
                path.strip_prefix(device.as_str())
                    .is_some_and(|r| r.is_empty() || r.starts_with('\\'))
            })?;
            format!("{drive}{}", &path[device.len()..])
        } else {
            path
        };
        let bytes = rest.as_bytes();
        if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
            let drive = rest[..1].to_uppercase();
            let mut tail = rest[2..].to_owned();
            if !tail.starts_with('\\') {
                tail.insert(0, '\\');
            }
            return Some(clean(&format!("{drive}:{tail}"), 3));
        }
        None
    }
}

/// Length of `server\share` at the start of a UNC remainder (the part `..` cannot leave).
fn unc_root_len(rest: &str) -> usize {
    let mut parts = rest.splitn(3, '\\');
    let server = parts.next().unwrap_or("");
    let share = parts.next().unwrap_or("");
    server.len() + 1 + share.len()
}

/// Removes `.`/`..` and doubled separators after the first `root` bytes.
fn clean(path: &str, root: usize) -> String {
    let root = root.min(path.len());
    let (head, tail) = path.split_at(root);
    let mut parts: Vec<&str> = Vec::new();
    for part in tail.split('\\') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let mut out = head.trim_end_matches('\\').to_owned();
    out.push('\\');
    out.push_str(&parts.join("\\"));
    if out.ends_with('\\') && out.len() > root.max(3) {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> VolumeMap {
        VolumeMap::new([
            (r"\Device\HarddiskVolume1".to_owned(), "d:".to_owned()),
            (r"\Device\HarddiskVolume10".to_owned(), "E:".to_owned()),
            (r"\Device\HarddiskVolume3".to_owned(), "C:".to_owned()),
        ])
    }

    #[test]
    fn device_paths_become_drive_paths() {
        let m = map();
        assert_eq!(
            m.to_win32(r"\Device\HarddiskVolume3\Users\me\app\src\a.ts")
                .as_deref(),
            Some(r"C:\Users\me\app\src\a.ts")
        );
        assert_eq!(
            m.to_win32(r"\Device\HarddiskVolume10\x").as_deref(),
            Some(r"E:\x")
        );
        assert_eq!(
            m.to_win32(r"\Device\HarddiskVolume1\y").as_deref(),
            Some(r"D:\y")
        );
        assert_eq!(
            m.to_win32(r"\Device\HarddiskVolume3").as_deref(),
            Some(r"C:\")
        );
        // Not a prefix match on a longer volume number.
        assert_eq!(m.to_win32(r"\Device\HarddiskVolume30\z"), None);
    }

    #[test]
    fn prefixes_unc_and_dots() {
        let m = map();
        assert_eq!(
            m.to_win32(r"\??\c:\a\.\b\..\c.txt").as_deref(),
            Some(r"C:\a\c.txt")
        );
        assert_eq!(m.to_win32(r"\\?\C:\a\\b").as_deref(), Some(r"C:\a\b"));
        assert_eq!(
            m.to_win32(r"\Device\Mup\server\share\dir\f").as_deref(),
            Some(r"\\server\share\dir\f")
        );
        assert_eq!(
            m.to_win32(r"\??\UNC\server\share\..\..\f").as_deref(),
            Some(r"\\server\share\f")
        );
        assert_eq!(
            m.to_win32("C:/mixed/separators").as_deref(),
            Some(r"C:\mixed\separators")
        );
        // Named pipes and other devices have no Win32 file path.
        assert_eq!(m.to_win32(r"\Device\NamedPipe\vt-ipc"), None);
        assert_eq!(m.to_win32(r"relative\path"), None);
    }
}
