/**
 * Conformance: trim, write-zeroes, reclaim and the allocation map. Trim may keep old data but must not fail or touch
 * bytes outside its range; write-zeroes must read back exact zeros; reclaim must change no byte; extents must never
 * call data zero.
 */
import { describe, expect, test } from "bun:test";
import {
  MiB,
  allExtents,
  expectSameBytes,
  isAllZero,
  overlapping,
  pattern,
  readCopy,
  type SuiteContext,
} from "./helpers.ts";

/** The region these tests use: 3 MiB starting one block in, so ranges cross 1 MiB boundaries unaligned. */
function region(blockSize: number): { start: number; length: number } {
  return { start: blockSize, length: 3 * MiB };
}

export function registerDiscard(ctx: SuiteContext): void {
  const { traits } = ctx;
  const writable = !traits.capabilities.readOnly;
  describe.skipIf(!writable)("trim", () => {
    test("leaves zeros or the old data inside, and the neighbours untouched", async () => {
      const { dev } = ctx;
      const { start, length } = region(dev.blockSize);
      const old = pattern(length, 11);
      await dev.write(start, old);
      const cases: Array<[number, number]> = [
        [start + 1000, 3000],
        [start + MiB - 4096, 2 * MiB + 8192 + 1],
      ];
      for (const [offset, n] of cases) await dev.trim(offset, n);
      const after = await readCopy(dev, start, length);
      for (let i = 0; i < length; i++) {
        const inside = cases.some(([o, n]) => start + i >= o && start + i < o + n);
        const b = after[i];
        if (inside ? b !== 0 && b !== old[i] : b !== old[i]) {
          expect(`byte ${start + i} (${inside ? "inside" : "outside"} a trim) is ${b}`).toBe("zero or old");
        }
      }
    });

    test("a trim of the whole device and of zero bytes succeeds", async () => {
      const { dev } = ctx;
      await dev.write(0, pattern(4096, 12));
      await dev.trim(0, 0);
      await dev.trim(0, dev.size);
    });
  });

  describe.skipIf(!writable || !traits.reclaim)("reclaim (optional)", () => {
    test("changes no byte: data, trimmed and overwritten ranges read the same after it, and it reports bytes >= 0", async () => {
      const { dev } = ctx;
      const { start, length } = region(dev.blockSize);
      await dev.write(start, pattern(length, 15));
      await dev.flush();
      // Unreferenced data for it to find: a trimmed middle and an overwritten tail.
      await dev.trim(start + MiB, MiB);
      await dev.write(start + 2 * MiB, pattern(MiB, 16));
      const before = await readCopy(dev, start, length);
      const result = await dev.reclaim!();
      expect(result.bytes).toBeGreaterThanOrEqual(0);
      expect(result.detail.length).toBeGreaterThan(0);
      expectSameBytes(await readCopy(dev, start, length), before, "after reclaim");
    });
  });

  describe.skipIf(!writable || !traits.writeZeroes)("writeZeroes (optional)", () => {
    for (const noHole of [false, true]) {
      test(`reads back exact zeros with untouched neighbours (noHole: ${noHole})`, async () => {
        const { dev } = ctx;
        const { start, length } = region(dev.blockSize);
        const old = pattern(length, noHole ? 13 : 14);
        await dev.write(start, old);
        const cases: Array<[number, number]> = [
          [start + 7, 5],
          [start + dev.blockSize - 100, 2 * dev.blockSize + 200],
          // Whole 1 MiB units in the middle and partial edges: sparse devices release and zero differently.
          [start + MiB - 512, MiB + 4096 + 1024],
        ];
        for (const [offset, n] of cases) await dev.writeZeroes!(offset, n, { noHole });
        const expected = old.slice();
        for (const [offset, n] of cases) expected.fill(0, offset - start, offset - start + n);
        expectSameBytes(await readCopy(dev, start, length), expected, "after writeZeroes");
        expect((await readCopy(dev, start - 1, 1))[0]).toBe(0);
      });
    }

    test("with fua, and over a range never written", async () => {
      const { dev } = ctx;
      await dev.writeZeroes!(MiB, 2 * MiB, { fua: true });
      expect(isAllZero(await readCopy(dev, MiB, 2 * MiB))).toBe(true);
    });
  });

  describe.skipIf(!traits.extents)("extents (optional)", () => {
    test("cover the asked range with positive lengths", async () => {
      const { dev } = ctx;
      const length = Math.min(dev.size, 16 * MiB);
      const fresh = await allExtents(dev, 0, length);
      expect(fresh.reduce((s, e) => s + e.length, 0)).toBe(length);
      const tail = await allExtents(dev, dev.size - 4096 - 3, 4096 + 3);
      expect(tail.reduce((s, e) => s + e.length, 0)).toBe(4096 + 3);
    });

    test.skipIf(!writable)("never report written data as zero", async () => {
      const { dev } = ctx;
      const { start, length } = region(dev.blockSize);
      await dev.write(start, pattern(length, 15));
      await dev.flush();
      const written = await allExtents(dev, start, length);
      for (const e of written) expect(e.zero).toBe(false);
    });

    test.skipIf(!writable)("what a trim leaves is reported zero only where it reads as zeros", async () => {
      const { dev } = ctx;
      const { start, length } = region(dev.blockSize);
      await dev.write(start, pattern(length, 17));
      await dev.trim(start + MiB - 512, MiB + 1024);
      await dev.flush();
      const after = await allExtents(dev, start, length);
      const bytes = await readCopy(dev, start, length);
      let pos = start;
      for (const e of after) {
        if (e.zero) expect(isAllZero(bytes.subarray(pos - start, pos - start + e.length))).toBe(true);
        pos += e.length;
      }
    });

    test.skipIf(!writable || !traits.writeZeroes)("a zeroed region is reported as zero, the data around it as data", async () => {
      const { dev } = ctx;
      const { start, length } = region(dev.blockSize);
      await dev.write(start, pattern(length, 15));
      // A whole aligned MiB: any sparse device can release it, so it must read as known zeros.
      const zeroAt = start - dev.blockSize + MiB;
      await dev.writeZeroes!(zeroAt, MiB);
      await dev.flush();
      const after = await allExtents(dev, start, length);
      for (const e of overlapping(after, start, zeroAt, MiB)) expect(e.zero).toBe(true);
      // The bytes written around it are still data.
      for (const e of overlapping(after, start, start, zeroAt - start)) expect(e.zero).toBe(false);
    });
  });
}
