/**
 * The kernel transport: connected Unix stream sockets whose one end goes to the kernel (NBD_SET_SOCK or the
 * netlink SOCKETS attribute) and whose other end is a Bun socket served by an ordinary Session, with no handshake.
 *
 * Bun cannot read a raw socketpair() descriptor efficiently, so Bun owns a listener on a private abstract name,
 * and the kernel's ends are made with libc socket() + connect(). Every accepted connection must come from this
 * process (SO_PEERCRED), so no other local process can slip in between listen and connect.
 */
import type { Socket } from "bun";
import type { BlockDevice } from "../../devices/device.ts";
import { closeFd } from "../../ffi/libc.ts";
import { AF_UNIX, SOCK_STREAM, connectUnix, openSocket, peerCredentials } from "../../ffi/sockets.ts";
import type { Logger } from "../../shared/log.ts";
import type { DeviceMetrics } from "../metrics.ts";
import { ReplyWriter } from "../reply-writer.ts";
import { Session } from "../session.ts";
import { enlargeSocketBuffers } from "../socket-buffers.ts";
import { socketFd, socketTransport } from "../socket-transport.ts";

/** How long the listener may take to accept our own connections (it is the same event loop: one turn). */
const ACCEPT_TIMEOUT_MS = 5000;

export interface KernelServeOptions {
  readonly device: BlockDevice;
  readonly metrics: DeviceMetrics;
  readonly log: Logger;
  /** Names connections in log lines: `${label} connection 2`. */
  readonly label: string;
}

/** One served connection. */
export interface KernelConnection {
  readonly session: Session;
  /** Resolves when the session has ended (the kernel closed its end, DISC, or we shut it down). */
  readonly ended: Promise<void>;
  /** Closes the server end at once (a kernel that stopped reading must not hold up shutdown). */
  terminate(): void;
}

export interface KernelSockets {
  /** The kernel's ends, to hand over; close them with `releaseKernelEnds` once the kernel holds its own references. */
  readonly kernelFds: readonly number[];
  readonly connections: readonly KernelConnection[];
  releaseKernelEnds(): void;
}

interface Accepted {
  connection: KernelConnection;
  onData(chunk: Buffer): void;
  onDrain(): void;
  onClose(): void;
}

let serial = 0;

/** Makes `count` kernel connections, each already served by a Session before the kernel sees its end. */
export async function openKernelSockets(count: number, options: KernelServeOptions): Promise<KernelSockets> {
  const name = `\0usbd-tui/${process.pid}/${++serial}/${crypto.randomUUID()}`;
  const accepted: KernelConnection[] = [];
  let wake: (() => void) | undefined;

  const handlers = {
    open(socket: Socket<Accepted | undefined>) {
      const fd = socketFd(socket);
      const peer = fd === undefined ? undefined : peerCredentials(fd).pid;
      if (peer !== process.pid || accepted.length >= count) {
        options.log.log("warn", "refused a connection to the kernel socket from another process", { pid: peer });
        socket.terminate();
        return;
      }
      enlargeSocketBuffers(fd!);
      socket.data = serveConnection(socket, accepted.length + 1, options);
      accepted.push(socket.data.connection);
      if (accepted.length === count) wake?.();
    },
    data(socket: Socket<Accepted | undefined>, chunk: Buffer) {
      socket.data?.onData(chunk);
    },
    drain(socket: Socket<Accepted | undefined>) {
      socket.data?.onDrain();
    },
    close(socket: Socket<Accepted | undefined>) {
      socket.data?.onClose();
    },
    error(socket: Socket<Accepted | undefined>, error: Error) {
      options.log.log("warn", `kernel socket error: ${error.message}`, { peer: options.label });
    },
  };

  const listener = Bun.listen<Accepted | undefined>({ unix: name, socket: handlers });
  const kernelFds: number[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const fd = openSocket(AF_UNIX, SOCK_STREAM);
      kernelFds.push(fd);
      // The kernel writes requests into this end and reads replies from it: room for a full queue each way.
      enlargeSocketBuffers(fd);
      connectUnix(fd, name);
    }
    if (accepted.length < count) {
      const all = new Promise<void>((resolve) => (wake = resolve));
      const timeout = Bun.sleep(ACCEPT_TIMEOUT_MS).then(() => "timeout" as const);
      if ((await Promise.race([all, timeout])) === "timeout") {
        throw new Error(`only ${accepted.length} of ${count} kernel sockets were accepted within ${ACCEPT_TIMEOUT_MS} ms`);
      }
    }
  } catch (error) {
    for (const fd of kernelFds) closeFd(fd);
    for (const c of accepted) c.terminate();
    throw error;
  } finally {
    // Established connections stay open; the abstract name disappears with the listener.
    listener.stop(false);
  }

  let released = false;
  return {
    kernelFds,
    connections: accepted,
    releaseKernelEnds() {
      if (released) return;
      released = true;
      for (const fd of kernelFds) closeFd(fd);
    },
  };
}

function serveConnection(socket: Socket<Accepted | undefined>, number: number, options: KernelServeOptions): Accepted {
  let closed = false;
  let resolveEnded!: () => void;
  const ended = new Promise<void>((resolve) => (resolveEnded = resolve));
  const transport = socketTransport(socket);
  const out = new ReplyWriter(transport);
  const session = new Session({
    device: options.device,
    metrics: options.metrics,
    transport,
    out,
    // The kernel speaks only the transmission phase, with simple replies.
    structuredReplies: false,
    baseAllocation: false,
    log: options.log,
    peer: `${options.label} connection ${number}`,
    onEnd: resolveEnded,
  });
  return {
    connection: {
      session,
      ended,
      terminate() {
        out.markClosed();
        socket.terminate();
      },
    },
    onData(chunk) {
      try {
        session.receive(chunk);
      } catch (error) {
        // A bug must cost this one connection, never the daemon.
        options.log.log("error", `internal error, closing the kernel connection: ${error instanceof Error ? error.stack : String(error)}`, {
          peer: `${options.label} connection ${number}`,
        });
        socket.end();
      }
    },
    onDrain() {
      session.drain();
    },
    onClose() {
      if (closed) return;
      closed = true;
      out.markClosed();
      session.transportClosed();
      resolveEnded();
    },
  };
}
