/**
 * Ordering guarantees with a slow device: a FLUSH is answered only after every write received before it has
 * completed (and the device's flush saw them all), FUA is emulated with a flush after the write, and replies go out
 * as requests finish, so a fast request overtakes a slow one.
 */
import { afterEach, describe, expect, test } from "bun:test";
import type { BlockDevice } from "../../src/devices/device.ts";
import { createMemDevice } from "../../src/devices/mem/index.ts";
import { MiB, type TestServer, later, startServer, wrapDevice } from "./harness.ts";
import { CMD, FLAG, type Reply, openExport, pattern } from "./raw-client.ts";

const servers: TestServer[] = [];

afterEach(async () => {
  for (const s of servers.splice(0)) await s.cleanup();
});

async function serve(device: BlockDevice): Promise<TestServer> {
  const s = await startServer({ disk: device });
  servers.push(s);
  return s;
}

/** A mem device whose writes complete after `delayFor(offset)` ms (storing the bytes only then) and whose flushes
 * record which writes had completed when they were called. */
function slowWriter(delayFor: (offset: number) => number, capabilities?: BlockDevice["capabilities"]) {
  const inner = createMemDevice({ size: 16 * MiB });
  const completed = new Set<number>();
  const flushes: number[][] = [];
  const device = wrapDevice(inner, {
    capabilities: capabilities ?? inner.capabilities,
    write: (offset, data) =>
      later(delayFor(offset), () => {
        inner.write(offset, data);
        completed.add(offset);
      }),
    flush: () => {
      flushes.push([...completed].sort((a, b) => a - b));
      return inner.flush();
    },
  });
  return { device, completed, flushes };
}

/** Replies in the order they arrived, one per handle. */
function arrivalOrder(got: Map<bigint, Reply[]>, handles: readonly bigint[]): bigint[] {
  return [...handles].sort((a, b) => got.get(a)![0]!.seq - got.get(b)![0]!.seq);
}

describe("FLUSH after pipelined WRITEs", () => {
  test("is answered only after every earlier write completed, and the device flush saw them all", async () => {
    const delays = [80, 10, 50, 30];
    const offsets = delays.map((_, i) => i * MiB + 100);
    const slow = slowWriter((offset) => delays[offsets.indexOf(offset)]!);
    const s = await serve(slow.device);
    const c = await openExport(s.path);
    const blocks = offsets.map((_, i) => pattern(5000, 200 + i));
    const handles = c.send(...offsets.map((offset, i) => ({ type: CMD.WRITE, offset, data: blocks[i]! })), { type: CMD.FLUSH });
    const got = await c.collect(handles);
    for (const h of handles) expect(got.get(h)![0]!.error).toBe(0);

    const order = arrivalOrder(got, handles);
    const flushHandle = handles[4]!;
    expect(order[order.length - 1]).toBe(flushHandle);
    expect(slow.flushes).toEqual([[...offsets].sort((a, b) => a - b)]);
    // Writes were answered as they completed, not in the order sent: the 10 ms write came back first.
    expect(order.slice(0, 4)).toEqual([handles[1]!, handles[3]!, handles[2]!, handles[0]!]);
    // The device stored what the client sent although it copied the bytes only when it completed.
    for (let i = 0; i < offsets.length; i++) expect(await c.read(offsets[i]!, 5000)).toEqual(blocks[i]!);
  });

  test("covers writes sent in an earlier write() to the socket that are still running", async () => {
    const slow = slowWriter(() => 40);
    const s = await serve(slow.device);
    const c = await openExport(s.path);
    const first = c.send({ type: CMD.WRITE, offset: 0, data: pattern(4096, 1) });
    const second = c.send({ type: CMD.WRITE, offset: MiB, data: pattern(4096, 2) }, { type: CMD.FLUSH });
    const got = await c.collect([...first, ...second]);
    expect(arrivalOrder(got, [...first, ...second]).pop()).toBe(second[1]!);
    expect(slow.flushes).toEqual([[0, MiB]]);
  });
});

describe("FLUSH after a slow TRIM and a slow WRITE_ZEROES", () => {
  test("is answered only after both, and the device flush came after both had completed", async () => {
    const inner = createMemDevice({ size: 16 * MiB });
    const done: string[] = [];
    const device = wrapDevice(inner, {
      trim: (offset, length) =>
        later(80, () => {
          inner.trim(offset, length);
          done.push("trim");
        }),
      writeZeroes: (offset, length) =>
        later(50, () => {
          inner.writeZeroes(offset, length);
          done.push("zeroes");
        }),
      flush: () => {
        done.push("flush");
        return inner.flush();
      },
    });
    const s = await serve(device);
    const c = await openExport(s.path);
    const handles = c.send(
      { type: CMD.TRIM, offset: 0, length: MiB },
      { type: CMD.WRITE_ZEROES, offset: 2 * MiB, length: MiB },
      { type: CMD.FLUSH },
    );
    const got = await c.collect(handles);
    for (const h of handles) expect(got.get(h)![0]!.error).toBe(0);
    expect(arrivalOrder(got, handles)).toEqual([handles[1]!, handles[0]!, handles[2]!]);
    expect(done).toEqual(["zeroes", "trim", "flush"]);
  });
});

describe("FUA on every command", () => {
  test("READ, FLUSH, CACHE, BLOCK_STATUS, TRIM and WRITE_ZEROES accept FUA (the spec's MUST once FUA is advertised)", async () => {
    const s = await serve(createMemDevice({ size: 16 * MiB }));
    const c = await openExport(s.path, { baseAllocation: true });
    await c.write(0, pattern(8192, 9));
    for (const type of [CMD.READ, CMD.FLUSH, CMD.CACHE, CMD.BLOCK_STATUS, CMD.TRIM, CMD.WRITE_ZEROES]) {
      const length = type === CMD.FLUSH ? 0 : 4096;
      const r = await c.request({ type, flags: FLAG.FUA, offset: type === CMD.FLUSH ? 0 : 4096, length });
      expect({ type, error: r.error }).toEqual({ type, error: 0 });
    }
    expect(await c.read(0, 4096)).toEqual(pattern(8192, 9).subarray(0, 4096));
  });
});

describe("FUA on a device without native FUA", () => {
  test("the write is answered only after a device flush that saw the write complete", async () => {
    const slow = slowWriter(() => 30, { fua: false, trim: true, multiConn: true });
    const s = await serve(slow.device);
    const c = await openExport(s.path);
    expect(slow.flushes).toEqual([]);
    await c.write(2 * MiB, pattern(4096, 3), FLAG.FUA);
    expect(slow.flushes).toEqual([[2 * MiB]]);
    // Without FUA no flush is called.
    await c.write(3 * MiB, pattern(4096, 4));
    expect(slow.flushes).toHaveLength(1);
  });
});

describe("replies go out in completion order", () => {
  function slowReads(ms: number): BlockDevice {
    const inner = createMemDevice({ size: 16 * MiB });
    inner.write(0, pattern(MiB, 5));
    inner.write(8 * MiB, pattern(MiB, 6));
    return wrapDevice(inner, {
      // Reads of the first 4 MiB are slow; the rest are immediate.
      read: (offset, length) => (offset < 4 * MiB ? later(ms, () => inner.read(offset, length).slice()) : inner.read(offset, length)),
    });
  }

  test("a fast READ sent after a slow one is answered first, and both carry their own data", async () => {
    const s = await serve(slowReads(150));
    const c = await openExport(s.path);
    const [slow, fast] = c.send({ type: CMD.READ, offset: 100, length: 4096 }, { type: CMD.READ, offset: 8 * MiB + 100, length: 4096 });
    const got = await c.collect([slow!, fast!]);
    expect(arrivalOrder(got, [slow!, fast!])).toEqual([fast!, slow!]);
    expect(got.get(slow!)![0]!.data).toEqual(pattern(MiB, 5).subarray(100, 4196));
    expect(got.get(fast!)![0]!.data).toEqual(pattern(MiB, 6).subarray(100, 4196));
  });

  test("a FLUSH does not wait for a slow READ", async () => {
    const s = await serve(slowReads(150));
    const c = await openExport(s.path);
    const [read, flush] = c.send({ type: CMD.READ, offset: 0, length: 512 }, { type: CMD.FLUSH });
    const got = await c.collect([read!, flush!]);
    expect(arrivalOrder(got, [read!, flush!])).toEqual([flush!, read!]);
  });
});
