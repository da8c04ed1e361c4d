// Shared by the node --test suites: the vt binary under test and one `vt run build` with its
// JSON summary.
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

export const vtBinary =
  process.env.VT || path.join(process.env.CARGO_TARGET_DIR || "/var/cache/vt-ci/target", "debug", "vt");
export const haveVt = fs.existsSync(vtBinary);

/** `vt run --json build` in `root`: the task's result, what it printed, vt's stderr. */
export function vtRun(root, env = {}) {
  const result = spawnSync(vtBinary, ["run", "--json", "build"], {
    cwd: root,
    env: { ...process.env, VT_CACHE_DIR: path.join(root, ".vt-cache"), LD_LIBRARY_PATH: "", ...env },
    encoding: "utf8",
  });
  const start = result.stdout.startsWith("{\n") ? 0 : result.stdout.lastIndexOf("\n{\n") + 1;
  let summary;
  try {
    summary = JSON.parse(result.stdout.slice(start));
  } catch {
    throw new Error(`vt printed no summary:\n${result.stdout}\n${result.stderr}`);
  }
  return { task: summary.tasks[0], stdout: result.stdout.slice(0, start), stderr: result.stderr };
}

/**
 * `spec` from npm, installed once per machine into `$VT_NPM_INSTALLS/<dir>` (outside the
 * clone; default /var/cache/vt-ci/npm-installs) unless `probe` (a path inside its
 * node_modules) is there already. Returns that node_modules.
 */
export function npmInstall(dir, spec, probe) {
  const base = path.join(process.env.VT_NPM_INSTALLS || "/var/cache/vt-ci/npm-installs", dir);
  fs.mkdirSync(base, { recursive: true });
  if (!fs.existsSync(path.join(base, "package.json"))) fs.writeFileSync(path.join(base, "package.json"), '{"private":true}');
  if (!fs.existsSync(path.join(base, "node_modules", probe))) {
    execFileSync("npm", ["install", "--no-audit", "--no-fund", spec], { cwd: base, stdio: "inherit" });
  }
  return path.join(base, "node_modules");
}
