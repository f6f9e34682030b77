/**
 * The fixed newstyle NBD handshake as a byte-driven state machine: feed it what the client sends, it writes
 * replies through a callback and, once the client picks an export (EXPORT_NAME or GO), reports the negotiated
 * result with any bytes that already belong to the transmission phase.
 */
import {
  BASE_ALLOCATION,
  BASE_ALLOCATION_ID,
  CLIENT_FLAG_FIXED_NEWSTYLE,
  CLIENT_FLAG_NO_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  IHAVEOPT,
  INFO,
  MAX_OPTION_SIZE,
  MAX_REQUEST_SIZE,
  NBDMAGIC,
  OPT,
  OPTION_REPLY_MAGIC,
  REP,
  TFLAG_CAN_MULTI_CONN,
  TFLAG_HAS_FLAGS,
  TFLAG_READ_ONLY,
  TFLAG_SEND_CACHE,
  TFLAG_SEND_DF,
  TFLAG_SEND_FAST_ZERO,
  TFLAG_SEND_FLUSH,
  TFLAG_SEND_FUA,
  TFLAG_SEND_TRIM,
  TFLAG_SEND_WRITE_ZEROES,
} from "./constants.ts";

/** What the handshake needs to know about one export. */
export interface ExportInfo {
  readonly name: string;
  readonly description: string;
  readonly size: number;
  readonly blockSize: number;
  readonly readOnly: boolean;
  readonly trim: boolean;
  readonly fastZero: boolean;
  readonly multiConn: boolean;
}

/** The outcome of a successful handshake. */
export interface Negotiated {
  readonly exportName: string;
  readonly structuredReplies: boolean;
  /** Whether base:allocation was selected with SET_META_CONTEXT (enables BLOCK_STATUS). */
  readonly baseAllocation: boolean;
  readonly transmissionFlags: number;
  /** Bytes received after the handshake ended: the start of the first request. */
  readonly rest: Uint8Array;
}

export interface HandshakeHooks {
  /** Looks up an export; "" means the default export. */
  findExport(name: string): ExportInfo | undefined;
  listExports(): readonly ExportInfo[];
  send(bytes: Uint8Array): void;
  /** The client asked to abort, or broke the protocol in a way that requires closing. */
  close(reason: string | undefined): void;
  done(result: Negotiated): void;
}

export function transmissionFlags(info: ExportInfo, structuredReplies: boolean): number {
  let flags = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_FUA | TFLAG_SEND_WRITE_ZEROES | TFLAG_SEND_CACHE;
  if (info.readOnly) flags |= TFLAG_READ_ONLY;
  if (info.trim) flags |= TFLAG_SEND_TRIM;
  if (info.fastZero) flags |= TFLAG_SEND_FAST_ZERO;
  if (info.multiConn) flags |= TFLAG_CAN_MULTI_CONN;
  if (structuredReplies) flags |= TFLAG_SEND_DF;
  return flags;
}

/** The server's greeting: magic, IHAVEOPT and the handshake flags. */
export function greeting(): Uint8Array {
  const out = Buffer.alloc(18);
  out.writeBigUInt64BE(NBDMAGIC, 0);
  out.writeBigUInt64BE(IHAVEOPT, 8);
  out.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
  return out;
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true });

function optionReply(option: number, type: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = Buffer.alloc(20 + data.length);
  out.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
  out.writeUInt32BE(option, 8);
  out.writeUInt32BE(type, 12);
  out.writeUInt32BE(data.length, 16);
  out.set(data, 20);
  return out;
}

function errorReply(option: number, type: number, message: string): Uint8Array {
  return optionReply(option, type, textEncoder.encode(message));
}

/** A 16-bit or 32-bit number followed by UTF-8 text: the shape of NBD_INFO_NAME/DESCRIPTION and of
 * NBD_REP_SERVER / NBD_REP_META_CONTEXT bodies. */
function numberThenText(bytesOfNumber: 2 | 4, value: number, text: string): Buffer {
  const encoded = textEncoder.encode(text);
  const body = Buffer.alloc(bytesOfNumber + encoded.length);
  if (bytesOfNumber === 2) body.writeUInt16BE(value, 0);
  else body.writeUInt32BE(value, 0);
  body.set(encoded, bytesOfNumber);
  return body;
}

/** Incoming option data with bounds-checked reads; a short read throws MalformedOption. */
class OptionReader {
  private pos = 0;
  constructor(private readonly data: Buffer) {}
  u16(): number {
    this.need(2);
    const v = this.data.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.data.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  string(length: number): string {
    this.need(length);
    const bytes = this.data.subarray(this.pos, this.pos + length);
    this.pos += length;
    try {
      return textDecoder.decode(bytes);
    } catch {
      throw new MalformedOption("a name is not valid UTF-8");
    }
  }
  get remaining(): number {
    return this.data.length - this.pos;
  }
  private need(n: number): void {
    if (this.pos + n > this.data.length) throw new MalformedOption("option data is shorter than its fields say");
  }
}

class MalformedOption extends Error {}

type Phase = "client-flags" | "options" | "done";

/** One connection's handshake. Call `start()` once, then `receive()` with every chunk until `done` fires. */
export class Handshake {
  private phase: Phase = "client-flags";
  private pending: Buffer = Buffer.alloc(0);
  private noZeroes = false;
  private structured = false;
  private baseAllocation = false;

  constructor(private readonly hooks: HandshakeHooks) {}

  start(): void {
    this.hooks.send(greeting());
  }

  receive(chunk: Uint8Array): void {
    if (this.phase === "done") return;
    this.pending = this.pending.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.pending, chunk]);
    // step() may end the handshake, which TypeScript's narrowing of `phase` cannot see.
    while (this.step() && !this.isDone()) {}
  }

  private isDone(): boolean {
    return this.phase === "done";
  }

  /** Consumes one unit (client flags or one option) if it is complete; returns false when more bytes are needed. */
  private step(): boolean {
    if (this.phase === "client-flags") {
      if (this.pending.length < 4) return false;
      const flags = this.pending.readUInt32BE(0);
      this.pending = this.pending.subarray(4);
      if ((flags & CLIENT_FLAG_FIXED_NEWSTYLE) === 0) {
        this.fail("client does not speak fixed newstyle negotiation");
        return false;
      }
      if ((flags & ~(CLIENT_FLAG_FIXED_NEWSTYLE | CLIENT_FLAG_NO_ZEROES)) !== 0) {
        this.fail(`client sent unknown handshake flags 0x${flags.toString(16)}`);
        return false;
      }
      this.noZeroes = (flags & CLIENT_FLAG_NO_ZEROES) !== 0;
      this.phase = "options";
      return true;
    }
    if (this.pending.length < 16) return false;
    if (this.pending.readBigUInt64BE(0) !== IHAVEOPT) {
      this.fail("option does not start with IHAVEOPT magic");
      return false;
    }
    const option = this.pending.readUInt32BE(8);
    const length = this.pending.readUInt32BE(12);
    if (length > MAX_OPTION_SIZE) {
      this.fail(`option ${option} carries ${length} bytes, more than the ${MAX_OPTION_SIZE} allowed`);
      return false;
    }
    if (this.pending.length < 16 + length) return false;
    const data = this.pending.subarray(16, 16 + length);
    this.pending = this.pending.subarray(16 + length);
    try {
      this.handleOption(option, data);
    } catch (error) {
      if (!(error instanceof MalformedOption)) throw error;
      this.hooks.send(errorReply(option, REP.ERR_INVALID, error.message));
    }
    return true;
  }

  private fail(reason: string): void {
    this.phase = "done";
    this.hooks.close(reason);
  }

  private handleOption(option: number, data: Buffer): void {
    const send = this.hooks.send;
    switch (option) {
      case OPT.EXPORT_NAME:
        return this.exportName(data);
      case OPT.ABORT:
        send(optionReply(option, REP.ACK));
        this.phase = "done";
        this.hooks.close(undefined);
        return;
      case OPT.LIST:
        if (data.length !== 0) return send(errorReply(option, REP.ERR_INVALID, "LIST takes no data"));
        for (const info of this.hooks.listExports()) {
          send(optionReply(option, REP.SERVER, numberThenText(4, textEncoder.encode(info.name).length, info.name)));
        }
        return send(optionReply(option, REP.ACK));
      case OPT.STRUCTURED_REPLY:
        if (data.length !== 0) return send(errorReply(option, REP.ERR_INVALID, "STRUCTURED_REPLY takes no data"));
        this.structured = true;
        return send(optionReply(option, REP.ACK));
      case OPT.INFO:
      case OPT.GO:
        return this.infoOrGo(option, data);
      case OPT.LIST_META_CONTEXT:
      case OPT.SET_META_CONTEXT:
        return this.metaContext(option, data);
      default:
        return send(errorReply(option, REP.ERR_UNSUP, `option ${option} is not supported by this server`));
    }
  }

  private exportName(data: Buffer): void {
    const name = new OptionReader(data).string(data.length);
    const info = this.hooks.findExport(name);
    if (info === undefined) {
      // EXPORT_NAME has no error reply: the protocol's only answer to an unknown name is closing.
      this.fail(`client asked for unknown export "${name}"`);
      return;
    }
    const flags = transmissionFlags(info, false);
    const out = Buffer.alloc(this.noZeroes ? 10 : 134);
    out.writeBigUInt64BE(BigInt(info.size), 0);
    out.writeUInt16BE(flags, 8);
    this.hooks.send(out);
    // Structured replies and meta contexts only take effect with GO; EXPORT_NAME clients get simple replies.
    this.finish(info.name, false, false, flags);
  }

  private infoOrGo(option: number, data: Buffer): void {
    const reader = new OptionReader(data);
    const name = reader.string(reader.u32());
    const count = reader.u16();
    const requests: number[] = [];
    for (let i = 0; i < count; i++) requests.push(reader.u16());
    if (reader.remaining !== 0) throw new MalformedOption("trailing bytes after the information requests");
    const info = this.hooks.findExport(name);
    if (info === undefined) {
      this.hooks.send(errorReply(option, REP.ERR_UNKNOWN, `no export named "${name}"`));
      return;
    }
    const flags = transmissionFlags(info, this.structured);
    const exportInfo = Buffer.alloc(12);
    exportInfo.writeUInt16BE(INFO.EXPORT, 0);
    exportInfo.writeBigUInt64BE(BigInt(info.size), 2);
    exportInfo.writeUInt16BE(flags, 10);
    this.hooks.send(optionReply(option, REP.INFO, exportInfo));
    if (requests.includes(INFO.NAME)) {
      this.hooks.send(optionReply(option, REP.INFO, numberThenText(2, INFO.NAME, info.name)));
    }
    if (requests.includes(INFO.DESCRIPTION) && info.description !== "") {
      this.hooks.send(optionReply(option, REP.INFO, numberThenText(2, INFO.DESCRIPTION, info.description)));
    }
    // Block sizes are always sent: any byte range works (minimum 1), and clients learn the preferred size.
    const sizes = Buffer.alloc(14);
    sizes.writeUInt16BE(INFO.BLOCK_SIZE, 0);
    sizes.writeUInt32BE(1, 2);
    sizes.writeUInt32BE(info.blockSize, 6);
    sizes.writeUInt32BE(MAX_REQUEST_SIZE, 10);
    this.hooks.send(optionReply(option, REP.INFO, sizes));
    this.hooks.send(optionReply(option, REP.ACK));
    if (option === OPT.GO) this.finish(info.name, this.structured, this.baseAllocation, flags);
  }

  private metaContext(option: number, data: Buffer): void {
    const reader = new OptionReader(data);
    const name = reader.string(reader.u32());
    const count = reader.u32();
    const queries: string[] = [];
    for (let i = 0; i < count; i++) queries.push(reader.string(reader.u32()));
    if (reader.remaining !== 0) throw new MalformedOption("trailing bytes after the meta context queries");
    const isSet = option === OPT.SET_META_CONTEXT;
    if (!this.structured) {
      this.hooks.send(errorReply(option, REP.ERR_INVALID, "meta contexts need structured replies first"));
      return;
    }
    if (this.hooks.findExport(name) === undefined) {
      this.hooks.send(errorReply(option, REP.ERR_UNKNOWN, `no export named "${name}"`));
      return;
    }
    // LIST with no queries, or a "base:" query, lists every context in the namespace; SET needs exact names.
    const matches = isSet
      ? queries.includes(BASE_ALLOCATION)
      : count === 0 || queries.some((q) => q === BASE_ALLOCATION || q === "base:");
    if (isSet) this.baseAllocation = matches;
    if (matches) {
      const body = numberThenText(4, isSet ? BASE_ALLOCATION_ID : 0, BASE_ALLOCATION);
      this.hooks.send(optionReply(option, REP.META_CONTEXT, body));
    }
    this.hooks.send(optionReply(option, REP.ACK));
  }

  private finish(exportName: string, structuredReplies: boolean, baseAllocation: boolean, flags: number): void {
    this.phase = "done";
    const rest = this.pending;
    this.pending = Buffer.alloc(0);
    this.hooks.done({ exportName, structuredReplies, baseAllocation, transmissionFlags: flags, rest });
  }
}
