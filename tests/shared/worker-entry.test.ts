// Where Worker entries are found: the .ts file from source, the bundled .js inside a compiled binary (the install
// suite starts each one inside a real binary). Each worker the project starts must be an entry point of the binary.
import { describe, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { WORKER_ENTRIES } from "../../scripts/build-binary.ts";
import { workerEntry } from "../../src/shared/worker-entry.ts";

const ROOT = path.resolve(import.meta.dir, "../..");

describe("workerEntry", () => {
  test("every module that starts a Worker names it with workerEntry, and the binary's build has it as an entry point", () => {
    const started = new Set<string>();
    for (const file of fs.readdirSync(path.join(ROOT, "src"), { recursive: true, encoding: "utf8" })) {
      if (!file.endsWith(".ts")) continue;
      const text = fs.readFileSync(path.join(ROOT, "src", file), "utf8");
      expect({ file, beside: /new URL\("\.\/[^"]*worker[^"]*", import\.meta\.url\)/.test(text) }).toEqual({ file, beside: false });
      for (const m of text.matchAll(/workerEntry\("(src\/[\w/-]+\.ts)"\)/g)) started.add(m[1]!);
    }
    expect([...started].sort()).toEqual([...WORKER_ENTRIES].sort());
  });

  for (const worker of WORKER_ENTRIES) {
    test(`${worker}: from source, the file itself`, () => {
      const url = workerEntry(worker);
      expect(fileURLToPath(url)).toBe(path.join(ROOT, worker));
      expect(fs.existsSync(fileURLToPath(url))).toBe(true);
    });
  }

  test("inside a compiled binary: /$bunfs/root/ plus the path from the repository's root, as .js", () => {
    expect(workerEntry("src/devices/dedup/hash-worker.ts", "file:///$bunfs/root/usbd-tui").href).toBe("file:///$bunfs/root/src/devices/dedup/hash-worker.js");
  });
});
