/** Jest's `globalSetup` (structurally typed, so this package does not depend on jest). */
export default function vtGlobalSetup(
  globalConfig: unknown,
  projectConfig: { cacheDirectory?: string },
): void;
