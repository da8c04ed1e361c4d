// A real `jest` (from npm, installed once per machine outside the clone) under `vt run`,
// with and without `@vt/client/jest` as its globalSetup.
import { test } from "node:test";
import assert from "node:assert/strict";
import { haveVt, npmInstall, vtRun } from "../scripts/test-helpers.mjs";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const packageDir = path.resolve(here, "..");

function installJest() {
  return npmInstall("jest", "jest@^29", "jest/bin/jest.js");
}

/** A package whose `build` task is `jest`, with its cache in a directory of its own. */
function project({ setup }) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "vt-jest-"));
  fs.symlinkSync(installJest(), path.join(root, "node_modules"));
  const jest = path.join(root, "node_modules", "jest", "bin", "jest.js");
  fs.writeFileSync(
    path.join(root, "package.json"),
    JSON.stringify({ name: "jest-app", private: true, scripts: { build: `node ${jest}` } }),
  );
  fs.mkdirSync(path.join(root, "src"));
  fs.writeFileSync(path.join(root, "src", "sum.js"), "exports.sum = (a, b) => a + b;\n");
  fs.writeFileSync(
    path.join(root, "src", "sum.test.js"),
    'const { sum } = require("./sum");\ntest("sums", () => { expect(sum(1, 2)).toBe(3); });\n',
  );
  const config = { cacheDirectory: fs.mkdtempSync(path.join(os.tmpdir(), "vt-jest-cache-")) };
  if (setup) config.globalSetup = path.join(packageDir, "jest.cjs");
  fs.writeFileSync(path.join(root, "jest.config.js"), `module.exports = ${JSON.stringify(config)};\n`);
  return root;
}

const opts = { skip: !haveVt && "vt is not built", timeout: 180_000 };

test("with @vt/client/jest: the second jest run is a hit, an edited source a miss", opts, () => {
  const root = project({ setup: true });
  const first = vtRun(root);
  assert.equal(first.task.status, "stored", first.stderr);
  const second = vtRun(root);
  assert.equal(second.task.status, "hit", second.stderr);
  fs.writeFileSync(path.join(root, "src", "sum.js"), "exports.sum = (a, b) => a + b + 0;\n");
  const edited = vtRun(root);
  assert.equal(edited.task.status, "stored", edited.stderr);
  assert.match(edited.task.reason, /src\/sum\.js: content changed/, edited.task.reason);
});

test("without it: jest's cache outside the workspace makes the run uncacheable", opts, () => {
  const root = project({ setup: false });
  const first = vtRun(root);
  assert.equal(first.task.status, "not_cached", first.stderr);
  assert.match(first.task.reason, /outside the workspace/, first.task.reason);
});
