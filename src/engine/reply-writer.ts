/**
 * Coalesces NBD replies into as few socket writes as possible and handles backpressure, so that a burst of small
 * replies costs one syscall and large read payloads go to the socket without an extra copy.
 */

import { SpillRing } from "./spill-ring.ts";

/** The byte stream a session writes to: a Bun socket, or the kernel's end of a socket pair. */
export interface Transport {
  /** Writes as much as the OS takes now; returns the bytes written (may be fewer), or -1 once closed. */
  write(data: Uint8Array, byteOffset: number, byteLength: number): number;
  /** Closes the stream after everything written so far. */
  end(): void;
  /** Optional: closes the stream at once, dropping whatever is unsent (the peer is gone). Default: `end`. */
  destroy?(): void;
  /**
   * Optional: reads bytes that are already waiting on the stream straight into `dest` (no more than its length),
   * returning how many; 0 when none are waiting or the stream has ended (its close is reported separately). It
   * must only return bytes that come after every chunk already handed to the session, in order.
   */
  receiveInto?(dest: Uint8Array): number;
  /** Optional: stops reading the stream (the peer then meets backpressure) until `resume`. */
  pause?(): void;
  resume?(): void;
  /**
   * Optional: whether the peer has gone, checked without reading. A paused stream is not watched for its close,
   * so a session that paused asks this now and then.
   */
  peerGone?(): boolean;
}

const STAGING_SIZE = 256 * 1024;
/** Payloads at least this large skip the staging buffer and are written straight from their own memory. */
const DIRECT_THRESHOLD = 64 * 1024;

export class ReplyWriter {
  /** Reply headers and small payloads collect here until `flush`. */
  readonly staging: Buffer = Buffer.allocUnsafe(STAGING_SIZE);
  used = 0;
  /** Copies of bytes the socket did not take yet, in order. */
  private readonly backlog = new SpillRing();
  private flushScheduled = false;
  private closed = false;
  /** Callers of `whenDrained` waiting for the backlog to reach the socket. */
  private drainWaiters: Array<() => void> = [];
  private readonly scheduledFlush = (): void => {
    this.flushScheduled = false;
    this.flush();
  };

  private readonly write = (data: Uint8Array, offset: number, length: number): number =>
    this.transport.write(data, offset, length);

  constructor(private readonly transport: Transport) {}

  /** The transport refused a write (the peer is gone): nothing more will be sent. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Reply bytes queued and not yet taken by the transport (staged, or held back by backpressure). */
  get pendingBytes(): number {
    return this.used + this.backlog.size;
  }

  /** Makes room for `n` bytes in the staging buffer and returns the offset to write them at. */
  reserve(n: number): number {
    if (this.used + n > STAGING_SIZE) this.flush();
    const at = this.used;
    this.used += n;
    return at;
  }

  /** Queues a payload: small ones are copied into staging, large ones are sent from their own memory. */
  payload(data: Uint8Array): void {
    if (data.length < DIRECT_THRESHOLD) {
      const at = this.reserve(data.length);
      this.staging.set(data, at);
      return;
    }
    this.flush();
    this.send(data);
  }

  /** Sends staged bytes soon (after the current burst of completions), coalescing replies of one tick. */
  scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    queueMicrotask(this.scheduledFlush);
  }

  flush(): void {
    if (this.used === 0) return;
    const n = this.used;
    this.used = 0;
    this.send(this.staging.subarray(0, n));
  }

  /** The socket can take more: write the backlog out. */
  drain(): void {
    if (this.closed) return;
    if (this.backlog.writeTo(this.write) < 0) return this.markClosed();
    if (this.backlog.size > 0) return;
    this.flush();
    if (this.backlog.size === 0) this.wakeDrainWaiters();
  }

  /**
   * Resolves once everything queued so far has been handed to the socket (or the socket closed), so the caller can
   * end the stream without cutting off replies still waiting behind backpressure.
   */
  whenDrained(): Promise<void> {
    this.flush();
    if (this.backlog.size === 0 || this.closed) return Promise.resolve();
    return new Promise<void>((resolve) => this.drainWaiters.push(resolve));
  }

  markClosed(): void {
    this.closed = true;
    this.backlog.clear();
    this.used = 0;
    this.wakeDrainWaiters();
  }

  private wakeDrainWaiters(): void {
    if (this.drainWaiters.length === 0) return;
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const resolve of waiters) resolve();
  }

  /** Writes now if nothing is waiting; otherwise (or for whatever the socket leaves) keeps a copy in the ring. */
  private send(bytes: Uint8Array): void {
    if (this.closed) return;
    if (this.backlog.size > 0) return this.backlog.push(bytes);
    const written = this.transport.write(bytes, 0, bytes.length);
    if (written < 0) return this.markClosed();
    // Copy what is left: staging is reused and device views may change once we return.
    if (written < bytes.length) this.backlog.push(bytes.subarray(written));
  }
}
