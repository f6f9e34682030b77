/**
 * One NBD connection in the transmission phase, over any byte stream (a network socket after the handshake, or
 * the kernel's socket with no handshake at all). It parses requests in place as bytes arrive, runs them against
 * the device concurrently, and writes replies as each finishes, in whatever order that is.
 */
import { type BlockDevice, DeviceError, type Extent, resolveCapabilities } from "../devices/device.ts";
import { CommandRunner } from "./commands.ts";
import type { Logger } from "../shared/log.ts";
import type { DeviceMetrics } from "./metrics.ts";
import {
  CMD,
  CMD_FLAG_FUA,
  CMD_NAMES,
  NBD_ERR,
  REQUEST_HEADER_SIZE,
  REQUEST_MAGIC,
} from "./protocol/constants.ts";
import { blockStatusReply, errorReply, readReply, simpleReply } from "./protocol/replies.ts";
import { type Request, type RequestPolicy, checkRequest, joinOffset } from "./protocol/requests.ts";
import { PayloadPool } from "./payload-pool.ts";
import {
  PAYLOAD_PIECE_SIZE,
  REQUEST_READ_SIZE,
  type ReceiveBuffer,
  ReceiveBuffers,
  TRANSPORT_READ_SIZE,
} from "./receive-buffers.ts";
import { ReplyWriter, type Transport } from "./reply-writer.ts";
import { SplitWrite } from "./split-write.ts";

export interface SessionOptions {
  readonly device: BlockDevice;
  readonly metrics: DeviceMetrics;
  readonly transport: Transport;
  /** A writer already in use on this transport (the handshake's), so nothing it still holds is reordered. */
  readonly out?: ReplyWriter;
  readonly structuredReplies: boolean;
  readonly baseAllocation: boolean;
  readonly log: Logger;
  /** Who is on the other end, for log lines ("unix socket #3", "/dev/nbd0 socket 1"). */
  readonly peer: string;
  /** Called once when the session has ended (client gone, DISC, shutdown or protocol error). */
  readonly onEnd?: () => void;
}

/** Payload remainders at least this large are read from the socket directly when the transport allows it. */
const DIRECT_RECEIVE_MIN = 16 * 1024;

type Phase = "header" | "payload" | "discard";

export class Session {
  private readonly device: BlockDevice;
  private readonly metrics: DeviceMetrics;
  private readonly out: ReplyWriter;
  private readonly policy: RequestPolicy;
  private readonly splitWrites: boolean;
  private readonly runner: CommandRunner;
  private readonly pool = new PayloadPool();
  private readonly requestBuffers = new ReceiveBuffers(REQUEST_READ_SIZE);
  private readonly pieceBuffers = new ReceiveBuffers(PAYLOAD_PIECE_SIZE);
  /** The reused receive buffer the bytes being parsed live in (undefined for chunks Bun allocated). */
  private borrowed: ReceiveBuffer | undefined;
  /** When the bytes being parsed arrived: the start time of every request in them. */
  private receivedAt = 0;

  private phase: Phase = "header";
  private readonly header = Buffer.allocUnsafe(REQUEST_HEADER_SIZE);
  private headerFill = 0;
  /** The WRITE whose payload is arriving, where it is being assembled, and how much has come. */
  private current: Request | undefined;
  private assembly: Buffer | undefined;
  private assemblyFill = 0;
  /** The WRITE being handed to a `splitWrites` device piece by piece, if any. */
  private split: SplitWrite | undefined;
  /** Bytes of an unacceptable WRITE's payload still to skip, and the error its reply will carry. */
  private discardLeft = 0;
  private discardError = 0;

  private outstanding = 0;
  private stopping = false;
  private ended = false;
  private readonly warned = new Set<string>();
  private idleWaiters: Array<() => void> = [];

  constructor(private readonly options: SessionOptions) {
    this.device = options.device;
    this.metrics = options.metrics;
    this.out = options.out ?? new ReplyWriter(options.transport);
    const caps = resolveCapabilities(options.device);
    this.splitWrites = caps.splitWrites;
    this.policy = {
      size: options.device.size,
      readOnly: caps.readOnly,
      trim: caps.trim,
      fastZero: caps.fastZero,
      structuredReplies: options.structuredReplies,
      baseAllocation: options.baseAllocation,
    };
    this.metrics.connections++;
    this.runner = new CommandRunner(options.device, {
      completed: (req, bytes) => this.complete(req, 0, bytes),
      failed: (req, error) => this.failWith(req, error),
      read: (req, data) => this.readDone(req, data),
      blockStatus: (req, extents, onlyOne) => this.blockStatusDone(req, extents, onlyOne),
    });
  }

  /**
   * Feeds bytes from the transport, then, if the chunk was a full read (so more may be waiting), reads whatever else
   * is waiting directly.
   */
  receive(chunk: Uint8Array): void {
    this.parse(chunk);
    // Replies go out before reading on, so the client can refill its queue while we parse.
    this.out.flush();
    if (chunk.length >= TRANSPORT_READ_SIZE) this.readWaiting();
  }

  /**
   * Reads bytes already waiting on the transport into reused buffers and parses them, until the socket has no
   * more: after one Bun read per wake-up, the rest skips Bun's per-read allocation and copy.
   */
  private readWaiting(): void {
    const receiveInto = this.options.transport.receiveInto;
    if (receiveInto === undefined) return;
    while (!this.stopping) {
      const target = this.requestBuffers.free();
      const n = receiveInto(target.bytes);
      if (n <= 0) return;
      this.borrowed = target;
      try {
        this.parse(target.bytes.subarray(0, n));
      } finally {
        this.borrowed = undefined;
      }
      this.out.flush();
      if (n < target.bytes.length) return;
    }
  }

  private parse(chunk: Uint8Array): void {
    if (this.stopping) return;
    this.receivedAt = performance.now();
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let pos = 0;
    const end = buf.length;
    while (pos < end && !this.stopping) {
      if (this.phase === "header") {
        if (this.headerFill === 0 && end - pos >= REQUEST_HEADER_SIZE) {
          this.parseHeader(buf, pos);
          pos += REQUEST_HEADER_SIZE;
        } else {
          const take = Math.min(REQUEST_HEADER_SIZE - this.headerFill, end - pos);
          buf.copy(this.header, this.headerFill, pos, pos + take);
          this.headerFill += take;
          pos += take;
          if (this.headerFill < REQUEST_HEADER_SIZE) break;
          this.headerFill = 0;
          this.parseHeader(this.header, 0);
        }
      } else if (this.phase === "payload") {
        pos = this.takePayload(buf, pos);
      } else {
        const take = Math.min(this.discardLeft, end - pos);
        this.discardLeft -= take;
        pos += take;
        if (this.discardLeft === 0) this.finishDiscard();
      }
    }
  }

  /** The transport can take more bytes. */
  drain(): void {
    this.out.drain();
  }

  /** The transport closed underneath us: requests still running finish against the device, replies are dropped. */
  transportClosed(): void {
    this.out.markClosed();
    this.stopping = true;
    this.end();
  }

  /**
   * Stops taking new requests, waits until every request already received has been answered and those replies have
   * reached the socket, then closes the transport. Used for DISC and for a clean shutdown.
   */
  async shutdown(): Promise<void> {
    this.stopping = true;
    if (this.outstanding > 0) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    // Replies held back by a full socket would be cut off by closing now (a large READ usually is).
    await this.out.whenDrained();
    this.end();
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.metrics.connections--;
    this.releaseAssembly();
    this.options.transport.end();
    this.options.onEnd?.();
  }

  private parseHeader(b: Buffer, at: number): void {
    const magic = b.readUInt32BE(at);
    if (magic !== REQUEST_MAGIC) {
      // Without a valid magic the stream cannot be resynchronised; the protocol's answer is to hang up.
      this.warnOnce("magic", `bad request magic 0x${magic.toString(16)}; closing the connection`);
      this.stopping = true;
      this.out.flush();
      this.end();
      return;
    }
    const type = b.readUInt16BE(at + 6);
    if (type === CMD.DISC) {
      // DISC gets no reply: finish what was asked before it, then hang up.
      void this.shutdown();
      return;
    }
    const req: Request = {
      flags: b.readUInt16BE(at + 4),
      type,
      handleHi: b.readUInt32BE(at + 8),
      handleLo: b.readUInt32BE(at + 12),
      offset: joinOffset(b.readUInt32BE(at + 16), b.readUInt32BE(at + 20)),
      length: b.readUInt32BE(at + 24),
      started: this.metrics.begin(this.receivedAt),
    };
    this.outstanding++;
    const rejection = checkRequest(req, this.policy);
    if (rejection !== undefined) {
      this.warnOnce(`reject:${rejection.reason.split(" ")[0]}:${req.type}`, `rejected request: ${rejection.reason}`);
      if (req.type === CMD.WRITE) {
        this.phase = "discard";
        this.discardLeft = req.length;
        this.discardError = rejection.error;
        this.current = req;
        if (req.length === 0) this.finishDiscard();
        return;
      }
      this.fail(req, rejection.error, rejection.reason);
      return;
    }
    if (req.type === CMD.WRITE) {
      this.phase = "payload";
      this.current = req;
      this.assemblyFill = 0;
      return;
    }
    this.runner.execute(req);
  }

  private takePayload(buf: Buffer, pos: number): number {
    const req = this.current!;
    const available = buf.length - pos;
    const direct = this.options.transport.receiveInto;
    if (this.split !== undefined) return this.takeSplit(buf, pos, available);
    if (this.assemblyFill === 0 && available >= req.length) {
      // The whole payload is in this chunk: hand the device a view, no copy. Bun never reuses a chunk's memory.
      this.phase = "header";
      this.current = undefined;
      this.write(req, buf.subarray(pos, pos + req.length), undefined);
      return pos + req.length;
    }
    if (this.assembly === undefined) {
      if (this.splitWrites && (req.flags & CMD_FLAG_FUA) === 0) {
        this.split = new SplitWrite(req, this.device);
        return this.takeSplit(buf, pos, available);
      }
      this.assembly = this.pool.take(req.length);
    }
    const take = Math.min(req.length - this.assemblyFill, available);
    buf.copy(this.assembly, this.assemblyFill, pos, pos + take);
    this.assemblyFill += take;
    if (this.assemblyFill < req.length && direct !== undefined && req.length - this.assemblyFill >= DIRECT_RECEIVE_MIN) {
      // Take the rest of a large payload straight from the socket into the reused buffer: this skips Bun's copy
      // into a freshly allocated chunk (and its page faults), which is most of the cost of large writes.
      this.assemblyFill += this.options.transport.receiveInto!(this.assembly.subarray(this.assemblyFill, req.length));
    }
    if (this.assemblyFill === req.length) {
      const assembled = this.assembly;
      this.assembly = undefined;
      this.assemblyFill = 0;
      this.phase = "header";
      this.current = undefined;
      this.write(req, assembled.subarray(0, req.length), assembled);
    }
    return pos + take;
  }

  /** Hands the device this chunk's part of a split WRITE, then whatever more of it is already waiting. */
  private takeSplit(buf: Buffer, pos: number, available: number): number {
    const split = this.split!;
    const take = Math.min(split.req.length - split.received, available);
    split.piece(buf.subarray(pos, pos + take), this.borrowed);
    const receiveInto = this.options.transport.receiveInto;
    while (!split.complete && receiveInto !== undefined) {
      const target = this.pieceBuffers.free();
      const n = receiveInto(target.bytes.subarray(0, Math.min(target.bytes.length, split.req.length - split.received)));
      if (n <= 0) break;
      split.piece(target.bytes.subarray(0, n), target);
    }
    if (split.complete) {
      const req = split.req;
      this.split = undefined;
      this.current = undefined;
      this.phase = "header";
      const waited = split.finish((failed, error) => (failed ? this.failWith(req, error) : this.complete(req, 0, req.length)));
      if (waited !== undefined) this.runner.trackWrite(waited);
    }
    return pos + take;
  }

  private finishDiscard(): void {
    const req = this.current!;
    this.current = undefined;
    this.phase = "header";
    this.fail(req, this.discardError, "rejected write");
  }

  /** Runs a WRITE; `pooled` (the buffer `data` was assembled in) goes back to the pool once the device is done. */
  private write(req: Request, data: Uint8Array, pooled: Buffer | undefined): void {
    const pending = this.runner.write(req, data);
    if (pending === undefined) {
      if (pooled) this.pool.give(pooled);
      return;
    }
    // The device may still read `data`: a receive buffer it is a view of must not be refilled until then.
    const held = pooled === undefined ? this.borrowed : undefined;
    if (held) held.holds++;
    void pending.finally(() => {
      if (pooled) this.pool.give(pooled);
      if (held) held.holds--;
    });
  }

  private readDone(req: Request, data: Uint8Array): void {
    if (data.length !== req.length) {
      this.failWith(req, new Error(`device returned ${data.length} bytes for a ${req.length}-byte read`));
      return;
    }
    this.metrics.end(CMD.READ, req.length, req.started, true);
    readReply(this.out, req, data, this.policy.structuredReplies);
    this.replied();
  }

  private blockStatusDone(req: Request, extents: readonly Extent[], onlyOne: boolean): void {
    this.metrics.end(CMD.BLOCK_STATUS, req.length, req.started, true);
    blockStatusReply(this.out, req, extents, onlyOne);
    this.replied();
  }

  private complete(req: Request, error: number, bytes: number): void {
    this.metrics.end(req.type, bytes, req.started, error === 0);
    simpleReply(this.out, req, error);
    this.replied();
  }

  private fail(req: Request, error: number, message: string): void {
    this.metrics.end(req.type, 0, req.started, false);
    // READ and BLOCK_STATUS answer in structured chunks once negotiated; other commands may use simple replies.
    const chunked = this.policy.structuredReplies && (req.type === CMD.READ || req.type === CMD.BLOCK_STATUS);
    errorReply(this.out, req, error, chunked, message);
    this.replied();
  }

  private failWith(req: Request, error: unknown): void {
    const name = CMD_NAMES[req.type] ?? `command ${req.type}`;
    if (error instanceof DeviceError) {
      this.warnOnce(`device:${error.code}:${req.type}`, `${name} failed: ${error.message}`);
      this.fail(req, NBD_ERR[error.code], error.message);
      return;
    }
    const message = error instanceof Error ? error.message : String(error);
    this.warnOnce(`error:${req.type}:${message}`, `${name} at ${req.offset}+${req.length} failed: ${message}`);
    this.fail(req, NBD_ERR.EIO, message);
  }

  private replied(): void {
    this.outstanding--;
    this.out.scheduleFlush();
    if (this.outstanding === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  private releaseAssembly(): void {
    if (this.assembly) this.pool.give(this.assembly);
    this.assembly = undefined;
    this.split = undefined;
  }

  /** Logs the first occurrence of each kind of problem on this connection; a misbehaving client cannot flood the log. */
  private warnOnce(key: string, message: string): void {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.options.log.log("warn", message, { peer: this.options.peer });
  }
}
