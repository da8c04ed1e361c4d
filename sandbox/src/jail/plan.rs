//! What the sandbox will look like, as plain data (docs/architecture.md, "Trace and jail").
//!
//! [`Plan::new`] turns a [`Spec`] (what the task may see and write) and facts about the host
//! ([`HostPath`] per candidate path) into the ordered list of mounts that build the task's
//! root. Nothing here touches the system, so tests can read the plan; [`super::apply`] is
//! the thin layer that performs it.
//!
//! Every host directory appears inside at its own path: the tracer reads `/proc/PID/cwd` and
//! fd links of sandboxed processes from outside, and those name paths relative to the
//! task's root, so identical paths make the access log mean the same thing with and without
//! the sandbox.

use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::access::AccessKind;

/// What a sandboxed task may see and change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec {
    /// Visible read-only (with everything below them): the workspace, tool directories.
    pub read_only: Vec<PathBuf>,
    /// Visible and writable: the task's declared output directories and vt's private
    /// directories (the fast path's buffers).
    pub writable: Vec<PathBuf>,
    /// Visible and writable copy-on-write: the task sees the host's directory and may
    /// change it, but its writes land in the layer's own directory, which vt applies to the
    /// host only after the task succeeded ([`super::layer`]). For a task with no declared
    /// outputs: vt traces writes, so it need not know them in advance.
    pub layered: Vec<Layer>,
    /// The task's working directory (must be visible).
    pub cwd: PathBuf,
    /// Keep the host's network (otherwise: a fresh network namespace with loopback only).
    pub network: bool,
    /// Host paths the caller decided not to show because of what they are (a `PATH`
    /// directory that does not exist), with how the task is to have looked at them: see
    /// [`Plan::looked_at`].
    pub not_shown: Vec<(PathBuf, AccessKind)>,
}

/// A copy-on-write view of a host directory (an overlayfs: `path` the lower layer, `upper`
/// where the writes go, `work` overlayfs's scratch on the same file system as `upper`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub path: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
}

/// The system directories every task sees read-only.
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt",
];

/// The parts of `/etc` programs need to run (name lookup, the loader, TLS roots, time zone,
/// `update-alternatives` links such as `/usr/bin/cc`). Not `/etc` as a whole: as root, a
/// task would otherwise read `/etc/shadow`.
pub const ETC_ESSENTIALS: &[&str] = &[
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/debian_version",
    "/etc/gai.conf",
    "/etc/group",
    "/etc/host.conf",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/locale.alias",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/os-release",
    "/etc/passwd",
    "/etc/protocols",
    "/etc/resolv.conf",
    "/etc/services",
    "/etc/ssl",
    "/etc/timezone",
];

/// Character devices bound from the host into the fresh `/dev`.
pub const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

/// What a candidate path is on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPath {
    Dir,
    File,
    Symlink(PathBuf),
    Missing,
}

impl HostPath {
    /// Looks `path` up on this machine (without following a final symlink).
    pub fn probe(path: &Path) -> HostPath {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => match std::fs::read_link(path) {
                Ok(target) => HostPath::Symlink(target),
                Err(_) => HostPath::Missing,
            },
            Ok(meta) if meta.is_dir() => HostPath::Dir,
            Ok(_) => HostPath::File,
            Err(_) => HostPath::Missing,
        }
    }
}

/// One step of building the root, all paths as seen inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// The host's `path` (a directory or a file) at the same path.
    Bind { path: PathBuf, writable: bool },
    /// A host device node (`/dev/null`, …) at the same path, usable but not an input.
    Device { path: PathBuf },
    /// The host's `path`, writable copy-on-write: reads see the host, writes go to
    /// `upper` (see [`Layer`]).
    Overlay(Layer),
    /// A fresh, empty, writable tmpfs (scratch: discarded with the sandbox).
    Tmpfs { path: PathBuf },
    /// A fresh procfs of the sandbox's pid namespace.
    Proc { path: PathBuf },
    /// A symlink, e.g. `/bin -> usr/bin` on merged-/usr systems, `/dev/fd`.
    Symlink { path: PathBuf, target: PathBuf },
}

impl Mount {
    pub fn path(&self) -> &Path {
        match self {
            Mount::Bind { path, .. }
            | Mount::Overlay(Layer { path, .. })
            | Mount::Device { path }
            | Mount::Tmpfs { path }
            | Mount::Proc { path }
            | Mount::Symlink { path, .. } => path,
        }
    }

    /// Whether what is below this mount is the host's (same path, same content). An
    /// overlay's writes become the host's when vt applies the layer, so they count too.
    fn is_host(&self) -> bool {
        matches!(self, Mount::Bind { .. } | Mount::Overlay(_))
    }
}

/// The sandbox to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// In order: a mount never comes before the mount it sits on.
    pub mounts: Vec<Mount>,
    pub cwd: PathBuf,
    pub network: bool,
    pub hostname: &'static str,
    /// Host paths whose state shaped the sandbox without being shown as the host's: had
    /// `/opt` or a `PATH` directory existed, it would be mounted, and a program there found;
    /// `/bin` is re-created as the host's symlink, not bound. What the task finds at and
    /// below them depends on them all the same, so they are its lookups
    /// ([`crate::trace::TracedChild::wait`] adds them to its log): `Missing` for an absent
    /// path, `Stat` (its type, a symlink's target) for one that is there.
    pub looked_at: Vec<(PathBuf, AccessKind)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{0} is not an absolute path")]
    NotAbsolute(PathBuf),
    #[error("{path} does not exist; a sandboxed task can only see existing directories")]
    Missing { path: PathBuf },
    #[error("the working directory {0} is not inside anything the sandbox shows")]
    CwdHidden(PathBuf),
    #[error(
        "{path} cannot be a copy-on-write layer: {why}\n  hint: declare the task's outputs \
         (\"output\": [\"dist/**\"]) so they are mounted writable instead"
    )]
    Layer { path: PathBuf, why: String },
}

impl Plan {
    /// The plan for `spec`, with `host` telling what each candidate path is.
    pub fn new(spec: &Spec, host: impl Fn(&Path) -> HostPath) -> Result<Plan, PlanError> {
        let mut mounts = Vec::new();
        let mut looked_at = spec.not_shown.clone();
        let mut push_host = |path: &Path, writable: bool, required: bool| {
            if !path.is_absolute() {
                return Err(PlanError::NotAbsolute(path.to_path_buf()));
            }
            let path = normalize(path);
            match host(&path) {
                HostPath::Missing if required => return Err(PlanError::Missing { path }),
                found if !writable && !required => {
                    match found {
                        HostPath::Symlink(_) => looked_at.push((path.clone(), AccessKind::Stat)),
                        HostPath::Missing => looked_at.push((path.clone(), AccessKind::Missing)),
                        HostPath::Dir | HostPath::File => {}
                    }
                    mounts.extend(optional_mount(path, found));
                }
                HostPath::Missing => looked_at.push((path, AccessKind::Missing)),
                _ => mounts.push(Mount::Bind { path, writable }),
            }
            Ok(())
        };
        for dir in SYSTEM_DIRS.iter().chain(ETC_ESSENTIALS) {
            push_host(Path::new(dir), false, false)?;
        }
        for path in &spec.read_only {
            push_host(path, false, true)?;
        }
        for path in &spec.writable {
            push_host(path, true, true)?;
        }
        for layer in &spec.layered {
            mounts.push(layer_mount(layer, &host)?);
        }
        for device in DEVICES {
            if host(Path::new(device)) == HostPath::File {
                mounts.push(Mount::Device {
                    path: device.into(),
                });
            }
        }
        mounts.push(Mount::Tmpfs {
            path: "/tmp".into(),
        });
        mounts.push(Mount::Tmpfs {
            path: "/dev/shm".into(),
        });
        mounts.push(Mount::Proc {
            path: "/proc".into(),
        });
        for (name, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            mounts.push(Mount::Symlink {
                path: Path::new("/dev").join(name),
                target: target.into(),
            });
        }
        let mut mounts = order(mounts);
        // The fresh /dev is a tmpfs the devices are bound into.
        mounts.insert(
            0,
            Mount::Tmpfs {
                path: "/dev".into(),
            },
        );
        let mounts = order(mounts);
        let plan = Plan {
            mounts,
            cwd: normalize(&spec.cwd),
            network: spec.network,
            hostname: "vt-sandbox",
            looked_at,
        };
        if !plan.shows_host(&plan.cwd) {
            return Err(PlanError::CwdHidden(plan.cwd));
        }
        Ok(plan)
    }

    /// Whether `path` inside the sandbox is the host's `path`: the deepest mount above it is
    /// a bind. Accesses to anything else (scratch `/tmp`, `/proc`, `/dev`, the empty
    /// directories that hold mount points) happen on the sandbox's own file systems; they
    /// are neither inputs nor outputs of the task.
    ///
    /// Asked for every access of a sandboxed task's log against every mount: a path in the
    /// form the log's paths have (`is_plain`) is compared byte by byte, which gives
    /// the same answer as comparing components and cost a tenth (by component it was
    /// ~0.05 ms of each sandboxed task's end).
    pub fn shows_host(&self, path: &Path) -> bool {
        let bytes = path.as_os_str().as_bytes();
        if !is_plain(bytes) {
            return self
                .mounts
                .iter()
                .filter(|m| path.starts_with(m.path()))
                .max_by_key(|m| m.path().components().count())
                .is_some_and(|m| m.is_host());
        }
        // Among the mounts above a path, the deepest has the longest path (they are each
        // other's ancestors); the last of equals wins, as `max_by_key`'s does.
        let mut deepest: Option<(usize, &Mount)> = None;
        for mount in &self.mounts {
            let above = mount.path().as_os_str().as_bytes();
            if is_at_or_above(above, bytes) && deepest.is_none_or(|(len, _)| above.len() >= len) {
                deepest = Some((above.len(), mount));
            }
        }
        deepest.is_some_and(|(_, m)| m.is_host())
    }

    /// The directories the task may write (binds marked writable and the tmpfs mounts).
    pub fn writable_paths(&self) -> impl Iterator<Item = &Path> {
        self.mounts.iter().filter_map(|m| match m {
            Mount::Bind {
                path,
                writable: true,
            }
            | Mount::Overlay(Layer { path, .. })
            | Mount::Tmpfs { path } => Some(path.as_path()),
            _ => None,
        })
    }
}

/// How an optional read-only host path (a system directory, a part of `/etc`) is shown: a
/// symlink re-created with the host's target, nothing where the host has nothing, anything
/// else bound read-only.
fn optional_mount(path: PathBuf, found: HostPath) -> Option<Mount> {
    match found {
        HostPath::Symlink(target) => Some(Mount::Symlink { path, target }),
        HostPath::Missing => None,
        HostPath::Dir | HostPath::File => Some(Mount::Bind {
            path,
            writable: false,
        }),
    }
}

/// The mounts below `/etc` every plan has on a host where `host` tells what each of
/// [`ETC_ESSENTIALS`] is, by path: what [`super::etc_tree`] makes once per process.
pub fn etc_mounts(host: impl Fn(&Path) -> HostPath) -> Vec<Mount> {
    let mut mounts: Vec<Mount> = ETC_ESSENTIALS
        .iter()
        .filter_map(|path| optional_mount(PathBuf::from(path), host(Path::new(path))))
        .collect();
    mounts.sort_by(|a, b| a.path().cmp(b.path()));
    mounts
}

/// The mounts of `mounts` below `/etc`, by path, if a tree made ahead can stand for them
/// all: read-only binds and symlinks only, and nothing mounted on `/etc` itself (a task
/// that declares `/etc`, or a writable path in it, builds its `/etc` mount by mount).
pub fn etc_part(mounts: &[Mount]) -> Option<Vec<&Mount>> {
    let etc = Path::new("/etc");
    let mut part = Vec::new();
    for mount in mounts.iter().filter(|m| m.path().starts_with(etc)) {
        match mount {
            _ if mount.path() == etc => return None,
            Mount::Bind {
                writable: false, ..
            }
            | Mount::Symlink { .. } => part.push(mount),
            _ => return None,
        }
    }
    part.sort_by(|a, b| a.path().cmp(b.path()));
    Some(part)
}

/// The overlay for `layer`, or why it cannot be one: overlayfs refuses layers inside one
/// another, and its `lowerdir` option splits at `:` (and takes `\\` as an escape).
fn layer_mount(layer: &Layer, host: &impl Fn(&Path) -> HostPath) -> Result<Mount, PlanError> {
    let path = normalize(&layer.path);
    let fail = |why: String| PlanError::Layer {
        path: path.clone(),
        why,
    };
    for p in [&layer.path, &layer.upper, &layer.work] {
        if !p.is_absolute() {
            return Err(PlanError::NotAbsolute(p.clone()));
        }
    }
    if host(&path) != HostPath::Dir {
        return Err(fail("it is not a directory".into()));
    }
    let bytes = path.as_os_str().as_encoded_bytes();
    if bytes.contains(&b':') || bytes.contains(&b'\\') {
        return Err(fail(
            "its path has a `:` or `\\`, which overlayfs cannot take".into(),
        ));
    }
    let (upper, work) = (normalize(&layer.upper), normalize(&layer.work));
    if upper.starts_with(&path) || path.starts_with(&upper) {
        return Err(fail(format!(
            "the layer's directory {} overlaps it (set VT_CACHE_DIR outside it)",
            upper.display()
        )));
    }
    Ok(Mount::Overlay(Layer { path, upper, work }))
}

/// Sorts parents before children and drops exact duplicates (the later one wins, so a
/// writable output inside the read-only workspace is mounted on top of it).
///
/// The paths are plain ([`is_plain`]: every one comes through [`normalize`] or is a
/// constant), so they are compared as bytes, every mount with every other: ~50 mounts are
/// ~2 500 short byte comparisons. Comparing `Path`s component by component was most of a
/// sandboxed task's 0.7 ms of planning; hashing them (a map of paths, a set of ancestors)
/// still cost ~0.1 ms per task, in this function alone.
fn order(mounts: Vec<Mount>) -> Vec<Mount> {
    fn bytes(m: &Mount) -> &[u8] {
        m.path().as_os_str().as_bytes()
    }
    let mut unique: Vec<Mount> = Vec::with_capacity(mounts.len());
    for mount in mounts {
        debug_assert!(is_plain(bytes(&mount)), "{}", mount.path().display());
        if let Some(existing) = unique.iter_mut().find(|u| bytes(u) == bytes(&mount)) {
            // What the task must see (a workspace that *is* /tmp) beats scratch there.
            let scratch = matches!(mount, Mount::Tmpfs { .. } | Mount::Proc { .. });
            if !(scratch && matches!(existing, Mount::Bind { .. })) {
                *existing = mount;
            }
        } else {
            unique.push(mount);
        }
    }
    // Stable: equal depth keeps insertion order. A plain path's depth is its count of `/`
    // (`/` itself 0): the order of their component counts.
    unique.sort_by_cached_key(|m| match bytes(m) {
        b"/" => 0,
        path => path.iter().filter(|&&b| b == b'/').count(),
    });
    // A read-only bind inside another read-only bind (a PATH entry under /usr) adds nothing.
    let read_only = |m: &Mount| {
        matches!(
            m,
            Mount::Bind {
                writable: false,
                ..
            }
        )
    };
    let covered: Vec<bool> = unique
        .iter()
        .map(|m| {
            read_only(m)
                && unique.iter().any(|outer| {
                    read_only(outer)
                        && bytes(outer) != bytes(m)
                        && is_at_or_above(bytes(outer), bytes(m))
                })
        })
        .collect();
    let mut covered = covered.into_iter();
    unique.retain(|_| !covered.next().unwrap_or(false));
    unique
}

/// Whether `path` is absolute with no `.` or `..` component, no repeated `/` and no
/// trailing `/` (but `/` itself): the form [`normalize`] gives, in which comparing bytes
/// and comparing components agree.
fn is_plain(path: &[u8]) -> bool {
    path == b"/"
        || (path.first() == Some(&b'/')
            && path
                .split(|&b| b == b'/')
                .skip(1)
                .all(|part| !part.is_empty() && part != b"." && part != b".."))
}

/// Whether the plain path `above` is `path` or one of its ancestors.
fn is_at_or_above(above: &[u8], path: &[u8]) -> bool {
    above == b"/" || (path.starts_with(above) && matches!(path.get(above.len()), None | Some(b'/')))
}

/// `a/./b/../c` → `a/c` without touching the file system (paths here come from vt's own
/// config resolution and are already canonical; this only guards against `..` tricks).
fn normalize(path: &Path) -> PathBuf {
    // Most paths are plain already: a copy (rebuilding one component by component was a
    // visible part of each sandboxed task's planning).
    if is_plain(path.as_os_str().as_bytes()) {
        return path.to_path_buf();
    }
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debian_host(path: &Path) -> HostPath {
        match path.to_str().unwrap_or("") {
            "/bin" => HostPath::Symlink("usr/bin".into()),
            "/lib" => HostPath::Symlink("usr/lib".into()),
            "/lib64" => HostPath::Symlink("usr/lib64".into()),
            "/sbin" => HostPath::Symlink("usr/sbin".into()),
            "/usr" | "/work/ws" | "/work/ws/app/dist" | "/etc/alternatives" => HostPath::Dir,
            "/etc/passwd" | "/etc/ld.so.cache" | "/dev/null" | "/dev/tty" => HostPath::File,
            _ => HostPath::Missing,
        }
    }

    fn spec() -> Spec {
        Spec {
            read_only: vec!["/work/ws".into()],
            writable: vec!["/work/ws/app/dist".into()],
            cwd: "/work/ws/app".into(),
            network: false,
            ..Spec::default()
        }
    }

    #[test]
    fn a_layered_package_is_a_writable_overlay_on_top_of_the_workspace() {
        let layer = Layer {
            path: "/work/ws/app".into(),
            upper: "/var/l/upper".into(),
            work: "/var/l/work".into(),
        };
        let spec = Spec {
            writable: vec![],
            layered: vec![layer.clone()],
            ..spec()
        };
        let host = |p: &Path| match p.to_str() {
            Some("/work/ws/app") => HostPath::Dir,
            _ => debian_host(p),
        };
        let plan = Plan::new(&spec, host).expect("plan");
        let workspace = plan
            .mounts
            .iter()
            .position(|m| m.path() == Path::new("/work/ws"))
            .expect("workspace");
        let overlay = plan
            .mounts
            .iter()
            .position(|m| *m == Mount::Overlay(layer.clone()))
            .expect("overlay");
        assert!(workspace < overlay, "{:?}", plan.mounts);
        assert!(plan.shows_host(Path::new("/work/ws/app/dist/x.js")));
        assert!(
            plan.writable_paths()
                .any(|p| p == Path::new("/work/ws/app"))
        );
        // The layer inside the directory it covers: overlayfs would refuse it.
        let inside = Spec {
            layered: vec![Layer {
                upper: "/work/ws/app/node_modules/.cache/u".into(),
                ..layer
            }],
            ..spec
        };
        let error = Plan::new(&inside, host).expect_err("overlapping");
        assert!(error.to_string().contains("overlaps"), "{error}");
    }

    #[test]
    fn mounts_come_parents_first_with_outputs_on_top_of_the_workspace() {
        let plan = Plan::new(&spec(), debian_host).expect("plan");
        let paths: Vec<&Path> = plan.mounts.iter().map(Mount::path).collect();
        let position = |p: &str| {
            paths
                .iter()
                .position(|x| *x == Path::new(p))
                .unwrap_or_else(|| panic!("{p} is not mounted: {paths:?}"))
        };
        assert!(position("/dev") < position("/dev/null"));
        assert!(position("/work/ws") < position("/work/ws/app/dist"));
        assert!(plan.mounts.contains(&Mount::Bind {
            path: "/work/ws/app/dist".into(),
            writable: true
        }));
        assert!(plan.mounts.contains(&Mount::Bind {
            path: "/work/ws".into(),
            writable: false
        }));
        assert!(plan.mounts.contains(&Mount::Symlink {
            path: "/bin".into(),
            target: "usr/bin".into()
        }));
        // Not on this host: not mounted, and no error for optional system paths.
        assert!(!paths.contains(&Path::new("/opt")));
        // Never /etc as a whole, never the host's /root or /home.
        assert!(!paths.contains(&Path::new("/etc")));
        assert!(
            !paths
                .iter()
                .any(|p| p.starts_with("/root") || p.starts_with("/home"))
        );
    }

    #[test]
    fn a_read_only_path_inside_another_adds_no_mount_and_the_last_duplicate_wins() {
        let host = |path: &Path| match path.to_str().unwrap_or("") {
            "/usr/local/bin" | "/work/ws/node_modules/.bin" | "/work/ws/out" => HostPath::Dir,
            _ => debian_host(path),
        };
        let spec = Spec {
            // PATH entries under /usr and under the workspace, and the workspace twice.
            read_only: vec![
                "/work/ws".into(),
                "/usr/local/bin".into(),
                "/work/ws/node_modules/.bin".into(),
                "/work/ws/".into(),
            ],
            // Writable inside read-only: kept, on top.
            writable: vec!["/work/ws/out".into(), "/work/ws/app/dist".into()],
            ..spec()
        };
        let plan = Plan::new(&spec, host).expect("plan");
        let binds: Vec<(&Path, bool)> = plan
            .mounts
            .iter()
            .filter_map(|m| match m {
                Mount::Bind { path, writable } => Some((path.as_path(), *writable)),
                _ => None,
            })
            .collect();
        assert_eq!(
            binds
                .iter()
                .filter(|(p, _)| *p == Path::new("/work/ws"))
                .count(),
            1,
            "{binds:?}"
        );
        assert!(binds.contains(&(Path::new("/usr"), false)));
        assert!(!binds.iter().any(|(p, _)| *p == Path::new("/usr/local/bin")));
        assert!(!binds.iter().any(|(p, _)| p.ends_with(".bin")));
        assert!(binds.contains(&(Path::new("/work/ws/out"), true)));
        assert!(binds.contains(&(Path::new("/work/ws/app/dist"), true)));
        // Parents first, whatever order the spec named them in.
        let depths: Vec<usize> = plan
            .mounts
            .iter()
            .map(|m| m.path().components().count())
            .collect();
        assert!(depths.windows(2).all(|w| w[0] <= w[1]), "{depths:?}");
    }

    #[test]
    fn what_shaped_the_sandbox_without_being_shown_is_looked_at() {
        let spec = Spec {
            not_shown: vec![("/opt/tools/bin".into(), AccessKind::Missing)],
            ..spec()
        };
        let plan = Plan::new(&spec, debian_host).expect("plan");
        let looked_at = |path: &str| {
            plan.looked_at
                .iter()
                .find(|(p, _)| p == Path::new(path))
                .map(|(_, kind)| *kind)
        };
        // Absent system paths: had they existed, they would be mounted.
        assert_eq!(looked_at("/opt"), Some(AccessKind::Missing));
        assert_eq!(looked_at("/etc/resolv.conf"), Some(AccessKind::Missing));
        // Symlinks re-created inside: their target decides what is found through them.
        assert_eq!(looked_at("/bin"), Some(AccessKind::Stat));
        // What the caller left out, as it said.
        assert_eq!(looked_at("/opt/tools/bin"), Some(AccessKind::Missing));
        // Bound paths are not: what the task does below them is seen as the host's.
        assert_eq!(looked_at("/usr"), None);
        assert_eq!(looked_at("/etc/passwd"), None);
        assert_eq!(looked_at("/work/ws"), None);
    }

    #[test]
    fn a_tree_made_ahead_stands_for_etc_unless_the_task_declares_something_there() {
        let host = |path: &Path| match path.to_str() {
            Some("/etc/localtime") => HostPath::Symlink("/usr/share/zoneinfo/UTC".into()),
            Some("/etc") => HostPath::Dir,
            Some("/etc/alternatives/cc") => HostPath::Symlink("/usr/bin/gcc".into()),
            _ => debian_host(path),
        };
        let ahead = etc_mounts(host);
        let bind = |path: &str| Mount::Bind {
            path: path.into(),
            writable: false,
        };
        assert_eq!(
            ahead,
            vec![
                bind("/etc/alternatives"),
                bind("/etc/ld.so.cache"),
                Mount::Symlink {
                    path: "/etc/localtime".into(),
                    target: "/usr/share/zoneinfo/UTC".into()
                },
                bind("/etc/passwd"),
            ]
        );
        let part = |spec: Spec| {
            etc_part(&Plan::new(&spec, host).expect("plan").mounts)
                .map(|part| part.into_iter().cloned().collect::<Vec<Mount>>())
        };
        // A plain task: the plan's /etc is the tree's.
        assert_eq!(part(spec()), Some(ahead.clone()));
        // A path inside a part of /etc that is bound already adds nothing: still the tree.
        let mut inside = spec();
        inside.read_only.push("/etc/alternatives/cc".into());
        assert_eq!(part(inside), Some(ahead.clone()));
        // Something of the task's own in /etc, or /etc itself: not the tree.
        let mut own = spec();
        own.writable.push("/etc/passwd".into());
        assert_ne!(part(own), Some(ahead.clone()));
        let mut whole = spec();
        whole.read_only.push("/etc".into());
        assert_eq!(part(whole), None);
    }

    #[test]
    fn byte_and_component_comparisons_agree_on_what_shows_the_host() {
        let plan = Plan::new(&spec(), debian_host).expect("plan");
        let by_components = |path: &Path| {
            plan.mounts
                .iter()
                .filter(|m| path.starts_with(m.path()))
                .max_by_key(|m| m.path().components().count())
                .is_some_and(|m| m.is_host())
        };
        for path in [
            "/",
            "/work",
            "/work/ws",
            "/work/wsx",
            "/work/ws/app/dist",
            "/work/ws/app/distx/a",
            "/work/ws/app/dist/a.js",
            "/usr/lib/libc.so.6",
            "/usrx",
            "/tmp/x",
            "/dev/null",
            "/dev/nullx",
            "/etc/passwd",
            "/etc/passwd/x",
            "/proc/self",
            // Not plain: compared by components.
            "/work//ws/a",
            "/work/ws/./a",
            "/work/ws/../ws/a",
            "/work/ws/",
            "relative/path",
        ] {
            assert_eq!(
                plan.shows_host(Path::new(path)),
                by_components(Path::new(path)),
                "{path}"
            );
        }
        for (path, normal) in [
            ("/a/b", "/a/b"),
            ("/", "/"),
            ("/a/./b/../c//d/", "/a/c/d"),
            ("/..", "/"),
        ] {
            let normalized = normalize(Path::new(path));
            assert_eq!(normalized, Path::new(normal), "{path}");
            assert!(is_plain(normalized.as_os_str().as_bytes()), "{path}");
        }
        assert!(is_plain(b"/") && is_plain(b"/a/b"));
        assert!(!is_plain(b"/a/") && !is_plain(b"a/b") && !is_plain(b"/a//b"));
        assert!(!is_plain(b"/a/./b") && !is_plain(b"/a/..") && !is_plain(b""));
    }

    #[test]
    fn only_declared_outputs_and_scratch_are_writable() {
        let plan = Plan::new(&spec(), debian_host).expect("plan");
        let writable: Vec<&Path> = plan.writable_paths().collect();
        assert_eq!(
            writable,
            [
                Path::new("/dev"),
                Path::new("/tmp"),
                Path::new("/dev/shm"),
                Path::new("/work/ws/app/dist")
            ]
        );
    }

    #[test]
    fn host_paths_are_told_apart_from_the_sandbox_own_file_systems() {
        let plan = Plan::new(&spec(), debian_host).expect("plan");
        assert!(plan.shows_host(Path::new("/work/ws/app/src/a.js")));
        assert!(plan.shows_host(Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6")));
        assert!(plan.shows_host(Path::new("/etc/passwd")));
        assert!(!plan.shows_host(Path::new("/tmp/scratch")));
        assert!(!plan.shows_host(Path::new("/proc/self/status")));
        assert!(!plan.shows_host(Path::new("/dev/shm/x")));
        // Hidden host paths (the empty root's directories, /root, /etc/shadow).
        assert!(!plan.shows_host(Path::new("/root/.npmrc")));
        assert!(!plan.shows_host(Path::new("/etc/shadow")));
        assert!(!plan.shows_host(Path::new("/work")));
    }

    #[test]
    fn a_workspace_under_tmp_is_bound_on_top_of_the_scratch_tmpfs() {
        let spec = Spec {
            read_only: vec!["/tmp/ws".into()],
            writable: vec![],
            cwd: "/tmp/ws".into(),
            network: false,
            ..Spec::default()
        };
        let host = |p: &Path| {
            if p == Path::new("/tmp/ws") {
                HostPath::Dir
            } else {
                debian_host(p)
            }
        };
        let plan = Plan::new(&spec, host).expect("plan");
        let paths: Vec<&Path> = plan.mounts.iter().map(Mount::path).collect();
        let tmp = paths.iter().position(|p| *p == Path::new("/tmp"));
        let ws = paths.iter().position(|p| *p == Path::new("/tmp/ws"));
        assert!(tmp < ws, "{paths:?}");
        assert!(plan.shows_host(Path::new("/tmp/ws/a")));
        assert!(!plan.shows_host(Path::new("/tmp/other")));
    }

    #[test]
    fn a_workspace_that_is_tmp_stays_visible() {
        let spec = Spec {
            read_only: vec!["/tmp".into()],
            writable: vec![],
            cwd: "/tmp".into(),
            network: false,
            ..Spec::default()
        };
        let host = |p: &Path| {
            if p == Path::new("/tmp") {
                HostPath::Dir
            } else {
                debian_host(p)
            }
        };
        let plan = Plan::new(&spec, host).expect("plan");
        assert!(plan.mounts.contains(&Mount::Bind {
            path: "/tmp".into(),
            writable: false
        }));
        assert!(plan.shows_host(Path::new("/tmp/package.json")));
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut missing = spec();
        missing.read_only.push("/nope".into());
        assert_eq!(
            Plan::new(&missing, debian_host),
            Err(PlanError::Missing {
                path: "/nope".into()
            })
        );
        let mut relative = spec();
        relative.writable.push("dist".into());
        assert_eq!(
            Plan::new(&relative, debian_host),
            Err(PlanError::NotAbsolute("dist".into()))
        );
        let mut hidden = spec();
        hidden.cwd = "/root".into();
        assert_eq!(
            Plan::new(&hidden, debian_host),
            Err(PlanError::CwdHidden("/root".into()))
        );
        let mut dotdot = spec();
        dotdot.writable = vec!["/work/ws/app/dist/../../..".into()];
        // `..` is resolved, not followed: this names /work, which is not a host dir here.
        assert!(Plan::new(&dotdot, debian_host).is_err());
    }
}
