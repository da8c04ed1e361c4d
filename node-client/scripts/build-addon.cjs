#!/usr/bin/env node
// Builds the native addon (Rust, napi-rs) with cargo and places it next to index.cjs as
// vt_client.node. Runs on `npm install`; needs cargo (Rust ≥ 1.95) and the vt repository
// (the addon uses the `wire` crate from ../wire).
"use strict";
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const root = path.resolve(__dirname, "..");
const manifest = path.join(root, "addon", "Cargo.toml");
const targetDir =
  process.env.VT_NODE_ADDON_TARGET_DIR ||
  (process.env.CARGO_TARGET_DIR ? `${process.env.CARGO_TARGET_DIR}-node` : path.join(root, "addon", "target"));
try {
  execFileSync("cargo", ["build", "--release", "--locked", "--manifest-path", manifest, "--target-dir", targetDir], {
    stdio: "inherit",
  });
} catch (error) {
  console.error(
    `@vt/client: building the native addon failed (${error.message}).\n` +
      "  hint: it needs cargo (https://rustup.rs) and the vt repository next to node-client/.\n" +
      "  Outside vt the package still works (every call falls back to process.env).",
  );
  process.exit(1);
}
const built = path.join(targetDir, "release", "libvt_node_addon.so");
fs.copyFileSync(built, path.join(root, "vt_client.node"));
