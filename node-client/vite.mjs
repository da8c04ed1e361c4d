import { createRequire } from "node:module";

const vt = createRequire(import.meta.url)("./vite.cjs");

export { vt };
export default vt;
