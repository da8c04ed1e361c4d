// A real `vitest run` (vitest from npm, installed once per machine outside the clone, as
// vite.test.mjs does) under `vt run`, with and without the plugin from this package.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { haveVt, npmInstall, vtBinary, vtRun } from "../scripts/test-helpers.mjs";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const packageDir = path.resolve(here, "..");

function installVitest() {
  return npmInstall("vitest", "vitest@^3", "vitest/vitest.mjs");
}

/** A package whose `build` task is `vitest run` (vtRun runs `build`). */
function project({ plugin, script = "vitest run" }) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "vt-vitest-"));
  fs.symlinkSync(installVitest(), path.join(root, "node_modules"));
  const vitest = path.join(root, "node_modules", "vitest", "vitest.mjs");
  fs.writeFileSync(
    path.join(root, "package.json"),
    JSON.stringify({
      name: "vitest-app",
      private: true,
      type: "module",
      scripts: { build: script.replace(/^vitest/, `node ${vitest}`) },
    }),
  );
  fs.mkdirSync(path.join(root, "src"));
  fs.writeFileSync(path.join(root, "src", "sum.js"), "export const sum = (a, b) => a + b;\n");
  fs.writeFileSync(
    path.join(root, "src", "sum.test.js"),
    'import { test, expect } from "vitest";\nimport { sum } from "./sum.js";\ntest("sums", () => { expect(sum(1, 2)).toBe(3); });\n',
  );
  const pluginPath = JSON.stringify(path.join(packageDir, "vitest.mjs"));
  fs.writeFileSync(
    path.join(root, "vitest.config.mjs"),
    (plugin ? `import vt from ${pluginPath};\n` : "") + `export default { plugins: [${plugin ? "vt()" : ""}] };\n`,
  );
  return root;
}

const opts = { skip: !haveVt && "vt is not built", timeout: 180_000 };

test("with the plugin: the second vitest run is a hit, an edited source a miss", opts, () => {
  const root = project({ plugin: true });
  const first = vtRun(root);
  assert.equal(first.task.status, "stored", first.stderr);
  assert.match(first.stdout, /1 passed/, first.stdout);
  const second = vtRun(root);
  assert.equal(second.task.status, "hit", second.stderr);
  assert.match(second.stdout, /1 passed/, "the hit replays vitest's report");
  // What the tests import is still an input.
  fs.writeFileSync(path.join(root, "src", "sum.js"), "export const sum = (a, b) => a + b + 0;\n");
  const edited = vtRun(root);
  assert.equal(edited.task.status, "stored", edited.stderr);
  assert.match(edited.task.reason, /src\/sum\.js: content changed/, edited.task.reason);
});

test("without the plugin: vitest's results cache makes the run uncacheable (why the plugin exists)", opts, () => {
  const root = project({ plugin: false });
  vtRun(root);
  const second = vtRun(root);
  assert.equal(second.task.status, "not_cached", second.stderr);
  assert.match(second.task.reason, /results\.json was read and then written/, second.task.reason);
});

test("`vitest` without `run` under vt runs once and ends (stdin is not a terminal)", opts, () => {
  const root = project({ plugin: true, script: "vitest" });
  const result = spawnSync(vtBinary, ["run", "build"], {
    cwd: root,
    env: { ...process.env, VT_CACHE_DIR: path.join(root, ".vt-cache") },
    encoding: "utf8",
    timeout: 120_000,
  });
  assert.equal(result.status, 0, result.stderr);
  assert.match(result.stdout + result.stderr, /1 passed/);
});
