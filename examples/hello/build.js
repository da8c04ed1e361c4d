// A tiny build: bundle src/*.js into dist/bundle.js, honouring an optional src/banner.txt.
// It reads, lists, probes a missing file and writes: every kind of access vt records.
const fs = require("node:fs");
const path = require("node:path");

const src = path.join(__dirname, "src");
const dist = path.join(__dirname, "dist");
const files = fs.readdirSync(src).filter((f) => f.endsWith(".js")).sort();
const banner = fs.existsSync(path.join(src, "banner.txt"))
  ? fs.readFileSync(path.join(src, "banner.txt"), "utf8")
  : `// built by build.js (mode: ${process.env.NODE_ENV ?? "development"})\n`;
const body = files.map((f) => `// ${f}\n${fs.readFileSync(path.join(src, f), "utf8")}`).join("\n");
fs.mkdirSync(dist, { recursive: true });
fs.writeFileSync(path.join(dist, "bundle.js"), banner + body);
console.log(`bundled ${files.length} files into dist/bundle.js`);
