"use strict";
// @vt/client: what a tool can tell the vt task runner. Synchronous, so config code can call
// it. Outside vt (no VT_IPC_FD) nothing native is loaded and every call falls back to
// process.env or does nothing.

const fs = require("node:fs");
const path = require("node:path");
const { findPlatformPackage } = require("./platform.cjs");

const ATTACHED = Boolean(process.env.VT_IPC_FD);
let native = null;

// The addon: a development build next to this file (`npm install` in the vt repository
// builds it with cargo), else the prebuilt one in this platform's `@vt/<platform>` package.
function addon() {
  if (native === null) {
    const local = path.join(__dirname, "vt_client.node");
    let file = local;
    if (!fs.existsSync(local)) {
      const found = findPlatformPackage(__dirname);
      if (found instanceof Error) throw new Error(`@vt/client: ${found.message}`);
      file = path.join(found.dir, "vt_client.node");
    }
    try {
      native = require(file);
    } catch (error) {
      throw new Error(`@vt/client: cannot load the native addon ${file} (${error.message})`);
    }
  }
  return native;
}

/** Whether this process runs inside a vt task. */
function isAttached() {
  return ATTACHED && addon().isAttached();
}

/**
 * The value vt gives tools for `name` (undefined when unset). With `tracked` (the default)
 * the name and value become part of the task's cache key.
 */
function getEnv(name, { tracked = true } = {}) {
  if (!ATTACHED) return process.env[name];
  const value = addon().getEnv(String(name), Boolean(tracked));
  return value === null ? undefined : value;
}

/** Every variable whose name matches `glob` (e.g. "VITE_*"), as an object. */
function getEnvs(glob, { tracked = true } = {}) {
  if (!ATTACHED) {
    const re = new RegExp(
      "^" + String(glob).replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".") + "$",
    );
    return Object.fromEntries(Object.entries(process.env).filter(([k]) => re.test(k)).sort());
  }
  return addon().getEnvs(String(glob), Boolean(tracked));
}

/** Leave a file or directory subtree out of this run's inputs (reads before the call too). */
function ignoreInput(p) {
  if (ATTACHED) addon().ignoreInput(path.resolve(String(p)));
}

/** Leave a file or directory subtree out of this run's outputs. */
function ignoreOutput(p) {
  if (ATTACHED) addon().ignoreOutput(path.resolve(String(p)));
}

/** Do not store this run in vt's cache. */
function disableCache() {
  if (ATTACHED) addon().disableCache();
}

module.exports = { isAttached, getEnv, getEnvs, ignoreInput, ignoreOutput, disableCache };
