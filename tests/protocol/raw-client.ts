/**
 * A deliberately small NBD client for the protocol suites: raw bytes over a Unix socket, exact-length reads with
 * timeouts, and codecs for options, requests and replies, so a test can send anything, including what no real client
 * would. Wire values are written out here from the NBD protocol document (doc/proto.md) rather than imported from the
 * engine, so a wrong constant in the engine cannot make its own tests pass.
 */
import type { Socket } from "bun";

export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export const OPT = { EXPORT_NAME: 1, ABORT: 2, LIST: 3, STARTTLS: 5, INFO: 6, GO: 7, STRUCTURED_REPLY: 8, LIST_META_CONTEXT: 9, SET_META_CONTEXT: 10 } as const;
export const REP = { ACK: 1, SERVER: 2, INFO: 3, META_CONTEXT: 4, ERR_UNSUP: 0x80000001, ERR_INVALID: 0x80000003, ERR_UNKNOWN: 0x80000006 } as const;
export const INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;
/** Transmission flags, by bit number in proto.md. */
export const TF = {
  HAS_FLAGS: 1 << 0, READ_ONLY: 1 << 1, SEND_FLUSH: 1 << 2, SEND_FUA: 1 << 3, ROTATIONAL: 1 << 4, SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6, SEND_DF: 1 << 7, CAN_MULTI_CONN: 1 << 8, SEND_CACHE: 1 << 10, SEND_FAST_ZERO: 1 << 11,
} as const;
export const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7 } as const;
export const FLAG = { FUA: 1 << 0, NO_HOLE: 1 << 1, DF: 1 << 2, REQ_ONE: 1 << 3, FAST_ZERO: 1 << 4 } as const;
export const CHUNK = { OFFSET_DATA: 1, OFFSET_HOLE: 2, BLOCK_STATUS: 5, ERROR: 0x8001, ERROR_OFFSET: 0x8002 } as const;
export const CHUNK_FLAG_DONE = 1;
export const STATE_HOLE = 1 << 0;
export const STATE_ZERO = 1 << 1;
export const ERR = { EPERM: 1, EIO: 5, EINVAL: 22, ENOSPC: 28, ENOTSUP: 95 } as const;

const DEFAULT_TIMEOUT_MS = 3000;

/** One Unix-socket connection with a byte queue in each direction. */
export class RawClient {
  private socket: Socket<undefined> | undefined;
  private readonly inbox: Buffer[] = [];
  private inboxBytes = 0;
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  private readonly outbox: Uint8Array[] = [];
  private closeWaiters: Array<() => void> = [];
  /** The server closed the connection (or it failed). */
  closed = false;

  static async connect(path: string): Promise<RawClient> {
    const client = new RawClient();
    client.socket = await Bun.connect({
      unix: path,
      socket: {
        data: (_s, chunk) => client.onData(chunk),
        drain: () => client.pump(),
        close: () => client.onClose(),
        error: () => client.onClose(),
      },
    });
    return client;
  }

  /** Bytes received and not read yet. */
  get buffered(): number {
    return this.inboxBytes;
  }

  /** Queues bytes for the server, as one write where the socket takes it (several parts go out as one packet). */
  send(...parts: Uint8Array[]): void {
    this.outbox.push(parts.length === 1 ? parts[0]! : Buffer.concat(parts));
    this.pump();
  }

  /** Exactly `n` bytes, or a rejection naming what arrived when the server closes or the time runs out. */
  read(n: number, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Buffer> {
    if (this.waiter) throw new Error("RawClient.read: a read is already pending");
    if (this.inboxBytes >= n) return Promise.resolve(this.take(n));
    if (this.closed) return Promise.reject(new Error(`connection closed with ${this.inboxBytes} of ${n} expected bytes`));
    return new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new Error(`timed out after ${timeoutMs} ms with ${this.inboxBytes} of ${n} expected bytes`));
      }, timeoutMs);
      this.waiter = {
        n,
        resolve: (b) => {
          clearTimeout(timer);
          resolve(b);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  /** Resolves once the server has closed the connection; rejects if it is still open after `timeoutMs`. */
  waitClosed(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the server did not close the connection within ${timeoutMs} ms`)), timeoutMs);
      this.closeWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Waits `ms` and returns how many unread bytes arrived meanwhile (0 means the server stayed quiet). */
  async quietFor(ms: number): Promise<number> {
    const before = this.inboxBytes;
    await Bun.sleep(ms);
    return this.inboxBytes - before;
  }

  close(): void {
    this.socket?.end();
  }

  private onData(chunk: Buffer): void {
    this.inbox.push(Buffer.from(chunk));
    this.inboxBytes += chunk.length;
    const w = this.waiter;
    if (w && this.inboxBytes >= w.n) {
      this.waiter = undefined;
      w.resolve(this.take(w.n));
    }
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(new Error(`connection closed with ${this.inboxBytes} of ${w.n} expected bytes`));
    for (const resolve of this.closeWaiters) resolve();
    this.closeWaiters = [];
  }

  private take(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const head = this.inbox[0]!;
      const k = Math.min(head.length, n - filled);
      head.copy(out, filled, 0, k);
      filled += k;
      if (k === head.length) this.inbox.shift();
      else this.inbox[0] = head.subarray(k);
    }
    this.inboxBytes -= n;
    return out;
  }

  private pump(): void {
    const socket = this.socket;
    if (!socket) return;
    while (this.outbox.length > 0) {
      const head = this.outbox[0]!;
      const written = socket.write(head);
      if (written <= 0) return;
      if (written < head.length) {
        this.outbox[0] = head.subarray(written);
        return;
      }
      this.outbox.shift();
    }
  }
}

// ---- handshake -------------------------------------------------------------------------------------------------

export interface Greeting {
  readonly magic: bigint;
  readonly ihaveopt: bigint;
  readonly flags: number;
}

export async function readGreeting(c: RawClient): Promise<Greeting> {
  const b = await c.read(18);
  return { magic: b.readBigUInt64BE(0), ihaveopt: b.readBigUInt64BE(8), flags: b.readUInt16BE(16) };
}

export function u32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(value >>> 0);
  return b;
}

/** An option: IHAVEOPT, option number, data length, data. */
export function option(opt: number, data: Uint8Array = new Uint8Array(0)): Buffer {
  const b = Buffer.alloc(16 + data.length);
  b.writeBigUInt64BE(IHAVEOPT, 0);
  b.writeUInt32BE(opt, 8);
  b.writeUInt32BE(data.length, 12);
  b.set(data, 16);
  return b;
}

/** Data of INFO / GO: export name and the NBD_INFO_* requests. */
export function infoData(name: string, requests: readonly number[] = []): Buffer {
  const n = Buffer.from(name);
  const b = Buffer.alloc(4 + n.length + 2 + 2 * requests.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  b.writeUInt16BE(requests.length, 4 + n.length);
  requests.forEach((r, i) => b.writeUInt16BE(r, 6 + n.length + 2 * i));
  return b;
}

/** Data of LIST_META_CONTEXT / SET_META_CONTEXT: export name and queries. */
export function metaContextData(name: string, queries: readonly string[]): Buffer {
  const parts = [u32(Buffer.byteLength(name)), Buffer.from(name), u32(queries.length)];
  for (const q of queries) parts.push(u32(Buffer.byteLength(q)), Buffer.from(q));
  return Buffer.concat(parts);
}

export interface OptionReply {
  readonly magic: bigint;
  readonly option: number;
  readonly type: number;
  readonly data: Buffer;
}

export async function readOptionReply(c: RawClient): Promise<OptionReply> {
  const h = await c.read(20);
  const length = h.readUInt32BE(16);
  const data = length > 0 ? await c.read(length) : Buffer.alloc(0);
  return { magic: h.readBigUInt64BE(0), option: h.readUInt32BE(8), type: h.readUInt32BE(12), data };
}

/** Reads option replies up to and including the final one (ACK or an error). */
export async function readOptionReplies(c: RawClient): Promise<OptionReply[]> {
  const replies: OptionReply[] = [];
  for (;;) {
    const r = await readOptionReply(c);
    replies.push(r);
    if (r.type === REP.ACK || r.type >= 0x80000000) return replies;
  }
}

export interface ExportDetails {
  readonly size: number;
  readonly flags: number;
  readonly blockSizes?: { readonly minimum: number; readonly preferred: number; readonly maximum: number };
}

/** Reads the NBD_INFO_EXPORT and NBD_INFO_BLOCK_SIZE out of INFO / GO replies. */
export function exportDetails(replies: readonly OptionReply[]): ExportDetails {
  let size = -1;
  let flags = -1;
  let blockSizes: ExportDetails["blockSizes"];
  for (const r of replies) {
    if (r.type !== REP.INFO) continue;
    const kind = r.data.readUInt16BE(0);
    if (kind === INFO.EXPORT) {
      if (r.data.length !== 12) throw new Error(`NBD_INFO_EXPORT carries ${r.data.length} bytes, not 12`);
      size = Number(r.data.readBigUInt64BE(2));
      flags = r.data.readUInt16BE(10);
    } else if (kind === INFO.BLOCK_SIZE) {
      if (r.data.length !== 14) throw new Error(`NBD_INFO_BLOCK_SIZE carries ${r.data.length} bytes, not 14`);
      blockSizes = { minimum: r.data.readUInt32BE(2), preferred: r.data.readUInt32BE(6), maximum: r.data.readUInt32BE(10) };
    }
  }
  if (size < 0) throw new Error("no NBD_INFO_EXPORT among the replies");
  return { size, flags, blockSizes };
}

/** Connects, checks the greeting and sends the client flags (FIXED_NEWSTYLE, plus NO_ZEROES by default). */
export async function startHandshake(path: string, clientFlags = 0b11): Promise<RawClient> {
  const c = await RawClient.connect(path);
  const g = await readGreeting(c);
  if (g.magic !== NBDMAGIC || g.ihaveopt !== IHAVEOPT) throw new Error("bad greeting");
  c.send(u32(clientFlags));
  return c;
}

export interface OpenOptions {
  readonly exportName?: string;
  readonly structured?: boolean;
  /** Select base:allocation with SET_META_CONTEXT (implies structured). */
  readonly baseAllocation?: boolean;
}

/** Negotiates with GO and returns a transmission-phase connection. */
export async function openExport(path: string, options: OpenOptions = {}): Promise<Nbd> {
  const c = await startHandshake(path);
  const name = options.exportName ?? "disk";
  const structured = options.structured === true || options.baseAllocation === true;
  let contextId: number | undefined;
  if (structured) {
    c.send(option(OPT.STRUCTURED_REPLY));
    const [ack] = await readOptionReplies(c);
    if (ack!.type !== REP.ACK) throw new Error(`STRUCTURED_REPLY answered ${ack!.type.toString(16)}`);
  }
  if (options.baseAllocation) {
    c.send(option(OPT.SET_META_CONTEXT, metaContextData(name, ["base:allocation"])));
    const replies = await readOptionReplies(c);
    const ctx = replies.find((r) => r.type === REP.META_CONTEXT);
    if (!ctx) throw new Error("SET_META_CONTEXT selected no context");
    contextId = ctx.data.readUInt32BE(0);
  }
  c.send(option(OPT.GO, infoData(name)));
  const replies = await readOptionReplies(c);
  const last = replies[replies.length - 1]!;
  if (last.type !== REP.ACK) throw new Error(`GO answered 0x${last.type.toString(16)}: ${last.data.toString()}`);
  return new Nbd(c, exportDetails(replies), structured, contextId);
}

// ---- transmission ----------------------------------------------------------------------------------------------

export interface Command {
  readonly type: number;
  readonly flags?: number;
  /** A number, or a bigint for offsets past 2^53. */
  readonly offset?: number | bigint;
  /** Defaults to data's length. */
  readonly length?: number;
  readonly data?: Uint8Array;
  readonly handle?: bigint;
  /** Overrides the request magic, to send broken requests. */
  readonly magic?: number;
}

export function encodeRequest(cmd: Command, handle: bigint): Buffer {
  const data = cmd.data ?? new Uint8Array(0);
  const b = Buffer.alloc(28 + data.length);
  b.writeUInt32BE(cmd.magic ?? REQUEST_MAGIC, 0);
  b.writeUInt16BE(cmd.flags ?? 0, 4);
  b.writeUInt16BE(cmd.type, 6);
  b.writeBigUInt64BE(handle, 8);
  b.writeBigUInt64BE(BigInt(cmd.offset ?? 0), 16);
  b.writeUInt32BE(cmd.length ?? data.length, 24);
  b.set(data, 28);
  return b;
}

/** One reply, or one structured chunk. `data` is the read payload (simple or OFFSET_DATA). */
export interface Reply {
  readonly structured: boolean;
  readonly handle: bigint;
  readonly error: number;
  /** Structured chunks only. */
  readonly chunkType?: number;
  readonly chunkFlags?: number;
  readonly offset?: number;
  readonly data?: Buffer;
  readonly message?: string;
  readonly contextId?: number;
  readonly descriptors?: ReadonlyArray<{ readonly length: number; readonly flags: number }>;
  /** Arrival order on this connection, counting from 0. */
  readonly seq: number;
}

/** A transmission-phase connection that remembers READ lengths, so simple replies can be framed. */
export class Nbd {
  private nextHandle = 1n;
  private readonly readLengths = new Map<bigint, number>();
  private seq = 0;

  constructor(
    readonly raw: RawClient,
    readonly details: ExportDetails,
    readonly structured: boolean,
    readonly contextId: number | undefined,
  ) {}

  /** Encodes commands into one buffer (send it with raw.send) and returns it with their handles. */
  encode(cmds: readonly Command[]): { bytes: Buffer; handles: bigint[] } {
    const handles: bigint[] = [];
    const parts = cmds.map((cmd) => {
      const handle = cmd.handle ?? this.nextHandle++;
      handles.push(handle);
      if (cmd.type === CMD.READ) this.readLengths.set(handle, cmd.length ?? 0);
      return encodeRequest(cmd, handle);
    });
    return { bytes: Buffer.concat(parts), handles };
  }

  /** Sends every command in one write; returns their handles. */
  send(...cmds: Command[]): bigint[] {
    const { bytes, handles } = this.encode(cmds);
    this.raw.send(bytes);
    return handles;
  }

  /** The next reply or structured chunk, whichever handle it is for. */
  async next(timeoutMs?: number): Promise<Reply> {
    const seq = this.seq++;
    const head = await this.raw.read(4, timeoutMs);
    const magic = head.readUInt32BE(0);
    if (magic === SIMPLE_REPLY_MAGIC) {
      const h = await this.raw.read(12, timeoutMs);
      const error = h.readUInt32BE(0);
      const handle = h.readBigUInt64BE(4);
      const length = this.readLengths.get(handle);
      const data = error === 0 && length !== undefined ? await this.raw.read(length, timeoutMs) : undefined;
      return { structured: false, handle, error, data, seq };
    }
    if (magic !== STRUCTURED_REPLY_MAGIC) throw new Error(`reply starts with 0x${magic.toString(16)}, not a reply magic`);
    const h = await this.raw.read(16, timeoutMs);
    const chunkFlags = h.readUInt16BE(0);
    const chunkType = h.readUInt16BE(2);
    const handle = h.readBigUInt64BE(4);
    const length = h.readUInt32BE(12);
    const p = length > 0 ? await this.raw.read(length, timeoutMs) : Buffer.alloc(0);
    const base = { structured: true, handle, chunkFlags, chunkType, seq };
    switch (chunkType) {
      case CHUNK.OFFSET_DATA:
        return { ...base, error: 0, offset: Number(p.readBigUInt64BE(0)), data: p.subarray(8) };
      case CHUNK.BLOCK_STATUS: {
        const descriptors = [];
        for (let at = 4; at + 8 <= p.length; at += 8) descriptors.push({ length: p.readUInt32BE(at), flags: p.readUInt32BE(at + 4) });
        return { ...base, error: 0, contextId: p.readUInt32BE(0), descriptors };
      }
      case CHUNK.ERROR:
      case CHUNK.ERROR_OFFSET: {
        const messageLength = p.readUInt16BE(4);
        if (6 + messageLength + (chunkType === CHUNK.ERROR_OFFSET ? 8 : 0) !== p.length) {
          throw new Error(`error chunk of ${p.length} bytes claims a ${messageLength}-byte message`);
        }
        return { ...base, error: p.readUInt32BE(0), message: p.subarray(6, 6 + messageLength).toString() };
      }
      default:
        return { ...base, error: 0, data: p };
    }
  }

  /** Collects replies until every handle in `handles` has its final reply (a simple one, or a DONE chunk). */
  async collect(handles: readonly bigint[], timeoutMs?: number): Promise<Map<bigint, Reply[]>> {
    const waiting = new Set(handles);
    const got = new Map<bigint, Reply[]>();
    while (waiting.size > 0) {
      const r = await this.next(timeoutMs);
      if (!handles.includes(r.handle)) throw new Error(`reply for unexpected handle ${r.handle}`);
      if (!waiting.has(r.handle)) throw new Error(`reply for handle ${r.handle} after its final reply`);
      got.set(r.handle, [...(got.get(r.handle) ?? []), r]);
      if (!r.structured || (r.chunkFlags! & CHUNK_FLAG_DONE) !== 0) waiting.delete(r.handle);
    }
    return got;
  }

  /** Sends one command and returns its final reply (for structured replies, the DONE chunk, with all chunks' data). */
  async request(cmd: Command, timeoutMs?: number): Promise<Reply> {
    const [handle] = this.send(cmd);
    const chunks = (await this.collect([handle!], timeoutMs)).get(handle!)!;
    return chunks[chunks.length - 1]!;
  }

  /** READ that must succeed; returns the data. */
  async read(offset: number, length: number): Promise<Buffer> {
    const r = await this.request({ type: CMD.READ, offset, length });
    if (r.error !== 0 || !r.data) throw new Error(`READ ${offset}+${length} failed with error ${r.error}`);
    return r.data;
  }

  /** WRITE that must succeed. */
  async write(offset: number, data: Uint8Array, flags = 0): Promise<void> {
    const r = await this.request({ type: CMD.WRITE, offset, data, flags });
    if (r.error !== 0) throw new Error(`WRITE ${offset}+${data.length} failed with error ${r.error}`);
  }

  /** Ends the session politely (NBD_CMD_DISC) and waits for the server to close. */
  async disconnect(): Promise<void> {
    this.send({ type: CMD.DISC });
    await this.raw.waitClosed();
  }
}

/** Bytes that differ by position and seed, so a misplaced or stale block never matches by accident. */
export function pattern(length: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}
