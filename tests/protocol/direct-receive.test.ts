/**
 * The socket read path that bypasses Bun's per-read buffers: bytes waiting on the socket are read straight into
 * reused receive buffers. Data must arrive intact and in order, and a receive buffer must not be refilled while an
 * asynchronous write still holds a view of it.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { createMemDevice } from "../../src/devices/mem/index.ts";
import { MiB, type TestServer, later, startServer, wrapDevice } from "./harness.ts";
import { CMD, openExport, pattern } from "./raw-client.ts";

const servers: TestServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.cleanup();
});

describe("direct receive", () => {
  test("hundreds of pipelined small writes to a slow asynchronous device all land intact", async () => {
    const inner = createMemDevice({ size: 16 * MiB });
    // The device reads `data` only after a delay: a refilled receive buffer would corrupt it.
    const device = wrapDevice(inner, { write: (offset, data) => later(3, () => inner.write(offset, data)) });
    const s = await startServer({ disk: device });
    servers.push(s);
    const c = await openExport(s.path);
    const count = 400;
    const blocks = Array.from({ length: count }, (_, i) => pattern(4096, 1000 + i));
    const handles = c.send(...blocks.map((data, i) => ({ type: CMD.WRITE, offset: i * 8192 + 17, data })));
    const got = await c.collect(handles);
    for (const h of handles) expect(got.get(h)![0]!.error).toBe(0);
    for (let i = 0; i < count; i++) {
      expect(Buffer.compare(Buffer.from(inner.read(i * 8192 + 17, 4096)), blocks[i]!)).toBe(0);
    }
  });
});
