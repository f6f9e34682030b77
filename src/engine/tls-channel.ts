/**
 * A connection's byte stream after NBD_OPT_STARTTLS: a server-side TLS socket (Bun's `upgradeTLS` with `isServer`,
 * the route Bun's own node:tls takes for a server TLSSocket over a net.Socket), and the channel is the Transport the
 * handshake and the session then use. Records are decrypted and encrypted in Bun's native TLS layer: replies go from
 * our buffers straight into it, decrypted requests arrive as chunks. Plain-text connections never touch this file
 * (socket-transport.ts).
 *
 * The TLS socket is not made from the listener's socket but from a second descriptor for the same connection. An
 * upgraded socket keeps the handlers it had on its raw side, and Bun copies every encrypted record it reads into a
 * Buffer for a raw `data` handler when there is one: the listener's is, and the copy, thrown away unread, was a
 * tenth of the server's CPU on 1 MiB writes. A socket opened on the duplicate has no `data` handler, so nothing is
 * copied; the listener's socket is then closed (its descriptor only, with no shutdown: `closeThisDescriptor`).
 */
import type { FdSocketOptions, Socket, SocketHandler } from "bun";
import { libc } from "../ffi/libc.ts";
import { duplicateDescriptor, peerClosed } from "../ffi/sockets.ts";
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
  private readonly tls: Socket<undefined>;
  /** The duplicate descriptor the TLS socket runs on (the listener's is closed once the channel exists). */
  readonly fd: number;
  private readonly verifyPeer: boolean;
  private closed = false;
  private failureReported = false;

  /**
   * Starts TLS on the connection `socket` carries, at once: nothing may be left unsent on it in plain text (see
   * NetworkConnection.startTls). `socket` is paused here and must then be closed with `closeThisDescriptor`. Throws
   * when the connection cannot be carried over (no descriptor left in the process); `socket` is then untouched but
   * paused.
   */
  constructor(socket: Socket<unknown>, config: TlsServerConfig, early: Uint8Array, private readonly events: TlsChannelEvents) {
    this.verifyPeer = config.verifyPeer;
    const original = socketFd(socket);
    if (original === undefined) throw new Error("the connection has no descriptor to start TLS on");
    socket.pause();
    this.fd = duplicateDescriptor(original);
    const plain = openOnDescriptor(this.fd, () => this.socketClosed());
    const upgrade = (plain as unknown as { upgradeTLS: ServerUpgrade }).upgradeTLS.bind(plain);
    this.tls = this.upgradeOrClose(plain, () => upgrade({
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
    })[1]);
  }

  private upgradeOrClose(plain: Socket<undefined>, upgrade: () => Socket<undefined>): Socket<undefined> {
    try {
      return upgrade();
    } catch (error) {
      closeThisDescriptor(plain);
      throw error;
    }
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
    if (this.closed) return -1;
    return this.tls.write(data, byteOffset, byteLength);
  }

  end(): void {
    if (!this.closed) this.tls.end();
  }

  destroy(): void {
    this.tls.terminate();
    this.socketClosed();
  }

  pause(): void {
    this.tls.pause();
  }

  resume(): void {
    this.tls.resume();
  }

  readonly peerGone = (): boolean => peerClosed(this.fd);
}

/**
 * A Bun socket on the connected descriptor `fd`, with no `data` handler (see the file comment). Bun opens a socket
 * given a descriptor before `connect` returns; if it cannot, `fd` is closed here and this throws.
 */
function openOnDescriptor(fd: number, closed: () => void): Socket<undefined> {
  let opened: Socket<undefined> | undefined;
  // Bun.connect takes FdSocketOptions, which its published overloads leave out.
  const connect = Bun.connect as unknown as (options: FdSocketOptions<undefined>) => Promise<Socket<undefined>>;
  connect({ fd, socket: { open: (socket) => void (opened = socket), drain() {}, close: closed } }).catch(() => undefined);
  if (opened !== undefined) return opened;
  libc().close(fd);
  throw new Error(`Bun could not open a socket on descriptor ${fd}`);
}

/**
 * Closes `socket` by close(2) of its own descriptor only, which leaves the connection open in a duplicate: how the
 * listener's socket lets go of a connection that now runs in a TlsChannel (`end` would shut the connection down;
 * `terminate` would set SO_LINGER so that its last close resets it). The socket's close handler runs at once.
 */
export function closeThisDescriptor(socket: Socket<unknown>): void {
  (socket as unknown as { close(): void }).close();
}
