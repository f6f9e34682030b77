/**
 * The transmission phase with well-formed requests: every command the server advertises, pipelining, DISC, and
 * structured replies (READ chunks and base:allocation block status). Each test owns a region of the 64 MiB disk.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { DeviceError } from "../../src/devices/device.ts";
import { createMemDevice } from "../../src/devices/mem/index.ts";
import { MiB, type TestServer, startServer, wrapDevice } from "./harness.ts";
import { CHUNK, CHUNK_FLAG_DONE, CMD, ERR, FLAG, type Nbd, STATE_HOLE, STATE_ZERO, openExport, pattern } from "./raw-client.ts";

let s: TestServer;
const conns: Nbd[] = [];

async function connect(options?: Parameters<typeof openExport>[1]): Promise<Nbd> {
  const c = await openExport(s.path, options);
  conns.push(c);
  return c;
}

beforeAll(async () => {
  s = await startServer();
});

afterAll(async () => {
  for (const c of conns) c.raw.close();
  await s.cleanup();
});

describe("READ and WRITE", () => {
  test("data written at unaligned offsets, across a 1 MiB page boundary, reads back exactly", async () => {
    const c = await connect();
    const a = pattern(1000, 11);
    const b = pattern(5000, 12);
    await c.write(12345, a);
    await c.write(2 * MiB - 7, b);
    expect(await c.read(12345, 1000)).toEqual(a);
    expect(await c.read(2 * MiB - 7, 5000)).toEqual(b);
    // Neighbouring bytes were not touched.
    const around = await c.read(12340, 1010);
    expect(around.subarray(0, 5).every((x) => x === 0)).toBe(true);
    expect(around.subarray(5, 1005)).toEqual(a);
    expect(around.subarray(1005).every((x) => x === 0)).toBe(true);
  });

  test("a 4 MiB write and read move the whole payload", async () => {
    const c = await connect();
    const data = pattern(4 * MiB, 13);
    await c.write(3 * MiB + 1, data);
    expect((await c.read(3 * MiB + 1, 4 * MiB)).equals(data)).toBe(true);
  });

  test("requests whose header and payload arrive in many small packets are reassembled", async () => {
    const c = await connect();
    const data = pattern(70000, 14);
    const { bytes, handles } = c.encode([
      { type: CMD.WRITE, offset: 5 * MiB + 3, data },
      { type: CMD.READ, offset: 5 * MiB + 3, length: data.length },
    ]);
    // Cuts inside the first header, inside the payload, and inside the second header.
    const cuts = [0, 5, 17, 28, 1000, 40000, 28 + data.length + 3, 28 + data.length + 20, bytes.length];
    for (let i = 0; i + 1 < cuts.length; i++) {
      c.raw.send(bytes.subarray(cuts[i]!, cuts[i + 1]!));
      await Bun.sleep(3);
    }
    const got = await c.collect(handles);
    expect(got.get(handles[0]!)![0]!.error).toBe(0);
    expect(got.get(handles[1]!)![0]!.data!.equals(data)).toBe(true);
  });

  test("many pipelined requests sent in one packet each get their reply under the right handle", async () => {
    const c = await connect();
    const count = 64;
    const base = 10 * MiB;
    const blocks = Array.from({ length: count }, (_, i) => pattern(777 + i, 100 + i));
    const at = (i: number) => base + i * 4096 + i;
    const writes = c.send(...blocks.map((data, i) => ({ type: CMD.WRITE, offset: at(i), data })));
    const written = await c.collect(writes);
    expect(written.size).toBe(count);
    for (const h of writes) expect(written.get(h)![0]!.error).toBe(0);

    // Reads in reverse order, in one packet: each handle must carry its own block.
    const order = blocks.map((_, i) => count - 1 - i);
    const reads = c.send(...order.map((i) => ({ type: CMD.READ, offset: at(i), length: blocks[i]!.length })));
    const got = await c.collect(reads);
    reads.forEach((h, k) => expect(got.get(h)![0]!.data).toEqual(blocks[order[k]!]!));
  });
});

describe("FLUSH, TRIM, WRITE_ZEROES, CACHE and FUA", () => {
  test("FLUSH succeeds", async () => {
    const c = await connect();
    expect((await c.request({ type: CMD.FLUSH })).error).toBe(0);
  });

  test("a FUA write succeeds and its data reads back", async () => {
    const c = await connect();
    const data = pattern(3000, 21);
    await c.write(14 * MiB + 5, data, FLAG.FUA);
    expect(await c.read(14 * MiB + 5, 3000)).toEqual(data);
  });

  test("a trimmed range reads back as zeros while the rest keeps its data", async () => {
    const c = await connect();
    const base = 16 * MiB;
    const data = pattern(3 * MiB, 22);
    await c.write(base, data);
    expect((await c.request({ type: CMD.TRIM, offset: base + MiB - 100, length: MiB + 200 })).error).toBe(0);
    const back = await c.read(base, 3 * MiB);
    expect(back.subarray(0, MiB - 100).equals(data.subarray(0, MiB - 100))).toBe(true);
    expect(back.subarray(MiB - 100, 2 * MiB + 100).every((x) => x === 0)).toBe(true);
    expect(back.subarray(2 * MiB + 100).equals(data.subarray(2 * MiB + 100))).toBe(true);
  });

  test("WRITE_ZEROES with NO_HOLE makes the range read as zeros", async () => {
    const c = await connect();
    const base = 20 * MiB + 17;
    await c.write(base, pattern(10000, 23));
    const r = await c.request({ type: CMD.WRITE_ZEROES, flags: FLAG.NO_HOLE, offset: base + 1000, length: 8000 });
    expect(r.error).toBe(0);
    const back = await c.read(base, 10000);
    expect(back.subarray(1000, 9000).every((x) => x === 0)).toBe(true);
    expect(back.subarray(0, 1000).equals(pattern(10000, 23).subarray(0, 1000))).toBe(true);
    expect(back.subarray(9000).equals(pattern(10000, 23).subarray(9000))).toBe(true);
  });

  test("CACHE of a valid range succeeds", async () => {
    const c = await connect();
    expect((await c.request({ type: CMD.CACHE, offset: 0, length: MiB })).error).toBe(0);
  });
});

describe("NBD_CMD_DISC", () => {
  test("the server answers the requests sent before DISC, sends nothing for DISC, then closes", async () => {
    const c = await connect();
    const data = pattern(4096, 31);
    const handles = c.send(
      { type: CMD.WRITE, offset: 24 * MiB, data },
      { type: CMD.READ, offset: 24 * MiB, length: 4096 },
      { type: CMD.DISC },
    );
    const got = await c.collect(handles.slice(0, 2));
    expect(got.get(handles[0]!)![0]!.error).toBe(0);
    expect(got.get(handles[1]!)![0]!.data).toEqual(data);
    await c.raw.waitClosed();
    expect(c.raw.buffered).toBe(0);
  });

  test("large READ replies queued before DISC are delivered in full before the server closes", async () => {
    const c = await connect();
    const data = pattern(4 * MiB, 32);
    await c.write(40 * MiB, data);
    const reads = Array.from({ length: 6 }, () => ({ type: CMD.READ, offset: 40 * MiB, length: 4 * MiB }));
    const handles = c.send(...reads, { type: CMD.DISC });
    const got = await c.collect(handles.slice(0, 6));
    for (const h of handles.slice(0, 6)) expect(got.get(h)![0]!.data!.equals(data)).toBe(true);
    await c.raw.waitClosed();
  });
});

describe("structured replies", () => {
  test("a READ answers with one OFFSET_DATA chunk flagged DONE at the requested offset", async () => {
    const c = await connect({ structured: true });
    const data = pattern(6000, 41);
    await c.write(26 * MiB + 9, data);
    const [h] = c.send({ type: CMD.READ, offset: 26 * MiB + 9, length: 6000 });
    const chunks = (await c.collect([h!])).get(h!)!;
    expect(chunks).toHaveLength(1);
    const r = chunks[0]!;
    expect(r.structured).toBe(true);
    expect(r.chunkType).toBe(CHUNK.OFFSET_DATA);
    expect(r.chunkFlags! & CHUNK_FLAG_DONE).toBe(CHUNK_FLAG_DONE);
    expect(r.offset).toBe(26 * MiB + 9);
    expect(r.data).toEqual(data);
  });

  test("a READ with the DF flag is served once structured replies are negotiated", async () => {
    const c = await connect({ structured: true });
    const r = await c.request({ type: CMD.READ, flags: FLAG.DF, offset: 0, length: 512 });
    expect(r.error).toBe(0);
    expect(r.data).toHaveLength(512);
  });
});

describe("BLOCK_STATUS with base:allocation", () => {
  const base = 32 * MiB;

  async function prepared(): Promise<Nbd> {
    const c = await connect({ baseAllocation: true });
    // [0,1) MiB hole, [1,2) MiB data, [2,4) MiB hole.
    expect((await c.request({ type: CMD.TRIM, offset: base, length: 4 * MiB })).error).toBe(0);
    await c.write(base + MiB, pattern(MiB, 51));
    return c;
  }

  test("descriptors cover the range: holes where trimmed, data where written, under the negotiated context id", async () => {
    const c = await prepared();
    const r = await c.request({ type: CMD.BLOCK_STATUS, offset: base, length: 4 * MiB });
    expect(r.error).toBe(0);
    expect(r.chunkType).toBe(CHUNK.BLOCK_STATUS);
    expect(r.chunkFlags! & CHUNK_FLAG_DONE).toBe(CHUNK_FLAG_DONE);
    expect(r.contextId).toBe(c.contextId!);
    const total = r.descriptors!.reduce((sum, d) => sum + d.length, 0);
    expect(total).toBe(4 * MiB);
    // Expand to a per-MiB map of flags.
    const perMiB: number[] = [];
    for (const d of r.descriptors!) for (let i = 0; i < d.length / MiB; i++) perMiB.push(d.flags);
    expect(perMiB[0]! & STATE_HOLE).toBe(STATE_HOLE);
    expect(perMiB[1]! & (STATE_HOLE | STATE_ZERO)).toBe(0);
    expect(perMiB[2]! & STATE_HOLE).toBe(STATE_HOLE);
    expect(perMiB[3]! & STATE_HOLE).toBe(STATE_HOLE);
  });

  test("WRITE_ZEROES with NO_HOLE leaves the range allocated (not reported as a hole)", async () => {
    const c = await prepared();
    expect((await c.request({ type: CMD.WRITE_ZEROES, flags: FLAG.NO_HOLE, offset: base + MiB, length: MiB })).error).toBe(0);
    const r = await c.request({ type: CMD.BLOCK_STATUS, offset: base + MiB, length: MiB });
    expect(r.descriptors).toEqual([{ length: MiB, flags: 0 }]);
  });

  test("REQ_ONE returns exactly one descriptor, no longer than the request", async () => {
    const c = await prepared();
    const r = await c.request({ type: CMD.BLOCK_STATUS, flags: FLAG.REQ_ONE, offset: base + MiB / 2, length: 3 * MiB });
    expect(r.error).toBe(0);
    expect(r.descriptors).toHaveLength(1);
    expect(r.descriptors![0]!.length).toBeGreaterThan(0);
    expect(r.descriptors![0]!.length).toBeLessThanOrEqual(3 * MiB);
    expect(r.descriptors![0]!.flags & STATE_HOLE).toBe(STATE_HOLE);
  });

  test("BLOCK_STATUS without a negotiated context fails with EINVAL", async () => {
    const c = await connect({ structured: true });
    const r = await c.request({ type: CMD.BLOCK_STATUS, offset: 0, length: MiB });
    expect(r.error).toBe(ERR.EINVAL);
    expect(r.descriptors).toBeUndefined();
  });
});

describe("NBD_CMD_CACHE reaches a device that prefetches", () => {
  test("the device's cache() gets the request's range, and its failure is the reply's error", async () => {
    const calls: Array<[number, number]> = [];
    const disk = wrapDevice(createMemDevice({ size: 8 * MiB }), {
      cache: async (offset, length) => {
        calls.push([offset, length]);
        if (offset >= 4 * MiB) throw new DeviceError("EIO", "store unreachable");
      },
    });
    const own = await startServer({ disk });
    try {
      const c = await openExport(own.path);
      expect((await c.request({ type: CMD.CACHE, offset: 4096, length: MiB })).error).toBe(0);
      expect((await c.request({ type: CMD.CACHE, offset: 5 * MiB, length: 4096 })).error).toBe(ERR.EIO);
      expect(calls).toEqual([
        [4096, MiB],
        [5 * MiB, 4096],
      ]);
      c.raw.close();
    } finally {
      await own.cleanup();
    }
  });
});
