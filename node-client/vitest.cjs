"use strict";
// A Vitest plugin that makes `vitest run` cacheable under vt.
//
// Vitest keeps what it learned of the last run (each file's duration and whether it
// failed, `results.json`) in `<cacheDir>/vitest/…` — `node_modules/.vite/vitest` by default,
// `node_modules/.vitest` before Vitest 1 — reading it at the start and rewriting it at the
// end. Read and then written, it made every run uncacheable under vt. It only decides the
// order the next run starts its files in, not what a test checks, so it is neither an input
// nor an output. Vite's dependency cache in the same `cacheDir` is derived from
// node_modules, which vt sees read.
//
// Unlike the Vite plugin, this one does not ignore the build's `outDir`: tests often import
// the built output, and then it is an input.

const path = require("node:path");
const client = require("./index.cjs");

function ignore(dir) {
  client.ignoreInput(dir);
  client.ignoreOutput(dir);
}

function vt() {
  return {
    name: "vt:vitest",
    enforce: "pre",
    config(config) {
      const root = path.resolve(config.root || process.cwd());
      ignore(path.join(root, "node_modules/.vitest"));
      ignore(path.join(root, "node_modules/.vite/vitest"));
    },
    configResolved(resolved) {
      if (resolved.cacheDir) ignore(path.join(resolved.cacheDir, "vitest"));
    },
  };
}

module.exports = vt;
module.exports.vt = vt;
module.exports.default = vt;
