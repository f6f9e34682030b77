// The ring that holds reply bytes behind backpressure: order kept across wrap-around, growth and partial writes.
import { describe, expect, test } from "bun:test";
import { SPARE_POOL_BYTES, SpillRing } from "../../src/engine/spill-ring.ts";

/** A socket that takes at most `limit` bytes per call and records what it took. */
function stingySocket(limit: number) {
  const taken: Buffer[] = [];
  return {
    taken,
    write: (data: Uint8Array, offset: number, length: number) => {
      const n = Math.min(limit, length);
      taken.push(Buffer.from(data.slice(offset, offset + n)));
      return n;
    },
  };
}

describe("spill ring", () => {
  test("bytes come out in the order they went in, across wrap-around and growth", () => {
    const ring = new SpillRing();
    const expected: Buffer[] = [];
    const socket = stingySocket(300_000);
    let value = 0;
    for (let round = 0; round < 20; round++) {
      const chunk = new Uint8Array(100_000 + round * 90_001);
      for (let i = 0; i < chunk.length; i++) chunk[i] = value++ & 0xff;
      expected.push(Buffer.from(chunk));
      ring.push(chunk);
      ring.writeTo(socket.write);
    }
    while (ring.size > 0) ring.writeTo(socket.write);
    const out = Buffer.concat(socket.taken);
    const want = Buffer.concat(expected);
    expect(out.length).toBe(want.length);
    expect(out.equals(want)).toBe(true);
  });

  test("a closed socket (-1) stops the write-out and keeps the bytes", () => {
    const ring = new SpillRing();
    ring.push(new Uint8Array(10));
    expect(ring.writeTo(() => -1)).toBe(-1);
    expect(ring.size).toBe(10);
    ring.clear();
    expect(ring.size).toBe(0);
  });

  test("drained blocks go to one pool for the whole process, reused by any connection and bounded", () => {
    const all = (ring: SpillRing) => {
      while (ring.size > 0) ring.writeTo((_d, _o, length) => length);
    };
    const first = new SpillRing();
    first.push(new Uint8Array(16 * 1024 * 1024));
    all(first);
    const pooled = SpillRing.spareBlocks;
    expect(pooled).toBeGreaterThanOrEqual(64);
    // Another connection's backlog takes its blocks from the pool instead of fresh memory.
    const second = new SpillRing();
    second.push(new Uint8Array(8 * 1024 * 1024));
    expect(SpillRing.spareBlocks).toBe(pooled - 32);
    all(second);
    // However large the bursts, the pool keeps at most SPARE_POOL_BYTES.
    const big = new SpillRing();
    big.push(new Uint8Array(3 * SPARE_POOL_BYTES));
    all(big);
    expect(SpillRing.spareBlocks * 256 * 1024).toBe(SPARE_POOL_BYTES);
  });
});
