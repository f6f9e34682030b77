/**
 * NBD_OPT_STARTTLS in the handshake state machine, fed bytes as a client sends them: which options are refused
 * before TLS when it is required (the spec's FORCEDTLS: everything but STARTTLS and ABORT gets ERR_TLS_REQD, and
 * EXPORT_NAME, which has no reply, closes), the ACK that hands the connection to TLS, the haggling that starts over
 * inside TLS with nothing carried over, and a second STARTTLS refused. The TLS itself is proven by real clients
 * (tests/clients/tls.test.ts).
 */
import { describe, expect, test } from "bun:test";
import { type ExportInfo, Handshake, type Negotiated, type TlsMode } from "../../src/engine/protocol/handshake.ts";
import { OPT, REP, infoData, option, u32 } from "./raw-client.ts";

const DISK: ExportInfo = { name: "disk", description: "", size: 1 << 20, blockSize: 4096, readOnly: false, trim: true, fastZero: true, multiConn: true };

interface Run {
  readonly handshake: Handshake;
  /** [option, reply type] of every option reply sent after the greeting. */
  replies(): Array<[number, number]>;
  readonly early: Uint8Array[];
  closed: string | undefined | null;
  done: Negotiated | undefined;
}

function start(tls: TlsMode, clientFlags = 0b11): Run {
  const sent: Buffer[] = [];
  const run: Run = {
    handshake: undefined as unknown as Handshake,
    replies() {
      const all = Buffer.concat(sent.slice(1));
      const out: Array<[number, number]> = [];
      for (let at = 0; at + 20 <= all.length; at += 20 + all.readUInt32BE(at + 16)) out.push([all.readUInt32BE(at + 8), all.readUInt32BE(at + 12)]);
      return out;
    },
    early: [],
    closed: null,
    done: undefined,
  };
  const handshake = new Handshake({
    findExport: (name) => (name === "" || name === "disk" ? DISK : undefined),
    listExports: () => [DISK],
    maxRequest: 32 << 20,
    send: (bytes) => void sent.push(Buffer.from(bytes)),
    mayContinue: () => true,
    close: (reason) => {
      run.closed = reason;
    },
    done: (result) => {
      run.done = result;
    },
    tls,
    startTls: (early) => void run.early.push(early),
  });
  (run as { handshake: Handshake }).handshake = handshake;
  handshake.start();
  handshake.receive(u32(clientFlags));
  return run;
}

describe("STARTTLS when TLS is required", () => {
  test("every option but STARTTLS and ABORT is answered ERR_TLS_REQD, and no export is told", () => {
    const r = start("require");
    for (const opt of [OPT.LIST, OPT.INFO, OPT.GO, OPT.STRUCTURED_REPLY, OPT.LIST_META_CONTEXT, 99]) {
      r.handshake.receive(option(opt, opt === OPT.INFO || opt === OPT.GO ? infoData("disk") : undefined));
    }
    expect(r.replies()).toEqual([OPT.LIST, OPT.INFO, OPT.GO, OPT.STRUCTURED_REPLY, OPT.LIST_META_CONTEXT, 99].map((o) => [o, REP_TLS_REQD]));
    expect(r.done).toBeUndefined();
    expect(r.closed).toBeNull();
  });

  test("EXPORT_NAME before STARTTLS closes the connection (it has no error reply)", () => {
    const r = start("require");
    r.handshake.receive(option(OPT.EXPORT_NAME, Buffer.from("disk")));
    expect(r.closed).toContain("TLS is required");
    expect(r.done).toBeUndefined();
  });

  test("ABORT is still answered ACK", () => {
    const r = start("require");
    r.handshake.receive(option(OPT.ABORT));
    expect(r.replies()).toEqual([[OPT.ABORT, REP.ACK]]);
  });

  test("STARTTLS with data is ERR_INVALID; without, ACK, and nothing more is read until TLS is up", () => {
    const r = start("require");
    r.handshake.receive(option(OPT.STARTTLS, Buffer.from("x")));
    const hello = Buffer.from([0x16, 0x03, 0x01]);
    r.handshake.receive(Buffer.concat([option(OPT.STARTTLS), hello]));
    expect(r.replies()).toEqual([
      [OPT.STARTTLS, REP.ERR_INVALID],
      [OPT.STARTTLS, REP.ACK],
    ]);
    // Bytes after the option belong to TLS: handed over, not parsed as options.
    expect(r.early.map((b) => Buffer.from(b))).toEqual([hello]);
  });

  test("inside TLS the haggling starts over: options are served, earlier settings forgotten, a second STARTTLS refused", () => {
    const r = start("on");
    r.handshake.receive(option(OPT.STRUCTURED_REPLY));
    r.handshake.receive(option(OPT.STARTTLS));
    r.handshake.restartInTls();
    r.handshake.receive(option(OPT.STARTTLS));
    r.handshake.receive(option(OPT.LIST));
    r.handshake.receive(option(OPT.GO, infoData("disk")));
    expect(r.replies().slice(0, 3)).toEqual([
      [OPT.STRUCTURED_REPLY, REP.ACK],
      [OPT.STARTTLS, REP.ACK],
      [OPT.STARTTLS, REP.ERR_INVALID],
    ]);
    expect(r.done?.exportName).toBe("disk");
    expect(r.done?.structuredReplies).toBe(false);
  });
});

describe("STARTTLS when TLS is offered or off", () => {
  test("with --tls on a plain-text client is served without TLS", () => {
    const r = start("on");
    r.handshake.receive(option(OPT.GO, infoData("disk")));
    expect(r.done?.exportName).toBe("disk");
  });

  test("with TLS off STARTTLS is ERR_UNSUP and the negotiation goes on", () => {
    const r = start("off");
    r.handshake.receive(option(OPT.STARTTLS));
    r.handshake.receive(option(OPT.GO, infoData("disk")));
    expect(r.replies()[0]).toEqual([OPT.STARTTLS, REP.ERR_UNSUP]);
    expect(r.done?.exportName).toBe("disk");
  });

  test("a client without fixed newstyle cannot start TLS, and under require is closed", () => {
    const r = start("require", 0);
    r.handshake.receive(option(OPT.EXPORT_NAME, Buffer.from("disk")));
    expect(r.closed).toContain("TLS is required");
  });
});

const REP_TLS_REQD = 0x80000005;
