// The kernel transport without a kernel: the test plays the kernel's part on the kernel's end of each socket,
// writing kernel-format requests (28-byte headers, simple replies only, no handshake) and reading the replies.
import { afterEach, describe, expect, test } from "bun:test";
import { createMemDevice } from "../../src/devices/mem/index.ts";
import { closeFd } from "../../src/ffi/libc.ts";
import { recvNonBlocking, sendAll } from "../../src/ffi/sockets.ts";
import { type KernelSockets, openKernelSockets } from "../../src/engine/kernel/kernel-sockets.ts";
import { silentLogger } from "../../src/shared/log.ts";
import { DeviceMetrics } from "../../src/engine/metrics.ts";
import { encodeRequest } from "../protocol/nbd.ts";
import { CMD, ERR, FLAG, SIMPLE_REPLY_MAGIC, pattern } from "../protocol/wire.ts";

const MiB = 1024 * 1024;

/** The kernel's side of one socket: requests out, replies in, read without blocking this (serving) thread. */
class KernelEnd {
  private pending = Buffer.alloc(0);
  private handle = 1n;

  constructor(readonly fd: number) {}

  send(type: number, fields: { offset?: number; length?: number; flags?: number; data?: Uint8Array } = {}): bigint {
    const handle = this.handle++;
    sendAll(this.fd, encodeRequest({ type, ...fields }, handle));
    return handle;
  }

  /** The next simple reply, with `dataLength` bytes of payload when it succeeded. */
  async reply(dataLength = 0): Promise<{ handle: bigint; error: number; data: Buffer }> {
    const header = await this.take(16);
    expect(header.readUInt32BE(0)).toBe(SIMPLE_REPLY_MAGIC);
    const error = header.readUInt32BE(4);
    const data = error === 0 && dataLength > 0 ? await this.take(dataLength) : Buffer.alloc(0);
    return { handle: header.readBigUInt64BE(8), error, data };
  }

  /** Bytes waiting now (for checking that nothing follows an error reply). */
  async waiting(settleMs = 50): Promise<number> {
    await Bun.sleep(settleMs);
    this.fill();
    return this.pending.length;
  }

  /** Resolves true once the other end has closed. */
  async closedWithin(ms: number): Promise<boolean> {
    const into = new Uint8Array(4096);
    const deadline = performance.now() + ms;
    while (performance.now() < deadline) {
      if (recvNonBlocking(this.fd, into) === 0) return true;
      await Bun.sleep(5);
    }
    return false;
  }

  private fill(): void {
    const into = new Uint8Array(1 << 20);
    for (;;) {
      const n = recvNonBlocking(this.fd, into);
      if (n <= 0) return;
      this.pending = Buffer.concat([this.pending, into.subarray(0, n)]);
    }
  }

  private async take(n: number): Promise<Buffer> {
    const deadline = performance.now() + 3000;
    while (this.pending.length < n) {
      this.fill();
      if (this.pending.length >= n) break;
      if (performance.now() > deadline) throw new Error(`no ${n}-byte reply within 3 s (have ${this.pending.length})`);
      await Bun.sleep(1);
    }
    const out = this.pending.subarray(0, n);
    this.pending = this.pending.subarray(n);
    return Buffer.from(out);
  }
}

let sockets: KernelSockets | undefined;
afterEach(() => {
  for (const c of sockets?.connections ?? []) c.terminate();
  sockets?.releaseKernelEnds();
  sockets = undefined;
});

async function open(count: number) {
  const device = createMemDevice({ size: 16 * MiB });
  const metrics = new DeviceMetrics();
  sockets = await openKernelSockets(count, { device, metrics, log: silentLogger, label: "test" });
  return { device, metrics, ends: sockets.kernelFds.map((fd) => new KernelEnd(fd)), connections: sockets.connections };
}

describe("kernel transport", () => {
  test("a session on each socket serves kernel-format requests with simple replies, no handshake", async () => {
    const { device, metrics, ends } = await open(1);
    const end = ends[0]!;
    const data = pattern(8192, 7);
    const write = end.send(CMD.WRITE, { offset: 4096, data, flags: FLAG.FUA });
    expect(await end.reply()).toEqual({ handle: write, error: 0, data: Buffer.alloc(0) });
    const read = end.send(CMD.READ, { offset: 4096, length: 8192 });
    const r = await end.reply(8192);
    expect(r.handle).toBe(read);
    expect(r.data.equals(data)).toBe(true);
    end.send(CMD.FLUSH);
    expect((await end.reply()).error).toBe(0);
    end.send(CMD.TRIM, { offset: 4096, length: 4096 });
    expect((await end.reply()).error).toBe(0);
    end.send(CMD.WRITE_ZEROES, { offset: 8192, length: 4096, flags: FLAG.NO_HOLE });
    expect((await end.reply()).error).toBe(0);
    expect(Buffer.from(await device.read(4096, 8192)).every((b) => b === 0)).toBe(true);
    const totals = metrics.snapshot().totals;
    expect(totals.write?.ops).toBe(1);
    expect(totals.flush?.ops).toBe(1);
    expect(totals.trim?.ops).toBe(1);
    expect(metrics.connections).toBe(1);
  });

  test("a failed READ gets an error reply and no data, and the stream stays in sync", async () => {
    const { ends } = await open(1);
    const end = ends[0]!;
    end.send(CMD.READ, { offset: 16 * MiB - 512, length: 4096 });
    const bad = await end.reply(4096);
    expect(bad.error).toBe(ERR.EINVAL);
    expect(await end.waiting()).toBe(0);
    end.send(CMD.READ, { offset: 0, length: 512 });
    expect((await end.reply(512)).error).toBe(0);
  });

  test("several sockets serve the same device; DISC ends a session and closes its socket", async () => {
    const { ends, connections } = await open(2);
    const [a, b] = ends as [KernelEnd, KernelEnd];
    a.send(CMD.WRITE, { offset: 0, data: pattern(4096, 1) });
    expect((await a.reply()).error).toBe(0);
    b.send(CMD.READ, { offset: 0, length: 4096 });
    expect((await b.reply(4096)).data.equals(pattern(4096, 1))).toBe(true);
    a.send(CMD.DISC);
    await connections[0]!.ended;
    expect(await a.closedWithin(1000)).toBe(true);
    b.send(CMD.READ, { offset: 0, length: 512 });
    expect((await b.reply(512)).error).toBe(0);
  });

  test("closing the kernel's end ends the session", async () => {
    const { connections } = await open(1);
    sockets!.releaseKernelEnds();
    const ended = await Promise.race([connections[0]!.ended.then(() => true), Bun.sleep(2000).then(() => false)]);
    expect(ended).toBe(true);
  });
});

test("closeFd reports a bad descriptor", () => {
  expect(() => closeFd(1_000_000)).toThrow(/close\(fd 1000000\): EBADF/);
});
