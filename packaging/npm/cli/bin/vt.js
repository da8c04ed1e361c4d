#!/usr/bin/env node
"use strict";
// `vt` from npm: finds the prebuilt binary in this platform's `@vt/<platform>` package and
// runs it with the same arguments, stdio and environment. Its exit code is vt's; if vt dies
// of a signal, this process dies of the same one; a signal sent to this process goes on to
// vt (a terminal's Ctrl-C reaches both, and vt takes a copy arriving at once as the same
// press, not as "stop now").
//
// VT_BINARY=/path/to/vt runs that binary instead (a source build, or a platform without a
// prebuilt package).

const { spawn } = require("node:child_process");
const path = require("node:path");
const { findPlatformPackage } = require("../platform.cjs");

function fail(message) {
  process.stderr.write(`vt: error: ${message}\n`);
  process.exit(2);
}

function binaryPath() {
  if (process.env.VT_BINARY) return process.env.VT_BINARY;
  const found = findPlatformPackage(path.join(__dirname, ".."));
  if (found instanceof Error) fail(found.message);
  return path.join(found.dir, process.platform === "win32" ? "vt.exe" : "vt");
}

const binary = binaryPath();
const child = spawn(binary, process.argv.slice(2), { stdio: "inherit" });

// Every signal a user or a CI runner sends to stop or poke a process (SIGWINCH goes to the
// terminal's whole foreground group, vt included, so it is not repeated); SIGKILL/SIGSTOP
// cannot be caught (and SIGKILL of this process leaves vt to finish on its own).
const FORWARDED = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"];
const forwarders = new Map();
for (const signal of FORWARDED) {
  const forward = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  };
  forwarders.set(signal, forward);
  // Windows has no such signals beyond SIGINT/SIGBREAK emulation; `process.on` accepts
  // only the ones the platform knows.
  try {
    process.on(signal, forward);
  } catch {
    forwarders.delete(signal);
  }
}

child.on("error", (error) => {
  fail(
    `cannot run ${binary} (${error.message}).\n` +
      "  hint: reinstall the package (its binary may be missing or not executable), or set VT_BINARY",
  );
});

child.on("exit", (code, signal) => {
  for (const [name, forward] of forwarders) process.removeListener(name, forward);
  if (signal) {
    // Die the way vt died, so a shell or CI runner sees the same status (128 + signal).
    process.kill(process.pid, signal);
    return;
  }
  process.exit(code ?? 1);
});
