//! The input root of a remote action: a set of workspace paths as a Merkle tree of REAPI
//! `Directory` messages, every blob keyed by its SHA-256 digest (the CAS dedupes).
//!
//! [`Listing`] is plain data (what each path is); [`Listing::tree`] turns it into messages,
//! so the tree's shape is unit-tested without a server.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    Digest, Directory, DirectoryNode, FileNode, SymlinkNode,
};
use prost::Message;

use crate::cache::remote::mapping::digest;

/// What one path of the input root is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File { content: Vec<u8>, executable: bool },
    Symlink { target: String },
    Dir,
}

/// Relative paths → nodes. Parent directories are implied.
#[derive(Debug, Default)]
pub struct Listing {
    pub nodes: BTreeMap<PathBuf, Node>,
}

/// The root directory's digest and every blob (directories and file contents) under it.
pub struct Tree {
    pub root: Digest,
    pub blobs: Vec<(Digest, Vec<u8>)>,
    pub files: usize,
    pub bytes: u64,
}

/// Whether `rel` is a plain relative path (no `..`, not absolute, not empty).
pub fn is_plain(rel: &Path) -> bool {
    !rel.as_os_str().is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)))
}

impl Listing {
    /// Adds `root/rel` as it is on disk now (a directory without its contents); a path
    /// that does not exist is left out, as are names that are not UTF-8 (REAPI paths are
    /// strings) and special files.
    pub fn add(&mut self, root: &Path, rel: &Path) -> std::io::Result<()> {
        if !is_plain(rel) || rel.to_str().is_none() || self.nodes.contains_key(rel) {
            return Ok(());
        }
        let path = root.join(rel);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(()),
            Err(e) => return Err(e),
        };
        let node = if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)?;
            match target.to_str() {
                Some(target) => Node::Symlink {
                    target: target.to_owned(),
                },
                None => return Ok(()),
            }
        } else if meta.is_dir() {
            Node::Dir
        } else if meta.is_file() {
            Node::File {
                content: std::fs::read(&path)?,
                executable: meta.permissions().mode() & 0o111 != 0,
            }
        } else {
            return Ok(());
        };
        self.nodes.insert(rel.to_path_buf(), node);
        Ok(())
    }

    /// Adds a directory and its entries (not theirs).
    pub fn add_with_entries(&mut self, root: &Path, rel: &Path) -> std::io::Result<()> {
        self.add(root, rel)?;
        if self.nodes.get(rel) != Some(&Node::Dir) {
            return Ok(());
        }
        for entry in std::fs::read_dir(root.join(rel))? {
            self.add(root, &rel.join(entry?.file_name()))?;
        }
        Ok(())
    }

    /// Adds everything under `rel` except the subtrees `skip` says no to.
    pub fn add_tree(
        &mut self,
        root: &Path,
        rel: &Path,
        skip: &dyn Fn(&Path) -> bool,
    ) -> std::io::Result<()> {
        self.add(root, rel)?;
        if self.nodes.get(rel) != Some(&Node::Dir) {
            return Ok(());
        }
        for entry in std::fs::read_dir(root.join(rel))? {
            let child = rel.join(entry?.file_name());
            if !skip(&child) {
                self.add_tree(root, &child, skip)?;
            }
        }
        Ok(())
    }

    /// The Merkle tree.
    pub fn tree(&self) -> Tree {
        // Every directory, the implied parents included, with its children's names.
        let mut dirs: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
        dirs.insert(PathBuf::new(), BTreeSet::new());
        for (path, node) in &self.nodes {
            if *node == Node::Dir {
                dirs.entry(path.clone()).or_default();
            }
            let mut child = path.clone();
            while let Some(parent) = child.parent().map(Path::to_path_buf) {
                dirs.entry(parent.clone())
                    .or_default()
                    .insert(child.clone());
                if parent.as_os_str().is_empty() {
                    break;
                }
                child = parent;
            }
        }
        let mut blobs = Vec::new();
        let mut digests: BTreeMap<PathBuf, Digest> = BTreeMap::new();
        let (mut files, mut bytes) = (0, 0);
        // Deepest first, so each directory's children are digested before it.
        let mut order: Vec<&PathBuf> = dirs.keys().collect();
        order.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for dir in order {
            let mut message = Directory::default();
            for child in &dirs[dir] {
                let name = child
                    .file_name()
                    .map(|n| String::from_utf8_lossy(n.as_bytes()).into_owned())
                    .unwrap_or_default();
                match self.nodes.get(child) {
                    Some(Node::File {
                        content,
                        executable,
                    }) => {
                        let d = digest(content);
                        files += 1;
                        bytes += content.len() as u64;
                        blobs.push((d.clone(), content.clone()));
                        message.files.push(FileNode {
                            name,
                            digest: Some(d),
                            is_executable: *executable,
                            ..FileNode::default()
                        });
                    }
                    Some(Node::Symlink { target }) => message.symlinks.push(SymlinkNode {
                        name,
                        target: target.clone(),
                        ..SymlinkNode::default()
                    }),
                    Some(Node::Dir) | None => message.directories.push(DirectoryNode {
                        name,
                        digest: digests.get(child).cloned(),
                    }),
                }
            }
            // REAPI wants each list sorted by name (the sets iterate in path order, which
            // for siblings is name order already; sort to be independent of that).
            message.files.sort_by(|a, b| a.name.cmp(&b.name));
            message.directories.sort_by(|a, b| a.name.cmp(&b.name));
            message.symlinks.sort_by(|a, b| a.name.cmp(&b.name));
            let encoded = message.encode_to_vec();
            let d = digest(&encoded);
            blobs.push((d.clone(), encoded));
            digests.insert(dir.clone(), d);
        }
        blobs.sort_by(|a, b| a.0.hash.cmp(&b.0.hash));
        blobs.dedup_by(|a, b| a.0 == b.0);
        Tree {
            root: digests.remove(Path::new("")).unwrap_or_default(),
            blobs,
            files,
            bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &str) -> Node {
        Node::File {
            content: content.as_bytes().to_vec(),
            executable: false,
        }
    }

    fn directory(tree: &Tree, digest: &Digest) -> Directory {
        let bytes = &tree
            .blobs
            .iter()
            .find(|(d, _)| d == digest)
            .expect("directory blob")
            .1;
        Directory::decode(bytes.as_slice()).expect("a Directory")
    }

    #[test]
    fn parents_are_implied_and_children_sorted() {
        let mut listing = Listing::default();
        listing.nodes.insert("pkg/src/b.js".into(), file("b"));
        listing.nodes.insert("pkg/src/a.js".into(), file("a"));
        listing.nodes.insert(
            "pkg/link".into(),
            Node::Symlink {
                target: "src".into(),
            },
        );
        listing.nodes.insert("pkg/dist".into(), Node::Dir);
        let tree = listing.tree();
        let root = directory(&tree, &tree.root);
        assert_eq!(root.directories.len(), 1);
        assert_eq!(root.directories[0].name, "pkg");
        let pkg = directory(&tree, root.directories[0].digest.as_ref().expect("digest"));
        let names: Vec<&str> = pkg.directories.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["dist", "src"]);
        assert_eq!(pkg.symlinks[0].target, "src");
        let src = directory(&tree, pkg.directories[1].digest.as_ref().expect("digest"));
        let files: Vec<&str> = src.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(files, ["a.js", "b.js"]);
        assert_eq!(tree.files, 2);
    }

    #[test]
    fn equal_contents_give_equal_digests() {
        let mut one = Listing::default();
        one.nodes.insert("a/x".into(), file("same"));
        let mut two = Listing::default();
        two.nodes.insert("a/x".into(), file("same"));
        assert_eq!(one.tree().root, two.tree().root);
        two.nodes.insert("a/y".into(), file("more"));
        assert_ne!(one.tree().root, two.tree().root);
    }

    #[test]
    fn escaping_paths_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("a"), "x").expect("write");
        let mut listing = Listing::default();
        listing.add(dir.path(), Path::new("../a")).expect("add");
        listing
            .add(dir.path(), Path::new("/etc/passwd"))
            .expect("add");
        listing.add(dir.path(), Path::new("missing")).expect("add");
        assert!(listing.nodes.is_empty());
        listing.add(dir.path(), Path::new("a")).expect("add");
        assert_eq!(listing.nodes.len(), 1);
    }
}
