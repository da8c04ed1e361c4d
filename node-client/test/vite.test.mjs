// A real `vite build` (vite from npm, current major) under `vt run`, with and without the
// plugin from this package. vite is installed once per machine into a cache outside the
// clone ($VT_NPM_INSTALLS, default /var/cache/vt-ci/npm-installs) and linked into a fresh app.
import { test } from "node:test";
import assert from "node:assert/strict";
import { haveVt, npmInstall, vtRun } from "../scripts/test-helpers.mjs";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const packageDir = path.resolve(here, "..");

function installVite() {
  return npmInstall("vite", "vite@^8", "vite/bin/vite.js");
}

function app({ plugin, envPrefix = "VITE_" }) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "vt-vite-"));
  fs.symlinkSync(installVite(), path.join(root, "node_modules"));
  fs.writeFileSync(
    path.join(root, "package.json"),
    JSON.stringify({
      name: "vite-app",
      private: true,
      type: "module",
      scripts: { build: `node ${path.join(root, "node_modules", "vite", "bin", "vite.js")} build` },
    }),
  );
  fs.writeFileSync(
    path.join(root, "index.html"),
    '<!doctype html><html><body><div id="app"></div><script type="module" src="/src/main.js"></script></body></html>\n',
  );
  fs.mkdirSync(path.join(root, "src"));
  fs.writeFileSync(
    path.join(root, "src", "main.js"),
    'document.querySelector("#app").textContent = `${import.meta.env.MODE}:${JSON.stringify(import.meta.env)}`;\n',
  );
  writeConfig(root, { plugin, envPrefix });
  return root;
}

function writeConfig(root, { plugin, envPrefix }) {
  const vitePlugin = JSON.stringify(path.join(packageDir, "vite.mjs"));
  fs.writeFileSync(
    path.join(root, "vite.config.mjs"),
    (plugin ? `import vt from ${vitePlugin};\n` : "") +
      `export default { envPrefix: ${JSON.stringify(envPrefix)}, plugins: [${plugin ? "vt()" : ""}] };\n`,
  );
}

/** The task's result from `vt run build`, with vt's stderr. */
function run(root, env) {
  const { task, stderr } = vtRun(root, env);
  return { ...task, stderr };
}

function bundle(root) {
  const assets = path.join(root, "dist", "assets");
  const js = fs.readdirSync(assets).find((f) => f.endsWith(".js"));
  return fs.readFileSync(path.join(assets, js), "utf8");
}

const opts = { skip: !haveVt && "vt is not built", timeout: 180_000 };

test("with the plugin: a hit restores dist/, NODE_ENV and envPrefix are tracked", opts, () => {
  const root = app({ plugin: true });
  const first = run(root, { NODE_ENV: "production", VITE_GREETING: "hello" });
  assert.equal(first.status, "stored", first.stderr);
  assert.match(bundle(root), /hello/, "the plugin handed VITE_GREETING to Vite");

  // (1) a second run hits, and dist/ comes back after rm -rf.
  fs.rmSync(path.join(root, "dist"), { recursive: true });
  const second = run(root, { NODE_ENV: "production", VITE_GREETING: "hello" });
  assert.equal(second.status, "hit", second.reason + second.stderr);
  assert.match(bundle(root), /hello/);

  // (2) NODE_ENV is tracked.
  const dev = run(root, { NODE_ENV: "development", VITE_GREETING: "hello" });
  assert.equal(dev.status, "stored");
  assert.match(dev.reason, /env NODE_ENV: production → development/);

  // (3) envPrefix VITE_ → APP_ in vite.config: APP_* tracked, VITE_* not, vt config untouched.
  writeConfig(root, { plugin: true, envPrefix: "APP_" });
  const env = { NODE_ENV: "production", APP_GREETING: "hi", VITE_GREETING: "hello" };
  assert.equal(run(root, env).status, "stored");
  assert.equal(run(root, { ...env, VITE_GREETING: "other" }).status, "hit", "VITE_* no longer matters");
  const app2 = run(root, { ...env, APP_GREETING: "bye" });
  assert.equal(app2.status, "stored");
  assert.match(app2.reason, /env APP_\*: the matching variables changed/);
  assert.match(bundle(root), /bye/);
});

test("without the plugin the build still runs and vt says why it cached or not", opts, () => {
  const root = app({ plugin: false });
  const first = run(root, { NODE_ENV: "production" });
  assert.ok(["stored", "not_cached"].includes(first.status), JSON.stringify(first));
  assert.ok(first.reason.length > 0, "a reason is always given");
  assert.ok(fs.existsSync(path.join(root, "dist", "index.html")), "the build ran");
  const second = run(root, { NODE_ENV: "production" });
  if (first.status === "stored") {
    assert.equal(second.status, "hit", second.reason);
  } else {
    assert.equal(second.status, "not_cached");
    assert.equal(second.reason, first.reason, "the same reason, stated again");
  }
});
