// The dedup device: the shared conformance suite (with reopen, with and without lz4), then what is special to it.
import { afterAll, expect } from "bun:test";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { checkDedupStore } from "../../src/devices/dedup/check.ts";
import { openDedupDevice, type DedupCompression } from "../../src/devices/dedup/index.ts";
import { MiB, runConformance } from "../conformance/index.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "usbd-dedup-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

let count = 0;
for (const compression of ["lz4", "none"] as DedupCompression[]) {
  let name = "";
  runConformance(`dedup (${compression})`, {
    create() {
      name = `conformance-${compression}-${count++}`;
      return openDedupDevice({ storeDir: dir, storeName: name, size: 64 * MiB, compression });
    },
    reopen: () => openDedupDevice({ storeDir: dir, storeName: name, compression }),
    cleanup() {
      // Every conformance test doubles as a consistency test: whatever it did, the closed store must check clean.
      expect(checkDedupStore({ storeDir: dir, storeName: name }).problems).toEqual([]);
      for (const f of fs.readdirSync(dir)) if (f.startsWith(`${name}.`)) fs.rmSync(path.join(dir, f));
    },
  });
}
