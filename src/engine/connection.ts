/**
 * One client connection of a network listener: the handshake (with its deadline and its share of the memory
 * budget), then a Session on the same socket for the transmission phase. After NBD_OPT_STARTTLS the socket is
 * upgraded to TLS in place and both run inside its TlsChannel; a plain-text connection uses the socket directly.
 */
import type { Socket } from "bun";
import type { Logger } from "../shared/log.ts";
import { BudgetAccount, type MemoryBudget } from "./memory-budget.ts";
import type { DeviceMetrics } from "./metrics.ts";
import type { BlockDevice } from "../devices/device.ts";
import { type ExportInfo, Handshake, type Negotiated } from "./protocol/handshake.ts";
import { maxRequestSize } from "./protocol/requests.ts";
import { ReplyWriter } from "./reply-writer.ts";
import { Session } from "./session.ts";
import { socketFd, socketTransport } from "./socket-transport.ts";
import type { TlsServerConfig } from "./tls.ts";
import { TlsChannel, closeThisDescriptor } from "./tls-channel.ts";

/**
 * Handshake replies a client may leave unread before the server stops answering its options: far more than any
 * real client's whole negotiation, small enough that a flood of unread INFO replies costs nothing.
 */
const HANDSHAKE_REPLY_LIMIT = 64 * 1024;

/** A client that chose an export, or left after choosing one. */
export interface ClientEvent {
  readonly kind: "connected" | "disconnected";
  readonly peer: string;
  readonly export: string;
  /** The connection's descriptor (connected only), for SO_PEERCRED. */
  readonly fd?: number;
}

/** What a connection needs from its listener. */
export interface ConnectionContext {
  readonly log: Logger;
  readonly budget: MemoryBudget;
  /** Milliseconds a client has to finish the handshake (TLS included); 0 for no deadline. */
  readonly handshakeTimeoutMs: number;
  /** TLS offered or required (--tls); undefined when off. */
  readonly tls: TlsServerConfig | undefined;
  findExport(name: string): ExportInfo | undefined;
  listExports(): readonly ExportInfo[];
  /** The device and metrics behind an export the handshake chose. */
  served(name: string): { readonly device: BlockDevice; readonly metrics: DeviceMetrics };
  readonly onClient: ((event: ClientEvent) => void) | undefined;
  /** A client that never finished its handshake in time (logged by the listener, which throttles). */
  timedOut(peer: string): void;
  /** The connection is gone (closed by either side). */
  closed(conn: NetworkConnection): void;
}

export class NetworkConnection {
  /** Where replies go: the socket, or the TLS channel once STARTTLS succeeded. */
  out: ReplyWriter;
  readonly account: BudgetAccount;
  handshake: Handshake | undefined;
  session: Session | undefined;
  /** The export the session serves, once the handshake chose one. */
  exportName: string | undefined;
  closed = false;
  private deadline: ReturnType<typeof setTimeout> | undefined;
  /** Reading is paused because the client left handshake replies unread. */
  private handshakePaused = false;
  /** The TLS channel after STARTTLS. */
  private tls: TlsChannel | undefined;
  /**
   * STARTTLS was acknowledged but the socket has not taken the whole acknowledgement yet: the upgrade waits for it
   * (TLS must start after the last plain-text byte), and what the client sends meanwhile (its ClientHello) is kept.
   */
  private upgradeWaiting: Uint8Array[] | undefined;

  constructor(
    readonly id: number,
    readonly peer: string,
    readonly socket: Socket<NetworkConnection>,
    private readonly ctx: ConnectionContext,
  ) {
    this.out = new ReplyWriter(socketTransport(socket));
    this.account = new BudgetAccount(ctx.budget);
  }

  start(): void {
    const { ctx } = this;
    if (ctx.handshakeTimeoutMs > 0) {
      this.deadline = setTimeout(() => {
        if (this.handshake === undefined || this.closed) return;
        ctx.timedOut(this.peer);
        (this.tls ?? this.socket).end();
      }, ctx.handshakeTimeoutMs);
    }
    this.handshake = new Handshake({
      findExport: (name) => ctx.findExport(name),
      listExports: () => ctx.listExports(),
      maxRequest: maxRequestSize(ctx.budget.limit),
      send: (bytes) => {
        this.out.payload(bytes);
        this.out.flush();
      },
      mayContinue: () => this.out.pendingBytes < HANDSHAKE_REPLY_LIMIT,
      close: (reason) => {
        if (reason !== undefined) ctx.log.log("warn", `handshake failed: ${reason}`, { peer: this.peer });
        this.out.flush();
        if (this.tls) this.tls.end();
        else this.socket.end();
      },
      done: (result) => this.startSession(result),
      tls: ctx.tls?.mode ?? "off",
      startTls: (early) => this.startTls(early),
    });
    this.handshake.start();
  }

  /** Bytes from the socket: plain text; once TLS is up these are its records, which the channel reads itself. */
  onData(chunk: Buffer): void {
    if (this.tls) return;
    if (this.upgradeWaiting) {
      this.upgradeWaiting.push(Buffer.from(chunk));
      return;
    }
    this.received(chunk);
  }

  private received(chunk: Buffer): void {
    if (this.session) return this.session.receive(chunk);
    const handshake = this.handshake;
    if (handshake === undefined) return;
    handshake.receive(chunk);
    this.holdHandshake();
  }

  /** The socket takes writes again (once TLS is up, the channel reports its own drain). */
  onDrain(): void {
    if (this.tls) return;
    if (this.upgradeWaiting === undefined) return this.drained();
    this.out.drain();
    if (this.out.pendingBytes === 0) this.upgrade(Buffer.concat(this.upgradeWaiting.splice(0)));
  }

  /** The transport (socket or TLS channel) takes writes again. */
  private drained(): void {
    if (this.session) return this.session.drain();
    this.out.drain();
    if (this.handshakePaused && this.out.pendingBytes < HANDSHAKE_REPLY_LIMIT) {
      this.handshakePaused = false;
      (this.tls ?? this.socket).resume();
      this.handshake?.resume();
    }
    this.holdHandshake();
  }

  /** The listener's socket closed; after STARTTLS that is the release of its descriptor, and the channel reports the close. */
  onClose(): void {
    if (this.tls === undefined) this.finish();
  }

  /** Sends what is queued, then closes the connection. */
  end(): void {
    this.out.flush();
    (this.tls ?? this.socket).end();
  }

  /** Closes the connection at once, dropping whatever is unsent. */
  terminate(): void {
    this.out.markClosed();
    if (this.tls) this.tls.destroy();
    else this.socket.terminate();
  }

  /** The connection's descriptor (after STARTTLS, the duplicate the TLS socket runs on). */
  get fd(): number | undefined {
    return this.tls?.fd ?? socketFd(this.socket);
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.deadline);
    this.out.markClosed();
    this.upgradeWaiting = undefined;
    this.tls?.socketClosed();
    if (this.session) this.session.transportClosed();
    else this.account.close();
    this.ctx.closed(this);
    if (this.exportName !== undefined) this.ctx.onClient?.({ kind: "disconnected", peer: this.peer, export: this.exportName });
  }

  /** During the handshake: report its memory, and stop reading while its replies wait unread. */
  private holdHandshake(): void {
    if (this.handshake === undefined || this.session !== undefined) return;
    this.account.hold(this.out.pendingBytes + this.handshake.bufferedBytes);
    if (!this.handshakePaused && this.out.pendingBytes >= HANDSHAKE_REPLY_LIMIT) {
      this.handshakePaused = true;
      (this.tls ?? this.socket).pause();
    }
  }

  /** STARTTLS was acknowledged: the TLS handshake runs on the socket, then the option haggling starts over in it. */
  private startTls(early: Uint8Array): void {
    if (this.ctx.tls === undefined) throw new Error("STARTTLS accepted without TLS settings");
    this.out.flush();
    if (this.out.pendingBytes === 0) return this.upgrade(early);
    this.upgradeWaiting = early.length > 0 ? [Buffer.from(early)] : [];
  }

  private upgrade(early: Uint8Array): void {
    const { ctx } = this;
    this.upgradeWaiting = undefined;
    let channel: TlsChannel;
    try {
      channel = this.openChannel(early);
    } catch (error) {
      ctx.log.log("warn", `cannot start TLS, closing the connection: ${error instanceof Error ? error.message : String(error)}`, { peer: this.peer });
      this.out.markClosed();
      this.socket.terminate();
      return;
    }
    this.tls = channel;
    this.out = new ReplyWriter(channel);
    closeThisDescriptor(this.socket);
  }

  private openChannel(early: Uint8Array): TlsChannel {
    const { ctx } = this;
    return new TlsChannel(this.socket, ctx.tls!, early, {
      secure: ({ protocol, peerSubject }) => {
        ctx.log.log("debug", "TLS established", { peer: this.peer, protocol, ...(peerSubject === undefined ? {} : { client: peerSubject }) });
        this.handshake?.restartInTls();
        this.holdHandshake();
      },
      data: (chunk) => this.received(chunk),
      drain: () => this.drained(),
      failed: (reason) => {
        ctx.log.log("warn", `TLS failed, closing the connection: ${reason}`, { peer: this.peer });
        this.out.markClosed();
      },
      closed: () => this.finish(),
    });
  }

  private startSession(result: Negotiated): void {
    const { ctx } = this;
    clearTimeout(this.deadline);
    const chosen = ctx.served(result.exportName);
    this.handshake = undefined;
    this.exportName = result.exportName;
    this.session = new Session({
      device: chosen.device,
      metrics: chosen.metrics,
      transport: this.tls ?? socketTransport(this.socket),
      out: this.out,
      account: this.account,
      structuredReplies: result.structuredReplies,
      baseAllocation: result.baseAllocation,
      log: ctx.log,
      peer: this.peer,
      onEnd: () => ctx.log.log("debug", "session ended", { peer: this.peer }),
    });
    ctx.log.log("debug", "client selected export", { peer: this.peer, export: result.exportName, structured: result.structuredReplies });
    ctx.onClient?.({ kind: "connected", peer: this.peer, export: result.exportName, fd: this.fd });
    if (result.rest.length > 0) this.session.receive(result.rest);
  }
}
