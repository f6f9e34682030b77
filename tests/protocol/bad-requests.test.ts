/**
 * Acceptance test for a misbehaving client: every malformed or out-of-range request earns the protocol's answer
 * (an error reply, or a hang-up where the stream cannot be trusted), costs only its own connection at most, and
 * leaves a second, well-behaved connection working before, between and after. The server's counters must record
 * the failures and the server must still stop cleanly.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createMemDevice } from "../../src/devices/mem/index.ts";
import { DISK_SIZE, MiB, type TestServer, startServer, wrapDevice } from "./harness.ts";
import { CHUNK, CHUNK_FLAG_DONE, CMD, type Command, ERR, FLAG, type Nbd, TF, openExport, pattern } from "./raw-client.ts";

const MAX_REQUEST = 64 * MiB;
const TWO_64 = 1n << 64n;

let s: TestServer;
let witness: Nbd;
let witnessRounds = 0;
/** Error counts every `misbehave` so far expected, by command name. */
const expectedTotals: Record<string, number> = {};
const conns: Nbd[] = [];

async function connect(options?: Parameters<typeof openExport>[1]): Promise<Nbd> {
  const c = await openExport(s.path, options);
  conns.push(c);
  return c;
}

/** The second connection writes fresh bytes to its own region and reads them back. */
async function witnessRoundTrip(): Promise<void> {
  const n = witnessRounds++;
  const data = pattern(4096 + n, 9000 + n);
  const offset = 60 * MiB + n * 8192 + 1;
  await witness.write(offset, data);
  expect(await witness.read(offset, data.length)).toEqual(data);
}

type Totals = Record<string, { ops: number; errors: number }>;
function totals(): Totals {
  return s.metrics.snapshot().totals as Totals;
}

/** Runs `body` between two witness round trips and checks which error counters it raised. */
async function misbehave(expectedErrors: Record<string, number>, body: () => Promise<void>): Promise<void> {
  await witnessRoundTrip();
  const before = totals();
  await body();
  await witnessRoundTrip();
  const after = totals();
  for (const name of ["read", "write", "trim", "write_zeroes", "block_status", "flush", "cache"]) {
    expect({ [name]: after[name]!.errors - before[name]!.errors }).toEqual({ [name]: expectedErrors[name] ?? 0 });
    expectedTotals[name] = (expectedTotals[name] ?? 0) + (expectedErrors[name] ?? 0);
  }
}

/** One request that must fail with `error`, followed by a READ on the same connection that must succeed. */
async function expectRejected(c: Nbd, cmd: Command, error: number): Promise<void> {
  const r = await c.request(cmd);
  expect(r.error).toBe(error);
  expect(r.data).toBeUndefined();
  // If the server had sent data after the error, or not consumed a payload, this reply would not parse.
  expect(await c.read(0, 512)).toHaveLength(512);
}

beforeAll(async () => {
  // Without writeZeroes and without a fastZero claim, the engine must not advertise FAST_ZERO.
  const noZeroes = wrapDevice(createMemDevice({ size: 8 * MiB }), { capabilities: { fua: true, multiConn: true } });
  delete noZeroes.writeZeroes;
  const readOnly = wrapDevice(createMemDevice({ size: 8 * MiB }), { capabilities: { readOnly: true, multiConn: true } });
  s = await startServer({
    extra: [
      { name: "plain", device: noZeroes },
      { name: "ro", device: readOnly },
    ],
  });
  witness = await openExport(s.path);
});

afterAll(async () => {
  for (const c of conns) c.raw.close();
  witness.raw.close();
  await s.cleanup();
});

describe("a broken stream costs only its own connection", () => {
  test("a wrong request magic makes the server close that connection without a reply", async () => {
    await misbehave({}, async () => {
      const c = await connect();
      c.send({ type: CMD.READ, offset: 0, length: 512, magic: 0x12345678 });
      await c.raw.waitClosed();
      expect(c.raw.buffered).toBe(0);
    });
  });
});

describe("invalid requests get an error reply and the connection stays usable", () => {
  test("an unknown command type answers EINVAL", async () => {
    await misbehave({}, async () => {
      const c = await connect();
      await expectRejected(c, { type: 99, offset: 0, length: 512 }, ERR.EINVAL);
    });
  });

  test("a READ starting at the end, or straddling it, answers EINVAL with no data", async () => {
    await misbehave({ read: 2 }, async () => {
      const c = await connect();
      await expectRejected(c, { type: CMD.READ, offset: DISK_SIZE, length: 512 }, ERR.EINVAL);
      await expectRejected(c, { type: CMD.READ, offset: DISK_SIZE - 512, length: 1024 }, ERR.EINVAL);
    });
  });

  test("a WRITE past the end answers ENOSPC, its payload is consumed and nothing inside the device changes", async () => {
    await misbehave({ write: 2 }, async () => {
      const c = await connect();
      await expectRejected(c, { type: CMD.WRITE, offset: DISK_SIZE, data: pattern(4096, 1) }, ERR.ENOSPC);
      await expectRejected(c, { type: CMD.WRITE, offset: DISK_SIZE - 512, data: pattern(1024, 2) }, ERR.ENOSPC);
      expect((await c.read(DISK_SIZE - 512, 512)).every((x) => x === 0)).toBe(true);
    });
  });

  test("a READ over the 64 MiB maximum answers EINVAL, while exactly the maximum is served", async () => {
    await misbehave({ read: 1 }, async () => {
      const c = await connect();
      await expectRejected(c, { type: CMD.READ, offset: 0, length: MAX_REQUEST + 1 }, ERR.EINVAL);
      expect(await c.read(0, MAX_REQUEST)).toHaveLength(MAX_REQUEST);
    });
  });

  test("a WRITE over the maximum answers EINVAL after its whole payload, which is not written", async () => {
    await misbehave({ write: 1 }, async () => {
      const c = await connect();
      const offset = 44 * MiB;
      await expectRejected(c, { type: CMD.WRITE, offset, data: pattern(MAX_REQUEST + 1, 3) }, ERR.EINVAL);
      expect((await c.read(offset, 4096)).every((x) => x === 0)).toBe(true);
    });
  });

  test("zero-length READ and WRITE answer EINVAL", async () => {
    await misbehave({ read: 1, write: 1 }, async () => {
      const c = await connect();
      await expectRejected(c, { type: CMD.READ, offset: 0, length: 0 }, ERR.EINVAL);
      await expectRejected(c, { type: CMD.WRITE, offset: 0, length: 0 }, ERR.EINVAL);
    });
  });

  test("flags a command does not take answer EINVAL (REQ_ONE or DF on READ, NO_HOLE or FAST_ZERO on WRITE)", async () => {
    await misbehave({ read: 2, write: 2 }, async () => {
      const c = await connect();
      await expectRejected(c, { type: CMD.READ, flags: FLAG.REQ_ONE, offset: 0, length: 512 }, ERR.EINVAL);
      // DF is only valid once structured replies are negotiated.
      await expectRejected(c, { type: CMD.READ, flags: FLAG.DF, offset: 0, length: 512 }, ERR.EINVAL);
      const offset = 46 * MiB;
      await expectRejected(c, { type: CMD.WRITE, flags: FLAG.NO_HOLE, offset, data: pattern(4096, 4) }, ERR.EINVAL);
      await expectRejected(c, { type: CMD.WRITE, flags: FLAG.FAST_ZERO, offset, data: pattern(4096, 5) }, ERR.EINVAL);
      expect((await c.read(offset, 4096)).every((x) => x === 0)).toBe(true);
    });
  });

  test("FAST_ZERO is refused with EINVAL where it is not advertised, and served where it is", async () => {
    await misbehave({}, async () => {
      const slow = await connect({ exportName: "plain" });
      expect(slow.details.flags & TF.SEND_FAST_ZERO).toBe(0);
      expect(slow.details.flags & TF.SEND_WRITE_ZEROES).toBe(TF.SEND_WRITE_ZEROES);
      await slow.write(0, pattern(8192, 6));
      await expectRejected(slow, { type: CMD.WRITE_ZEROES, flags: FLAG.FAST_ZERO, offset: 0, length: 8192 }, ERR.EINVAL);
      expect(await slow.read(0, 8192)).toEqual(pattern(8192, 6));
      // Without the flag, the engine emulates zeroing with writes.
      expect((await slow.request({ type: CMD.WRITE_ZEROES, offset: 0, length: 8192 })).error).toBe(0);
      expect((await slow.read(0, 8192)).every((x) => x === 0)).toBe(true);

      const fast = await connect();
      expect(fast.details.flags & TF.SEND_FAST_ZERO).toBe(TF.SEND_FAST_ZERO);
      expect((await fast.request({ type: CMD.WRITE_ZEROES, flags: FLAG.FAST_ZERO, offset: 0, length: 8192 })).error).toBe(0);
    });
  });

  test("offsets near 2^64 answer an error without harming the server (READ, TRIM: EINVAL; WRITE: ENOSPC)", async () => {
    await misbehave({ read: 2, write: 1, trim: 1, write_zeroes: 1 }, async () => {
      const c = await connect();
      await expectRejected(c, { type: CMD.READ, offset: TWO_64 - 512n, length: 512 }, ERR.EINVAL);
      // offset + length wraps past 2^64 here.
      await expectRejected(c, { type: CMD.READ, offset: TWO_64 - 1n, length: 2 }, ERR.EINVAL);
      await expectRejected(c, { type: CMD.WRITE, offset: TWO_64 - 4096n, data: pattern(4096, 7) }, ERR.ENOSPC);
      await expectRejected(c, { type: CMD.TRIM, offset: TWO_64 - 4096n, length: 4096 }, ERR.EINVAL);
      await expectRejected(c, { type: CMD.WRITE_ZEROES, offset: 1n << 53n, length: 4096 }, ERR.ENOSPC);
    });
  });

  test("a read-only export refuses WRITE and TRIM with EPERM and consumes the payload", async () => {
    const c = await connect({ exportName: "ro" });
    expect(c.details.flags & TF.READ_ONLY).toBe(TF.READ_ONLY);
    await expectRejected(c, { type: CMD.WRITE, offset: 0, data: pattern(4096, 8) }, ERR.EPERM);
    await expectRejected(c, { type: CMD.TRIM, offset: 0, length: 4096 }, ERR.EPERM);
    expect((await c.read(0, 4096)).every((x) => x === 0)).toBe(true);
  });

  test("bad and good requests pipelined in one packet each get their own answer", async () => {
    await misbehave({ read: 2, write: 1 }, async () => {
      const c = await connect();
      const good = pattern(2048, 10);
      const handles = c.send(
        { type: CMD.WRITE, offset: 48 * MiB, data: good },
        { type: CMD.READ, offset: DISK_SIZE, length: 512 },
        { type: CMD.WRITE, offset: DISK_SIZE, data: pattern(4096, 11) },
        { type: 42, offset: 0, length: 1 },
        { type: CMD.READ, flags: FLAG.REQ_ONE, offset: 0, length: 512 },
        { type: CMD.FLUSH },
      );
      const got = await c.collect(handles);
      expect(handles.map((h) => got.get(h)![0]!.error)).toEqual([0, ERR.EINVAL, ERR.ENOSPC, ERR.EINVAL, ERR.EINVAL, 0]);
      expect(await c.read(48 * MiB, 2048)).toEqual(good);
    });
  });
});

describe("with structured replies", () => {
  test("a failed READ is answered with an NBD_REPLY_TYPE_ERROR chunk, never a simple reply", async () => {
    await misbehave({ read: 2 }, async () => {
      const c = await connect({ structured: true });
      for (const cmd of [
        { type: CMD.READ, offset: DISK_SIZE - 100, length: 512 },
        { type: CMD.READ, flags: FLAG.REQ_ONE, offset: 0, length: 512 },
      ]) {
        const [h] = c.send(cmd);
        const chunks = (await c.collect([h!])).get(h!)!;
        expect(chunks).toHaveLength(1);
        const r = chunks[0]!;
        expect(r.structured).toBe(true);
        expect(r.chunkType).toBe(CHUNK.ERROR);
        expect(r.chunkFlags! & CHUNK_FLAG_DONE).toBe(CHUNK_FLAG_DONE);
        expect(r.error).toBe(ERR.EINVAL);
        expect(r.handle).toBe(h!);
      }
      const ok = await c.request({ type: CMD.READ, offset: 0, length: 512 });
      expect(ok.chunkType).toBe(CHUNK.OFFSET_DATA);
    });
  });

  test("BLOCK_STATUS at an offset near 2^64 answers EINVAL", async () => {
    await misbehave({ block_status: 1 }, async () => {
      const c = await connect({ baseAllocation: true });
      const r = await c.request({ type: CMD.BLOCK_STATUS, offset: TWO_64 - 4096n, length: 4096 });
      expect(r.error).toBe(ERR.EINVAL);
      expect((await c.request({ type: CMD.BLOCK_STATUS, offset: 0, length: 4096 })).error).toBe(0);
    });
  });
});

describe("the server afterwards", () => {
  test("has answered every request it counted, and stop() completes and closes the survivors", async () => {
    await witnessRoundTrip();
    const snap = s.metrics.snapshot();
    expect(snap.inFlight).toBe(0);
    expect(expectedTotals.read).toBeGreaterThan(0);
    for (const [name, errors] of Object.entries(expectedTotals)) expect({ [name]: snap.totals[name]!.errors }).toEqual({ [name]: errors });
    const stopped = await Promise.race([s.server.stop().then(() => "stopped"), Bun.sleep(5000).then(() => "hung")]);
    expect(stopped).toBe("stopped");
    await witness.raw.waitClosed();
    expect(s.server.connectionCount).toBe(0);
    expect(s.metrics.snapshot().connections).toBe(0);
  });
});
