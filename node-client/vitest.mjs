import { createRequire } from "node:module";

const vt = createRequire(import.meta.url)("./vitest.cjs");

export { vt };
export default vt;
