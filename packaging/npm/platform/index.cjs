"use strict";
// A vt platform package: the prebuilt `vt` binary and the `@vt/client` addon for one
// platform. `@vt/cli` and `@vt/client` find it through `require.resolve`; this entry point
// names the two files for anyone else.
const path = require("node:path");

module.exports = {
  binary: path.join(__dirname, process.platform === "win32" ? "vt.exe" : "vt"),
  addon: path.join(__dirname, "vt_client.node"),
};
