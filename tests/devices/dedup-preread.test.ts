// The dedup device reads the raw blocks a whole-block write replaces, so a rewrite of the same bytes is left alone
// without hashing; when that read keeps finding nothing the same (new data over old), the next runs skip it, more
// of them each time, and a run that finds the same bytes again ends the skipping. Skipped or not, what is stored
// must be the same: rewrites of the same bytes add no block either way.
import { afterAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { checkDedupStore } from "../../src/devices/dedup/check.ts";
import { openDedupDevice } from "../../src/devices/dedup/index.ts";
import { MiB } from "../conformance/index.ts";
import { gauge, randomBytes } from "./dedup-helpers.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "usbd-dedup-preread-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe("dedup: the read of replaced blocks backs off when it finds nothing the same", () => {
  test("new data over old skips the read, same data over same ends the skipping, and nothing stored differs", () => {
    const dev = openDedupDevice({ storeDir: dir, storeName: "preread", size: 16 * MiB });
    const first = randomBytes(8 * MiB);
    dev.write(0, first);
    expect(gauge(dev, "rewrite reads skipped")).toBe(0);

    // 64 runs of new data over old: after the first fruitless read the runs skip it (1, 2, 4, ... of them).
    let current = first;
    for (let i = 0; i < 64; i++) {
      const next = randomBytes(MiB);
      const at = (i % 8) * MiB;
      dev.write(at, next);
      current = Buffer.concat([current.subarray(0, at), next, current.subarray(at + MiB)]);
    }
    const skippedByNewData = gauge(dev, "rewrite reads skipped");
    expect(skippedByNewData).toBeGreaterThan(32);
    expect(Buffer.compare(dev.read(0, 8 * MiB), current)).toBe(0);

    // The same bytes over themselves: the skip window runs out, the next read finds them the same and skipping
    // stops; no write in between adds a block, skipped or not.
    const unique = gauge(dev, "unique blocks");
    for (let i = 0; i < 200; i++) dev.write((i % 8) * MiB, current.subarray((i % 8) * MiB, (i % 8 + 1) * MiB));
    const afterWindow = gauge(dev, "rewrite reads skipped");
    expect(afterWindow - skippedByNewData).toBeLessThanOrEqual(64);
    for (let i = 0; i < 50; i++) dev.write((i % 8) * MiB, current.subarray((i % 8) * MiB, (i % 8 + 1) * MiB));
    expect(gauge(dev, "rewrite reads skipped")).toBe(afterWindow);
    expect(gauge(dev, "unique blocks")).toBe(unique);
    expect(Buffer.compare(dev.read(0, 8 * MiB), current)).toBe(0);

    dev.flush();
    dev.close();
    const report = checkDedupStore({ storeDir: dir, storeName: "preread" });
    expect(report.problems).toEqual([]);
  });
});
