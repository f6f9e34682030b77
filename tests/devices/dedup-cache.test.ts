// The dedup device's caches evict the least recently used entry: a map page or decoded block that every request
// touches survives a stream of cold loads that, in load order, would have pushed it out. Observed through the
// stats' miss counters, not timing.
import { afterAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { openDedupDevice, type DedupDevice } from "../../src/devices/dedup/index.ts";
import { MiB, pattern } from "../conformance/index.ts";
import { gauge } from "./dedup-helpers.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "usbd-dedup-cache-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const BLOCK = 4096;
/** Blocks per map page (layout.ts): one block in each page makes every read of it a different page. */
const PAGE_BLOCKS = 1024;

/** Writes `blocks` with `content(i)` at block `at(i)`, flushes and reopens with the smallest cache (1 MiB). */
function storeAndReopen(name: string, blocks: number, at: (i: number) => number, content: (i: number) => Uint8Array): DedupDevice {
  const dev = openDedupDevice({ storeDir: dir, storeName: name, size: 2048 * MiB });
  for (let i = 0; i < blocks; i++) dev.write(at(i) * BLOCK, content(i));
  dev.close();
  return openDedupDevice({ storeDir: dir, storeName: name, memoryCache: MiB });
}

describe("dedup: least-recently-used caches", () => {
  test("a map page read between every cold page is loaded once (in load order it would be evicted)", () => {
    // 1 MiB of cache keeps about 90 pages; 400 pages pass through it.
    const pages = 400;
    const dev = storeAndReopen("pages", pages, (i) => i * PAGE_BLOCKS, (i) => pattern(BLOCK, i + 1));
    const hot = pattern(BLOCK, 1);
    expect(dev.read(0, BLOCK)).toEqual(hot);
    for (let p = 1; p < pages; p++) {
      expect(dev.read(p * PAGE_BLOCKS * BLOCK, BLOCK)[0]).toBe(pattern(BLOCK, p + 1)[0]!);
      expect(dev.read(0, BLOCK)).toEqual(hot);
    }
    expect(gauge(dev, "map pages loaded")).toBe(pages);
    expect(gauge(dev, "memory cache")).toBeLessThanOrEqual(MiB);
    dev.close();
  });

  test("a compressed block read between every cold block is decoded once (in load order it would be evicted)", () => {
    // About 180 decoded blocks fit; 500 distinct compressible blocks pass through.
    const blocks = 500;
    const text = (i: number) => new TextEncoder().encode(`block ${i} of a compressible file `.repeat(200).slice(0, BLOCK));
    const dev = storeAndReopen("blocks", blocks, (i) => i, text);
    for (let i = 1; i < blocks; i++) {
      expect(dev.read(0, BLOCK)).toEqual(text(0));
      expect(dev.read(i * BLOCK, BLOCK)).toEqual(text(i));
    }
    expect(gauge(dev, "blocks decoded")).toBe(blocks);
    expect(gauge(dev, "map pages loaded")).toBe(1);
    dev.close();
  });
});
