/**
 * The control protocol: JSON lines over a daemon's Unix control socket, spoken by `usbd-tui ctl`, `usbd-tui top`
 * and anything else (`socat - UNIX-CONNECT:PATH` works by hand). A request is one line, `{"id":1,"command":"status"}`;
 * its answer is one line with the same id, `{"id":1,"ok":true,"result":...}` or `{"id":1,"ok":false,"error":"..."}`.
 * After `events` is answered, the daemon sends `{"id":N,"event":{...}}` lines until the connection closes.
 */
import type { DeviceSnapshot, HostEvent, TrimResult } from "../../engine/host-types.ts";

/** Lines longer than this are refused (a request is small; a snapshot of many devices is the largest answer). */
export const MAX_LINE_BYTES = 16 * 1024 * 1024;
export const MAX_REQUEST_BYTES = 64 * 1024;

export type ControlRequest =
  /** The daemon and every device: state, where served, clients, last error, and the numbers the stats lines report. */
  | { readonly id: number; readonly command: "status" }
  /** The devices' stats, one object per device, as the headless `--json` stats lines print them. */
  | { readonly id: number; readonly command: "stats" }
  /** Full snapshots with the 60-second history, for the dashboard viewer; rates over `window` seconds. */
  | { readonly id: number; readonly command: "snapshot"; readonly window?: number }
  /** Flushes one device, or every device when none is named. */
  | { readonly id: number; readonly command: "flush"; readonly device?: string }
  | { readonly id: number; readonly command: "trim"; readonly device: string }
  | { readonly id: number; readonly command: "detach"; readonly device: string; readonly force?: boolean }
  /** A named snapshot of a serving objstore volume (see `usbd-tui snapshot`). */
  | { readonly id: number; readonly command: "create-snapshot"; readonly device: string; readonly name: string }
  /** Shuts the daemon down in the safe order; refused while clients are connected unless `force`. */
  | { readonly id: number; readonly command: "stop"; readonly force?: boolean }
  /**
   * Streams the daemon's events: first the kept ones after event number `after`, or the `last` N kept ones (none by
   * default), then each as it happens.
   */
  | { readonly id: number; readonly command: "events"; readonly after?: number; readonly last?: number };

export type ControlCommand = ControlRequest["command"];

export const CONTROL_COMMANDS: readonly ControlCommand[] = ["status", "stats", "snapshot", "flush", "trim", "detach", "create-snapshot", "stop", "events"];

export interface DaemonInfo {
  readonly version: string;
  readonly pid: number;
  /** Milliseconds since the epoch. */
  readonly startedAt: number;
  /** `unix:/run/usbd.sock`, or undefined on the kernel path. */
  readonly listen: string | undefined;
  readonly control: string;
  /** The Prometheus endpoint's URL, when --metrics was given. */
  readonly metrics: string | undefined;
  readonly stopping: boolean;
}

/** One device in `status`: its stats object (as the stats lines print it) with what is not a number. */
export interface DeviceStatus extends Record<string, unknown> {
  readonly device: string;
  readonly state: DeviceSnapshot["state"];
  readonly clients: DeviceSnapshot["clients"];
  readonly lastError: string | undefined;
  readonly activity: DeviceSnapshot["activity"];
}

/** What each command's `result` holds. */
export interface ControlResults {
  readonly status: { readonly daemon: DaemonInfo; readonly devices: readonly DeviceStatus[] };
  readonly stats: { readonly devices: readonly Record<string, unknown>[] };
  readonly snapshot: { readonly daemon: DaemonInfo; readonly devices: readonly DeviceSnapshot[] };
  readonly flush: { readonly flushed: readonly { readonly device: string; readonly ms: number }[] };
  readonly trim: TrimResult;
  readonly detach: { readonly device: string };
  readonly "create-snapshot": { readonly device: string; readonly name: string; readonly createdAt: string };
  readonly stop: { readonly code: number };
  readonly events: { readonly streaming: true; readonly lastSeq: number };
}

export type ControlResponse =
  | { readonly id: number; readonly ok: true; readonly result: unknown }
  | { readonly id: number; readonly ok: false; readonly error: string }
  | { readonly id: number; readonly event: HostEvent };

/** Reads a request line; returns the request, or the error to answer with. */
export function parseRequest(line: string): { request: ControlRequest } | { id: number; error: string } {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return { id: 0, error: "not a JSON line: each request is one JSON object on its own line" };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return { id: 0, error: "a request is a JSON object" };
  const r = value as Record<string, unknown>;
  const id = typeof r.id === "number" && Number.isSafeInteger(r.id) ? r.id : 0;
  if (typeof r.command !== "string" || !(CONTROL_COMMANDS as readonly string[]).includes(r.command)) {
    return { id, error: `unknown command ${JSON.stringify(r.command)}; one of: ${CONTROL_COMMANDS.join(", ")}` };
  }
  const optionalString = (key: string) => r[key] === undefined || typeof r[key] === "string";
  const needsDevice = r.command === "trim" || r.command === "detach" || r.command === "create-snapshot";
  if (needsDevice && typeof r.device !== "string") return { id, error: `${r.command} needs "device": the device's name` };
  if (r.command === "create-snapshot" && typeof r.name !== "string") return { id, error: 'create-snapshot needs "name": the snapshot\'s name' };
  if (!optionalString("device")) return { id, error: '"device" is a string' };
  if (r.force !== undefined && typeof r.force !== "boolean") return { id, error: '"force" is true or false' };
  for (const key of ["window", "after", "last"] as const) {
    if (r[key] !== undefined && !(typeof r[key] === "number" && Number.isSafeInteger(r[key]) && (r[key] as number) >= 0)) return { id, error: `"${key}" is a whole number` };
  }
  return { request: { ...r, id } as ControlRequest };
}

/** Splits a byte stream into lines, refusing one longer than `max` bytes (the connection is then closed). */
export class LineReader {
  private pending = "";
  private readonly decoder = new TextDecoder();

  constructor(private readonly max: number) {}

  /** The complete lines in `chunk` (with what came before); throws when a line grows past the limit. */
  push(chunk: Uint8Array): string[] {
    this.pending += this.decoder.decode(chunk, { stream: true });
    const parts = this.pending.split("\n");
    this.pending = parts.pop()!;
    if (this.pending.length > this.max) throw new Error(`a line longer than ${this.max} bytes`);
    return parts.filter((l) => l.trim() !== "");
  }
}
