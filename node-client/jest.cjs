"use strict";
// For Jest's `globalSetup`: makes `jest` cacheable under vt.
//
// Jest keeps a cache of its own (`cacheDirectory`, `/tmp/jest_<uid>` by default): the
// transformed files, the haste map and each test file's last duration (`perf-cache-*`),
// read at the start and rewritten at the end, outside the workspace, so vt could never
// store a jest run. What is in it is derived from files vt sees read (the sources, the
// config, node_modules) or only orders the next run's files, so it is neither an input
// nor an output.
//
//   // jest.config.js
//   module.exports = { globalSetup: "@vt/client/jest" };
//
// With a `globalSetup` of your own, call it from there: `require("@vt/client/jest")(globalConfig, projectConfig)`.

const client = require("./index.cjs");

function vtGlobalSetup(_globalConfig, projectConfig) {
  const dir = projectConfig && projectConfig.cacheDirectory;
  if (dir) {
    client.ignoreInput(dir);
    client.ignoreOutput(dir);
  }
}

module.exports = vtGlobalSetup;
module.exports.default = vtGlobalSetup;
