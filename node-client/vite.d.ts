/** A Vite plugin (structurally typed, so this package does not depend on vite). */
export interface VtVitePlugin {
  name: "vt";
  enforce: "pre";
  config(config: { root?: string; envPrefix?: string | string[] }): void;
  configResolved(resolved: { root: string; cacheDir?: string; build: { outDir: string } }): void;
}

/** Makes `vite build` runner-aware under vt (tracked env, ignored dep cache). */
export function vt(): VtVitePlugin;
export default vt;
