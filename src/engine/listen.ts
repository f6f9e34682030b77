/**
 * Serves exports over a Unix or TCP socket for qemu, nbdfuse, nbd-client and libnbd tools: each connection runs
 * the handshake, then hands the same socket to a Session for the transmission phase.
 */
import { existsSync, lstatSync, unlinkSync } from "node:fs";
import type { Socket, TCPSocketListener, UnixSocketListener } from "bun";
import { type BlockDevice, resolveCapabilities } from "../devices/device.ts";
import { type ListenAddress, describeAddress, exportUri } from "./address.ts";
import type { Logger } from "../shared/log.ts";
import type { DeviceMetrics } from "./metrics.ts";
import { type ExportInfo, Handshake } from "./protocol/handshake.ts";
import { ReplyWriter } from "./reply-writer.ts";
import { Session } from "./session.ts";
import { enlargeSocketBuffers } from "./socket-buffers.ts";
import { socketFd, socketTransport } from "./socket-transport.ts";

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
  readonly onClient?: (event: { readonly kind: "connected" | "disconnected"; readonly peer: string; readonly export: string; readonly fd?: number }) => void;
}

const DEFAULT_SHUTDOWN_GRACE_MS = 10_000;

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

interface Connection {
  readonly id: number;
  readonly peer: string;
  readonly out: ReplyWriter;
  readonly socket: Socket<Connection>;
  handshake: Handshake | undefined;
  session: Session | undefined;
  /** The export the session serves, once the handshake chose one. */
  exportName: string | undefined;
  closed: boolean;
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

export async function listen(address: ListenAddress, exports: readonly Export[], options: ListenOptions): Promise<NbdServer> {
  if (exports.length === 0) throw new ListenError("nothing to serve: no exports given");
  const { log } = options;
  // What is still offered, in order; `withdraw` removes from both.
  const offered = [...exports];
  const byName = new Map(exports.map((e) => [e.name, e] as const));
  const infos = new Map(exports.map((e) => [e.name, exportInfo(e)] as const));
  const connections = new Set<Connection>();
  let nextId = 1;

  const findExport = (name: string): ExportInfo | undefined => {
    const chosen = name === "" ? offered[0]?.name : name;
    return chosen === undefined ? undefined : infos.get(chosen);
  };

  function startSession(conn: Connection, socket: Socket<Connection>, exportName: string, structured: boolean, baseAllocation: boolean, rest: Uint8Array): void {
    const chosen = byName.get(exportName)!;
    conn.handshake = undefined;
    conn.exportName = exportName;
    conn.session = new Session({
      device: chosen.device,
      metrics: chosen.metrics,
      transport: socketTransport(socket),
      out: conn.out,
      structuredReplies: structured,
      baseAllocation,
      log,
      peer: conn.peer,
      onEnd: () => log.log("debug", "session ended", { peer: conn.peer }),
    });
    log.log("debug", "client selected export", { peer: conn.peer, export: exportName, structured });
    options.onClient?.({ kind: "connected", peer: conn.peer, export: exportName, fd: socketFd(socket) });
    if (rest.length > 0) conn.session.receive(rest);
  }

  const handlers = {
    open(socket: Socket<Connection>) {
      const fd = socketFd(socket);
      if (fd !== undefined) enlargeSocketBuffers(fd);
      const id = nextId++;
      const peer = address.kind === "unix" ? `unix client #${id}` : `${socket.remoteAddress} #${id}`;
      const conn: Connection = { id, peer, socket, out: new ReplyWriter(socketTransport(socket)), handshake: undefined, session: undefined, exportName: undefined, closed: false };
      socket.data = conn;
      connections.add(conn);
      conn.handshake = new Handshake({
        findExport,
        listExports: () => [...infos.values()],
        send: (bytes) => {
          conn.out.payload(bytes);
          conn.out.flush();
        },
        close: (reason) => {
          if (reason !== undefined) log.log("warn", `handshake failed: ${reason}`, { peer });
          socket.end();
        },
        done: (result) => startSession(conn, socket, result.exportName, result.structuredReplies, result.baseAllocation, result.rest),
      });
      conn.handshake.start();
    },
    data(socket: Socket<Connection>, chunk: Buffer) {
      const conn = socket.data;
      try {
        if (conn.session) conn.session.receive(chunk);
        else conn.handshake?.receive(chunk);
      } catch (error) {
        // A bug must cost this one connection, never the server.
        log.log("error", `internal error, closing the connection: ${error instanceof Error ? error.stack : String(error)}`, { peer: conn.peer });
        socket.end();
      }
    },
    drain(socket: Socket<Connection>) {
      socket.data.out.drain();
    },
    close(socket: Socket<Connection>) {
      const conn = socket.data;
      if (conn.closed) return;
      conn.closed = true;
      connections.delete(conn);
      conn.out.markClosed();
      conn.session?.transportClosed();
      if (conn.exportName !== undefined) options.onClient?.({ kind: "disconnected", peer: conn.peer, export: conn.exportName });
    },
    error(socket: Socket<Connection>, error: Error) {
      log.log("warn", `socket error: ${error.message}`, { peer: socket.data?.peer });
    },
  };

  let listener: UnixSocketListener<Connection> | TCPSocketListener<Connection>;
  let bound: ListenAddress = address;
  try {
    if (address.kind === "unix") {
      await prepareUnixPath(address.path);
      listener = Bun.listen<Connection>({ unix: address.path, socket: handlers });
    } else {
      const tcp = Bun.listen<Connection>({ hostname: address.host, port: address.port, socket: handlers });
      listener = tcp;
      bound = { kind: "tcp", host: address.host, port: tcp.port };
    }
  } catch (error) {
    if (error instanceof ListenError) throw error;
    const message = error instanceof Error ? error.message : String(error);
    throw new ListenError(`cannot listen on ${describeAddress(address)}: ${message}`);
  }
  log.log("info", "listening", { address: describeAddress(bound), exports: exports.map((e) => e.name).join(",") });

  /**
   * Lets each of `closing` finish the requests it already sent and take their replies, then closes it; one still
   * busy after the grace period (a client that stopped reading, a device request that never returns) is cut off.
   */
  async function closeGracefully(closing: readonly Connection[]): Promise<void> {
    const graceful = Promise.all(
      closing.map(async (conn) => {
        if (conn.session) await conn.session.shutdown();
        else {
          conn.out.flush();
          conn.socket.end();
        }
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
        conn.out.markClosed();
        conn.socket.terminate();
      }
    }
    clearTimeout(timer);
  }

  let stopping: Promise<void> | undefined;
  return {
    address: bound,
    uri: (name) => exportUri(bound, name ?? offered[0]?.name ?? ""),
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
        listener.stop(false);
        await closeGracefully([...connections]);
        listener.stop(true);
        if (bound.kind === "unix" && existsSync(bound.path)) unlinkSync(bound.path);
      })();
      return stopping;
    },
  };
}
