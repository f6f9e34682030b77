// The mem device: the shared conformance suite, then what is special to it (sparse pages, zero-copy reads).
import { describe, expect, test } from "bun:test";
import type { BlockDevice } from "../../src/devices/device.ts";
import { createMemDevice } from "../../src/devices/mem/index.ts";
import { MiB, runConformance } from "../conformance/index.ts";

await runConformance("mem", { create: () => createMemDevice({ size: 64 * MiB }) });

function allocated(dev: BlockDevice): number {
  const gauge = dev.stats?.().gauges.find((g) => g.name === "allocated");
  expect(gauge?.unit).toBe("bytes");
  expect(gauge?.max).toBe(dev.size);
  return gauge?.value ?? -1;
}

describe("mem: sparse pages", () => {
  test("reclaim frees pages left all zero by partial trims and zero writes, and only those", () => {
    const dev = createMemDevice({ size: 8 * MiB });
    dev.write(0, new Uint8Array(3 * MiB).fill(5));
    // Page 0 zeroed in two halves (each partial: nothing is freed), page 1 partly, page 2 untouched.
    dev.trim(0, MiB / 2);
    dev.writeZeroes(MiB / 2, MiB / 2);
    dev.trim(MiB, MiB / 2);
    dev.write(5 * MiB, new Uint8Array(MiB));
    expect(allocated(dev)).toBe(4 * MiB);
    const result = dev.reclaim();
    expect(result).toEqual({ bytes: 2 * MiB, detail: "2 all-zero pages freed" });
    expect(allocated(dev)).toBe(2 * MiB);
    expect(dev.read(MiB + MiB / 2, 16).every((b) => b === 5)).toBe(true);
    expect(dev.read(2 * MiB, 16).every((b) => b === 5)).toBe(true);
    expect(dev.read(0, MiB).every((b) => b === 0)).toBe(true);
    expect(dev.reclaim()).toEqual({ bytes: 0, detail: "no all-zero pages to free" });
  });

  test("a huge fresh device costs nothing, and reads do not allocate", () => {
    const dev = createMemDevice({ size: 2 ** 50 });
    expect(allocated(dev)).toBe(0);
    expect(dev.read(2 ** 50 - 4096, 4096).every((b) => b === 0)).toBe(true);
    expect(dev.read(2 ** 40 - 100, 200).length).toBe(200);
    expect(allocated(dev)).toBe(0);
    dev.write(2 ** 49 + 5, new Uint8Array([9]));
    expect(allocated(dev)).toBe(MiB);
    expect(dev.read(2 ** 49 + 5, 1)[0]).toBe(9);
  });

  test("the allocated gauge rises on write and falls after trim of whole pages", () => {
    const dev = createMemDevice({ size: 16 * MiB });
    dev.write(MiB - 1, new Uint8Array(2).fill(1));
    expect(allocated(dev)).toBe(2 * MiB);
    dev.write(4 * MiB, new Uint8Array(3 * MiB).fill(2));
    expect(allocated(dev)).toBe(5 * MiB);
    // Covers page 4 partly and pages 5-6 wholly: only the whole ones are released.
    dev.trim(4 * MiB + 512, 3 * MiB - 512);
    expect(allocated(dev)).toBe(3 * MiB);
    expect(dev.read(4 * MiB, 1024).subarray(0, 512).every((b) => b === 2)).toBe(true);
    expect(dev.read(4 * MiB + 512, 512).every((b) => b === 0)).toBe(true);
    dev.writeZeroes(0, 16 * MiB);
    expect(allocated(dev)).toBe(0);
  });

  test("writeZeroes with noHole zeroes but keeps pages allocated", () => {
    const dev = createMemDevice({ size: 4 * MiB });
    dev.write(0, new Uint8Array(2 * MiB).fill(3));
    dev.writeZeroes(0, 2 * MiB, { noHole: true });
    expect(allocated(dev)).toBe(2 * MiB);
    expect(dev.read(0, 2 * MiB).every((b) => b === 0)).toBe(true);
  });

  test("extents report unwritten pages as hole+zero and written ones as data", () => {
    const dev = createMemDevice({ size: 8 * MiB });
    dev.write(2 * MiB + 10, new Uint8Array([1]));
    expect(dev.extents(MiB / 2, 4 * MiB)).toEqual([
      { length: MiB + MiB / 2, hole: true, zero: true },
      { length: MiB, hole: false, zero: false },
      { length: 1.5 * MiB, hole: true, zero: true },
    ]);
  });

  test("a last page shorter than 1 MiB is allocated at its real length", () => {
    const dev = createMemDevice({ size: MiB + 4096 });
    dev.write(MiB + 4095, new Uint8Array([7]));
    expect(allocated(dev)).toBe(4096);
    expect(dev.read(MiB + 4095, 1)[0]).toBe(7);
  });
});

describe("mem: zero-copy reads", () => {
  test("a read inside one page is a view of the page; a read across pages is a copy", () => {
    const dev = createMemDevice({ size: 4 * MiB });
    dev.write(0, new Uint8Array(2 * MiB).fill(4));
    const a = dev.read(100, 4096);
    const b = dev.read(5000, 4096);
    expect(a.buffer).toBe(b.buffer);
    expect(a.byteOffset).toBe(100);
    const across = dev.read(MiB - 10, 20);
    expect(across.byteOffset).toBe(0);
    expect(across.buffer.byteLength).toBe(20);
    expect(across.every((x) => x === 4)).toBe(true);
  });

  test("calls return values, not promises", () => {
    const dev = createMemDevice({ size: MiB });
    expect(dev.write(0, new Uint8Array(1))).toBeUndefined();
    expect(dev.read(0, 1)).toBeInstanceOf(Uint8Array);
    expect(dev.flush()).toBeUndefined();
  });
});

describe("mem: geometry", () => {
  test("refuses sizes that are not positive multiples of 512, and odd block sizes", () => {
    expect(() => createMemDevice({ size: 1000 })).toThrow(/not a positive multiple of 512/);
    expect(() => createMemDevice({ size: 0 })).toThrow(/not a positive multiple of 512/);
    expect(() => createMemDevice({ size: 2 ** 51 })).toThrow(/up to 2\^50/);
    expect(() => createMemDevice({ size: MiB, blockSize: 3000 })).toThrow(/power of two/);
    expect(() => createMemDevice({ size: 4096 + 512, blockSize: 4096 })).toThrow(/multiple of the block size/);
    expect(createMemDevice({ size: 4096 + 512 }).blockSize).toBe(512);
    expect(createMemDevice({ size: MiB }).blockSize).toBe(4096);
  });
});
