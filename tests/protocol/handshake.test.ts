/**
 * The newstyle handshake as a raw client sees it: greeting, client flags, every option the server answers, the
 * ways a negotiation may end (EXPORT_NAME, GO, ABORT, a hang-up), and the edges: clients without fixed newstyle,
 * oversized options, names that are not UTF-8 or longer than NBD allows.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createMemDevice } from "../../src/devices/mem/index.ts";
import { DISK_SIZE, MiB, type TestServer, startServer } from "./harness.ts";
import {
  CMD,
  IHAVEOPT,
  INFO,
  NBDMAGIC,
  Nbd,
  OPT,
  OPTION_REPLY_MAGIC,
  REP,
  RawClient,
  SIMPLE_REPLY_MAGIC,
  TF,
  encodeRequest,
  exportDetails,
  infoData,
  metaContextData,
  option,
  pattern,
  readGreeting,
  readOptionReplies,
  startHandshake,
  u32,
} from "./raw-client.ts";

const ADVERTISED =
  TF.HAS_FLAGS | TF.SEND_FLUSH | TF.SEND_FUA | TF.SEND_TRIM | TF.SEND_WRITE_ZEROES | TF.CAN_MULTI_CONN | TF.SEND_CACHE | TF.SEND_FAST_ZERO;

let s: TestServer;
const open: RawClient[] = [];

async function client(clientFlags?: number): Promise<RawClient> {
  const c = await startHandshake(s.path, clientFlags);
  open.push(c);
  return c;
}

/** After the handshake: a READ of 512 bytes at 0 must come back as a well-formed simple reply. */
async function expectTransmissionWorks(c: RawClient): Promise<void> {
  c.send(encodeRequest({ type: CMD.READ, offset: 0, length: 512 }, 7n));
  const reply = await c.read(16 + 512);
  expect(reply.readUInt32BE(0)).toBe(SIMPLE_REPLY_MAGIC);
  expect(reply.readUInt32BE(4)).toBe(0);
  expect(reply.readBigUInt64BE(8)).toBe(7n);
}

beforeAll(async () => {
  s = await startServer({ extra: [{ name: "spare", device: createMemDevice({ size: 1 * MiB }) }] });
});

afterAll(async () => {
  for (const c of open) c.close();
  await s.cleanup();
});

describe("greeting", () => {
  test("the server opens with NBDMAGIC, IHAVEOPT and the FIXED_NEWSTYLE|NO_ZEROES handshake flags", async () => {
    const c = await RawClient.connect(s.path);
    open.push(c);
    const g = await readGreeting(c);
    expect(g.magic).toBe(NBDMAGIC);
    expect(g.ihaveopt).toBe(IHAVEOPT);
    expect(g.flags).toBe(0b11);
    expect(await c.quietFor(20)).toBe(0);
  });

  test("a client without the fixed-newstyle flag is served as nbdkit serves it: EXPORT_NAME works, other options get ERR_INVALID", async () => {
    const c = await client(0);
    c.send(option(OPT.LIST));
    expect((await readOptionReplies(c)).map((r) => [r.option, r.type])).toEqual([[OPT.LIST, REP.ERR_INVALID]]);
    c.send(option(OPT.EXPORT_NAME, Buffer.from("disk")));
    const b = await c.read(134);
    expect(Number(b.readBigUInt64BE(0))).toBe(DISK_SIZE);
    await expectTransmissionWorks(c);
  });

  test("a client that sets unknown client flags is disconnected", async () => {
    const c = await client(0b11 | (1 << 7));
    await c.waitClosed();
    expect(c.buffered).toBe(0);
  });
});

describe("NBD_OPT_EXPORT_NAME", () => {
  test("with NO_ZEROES the answer is exactly 10 bytes (size, flags) and transmission starts right after", async () => {
    const c = await client(0b11);
    c.send(option(OPT.EXPORT_NAME, Buffer.from("disk")));
    const b = await c.read(10);
    expect(Number(b.readBigUInt64BE(0))).toBe(DISK_SIZE);
    expect(b.readUInt16BE(8) & ADVERTISED).toBe(ADVERTISED);
    // Were 124 zeros following, the reply below would not start with the simple reply magic.
    await expectTransmissionWorks(c);
  });

  test("without NO_ZEROES the answer is 134 bytes: size, flags and 124 zero bytes", async () => {
    const c = await client(0b01);
    c.send(option(OPT.EXPORT_NAME, Buffer.from("disk")));
    const b = await c.read(134);
    expect(Number(b.readBigUInt64BE(0))).toBe(DISK_SIZE);
    expect(b.readUInt16BE(8) & TF.HAS_FLAGS).toBe(TF.HAS_FLAGS);
    expect(b.subarray(10).every((x) => x === 0)).toBe(true);
    await expectTransmissionWorks(c);
  });

  test("the empty name selects the default (first) export", async () => {
    const c = await client();
    c.send(option(OPT.EXPORT_NAME));
    const b = await c.read(10);
    expect(Number(b.readBigUInt64BE(0))).toBe(DISK_SIZE);
  });

  test("an unknown export name makes the server close the connection without an answer", async () => {
    const c = await client();
    c.send(option(OPT.EXPORT_NAME, Buffer.from("no-such-export")));
    await c.waitClosed();
    expect(c.buffered).toBe(0);
  });

  test.each([
    ["not UTF-8", Buffer.from([0x64, 0xff, 0xfe, 0x6b])],
    ["longer than NBD's 4096-byte limit", Buffer.alloc(4097, 0x61)],
  ])("a name that is %s closes the connection within 1 s with no option reply (EXPORT_NAME has none)", async (_what, name) => {
    const c = await client();
    c.send(option(OPT.EXPORT_NAME, name));
    await c.waitClosed(1000);
    expect(c.buffered).toBe(0);
  });
});

describe("oversized options", () => {
  test("an option over 64 KiB is skipped as it arrives and answered ERR_TOO_BIG; the negotiation goes on", async () => {
    const c = await client();
    c.send(option(99, Buffer.alloc(3 * MiB + 5, 0x33)));
    expect((await readOptionReplies(c, 5000)).map((r) => [r.option, r.type])).toEqual([[99, REP.ERR_TOO_BIG]]);
    c.send(option(OPT.GO, infoData("disk")));
    expect((await readOptionReplies(c)).pop()!.type).toBe(REP.ACK);
    await expectTransmissionWorks(c);
  });

  test("an EXPORT_NAME over 64 KiB, or any option claiming more than 64 MiB, closes the connection", async () => {
    const big = await client();
    big.send(option(OPT.EXPORT_NAME, Buffer.alloc(70 * 1024, 0x61)));
    await big.waitClosed(1000);
    expect(big.buffered).toBe(0);
    const absurd = await client();
    const header = option(OPT.INFO);
    header.writeUInt32BE(0xffffffff, 12);
    absurd.send(header);
    await absurd.waitClosed(1000);
    expect(absurd.buffered).toBe(0);
  });

  test("INFO naming an export longer than 4096 bytes answers ERR_INVALID and the negotiation goes on", async () => {
    const c = await client();
    c.send(option(OPT.INFO, infoData("x".repeat(4097))));
    expect((await readOptionReplies(c)).map((r) => r.type)).toEqual([REP.ERR_INVALID]);
    c.send(option(OPT.GO, infoData("disk")));
    expect((await readOptionReplies(c)).pop()!.type).toBe(REP.ACK);
  });
});

describe("NBD_OPT_LIST", () => {
  test("lists every export by name in SERVER replies, then ACKs", async () => {
    const c = await client();
    c.send(option(OPT.LIST));
    const replies = await readOptionReplies(c);
    for (const r of replies) {
      expect(r.magic).toBe(OPTION_REPLY_MAGIC);
      expect(r.option).toBe(OPT.LIST);
    }
    expect(replies.map((r) => r.type)).toEqual([REP.SERVER, REP.SERVER, REP.ACK]);
    const names = replies.slice(0, 2).map((r) => r.data.subarray(4, 4 + r.data.readUInt32BE(0)).toString());
    expect(names.sort()).toEqual(["disk", "spare"]);
  });
});

describe("NBD_OPT_INFO and NBD_OPT_GO", () => {
  test("INFO answers NBD_INFO_EXPORT (size and every advertised flag) and BLOCK_SIZE, and negotiation goes on", async () => {
    const c = await client();
    c.send(option(OPT.INFO, infoData("disk", [INFO.BLOCK_SIZE])));
    const replies = await readOptionReplies(c);
    expect(replies[replies.length - 1]!.type).toBe(REP.ACK);
    expect(replies.every((r) => r.option === OPT.INFO)).toBe(true);
    const d = exportDetails(replies);
    expect(d.size).toBe(DISK_SIZE);
    expect(d.flags & ADVERTISED).toBe(ADVERTISED);
    expect(d.flags & TF.READ_ONLY).toBe(0);
    expect(d.blockSizes).toEqual({ minimum: 1, preferred: 4096, maximum: 64 * MiB });
    // INFO does not end the handshake: another option is still answered.
    c.send(option(OPT.LIST));
    expect((await readOptionReplies(c)).pop()!.type).toBe(REP.ACK);
  });

  test("INFO on another export reports that export's size", async () => {
    const c = await client();
    c.send(option(OPT.INFO, infoData("spare")));
    expect(exportDetails(await readOptionReplies(c)).size).toBe(1 * MiB);
  });

  test("GO answers like INFO and then serves the export", async () => {
    const c = await client();
    c.send(option(OPT.GO, infoData("disk", [INFO.BLOCK_SIZE])));
    const replies = await readOptionReplies(c);
    expect(replies[replies.length - 1]!.type).toBe(REP.ACK);
    const d = exportDetails(replies);
    expect(d.size).toBe(DISK_SIZE);
    expect(d.flags & ADVERTISED).toBe(ADVERTISED);
    expect(d.blockSizes?.maximum).toBe(64 * MiB);
    await expectTransmissionWorks(c);
  });

  test("INFO and GO for an unknown export answer ERR_UNKNOWN and the negotiation continues", async () => {
    const c = await client();
    c.send(option(OPT.INFO, infoData("nope")));
    expect((await readOptionReplies(c)).map((r) => r.type)).toEqual([REP.ERR_UNKNOWN]);
    c.send(option(OPT.GO, infoData("nope")));
    expect((await readOptionReplies(c)).map((r) => r.type)).toEqual([REP.ERR_UNKNOWN]);
    c.send(option(OPT.GO, infoData("disk")));
    expect((await readOptionReplies(c)).pop()!.type).toBe(REP.ACK);
    await expectTransmissionWorks(c);
  });

  test("a truncated INFO (name longer than the data) answers ERR_INVALID and the connection still works", async () => {
    const c = await client();
    const truncated = Buffer.concat([u32(10), Buffer.from("dis")]);
    c.send(option(OPT.INFO, truncated));
    const [reply, ...more] = await readOptionReplies(c);
    expect(more).toEqual([]);
    expect(reply!.option).toBe(OPT.INFO);
    expect(reply!.type).toBe(REP.ERR_INVALID);
    c.send(option(OPT.GO, infoData("disk")));
    expect((await readOptionReplies(c)).pop()!.type).toBe(REP.ACK);
    await expectTransmissionWorks(c);
  });

  test("INFO with trailing bytes after the information requests answers ERR_INVALID", async () => {
    const c = await client();
    c.send(option(OPT.INFO, Buffer.concat([infoData("disk"), Buffer.from([1])])));
    expect((await readOptionReplies(c)).map((r) => r.type)).toEqual([REP.ERR_INVALID]);
  });

  test("options split across many small packets are answered", async () => {
    const c = await client();
    const bytes = Buffer.concat([option(OPT.LIST), option(OPT.GO, infoData("disk"))]);
    for (const [from, to] of [[0, 3], [3, 15], [15, 16], [16, 30], [30, bytes.length]] as const) {
      c.send(bytes.subarray(from, to));
      await Bun.sleep(3);
    }
    expect((await readOptionReplies(c)).map((r) => r.type)).toEqual([REP.SERVER, REP.SERVER, REP.ACK]);
    expect((await readOptionReplies(c)).pop()!.type).toBe(REP.ACK);
    await expectTransmissionWorks(c);
  });

  test("a first request sent in the same packet as GO is served", async () => {
    const c = await client();
    const data = pattern(4096, 1);
    c.send(
      option(OPT.GO, infoData("disk")),
      encodeRequest({ type: CMD.WRITE, offset: 8 * MiB + 3, data }, 1n),
      encodeRequest({ type: CMD.READ, offset: 8 * MiB + 3, length: 4096 }, 2n),
    );
    const replies = await readOptionReplies(c);
    const nbd = new Nbd(c, exportDetails(replies), false, undefined);
    // Encode a READ only to teach the client the length of handle 2; nothing is sent.
    nbd.encode([{ type: CMD.READ, length: 4096, handle: 2n }]);
    const got = await nbd.collect([1n, 2n]);
    expect(got.get(1n)![0]!.error).toBe(0);
    expect(got.get(2n)![0]!.data).toEqual(data);
  });
});

describe("options the server does not implement", () => {
  test.each([
    ["an unknown option (99)", 99],
    ["STARTTLS", OPT.STARTTLS],
  ])("%s answers ERR_UNSUP and the negotiation continues", async (_name, opt) => {
    const c = await client();
    c.send(option(opt, Buffer.from("some option data")));
    const replies = await readOptionReplies(c);
    expect(replies.map((r) => [r.option, r.type])).toEqual([[opt, REP.ERR_UNSUP]]);
    c.send(option(OPT.GO, infoData("disk")));
    expect((await readOptionReplies(c)).pop()!.type).toBe(REP.ACK);
    await expectTransmissionWorks(c);
  });

  test("an option without the IHAVEOPT magic makes the server close the connection", async () => {
    const c = await client();
    const bad = option(OPT.LIST);
    bad.writeBigUInt64BE(0x1234n, 0);
    c.send(bad);
    await c.waitClosed();
    expect(c.buffered).toBe(0);
  });
});

describe("NBD_OPT_ABORT", () => {
  test("is acknowledged and the server closes the connection", async () => {
    const c = await client();
    c.send(option(OPT.ABORT));
    const replies = await readOptionReplies(c);
    expect(replies.map((r) => [r.option, r.type])).toEqual([[OPT.ABORT, REP.ACK]]);
    await c.waitClosed();
  });
});

describe("NBD_OPT_STRUCTURED_REPLY", () => {
  test("is acknowledged, and GO then advertises SEND_DF", async () => {
    const c = await client();
    c.send(option(OPT.STRUCTURED_REPLY));
    expect((await readOptionReplies(c)).map((r) => [r.option, r.type])).toEqual([[OPT.STRUCTURED_REPLY, REP.ACK]]);
    c.send(option(OPT.GO, infoData("disk")));
    const d = exportDetails(await readOptionReplies(c));
    expect(d.flags & TF.SEND_DF).toBe(TF.SEND_DF);
  });

  test("with data is refused with ERR_INVALID", async () => {
    const c = await client();
    c.send(option(OPT.STRUCTURED_REPLY, Buffer.from([0])));
    expect((await readOptionReplies(c)).map((r) => r.type)).toEqual([REP.ERR_INVALID]);
  });
});

describe("meta contexts", () => {
  test("LIST_META_CONTEXT lists base:allocation", async () => {
    const c = await client();
    c.send(option(OPT.STRUCTURED_REPLY));
    await readOptionReplies(c);
    c.send(option(OPT.LIST_META_CONTEXT, metaContextData("disk", [])));
    const replies = await readOptionReplies(c);
    expect(replies.map((r) => r.type)).toEqual([REP.META_CONTEXT, REP.ACK]);
    expect(replies[0]!.data.subarray(4).toString()).toBe("base:allocation");
  });

  test("SET_META_CONTEXT before STRUCTURED_REPLY is refused with an error", async () => {
    const c = await client();
    c.send(option(OPT.SET_META_CONTEXT, metaContextData("disk", ["base:allocation"])));
    const replies = await readOptionReplies(c);
    expect(replies).toHaveLength(1);
    expect(replies[0]!.type).toBe(REP.ERR_INVALID);
  });

  test("SET_META_CONTEXT after STRUCTURED_REPLY selects base:allocation with a context id", async () => {
    const c = await client();
    c.send(option(OPT.STRUCTURED_REPLY));
    await readOptionReplies(c);
    c.send(option(OPT.SET_META_CONTEXT, metaContextData("disk", ["base:allocation"])));
    const replies = await readOptionReplies(c);
    expect(replies.map((r) => [r.option, r.type])).toEqual([
      [OPT.SET_META_CONTEXT, REP.META_CONTEXT],
      [OPT.SET_META_CONTEXT, REP.ACK],
    ]);
    expect(replies[0]!.data.subarray(4).toString()).toBe("base:allocation");
    // The id (first 4 bytes) is what BLOCK_STATUS replies carry; transmission.test.ts checks that they do.
  });

  test("SET_META_CONTEXT with an unknown context selects nothing but still ACKs", async () => {
    const c = await client();
    c.send(option(OPT.STRUCTURED_REPLY));
    await readOptionReplies(c);
    c.send(option(OPT.SET_META_CONTEXT, metaContextData("disk", ["qemu:dirty-bitmap:x"])));
    expect((await readOptionReplies(c)).map((r) => r.type)).toEqual([REP.ACK]);
  });
});
