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
//! The directories a link's target was looked up in are stamped with the listing too: a
//! workspace's links are `../packages/NAME`, so replacing `packages/NAME` by a link
//! elsewhere changes `packages`, not `node_modules`.
//!
//! A listing is also kept **between vt processes** ([`memo`]), in this user's private
//! directory: a lone sandboxed `vt exec` listed the root's `node_modules` for itself
//! (~0.65 ms of its start in a 100-package workspace) and now reads one small file and
//! checks a few stamps. Only a listing whose every link is of the usual shape is kept so
//! (`../`s or `/`, then plain names, resolving to where those names lead), because then the
//! stamps name every directory its resolution looked in; any other is listed by each
//! process, as before.
//!
//! A listing of a directory changed in the last [`RACY`] is not kept (git's "racily clean"
//! rule, `sandbox::stamp`). What a listing decides is only what the sandbox shows, never a
//! cache key: the task's accesses are traced in the sandbox either way, and a path it could
//! not see is recorded as missing, which the host then contradicts.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use sandbox::stamp::{RACY, Stamp};
use sandbox::trace::paths::{CanonicalDirs, Resolved};

/// The listings of this process.
static LISTINGS: Listings = Listings::new(RACY, memo::users);

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
            shown_for(
                root,
                &modules,
                None,
                &mut canonical_dirs,
                &mut Traversed::new(),
            )
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
    traversed: &mut Traversed,
) -> Option<PathBuf> {
    let target = link_target(link, listed, canonical_dirs, traversed)?;
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
    traversed: &mut Traversed,
) -> Option<PathBuf> {
    let target = match listed {
        Some(listed) => PathBuf::from(nix::fcntl::readlinkat(listed.dir, listed.name).ok()?),
        None => std::fs::read_link(link).ok()?,
    };
    let ends_in_a_name = matches!(target.components().next_back(), Some(Component::Normal(_)))
        && !target.as_os_str().as_encoded_bytes().ends_with(b"/");
    let parent = link.parent()?;
    let resolved = match (
        ends_in_a_name,
        canonical_dirs.resolve(&parent.join(&target)),
    ) {
        (true, Resolved::Found(resolved)) => Ok(resolved),
        // Dangling, as `canonicalize` would find it.
        (true, Resolved::Missing(resolved)) => Err(resolved),
        // A link to a link, or a target `canonicalize` must read whole.
        _ => {
            traversed.all_stamped = false;
            return std::fs::canonicalize(link).ok();
        }
    };
    let at = resolved.as_ref().unwrap_or_else(|missing| missing);
    traversed.add(parent, &target, at.parent());
    resolved.ok()
}

/// The directories the resolution of a listing's links looked in, beyond the listed ones.
struct Traversed {
    dirs: Vec<PathBuf>,
    /// Whether `dirs` holds every directory looked in: each link's target was a plain walk
    /// (see [`plain_walk`]) that resolved to where it lexically leads.
    all_stamped: bool,
}

impl Traversed {
    fn new() -> Traversed {
        Traversed {
            dirs: Vec::new(),
            all_stamped: true,
        }
    }

    /// Adds the directories looked in to resolve `target` from the real directory `from`,
    /// whose parent resolved to `resolved_parent`.
    fn add(&mut self, from: &Path, target: &Path, resolved_parent: Option<&Path>) {
        let Some((start, parent)) = plain_walk(from, target) else {
            self.all_stamped = false;
            return;
        };
        // A symlink on the way would have led elsewhere: the canonical directory would not
        // be the lexical one.
        if resolved_parent != Some(parent.as_path()) {
            self.all_stamped = false;
            return;
        }
        // The walk looked up a name in `start` and in each directory below it down to the
        // target's own directory.
        for dir in parent.ancestors() {
            if !self.dirs.iter().any(|d| d == dir) {
                self.dirs.push(dir.to_path_buf());
            }
            if dir == start {
                break;
            }
        }
    }
}

/// For a link in the real, canonical directory `from` whose target is `../` repeated (or
/// `/`), then plain names: the directory the walk starts looking names up in (`from`'s
/// ancestor, or `/`) and the target's directory, lexically. `None` for any other shape
/// (`.` or `..` after a name), whose walk the stamps could not follow.
fn plain_walk(from: &Path, target: &Path) -> Option<(PathBuf, PathBuf)> {
    let mut start = from.to_path_buf();
    let mut components = target.components().peekable();
    while let Some(c) = components.peek() {
        match c {
            Component::RootDir => start = PathBuf::from("/"),
            Component::ParentDir => {
                start.pop();
            }
            Component::CurDir => {}
            Component::Normal(_) => break,
            Component::Prefix(_) => return None,
        }
        components.next();
    }
    let mut walked = start.clone();
    for c in components {
        match c {
            Component::Normal(name) => walked.push(name),
            _ => return None,
        }
    }
    let parent = walked.parent()?.to_path_buf();
    // The target's own name must have been looked up in a directory of the walk.
    parent.starts_with(&start).then_some((start, parent))
}

/// One `node_modules` listed: the stamps it was listed under (the directory first, then
/// each `@scope` directory in it) and what it shows.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Listing {
    root: PathBuf,
    stamps: Vec<(PathBuf, Stamp)>,
    shown: Vec<PathBuf>,
    /// Whether `stamps` name every directory the links' resolution looked in, so that
    /// another process may use it ([`memo`]).
    all_stamped: bool,
}

impl Listing {
    /// Whether this listing of `modules` (stamped `stamp`) is what the directories say now.
    fn holds(&self, root: &Path, stamp: Stamp) -> bool {
        self.root == root
            && self.stamps.first().map(|(_, s)| *s) == Some(stamp)
            && self.stamps[1..]
                .iter()
                .all(|(path, kept)| Stamp::now(path) == Some(*kept))
    }
}

/// The listings kept, by `node_modules` path.
struct Listings {
    kept: Mutex<Option<HashMap<PathBuf, Listing>>>,
    racy: Duration,
    /// Where listings are kept between processes (`None`: nowhere).
    memo_dir: fn() -> Option<PathBuf>,
    /// How many times a directory was listed (for tests).
    listed: AtomicUsize,
}

impl Listings {
    const fn new(racy: Duration, memo_dir: fn() -> Option<PathBuf>) -> Listings {
        Listings {
            kept: Mutex::new(None),
            racy,
            memo_dir,
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
                && listing.holds(root, stamp)
            {
                return listing.shown.clone();
            }
        }
        let memo_dir = (self.memo_dir)();
        if let Some(listing) = memo_dir.as_deref().and_then(|dir| memo::load(dir, modules))
            && listing.holds(root, stamp)
        {
            let shown = listing.shown.clone();
            self.keep(modules, listing);
            return shown;
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
            if listing.all_stamped
                && let Some(dir) = &memo_dir
            {
                memo::save(dir, modules, &listing);
            }
            self.keep(modules, listing);
        }
        shown
    }

    fn keep(&self, modules: &Path, listing: Listing) {
        self.kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(HashMap::new)
            .insert(modules.to_path_buf(), listing);
    }
}

/// Listings kept between vt processes: one file per `node_modules`, in this user's private
/// directory (`sandbox::trace::user_subdir`), named for a hash of the directory's path and
/// holding that path, so a collision is a miss. Written to a temporary name and renamed, so
/// a reader sees a whole file or none; anything unreadable is a miss and is listed again.
mod memo {
    use std::hash::{Hash, Hasher};
    use std::io::Write;
    use std::path::{Path, PathBuf};

    use super::Listing;

    /// Bumped when [`Listing`]'s layout changes.
    const VERSION: u32 = 1;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Memo {
        version: u32,
        modules: PathBuf,
        listing: Listing,
    }

    /// This user's directory for them, found once per process.
    pub(super) fn users() -> Option<PathBuf> {
        static DIR: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
        DIR.get_or_init(|| sandbox::trace::user_subdir("node-modules-links"))
            .clone()
    }

    fn file(dir: &Path, modules: &Path) -> PathBuf {
        // Any stable hash: the file says which directory it is for.
        let mut hasher = std::hash::DefaultHasher::new();
        modules.hash(&mut hasher);
        dir.join(format!("{:016x}", hasher.finish()))
    }

    pub(super) fn load(dir: &Path, modules: &Path) -> Option<Listing> {
        let bytes = std::fs::read(file(dir, modules)).ok()?;
        let memo: Memo = postcard::from_bytes(&bytes).ok()?;
        (memo.version == VERSION && memo.modules == modules && memo.listing.all_stamped)
            .then_some(memo.listing)
    }

    /// More memos than this (a file per `node_modules` ever listed: tests and benchmarks
    /// make workspaces by the hundred) and the others are removed when one is written.
    pub(super) const MAX_FILES: usize = 256;

    pub(super) fn save(dir: &Path, modules: &Path, listing: &Listing) {
        let path = file(dir, modules);
        if let Ok(entries) = std::fs::read_dir(dir) {
            let entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            if entries.len() >= MAX_FILES {
                for other in entries.iter().filter(|e| **e != path) {
                    let _ = std::fs::remove_file(other);
                }
            }
        }
        let memo = Memo {
            version: VERSION,
            modules: modules.to_path_buf(),
            listing: listing.clone(),
        };
        let Ok(bytes) = postcard::to_stdvec(&memo) else {
            return;
        };
        // A memo that cannot be written is listed again next time.
        let _ = tempfile::Builder::new()
            .prefix(".links-")
            .tempfile_in(dir)
            .and_then(|mut temp| {
                temp.write_all(&bytes)?;
                temp.persist(&path).map_err(|e| e.error)
            });
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
        all_stamped: true,
    };
    let mut traversed = Traversed::new();
    list_links(
        root,
        modules,
        &mut listing,
        canonical_dirs,
        &mut traversed,
        true,
    );
    for dir in traversed.dirs {
        if listing.stamps.iter().any(|(listed, _)| *listed == dir) {
            continue;
        }
        match Stamp::now(&dir) {
            Some(stamp) => listing.stamps.push((dir, stamp)),
            // Gone since: the next look lists again.
            None => listing.all_stamped = false,
        }
    }
    listing.all_stamped &= traversed.all_stamped;
    listing
}

/// Adds what the links in `dir` show to `listing`, and with `scopes`, what those in its
/// `@scope` directories show (with their stamps).
fn list_links(
    root: &Path,
    dir: &Path,
    listing: &mut Listing,
    canonical_dirs: &mut CanonicalDirs,
    traversed: &mut Traversed,
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
            let shown = shown_for(
                root,
                &entry.path(),
                Some(&listed),
                canonical_dirs,
                traversed,
            );
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
        list_links(root, &path, listing, canonical_dirs, traversed, false);
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

    fn no_memo() -> Option<PathBuf> {
        None
    }

    thread_local! {
        /// The memo directory of the test running on this thread.
        static MEMO_DIR: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
    }

    fn this_tests_memo() -> Option<PathBuf> {
        MEMO_DIR.with(|d| d.borrow().clone())
    }

    #[test]
    fn a_plain_walk_is_the_directories_a_target_is_looked_up_in() {
        let walk = |from: &str, target: &str| {
            plain_walk(Path::new(from), Path::new(target))
                .map(|(start, parent)| (start.display().to_string(), parent.display().to_string()))
        };
        let pair = |a: &str, b: &str| Some((a.to_string(), b.to_string()));
        assert_eq!(
            walk("/ws/node_modules", "../packages/a"),
            pair("/ws", "/ws/packages")
        );
        assert_eq!(
            walk("/ws/node_modules/@s", "../../p/a"),
            pair("/ws", "/ws/p")
        );
        assert_eq!(
            walk("/ws/node_modules", "x"),
            pair("/ws/node_modules", "/ws/node_modules")
        );
        assert_eq!(walk("/ws/node_modules", "/store/x"), pair("/", "/store"));
        assert_eq!(walk("/a", "../../../x"), pair("/", "/"));
        assert_eq!(walk("/ws/node_modules", "../p/../q/a"), None);
        assert_eq!(walk("/ws/node_modules", "../p/./a"), pair("/ws", "/ws/p"));
    }

    #[test]
    fn a_listing_is_kept_between_processes_until_a_directory_it_looked_in_changes() {
        let temp = tempfile::tempdir().expect("tempdir");
        let base = std::fs::canonicalize(temp.path()).expect("canonical");
        let memo = base.join("memo");
        MEMO_DIR.with(|d| *d.borrow_mut() = Some(memo.clone()));
        let ws = base.join("ws");
        for dir in [
            "memo",
            "ws/node_modules",
            "ws/packages/p",
            "outside/p",
            "store/q",
        ] {
            std::fs::create_dir_all(base.join(dir)).expect("mkdir");
        }
        let link = |target: &Path, at: &str| {
            std::os::unix::fs::symlink(target, ws.join(at)).expect("symlink")
        };
        link(Path::new("../packages/p"), "node_modules/p");
        // Outside the workspace, relative (an absolute one would be stamped from `/`, which
        // other tests change).
        link(Path::new("../../store/q"), "node_modules/q");
        for dir in ["ws", "ws/node_modules", "ws/packages", "store"] {
            age(&base.join(dir));
        }
        age(&base);
        // Each `Listings` is what another vt process would start with.
        let fresh = || Listings::new(Duration::ZERO, this_tests_memo);
        let linked = |listings: &Listings| {
            let mut linked = linked_outside_with(listings, &ws, &[&ws]);
            linked.sort();
            (linked, listings.listed.load(Ordering::Relaxed))
        };
        let first = fresh();
        assert_eq!(linked(&first), (vec![base.join("store/q")], 1));
        // Another process: read from the memo, not listed.
        let second = fresh();
        assert_eq!(linked(&second), (vec![base.join("store/q")], 0));
        assert_eq!(linked(&second), (vec![base.join("store/q")], 0));

        // The package the link leads to is replaced by a link outside: `node_modules` is
        // unchanged, `packages` is not. Seen by this process and by the next.
        age(&ws.join("packages"));
        std::fs::remove_dir(ws.join("packages/p")).expect("rmdir");
        std::os::unix::fs::symlink(base.join("outside/p"), ws.join("packages/p")).expect("symlink");
        let now = vec![base.join("outside/p"), base.join("store/q")];
        assert_eq!(linked(&second), (now.clone(), 1));
        assert_eq!(linked(&fresh()), (now.clone(), 1));
        // A link through a link is not a plain walk: that listing is not kept for others
        // (`packages/p` is now itself a link; the one before it changed nothing else).
        age(&ws.join("node_modules"));
        link(Path::new("../packages/p/x"), "node_modules/via");
        std::fs::create_dir(base.join("outside/p/x")).expect("mkdir");
        let later = fresh();
        assert_eq!(linked(&later).1, 1);
        assert_eq!(linked(&fresh()).1, 1, "not kept between processes");
        assert_eq!(linked(&later).1, 1, "kept in the process");
    }

    #[test]
    fn the_memos_are_bounded() {
        let temp = tempfile::tempdir().expect("tempdir");
        let listing = Listing {
            root: temp.path().to_path_buf(),
            stamps: Vec::new(),
            shown: Vec::new(),
            all_stamped: true,
        };
        for n in 0..=memo::MAX_FILES {
            memo::save(temp.path(), &temp.path().join(n.to_string()), &listing);
        }
        let left = std::fs::read_dir(temp.path()).expect("list").count();
        assert!((1..=memo::MAX_FILES).contains(&left), "{left}");
        let last = temp.path().join(memo::MAX_FILES.to_string());
        assert!(memo::load(temp.path(), &last).is_some());
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
        // Relative links: an absolute one is stamped from `/` down, and other tests change
        // the temporary directory's parent while this one runs (a re-listing then is right,
        // but not what this test counts).
        let link = |target: &str, at: &str| {
            let up = "../".repeat(at.matches('/').count() + 1);
            std::os::unix::fs::symlink(format!("{up}{target}"), ws.join(at)).expect("symlink")
        };
        link("outside/a", "node_modules/a");
        // Nothing counts as racy here: the directories were all changed just now.
        let listings = Listings::new(Duration::ZERO, no_memo);
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
        let listings = Listings::new(Duration::from_secs(3600), no_memo);
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
            let mut traversed = Traversed::new();
            assert_eq!(
                link_target(&path, None, &mut memo, &mut traversed),
                canonical,
                "{name}"
            );
            // Only a plain walk that no link redirected is followed by stamps.
            let plain = ["a", "abs", "dangling", "file"].contains(&name);
            assert_eq!(traversed.all_stamped, plain, "{name}");
            // Read from the listed directory, as a listing does.
            let dir = std::fs::File::open(base.join("ws/node_modules")).expect("open");
            let name = std::ffi::OsStr::new(name);
            let listed = Listed { dir: &dir, name };
            assert_eq!(
                link_target(&path, Some(&listed), &mut memo, &mut Traversed::new()),
                canonical,
                "{name:?}, listed"
            );
        }
    }
}
