//! The worker's half of the input root: download a `Directory` tree from the CAS (every
//! blob checked against its digest) and write it out as the action's execution root.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bazel_remote_apis::build::bazel::remote::execution::v2::{Digest, Directory};
use prost::Message;

use super::fetch_all;
use crate::reapi::Client;

/// A `Directory` tree, by relative path.
pub async fn fetch_tree(
    client: &Client,
    root: &Digest,
) -> Result<BTreeMap<PathBuf, Directory>, String> {
    let mut tree = BTreeMap::new();
    let mut level = vec![(PathBuf::new(), root.clone())];
    while !level.is_empty() {
        let digests: Vec<Digest> = level.iter().map(|(_, d)| d.clone()).collect();
        let blobs = fetch_all(client, &digests).await?;
        let mut next = Vec::new();
        for ((path, _), bytes) in level.into_iter().zip(blobs) {
            let directory = Directory::decode(bytes.as_slice())
                .map_err(|e| format!("{}: not a Directory: {e}", path.display()))?;
            for child in &directory.directories {
                check_name(&child.name)?;
                let digest = child
                    .digest
                    .clone()
                    .ok_or("a directory node without digest")?;
                next.push((path.join(&child.name), digest));
            }
            tree.insert(path, directory);
        }
        level = next;
    }
    Ok(tree)
}

/// A node name must be one plain component: the tree must not write outside its root.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(format!("the input root has an invalid name {name:?}"));
    }
    Ok(())
}

/// Writes `tree` under `root` (which must be empty or absent), files downloaded in batches.
pub async fn write_tree(
    client: &Client,
    tree: &BTreeMap<PathBuf, Directory>,
    root: &Path,
) -> Result<usize, String> {
    let fail = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| format!("cannot write {}: {e}", path.display())
    };
    let mut files: Vec<(PathBuf, Digest, bool)> = Vec::new();
    for (rel, directory) in tree {
        let dir = root.join(rel);
        std::fs::create_dir_all(&dir).map_err(fail(&dir))?;
        for file in &directory.files {
            check_name(&file.name)?;
            let digest = file.digest.clone().ok_or("a file node without digest")?;
            files.push((dir.join(&file.name), digest, file.is_executable));
        }
        for link in &directory.symlinks {
            check_name(&link.name)?;
            let path = dir.join(&link.name);
            std::os::unix::fs::symlink(&link.target, &path).map_err(fail(&path))?;
        }
    }
    // Distinct contents once, in batches of a bounded size.
    let mut wanted: Vec<Digest> = files.iter().map(|(_, d, _)| d.clone()).collect();
    wanted.sort_by(|a, b| a.hash.cmp(&b.hash));
    wanted.dedup();
    let mut contents: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for chunk in wanted.chunks(512) {
        for (digest, bytes) in chunk.iter().zip(fetch_all(client, chunk).await?) {
            contents.insert(digest.hash.clone(), bytes);
        }
    }
    for (path, digest, executable) in &files {
        let bytes = contents.get(&digest.hash).map_or(&[][..], Vec::as_slice);
        std::fs::write(path, bytes).map_err(fail(path))?;
        if *executable {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                .map_err(fail(path))?;
        }
    }
    Ok(files.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape() {
        for bad in ["", ".", "..", "a/b", "a\0"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("dist").is_ok());
        assert!(check_name("..hidden").is_ok());
    }
}
