"use strict";
// A Vite plugin that makes `vite build` runner-aware under vt:
// - NODE_ENV and every variable matching the resolved envPrefix are fetched from vt
//   (tracked, so a change is a cache miss naming it) and put in process.env for Vite's
//   loadEnv; vt passes undeclared variables to tasks only this way.
// - Vite's dependency cache (node_modules/.vite, node_modules/.vite-temp) is neither input
//   nor output, and neither is the outDir listing emptyDir() reads before a build.
// The mode's .env files are files: vt's tracer already sees them read (or looked for).

const path = require("node:path");
const client = require("./index.cjs");

function vt() {
  let root = process.cwd();
  return {
    name: "vt",
    enforce: "pre",
    config(config) {
      root = path.resolve(config.root || process.cwd());
      const nodeEnv = client.getEnv("NODE_ENV");
      if (nodeEnv !== undefined) process.env.NODE_ENV = nodeEnv;
      const prefixes = [].concat(config.envPrefix === undefined ? "VITE_" : config.envPrefix);
      for (const prefix of prefixes) {
        for (const [name, value] of Object.entries(client.getEnvs(`${prefix}*`))) {
          if (process.env[name] === undefined) process.env[name] = value;
        }
      }
      for (const dir of ["node_modules/.vite", "node_modules/.vite-temp"]) {
        client.ignoreInput(path.join(root, dir));
        client.ignoreOutput(path.join(root, dir));
      }
    },
    configResolved(resolved) {
      if (resolved.cacheDir) {
        client.ignoreInput(resolved.cacheDir);
        client.ignoreOutput(resolved.cacheDir);
      }
      // emptyDir(outDir) lists the old output before the build writes the new one.
      client.ignoreInput(path.resolve(resolved.root, resolved.build.outDir));
    },
  };
}

module.exports = vt;
module.exports.vt = vt;
module.exports.default = vt;
