/**
 * `server.withdraw(name)`: one export leaves a server that goes on serving the others. New clients cannot choose
 * it (LIST, GO, INFO, EXPORT_NAME, and "" once it would be the default); its connections finish the requests they
 * already sent and are closed, as `stop()` closes every connection; other connections are untouched.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BlockDevice } from "../../src/devices/device.ts";
import { createMemDevice } from "../../src/devices/mem/index.ts";
import { ListenError, listen } from "../../src/engine/listen.ts";
import { silentLogger } from "../../src/shared/log.ts";
import { DeviceMetrics } from "../../src/engine/metrics.ts";
import { MiB, type TestServer, slowDevice, startServer, until, wrapDevice } from "./harness.ts";
import { CMD, OPT, REP, type RawClient, infoData, openExport, option, pattern, readOptionReplies, startHandshake } from "./raw-client.ts";

const servers: TestServer[] = [];

afterEach(async () => {
  for (const s of servers.splice(0)) await s.cleanup();
});


/** "disk" (64 MiB mem) first, then "b". */
async function serveTwo(b: BlockDevice = createMemDevice({ size: 16 * MiB })): Promise<TestServer> {
  const s = await startServer({ extra: [{ name: "b", device: b }] });
  servers.push(s);
  return s;
}

async function listed(path: string): Promise<string[]> {
  const c = await startHandshake(path);
  c.send(option(OPT.LIST));
  const replies = await readOptionReplies(c);
  c.close();
  expect(replies[replies.length - 1]!.type).toBe(REP.ACK);
  return replies.filter((r) => r.type === REP.SERVER).map((r) => r.data.subarray(4, 4 + r.data.readUInt32BE(0)).toString());
}

/** The final reply type of GO (or INFO) for `name` on a fresh connection. */
async function goAnswer(path: string, name: string, opt: number = OPT.GO): Promise<{ type: number; c: RawClient }> {
  const c = await startHandshake(path);
  c.send(option(opt, infoData(name)));
  const replies = await readOptionReplies(c);
  return { type: replies[replies.length - 1]!.type, c };
}

describe("server.withdraw()", () => {
  test("answers the withdrawn export's in-flight requests, closes its connection, and leaves the other export serving", async () => {
    const slow = slowDevice(150, { size: 16 * MiB, filled: 4 * MiB, seed: 7, slowWrites: false });
    const s = await serveTwo(slow.device);
    const onB = await openExport(s.path, { exportName: "b" });
    const onDisk = await openExport(s.path, { exportName: "disk" });
    await onDisk.write(0, pattern(64 * 1024, 3));

    const handles = onB.send(
      { type: CMD.READ, offset: 0, length: 4096 },
      { type: CMD.READ, offset: MiB + 3, length: 1000 },
      { type: CMD.READ, offset: 3 * MiB, length: 64 * 1024 },
    );
    await until(() => slow.started() === 3);
    let withdrawn = false;
    const withdrawing = s.server.withdraw("b").then(() => {
      withdrawn = true;
    });
    // Still waiting on b's requests; meanwhile the other export answers at once.
    expect(await onDisk.read(0, 64 * 1024)).toEqual(pattern(64 * 1024, 3));
    expect(withdrawn).toBe(false);

    const got = await onB.collect(handles);
    const whole = pattern(4 * MiB, 7);
    expect(got.get(handles[0]!)![0]!.data).toEqual(whole.subarray(0, 4096));
    expect(got.get(handles[1]!)![0]!.data).toEqual(whole.subarray(MiB + 3, MiB + 1003));
    expect(got.get(handles[2]!)![0]!.data).toEqual(whole.subarray(3 * MiB, 3 * MiB + 64 * 1024));
    await onB.raw.waitClosed();
    expect(onB.raw.buffered).toBe(0);
    await withdrawing;

    // The other connection is untouched and the socket still takes new clients for what is left.
    expect(onDisk.raw.closed).toBe(false);
    await onDisk.write(MiB, pattern(4096, 9));
    expect(await onDisk.read(MiB, 4096)).toEqual(pattern(4096, 9));
    expect(existsSync(s.path)).toBe(true);
    const fresh = await openExport(s.path, { exportName: "disk" });
    expect(await fresh.read(0, 4096)).toEqual(pattern(4096, 3));
    expect(s.server.exportNames).toEqual(["disk"]);
  });

  test("new clients cannot choose it: LIST leaves it out, GO and INFO answer unknown, EXPORT_NAME closes", async () => {
    const s = await serveTwo();
    expect(await listed(s.path)).toEqual(["disk", "b"]);
    await s.server.withdraw("b");
    expect(await listed(s.path)).toEqual(["disk"]);
    for (const opt of [OPT.GO, OPT.INFO]) {
      const { type, c } = await goAnswer(s.path, "b", opt);
      expect(type).toBe(REP.ERR_UNKNOWN);
      c.close();
    }
    const byName = await startHandshake(s.path);
    byName.send(option(OPT.EXPORT_NAME, Buffer.from("b")));
    await byName.waitClosed();
    expect(byName.buffered).toBe(0);
  });

  test("a client already in the handshake when the export goes cannot pick it afterwards", async () => {
    const s = await serveTwo();
    const c = await startHandshake(s.path);
    c.send(option(OPT.INFO, infoData("b")));
    expect((await readOptionReplies(c)).pop()!.type).toBe(REP.ACK);
    await s.server.withdraw("b");
    c.send(option(OPT.GO, infoData("b")));
    expect((await readOptionReplies(c)).pop()!.type).toBe(REP.ERR_UNKNOWN);
    c.close();
  });

  test("the default export becomes the first one still offered, and fails once none is left", async () => {
    const s = await serveTwo();
    await s.server.withdraw("disk");
    const { type, c } = await goAnswer(s.path, "");
    expect(type).toBe(REP.ACK);
    c.close();
    expect(s.server.uri()).toContain("/b?socket=");
    await s.server.withdraw("b");
    expect(s.server.exportNames).toEqual([]);
    expect(await listed(s.path)).toEqual([]);
    const none = await goAnswer(s.path, "");
    expect(none.type).toBe(REP.ERR_UNKNOWN);
    none.c.close();
    // stop() still removes the socket.
    await s.server.stop();
    expect(existsSync(s.path)).toBe(false);
  });

  test("refuses a name that is not offered, and a second withdraw of the same name", async () => {
    const s = await serveTwo();
    await expect(s.server.withdraw("nope")).rejects.toBeInstanceOf(ListenError);
    await s.server.withdraw("b");
    await expect(s.server.withdraw("b")).rejects.toThrow(/no export named "b"/);
  });

  test("cuts off a connection still busy after the grace period, and only that one", async () => {
    const dir = mkdtempSync(join(tmpdir(), "usbd-withdraw-"));
    const path = join(dir, "nbd.sock");
    const stuck = wrapDevice(createMemDevice({ size: 8 * MiB }), { read: () => new Promise<Uint8Array>(() => {}) });
    const server = await listen(
      { kind: "unix", path },
      [
        { name: "a", device: createMemDevice({ size: 8 * MiB }), metrics: new DeviceMetrics() },
        { name: "b", device: stuck, metrics: new DeviceMetrics() },
      ],
      { log: silentLogger, shutdownGraceMs: 200 },
    );
    try {
      const onA = await openExport(path, { exportName: "a" });
      const onB = await openExport(path, { exportName: "b" });
      onB.send({ type: CMD.READ, offset: 0, length: 4096 });
      await Bun.sleep(20);
      const started = performance.now();
      await server.withdraw("b");
      const took = performance.now() - started;
      expect(took).toBeGreaterThanOrEqual(190);
      expect(took).toBeLessThan(2000);
      await onB.raw.waitClosed();
      expect(onA.raw.closed).toBe(false);
      await onA.write(0, pattern(4096, 1));
      expect(await onA.read(0, 4096)).toEqual(pattern(4096, 1));
      expect(server.connectionCount).toBe(1);
    } finally {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
