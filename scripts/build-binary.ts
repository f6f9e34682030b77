/**
 * `npm run build:binary`: one self-contained executable, dist/usbd-tui, made with Bun's compiler (the runtime, every
 * module, bun:sqlite and the lz4-napi native addon inside). Ink imports react-devtools-core only when DEV=true and
 * the package is installed; the compiler still follows that import, so it is given an empty module here.
 * The Workers (the kernel path's src/engine/kernel/blocking-worker.ts, the objstore codec's seal-worker.ts) are compiled in as further entry points.
 */
import { mkdirSync, statSync } from "node:fs";
import path from "node:path";

const ROOT = path.resolve(import.meta.dir, "..");
const outfile = path.join(ROOT, "dist", "usbd-tui");
mkdirSync(path.dirname(outfile), { recursive: true });

const result = await Bun.build({
  entrypoints: [
    path.join(ROOT, "bin/usbd-tui.ts"),
    path.join(ROOT, "src/engine/kernel/blocking-worker.ts"),
    path.join(ROOT, "src/devices/objstore/codec/seal-worker.ts"),
    path.join(ROOT, "src/devices/dedup/hash-worker.ts"),
  ],
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
if (!result.success) {
  for (const log of result.logs) console.error(log);
  process.exit(1);
}
console.log(`build-binary: ${path.relative(ROOT, outfile)} (${(statSync(outfile).size / 2 ** 20).toFixed(0)} MiB)`);
