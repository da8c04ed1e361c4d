/** A Vitest plugin (structurally typed, so this package does not depend on vitest). */
export interface VtVitestPlugin {
  name: "vt:vitest";
  enforce: "pre";
  config(config: { root?: string }): void;
  configResolved(resolved: { cacheDir?: string }): void;
}

/** Makes `vitest run` cacheable under vt: Vitest's own results cache is not an input. */
export function vt(): VtVitestPlugin;
export default vt;
