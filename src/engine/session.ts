/**
 * One NBD connection in the transmission phase, over any byte stream (a network socket after the handshake, or
 * the kernel's socket with no handshake at all). It parses requests in place as bytes arrive, runs them against
 * the device concurrently, and writes replies as each finishes, in whatever order that is.
 */
import { type BlockDevice, resolveCapabilities } from "../devices/device.ts";
import type { Logger } from "../shared/log.ts";
import { Answers } from "./answers.ts";
import { CommandRunner } from "./commands.ts";
import { InputGate } from "./input-gate.ts";
import { BudgetAccount, sharedMemoryBudget } from "./memory-budget.ts";
import type { DeviceMetrics } from "./metrics.ts";
import { CMD, CMD_FLAG_FUA, REQUEST_HEADER_SIZE, REQUEST_MAGIC } from "./protocol/constants.ts";
import { type Request, type RequestPolicy, checkRequest, joinOffset, maxRequestSize, requestCharge } from "./protocol/requests.ts";
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
  /**
   * The connection's share of the memory budget (the handshake's, on a network connection). Default: a new account
   * in the process-wide budget.
   */
  readonly account?: BudgetAccount;
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
  private readonly answers: Answers;
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
  /** Bytes charged to requests received and not yet answered (payloads, data being read, reply overhead). */
  private charged = 0;
  private readonly account: BudgetAccount;
  /** Closed while the account is over budget: the socket stops being read until replies drain. */
  private readonly gate: InputGate;
  /** Inside parse(): a request finishing synchronously must not reopen the gate and parse re-entrantly. */
  private parsing = false;
  private stopping = false;
  private ended = false;
  private idleWaiters: Array<() => void> = [];

  constructor(private readonly options: SessionOptions) {
    this.device = options.device;
    this.metrics = options.metrics;
    this.out = options.out ?? new ReplyWriter(options.transport);
    this.account = options.account ?? new BudgetAccount(sharedMemoryBudget());
    this.gate = new InputGate(
      this.account,
      options.transport,
      () => this.charged + this.out.pendingBytes,
      () => this.reopen(),
      () => {
        // Its paused socket never reported the close: let go of what it holds, as a close would.
        this.options.log.log("debug", "client gone while its socket was paused; closing", { peer: this.options.peer });
        this.transportClosed();
        this.options.transport.destroy?.();
      },
    );
    const caps = resolveCapabilities(options.device);
    this.splitWrites = caps.splitWrites;
    this.policy = {
      size: options.device.size,
      readOnly: caps.readOnly,
      trim: caps.trim,
      fastZero: caps.fastZero,
      structuredReplies: options.structuredReplies,
      baseAllocation: options.baseAllocation,
      maxRequest: maxRequestSize(this.account.budget.limit),
    };
    this.metrics.connections++;
    this.answers = new Answers(this.out, this.metrics, options.structuredReplies, options.log, options.peer, (req) => this.replied(req));
    this.runner = new CommandRunner(options.device, this.answers);
  }

  /**
   * Feeds bytes from the transport, then, if the chunk was a full read (so more may be waiting), reads whatever else
   * is waiting directly.
   */
  receive(chunk: Uint8Array): void {
    if (this.gate.closed) {
      // Read before the transport paused: kept, in order, for when the budget has room.
      this.gate.keep(chunk);
      this.settle();
      return;
    }
    this.parse(chunk);
    // Replies go out before reading on, so the client can refill its queue while we parse.
    this.out.flush();
    if (chunk.length >= TRANSPORT_READ_SIZE) this.readWaiting();
    this.settle();
  }

  /**
   * Reads bytes already waiting on the transport into reused buffers and parses them, until the socket has no
   * more: after one Bun read per wake-up, the rest skips Bun's per-read allocation and copy.
   */
  private readWaiting(): void {
    const receiveInto = this.options.transport.receiveInto;
    if (receiveInto === undefined) return;
    while (!this.stopping && !this.gate.closed) {
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
    this.parsing = true;
    try {
      this.parseChunk(chunk);
    } finally {
      this.parsing = false;
    }
  }

  private parseChunk(chunk: Uint8Array): void {
    this.receivedAt = performance.now();
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let pos = 0;
    const end = buf.length;
    // A header completed earlier may be waiting for budget (headerFill full), even with no new bytes.
    while ((pos < end || this.headerFill === REQUEST_HEADER_SIZE) && !this.stopping) {
      if (this.phase === "header") {
        if (this.headerFill === 0 && end - pos >= REQUEST_HEADER_SIZE) {
          if (!this.admit(buf, pos, buf.subarray(pos))) return;
          this.parseHeader(buf, pos);
          pos += REQUEST_HEADER_SIZE;
        } else {
          const take = Math.min(REQUEST_HEADER_SIZE - this.headerFill, end - pos);
          buf.copy(this.header, this.headerFill, pos, pos + take);
          this.headerFill += take;
          pos += take;
          if (this.headerFill < REQUEST_HEADER_SIZE) break;
          if (!this.admit(this.header, 0, buf.subarray(pos))) return;
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

  /**
   * Whether the request whose header is at `at` fits the memory budget; if not, closes the gate with `rest` (the
   * bytes after what was consumed so far) held for later. A header already assembled in `this.header` stays there.
   */
  private admit(b: Buffer, at: number, rest: Uint8Array): boolean {
    const charge = requestCharge(b.readUInt16BE(at + 6), b.readUInt32BE(at + 24), this.policy.maxRequest);
    if (this.gate.admits(charge)) return true;
    this.gate.close(rest, this.borrowed !== undefined, charge);
    this.settle();
    return false;
  }

  /** The budget has room for the held request: parse what was held, then read the socket again. */
  private reopen(): void {
    if (!this.gate.closed || this.parsing || this.stopping || !this.gate.fits()) return;
    const held = this.gate.reopen();
    for (let i = 0; i < held.length; i++) {
      if (this.gate.closed) {
        for (let j = i; j < held.length; j++) this.gate.keep(held[j]!);
        break;
      }
      this.parse(held[i]!);
    }
    // An assembled header waiting with no bytes after it is parsed by an empty chunk.
    if (!this.gate.closed && this.headerFill === REQUEST_HEADER_SIZE) this.parse(Buffer.alloc(0));
    this.out.flush();
    this.settle();
    this.gate.resumeReading();
  }

  /** Reports what this connection holds to its account, and reopens the gate when that made room. */
  private settle(): void {
    this.account.hold(this.charged + this.out.pendingBytes + this.gate.heldBytes);
    if (this.gate.closed && !this.parsing && this.gate.fits()) queueMicrotask(() => this.reopen());
  }

  /** The transport can take more bytes. */
  drain(): void {
    this.out.drain();
    this.settle();
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
    this.gate.dispose();
    this.account.close();
    this.options.transport.end();
    this.options.onEnd?.();
  }

  private parseHeader(b: Buffer, at: number): void {
    const magic = b.readUInt32BE(at);
    if (magic !== REQUEST_MAGIC) {
      // Without a valid magic the stream cannot be resynchronised; the protocol's answer is to hang up.
      this.answers.warnOnce("magic", `bad request magic 0x${magic.toString(16)}; closing the connection`);
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
    const length = b.readUInt32BE(at + 24);
    const req: Request = {
      flags: b.readUInt16BE(at + 4),
      type,
      handleHi: b.readUInt32BE(at + 8),
      handleLo: b.readUInt32BE(at + 12),
      offset: joinOffset(b.readUInt32BE(at + 16), b.readUInt32BE(at + 20)),
      length,
      started: this.metrics.begin(this.receivedAt),
      charge: requestCharge(type, length, this.policy.maxRequest),
    };
    this.outstanding++;
    this.charged += req.charge;
    const rejection = checkRequest(req, this.policy);
    if (rejection !== undefined) {
      this.answers.warnOnce(`reject:${rejection.reason.split(" ")[0]}:${req.type}`, `rejected request: ${rejection.reason}`);
      if (req.type === CMD.WRITE) {
        this.phase = "discard";
        this.discardLeft = req.length;
        this.discardError = rejection.error;
        this.current = req;
        if (req.length === 0) this.finishDiscard();
        return;
      }
      this.answers.refuse(req, rejection.error, rejection.reason);
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
      const waited = split.finish((failed, error) => (failed ? this.answers.failed(req, error) : this.answers.completed(req, req.length)));
      if (waited !== undefined) this.runner.trackWrite(waited);
    }
    return pos + take;
  }

  private finishDiscard(): void {
    const req = this.current!;
    this.current = undefined;
    this.phase = "header";
    this.answers.refuse(req, this.discardError, "rejected write");
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

  private replied(req: Request): void {
    this.outstanding--;
    this.charged -= req.charge;
    // A write to the socket failed: the client is gone, so run nothing more that it sent (the close may come later).
    if (this.out.isClosed && !this.stopping) this.transportClosed();
    this.out.scheduleFlush();
    this.settle();
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
}
