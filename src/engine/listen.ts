/**
 * Serves exports over a Unix or TCP socket for qemu, nbdfuse, nbd-client and libnbd tools: each connection runs
 * the handshake, then hands the same socket to a Session for the transmission phase.
 */
import { chmodSync, chownSync, existsSync, lstatSync, unlinkSync } from "node:fs";
import type { TCPSocketListener, UnixSocketListener } from "bun";
import { type BlockDevice, resolveCapabilities } from "../devices/device.ts";
import { setListenBacklog } from "../ffi/sockets.ts";
import type { Logger } from "../shared/log.ts";
import { AcceptGuard, DEFAULT_MAX_CONNECTIONS, ThrottledLog } from "./accept-guard.ts";
import { type ListenAddress, describeAddress, exportUri } from "./address.ts";
import { type ClientEvent, type ConnectionContext, NetworkConnection } from "./connection.ts";
import { type MemoryBudget, sharedMemoryBudget } from "./memory-budget.ts";
import type { DeviceMetrics } from "./metrics.ts";
import type { ExportInfo } from "./protocol/handshake.ts";
import { enlargeSocketBuffers } from "./socket-buffers.ts";
import { socketFd } from "./socket-transport.ts";
import { isLoopbackHost, type TlsServerConfig } from "./tls.ts";

/** A device offered under a name. */
export interface Export {
  readonly name: string;
  readonly description?: string;
  readonly device: BlockDevice;
  readonly metrics: DeviceMetrics;
}

export interface ListenOptions {
  readonly log: Logger;
  /**
   * How long `stop()` lets connections finish their in-flight requests and take their replies before it cuts them
   * off (a client that stopped reading, a device request that never returns). Default 10 s.
   */
  readonly shutdownGraceMs?: number;
  /**
   * Told when a client has chosen an export (its session starts; `fd` is the connection's descriptor, for
   * SO_PEERCRED) and when such a client's connection closes. For the Host's client list and events.
   */
  readonly onClient?: (event: ClientEvent) => void;
  /** Milliseconds a client has to finish the handshake before it is disconnected (default 10 s; 0: no limit). */
  readonly handshakeTimeoutMs?: number;
  /** Connections served at once; more are refused with a log line (default 128). */
  readonly maxConnections?: number;
  /** The memory budget connections share (default: the process-wide one). */
  readonly budget?: MemoryBudget;
  /**
   * Unix sockets only: the group (gid) that may connect as well as the owner; the socket is then 0660 instead of
   * 0600. Either way the mode is set before anything can connect, whatever the umask.
   */
  readonly socketGroup?: number;
  /** TLS offered (mode "on") or required ("require") with these credentials (--tls, --tls-certificates); default off. */
  readonly tls?: TlsServerConfig;
}

const DEFAULT_SHUTDOWN_GRACE_MS = 10_000;
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/** Connection bursts wait in the accept queue up to this deep (capped by net.core.somaxconn; Bun's own is 512). */
const ACCEPT_BACKLOG = 4096;

export interface NbdServer {
  /** Where the server listens (for TCP port 0, the port the OS picked). */
  readonly address: ListenAddress;
  /** The URI clients use for an export (the first export still offered when no name is given). */
  uri(exportName?: string): string;
  /** Open connections, in the handshake or serving. */
  readonly connectionCount: number;
  /** Names of the exports still offered, in order (the first is the default export ""). */
  readonly exportNames: readonly string[];
  /**
   * Stops offering one export while the others go on: it leaves the export list, and a client that asks for it
   * from now on (GO, INFO, EXPORT_NAME, or "" once it would be the default) is answered as for an unknown export.
   * Connections serving it finish the requests they already sent and are closed, as `stop()` closes every
   * connection (same grace period); other connections are untouched. The socket stays up, even with no export
   * left. Resolves once those connections have sent their last replies and are being closed (or were cut off).
   * Throws ListenError for a name that is not offered (never was, or already withdrawn).
   */
  withdraw(exportName: string): Promise<void>;
  /** Stops accepting, lets every connection finish the requests it already sent, closes them, removes the socket. */
  stop(): Promise<void>;
}

export class ListenError extends Error {}

function exportInfo(e: Export): ExportInfo {
  const caps = resolveCapabilities(e.device);
  return {
    name: e.name,
    description: e.description ?? "",
    size: e.device.size,
    blockSize: e.device.blockSize,
    readOnly: caps.readOnly,
    trim: caps.trim,
    fastZero: caps.fastZero,
    multiConn: caps.multiConn,
  };
}

/** Refuses to steal a live server's socket, but clears a stale one left by a crashed process. */
async function prepareUnixPath(path: string): Promise<void> {
  if (!existsSync(path)) return;
  if (!lstatSync(path).isSocket()) throw new ListenError(`${path} exists and is not a socket; choose another path`);
  const alive = await Bun.connect({ unix: path, socket: { data() {}, open(s) { s.end(); } } }).then(
    () => true,
    () => false,
  );
  if (alive) throw new ListenError(`another server is already listening on ${path}; stop it or choose another path`);
  unlinkSync(path);
}

type Listener = UnixSocketListener<NetworkConnection> | TCPSocketListener<NetworkConnection>;
type Handlers = Parameters<typeof Bun.listen<NetworkConnection>>[0]["socket"];

/**
 * Binds the listening socket. A Unix socket is created under a umask that leaves it 0600 (then 0660 for
 * `socketGroup`), so no other user can connect between bind() and a chmod. The umask is process-wide, but nothing
 * else runs on this thread during the synchronous bind.
 */
function bind(address: ListenAddress, handlers: Handlers, socketGroup: number | undefined): Listener {
  let listener: Listener;
  if (address.kind === "unix") {
    const previous = process.umask(0o177);
    try {
      listener = Bun.listen<NetworkConnection>({ unix: address.path, socket: handlers });
    } finally {
      process.umask(previous);
    }
    if (socketGroup !== undefined) {
      chownSync(address.path, -1, socketGroup);
      chmodSync(address.path, 0o660);
    }
  } else {
    listener = Bun.listen<NetworkConnection>({ hostname: address.host, port: address.port, socket: handlers });
  }
  const fd = (listener as unknown as { fd?: number }).fd;
  if (typeof fd === "number" && fd >= 0) setListenBacklog(fd, ACCEPT_BACKLOG);
  return listener;
}

export async function listen(address: ListenAddress, exports: readonly Export[], options: ListenOptions): Promise<NbdServer> {
  if (exports.length === 0) throw new ListenError("nothing to serve: no exports given");
  const { log } = options;
  // What is still offered, in order; `withdraw` removes from both.
  const offered = [...exports];
  const byName = new Map(exports.map((e) => [e.name, e] as const));
  const infos = new Map(exports.map((e) => [e.name, exportInfo(e)] as const));
  const connections = new Set<NetworkConnection>();
  let nextId = 1;
  const timeouts = new ThrottledLog(log);

  const context: ConnectionContext = {
    log,
    budget: options.budget ?? sharedMemoryBudget(),
    handshakeTimeoutMs: options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
    tls: options.tls,
    findExport(name) {
      const chosen = name === "" ? offered[0]?.name : name;
      return chosen === undefined ? undefined : infos.get(chosen);
    },
    listExports: () => [...infos.values()],
    served: (name) => byName.get(name)!,
    onClient: options.onClient,
    timedOut: (peer) =>
      timeouts.note(`closed a connection that did not finish the handshake within ${context.handshakeTimeoutMs / 1000} s (--handshake-timeout)`, { peer }),
    closed: (conn) => connections.delete(conn),
  };

  let bound: ListenAddress = address;
  let guard: AcceptGuard | undefined;
  const handlers: Handlers = {
    open(socket) {
      const fd = socketFd(socket);
      const refusal = guard?.refusal(fd, connections.size);
      if (refusal !== undefined) {
        guard?.refused(refusal);
        socket.terminate();
        return;
      }
      if (fd !== undefined) enlargeSocketBuffers(fd);
      const id = nextId++;
      const peer = address.kind === "unix" ? `unix client #${id}` : `${socket.remoteAddress} #${id}`;
      const conn = new NetworkConnection(id, peer, socket, context);
      socket.data = conn;
      connections.add(conn);
      conn.start();
    },
    data(socket, chunk) {
      const conn = socket.data;
      if (conn === undefined) return;
      try {
        conn.onData(chunk);
      } catch (error) {
        // A bug must cost this one connection, never the server.
        log.log("error", `internal error, closing the connection: ${error instanceof Error ? error.stack : String(error)}`, { peer: conn.peer });
        socket.end();
      }
    },
    drain(socket) {
      socket.data?.onDrain();
    },
    close(socket) {
      socket.data?.onClose();
    },
    error(socket, error) {
      log.log("warn", `socket error: ${error.message}`, { peer: socket.data?.peer });
    },
  };

  let listener: Listener;
  try {
    if (address.kind === "unix") await prepareUnixPath(address.path);
    listener = bind(address, handlers, options.socketGroup);
    if (address.kind === "tcp") bound = { kind: "tcp", host: address.host, port: (listener as TCPSocketListener<NetworkConnection>).port };
  } catch (error) {
    if (error instanceof ListenError) throw error;
    const message = error instanceof Error ? error.message : String(error);
    throw new ListenError(`cannot listen on ${describeAddress(address)}: ${message}`);
  }
  let accepting = true;
  guard = new AcceptGuard({
    log,
    maxConnections: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
    where: describeAddress(bound),
    stopAccepting() {
      // Bun would retry a failing accept() at once, forever; without the listening socket it has nothing to retry.
      listener.stop(false);
      accepting = false;
    },
    startAccepting() {
      listener = bind(bound, handlers, options.socketGroup);
      accepting = true;
    },
  });
  log.log("info", "listening", { address: describeAddress(bound), exports: exports.map((e) => e.name).join(","), tls: options.tls?.mode ?? "off" });
  if (bound.kind === "tcp" && !isLoopbackHost(bound.host) && options.tls?.mode !== "require") {
    log.log(
      "warn",
      `${describeAddress(bound)} is reachable from the network and clients need no TLS: the disk is exposed unauthenticated ` +
        "and unencrypted; use --tls require --tls-certificates DIR --tls-verify-peer, or bind to 127.0.0.1",
      { address: describeAddress(bound) },
    );
  }

  /**
   * Lets each of `closing` finish the requests it already sent and take their replies, then closes it; one still
   * busy after the grace period (a client that stopped reading, a device request that never returns) is cut off.
   */
  async function closeGracefully(closing: readonly NetworkConnection[]): Promise<void> {
    const graceful = Promise.all(
      closing.map(async (conn) => {
        if (conn.session) await conn.session.shutdown();
        else conn.end();
      }),
    );
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<"expired">((resolve) => {
      timer = setTimeout(() => resolve("expired"), options.shutdownGraceMs ?? DEFAULT_SHUTDOWN_GRACE_MS);
    });
    if ((await Promise.race([graceful, expired])) === "expired") {
      for (const conn of closing) {
        if (conn.closed) continue;
        log.log("warn", "connection still busy after the shutdown grace period; closing it", { peer: conn.peer });
        conn.terminate();
      }
    }
    clearTimeout(timer);
  }

  let stopping: Promise<void> | undefined;
  return {
    address: bound,
    uri: (name) => exportUri(bound, name ?? offered[0]?.name ?? "", options.tls !== undefined),
    get connectionCount() {
      return connections.size;
    },
    get exportNames() {
      return offered.map((e) => e.name);
    },
    async withdraw(exportName) {
      const at = offered.findIndex((e) => e.name === exportName);
      if (at < 0) throw new ListenError(`no export named "${exportName}" is offered at ${describeAddress(bound)}`);
      // From here the handshake neither lists nor finds it; a session already serving it keeps its own device.
      offered.splice(at, 1);
      infos.delete(exportName);
      log.log("info", "export withdrawn", { address: describeAddress(bound), export: exportName });
      await closeGracefully([...connections].filter((conn) => conn.exportName === exportName));
      byName.delete(exportName);
    },
    stop() {
      stopping ??= (async () => {
        guard?.stop();
        timeouts.stop();
        if (accepting) listener.stop(false);
        await closeGracefully([...connections]);
        if (accepting) listener.stop(true);
        if (bound.kind === "unix" && existsSync(bound.path) && lstatSync(bound.path).isSocket()) unlinkSync(bound.path);
      })();
      return stopping;
    },
  };
}
