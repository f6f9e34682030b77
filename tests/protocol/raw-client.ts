/**
 * A deliberately small NBD client for the protocol suites: raw bytes over a Unix socket, exact-length reads with
 * timeouts, and the handshake's codecs, so a test can send anything, including what no real client would. The
 * transmission phase lives in nbd.ts and the wire values in wire.ts; both are re-exported here.
 */
import type { Socket } from "bun";
import { Nbd } from "./nbd.ts";
import { IHAVEOPT, INFO, NBDMAGIC, OPT, REP } from "./wire.ts";

export * from "./nbd.ts";
export * from "./wire.ts";

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

  /** Bytes queued by `send` that the socket has not taken yet (the server is not reading them). */
  get unsent(): number {
    let n = 0;
    for (const part of this.outbox) n += part.length;
    return n;
  }

  /**
   * Stops reading from the socket, as a client that never reads its replies would: the server meets backpressure.
   * `read` then waits until `resumeReading`.
   */
  stopReading(): void {
    this.socket?.pause();
  }

  resumeReading(): void {
    this.socket?.resume();
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

  /** Drops the connection at once (RST), as a client that dies would; a paused server socket notices too. */
  destroy(): void {
    this.socket?.terminate();
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

export async function readOptionReply(c: RawClient, timeoutMs?: number): Promise<OptionReply> {
  const h = await c.read(20, timeoutMs);
  const length = h.readUInt32BE(16);
  const data = length > 0 ? await c.read(length, timeoutMs) : Buffer.alloc(0);
  return { magic: h.readBigUInt64BE(0), option: h.readUInt32BE(8), type: h.readUInt32BE(12), data };
}

/** Reads option replies up to and including the final one (ACK or an error). */
export async function readOptionReplies(c: RawClient, timeoutMs?: number): Promise<OptionReply[]> {
  const replies: OptionReply[] = [];
  for (;;) {
    const r = await readOptionReply(c, timeoutMs);
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
