/**
 * Session's direct read path, driven deterministically through a scripted transport: bytes offered by
 * `receiveInto` are parsed in order after the chunk that came first, large payloads land in the device's write
 * target, and a receive buffer held by a still-running asynchronous write is never refilled under it.
 */
import { describe, expect, test } from "bun:test";
import { createMemDevice } from "../../src/devices/mem/index.ts";
import { silentLogger } from "../../src/engine/log.ts";
import { DeviceMetrics } from "../../src/engine/metrics.ts";
import type { Transport } from "../../src/engine/reply-writer.ts";
import { Session } from "../../src/engine/session.ts";
import { wrapDevice } from "../protocol/harness.ts";
import { encodeRequest } from "../protocol/nbd.ts";
import { CMD, pattern } from "../protocol/wire.ts";

const MiB = 1024 * 1024;

/** A transport whose socket holds `waiting` bytes; receiveInto hands them out in order, as much as fits. */
function scriptedTransport(waiting: Buffer) {
  let at = 0;
  const replies: Buffer[] = [];
  const transport: Transport = {
    write: (data, offset, length) => {
      replies.push(Buffer.from(data.subarray(offset, offset + length)));
      return length;
    },
    end: () => {},
    receiveInto: (dest) => {
      const n = Math.min(dest.length, waiting.length - at);
      waiting.copy(dest, 0, at, at + n);
      at += n;
      return n;
    },
  };
  return { transport, replies, left: () => waiting.length - at };
}

function simpleReplies(replies: Buffer[]): Array<{ error: number; handle: bigint }> {
  const all = Buffer.concat(replies);
  const out = [];
  for (let at = 0; at + 16 <= all.length; at += 16) out.push({ error: all.readUInt32BE(at + 4), handle: all.readBigUInt64BE(at + 8) });
  return out;
}

describe("session direct receive", () => {
  test("requests waiting on the socket after the first chunk are all parsed, in order, across buffer refills", () => {
    const device = createMemDevice({ size: 64 * MiB });
    const writes = Array.from({ length: 300 }, (_, i) => encodeRequest({ type: CMD.WRITE, offset: i * 4096, data: pattern(4096, i) }, BigInt(i + 1)));
    const all = Buffer.concat(writes);
    const first = all.subarray(0, 10_000);
    const script = scriptedTransport(Buffer.from(all.subarray(10_000)));
    const session = new Session({ device, metrics: new DeviceMetrics(), transport: script.transport, structuredReplies: false, baseAllocation: false, log: silentLogger, peer: "test" });
    session.receive(first);
    expect(script.left()).toBe(0);
    const replies = simpleReplies(script.replies);
    expect(replies.map((r) => r.handle)).toEqual(writes.map((_, i) => BigInt(i + 1)));
    expect(replies.every((r) => r.error === 0)).toBe(true);
    for (let i = 0; i < 300; i++) expect(Buffer.compare(Buffer.from(device.read(i * 4096, 4096)), pattern(4096, i))).toBe(0);
  });

  test("a receive buffer stays untouched while an asynchronous write still holds a view of it", async () => {
    const inner = createMemDevice({ size: 64 * MiB });
    const device = wrapDevice(inner, { write: (offset, data) => Bun.sleep(5).then(() => inner.write(offset, data)) });
    const writes = Array.from({ length: 100 }, (_, i) => encodeRequest({ type: CMD.WRITE, offset: i * 8192, data: pattern(4096, 500 + i) }, BigInt(i + 1)));
    const all = Buffer.concat(writes);
    const script = scriptedTransport(Buffer.from(all.subarray(28)));
    const session = new Session({ device, metrics: new DeviceMetrics(), transport: script.transport, structuredReplies: false, baseAllocation: false, log: silentLogger, peer: "test" });
    session.receive(all.subarray(0, 28));
    await Bun.sleep(100);
    expect(simpleReplies(script.replies).length).toBe(100);
    for (let i = 0; i < 100; i++) expect(Buffer.compare(Buffer.from(inner.read(i * 8192, 4096)), pattern(4096, 500 + i))).toBe(0);
  });

  test("a large payload is received straight into the device's write target", () => {
    const device = createMemDevice({ size: 64 * MiB });
    const data = pattern(MiB, 9);
    const request = encodeRequest({ type: CMD.WRITE, offset: 3 * MiB, data }, 1n);
    const script = scriptedTransport(Buffer.from(request.subarray(1000)));
    const session = new Session({ device, metrics: new DeviceMetrics(), transport: script.transport, structuredReplies: false, baseAllocation: false, log: silentLogger, peer: "test" });
    session.receive(request.subarray(0, 1000));
    expect(simpleReplies(script.replies)).toEqual([{ error: 0, handle: 1n }]);
    expect(Buffer.compare(Buffer.from(device.read(3 * MiB, MiB)), data)).toBe(0);
  });
});
