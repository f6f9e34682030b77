// The file device: the shared conformance suite (with reopen), then what is special to it: sizes of existing
// images, holes, extents and the lock against a second server.
import { afterAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { openFileDevice } from "../../src/devices/file/index.ts";
import { MiB, pattern, runConformance } from "../conformance/index.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "usbd-file-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

let count = 0;
let current = "";
await runConformance("file", {
  create() {
    current = path.join(dir, `conformance-${count++}.img`);
    return openFileDevice({ path: current, size: 64 * MiB });
  },
  reopen: () => openFileDevice({ path: current }),
  cleanup: () => fs.rmSync(current, { force: true }),
});

function imagePath(name: string): string {
  return path.join(dir, `${name}.img`);
}

function blocks(p: string): number {
  return fs.statSync(p).blocks;
}

describe("file: opening images", () => {
  test("a new image is sparse, with the asked size", () => {
    const p = imagePath("new");
    const dev = openFileDevice({ path: p, size: 1024 * MiB });
    expect(dev.size).toBe(1024 * MiB);
    expect(fs.statSync(p).size).toBe(1024 * MiB);
    expect(blocks(p)).toBe(0);
    expect(fs.statSync(p).mode & 0o777).toBe(0o600);
    dev.close();
  });

  test("reopening without a size keeps the data and the size", () => {
    const p = imagePath("keep");
    const dev = openFileDevice({ path: p, size: 8 * MiB });
    const data = pattern(10000, 1);
    dev.write(12345, data);
    dev.close();
    const again = openFileDevice({ path: p });
    expect(again.size).toBe(8 * MiB);
    expect(again.read(12345, 10000)).toEqual(data);
    again.close();
    const sameSize = openFileDevice({ path: p, size: 8 * MiB });
    expect(sameSize.read(12345, 1)[0]).toBe(data[0]);
    sameSize.close();
  });

  test("a size that differs from the existing image is refused, naming both sizes", () => {
    const p = imagePath("mismatch");
    openFileDevice({ path: p, size: 1024 * MiB }).close();
    expect(() => openFileDevice({ path: p, size: 2048 * MiB })).toThrow(
      `${p} is 1073741824 bytes but --store-size asks for 2147483648; refusing to resize`,
    );
    expect(fs.statSync(p).size).toBe(1024 * MiB);
  });

  test("a missing image without a size is an error, and a bad size leaves no file", () => {
    const p = imagePath("missing");
    expect(() => openFileDevice({ path: p })).toThrow(/does not exist and no size was given; pass --store-size/);
    expect(() => openFileDevice({ path: p, size: 1000 })).toThrow(/multiple of 512/);
    expect(fs.existsSync(p)).toBe(false);
  });

  test("a second open of a served image is refused by the lock, and allowed after close", () => {
    const p = imagePath("locked");
    const first = openFileDevice({ path: p, size: 4 * MiB });
    expect(() => openFileDevice({ path: p })).toThrow(`${p} is locked by another process`);
    first.close();
    openFileDevice({ path: p }).close();
  });
});

describe("file: holes", () => {
  test("trim punches a hole: st_blocks drops and the range reads zeros", () => {
    const p = imagePath("trim");
    const dev = openFileDevice({ path: p, size: 16 * MiB });
    expect(dev.capabilities.trim).toBe(true);
    dev.write(0, pattern(8 * MiB, 2));
    dev.flush();
    const before = blocks(p);
    expect(before).toBeGreaterThanOrEqual((8 * MiB) / 512);
    dev.trim(2 * MiB, 4 * MiB);
    expect(before - blocks(p)).toBe((4 * MiB) / 512);
    expect(dev.read(2 * MiB, 4 * MiB).every((b) => b === 0)).toBe(true);
    const gauge = dev.stats().gauges.find((g) => g.name === "allocated");
    expect(gauge?.value).toBe(blocks(p) * 512);
    dev.close();
  });

  test("extents show data and holes", () => {
    const p = imagePath("extents");
    const dev = openFileDevice({ path: p, size: 16 * MiB });
    expect(dev.extents(0, 16 * MiB)).toEqual([{ length: 16 * MiB, hole: true, zero: true }]);
    dev.write(4 * MiB, pattern(MiB, 3));
    dev.write(15 * MiB, pattern(MiB, 4));
    expect(dev.extents(MiB, 15 * MiB)).toEqual([
      { length: 3 * MiB, hole: true, zero: true },
      { length: MiB, hole: false, zero: false },
      { length: 10 * MiB, hole: true, zero: true },
      { length: MiB, hole: false, zero: false },
    ]);
    // A range inside one data extent, starting mid-extent.
    expect(dev.extents(4 * MiB + 5, 100)).toEqual([{ length: 100, hole: false, zero: false }]);
    dev.writeZeroes(4 * MiB, MiB);
    expect(dev.extents(4 * MiB, MiB)).toEqual([{ length: MiB, hole: true, zero: true }]);
    dev.close();
  });

  test("writeZeroes with noHole keeps the blocks allocated", () => {
    const p = imagePath("nohole");
    const dev = openFileDevice({ path: p, size: 8 * MiB });
    dev.write(0, pattern(4 * MiB, 5));
    dev.flush();
    const before = blocks(p);
    dev.writeZeroes(MiB, 2 * MiB, { noHole: true });
    expect(blocks(p)).toBe(before);
    expect(dev.read(MiB, 2 * MiB).every((b) => b === 0)).toBe(true);
    expect(dev.read(MiB - 1, 1)[0]).not.toBe(0);
    dev.close();
  });
});
