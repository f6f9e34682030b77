/**
 * Devices that declare `splitWrites` receive a large WRITE piece by piece as it arrives: the pieces are
 * contiguous and cover the request exactly, FLUSH still waits for all of them, a failing piece fails the request
 * (and only it), and FUA writes arrive whole.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { DeviceError } from "../../src/devices/device.ts";
import { createMemDevice } from "../../src/devices/mem/index.ts";
import { MiB, type TestServer, later, startServer, wrapDevice } from "./harness.ts";
import { CMD, ERR, FLAG, openExport, pattern } from "./raw-client.ts";

const servers: TestServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.cleanup();
});

function recordingDevice(options: { failAt?: number; delayMs?: number } = {}) {
  const inner = createMemDevice({ size: 32 * MiB });
  const pieces: Array<{ offset: number; length: number; fua: boolean }> = [];
  let stored = 0;
  const flushSaw: number[] = [];
  const device = wrapDevice(inner, {
    capabilities: { ...inner.capabilities, splitWrites: true },
    write: (offset, data, opts) => {
      pieces.push({ offset, length: data.length, fua: opts?.fua === true });
      if (options.failAt !== undefined && offset <= options.failAt && options.failAt < offset + data.length) {
        throw new DeviceError("ENOSPC", "injected failure");
      }
      const copy = new Uint8Array(data);
      return later(options.delayMs ?? 0, () => {
        inner.write(offset, copy);
        stored += copy.length;
      });
    },
    flush: () => {
      flushSaw.push(stored);
      return inner.flush();
    },
  });
  return { device, pieces, flushSaw };
}

describe("split writes", () => {
  test("a 4 MiB WRITE arrives as contiguous pieces that cover it exactly, and FLUSH waits for every piece", async () => {
    const rec = recordingDevice({ delayMs: 5 });
    const s = await startServer({ disk: rec.device });
    servers.push(s);
    const c = await openExport(s.path);
    const data = pattern(4 * MiB, 7);
    const offset = 3 * MiB + 123;
    const [write, flush] = c.send({ type: CMD.WRITE, offset, data }, { type: CMD.FLUSH });
    const got = await c.collect([write!, flush!]);
    expect(got.get(write!)![0]!.error).toBe(0);
    expect(got.get(flush!)![0]!.error).toBe(0);
    expect(rec.pieces.length).toBeGreaterThan(1);
    let next = offset;
    for (const p of rec.pieces) {
      expect(p.offset).toBe(next);
      next += p.length;
    }
    expect(next).toBe(offset + data.length);
    expect(rec.flushSaw).toEqual([data.length]);
    const back = await c.request({ type: CMD.READ, offset, length: data.length });
    expect(Buffer.compare(back.data!, Buffer.from(data))).toBe(0);
  });

  test("a failing piece fails that WRITE with the device's error; the connection keeps working", async () => {
    const rec = recordingDevice({ failAt: 2 * MiB });
    const s = await startServer({ disk: rec.device });
    servers.push(s);
    const c = await openExport(s.path);
    const failed = await c.request({ type: CMD.WRITE, offset: MiB, data: pattern(4 * MiB, 1) });
    expect(failed.error).toBe(ERR.ENOSPC);
    const ok = await c.request({ type: CMD.WRITE, offset: 10 * MiB, data: pattern(8192, 2) });
    expect(ok.error).toBe(0);
    const back = await c.request({ type: CMD.READ, offset: 10 * MiB, length: 8192 });
    expect(Buffer.compare(back.data!, Buffer.from(pattern(8192, 2)))).toBe(0);
  });

  test("a WRITE with FUA is handed over whole", async () => {
    const rec = recordingDevice();
    const s = await startServer({ disk: rec.device });
    servers.push(s);
    const c = await openExport(s.path);
    const reply = await c.request({ type: CMD.WRITE, flags: FLAG.FUA, offset: 0, data: pattern(4 * MiB, 3) });
    expect(reply.error).toBe(0);
    expect(rec.pieces).toEqual([{ offset: 0, length: 4 * MiB, fua: true }]);
  });
});
