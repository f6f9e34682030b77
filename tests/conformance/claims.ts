/**
 * Conformance: every capability a device claims is checked against what it does. The engine advertises these
 * claims to clients (READ_ONLY, FAST_ZERO, CAN_MULTI_CONN; the kernel reattaches only persistent devices), so a
 * device that claims what it cannot do misleads every client.
 */
import { describe, expect, test } from "bun:test";
import type { ConformanceFactory } from "./index.ts";
import { expectDeviceError, expectSameBytes, isAllZero, pattern, readCopy, type SuiteContext, traitsOf } from "./helpers.ts";

export function registerClaims(ctx: SuiteContext, factory: ConformanceFactory): void {
  const { capabilities: caps } = ctx.traits;
  describe("what the device claims", () => {
    test("the traits the suite tests by are the device's own", () => {
      expect(traitsOf(ctx.dev)).toEqual(ctx.traits);
    });

    test.skipIf(!caps.readOnly)("read-only: every write, trim and zeroing is refused with EPERM and changes no byte", async () => {
      const { dev } = ctx;
      const spots = [0, Math.floor(dev.size / 2), dev.size - 4096];
      const before = await Promise.all(spots.map((o) => readCopy(dev, o, 4096)));
      for (const o of spots) {
        await expectDeviceError(() => dev.write(o, pattern(4096, 31)), "EPERM", `write at ${o}`);
        await expectDeviceError(() => dev.write(o + 1, new Uint8Array([7])), "EPERM", `1-byte write at ${o + 1}`);
        await expectDeviceError(() => dev.trim(o, 4096), "EPERM", `trim at ${o}`);
        if (dev.writeZeroes) await expectDeviceError(() => dev.writeZeroes?.(o, 4096), "EPERM", `writeZeroes at ${o}`);
      }
      await dev.flush();
      for (let i = 0; i < spots.length; i++) expectSameBytes(await readCopy(dev, spots[i]!, 4096), before[i]!, `bytes at ${spots[i]}`);
    });

    test.skipIf(!caps.persistent)("persistent: the suite was given a way to reopen the store, so the reopen checks run", () => {
      expect(factory.reopen === undefined ? "no reopen: persistence cannot be checked" : "reopen given").toBe("reopen given");
    });

    test.skipIf(!caps.fastZero)("fast zero: the device has a writeZeroes to zero with", () => {
      expect(typeof ctx.dev.writeZeroes).toBe("function");
    });

    test.skipIf(!caps.fastZero || !ctx.traits.writeZeroes || caps.readOnly)("fast zero: zeroing the whole device leaves it reading zeros", async () => {
      const { dev } = ctx;
      const spots = [dev.blockSize + 7, Math.floor(dev.size / 3), dev.size - 8192];
      for (const o of spots) await dev.write(o, pattern(8192 - 7, o));
      await dev.writeZeroes!(0, dev.size);
      for (const o of spots) expect(isAllZero(await readCopy(dev, o, 8192 - 7))).toBe(true);
    });

    test.skipIf(!caps.multiConn || caps.readOnly)(
      "multi-conn: writes from many concurrent callers are all seen by every later read, and one flush covers them all",
      async () => {
        const { dev } = ctx;
        const n = 24;
        const size = 64 * 1024 + 3;
        const data = Array.from({ length: n }, (_, i) => pattern(size, 300 + i));
        // As several connections would: each caller writes, then reads what another caller wrote, none waiting for the rest.
        await Promise.all(
          data.map(async (d, i) => {
            await dev.write(i * size, d);
            await dev.read(((i + 1) % n) * size, 512);
          }),
        );
        await dev.flush();
        for (let i = 0; i < n; i++) expectSameBytes(await readCopy(dev, i * size, size), data[i]!, `caller ${i}`);
        if (factory.reopen === undefined) return;
        await dev.close();
        const again = await factory.reopen();
        try {
          for (let i = 0; i < n; i++) expectSameBytes(await readCopy(again, i * size, size), data[i]!, `caller ${i} after reopen`);
        } finally {
          await again.close();
        }
      },
    );

    test.skipIf(!caps.readOnly)("read-only: after close every call fails with ESHUTDOWN", async () => {
      const { dev } = ctx;
      await dev.close();
      await expectDeviceError(() => dev.read(0, 1), "ESHUTDOWN", "read after close");
      await expectDeviceError(() => dev.flush(), "ESHUTDOWN", "flush after close");
    });
  });
}
