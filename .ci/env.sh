# Shared by .ci/demo and .ci/test: installs what vt's build and tests need, idempotently
# and quietly, and exports a persistent CARGO_TARGET_DIR outside the clone so RocksDB's
# C++ build (~11 min cold on 2 cores) is paid once per machine.
set -euo pipefail

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/vt-ci/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Downloads (crates, npm) are cached outside the clone too.
export npm_config_cache="${npm_config_cache:-/var/cache/vt-ci/npm}"
mkdir -p "$CARGO_TARGET_DIR" "$npm_config_cache"
# Every build leaves its test binaries behind (~300 MB each with debug info); drop the ones
# no build has touched for two days, so the persistent target dir does not fill the disk.
find "$CARGO_TARGET_DIR"/*/deps -maxdepth 1 -type f -perm -u+x ! -name '*.*' -mtime +2 -delete 2>/dev/null || true

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Debian packages: libclang for rocksdb's bindgen, a C/C++ toolchain for RocksDB itself,
# strace as the tracer's correctness oracle, make/gcc/python3/node for the test workloads,
# python3-venv, git and bubblewrap for the benchmarks (matplotlib plots; turbo wants a git
# checkout; bwrap is the sandbox peer); docker.io and debootstrap for the container tests
# (tests/tests/docker.rs starts its own dockerd); postgresql for BuildGrid's scheduler in
# the remote-execution tests (they start their own server; the Debian service is not used).
APT_PACKAGES=(libclang-dev clang build-essential pkg-config strace make python3 python3-venv git bubblewrap docker.io debootstrap postgresql nodejs npm)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# node/npm may come from elsewhere (nodesource, a CI image); don't fight an existing one.
if command -v node >/dev/null && command -v npm >/dev/null; then
  filtered=()
  for pkg in "${missing[@]}"; do [[ "$pkg" == nodejs || "$pkg" == npm ]] || filtered+=("$pkg"); done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Keep .deb downloads between runs.
  apt_cache=/var/cache/vt-ci/apt
  mkdir -p "$apt_cache/partial"
  apt-get update -qq
  apt-get install -y -qq -o Dir::Cache::archives="$apt_cache" "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  for candidate in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
    [[ -x "$candidate/cargo" ]] && export PATH="$candidate:$PATH"
  done
fi
if ! command -v cargo >/dev/null; then
  echo "vt needs Rust >= 1.95 (cargo). Install it with rustup (https://rustup.rs) and run this again." >&2
  exit 1
fi

# BuildGrid, the REAPI server the remote-cache tests start (0.4.4 runs on Debian's Python
# 3.11; later releases need 3.12), in a venv outside the clone; pip downloads are cached.
bgd=/var/cache/vt-ci/buildgrid/venv/bin/bgd
if [[ ! -x "$bgd" ]]; then
  say "installing BuildGrid 0.4.4 (PyPI) into /var/cache/vt-ci/buildgrid/venv"
  /usr/bin/python3 -m venv /var/cache/vt-ci/buildgrid/venv
  PIP_CACHE_DIR=/var/cache/vt-ci/pip /var/cache/vt-ci/buildgrid/venv/bin/pip install --quiet buildgrid==0.4.4
fi
# Its SQL scheduler (remote execution) talks to PostgreSQL through psycopg2.
if ! /var/cache/vt-ci/buildgrid/venv/bin/python -c "import psycopg2" 2>/dev/null; then
  say "installing psycopg2-binary into the BuildGrid venv"
  PIP_CACHE_DIR=/var/cache/vt-ci/pip /var/cache/vt-ci/buildgrid/venv/bin/pip install --quiet psycopg2-binary==2.9.13
fi

VT="$CARGO_TARGET_DIR/debug/vt"
export VT
