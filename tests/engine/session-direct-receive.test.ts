/**
 * Session's direct read path, driven deterministically through a scripted transport: bytes offered by
 * `receiveInto` are parsed in order after the chunk that came first, large payloads reach the device whole or in
 * pieces as it asks, and a receive buffer held by a still-running asynchronous write is never refilled under it.
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

  test("a large payload is assembled whole for a device without split writes, and in pieces for one with them", () => {
    for (const splitWrites of [false, true]) {
      const inner = createMemDevice({ size: 64 * MiB });
      const calls: number[] = [];
      const device = wrapDevice(inner, {
        capabilities: { ...inner.capabilities, splitWrites },
        write: (offset, data) => {
          calls.push(data.length);
          inner.write(offset, data);
        },
      });
      const data = pattern(MiB, 9);
      const request = encodeRequest({ type: CMD.WRITE, offset: 3 * MiB + 5, data }, 1n);
      const script = scriptedTransport(Buffer.from(request.subarray(1000)));
      const session = new Session({ device, metrics: new DeviceMetrics(), transport: script.transport, structuredReplies: false, baseAllocation: false, log: silentLogger, peer: "test" });
      session.receive(request.subarray(0, 1000));
      expect(simpleReplies(script.replies)).toEqual([{ error: 0, handle: 1n }]);
      expect(Buffer.compare(Buffer.from(inner.read(3 * MiB + 5, MiB)), data)).toBe(0);
      if (splitWrites) expect(calls.length).toBeGreaterThan(2);
      else expect(calls).toEqual([MiB]);
    }
  });

  test("split pieces read into receive buffers stay intact while asynchronous writes hold them", async () => {
    const inner = createMemDevice({ size: 64 * MiB });
    const device = wrapDevice(inner, {
      capabilities: { ...inner.capabilities, splitWrites: true },
      write: (offset, data) => Bun.sleep(5).then(() => inner.write(offset, data)),
    });
    const blocks = Array.from({ length: 4 }, (_, i) => pattern(MiB, 40 + i));
    const all = Buffer.concat(blocks.map((data, i) => encodeRequest({ type: CMD.WRITE, offset: i * 2 * MiB, data }, BigInt(i + 1))));
    const script = scriptedTransport(Buffer.from(all.subarray(100)));
    const session = new Session({ device, metrics: new DeviceMetrics(), transport: script.transport, structuredReplies: false, baseAllocation: false, log: silentLogger, peer: "test" });
    session.receive(all.subarray(0, 100));
    await Bun.sleep(200);
    expect(simpleReplies(script.replies).length).toBe(4);
    for (let i = 0; i < 4; i++) expect(Buffer.compare(Buffer.from(inner.read(i * 2 * MiB, MiB)), blocks[i]!)).toBe(0);
  });
});
