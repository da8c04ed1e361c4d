// node --test: which prebuilt platform package serves a machine (platform.cjs, shared by the
// `@vt/cli` launcher and @vt/client), against real package directories on disk.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { platformKey, compareVersions, findPlatformPackage, glibcVersion } = require("../platform.cjs");

test("each platform maps to the package name esbuild/napi-rs conventions give it", () => {
  assert.equal(platformKey({ platform: "linux", arch: "x64", glibc: "2.36" }), "linux-x64-gnu");
  assert.equal(platformKey({ platform: "linux", arch: "arm64", glibc: null }), "linux-arm64-musl");
  assert.equal(platformKey({ platform: "darwin", arch: "arm64", glibc: null }), "darwin-arm64");
  assert.equal(platformKey({ platform: "win32", arch: "x64", glibc: null }), "win32-x64-msvc");
  // This machine: Debian's glibc.
  assert.match(glibcVersion(), /^2\.\d+$/);
  assert.equal(platformKey(), "linux-x64-gnu");
});

test("versions compare numerically, not as strings", () => {
  assert.equal(compareVersions("2.9", "2.34"), -1);
  assert.equal(compareVersions("2.34", "2.34"), 0);
  assert.equal(compareVersions("2.36", "2.34"), 1);
  assert.equal(compareVersions("2.34.1", "2.34"), 1);
});

function workspaceWith(manifest) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "vt-platform-"));
  const from = path.join(root, "node_modules", "@vt", "cli");
  fs.mkdirSync(from, { recursive: true });
  if (manifest) {
    const dir = path.join(root, "node_modules", "@vt", "linux-x64-gnu");
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify(manifest));
  }
  return { root, from };
}

test("the installed platform package is found from the requiring package", () => {
  const { root, from } = workspaceWith({ name: "@vt/linux-x64-gnu", version: "0.1.0", vt: { glibc: "2.17" } });
  try {
    const found = findPlatformPackage(from, "linux-x64-gnu");
    assert.ok(!(found instanceof Error), String(found));
    assert.equal(found.name, "@vt/linux-x64-gnu");
    assert.equal(fs.realpathSync(found.dir), fs.realpathSync(path.join(root, "node_modules", "@vt", "linux-x64-gnu")));
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test("a missing platform package is an error naming it and what to do", () => {
  const { root, from } = workspaceWith(null);
  try {
    const found = findPlatformPackage(from, "linux-x64-gnu");
    assert.ok(found instanceof Error);
    assert.match(found.message, /@vt\/linux-x64-gnu is not installed/);
    assert.match(found.message, /--omit=optional/);
    assert.match(found.message, /cargo install --locked --path executor/);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test("a binary needing a newer glibc than this machine's is refused before it runs", () => {
  const { root, from } = workspaceWith({ name: "@vt/linux-x64-gnu", version: "0.1.0", vt: { glibc: "9.99" } });
  try {
    const found = findPlatformPackage(from, "linux-x64-gnu");
    assert.ok(found instanceof Error);
    assert.match(found.message, new RegExp(`glibc is ${glibcVersion().replace(".", "\\.")}`));
    assert.match(found.message, /needs glibc 9\.99 or later/);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
