"use strict";
// Which prebuilt platform package serves this machine, and whether it can run here. One
// file shared by the `@vt/cli` launcher and `@vt/client` (packaging/npm/build copies it into
// both): the binary and the addon ship together in `@vt/<platform>`, as esbuild and napi-rs
// ship theirs (`optionalDependencies` with `os`/`cpu`/`libc`, npm installs the matching one).

const path = require("node:path");

/** The scope every vt package is published under. */
const SCOPE = "@vt";

/**
 * The glibc version of the running Node ("2.36"), or null on musl (and off Linux). Node
 * reports the C library it runs on; napi-rs detects libc the same way.
 */
function glibcVersion() {
  if (process.platform !== "linux") return null;
  const report = typeof process.report?.getReport === "function" ? process.report.getReport() : null;
  return report?.header?.glibcVersionRuntime ?? null;
}

/** "linux-x64-gnu", "linux-arm64-musl", "darwin-arm64", "win32-x64-msvc", … */
function platformKey({ platform = process.platform, arch = process.arch, glibc = glibcVersion() } = {}) {
  if (platform === "linux") return `linux-${arch}-${glibc ? "gnu" : "musl"}`;
  if (platform === "win32") return `win32-${arch}-msvc`;
  return `${platform}-${arch}`;
}

/** Compares dotted versions numerically: "2.9" < "2.34". */
function compareVersions(a, b) {
  const left = String(a).split(".").map(Number);
  const right = String(b).split(".").map(Number);
  for (let i = 0; i < Math.max(left.length, right.length); i++) {
    const diff = (left[i] || 0) - (right[i] || 0);
    if (diff !== 0) return Math.sign(diff);
  }
  return 0;
}

const FROM_SOURCE = "build vt from source instead: `cargo install --locked --path executor` in a vt checkout";

/**
 * The installed platform package for this machine: `{ name, dir, manifest }`, or an Error
 * saying what is missing and what to do. `from` is where resolution starts (the requiring
 * package's directory, so pnpm's isolated layout finds its sibling).
 */
function findPlatformPackage(from, key) {
  // Node's report is slow to make (milliseconds): read the C library from it once.
  const running = glibcVersion();
  key ??= platformKey({ glibc: running });
  const name = `${SCOPE}/${key}`;
  let manifestPath;
  try {
    manifestPath = require.resolve(`${name}/package.json`, { paths: [from] });
  } catch {
    return new Error(
      `${name} is not installed: it holds vt's prebuilt binary for ${key}.\n` +
        "  hint: npm installs it as an optional dependency; reinstall without --omit=optional / " +
        "--no-optional, or, where vt has no prebuilt package for this platform, " +
        FROM_SOURCE,
    );
  }
  const manifest = require(manifestPath);
  const needed = manifest.vt?.glibc;
  if (needed && running && compareVersions(running, needed) < 0) {
    return new Error(
      `this machine's glibc is ${running}; ${name} needs glibc ${needed} or later.\n  hint: ${FROM_SOURCE}`,
    );
  }
  return { name, dir: path.dirname(manifestPath), manifest };
}

module.exports = { SCOPE, glibcVersion, platformKey, compareVersions, findPlatformPackage };
