/**
 * Conformance: what reads and writes must do. Geometry, zeros on a fresh device, byte-exact unaligned writes,
 * large round trips, the last byte, range errors, FUA and flush.
 */
import { describe, expect, test } from "bun:test";
import {
  MiB,
  expectDeviceError,
  expectSameBytes,
  isAllZero,
  pattern,
  readCopy,
  type SuiteContext,
} from "./helpers.ts";

export function registerData(ctx: SuiteContext): void {
  // A read-only device is checked by the claims suite (every write refused); the write checks here do not apply.
  const writable = !ctx.traits.capabilities.readOnly;

  describe("geometry", () => {
    test("size, blockSize and kind are sane", () => {
      const { size, blockSize, kind } = ctx.dev;
      expect(typeof kind).toBe("string");
      expect(kind.length).toBeGreaterThan(0);
      expect(Number.isSafeInteger(size)).toBe(true);
      // The suite's test ranges need room: give it a device of at least 1 MiB (16 MiB or more is better).
      expect(size).toBeGreaterThanOrEqual(MiB);
      expect(size % 512).toBe(0);
      expect(blockSize).toBeGreaterThanOrEqual(512);
      expect(blockSize).toBeLessThanOrEqual(65536);
      expect(blockSize & (blockSize - 1)).toBe(0);
    });
  });

  describe("a fresh device reads zeros", () => {
    test("at the beginning, the middle and the end", async () => {
      const { dev } = ctx;
      const n = 8192;
      const middle = Math.floor(dev.size / 2 / 512) * 512 - 100;
      for (const offset of [0, middle, dev.size - n]) {
        expect(isAllZero(await readCopy(dev, offset, n))).toBe(true);
      }
      expect(isAllZero(await readCopy(dev, dev.size - 1, 1))).toBe(true);
    });
  });

  describe.skipIf(!writable)("unaligned writes change only their own bytes", () => {
    test("1 and 3 bytes at odd offsets inside blocks keep the neighbours", async () => {
      const { dev } = ctx;
      const bs = dev.blockSize;
      const base = pattern(3 * bs, 1);
      await dev.write(0, base);
      const expected = base.slice();
      const edits: Array<[number, Uint8Array]> = [
        [5, new Uint8Array([0x11])],
        [bs + 1001, new Uint8Array([0x21, 0x22, 0x23])],
        [2 * bs - 1, new Uint8Array([0x31])],
        [2 * bs + 3, new Uint8Array([0x00, 0x41, 0x00])],
      ];
      for (const [offset, data] of edits) {
        await dev.write(offset, data);
        expected.set(data, offset);
      }
      expectSameBytes(await readCopy(dev, 0, 3 * bs), expected, "after small writes");
      expectSameBytes(await readCopy(dev, bs + 1001, 3), new Uint8Array([0x21, 0x22, 0x23]), "3-byte read");
    });

    test("a write spanning 3+ blocks at unaligned edges keeps the rest of the edge blocks", async () => {
      const { dev } = ctx;
      const bs = dev.blockSize;
      const span = 6 * bs;
      const base = pattern(span, 2);
      await dev.write(bs, base);
      const offset = bs + bs / 2 + 3;
      const data = pattern(3 * bs + 17, 3);
      await dev.write(offset, data);
      const expected = base.slice();
      expected.set(data, offset - bs);
      expectSameBytes(await readCopy(dev, bs, span), expected, "after the spanning write");
      expect(isAllZero(await readCopy(dev, 0, bs))).toBe(true);
      expect(isAllZero(await readCopy(dev, bs + span, bs))).toBe(true);
    });

    test("unaligned reads return exactly the bytes asked for", async () => {
      const { dev } = ctx;
      const data = pattern(64 * 1024, 4);
      await dev.write(4096, data);
      for (const [o, l] of [[1, 1], [4097, 7], [5000, 20000], [4096 + 65535, 1], [4095, 3]] as const) {
        const expected = new Uint8Array(l);
        for (let i = 0; i < l; i++) expected[i] = data[o + i - 4096] ?? 0;
        expectSameBytes(await readCopy(dev, o, l), expected, `read ${o}+${l}`);
      }
    });
  });

  describe.skipIf(!writable)("round trips", () => {
    test("several MiB written in uneven chunks read back with the same SHA-256", async () => {
      const { dev } = ctx;
      const total = Math.min(6 * MiB, Math.floor(dev.size / 2 / 512) * 512);
      const offset = 3 * 512 + 7;
      const data = pattern(total, 5);
      for (let done = 0, i = 0; done < total; i++) {
        const n = Math.min(total - done, [MiB, 300 * 1024 + 1, 4096, 2 * MiB + 512][i % 4] ?? MiB);
        await dev.write(offset + done, data.subarray(done, done + n));
        done += n;
      }
      const writtenHash = new Bun.CryptoHasher("sha256").update(data).digest("hex");
      const reader = new Bun.CryptoHasher("sha256");
      for (let done = 0; done < total; ) {
        const n = Math.min(total - done, 384 * 1024 + 3);
        reader.update(await readCopy(dev, offset + done, n));
        done += n;
      }
      expect(reader.digest("hex")).toBe(writtenHash);
    });

    test("the last byte is writable and readable", async () => {
      const { dev } = ctx;
      await dev.write(dev.size - 1, new Uint8Array([0x5a]));
      expect((await readCopy(dev, dev.size - 1, 1))[0]).toBe(0x5a);
      const tail = pattern(4096, 6);
      await dev.write(dev.size - 4096, tail);
      expectSameBytes(await readCopy(dev, dev.size - 4096, 4096), tail, "the last 4 KiB");
    });

    test("write copies the caller's buffer (the engine reuses it)", async () => {
      const { dev } = ctx;
      const buf = pattern(8192, 7);
      const original = buf.slice();
      await dev.write(512, buf);
      buf.fill(0xee);
      expectSameBytes(await readCopy(dev, 512, 8192), original, "after the caller reused its buffer");
    });

    test("a write with fua reads back", async () => {
      const { dev } = ctx;
      const data = pattern(3 * 4096 + 5, 8);
      await dev.write(2 * MiB - 4096 + 1, data, { fua: true });
      expectSameBytes(await readCopy(dev, 2 * MiB - 4096 + 1, data.length), data, "after a FUA write");
    });

    test("flush succeeds, on a clean device and after writes", async () => {
      const { dev } = ctx;
      await dev.flush();
      await dev.write(0, pattern(4096, 9));
      await dev.flush();
      await dev.flush();
    });
  });

  describe("out-of-range calls fail with EINVAL, never a short read", () => {
    test("reads", async () => {
      const { dev } = ctx;
      const s = dev.size;
      await expectDeviceError(() => dev.read(s, 1), "EINVAL", "read one byte past the end");
      await expectDeviceError(() => dev.read(s - 1, 2), "EINVAL", "read from inside to past the end");
      await expectDeviceError(() => dev.read(s - 4096, 8192), "EINVAL", "read 4 KiB past the end");
      await expectDeviceError(() => dev.read(-1, 1), "EINVAL", "read at a negative offset");
      await expectDeviceError(() => dev.read(0, -1), "EINVAL", "read a negative length");
      await expectDeviceError(() => dev.read(0.5, 1), "EINVAL", "read at a fractional offset");
    });

    test.skipIf(!writable)("writes, trims and zeroes", async () => {
      const { dev } = ctx;
      const s = dev.size;
      const one = new Uint8Array([1]);
      await expectDeviceError(() => dev.write(s, one), "EINVAL", "write one byte past the end");
      await expectDeviceError(() => dev.write(s - 1, new Uint8Array([7, 7])), "EINVAL", "write from inside to past the end");
      await expectDeviceError(() => dev.write(-1, one), "EINVAL", "write at a negative offset");
      await expectDeviceError(() => dev.trim(s - 512, 1024), "EINVAL", "trim past the end");
      await expectDeviceError(() => dev.trim(-512, 512), "EINVAL", "trim at a negative offset");
      if (ctx.traits.writeZeroes) {
        await expectDeviceError(() => dev.writeZeroes?.(s - 512, 1024), "EINVAL", "writeZeroes past the end");
      }
      // A refused write must not have written its in-range part.
      expect(isAllZero(await readCopy(dev, s - 512, 512))).toBe(true);
    });
  });
}
