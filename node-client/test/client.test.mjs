// node --test: every call of @vt/client outside vt (plain fallbacks) and inside vt (through
// the native addon and vt's per-task IPC server, observed through vt's cache decisions).
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { haveVt, vtRun } from "../scripts/test-helpers.mjs";
import client, { getEnv, getEnvs, ignoreInput, ignoreOutput, disableCache, isAttached } from "../index.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const packageDir = path.resolve(here, "..");

test("outside vt every call falls back to process.env or does nothing", () => {
  delete process.env.VT_IPC_FD;
  process.env.VT_CLIENT_TEST = "outside";
  process.env.VT_CLIENT_TEST_2 = "two";
  assert.equal(isAttached(), false);
  assert.equal(getEnv("VT_CLIENT_TEST"), "outside");
  assert.equal(getEnv("VT_CLIENT_TEST_NOPE"), undefined);
  assert.deepEqual(getEnvs("VT_CLIENT_TEST*"), { VT_CLIENT_TEST: "outside", VT_CLIENT_TEST_2: "two" });
  ignoreInput("x");
  ignoreOutput("y");
  disableCache();
  assert.equal(typeof client.getEnv, "function", "the default export has the same API");
});

test("CommonJS and ESM entry points are the same module", async () => {
  const { createRequire } = await import("node:module");
  const cjs = createRequire(import.meta.url)("../index.cjs");
  assert.equal(cjs.getEnv, getEnv);
  const vite = await import("../vite.mjs");
  assert.equal(typeof vite.default, "function");
  assert.equal(vite.default().name, "vt");
});

/** A workspace whose `build` runs `script` (a Node program using the client). */
function workspace(script) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "vt-node-client-"));
  fs.writeFileSync(
    path.join(root, "package.json"),
    JSON.stringify({ name: "app", scripts: { build: "node tool.mjs" } }),
  );
  const header = `import * as vt from ${JSON.stringify(path.join(packageDir, "index.mjs"))};\n`;
  fs.writeFileSync(path.join(root, "tool.mjs"), header + script);
  return root;
}


test("inside vt: a tracked getEnv joins the cache key", { skip: !haveVt && "vt is not built" }, () => {
  const root = workspace(`process.stdout.write(String(vt.getEnv("NODE_CLIENT_MODE")) + "\\n");`);
  assert.equal(vtRun(root, { NODE_CLIENT_MODE: "a" }).task.status, "stored");
  const hit = vtRun(root, { NODE_CLIENT_MODE: "a" });
  assert.equal(hit.task.status, "hit");
  assert.equal(hit.stdout, "a\n", "the replayed output is the tool's");
  const miss = vtRun(root, { NODE_CLIENT_MODE: "b" });
  assert.equal(miss.task.status, "stored");
  assert.match(miss.task.reason, /env NODE_CLIENT_MODE: a → b/);
});

test("inside vt: getEnvs, untracked getEnv, isAttached", { skip: !haveVt && "vt is not built" }, () => {
  const root = workspace(`
    const all = vt.getEnvs("NODE_CLIENT_G_*");
    const loose = vt.getEnv("NODE_CLIENT_LOOSE", { tracked: false });
    process.stdout.write(JSON.stringify({ attached: vt.isAttached(), all, loose }) + "\\n");
  `);
  const first = vtRun(root, { NODE_CLIENT_G_A: "1", NODE_CLIENT_LOOSE: "x" });
  assert.deepEqual(JSON.parse(first.stdout), { attached: true, all: { NODE_CLIENT_G_A: "1" }, loose: "x" });
  assert.equal(vtRun(root, { NODE_CLIENT_G_A: "1", NODE_CLIENT_LOOSE: "y" }).task.status, "hit");
  const added = vtRun(root, { NODE_CLIENT_G_A: "1", NODE_CLIENT_G_B: "2" });
  assert.match(added.task.reason, /env NODE_CLIENT_G_\*: the matching variables changed/);
});

test("inside vt: ignoreInput, ignoreOutput, disableCache", { skip: !haveVt && "vt is not built" }, () => {
  const root = workspace(`
    import fs from "node:fs";
    fs.readFileSync("data.txt");
    vt.ignoreInput("data.txt");
    fs.writeFileSync("scratch.txt", "s");
    vt.ignoreOutput("scratch.txt");
    fs.writeFileSync("out.txt", "o");
    if (vt.getEnv("NODE_CLIENT_DISABLE")) vt.disableCache();
  `);
  fs.writeFileSync(path.join(root, "data.txt"), "1");
  assert.equal(vtRun(root).task.status, "stored");
  fs.writeFileSync(path.join(root, "data.txt"), "2");
  fs.rmSync(path.join(root, "scratch.txt"));
  fs.rmSync(path.join(root, "out.txt"));
  assert.equal(vtRun(root).task.status, "hit", "the ignored input changed: still a hit");
  assert.ok(fs.existsSync(path.join(root, "out.txt")));
  assert.ok(!fs.existsSync(path.join(root, "scratch.txt")), "the ignored output is not restored");
  const disabled = vtRun(root, { NODE_CLIENT_DISABLE: "1" });
  assert.equal(disabled.task.status, "not_cached");
  assert.match(disabled.task.reason, /^disabled by node \(pid \d+\)/);
});

test("inside vt: 16 Node worker processes call getEnv at once", { skip: !haveVt && "vt is not built" }, () => {
  const root = workspace(`
    import { spawnSync, spawn } from "node:child_process";
    const me = ${JSON.stringify(path.join(packageDir, "index.cjs"))};
    const children = Array.from({ length: 16 }, (_, i) => new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ["-e", \`process.stdout.write(require(\${JSON.stringify(me)}).getEnv("NODE_CLIENT_MANY"))\`]);
      let out = "";
      child.stdout.on("data", (d) => (out += d));
      child.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error("worker " + i + " failed"))));
    }));
    const values = await Promise.all(children);
    process.stdout.write(values.join(",") + "\\n");
  `);
  const run = vtRun(root, { NODE_CLIENT_MANY: "v" });
  assert.equal(run.task.status, "stored", run.stderr);
  assert.equal(run.stdout, Array(16).fill("v").join(",") + "\n");
  assert.equal(vtRun(root, { NODE_CLIENT_MANY: "v" }).task.status, "hit");
});
