//! The command-line interface as types (clap): what each subcommand takes. Running them is
//! [`crate::commands`].

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// vt — a task runner whose cache sees what each task really read and wrote.
#[derive(Debug, Parser)]
#[command(name = "vt", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Each subcommand's arguments are built only for the one that runs: building all of them
// (with their help texts) was most of the ~0.17 ms `Cli::parse` took on a lone `vt exec`.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Run a command and print every file it (and every process it starts) read, wrote,
    /// listed, executed or looked for without finding.
    ///
    /// The exit status is the command's (128 + N when it was killed by signal N).
    Trace(TraceArgs),
    /// Run workspace tasks in dependency order, replaying each from the cache when nothing
    /// it observed has changed.
    Run(RunArgs),
    /// Run one task of the current package (without its dependencies), or an ad-hoc
    /// command with `vt exec -- CMD ARGS…`; both traced and cached.
    Exec(ExecArgs),
    /// Inspect or clear the cache.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Serve a REAPI engine as a build worker (a bot of its Remote Workers API): run the
    /// actions it leases under vt's tracer and sandbox, and report their results.
    Worker(WorkerArgs),
}

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The engine: grpc[s]://host:port[/instance].
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// Where inputs are materialized (one directory per action, removed after it).
    /// Default: /var/tmp/vt-worker/BOT_ID.
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// The bot id the engine knows this worker by (default: HOSTNAME-PID).
    #[arg(long, value_name = "ID")]
    pub bot_id: Option<String>,
    /// Run actions traced but without the sandbox (for hosts without user namespaces).
    #[arg(long)]
    pub no_sandbox: bool,
    /// Exit after N leases.
    #[arg(long, value_name = "N")]
    pub max_leases: Option<usize>,
    /// Run up to N actions at once (default: the number of CPUs).
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    pub jobs: Option<usize>,
    /// While running an action, tell the engine every SECONDS that this worker is alive
    /// (keep it well under the engine's bot keepalive timeout).
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    pub keepalive: u64,
}

#[derive(Debug, clap::Args)]
pub struct CommonRunArgs {
    /// Run at most N tasks at once (default: the number of CPUs).
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    pub jobs: Option<usize>,
    /// Neither read nor write the cache: run everything.
    #[arg(long, conflicts_with = "cache")]
    pub no_cache: bool,
    /// Cache every task, also those whose config (or the root's `cache` setting) turns
    /// caching off.
    #[arg(long)]
    pub cache: bool,
    /// After the run, print each task's status, command and reason.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Print a JSON summary (tasks, keys, hit/miss and why, durations) on stdout.
    #[arg(long)]
    pub json: bool,
    /// How task output is shown.
    #[arg(long, value_enum, default_value = "interleaved")]
    pub log: crate::run::output::LogMode,
    /// Run every task in the hermetic sandbox (as if its config said "sandbox": true): the
    /// workspace read-only except its declared outputs, no network, no host processes.
    #[arg(long)]
    pub sandbox: bool,
    /// Let sandboxed tasks use the host's network (as if "network": true).
    #[arg(long)]
    pub network: bool,
    /// Use the REAPI remote cache at $VT_REMOTE_CACHE (grpc[s]://host:port[/instance]).
    /// Default when that is set: read-only, read-write when $CI is set.
    #[arg(long, value_enum, value_name = "MODE")]
    pub remote_cache: Option<crate::cache::remote::Mode>,
    /// Run tasks that miss the cache on the workers of the REAPI engine at
    /// $VT_REMOTE_EXEC (or $VT_REMOTE_CACHE); a task that cannot runs locally, with a reason.
    #[arg(long)]
    pub remote_exec: bool,
    /// After a task fails, still start the tasks that do not depend on it (without it, vt
    /// starts nothing new and lets running tasks finish). The exit status is the first
    /// failure's either way.
    #[arg(long = "continue")]
    pub keep_going: bool,
    /// After the run, watch what each task read, listed and looked for, and rerun the
    /// tasks whose inputs changed, then their dependents, until Ctrl-C.
    #[arg(long, conflicts_with = "remote_exec")]
    pub watch: bool,
    /// Under --watch: how long a burst of changes must be quiet before the rerun.
    #[arg(long, value_name = "MS", default_value_t = 50, requires = "watch")]
    pub debounce: u64,
    /// Arguments appended to each requested task's command (its last `&&` step).
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<OsString>,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The task to run: `build` (in the current package, or every package chosen by
    /// -r/-t/-F) or `package#task`. Without one, vt lists the tasks.
    #[arg(value_name = "TASK")]
    pub task: Option<String>,
    /// More tasks to run (when every one names a task), or else arguments appended to the
    /// task's command, as vite-task reads `vp run say hello`. Arguments that start with
    /// `-` go after `--`.
    #[arg(value_name = "TASK|ARG")]
    pub rest: Vec<String>,
    /// Run the tasks in every package that has them, in package dependency order. The
    /// workspace root's own task is left out (as pnpm does: it is usually the aggregate
    /// script) unless -w is given too.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Run the task in the current package and in the workspace packages it depends on
    /// (transitively), dependencies first.
    #[arg(short = 't', long)]
    pub transitive: bool,
    /// Run the task of the workspace root package; with -r or -F, as well as theirs.
    #[arg(short = 'w', long, visible_alias = "include-workspace-root")]
    pub workspace_root: bool,
    /// Only the packages PATTERN selects, in pnpm's grammar: a name glob, `name...` (with
    /// its dependencies), `...name` (with its dependents), `^` to leave the package itself
    /// out, `./dir` or `{dir}`, `[git-ref]` (changed since), `!PATTERN` to leave out.
    /// Repeatable; one value may hold several separated by spaces.
    #[arg(short = 'F', long = "filter", value_name = "PATTERN")]
    pub filter: Vec<String>,
    /// Only the packages changed since the default branch (their merge-base with HEAD,
    /// or `VT_AFFECTED_BASE`), work tree included, and the packages that depend on them.
    #[arg(long)]
    pub affected: bool,
    /// Run only the requested tasks, not what their `dependsOn` names.
    #[arg(long)]
    pub ignore_depends_on: bool,
    /// Print what would run, in order, and why each waits for another; run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the task graph (a text tree, or `--graph=dot` for Graphviz); run nothing.
    #[arg(long, value_enum, value_name = "FORMAT", num_args = 0..=1, default_missing_value = "text", require_equals = true)]
    pub graph: Option<crate::graph::show::Format>,
    /// Print what the last `vt run` in this workspace did, task by task, and why.
    #[arg(long, exclusive = true)]
    pub last_details: bool,
    #[command(flatten)]
    pub common: CommonRunArgs,
}

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The task to run; without it, what follows `--` is an ad-hoc command.
    #[arg(value_name = "TASK")]
    pub task: Option<String>,
    #[command(flatten)]
    pub common: CommonRunArgs,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum CacheCommand {
    /// Size on disk, limit, entries, and when the least recently used was last used.
    Stats,
    /// Remove the least recently used entries until the cache is within a size (default:
    /// its limit) and, with --max-age, entries not used for that long; then the blobs and
    /// path sets nothing refers to.
    Prune {
        /// Size to go under, e.g. 500MB or 2GiB (default: the cache's limit).
        #[arg(long, value_name = "SIZE")]
        max_size: Option<String>,
        /// Also remove entries not used (hit or stored) for this long, e.g. 7d or 12h.
        #[arg(long, value_name = "DURATION")]
        max_age: Option<String>,
    },
    /// Delete the cache.
    Clean,
    /// Check every entry and blob; exit 1 if anything is damaged.
    Verify,
    /// Say whether TASK would hit, and if not, what changed.
    Explain {
        #[arg(value_name = "TASK")]
        task: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// Print the access log as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write the access log to FILE instead of standard error.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<OsString>,
}
