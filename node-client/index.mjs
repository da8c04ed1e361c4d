import { createRequire } from "node:module";

const client = createRequire(import.meta.url)("./index.cjs");

export const { isAttached, getEnv, getEnvs, ignoreInput, ignoreOutput, disableCache } = client;
export default client;
