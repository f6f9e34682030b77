// The dedup device hashes large writes on the shared worker pool (real Bun Workers): it keeps answering READs while a
// burst of unique data is being hashed, and what it stores is the same as with inline hashing.
import { afterAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { checkDedupStore } from "../../src/devices/dedup/check.ts";
import { openDedupDevice } from "../../src/devices/dedup/index.ts";
import { MiB, pattern } from "../conformance/index.ts";
import { gauge, randomBytes } from "./dedup-helpers.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "usbd-dedup-offload-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe("dedup: hashing large writes off the serving thread", () => {
  test("the device keeps answering READs while a unique-data burst is processed", async () => {
    const dev = openDedupDevice({ storeDir: dir, storeName: "burst", size: 256 * MiB, hashOffThread: true });
    const known = pattern(64 * 1024, 5);
    await dev.write(0, known);
    dev.flush();
    const burst = randomBytes(48 * MiB);
    let settled = 0;
    const writes: Promise<void>[] = [];
    for (let at = 0; at < burst.length; at += MiB) {
      writes.push(Promise.resolve(dev.write(MiB + at, burst.subarray(at, at + MiB))).then(() => void settled++));
    }
    // Reads between the burst's completions: each is answered at once (no promise), with the data that was there.
    let readsDuringBurst = 0;
    while (settled < writes.length) {
      const got = dev.read(0, known.length);
      expect(got instanceof Promise).toBe(false);
      expect(Buffer.compare(got, known)).toBe(0);
      readsDuringBurst++;
      await new Promise((resolve) => setImmediate(resolve));
    }
    await Promise.all(writes);
    expect(gauge(dev, "blocks hashed off-thread")).toBeGreaterThan(0);
    expect(readsDuringBurst).toBeGreaterThan(10);
    expect(Buffer.compare(dev.read(MiB, burst.length), burst)).toBe(0);
    dev.close();
    expect(checkDedupStore({ storeDir: dir, storeName: "burst" }).problems).toEqual([]);
  });

  test("blocks hashed by the worker dedup against blocks hashed inline, and unaligned ends are handled inline", async () => {
    const data = randomBytes(8 * MiB);
    const dev = openDedupDevice({ storeDir: dir, storeName: "same", size: 64 * MiB, hashOffThread: true });
    // Inline first (small writes), then the same content in one large write with unaligned ends elsewhere.
    for (let at = 0; at < data.length; at += 32 * 1024) dev.write(at, data.subarray(at, at + 32 * 1024));
    await dev.write(16 * MiB + 100, data.subarray(100, data.length - 100));
    expect(gauge(dev, "blocks hashed off-thread")).toBe(2046);
    dev.flush();
    // 2048 blocks, and the two end blocks of the second copy differ (100 zero bytes at either end).
    expect(gauge(dev, "unique blocks")).toBe(2050);
    const reread = dev.read(16 * MiB, 8 * MiB);
    expect(Buffer.compare(reread.subarray(100, data.length - 100), data.subarray(100, data.length - 100))).toBe(0);
    dev.close();
    expect(checkDedupStore({ storeDir: dir, storeName: "same" }).problems).toEqual([]);
  });
});
