export interface EnvOptions {
  /** Make the name and its value part of the task's cache key (default true). */
  tracked?: boolean;
}

/** Whether this process runs inside a vt task. */
export function isAttached(): boolean;
/** The value vt gives tools for `name`; undefined when unset. */
export function getEnv(name: string, options?: EnvOptions): string | undefined;
/** Every variable whose name matches `glob` (e.g. "VITE_*"). */
export function getEnvs(glob: string, options?: EnvOptions): Record<string, string>;
/** Leave a file or directory subtree out of this run's inputs, including earlier reads. */
export function ignoreInput(path: string): void;
/** Leave a file or directory subtree out of this run's outputs. */
export function ignoreOutput(path: string): void;
/** Do not store this run in vt's cache. */
export function disableCache(): void;

declare const client: {
  isAttached: typeof isAttached;
  getEnv: typeof getEnv;
  getEnvs: typeof getEnvs;
  ignoreInput: typeof ignoreInput;
  ignoreOutput: typeof ignoreOutput;
  disableCache: typeof disableCache;
};
export default client;
