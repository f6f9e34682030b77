// The dedup device's sub-block write path: pieces smaller than a block are coalesced in memory and the block is
// hashed and stored once (when complete, evicted, or at a commit); reads, extents and reopening see exactly the
// data written. Durability under SIGKILL is in dedup-crash.test.ts.
import { afterAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { checkDedupStore } from "../../src/devices/dedup/check.ts";
import { openDedupDevice, type DedupDevice } from "../../src/devices/dedup/index.ts";
import { KiB, MiB, pattern } from "../conformance/index.ts";
import { gauge } from "./dedup-helpers.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "usbd-dedup-coalesce-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const BLOCK = 4096;
let stores = 0;

function fresh(): { dev: DedupDevice; reopen: () => DedupDevice; name: string } {
  const name = `store-${stores++}`;
  return {
    name,
    dev: openDedupDevice({ storeDir: dir, storeName: name, size: 64 * MiB }),
    reopen: () => openDedupDevice({ storeDir: dir, storeName: name }),
  };
}

describe("dedup: sub-block writes are coalesced", () => {
  test("1 KiB sequential writes store each block once, when its last piece arrives; reads see every piece at once", () => {
    const { dev, reopen, name } = fresh();
    const data = pattern(64 * BLOCK, 7);
    for (let at = 0; at < data.length; at += KiB) {
      dev.write(at, data.subarray(at, at + KiB));
      const block = Math.floor(at / BLOCK);
      const complete = (at + KiB) % BLOCK === 0;
      // Nothing is hashed or stored until the block is whole: the blocks stored so far are the complete ones.
      expect({ at, unique: gauge(dev, "unique blocks"), held: gauge(dev, "blocks being coalesced") }).toEqual({
        at,
        unique: complete ? block + 1 : block,
        held: complete ? 0 : 1,
      });
      expect(dev.read(block * BLOCK, at + KiB - block * BLOCK)).toEqual(data.subarray(block * BLOCK, at + KiB));
    }
    dev.close();
    const again = reopen();
    expect(again.read(0, data.length)).toEqual(data);
    again.close();
    expect(checkDedupStore({ storeDir: dir, storeName: name }).problems).toEqual([]);
  });

  test("a half-written block is read, reported as data, stored by FLUSH and back after reopening", () => {
    const { dev, reopen, name } = fresh();
    const old = pattern(4 * BLOCK, 3);
    dev.write(0, old);
    dev.flush();
    const piece = pattern(512, 9);
    dev.write(BLOCK + 1024, piece);
    dev.writeZeroes(2 * BLOCK + 512, 512);
    const expected = Buffer.from(old);
    expected.set(piece, BLOCK + 1024);
    expected.fill(0, 2 * BLOCK + 512, 2 * BLOCK + 1024);
    expect(gauge(dev, "blocks being coalesced")).toBe(2);
    // One read across raw blocks and held ones (the raw run must stop at a held block).
    expect(dev.read(0, 4 * BLOCK)).toEqual(new Uint8Array(expected));
    dev.writeZeroes(8 * BLOCK + 100, 200); // a partial zero into a block that reads as zeros changes nothing
    expect(gauge(dev, "blocks being coalesced")).toBe(2);
    const piece2 = pattern(1024, 11);
    dev.write(20 * BLOCK, piece2);
    expect(dev.extents(20 * BLOCK, BLOCK)).toEqual([{ length: BLOCK, hole: false, zero: false }]);
    dev.flush();
    expect(gauge(dev, "blocks being coalesced")).toBe(0);
    expect(gauge(dev, "unflushed changes")).toBe(0);
    dev.close();
    const again = reopen();
    expect(again.read(0, 4 * BLOCK)).toEqual(new Uint8Array(expected));
    expect(again.read(20 * BLOCK, 1024)).toEqual(piece2);
    expect(isZero(again.read(20 * BLOCK + 1024, BLOCK - 1024))).toBe(true);
    again.close();
    expect(checkDedupStore({ storeDir: dir, storeName: name }).problems).toEqual([]);
  });

  test("a whole-block write replaces the held pieces; a held block left alone is stored when 256 others follow", () => {
    const { dev, reopen } = fresh();
    dev.write(100, pattern(500, 1));
    const whole = pattern(2 * BLOCK, 2);
    dev.write(0, whole);
    expect(gauge(dev, "blocks being coalesced")).toBe(0);
    expect(dev.read(0, 2 * BLOCK)).toEqual(whole);
    // One piece into each of 300 blocks: at most 256 are held, the least recently written are stored.
    for (let b = 10; b < 310; b++) dev.write(b * BLOCK + 512, pattern(512, b));
    expect(gauge(dev, "blocks being coalesced")).toBe(256);
    expect(gauge(dev, "unique blocks")).toBe(2 + 300 - 256);
    for (let b = 10; b < 310; b++) expect(dev.read(b * BLOCK + 512, 512)).toEqual(pattern(512, b));
    dev.close();
    const again = reopen();
    expect(again.read(0, 2 * BLOCK)).toEqual(whole);
    for (let b = 10; b < 310; b++) expect(again.read(b * BLOCK, 1024).subarray(512)).toEqual(pattern(512, b));
    again.close();
  });
});

function isZero(data: Uint8Array): boolean {
  return data.every((b) => b === 0);
}
