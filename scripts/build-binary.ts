/**
 * `npm run build:binary`: one self-contained executable, dist/usbd-tui, made with Bun's compiler (the runtime, every
 * module, bun:sqlite and the lz4-napi native addon inside). Ink imports react-devtools-core only when DEV=true and
 * the package is installed; the compiler still follows that import, so it is given an empty module here.
 * The Workers are compiled in as further entry points (WORKER_ENTRIES); src/shared/worker-entry.ts finds them there.
 * The install suite also builds a probe of its own with buildBinary(), to see each worker start inside a binary.
 */
import { mkdirSync, statSync } from "node:fs";
import path from "node:path";

const ROOT = path.resolve(import.meta.dir, "..");

/** Every Worker entry module the program starts, from the repository's root. */
export const WORKER_ENTRIES = ["src/engine/kernel/blocking-worker.ts", "src/devices/objstore/codec/seal-worker.ts", "src/devices/dedup/hash-worker.ts"];

/** Compiles `main` (from the repository's root) and the workers into the executable `outfile`; throws on failure. */
export async function buildBinary(main: string, outfile: string): Promise<void> {
  mkdirSync(path.dirname(outfile), { recursive: true });
  const result = await Bun.build({
    entrypoints: [main, ...WORKER_ENTRIES].map((entry) => path.join(ROOT, entry)),
    compile: { outfile },
    minify: false,
    sourcemap: "none",
    plugins: [
      {
        name: "no-react-devtools",
        setup(build) {
          build.onResolve({ filter: /^react-devtools-core$/ }, () => ({ path: "react-devtools-core", namespace: "usbd-stub" }));
          build.onLoad({ filter: /.*/, namespace: "usbd-stub" }, () => ({ contents: "export default { initialize() {}, connectToDevTools() {} };", loader: "js" }));
        },
      },
    ],
  });
  if (!result.success) throw new Error(`build-binary: ${result.logs.map((l) => String(l)).join("; ")}`);
}

if (import.meta.main) {
  const outfile = path.join(ROOT, "dist", "usbd-tui");
  try {
    await buildBinary("bin/usbd-tui.ts", outfile);
  } catch (e) {
    console.error(e instanceof Error ? e.message : String(e));
    process.exit(1);
  }
  console.log(`build-binary: ${path.relative(ROOT, outfile)} (${(statSync(outfile).size / 2 ** 20).toFixed(0)} MiB)`);
}
