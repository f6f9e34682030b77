/**
 * A connection's byte stream after NBD_OPT_STARTTLS: the Bun socket the plain-text handshake used is upgraded in
 * place to a server-side TLS socket (`upgradeTLS` with `isServer`, the route Bun's own node:tls takes for a server
 * TLSSocket over a net.Socket), and the channel is the Transport the handshake and the session then use. Records
 * are decrypted and encrypted in Bun's native TLS layer: replies go from our buffers straight into it, decrypted
 * requests arrive as chunks. Plain-text connections never touch this file (socket-transport.ts).
 */
import type { Socket, SocketHandler } from "bun";
import { peerClosed } from "../ffi/sockets.ts";
import type { Transport } from "./reply-writer.ts";
import { socketFd } from "./socket-transport.ts";
import type { TlsServerConfig } from "./tls.ts";

export interface TlsChannelEvents {
  /** The TLS handshake finished (and, with --tls-verify-peer, the client's certificate was accepted). */
  secure(details: { readonly protocol: string; readonly peerSubject: string | undefined }): void;
  /** Decrypted bytes from the client. */
  data(chunk: Buffer): void;
  /** The channel takes writes again after taking fewer bytes than offered. */
  drain(): void;
  /** The TLS handshake or a record failed (a client without an acceptable certificate, a plain-text client); the channel then ends. */
  failed(reason: string): void;
  /** The TLS socket closed. */
  closed(): void;
}

/**
 * What Bun 1.4.5's `upgradeTLS` takes beyond its published type: `isServer` (without it the socket runs the client
 * side and waits for a ServerHello) and `initialData`, bytes already read from the socket that belong to the TLS
 * stream (a ClientHello that came in the same read as the STARTTLS option). Bun's node:tls passes both.
 */
interface ServerUpgradeOptions {
  readonly isServer: true;
  readonly initialData?: Uint8Array;
  readonly data: undefined;
  readonly tls: {
    readonly secureContext: unknown;
    readonly requestCert: boolean;
    readonly rejectUnauthorized: boolean;
  };
  readonly socket: SocketHandler<undefined>;
}
type ServerUpgrade = (options: ServerUpgradeOptions) => [raw: Socket<undefined>, tls: Socket<undefined>];

export class TlsChannel implements Transport {
  private readonly tls: Socket<undefined> | undefined;
  private readonly fd: number | undefined;
  private readonly verifyPeer: boolean;
  private closed = false;
  private failureReported = false;

  /** Upgrades `socket` at once: nothing may be left unsent on it in plain text (see NetworkConnection.startTls). */
  constructor(socket: Socket<unknown>, config: TlsServerConfig, early: Uint8Array, private readonly events: TlsChannelEvents) {
    this.fd = socketFd(socket);
    this.verifyPeer = config.verifyPeer;
    const upgrade = (socket as unknown as { upgradeTLS: ServerUpgrade }).upgradeTLS.bind(socket);
    const [, tls] = upgrade({
      isServer: true,
      data: undefined,
      ...(early.length > 0 ? { initialData: early } : {}),
      tls: {
        secureContext: (config.context as unknown as { context: unknown }).context,
        requestCert: config.verifyPeer,
        rejectUnauthorized: config.verifyPeer,
      },
      socket: {
        handshake: (tlsSocket, success, authorizationError) => this.handshaken(tlsSocket, success, authorizationError),
        data: (_tlsSocket, chunk) => {
          if (!this.closed) events.data(chunk);
        },
        drain: () => events.drain(),
        error: (_tlsSocket, error) => this.fail(error.message),
        close: () => this.socketClosed(),
      },
    });
    this.tls = tls;
  }

  private handshaken(tlsSocket: Socket<undefined>, success: boolean, authorizationError: Error | null): void {
    // Without --tls-verify-peer no certificate is asked for, and the "error" Bun reports is only that none came.
    if (!success || (this.verifyPeer && authorizationError !== null)) {
      this.fail(authorizationError?.message ?? "the TLS handshake failed");
      return;
    }
    const subject = tlsSocket.getPeerCertificate()?.subject as Record<string, string> | undefined;
    this.events.secure({ protocol: tlsSocket.getTLSVersion() || "TLS", peerSubject: subject?.CN });
  }

  private fail(reason: string): void {
    if (this.failureReported || this.closed) return;
    this.failureReported = true;
    this.events.failed(reason);
    // Bun may report a failure from inside upgradeTLS (bad initial bytes), before `tls` is set.
    queueMicrotask(() => this.end());
  }

  /** The TLS socket (or the socket under it) closed: nothing more comes in or goes out. */
  socketClosed(): void {
    if (this.closed) return;
    this.closed = true;
    this.events.closed();
  }

  write(data: Uint8Array, byteOffset: number, byteLength: number): number {
    if (this.closed || this.tls === undefined) return -1;
    return this.tls.write(data, byteOffset, byteLength);
  }

  end(): void {
    if (!this.closed) this.tls?.end();
  }

  destroy(): void {
    this.tls?.terminate();
    this.socketClosed();
  }

  pause(): void {
    this.tls?.pause();
  }

  resume(): void {
    this.tls?.resume();
  }

  readonly peerGone = (): boolean => this.fd !== undefined && peerClosed(this.fd);
}
