/** A connection to a daemon's control socket: requests with their answers, and the event stream. */
import type { Socket } from "bun";
import type { HostEvent } from "../../engine/host-types.ts";
import { type ControlRequest, type ControlResponse, type ControlResults, LineReader, MAX_LINE_BYTES } from "./protocol.ts";

/** The daemon answered with an error (a refused or failed action), as its message says. */
export class ControlError extends Error {}

/** Requests without their id: the client numbers them. */
type Request = ControlRequest extends infer R ? (R extends ControlRequest ? Omit<R, "id"> : never) : never;

export class ControlClient {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  private readonly eventListeners = new Map<number, (event: HostEvent) => void>();
  private readonly closeListeners = new Set<() => void>();
  private closed = false;

  private constructor(
    private readonly socket: Socket<undefined>,
    readonly path: string,
  ) {}

  /** Connects; throws an Error saying there is no daemon at `path` when nothing answers there. */
  static async connect(path: string): Promise<ControlClient> {
    const reader = new LineReader(MAX_LINE_BYTES);
    let client: ControlClient | undefined;
    const early: Uint8Array[] = [];
    const socket = await Bun.connect<undefined>({
      unix: path,
      socket: {
        data(_socket, chunk) {
          if (client === undefined) early.push(new Uint8Array(chunk));
          else client.receive(reader, chunk);
        },
        close() {
          client?.end(new Error(`the daemon closed the control connection (${path})`));
        },
        error(_socket, error) {
          client?.end(error);
        },
      },
    }).catch((error: unknown) => {
      const code = (error as NodeJS.ErrnoException).code;
      const why = code === "ENOENT" || code === "ECONNREFUSED" ? "no daemon is listening there" : error instanceof Error ? error.message : String(error);
      throw new Error(`cannot reach the control socket ${path}: ${why}`);
    });
    client = new ControlClient(socket, path);
    for (const chunk of early) client.receive(reader, chunk);
    return client;
  }

  /** Sends a request and resolves with its result; rejects with ControlError when the daemon refuses it. */
  request<C extends Request["command"]>(request: Extract<Request, { command: C }>): Promise<ControlResults[C]> {
    if (this.closed) return Promise.reject(new Error(`the control connection to ${this.path} is closed`));
    const id = this.nextId++;
    const answer = new Promise<unknown>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.socket.write(`${JSON.stringify({ ...request, id })}\n`);
    return answer as Promise<ControlResults[C]>;
  }

  /**
   * Streams events to `listener` until the connection closes: first the kept ones after event number `from.after`
   * or the `from.last` most recent ones, then each as it happens.
   */
  async events(listener: (event: HostEvent) => void, from: { readonly after?: number; readonly last?: number } = {}): Promise<ControlResults["events"]> {
    const id = this.nextId;
    this.eventListeners.set(id, listener);
    return this.request({ command: "events", ...from });
  }

  /** Called once when the connection ends (the daemon stopped, or `close`). */
  onClose(listener: () => void): void {
    if (this.closed) listener();
    else this.closeListeners.add(listener);
  }

  close(): void {
    this.socket.end();
    this.end(new Error("closed"));
  }

  private receive(reader: LineReader, chunk: Uint8Array): void {
    let lines: string[];
    try {
      lines = reader.push(chunk);
    } catch (error) {
      this.socket.terminate();
      this.end(error instanceof Error ? error : new Error(String(error)));
      return;
    }
    for (const line of lines) {
      const message = JSON.parse(line) as ControlResponse;
      if ("event" in message) {
        this.eventListeners.get(message.id)?.(message.event);
        continue;
      }
      const waiting = this.pending.get(message.id);
      if (waiting === undefined) continue;
      this.pending.delete(message.id);
      if (message.ok) waiting.resolve(message.result);
      else waiting.reject(new ControlError(message.error));
    }
  }

  private end(error: Error): void {
    if (this.closed) return;
    this.closed = true;
    for (const { reject } of this.pending.values()) reject(error);
    this.pending.clear();
    for (const listener of this.closeListeners) listener();
  }
}
