/**
 * A connection's byte stream after NBD_OPT_STARTTLS: Bun's node:tls runs the server side of TLS over the same Bun
 * socket the plain-text handshake used (a Duplex feeds it the socket's bytes and writes its records back), and the
 * channel is the Transport the handshake and the session then use. Plain-text connections never touch this file:
 * their path is the Bun socket straight (socket-transport.ts), as fast as before TLS existed.
 */
import type { Socket } from "bun";
import { Duplex } from "node:stream";
import { TLSSocket } from "node:tls";
import { peerClosed } from "../ffi/sockets.ts";
import type { Transport } from "./reply-writer.ts";
import { socketFd } from "./socket-transport.ts";
import type { TlsServerConfig } from "./tls.ts";

/**
 * Encrypted bytes the socket has not taken yet, beyond which the channel takes no more writes: the session's reply
 * writer keeps the rest (and counts it against the connection's memory budget) until `drain`.
 */
const BACKLOG_LIMIT = 4 * 1024 * 1024;
/** A batch holds a 1 MiB read reply with its header and the next reply's header. */
const BATCH_BYTES = 1024 * 1024 + 64 * 1024;

export interface TlsChannelEvents {
  /** The TLS handshake finished (and, with --tls-verify-peer, the client's certificate was accepted). */
  secure(details: { readonly protocol: string; readonly peerSubject: string | undefined }): void;
  /** Decrypted bytes from the client. */
  data(chunk: Buffer): void;
  /** The channel takes writes again after refusing some. */
  drain(): void;
  /** The TLS handshake or a record failed (a client without an acceptable certificate, a plain-text client). */
  failed(reason: string): void;
}

export class TlsChannel implements Transport {
  private readonly raw: Duplex;
  private readonly tls: TLSSocket;
  /** Encrypted bytes waiting for the socket, and the callbacks that release the Duplex once they are written. */
  private readonly queue: Buffer[] = [];
  private queued = 0;
  private readonly written: Array<() => void> = [];
  private refused = false;
  private closed = false;
  private secured = false;
  private failureReported = false;
  private readonly fd: number | undefined;
  /**
   * Replies copied back to back, in batches of about a read reply each, handed to TLSSocket one at a time: the next
   * batch goes when TLS has taken the last. Written one by one, each reply's header and payload were copied here,
   * then joined once more by the stream's writev whenever TLS was still busy (two copies of every payload, 1.8 s of a
   * 6 s read job's server CPU); one big batch per tick was slower still (Bun's TLS takes big writes badly).
   */
  private readonly batches: Array<{ readonly bytes: Buffer; length: number }> = [];
  private batched = 0;
  private batchScheduled = false;
  /** A batch is in the TLS stream and not yet taken. */
  private inTls = false;
  private readonly sendBatch = (): void => {
    this.batchScheduled = false;
    this.flushBatch();
  };

  constructor(
    private readonly socket: Socket<unknown>,
    config: TlsServerConfig,
    private readonly events: TlsChannelEvents,
  ) {
    this.fd = socketFd(socket);
    this.raw = new Duplex({
      read() {},
      write: (chunk: Buffer, _encoding, done) => this.writeRaw(chunk, done),
      final: (done) => {
        socket.end();
        done();
      },
    });
    this.tls = new TLSSocket(this.raw as unknown as ConstructorParameters<typeof TLSSocket>[0], {
      isServer: true,
      secureContext: config.context,
      requestCert: config.verifyPeer,
      rejectUnauthorized: config.verifyPeer,
    });
    this.tls.on("secure", () => {
      this.secured = true;
      const subject = this.tls.getPeerCertificate()?.subject as Record<string, string> | undefined;
      events.secure({ protocol: this.tls.getProtocol() ?? "TLS", peerSubject: subject?.CN });
    });
    this.tls.on("data", (chunk: Buffer) => events.data(chunk));
    this.tls.on("drain", () => this.maybeDrained());
    this.tls.on("error", (error: Error) => {
      // A refused handshake may report only after the socket closed; an error after a socket closed mid-session is
      // just the close.
      if (this.failureReported || (this.closed && this.secured)) return;
      this.failureReported = true;
      events.failed(error.message);
    });
  }

  /** Bytes the socket received (TLS records). */
  feed(chunk: Uint8Array): void {
    if (!this.closed) this.raw.push(chunk);
  }

  /** The socket can take more: write what waits. */
  socketDrained(): void {
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      const n = this.socket.write(head);
      if (n < 0) break;
      this.queued -= n;
      if (n < head.length) {
        this.queue[0] = head.subarray(n);
        return;
      }
      this.queue.shift();
    }
    if (this.queue.length === 0) for (const done of this.written.splice(0)) done();
    this.maybeDrained();
  }

  /** The socket closed: nothing more comes in or goes out. */
  socketClosed(): void {
    if (this.closed) return;
    this.closed = true;
    this.raw.push(null);
    this.tls.destroy();
  }

  write(data: Uint8Array, byteOffset: number, byteLength: number): number {
    if (this.closed || this.tls.destroyed) return -1;
    if (this.backlog >= BACKLOG_LIMIT) {
      this.refused = true;
      return 0;
    }
    // A copy either way: the reply writer reuses its staging buffer, and a device its pages, once this returns.
    let tail = this.batches[this.batches.length - 1];
    if (tail === undefined || tail.bytes.length - tail.length < byteLength) {
      tail = { bytes: Buffer.allocUnsafe(Math.max(BATCH_BYTES, byteLength)), length: 0 };
      this.batches.push(tail);
    }
    tail.bytes.set(data.subarray(byteOffset, byteOffset + byteLength), tail.length);
    tail.length += byteLength;
    this.batched += byteLength;
    if (!this.batchScheduled) {
      this.batchScheduled = true;
      queueMicrotask(this.sendBatch);
    }
    return byteLength;
  }

  /** Hands the oldest batch to TLS, unless TLS has not taken the last one yet: then it goes once it has. */
  private flushBatch(): void {
    if (this.inTls || this.closed || this.tls.destroyed) return;
    const head = this.batches.shift();
    if (head === undefined) return;
    this.batched -= head.length;
    this.inTls = true;
    this.tls.write(head.bytes.subarray(0, head.length), () => {
      this.inTls = false;
      this.flushBatch();
      this.maybeDrained();
    });
  }

  end(): void {
    if (this.closed) return;
    this.flushBatch();
    // close_notify, then the Duplex's final ends the socket once everything before it is written.
    this.tls.end();
  }

  destroy(): void {
    this.socketClosed();
    this.socket.terminate();
  }

  pause(): void {
    this.socket.pause();
    this.tls.pause();
  }

  resume(): void {
    this.socket.resume();
    this.tls.resume();
  }

  readonly peerGone = (): boolean => this.fd !== undefined && peerClosed(this.fd);

  private get backlog(): number {
    return this.batched + this.queued + this.raw.writableLength + this.tls.writableLength;
  }

  private writeRaw(chunk: Buffer, done: () => void): void {
    if (this.queue.length === 0) {
      const n = this.socket.write(chunk);
      if (n < 0 || n === chunk.length) return done();
      chunk = chunk.subarray(n);
    }
    this.queue.push(chunk);
    this.queued += chunk.length;
    this.written.push(done);
  }

  private maybeDrained(): void {
    if (!this.refused || this.backlog >= BACKLOG_LIMIT / 2) return;
    this.refused = false;
    this.events.drain();
  }
}
