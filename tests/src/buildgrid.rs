//! Real REAPI servers for the remote suites: BuildGrid 0.4.4 (PyPI, in a venv outside the
//! clone that `.ci/env.sh` installs) on a free loopback port, as a cache (action cache +
//! CAS on disk) or as a whole engine (plus Execution and Bots on a SQL scheduler, backed by
//! a PostgreSQL server started here from Debian's binaries).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const VENV: &str = "/var/cache/vt-ci/buildgrid/venv";

/// The `bgd` executable; `None` (a skip) outside CI when it is not installed, a failure
/// in CI.
pub fn bgd() -> Option<PathBuf> {
    let path = std::env::var_os("VT_BUILDGRID")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(VENV).join("bin/bgd"));
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "BuildGrid is not installed at {} (.ci/env.sh installs it)",
        path.display()
    );
    eprintln!("skipped: BuildGrid is not installed at {}", path.display());
    None
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn wait_for_port(port: u16, what: &str, log: &Path) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} did not listen on {port}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A BuildGrid server, killed (with its database) when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
    pub storage: PathBuf,
    _postgres: Option<Postgres>,
    dir: tempfile::TempDir,
}

const CACHE_SERVICES: &str = "      - !action-cache\n        cache: *ac\n      - !cas\n        storage: *cas\n      - !bytestream\n        storage: *cas\n";

impl Server {
    /// Action cache + CAS + ByteStream.
    pub fn cache(bgd: &Path) -> Server {
        Server::start(bgd, None, "", CACHE_SERVICES.to_owned())
    }

    /// A whole engine: the cache services plus Execution and Bots; a bot it has not heard
    /// from for `keepalive_s` seconds counts as dead.
    pub fn engine(bgd: &Path, keepalive_s: u32) -> Server {
        let postgres = Postgres::start();
        let sql = format!(
            "connections:\n  - !sql-connection &sql\n    connection-string: {}\n    pool-size: 5\n    max-overflow: 10\n\
             schedulers:\n  - !sql-scheduler &sched\n    sql: *sql\n    storage: *cas\n    action-cache: *ac\n    \
             bot-session-keepalive-timeout: {keepalive_s}\n    poll-interval: 0.05\n    bot-poll-interval: 0.05\n    \
             assigners:\n      - !priority-age-assigner\n        count: 1\n        interval: 0.05\n        \
             priority-assignment-percentage: 100\n",
            postgres.url(),
        );
        let services = format!(
            "{CACHE_SERVICES}      - !execution\n        scheduler: *sched\n      - !bots\n        scheduler: *sched\n"
        );
        Server::start(bgd, Some(postgres), &sql, services)
    }

    fn start(bgd: &Path, postgres: Option<Postgres>, sql: &str, services: String) -> Server {
        let dir = tempfile::tempdir().expect("server dir");
        let storage = dir.path().join("cas");
        std::fs::create_dir_all(&storage).expect("cas dir");
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "server:\n  - !channel\n    address: \"127.0.0.1:{port}\"\n    insecure-mode: true\n\
                 thread-pool-size: 64\n\
                 authorization:\n  method: none\n\
                 storages:\n  - !disk-storage &cas\n    path: {}\n\
                 caches:\n  - !lru-action-cache &ac\n    storage: *cas\n    max-cached-refs: 100000\n    allow-updates: true\n    cache-failed-actions: false\n\
                 {sql}\
                 instances:\n  - name: ''\n    services:\n{services}",
                storage.display()
            ),
        )
        .expect("config");
        let log_path = dir.path().join("bgd.log");
        let log = std::fs::File::create(&log_path).expect("log");
        let child = Command::new(bgd)
            .args(["server", "start"])
            .arg(&config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start bgd");
        wait_for_port(port, "BuildGrid", &log_path);
        Server {
            child,
            port,
            storage,
            _postgres: postgres,
            dir,
        }
    }

    pub fn url(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.port)
    }

    /// BuildGrid's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bgd.log")).unwrap_or_default()
    }

    /// Every file of the server's CAS storage.
    pub fn stored_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.storage, &mut out);
        out
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the server to exit (after something else killed it).
    pub fn wait(&mut self) {
        let _ = self.child.wait();
    }

    /// Kills the server now (its database stays up until the drop).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A throwaway PostgreSQL cluster (Debian's `postgresql` package) on a free loopback port,
/// run as the `postgres` user (it refuses root), with BuildGrid's tables created.
pub struct Postgres {
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Postgres {
    fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                versions
                    .flatten()
                    .map(|v| v.path().join("bin"))
                    .filter(|b| b.join("postgres").exists())
                    .max()
            })
            .expect("PostgreSQL is not installed (.ci/env.sh installs Debian's postgresql)");
        let dir = tempfile::Builder::new()
            .prefix("vt-pg")
            .tempdir()
            .expect("pg dir");
        let data = dir.path().join("data");
        // The cluster belongs to `postgres`; so must the directory it lives in.
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(chown.success(), "chown of {} failed", dir.path().display());
        let as_postgres = |program: &Path| {
            let mut command = Command::new("runuser");
            command
                .args(["-u", "postgres", "--"])
                .arg(program)
                .current_dir("/");
            command
        };
        let init = as_postgres(&bin.join("initdb"))
            .args(["--auth=trust", "-U", "bgd", "-D"])
            .arg(&data)
            .output()
            .expect("initdb");
        assert!(
            init.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let port = free_port();
        let log = dir.path().join("postgres.log");
        let start = as_postgres(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                dir.path().display()
            ))
            .arg("-l")
            .arg(&log)
            .args(["-w", "start"])
            .output()
            .expect("pg_ctl");
        assert!(
            start.status.success(),
            "PostgreSQL did not start: {}{}",
            String::from_utf8_lossy(&start.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let postgres = Postgres {
            data,
            bin,
            port,
            _dir: dir,
        };
        // BuildGrid's schema (its models; a fresh database needs no migrations).
        let python = PathBuf::from(VENV).join("bin/python");
        let schema = Command::new(python)
            .arg("-c")
            .arg(format!(
                "from buildgrid.server.sql.models import Base\n\
                 from sqlalchemy import create_engine\n\
                 Base.metadata.create_all(create_engine('{}'))",
                postgres.url()
            ))
            .output()
            .expect("python");
        assert!(
            schema.status.success(),
            "cannot create BuildGrid's tables: {}",
            String::from_utf8_lossy(&schema.stderr)
        );
        postgres
    }

    fn url(&self) -> String {
        format!("postgresql+psycopg2://bgd@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .current_dir("/")
            .output();
    }
}
