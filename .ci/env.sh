# Shared by .ci/demo, .ci/test and bench/run: functions that install what vt's build and
# tests need, idempotently and quietly, and a persistent CARGO_TARGET_DIR outside the clone
# so RocksDB's C++ build is paid once per machine.
set -euo pipefail

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/vt-ci/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# C and C++ for build scripts (RocksDB's C++, and ring's, blake3's and lz4's C) with clang,
# which the build needs anyway: the first build is about 1.3x faster than with gcc at -O0
# (five of RocksDB's files: 42 s against 55 s here). The target-specific names reach cc-rs
# only, not `make` (the test workloads keep the system's cc).
export CC_x86_64_unknown_linux_gnu="${CC_x86_64_unknown_linux_gnu:-clang}"
export CXX_x86_64_unknown_linux_gnu="${CXX_x86_64_unknown_linux_gnu:-clang++}"
# Downloads (crates, npm) are cached outside the clone too.
export npm_config_cache="${npm_config_cache:-/var/cache/vt-ci/npm}"
mkdir -p "$CARGO_TARGET_DIR" "$npm_config_cache"
# Every build leaves its test binaries behind (~300 MB each with debug info); drop the ones
# no build has touched for two days, so the persistent target dir does not fill the disk.
find "$CARGO_TARGET_DIR"/*/deps -maxdepth 1 -type f -perm -u+x ! -name '*.*' -mtime +2 -delete 2>/dev/null || true

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Debian packages, installed only where missing (.deb downloads kept in /var/cache/vt-ci/apt).
# node/npm may come from elsewhere (nodesource, a CI image); an existing one is not fought.
ensure_apt_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    if [[ "$pkg" == nodejs && -n "$(command -v node)" ]] || [[ "$pkg" == npm && -n "$(command -v npm)" ]]; then
      continue
    fi
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    local apt_cache=/var/cache/vt-ci/apt
    mkdir -p "$apt_cache/partial"
    apt-get update -qq
    apt-get install -y -qq -o Dir::Cache::archives="$apt_cache" "${missing[@]}" >/dev/null
  fi
}

# What building vt and its demo need: libclang for rocksdb's bindgen, a C/C++ toolchain for
# RocksDB itself, node for the example's build script.
BUILD_PACKAGES=(libclang-dev clang build-essential pkg-config nodejs)
# What the test suite and the benchmarks add: strace as the tracer's correctness oracle,
# make/python3 for the test workloads, npm for the Node tests and the npm packages,
# python3-venv, git and bubblewrap for the benchmarks (matplotlib plots; turbo wants a git
# checkout; bwrap is the sandbox peer); docker.io and debootstrap for the container tests
# (tests/tests/docker.rs starts its own dockerd); postgresql for BuildGrid's scheduler in
# the remote-execution tests (they start their own server; the Debian service is not used).
TEST_PACKAGES=(strace make python3 python3-venv git bubblewrap docker.io debootstrap postgresql npm)

ensure_cargo() {
  if ! command -v cargo >/dev/null; then
    for candidate in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
      [[ -x "$candidate/cargo" ]] && export PATH="$candidate:$PATH"
    done
  fi
  if ! command -v cargo >/dev/null; then
    echo "vt needs Rust >= 1.95 (cargo). Install it with rustup (https://rustup.rs) and run this again." >&2
    echo "  hint: to use vt without Rust, install its npm packages (README: \"Install\")." >&2
    exit 1
  fi
}

# BuildGrid, the REAPI server the remote-cache tests start (0.4.4 runs on Debian's Python
# 3.11; later releases need 3.12), in a venv outside the clone; pip downloads are cached.
ensure_buildgrid() {
  local venv=/var/cache/vt-ci/buildgrid/venv
  if [[ ! -x "$venv/bin/bgd" ]]; then
    say "installing BuildGrid 0.4.4 (PyPI) into $venv"
    /usr/bin/python3 -m venv "$venv"
    PIP_CACHE_DIR=/var/cache/vt-ci/pip "$venv/bin/pip" install --quiet buildgrid==0.4.4
  fi
  # Its SQL scheduler (remote execution) talks to PostgreSQL through psycopg2.
  if ! "$venv/bin/python" -c "import psycopg2" 2>/dev/null; then
    say "installing psycopg2-binary into the BuildGrid venv"
    PIP_CACHE_DIR=/var/cache/vt-ci/pip "$venv/bin/pip" install --quiet psycopg2-binary==2.9.13
  fi
}

# The demo needs the build tools; the tests and benchmarks everything.
ensure_build_tools() {
  ensure_apt_packages "${BUILD_PACKAGES[@]}"
  ensure_cargo
}
ensure_test_tools() {
  ensure_apt_packages "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
  ensure_cargo
  ensure_buildgrid
}

VT="$CARGO_TARGET_DIR/debug/vt"
export VT
