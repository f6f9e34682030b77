/**
 * Session's direct read path, driven deterministically through a scripted transport: bytes offered by
 * `receiveInto` are parsed in order after the chunk that came first, large payloads reach the device whole or in
 * pieces as it asks, and a receive buffer held by a still-running asynchronous write is never refilled under it.
 */
import { describe, expect, test } from "bun:test";
import { createMemDevice } from "../../src/devices/mem/index.ts";
import { silentLogger } from "../../src/shared/log.ts";
import { DeviceMetrics } from "../../src/engine/metrics.ts";
import { TRANSPORT_READ_SIZE } from "../../src/engine/receive-buffers.ts";
import type { Transport } from "../../src/engine/reply-writer.ts";
import { Session } from "../../src/engine/session.ts";
import { wrapDevice } from "../protocol/harness.ts";
import { encodeRequest } from "../protocol/nbd.ts";
import { CMD, pattern } from "../protocol/wire.ts";

const MiB = 1024 * 1024;

/**
 * A transport whose socket holds `waiting` bytes; receiveInto hands them out in order, as much as fits. The session
 * looks for waiting bytes only after a full-size chunk (a shorter one means the socket was empty), so tests that want
 * the direct path start with a chunk of TRANSPORT_READ_SIZE bytes.
 */
function scriptedTransport(waiting: Buffer) {
  let at = 0;
  let calls = 0;
  const replies: Buffer[] = [];
  const transport: Transport = {
    write: (data, offset, length) => {
      replies.push(Buffer.from(data.subarray(offset, offset + length)));
      return length;
    },
    end: () => {},
    receiveInto: (dest) => {
      calls++;
      const n = Math.min(dest.length, waiting.length - at);
      waiting.copy(dest, 0, at, at + n);
      at += n;
      return n;
    },
  };
  return { transport, replies, left: () => waiting.length - at, receiveCalls: () => calls };
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
    const first = all.subarray(0, TRANSPORT_READ_SIZE);
    const script = scriptedTransport(Buffer.from(all.subarray(TRANSPORT_READ_SIZE)));
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
    const writes = Array.from({ length: 250 }, (_, i) => encodeRequest({ type: CMD.WRITE, offset: i * 8192, data: pattern(4096, 500 + i) }, BigInt(i + 1)));
    const all = Buffer.concat(writes);
    const script = scriptedTransport(Buffer.from(all.subarray(TRANSPORT_READ_SIZE)));
    const session = new Session({ device, metrics: new DeviceMetrics(), transport: script.transport, structuredReplies: false, baseAllocation: false, log: silentLogger, peer: "test" });
    session.receive(all.subarray(0, TRANSPORT_READ_SIZE));
    expect(script.left()).toBe(0);
    await Bun.sleep(100);
    expect(simpleReplies(script.replies).length).toBe(250);
    for (let i = 0; i < 250; i++) expect(Buffer.compare(Buffer.from(inner.read(i * 8192, 4096)), pattern(4096, 500 + i))).toBe(0);
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
    const script = scriptedTransport(Buffer.from(all.subarray(TRANSPORT_READ_SIZE)));
    const session = new Session({ device, metrics: new DeviceMetrics(), transport: script.transport, structuredReplies: false, baseAllocation: false, log: silentLogger, peer: "test" });
    session.receive(all.subarray(0, TRANSPORT_READ_SIZE));
    await Bun.sleep(200);
    expect(simpleReplies(script.replies).length).toBe(4);
    for (let i = 0; i < 4; i++) expect(Buffer.compare(Buffer.from(inner.read(i * 2 * MiB, MiB)), blocks[i]!)).toBe(0);
  });

  test("a chunk shorter than a full read costs no further recv: the socket was empty when it was read", () => {
    const device = createMemDevice({ size: 64 * MiB });
    device.write(8192, pattern(4096, 3));
    const read = encodeRequest({ type: CMD.READ, offset: 8192, length: 4096 }, 7n);
    // Bytes the session must not go looking for: they stand for a request that has not arrived yet.
    const script = scriptedTransport(encodeRequest({ type: CMD.READ, offset: 0, length: 4096 }, 8n));
    const session = new Session({ device, metrics: new DeviceMetrics(), transport: script.transport, structuredReplies: false, baseAllocation: false, log: silentLogger, peer: "test" });
    session.receive(read);
    expect(script.receiveCalls()).toBe(0);
    const all = Buffer.concat(script.replies);
    expect(all.readBigUInt64BE(8)).toBe(7n);
    expect(Buffer.compare(all.subarray(16), pattern(4096, 3))).toBe(0);
  });

  test("after a full-size chunk the session reads on until the socket is empty", () => {
    const device = createMemDevice({ size: 64 * MiB });
    const requests = Array.from({ length: TRANSPORT_READ_SIZE / 28 + 10 }, (_, i) => encodeRequest({ type: CMD.READ, offset: (i % 100) * 4096, length: 512 }, BigInt(i + 1)));
    const all = Buffer.concat(requests);
    const script = scriptedTransport(Buffer.from(all.subarray(TRANSPORT_READ_SIZE)));
    const session = new Session({ device, metrics: new DeviceMetrics(), transport: script.transport, structuredReplies: false, baseAllocation: false, log: silentLogger, peer: "test" });
    session.receive(all.subarray(0, TRANSPORT_READ_SIZE));
    expect(script.left()).toBe(0);
    expect(script.receiveCalls()).toBeGreaterThan(0);
  });
});
