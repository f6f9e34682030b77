/**
 * Conformance: calls in flight together, close, and reopening a persistent device. The engine pipelines
 * requests, so a device sees overlapping calls without waiting in between.
 */
import { describe, expect, test } from "bun:test";
import type { BlockDevice } from "../../src/devices/device.ts";
import type { ConformanceFactory } from "./index.ts";
import { MiB, expectDeviceError, expectSameBytes, pattern, readCopy, type SuiteContext } from "./helpers.ts";

export function registerLifecycle(ctx: SuiteContext, factory: ConformanceFactory): void {
  describe("concurrent calls", () => {
    test("overlapping writes leave every byte equal to one writer's value", async () => {
      const { dev } = ctx;
      const offset = dev.blockSize / 2 + 1;
      const length = 3 * dev.blockSize + 100;
      const writers = [1, 2, 3, 4, 5, 6, 7, 8];
      await Promise.all(writers.map((v) => dev.write(offset, new Uint8Array(length).fill(v))));
      const after = await readCopy(dev, offset, length);
      const bad = after.findIndex((b) => b < 1 || b > writers.length);
      expect(bad).toBe(-1);
      expect((await readCopy(dev, offset - 1, 1))[0]).toBe(0);
      expect((await readCopy(dev, offset + length, 1))[0]).toBe(0);
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

  describe("close", () => {
    test("twice is fine, and every call after it fails with ESHUTDOWN", async () => {
      const { dev } = ctx;
      await dev.write(0, pattern(4096, 150));
      await dev.close();
      await dev.close();
      await expectDeviceError(() => dev.read(0, 1), "ESHUTDOWN", "read after close");
      await expectDeviceError(() => dev.write(0, new Uint8Array(1)), "ESHUTDOWN", "write after close");
      await expectDeviceError(() => dev.trim(0, 4096), "ESHUTDOWN", "trim after close");
      await expectDeviceError(() => dev.flush(), "ESHUTDOWN", "flush after close");
      if (dev.writeZeroes) {
        await expectDeviceError(() => dev.writeZeroes?.(0, 4096), "ESHUTDOWN", "writeZeroes after close");
      }
      if (dev.extents) await expectDeviceError(() => dev.extents?.(0, 4096), "ESHUTDOWN", "extents after close");
      await dev.close();
    });
  });

  const reopen = factory.reopen;
  describe.skipIf(reopen === undefined)("reopen", () => {
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
