/**
 * The socket read path that bypasses Bun's per-read buffers: bytes waiting on the socket are read straight into
 * reused receive buffers. Data must arrive intact and in order, and a receive buffer must not be refilled while an
 * asynchronous write still holds a view of it.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { createMemDevice } from "../../src/devices/mem/index.ts";
import { TRANSPORT_READ_SIZE } from "../../src/engine/receive-buffers.ts";
import { enlargeSocketBuffers } from "../../src/engine/socket-buffers.ts";
import { closeFd } from "../../src/ffi/libc.ts";
import { AF_UNIX, SOCK_STREAM, SOL_SOCKET, SO_SNDBUF, connectUnix, getSocketOption, openSocket, sendAll } from "../../src/ffi/sockets.ts";
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

  // The session reads on directly only after a chunk of TRANSPORT_READ_SIZE bytes (a shorter one emptied the socket).
  // If Bun's read size changed, that would cost speed, not correctness; this test says so when it happens.
  test("Bun hands the data callback at most TRANSPORT_READ_SIZE bytes, and that much when more is waiting", async () => {
    const total = 3 * TRANSPORT_READ_SIZE;
    const name = `\0usbd-tui-test/${process.pid}/${crypto.randomUUID()}`;
    const chunks: number[] = [];
    let got = 0;
    let done!: () => void;
    const all = new Promise<void>((resolve) => (done = resolve));
    const listener = Bun.listen({
      unix: name,
      socket: {
        data(_socket, chunk) {
          chunks.push(chunk.length);
          got += chunk.length;
          if (got >= total) done();
        },
      },
    });
    const fd = openSocket(AF_UNIX, SOCK_STREAM);
    try {
      enlargeSocketBuffers(fd);
      // Sent in one blocking call from this thread: it must fit the send buffer, or the test would wait on itself.
      if (getSocketOption(fd, SOL_SOCKET, SO_SNDBUF) < 2 * total) {
        console.log("skipped: the send buffer cannot be enlarged without privilege");
        return;
      }
      connectUnix(fd, name);
      sendAll(fd, new Uint8Array(total));
      await all;
      expect(Math.max(...chunks)).toBe(TRANSPORT_READ_SIZE);
    } finally {
      closeFd(fd);
      listener.stop(true);
    }
  });
});
