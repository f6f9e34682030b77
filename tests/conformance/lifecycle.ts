/**
 * Conformance: calls in flight together (each atomic against overlapping ones), close, and reopening a persistent
 * device. The engine pipelines requests, so a device sees overlapping calls without waiting in between.
 */
import { describe, expect, test } from "bun:test";
import type { BlockDevice } from "../../src/devices/device.ts";
import type { ConformanceFactory } from "./index.ts";
import { MiB, expectDeviceError, expectSameBytes, pattern, readCopy, type SuiteContext, uniformValue } from "./helpers.ts";

/** A read copied at once: a device may answer with a view of its memory that a write running meanwhile changes. */
function readNow(dev: BlockDevice, offset: number, length: number): Promise<Uint8Array> {
  const result = dev.read(offset, length);
  return result instanceof Promise ? result.then((data) => data.slice()) : Promise.resolve(result.slice());
}

/** Ways to let a device's pending work move on: a microtask, a turn of the event loop, a timer. */
const yields: ReadonlyArray<() => Promise<void>> = [() => Promise.resolve(), () => new Promise((r) => setImmediate(r)), () => Bun.sleep(0)];

/**
 * Reads [offset, offset+length) at once and again after every kind of yield until `pending` settles (at most 2000
 * reads), so that a write which lands piece by piece is seen half done.
 */
async function readsDuring(dev: BlockDevice, offset: number, length: number, pending: Promise<unknown>): Promise<Uint8Array[]> {
  let settled = false;
  void pending.finally(() => (settled = true)).catch(() => {});
  const reads: Promise<Uint8Array>[] = [readNow(dev, offset, length)];
  for (let i = 0; !settled && i < 2000; i++) {
    await yields[i % yields.length]!();
    reads.push(readNow(dev, offset, length));
  }
  return Promise.all(reads);
}

/** The uniform values the reads found, or a description of the first read that mixed writers. */
function wholeValues(reads: readonly Uint8Array[]): Array<number | string> {
  return reads.map((r, i) => uniformValue(r) ?? `read ${i} mixes writes (first bytes ${r[0]}, last ${r.at(-1)})`);
}

export function registerLifecycle(ctx: SuiteContext, factory: ConformanceFactory): void {
  const writable = !ctx.traits.capabilities.readOnly;
  describe.skipIf(!writable)("concurrent calls", () => {
    test("a read while an overlapping write runs returns all old or all new bytes, never a mix", async () => {
      const { dev } = ctx;
      const offset = dev.blockSize / 2 + 3;
      const length = 4 * dev.blockSize + 1000;
      await dev.write(offset, new Uint8Array(length).fill(1));
      const write = Promise.resolve(dev.write(offset, new Uint8Array(length).fill(2)));
      const reads = await readsDuring(dev, offset, length, write);
      await write;
      for (const v of wholeValues(reads)) expect<Array<number | string>>([1, 2]).toContain(v);
      expect(uniformValue(await readCopy(dev, offset, length))).toBe(2);
    });

    test("overlapping writes in flight together each land whole: every read, and the end state, is one writer's", async () => {
      const { dev } = ctx;
      const offset = dev.blockSize / 2 + 1;
      const length = 3 * dev.blockSize + 100;
      const writers = [1, 2, 3, 4, 5, 6, 7, 8];
      const all = Promise.all(writers.map((v) => dev.write(offset, new Uint8Array(length).fill(v))));
      const reads = await readsDuring(dev, offset, length, all);
      await all;
      for (const v of wholeValues(reads)) expect<Array<number | string>>([0, ...writers]).toContain(v);
      expect<Array<number | undefined>>(writers).toContain(uniformValue(await readCopy(dev, offset, length)));
      expect((await readCopy(dev, offset - 1, 1))[0]).toBe(0);
      expect((await readCopy(dev, offset + length, 1))[0]).toBe(0);
    });

    test("two writes that overlap in part: each keeps its own bytes, and the shared part is wholly one of them", async () => {
      const { dev } = ctx;
      const part = 2 * dev.blockSize + 77;
      const a = 5;
      const b = 6;
      await Promise.all([dev.write(100, new Uint8Array(2 * part).fill(a)), dev.write(100 + part, new Uint8Array(2 * part).fill(b))]);
      expect(uniformValue(await readCopy(dev, 100, part))).toBe(a);
      expect<Array<number | undefined>>([a, b]).toContain(uniformValue(await readCopy(dev, 100 + part, part)));
      expect(uniformValue(await readCopy(dev, 100 + 2 * part, part))).toBe(b);
    });

    test("non-overlapping writes all land, mixed with reads", async () => {
      const { dev } = ctx;
      const n = 32;
      const chunk = 64 * 1024 + 1;
      const data = Array.from({ length: n }, (_, i) => pattern(chunk, 100 + i));
      const calls: Array<unknown> = [];
      for (let i = 0; i < n; i++) {
        calls.push(dev.write(i * chunk, data[i] ?? new Uint8Array()));
        calls.push(dev.read(MiB * 3 + i, 100));
      }
      await Promise.all(calls);
      for (let i = 0; i < n; i++) {
        expectSameBytes(await readCopy(dev, i * chunk, chunk), data[i] ?? new Uint8Array(), `write ${i}`);
      }
    });

    test("a flush in flight with writes completes", async () => {
      const { dev } = ctx;
      const data = pattern(128 * 1024, 140);
      await Promise.all([dev.write(0, data), dev.flush(), dev.write(MiB, data, { fua: true }), dev.flush()]);
      expectSameBytes(await readCopy(dev, MiB, data.length), data, "after concurrent flushes");
    });
  });

  describe.skipIf(!writable)("close", () => {
    test("twice is fine, and every call after it fails with ESHUTDOWN", async () => {
      const { dev } = ctx;
      await dev.write(0, pattern(4096, 150));
      await dev.close();
      await dev.close();
      await expectDeviceError(() => dev.read(0, 1), "ESHUTDOWN", "read after close");
      await expectDeviceError(() => dev.write(0, new Uint8Array(1)), "ESHUTDOWN", "write after close");
      await expectDeviceError(() => dev.trim(0, 4096), "ESHUTDOWN", "trim after close");
      await expectDeviceError(() => dev.flush(), "ESHUTDOWN", "flush after close");
      if (ctx.traits.writeZeroes) {
        await expectDeviceError(() => dev.writeZeroes?.(0, 4096), "ESHUTDOWN", "writeZeroes after close");
      }
      if (ctx.traits.extents) await expectDeviceError(() => dev.extents?.(0, 4096), "ESHUTDOWN", "extents after close");
      await dev.close();
    });
  });

  const reopen = factory.reopen;
  describe.skipIf(reopen === undefined || !writable)("reopen (persistent devices)", () => {
    test("data written and flushed survives close and reopen", async () => {
      const { dev } = ctx;
      const spots: Array<[number, Uint8Array]> = [
        [0, pattern(4096, 160)],
        [Math.floor(dev.size / 2) + 333, pattern(2 * MiB + 5, 161)],
        [dev.size - 1, new Uint8Array([0xa5])],
      ];
      for (const [offset, data] of spots) await dev.write(offset, data);
      await dev.flush();
      await dev.close();
      const again: BlockDevice = await (reopen as () => BlockDevice | Promise<BlockDevice>).call(factory);
      try {
        expect(again.size).toBe(dev.size);
        expect(again.blockSize).toBe(dev.blockSize);
        for (const [offset, data] of spots) {
          expectSameBytes(await readCopy(again, offset, data.length), data, `after reopen at ${offset}`);
        }
        expectSameBytes(await readCopy(again, 4096, 4096), new Uint8Array(4096), "an unwritten range after reopen");
      } finally {
        await again.close();
      }
    });
  });
}
