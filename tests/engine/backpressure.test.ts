/**
 * The memory budget as a session meets it, driven deterministically: a transport that takes no bytes (a client that
 * never reads its replies) makes the session stop reading once its share is full, the held input is parsed in order
 * once the socket drains, a connection that holds nothing always gets its small guaranteed slice, and one budget
 * bounds several connections together.
 */
import { describe, expect, test } from "bun:test";
import { createMemDevice } from "../../src/devices/mem/index.ts";
import { BudgetAccount, MemoryBudget } from "../../src/engine/memory-budget.ts";
import { DeviceMetrics } from "../../src/engine/metrics.ts";
import type { Transport } from "../../src/engine/reply-writer.ts";
import { Session } from "../../src/engine/session.ts";
import { silentLogger } from "../../src/shared/log.ts";
import { encodeRequest } from "../protocol/nbd.ts";
import { CMD, pattern } from "../protocol/wire.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** A socket that takes nothing until `open()`, then everything; records what it took and its pause state. */
function stalledTransport() {
  let taking = false;
  let paused = false;
  let pauses = 0;
  const taken: Buffer[] = [];
  const transport: Transport = {
    write: (data, offset, length) => {
      if (!taking) return 0;
      taken.push(Buffer.from(data.subarray(offset, offset + length)));
      return length;
    },
    end: () => {},
    pause: () => {
      paused = true;
      pauses++;
    },
    resume: () => {
      paused = false;
    },
  };
  return {
    transport,
    taken,
    paused: () => paused,
    pauses: () => pauses,
    open: () => {
      taking = true;
    },
  };
}

/** What every device in these tests holds at its start. */
const CONTENT = Buffer.from(pattern(4 * MiB, 3));

function session(transport: Transport, budget: MemoryBudget): { session: Session; account: BudgetAccount } {
  const device = createMemDevice({ size: 64 * MiB });
  device.write(0, CONTENT);
  const account = new BudgetAccount(budget);
  return {
    account,
    session: new Session({ device, metrics: new DeviceMetrics(), transport, account, structuredReplies: false, baseAllocation: false, log: silentLogger, peer: "test" }),
  };
}

/** Replies (16-byte headers and their READ data of `length` each) in the order they came, by handle. */
function readReplies(taken: Buffer[], length: number): bigint[] {
  const all = Buffer.concat(taken);
  const handles: bigint[] = [];
  for (let at = 0; at + 16 <= all.length; at += 16 + length) {
    expect(all.readUInt32BE(at + 4)).toBe(0);
    handles.push(all.readBigUInt64BE(at + 8));
    expect(all.subarray(at + 16, at + 16 + length).equals(CONTENT.subarray(0, length))).toBe(true);
  }
  return handles;
}

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("a client that never reads its replies", () => {
  test("makes the session pause reading once its share is full; the held requests are served in order after the drain", async () => {
    const budget = new MemoryBudget({ limit: 8 * MiB, perConnection: 1 * MiB, guaranteed: 64 * KiB });
    const t = stalledTransport();
    const { session: s, account } = session(t.transport, budget);
    const requests = Array.from({ length: 200 }, (_, i) => encodeRequest({ type: CMD.READ, offset: 0, length: 64 * KiB }, BigInt(i + 1)));
    s.receive(Buffer.concat(requests));
    await tick();
    expect(t.paused()).toBe(true);
    // Held: at most the share (the 64 KiB replies that did not fit are refused admission), never the 12.5 MiB asked.
    expect(account.bytes).toBeGreaterThan(512 * KiB);
    expect(account.bytes).toBeLessThanOrEqual(1 * MiB + 64 * KiB);
    expect(budget.peak).toBeLessThanOrEqual(1 * MiB + 64 * KiB);

    t.open();
    for (let i = 0; i < 400 && t.taken.reduce((n, b) => n + b.length, 0) < 200 * (16 + 64 * KiB); i++) {
      s.drain();
      await tick();
    }
    expect(readReplies(t.taken, 64 * KiB)).toEqual(Array.from({ length: 200 }, (_, i) => BigInt(i + 1)));
    expect(t.paused()).toBe(false);
    expect(account.bytes).toBe(0);
    expect(budget.used).toBe(0);
  });

  test("bytes that arrive while paused, and a header split across them, are kept and parsed in order", async () => {
    const budget = new MemoryBudget({ limit: 8 * MiB, perConnection: 256 * KiB, guaranteed: 16 * KiB });
    const t = stalledTransport();
    const { session: s } = session(t.transport, budget);
    const all = Buffer.concat(Array.from({ length: 40 }, (_, i) => encodeRequest({ type: CMD.READ, offset: 0, length: 32 * KiB }, BigInt(i + 1))));
    // Odd pieces, so headers straddle chunk boundaries; later chunks arrive after the pause, as Bun may deliver them.
    for (let at = 0; at < all.length; at += 45) s.receive(all.subarray(at, at + 45));
    await tick();
    expect(t.pauses()).toBeGreaterThan(0);
    t.open();
    for (let i = 0; i < 200 && t.taken.reduce((n, b) => n + b.length, 0) < 40 * (16 + 32 * KiB); i++) {
      s.drain();
      await tick();
    }
    expect(readReplies(t.taken, 32 * KiB)).toEqual(Array.from({ length: 40 }, (_, i) => BigInt(i + 1)));
  });
});

describe("a request larger than the connection's share", () => {
  test("arriving while the gate holds its own first bytes, it is admitted once earlier replies drain (its held input does not count against it)", async () => {
    const budget = new MemoryBudget({ limit: 8 * MiB, perConnection: 256 * KiB, guaranteed: 16 * KiB });
    const t = stalledTransport();
    const { session: s } = session(t.transport, budget);
    const data = Buffer.from(pattern(1 * MiB, 9));
    const write = encodeRequest({ type: CMD.WRITE, offset: 8 * MiB, data }, 2n);
    // A READ whose reply the socket does not take yet, then the WRITE's header and the first part of its payload.
    s.receive(Buffer.concat([encodeRequest({ type: CMD.READ, offset: 0, length: 200 * KiB }, 1n), write.subarray(0, 100 * KiB)]));
    await tick();
    expect(t.paused()).toBe(true);
    t.open();
    s.drain();
    for (let i = 0; i < 20 && t.paused(); i++) await tick();
    expect(t.paused()).toBe(false);
    s.receive(write.subarray(100 * KiB));
    await tick();
    const all = Buffer.concat(t.taken);
    // The READ's reply (16 + 200 KiB), then the WRITE's.
    expect(all.length).toBe(16 + 200 * KiB + 16);
    expect(all.readBigUInt64BE(16 + 200 * KiB + 8)).toBe(2n);
    expect(all.readUInt32BE(16 + 200 * KiB + 4)).toBe(0);
  });
});

describe("a client that leaves while the session is not reading it", () => {
  test("is noticed within about a second (a paused socket reports no close) and gives its budget back", async () => {
    const budget = new MemoryBudget({ limit: 8 * MiB, perConnection: 256 * KiB, guaranteed: 16 * KiB });
    const t = stalledTransport();
    let gone = false;
    let ended = false;
    const transport: Transport = { ...t.transport, peerGone: () => gone, end: () => (ended = true) };
    const { session: s, account } = session(transport, budget);
    s.receive(Buffer.concat(Array.from({ length: 20 }, (_, i) => encodeRequest({ type: CMD.READ, offset: 0, length: 64 * KiB }, BigInt(i + 1)))));
    await tick();
    expect(t.paused()).toBe(true);
    expect(account.bytes).toBeGreaterThan(0);
    gone = true;
    for (let i = 0; i < 40 && !ended; i++) await Bun.sleep(50);
    expect(ended).toBe(true);
    expect(account.bytes).toBe(0);
    expect(budget.used).toBe(0);
  });
});

describe("one budget for every connection", () => {
  test("stalled connections together hold no more than the limit plus each one's guaranteed slice", async () => {
    const budget = new MemoryBudget({ limit: 2 * MiB, perConnection: 1 * MiB, guaranteed: 64 * KiB });
    const stalled = Array.from({ length: 10 }, () => {
      const t = stalledTransport();
      const s = session(t.transport, budget);
      s.session.receive(Buffer.concat(Array.from({ length: 64 }, (_, i) => encodeRequest({ type: CMD.READ, offset: 0, length: 128 * KiB }, BigInt(i + 1)))));
      return { t, ...s };
    });
    await tick();
    expect(budget.peak).toBeLessThanOrEqual(2 * MiB + 10 * 64 * KiB);
    for (const c of stalled) expect(c.t.paused()).toBe(true);

    // A well-behaved connection still gets small requests through while the others hold the budget.
    const good = stalledTransport();
    good.open();
    const g = session(good.transport, budget);
    g.session.receive(encodeRequest({ type: CMD.READ, offset: 0, length: 4 * KiB }, 7n));
    await tick();
    expect(readReplies(good.taken, 4 * KiB)).toEqual([7n]);
  });

  test("a lone request larger than the per-connection share is served once nothing else is held", async () => {
    const budget = new MemoryBudget({ limit: 4 * MiB, perConnection: 512 * KiB, guaranteed: 64 * KiB });
    const t = stalledTransport();
    t.open();
    const { session: s } = session(t.transport, budget);
    s.receive(encodeRequest({ type: CMD.READ, offset: 0, length: 2 * MiB }, 1n));
    await tick();
    expect(readReplies(t.taken, 2 * MiB)).toEqual([1n]);
  });
});
