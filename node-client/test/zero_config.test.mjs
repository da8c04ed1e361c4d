// A workspace shaped like the real monorepo trial of issue 26, with no vt config at all:
// npm workspaces, `lib` and `app` built with a real rollup (app bundles lib's output), lib
// tested with a real vitest (with this package's Vitest plugin in its vitest.config), and a
// root `build` that is the aggregate (`npm run build -ws`). rollup and vitest come from npm,
// installed once per machine outside the clone.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { haveVt, npmInstall, vtBinary } from "../scripts/test-helpers.mjs";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const packageDir = path.resolve(here, "..");

function install(name, spec, probe) {
  return path.join(npmInstall(name, spec, probe), name);
}

function workspace() {
  const rollup = install("rollup", "rollup@^4", "rollup/dist/bin/rollup");
  const vitest = install("vitest", "vitest@^3", "vitest/vitest.mjs");
  const root = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), "vt-zero-config-")));
  const write = (rel, text) => {
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    fs.writeFileSync(path.join(root, rel), text);
  };
  fs.mkdirSync(path.join(root, "node_modules"));
  // As `npm install` would leave them: the tools in the workspace's node_modules (the
  // sandbox shows what node_modules links to outside the workspace, read-only).
  fs.symlinkSync(vitest, path.join(root, "node_modules", "vitest"));
  fs.symlinkSync(rollup, path.join(root, "node_modules", "rollup"));
  const rollupBin = "node ../../node_modules/rollup/dist/bin/rollup";
  write(
    "package.json",
    JSON.stringify({ name: "root", private: true, workspaces: ["packages/*"], scripts: { build: "npm run build -ws" } }),
  );
  write(
    "packages/lib/package.json",
    JSON.stringify({
      name: "lib",
      type: "module",
      scripts: {
        build: `${rollupBin} src/index.js --file esm/index.js --format es`,
        test: "node ../../node_modules/vitest/vitest.mjs",
      },
    }),
  );
  write("packages/lib/src/index.js", 'import { twice } from "./twice.js";\nexport const four = twice(2);\n');
  write("packages/lib/src/twice.js", "export const twice = (x) => 2 * x;\n");
  write(
    "packages/lib/src/twice.test.js",
    'import { test, expect } from "vitest";\nimport { twice } from "./twice.js";\ntest("twice", () => { expect(twice(3)).toBe(6); });\n',
  );
  write(
    "packages/lib/vitest.config.mjs",
    `import vt from ${JSON.stringify(path.join(packageDir, "vitest.mjs"))};\nexport default { plugins: [vt()] };\n`,
  );
  write(
    "packages/app/package.json",
    JSON.stringify({
      name: "app",
      type: "module",
      dependencies: { lib: "*" },
      scripts: { build: `${rollupBin} src/main.js --file dist/bundle.js --format es` },
    }),
  );
  write("packages/app/src/main.js", 'import { four } from "../../lib/esm/index.js";\nconsole.log(four);\n');
  return root;
}

function vt(root, args) {
  const result = spawnSync(vtBinary, args, {
    cwd: root,
    env: { ...process.env, VT_CACHE_DIR: path.join(root, ".vt-cache"), LD_LIBRARY_PATH: "" },
    encoding: "utf8",
  });
  assert.equal(result.status, 0, `vt ${args.join(" ")}:\n${result.stdout}\n${result.stderr}`);
  return result.stderr;
}

function outputs(root) {
  return {
    lib: fs.readFileSync(path.join(root, "packages/lib/esm/index.js"), "utf8"),
    app: fs.readFileSync(path.join(root, "packages/app/dist/bundle.js"), "utf8"),
  };
}

function clean(root) {
  fs.rmSync(path.join(root, "packages/lib/esm"), { recursive: true, force: true });
  fs.rmSync(path.join(root, "packages/app/dist"), { recursive: true, force: true });
}

const opts = { skip: !haveVt && "vt is not built", timeout: 300_000 };

test("zero config: build -r equals the bare build, then hits; --sandbox works; tests hit", opts, () => {
  const root = workspace();
  // The bare build, in dependency order, as a user would run it.
  execFileSync("npm", ["run", "build", "-w", "lib"], { cwd: root, stdio: "pipe" });
  execFileSync("npm", ["run", "build", "-w", "app"], { cwd: root, stdio: "pipe" });
  const bare = outputs(root);
  assert.match(bare.app, /twice/, "app bundles lib's output");
  clean(root);

  let stderr = vt(root, ["run", "build", "-r"]);
  assert.doesNotMatch(stderr, /root#build/, "-r leaves the root's aggregate out");
  assert.deepEqual(outputs(root), bare);
  stderr = vt(root, ["run", "build", "-r"]);
  assert.equal(stderr.match(/cache hit, replaying/g)?.length, 2, stderr);
  clean(root);
  vt(root, ["run", "build", "-r"]);
  assert.deepEqual(outputs(root), bare, "a hit restores the outputs");

  // An unrelated file in the temp directory (the workspace's parent) changes nothing.
  fs.writeFileSync(path.join(os.tmpdir(), `vt-unrelated-${process.pid}`), "noise");
  stderr = vt(root, ["run", "build", "-r"]);
  assert.equal(stderr.match(/cache hit, replaying/g)?.length, 2, stderr);

  // Sandboxed, without any declared output: the packages are copy-on-write layers.
  clean(root);
  stderr = vt(root, ["run", "build", "-r", "--sandbox"]);
  assert.doesNotMatch(stderr, /Read-only file system/, stderr);
  assert.deepEqual(outputs(root), bare);
  stderr = vt(root, ["run", "build", "-r", "--sandbox"]);
  assert.equal(stderr.match(/cache hit, replaying/g)?.length, 2, stderr);

  // vitest: `vt run test -r -- run` hits the second time (the plugin takes vitest's
  // results cache out of the key).
  stderr = vt(root, ["run", "test", "-r", "--", "run"]);
  assert.match(stderr, /lib#test: cache miss/, stderr);
  stderr = vt(root, ["run", "test", "-r", "--", "run"]);
  assert.match(stderr, /lib#test: cache hit, replaying/, stderr);
  fs.rmSync(path.join(os.tmpdir(), `vt-unrelated-${process.pid}`), { force: true });
});
