/**
 * A clean shutdown: `server.stop()` stops accepting, lets every connection finish the requests it already sent
 * (their replies arrive in full), closes the connections, and removes the Unix socket file.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { listen } from "../../src/engine/listen.ts";
import { silentLogger } from "../../src/shared/log.ts";
import { DeviceMetrics } from "../../src/engine/metrics.ts";
import type { BlockDevice } from "../../src/devices/device.ts";
import { createMemDevice } from "../../src/devices/mem/index.ts";
import { MiB, type TestServer, slowDevice, startServer, until, wrapDevice } from "./harness.ts";
import { CMD, RawClient, openExport, pattern, readGreeting } from "./raw-client.ts";

const servers: TestServer[] = [];

afterEach(async () => {
  for (const s of servers.splice(0)) await s.cleanup();
});


async function serve(device?: BlockDevice): Promise<TestServer> {
  const s = await startServer(device ? { disk: device } : {});
  servers.push(s);
  return s;
}

async function expectRefused(path: string): Promise<void> {
  const attempt = RawClient.connect(path).then(
    (c) => {
      c.close();
      return "connected";
    },
    () => "refused",
  );
  expect(await attempt).toBe("refused");
}

describe("server.stop()", () => {
  test("answers the requests in flight, then closes the connection and removes the socket file", async () => {
    const slow = slowDevice(150, { size: 32 * MiB, filled: 8 * MiB, seed: 1, slowWrites: true });
    const s = await serve(slow.device);
    const c = await openExport(s.path);
    const data = pattern(4096, 2);
    const handles = c.send(
      { type: CMD.READ, offset: 0, length: 4096 },
      { type: CMD.READ, offset: MiB + 1, length: 1000 },
      { type: CMD.WRITE, offset: 16 * MiB, data },
      { type: CMD.READ, offset: 7 * MiB, length: 512 },
    );
    await until(() => slow.started() === 4);
    let stopped = false;
    const stopping = s.server.stop().then(() => {
      stopped = true;
    });
    expect(stopped).toBe(false);

    const got = await c.collect(handles);
    const whole = pattern(8 * MiB, 1);
    expect(got.get(handles[0]!)![0]!.data).toEqual(whole.subarray(0, 4096));
    expect(got.get(handles[1]!)![0]!.data).toEqual(whole.subarray(MiB + 1, MiB + 1001));
    expect(got.get(handles[2]!)![0]!.error).toBe(0);
    expect(got.get(handles[3]!)![0]!.data).toEqual(whole.subarray(7 * MiB, 7 * MiB + 512));
    await c.raw.waitClosed();
    expect(c.raw.buffered).toBe(0);
    await stopping;
    expect(existsSync(s.path)).toBe(false);
    await expectRefused(s.path);
  });

  test("delivers large READ replies in full before closing", async () => {
    const slow = slowDevice(50, { size: 32 * MiB, filled: 8 * MiB, seed: 1, slowWrites: true });
    const s = await serve(slow.device);
    const c = await openExport(s.path);
    const handles = c.send(...Array.from({ length: 4 }, (_, i) => ({ type: CMD.READ, offset: i * MiB, length: 4 * MiB })));
    await until(() => slow.started() === 4);
    const stopping = s.server.stop();
    const got = await c.collect(handles);
    const whole = pattern(8 * MiB, 1);
    handles.forEach((h, i) => expect(got.get(h)![0]!.data!.equals(whole.subarray(i * MiB, i * MiB + 4 * MiB))).toBe(true));
    await c.raw.waitClosed();
    await stopping;
  });

  test("closes idle connections and connections still in the handshake", async () => {
    const s = await serve();
    const idle = await openExport(s.path);
    const negotiating = await RawClient.connect(s.path);
    await readGreeting(negotiating);
    await s.server.stop();
    await idle.raw.waitClosed();
    await negotiating.waitClosed();
    expect(s.server.connectionCount).toBe(0);
    expect(existsSync(s.path)).toBe(false);
  });

  test("refuses new connections once stopped, and a second stop() also completes", async () => {
    const s = await serve();
    await s.server.stop();
    await expectRefused(s.path);
    const again = await Promise.race([s.server.stop().then(() => "stopped"), Bun.sleep(2000).then(() => "hung")]);
    expect(again).toBe("stopped");
  });
});

describe("server.stop() with a connection that cannot finish", () => {
  test("cuts it off after the grace period instead of hanging", async () => {
    const dir = mkdtempSync(join(tmpdir(), "usbd-grace-"));
    const path = join(dir, "nbd.sock");
    const stuck = wrapDevice(createMemDevice({ size: 8 * MiB }), { read: () => new Promise<Uint8Array>(() => {}) });
    const server = await listen({ kind: "unix", path }, [{ name: "disk", device: stuck, metrics: new DeviceMetrics() }], {
      log: silentLogger,
      shutdownGraceMs: 200,
    });
    try {
      const c = await openExport(path);
      c.send({ type: CMD.READ, offset: 0, length: 4096 });
      await Bun.sleep(20);
      const started = performance.now();
      await server.stop();
      const took = performance.now() - started;
      expect(took).toBeGreaterThanOrEqual(190);
      expect(took).toBeLessThan(2000);
      expect(server.connectionCount).toBe(0);
      await c.raw.waitClosed(2000);
      expect(existsSync(path)).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
