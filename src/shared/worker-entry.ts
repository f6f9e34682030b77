/**
 * Where a Worker's entry module is. From source it is the .ts file itself. In the compiled binary
 * (scripts/build-binary.ts) every module is bundled into the binary's one file, so a `new URL("./x-worker.ts",
 * import.meta.url)` beside the caller names a file that does not exist; Bun keeps each extra entry point at its path
 * under the entry points' common root (the repository's root), with a .js extension, inside /$bunfs/root/.
 */

/** The embedded file system's root in a compiled binary. */
const BINARY_ROOT = "file:///$bunfs/root/";

/**
 * The URL to start a Worker on for `sourcePath` (relative to the repository's root, e.g.
 * "src/devices/dedup/hash-worker.ts"). `from` is this module's own URL; tests pass a binary's to see the mapping.
 */
export function workerEntry(sourcePath: string, from: string = import.meta.url): URL {
  if (from.startsWith(BINARY_ROOT)) return new URL(sourcePath.replace(/\.ts$/, ".js"), BINARY_ROOT);
  return new URL(`../../${sourcePath}`, from);
}
