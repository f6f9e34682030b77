/**
 * The newstyle NBD handshake as a byte-driven state machine: feed it what the client sends, it writes replies
 * through a callback and, once the client picks an export (EXPORT_NAME or GO), reports the negotiated result with
 * any bytes that already belong to the transmission phase. Fixed newstyle is what every current client speaks;
 * a client without the fixed flag is served as nbdkit serves it (EXPORT_NAME only, other options refused).
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
import { MalformedOption, OptionReader, errorReply, numberThenText, optionReply, textEncoder } from "./option-codec.ts";

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

/** Whether the handshake offers TLS: "off" answers STARTTLS as unsupported, "on" offers it, "require" insists on it. */
export type TlsMode = "off" | "on" | "require";

export interface HandshakeHooks {
  /** Looks up an export; "" means the default export. */
  findExport(name: string): ExportInfo | undefined;
  listExports(): readonly ExportInfo[];
  /** The largest request the transmission phase serves, advertised in NBD_INFO_BLOCK_SIZE. */
  readonly maxRequest: number;
  send(bytes: Uint8Array): void;
  /**
   * Whether another option may be answered now. False while replies already sent are waiting for the client to
   * read them: the handshake keeps the rest of what arrived and goes on at `resume()`.
   */
  mayContinue(): boolean;
  /** The client asked to abort, or broke the protocol in a way that requires closing. */
  close(reason: string | undefined): void;
  done(result: Negotiated): void;
  /** TLS policy (default "off"); anything else needs `startTls`. */
  readonly tls?: TlsMode;
  /**
   * STARTTLS was acknowledged: run the TLS handshake on the connection. `early` holds bytes that followed the
   * option (the start of the client's TLS handshake, if it did not wait for the ACK). The option haggling starts
   * over inside TLS at `restartInTls()`; nothing is processed until then.
   */
  startTls?(early: Uint8Array): void;
}

/** Options a client may send before STARTTLS when TLS is required (the spec's FORCEDTLS mode). */
const ALLOWED_BEFORE_TLS: ReadonlySet<number> = new Set([OPT.STARTTLS, OPT.ABORT]);

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


type Phase = "client-flags" | "options" | "skipping" | "tls" | "done";

/** One connection's handshake. Call `start()` once, then `receive()` with every chunk until `done` fires. */
export class Handshake {
  private phase: Phase = "client-flags";
  private pending: Buffer = Buffer.alloc(0);
  /** The client set NBD_FLAG_C_FIXED_NEWSTYLE: it understands option replies. */
  private fixed = true;
  private noZeroes = false;
  private structured = false;
  private baseAllocation = false;
  /** STARTTLS completed: the haggling runs inside TLS. */
  private secured = false;
  /** An option too long to read, being skipped: its number and the bytes of it still to come. */
  private skipping = { option: 0, left: 0 };

  constructor(private readonly hooks: HandshakeHooks) {}

  start(): void {
    this.hooks.send(greeting());
  }

  /** Bytes received and not yet consumed (at most one option's worth plus the last chunk). */
  get bufferedBytes(): number {
    return this.pending.length;
  }

  receive(chunk: Uint8Array): void {
    if (this.phase === "done") return;
    this.pending = this.pending.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.pending, chunk]);
    this.run();
  }

  /** Goes on with what was kept while `mayContinue()` said no. */
  resume(): void {
    if (this.phase !== "done") this.run();
  }

  /**
   * The TLS handshake after STARTTLS succeeded: the option haggling starts over inside TLS, with nothing carried
   * over from before it (structured replies and meta contexts must be asked for again), as nbdkit and qemu-nbd do.
   */
  restartInTls(): void {
    if (this.phase !== "tls") return;
    this.secured = true;
    this.structured = false;
    this.baseAllocation = false;
    this.phase = "options";
    this.run();
  }

  private run(): void {
    // step() may end the handshake, which TypeScript's narrowing of `phase` cannot see.
    while (!this.isDone() && this.hooks.mayContinue() && this.step()) {}
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
      if ((flags & ~(CLIENT_FLAG_FIXED_NEWSTYLE | CLIENT_FLAG_NO_ZEROES)) !== 0) {
        this.fail(`client sent unknown handshake flags 0x${flags.toString(16)}`);
        return false;
      }
      this.fixed = (flags & CLIENT_FLAG_FIXED_NEWSTYLE) !== 0;
      this.noZeroes = (flags & CLIENT_FLAG_NO_ZEROES) !== 0;
      this.phase = "options";
      return true;
    }
    if (this.phase === "skipping") return this.skip();
    if (this.phase === "tls") return false;
    if (this.pending.length < 16) return false;
    if (this.pending.readBigUInt64BE(0) !== IHAVEOPT) {
      this.fail("option does not start with IHAVEOPT magic");
      return false;
    }
    const option = this.pending.readUInt32BE(8);
    const length = this.pending.readUInt32BE(12);
    if (length > MAX_OPTION_SIZE) return this.tooBig(option, length);
    if (this.pending.length < 16 + length) return false;
    const data = this.pending.subarray(16, 16 + length);
    this.pending = this.pending.subarray(16 + length);
    try {
      if (this.hooks.tls === "require" && !this.secured && !ALLOWED_BEFORE_TLS.has(option)) {
        this.refuseBeforeTls(option);
      } else if (!this.fixed && option !== OPT.EXPORT_NAME) {
        // A client without fixed newstyle knows no other option; nbdkit refuses them and lets it go on.
        this.hooks.send(errorReply(option, REP.ERR_INVALID, "only EXPORT_NAME without fixed newstyle negotiation"));
      } else {
        this.handleOption(option, data);
      }
    } catch (error) {
      if (!(error instanceof MalformedOption)) throw error;
      // EXPORT_NAME has no option reply: a client would read an error as the export size and wait forever.
      if (option === OPT.EXPORT_NAME) this.fail(`unusable EXPORT_NAME: ${error.message}`);
      else this.hooks.send(errorReply(option, REP.ERR_INVALID, error.message));
    }
    return true;
  }

  /**
   * An option longer than the handshake reads. Up to what nbdkit accepts at all, its data is skipped as it arrives
   * and it is answered NBD_REP_ERR_TOO_BIG; an EXPORT_NAME (which has no reply) or an absurd length closes.
   */
  private tooBig(option: number, length: number): boolean {
    if (option === OPT.EXPORT_NAME || length > MAX_REQUEST_SIZE) {
      this.fail(`option ${option} carries ${length} bytes, more than the ${MAX_OPTION_SIZE} this server reads`);
      return false;
    }
    this.pending = this.pending.subarray(16);
    this.skipping = { option, left: length };
    this.phase = "skipping";
    return true;
  }

  private skip(): boolean {
    const take = Math.min(this.skipping.left, this.pending.length);
    this.pending = this.pending.subarray(take);
    this.skipping.left -= take;
    if (this.skipping.left > 0) return false;
    this.phase = "options";
    const message = `option data longer than the ${MAX_OPTION_SIZE} bytes this server reads`;
    this.hooks.send(errorReply(this.skipping.option, REP.ERR_TOO_BIG, message));
    return true;
  }

  /** An option other than STARTTLS or ABORT before TLS, when TLS is required: nothing about the exports is told. */
  private refuseBeforeTls(option: number): void {
    // EXPORT_NAME has no reply: the spec's answer is ending the session.
    if (option === OPT.EXPORT_NAME || !this.fixed) return this.fail("client asked for an export without STARTTLS, and TLS is required (--tls require)");
    this.hooks.send(errorReply(option, REP.ERR_TLS_REQD, "TLS is required: send NBD_OPT_STARTTLS first"));
  }

  private startTls(option: number, data: Buffer): void {
    const send = this.hooks.send;
    const startTls = this.hooks.startTls;
    if ((this.hooks.tls ?? "off") === "off" || startTls === undefined) {
      return send(errorReply(option, REP.ERR_UNSUP, "this server does not offer TLS (start it with --tls on or require)"));
    }
    if (data.length !== 0) return send(errorReply(option, REP.ERR_INVALID, "STARTTLS takes no data"));
    if (this.secured) return send(errorReply(option, REP.ERR_INVALID, "TLS is already in use on this connection"));
    send(optionReply(option, REP.ACK));
    this.phase = "tls";
    const early = this.pending;
    this.pending = Buffer.alloc(0);
    startTls(early);
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
      case OPT.STARTTLS:
        return this.startTls(option, data);
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
    sizes.writeUInt32BE(this.hooks.maxRequest, 10);
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
