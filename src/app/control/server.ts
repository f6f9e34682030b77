/**
 * The daemon's control socket: a Unix socket (mode 0600, in a 0700 directory) that answers the control protocol
 * for `usbd-tui ctl` and `usbd-tui top`. Every action goes through the same Host and Daemon the keys and signals
 * use. A connection that sends garbage gets an error line; one that stops reading while events pile up is closed.
 */
import { chmodSync, existsSync, lstatSync, mkdirSync, unlinkSync } from "node:fs";
import path from "node:path";
import type { Socket, UnixSocketListener } from "bun";
import type { Host } from "../../engine/host.ts";
import { describeClient } from "../../engine/host-types.ts";
import type { Logger } from "../../shared/log.ts";
import { statsObject } from "../stats-lines.ts";
import { defaultControlDir, removeStaleSockets } from "./paths.ts";
import { type ControlRequest, type ControlResponse, type DaemonInfo, type DeviceStatus, LineReader, MAX_REQUEST_BYTES, parseRequest } from "./protocol.ts";

/** What the control socket needs of the daemon. */
export interface ControlTarget {
  readonly host: Host;
  info(): DaemonInfo;
  /** Shuts the daemon down; resolves with the exit code, or rejects with why it was refused or failed. */
  stop(force: boolean): Promise<number>;
}

export interface ControlServer {
  readonly path: string;
  /** Stops accepting and closes every connection once what it was sent has been written. */
  close(): Promise<void>;
}

export class ControlSocketError extends Error {}

/** Unsent bytes a connection may hold before it is closed as a reader that stopped reading. */
const MAX_QUEUED_BYTES = 32 * 1024 * 1024;

interface Connection {
  readonly reader: LineReader;
  readonly queue: Uint8Array[];
  queued: number;
  unsubscribe: (() => void) | undefined;
  closing: boolean;
}

/** Creates the socket's directory private to its owner; refuses to take over a live daemon's socket. */
async function preparePath(socketPath: string): Promise<void> {
  mkdirSync(path.dirname(socketPath), { recursive: true, mode: 0o700 });
  if (path.dirname(socketPath) === defaultControlDir()) removeStaleSockets();
  if (!existsSync(socketPath)) return;
  if (!lstatSync(socketPath).isSocket()) throw new ControlSocketError(`--control ${socketPath} exists and is not a socket; choose another path`);
  const alive = await Bun.connect({ unix: socketPath, socket: { data() {}, open(s) { s.end(); } } }).then(
    () => true,
    () => false,
  );
  if (alive) throw new ControlSocketError(`another daemon already has the control socket ${socketPath}; stop it or pass --control with another path`);
  unlinkSync(socketPath);
}

export async function startControlServer(socketPath: string, target: ControlTarget, log: Logger): Promise<ControlServer> {
  await preparePath(socketPath);
  const sockets = new Set<Socket<Connection>>();
  // Requests being answered: closing waits for them, so `ctl stop` gets its answer before the socket goes.
  let inflight = 0;

  const send = (socket: Socket<Connection>, message: ControlResponse) => {
    const conn = socket.data;
    if (conn.closing) return;
    const bytes = Buffer.from(`${JSON.stringify(message)}\n`);
    if (conn.queue.length === 0) {
      const written = socket.write(bytes);
      if (written === bytes.length) return;
      conn.queue.push(bytes.subarray(Math.max(0, written)));
    } else conn.queue.push(bytes);
    conn.queued += bytes.length;
    if (conn.queued > MAX_QUEUED_BYTES) {
      log.log("warn", "control client stopped reading; closing its connection");
      conn.closing = true;
      socket.terminate();
    }
  };

  const answer = async (socket: Socket<Connection>, request: ControlRequest) => {
    inflight++;
    try {
      const result = await handle(socket, request);
      send(socket, { id: request.id, ok: true, result });
    } catch (error) {
      send(socket, { id: request.id, ok: false, error: error instanceof Error ? error.message : String(error) });
    } finally {
      inflight--;
    }
  };

  const handle = async (socket: Socket<Connection>, r: ControlRequest): Promise<unknown> => {
    const host = target.host;
    switch (r.command) {
      case "status":
        return { daemon: target.info(), devices: host.snapshot().map(deviceStatus) };
      case "stats":
        return { devices: host.snapshot().map((s) => statsObject("stats", s)) };
      case "snapshot":
        return { daemon: target.info(), devices: host.snapshot(r.window) };
      case "flush": {
        const names = r.device !== undefined ? [r.device] : host.list().filter((d) => d.state !== "detached").map((d) => d.name);
        const flushed = [];
        for (const device of names) flushed.push({ device, ms: await host.flush(device) });
        return { flushed };
      }
      case "trim":
        return await host.trim(r.device);
      case "detach":
        await host.detach(r.device, { force: r.force ?? false });
        return { device: r.device };
      case "create-snapshot": {
        const made = await host.createSnapshot(r.device, r.name);
        return { device: r.device, name: made.name, createdAt: made.createdAt };
      }
      case "stop": {
        const clients = host.snapshot().flatMap((d) => d.clients.map((c) => `${describeClient(c)} on ${d.name}`));
        if (clients.length > 0 && !r.force) {
          throw new Error(`${clients.length} client${clients.length === 1 ? " is" : "s are"} connected (${clients.join(", ")}) and would lose their device; stop anyway with --force`);
        }
        return { code: await target.stop(r.force ?? false) };
      }
      case "events": {
        const conn = socket.data;
        conn.unsubscribe?.();
        const kept = r.last !== undefined ? (r.last === 0 ? [] : host.recentEvents().slice(-r.last)) : host.recentEvents(r.after ?? Number.MAX_SAFE_INTEGER);
        // Answered first, then what was kept, then each event as it happens.
        setTimeout(() => {
          for (const event of kept) send(socket, { id: r.id, event });
          conn.unsubscribe = host.subscribe((event) => send(socket, { id: r.id, event }));
        }, 0);
        const all = host.recentEvents();
        return { streaming: true, lastSeq: all.length === 0 ? 0 : all[all.length - 1]!.seq };
      }
    }
  };

  let listener: UnixSocketListener<Connection>;
  const umask = process.umask(0o177);
  try {
    listener = Bun.listen<Connection>({
      unix: socketPath,
      socket: {
        open(socket) {
          socket.data = { reader: new LineReader(MAX_REQUEST_BYTES), queue: [], queued: 0, unsubscribe: undefined, closing: false };
          sockets.add(socket);
        },
        data(socket, chunk) {
          let lines: string[];
          try {
            lines = socket.data.reader.push(chunk);
          } catch (error) {
            send(socket, { id: 0, ok: false, error: `request refused: ${error instanceof Error ? error.message : String(error)}` });
            socket.data.closing = true;
            socket.end();
            return;
          }
          for (const line of lines) {
            const parsed = parseRequest(line);
            if ("error" in parsed) send(socket, { id: parsed.id, ok: false, error: parsed.error });
            else void answer(socket, parsed.request);
          }
        },
        drain(socket) {
          const conn = socket.data;
          while (conn.queue.length > 0) {
            const next = conn.queue[0]!;
            const written = socket.write(next);
            if (written < next.length) {
              conn.queue[0] = next.subarray(Math.max(0, written));
              conn.queued -= Math.max(0, written);
              return;
            }
            conn.queue.shift();
            conn.queued -= next.length;
          }
          if (conn.closing) socket.end();
        },
        close(socket) {
          socket.data.unsubscribe?.();
          sockets.delete(socket);
        },
        error(socket, error) {
          log.log("debug", `control connection error: ${error.message}`);
          sockets.delete(socket);
        },
      },
    });
  } catch (error) {
    throw new ControlSocketError(`cannot create the control socket ${socketPath}: ${error instanceof Error ? error.message : String(error)}; pass --control with another path, or --control none`);
  } finally {
    process.umask(umask);
  }
  chmodSync(socketPath, 0o600);
  log.log("info", "control socket ready", { control: socketPath });

  let closing: Promise<void> | undefined;
  return {
    path: socketPath,
    close() {
      closing ??= (async () => {
        listener.stop(false);
        const answered = Date.now() + 5000;
        while (inflight > 0 && Date.now() < answered) await Bun.sleep(5);
        for (const socket of sockets) {
          socket.data.unsubscribe?.();
          socket.data.closing = true;
          if (socket.data.queue.length === 0) socket.end();
        }
        // Answers still queued get a moment to leave.
        const deadline = Date.now() + 2000;
        while (sockets.size > 0 && Date.now() < deadline) await Bun.sleep(10);
        for (const socket of sockets) socket.terminate();
        listener.stop(true);
        if (existsSync(socketPath)) unlinkSync(socketPath);
      })();
      return closing;
    },
  };
}

function deviceStatus(s: Parameters<typeof statsObject>[1]): DeviceStatus {
  return { ...statsObject("status", s), clients: s.clients, lastError: s.lastError, activity: s.activity } as DeviceStatus;
}
