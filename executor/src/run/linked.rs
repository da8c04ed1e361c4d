//! The packages a sandboxed task's `node_modules` link to outside the workspace: the sandbox
//! shows them read-only, or a linked package could not be loaded.
//!
//! Listing a `node_modules` and resolving every link in it was most of planning a sandboxed
//! task: a workspace's root `node_modules` holds a link per package, and every task lists
//! it again (100 `readlink`s and their resolution, ~0.65 ms of each sandboxed task of a
//! 100-package workspace). What one listing found is therefore kept for the process and
//! used again while the directory is unchanged: its `stat` (device, inode, modification
//! and change times) and those of the `@scope` directories listed with it are the same.
//! Adding, removing or replacing a link changes the directory's times (a symlink cannot be
//! changed in place), so a task that installs packages is seen by the tasks after it.
//!
//! A listing of a directory changed in the last [`RACY`] is not kept (git's "racily clean"
//! rule, `sandbox::stamp`). What the memo does not see is a
//! directory *on the way* to a link's target being replaced by another link in the middle
//! of a run; that only changes what the sandbox shows, never a cache key: the task's
//! accesses are traced in the sandbox either way, and a path it could not see is recorded
//! as missing, which the host then contradicts.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use sandbox::stamp::{RACY, Stamp};
use sandbox::trace::paths::{CanonicalDirs, Resolved};

/// The listings of this process.
static LISTINGS: Listings = Listings::new(RACY);

/// Where the `node_modules` of `dirs` (the directory itself, its packages and scoped
/// packages) link outside `root`, resolved.
pub fn linked_outside(root: &Path, dirs: &[&Path]) -> Vec<PathBuf> {
    linked_outside_with(&LISTINGS, root, dirs)
}

fn linked_outside_with(listings: &Listings, root: &Path, dirs: &[&Path]) -> Vec<PathBuf> {
    let mut linked: Vec<PathBuf> = Vec::new();
    let mut canonical_dirs = CanonicalDirs::default();
    for dir in dirs {
        let modules = dir.join("node_modules");
        let Ok(meta) = std::fs::symlink_metadata(&modules) else {
            continue;
        };
        let found = if meta.file_type().is_symlink() {
            shown_for(root, &modules, None, &mut canonical_dirs)
                .into_iter()
                .collect()
        } else if meta.is_dir() {
            listings.shown(root, &modules, &meta, &mut canonical_dirs)
        } else {
            Vec::new()
        };
        for shown in found {
            if !linked.iter().any(|l| shown.starts_with(l)) {
                linked.retain(|l| !l.starts_with(&shown));
                linked.push(shown);
            }
        }
    }
    linked
}

/// What the sandbox shows for the symlink `link` when it leads outside `root`.
///
/// A package that lives in another `node_modules` finds its own dependencies beside it
/// there (Node resolves from the real path): that whole `node_modules` is shown, the
/// outermost one, or the linked package cannot load them (rollup's
/// `@rollup/rollup-linux-x64-gnu`).
fn shown_for(
    root: &Path,
    link: &Path,
    listed: Option<&Listed>,
    canonical_dirs: &mut CanonicalDirs,
) -> Option<PathBuf> {
    let target = link_target(link, listed, canonical_dirs)?;
    if target.starts_with(root) {
        return None;
    }
    Some(
        target
            .ancestors()
            .filter(|a| a.file_name().is_some_and(|n| n == "node_modules"))
            .last()
            .map_or(target.clone(), Path::to_path_buf),
    )
}

/// What `canonicalize(link)` gives for the symlink `link`, with the directories its targets
/// are in resolved once (`canonical_dirs`): a workspace's `node_modules` holds a link per
/// package, all into the same few directories, and resolving each whole took a `readlink`
/// per component of every one (~700 per sandboxed task of a 100-package workspace, 1.4 ms).
///
/// `listed`: the directory the link was listed from and its name there, read with
/// `readlinkat` instead of walking the link's whole path again.
fn link_target(
    link: &Path,
    listed: Option<&Listed>,
    canonical_dirs: &mut CanonicalDirs,
) -> Option<PathBuf> {
    let target = match listed {
        Some(listed) => PathBuf::from(nix::fcntl::readlinkat(listed.dir, listed.name).ok()?),
        None => std::fs::read_link(link).ok()?,
    };
    let ends_in_a_name = matches!(target.components().next_back(), Some(Component::Normal(_)))
        && !target.as_os_str().as_encoded_bytes().ends_with(b"/");
    match (
        ends_in_a_name,
        canonical_dirs.resolve(&link.parent()?.join(&target)),
    ) {
        (true, Resolved::Found(resolved)) => Some(resolved),
        // Dangling, as `canonicalize` would find it.
        (true, Resolved::Missing(_)) => None,
        // A link to a link, or a target `canonicalize` must read whole.
        _ => std::fs::canonicalize(link).ok(),
    }
}

/// One `node_modules` listed: the stamps it was listed under (the directory first, then
/// each `@scope` directory in it) and what it shows.
struct Listing {
    root: PathBuf,
    stamps: Vec<(PathBuf, Stamp)>,
    shown: Vec<PathBuf>,
}

/// The listings kept, by `node_modules` path.
struct Listings {
    kept: Mutex<Option<HashMap<PathBuf, Listing>>>,
    racy: Duration,
    /// How many times a directory was listed (for tests).
    listed: AtomicUsize,
}

impl Listings {
    const fn new(racy: Duration) -> Listings {
        Listings {
            kept: Mutex::new(None),
            racy,
            listed: AtomicUsize::new(0),
        }
    }

    /// What the directory `modules` (whose `lstat` is `meta`) shows, from its kept listing
    /// while that is still what the directories say, else listed now.
    fn shown(
        &self,
        root: &Path,
        modules: &Path,
        meta: &std::fs::Metadata,
        canonical_dirs: &mut CanonicalDirs,
    ) -> Vec<PathBuf> {
        let stamp = Stamp::of(meta);
        {
            let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(listing) = kept.as_ref().and_then(|k| k.get(modules))
                && listing.root == root
                && listing.stamps.first().map(|(_, s)| *s) == Some(stamp)
                && listing.stamps[1..]
                    .iter()
                    .all(|(path, kept)| Stamp::now(path) == Some(*kept))
            {
                return listing.shown.clone();
            }
        }
        // Before listing: a change from here on may carry a time before the listing's end.
        let started = SystemTime::now();
        let listing = list(root, modules, stamp, canonical_dirs);
        self.listed.fetch_add(1, Ordering::Relaxed);
        let shown = listing.shown.clone();
        if listing
            .stamps
            .iter()
            .all(|(_, s)| s.settled_before(started, self.racy))
        {
            self.kept
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(HashMap::new)
                .insert(modules.to_path_buf(), listing);
        }
        shown
    }
}

/// A link found in a listing: the listed directory, open, and the link's name in it.
struct Listed<'a> {
    dir: &'a std::fs::File,
    name: &'a std::ffi::OsStr,
}

/// Lists `modules` (stamped `stamp`) and its `@scope` directories.
fn list(root: &Path, modules: &Path, stamp: Stamp, canonical_dirs: &mut CanonicalDirs) -> Listing {
    let mut listing = Listing {
        root: root.to_path_buf(),
        stamps: vec![(modules.to_path_buf(), stamp)],
        shown: Vec::new(),
    };
    list_links(root, modules, &mut listing, canonical_dirs, true);
    listing
}

/// Adds what the links in `dir` show to `listing`, and with `scopes`, what those in its
/// `@scope` directories show (with their stamps).
fn list_links(
    root: &Path,
    dir: &Path,
    listing: &mut Listing,
    canonical_dirs: &mut CanonicalDirs,
    scopes: bool,
) {
    // The directory open once: each link is read relative to it (`readlinkat`), not by a
    // walk of its whole path (~100 per sandboxed task of a 100-package workspace).
    let (Ok(open), Ok(entries)) = (std::fs::File::open(dir), std::fs::read_dir(dir)) else {
        return;
    };
    for entry in entries.flatten() {
        // The listing's own file types: no `lstat` per entry.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let name = entry.file_name();
        if kind.is_symlink() {
            let listed = Listed {
                dir: &open,
                name: &name,
            };
            let shown = shown_for(root, &entry.path(), Some(&listed), canonical_dirs);
            listing.shown.extend(shown);
            continue;
        }
        if !scopes || !name.as_encoded_bytes().starts_with(b"@") {
            continue;
        }
        let path = entry.path();
        let Some(scope_stamp) = Stamp::now(&path) else {
            continue;
        };
        listing.stamps.push((path.clone(), scope_stamp));
        list_links(root, &path, listing, canonical_dirs, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_linked_from_another_node_modules_brings_that_node_modules() {
        // The workspace's node_modules/rollup → /store/node_modules/rollup, whose native
        // part is its sibling /store/node_modules/@rollup/rollup-linux-x64-gnu.
        let temp = tempfile::tempdir().expect("tempdir");
        let base = std::fs::canonicalize(temp.path()).expect("canonical");
        let (ws, store) = (base.join("ws"), base.join("store/node_modules"));
        std::fs::create_dir_all(store.join("rollup")).expect("rollup");
        std::fs::create_dir_all(store.join("@rollup/rollup-linux-x64-gnu")).expect("native");
        std::fs::create_dir_all(base.join("linked-alone")).expect("alone");
        std::fs::create_dir_all(ws.join("node_modules/@scope")).expect("node_modules");
        let link = |target: &Path, at: &str| {
            std::os::unix::fs::symlink(target, ws.join(at)).expect("symlink")
        };
        link(&store.join("rollup"), "node_modules/rollup");
        link(
            &store.join("@rollup/rollup-linux-x64-gnu"),
            "node_modules/@scope/native",
        );
        link(&base.join("linked-alone"), "node_modules/alone");
        let mut linked = linked_outside(&ws, &[&ws]);
        linked.sort();
        assert_eq!(linked, [base.join("linked-alone"), store.clone()]);
    }

    /// Sets `path`'s modification time an hour back (its change time stays now).
    fn age(path: &Path) {
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let file = std::fs::File::open(path).expect("open");
        file.set_modified(hour_ago).expect("set_modified");
    }

    #[test]
    fn a_listing_is_used_again_until_its_directories_change() {
        let temp = tempfile::tempdir().expect("tempdir");
        let base = std::fs::canonicalize(temp.path()).expect("canonical");
        let ws = base.join("ws");
        for dir in [
            "ws/node_modules/@scope",
            "outside/a",
            "outside/b",
            "outside/c",
        ] {
            std::fs::create_dir_all(base.join(dir)).expect("mkdir");
        }
        let link = |target: &str, at: &str| {
            std::os::unix::fs::symlink(base.join(target), ws.join(at)).expect("symlink")
        };
        link("outside/a", "node_modules/a");
        // Nothing counts as racy here: the directories were all changed just now.
        let listings = Listings::new(Duration::ZERO);
        let linked = || {
            let mut linked = linked_outside_with(&listings, &ws, &[&ws]);
            linked.sort();
            linked
        };
        let listed = || listings.listed.load(Ordering::Relaxed);
        let outside = |names: &[&str]| -> Vec<PathBuf> {
            names.iter().map(|n| base.join("outside").join(n)).collect()
        };
        // Changes `dir` by `change`, its times set back an hour first and listed under
        // those, so that the change shows in its times even where the clock did not tick.
        let change = |dir: &str, change: &dyn Fn()| {
            age(&ws.join(dir));
            linked();
            change();
        };

        assert_eq!(linked(), outside(&["a"]));
        assert_eq!(listed(), 1);
        // Unchanged: the kept listing, no new one.
        assert_eq!(linked(), outside(&["a"]));
        assert_eq!(listed(), 1);

        // A link added to node_modules: listed again, and seen.
        change("node_modules", &|| link("outside/b", "node_modules/b"));
        let before = listed();
        assert_eq!(linked(), outside(&["a", "b"]));
        assert_eq!(listed(), before + 1);

        // A link added inside a scope: its directory's times change, not node_modules'.
        change("node_modules/@scope", &|| {
            link("outside/c", "node_modules/@scope/c")
        });
        let before = listed();
        assert_eq!(linked(), outside(&["a", "b", "c"]));
        assert_eq!(listed(), before + 1);

        // A link replaced by one to elsewhere (removed and made again).
        change("node_modules", &|| {
            std::fs::remove_file(ws.join("node_modules/a")).expect("rm");
            link("outside/c", "node_modules/a");
        });
        assert_eq!(linked(), outside(&["b", "c"]));
        // And kept again while nothing changes.
        let before = listed();
        assert_eq!(linked(), outside(&["b", "c"]));
        assert_eq!(listed(), before);
    }

    #[test]
    fn a_directory_changed_just_now_is_listed_again() {
        let temp = tempfile::tempdir().expect("tempdir");
        let base = std::fs::canonicalize(temp.path()).expect("canonical");
        let ws = base.join("ws");
        std::fs::create_dir_all(ws.join("node_modules")).expect("mkdir");
        std::fs::create_dir_all(base.join("outside")).expect("mkdir");
        std::os::unix::fs::symlink(base.join("outside"), ws.join("node_modules/x"))
            .expect("symlink");
        // node_modules changed a moment ago: within the racy window, so never kept.
        let listings = Listings::new(Duration::from_secs(3600));
        for round in 1..=3 {
            assert_eq!(
                linked_outside_with(&listings, &ws, &[&ws]),
                [base.join("outside")]
            );
            assert_eq!(listings.listed.load(Ordering::Relaxed), round);
        }
    }

    #[test]
    fn a_links_target_is_what_canonicalize_gives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = std::fs::canonicalize(dir.path()).expect("canonical");
        let link = |target: &str, at: &str| {
            std::os::unix::fs::symlink(target, base.join(at)).expect("symlink")
        };
        std::fs::create_dir_all(base.join("ws/packages/a")).expect("mkdir");
        std::fs::create_dir_all(base.join("ws/node_modules")).expect("mkdir");
        std::fs::create_dir_all(base.join("store/pkg")).expect("mkdir");
        std::fs::write(base.join("store/file"), "").expect("write");
        link("../store", "alias"); // a directory reached through a link
        link("../packages/a", "ws/node_modules/a");
        link(
            &base.join("store/pkg").to_string_lossy(),
            "ws/node_modules/abs",
        );
        link("../../alias/pkg", "ws/node_modules/via-alias");
        link("a", "ws/node_modules/chain"); // a link to a link
        link("../../store/missing", "ws/node_modules/dangling");
        link("../../store/pkg/", "ws/node_modules/slash");
        link("../../store/pkg/..", "ws/node_modules/dotdot");
        link("../../store/file", "ws/node_modules/file");
        let mut memo = CanonicalDirs::default();
        for name in [
            "a",
            "abs",
            "via-alias",
            "chain",
            "dangling",
            "slash",
            "dotdot",
            "file",
        ] {
            let path = base.join("ws/node_modules").join(name);
            let canonical = std::fs::canonicalize(&path).ok();
            assert_eq!(link_target(&path, None, &mut memo), canonical, "{name}");
            // Read from the listed directory, as a listing does.
            let dir = std::fs::File::open(base.join("ws/node_modules")).expect("open");
            let name = std::ffi::OsStr::new(name);
            let listed = Listed { dir: &dir, name };
            assert_eq!(
                link_target(&path, Some(&listed), &mut memo),
                canonical,
                "{name:?}, listed"
            );
        }
    }
}
