/**
 * What the Host tells its faces: each device's state and snapshot, and the events it emits. Plain data (every field
 * survives JSON), so the control socket carries them unchanged to `usbd-tui ctl` and `usbd-tui top`.
 */
import type { DeviceStats, UnsettledData } from "../devices/device.ts";
import type { MetricsSnapshot } from "./metrics.ts";

export type DeviceState = "starting" | "serving" | "flushing" | "trimming" | "detaching" | "detached" | "error";

/**
 * What happened, as a type rather than as words to match: `attached` (served over a socket or as /dev/nbdN),
 * `flushed`, `trimmed`, `detached`, `refused` (a mounted kernel device kept attached), `error` (an action or
 * background work failed: it stays as the device's last error until something succeeds), `connected` and
 * `disconnected` (a client chose this export, or left), `opened` (the store was created or reopened), `progress`
 * (background work done: an upload round), `recovered` (background work works again: the store is back), `warning`
 * (something the engine or the device logged as a warning), `notice` (something to keep or act on: a generated key).
 */
export type HostEventKind =
  | "attached"
  | "flushed"
  | "trimmed"
  | "snapshot"
  | "detached"
  | "refused"
  | "error"
  | "connected"
  | "disconnected"
  | "opened"
  | "progress"
  | "recovered"
  | "warning"
  | "notice";

export type EventLevel = "info" | "warn" | "error";

export interface HostEvent {
  /** Increases by one per event of this Host: a viewer that reconnects asks for what came after the last it saw. */
  readonly seq: number;
  /** Milliseconds since the epoch. */
  readonly time: number;
  /** The device the event is about; "" for the daemon as a whole. */
  readonly device: string;
  readonly kind: HostEventKind;
  readonly level: EventLevel;
  /** Ready to show: `flush done in 3.1 ms`. */
  readonly message: string;
}

/** The level each kind is shown and logged at. */
export function eventLevel(kind: HostEventKind): EventLevel {
  switch (kind) {
    case "error":
    case "refused":
      return "error";
    case "warning":
    case "notice":
      return "warn";
    default:
      return "info";
  }
}

/** An action running on a device (started by a key, `ctl`, or a signal), with how long it has run so far. */
export interface Activity {
  readonly label: "flushing" | "trimming" | "detaching";
  /** Milliseconds since the epoch. */
  readonly startedAt: number;
  /** At the time of the snapshot; never negative. */
  readonly elapsedMs: number;
}

/** A client connected to a network export. */
export interface ClientSnapshot {
  /** `unix client #3`, `127.0.0.1:41234 #3` */
  readonly peer: string;
  /** The client process for a Unix socket peer on this machine: `nbdfuse (pid 4242)`. */
  readonly process: string | undefined;
  /** Milliseconds since the epoch when it chose the export. */
  readonly since: number;
}

/** `nbdfuse (pid 4242)`, or the peer's address when the process is unknown (TCP). */
export function describeClient(client: ClientSnapshot): string {
  return client.process ?? client.peer;
}

/**
 * What `Host.trim` did: `fstrim` on the file systems mounted from a kernel device, the device's own `reclaim`, or
 * nothing (a device whose trim already gave the space back). `detail` says it for people; `ms` is the time taken.
 */
export type TrimResult =
  | {
      readonly method: "fstrim";
      /** The first (usually only) mount point trimmed. */
      readonly mountPoint: string;
      /** Every mounted file system trimmed, one mount point each (partitions each have their own). */
      readonly mountPoints: readonly string[];
      /** What fstrim reported as trimmed, summed over the file systems. */
      readonly bytes: number;
      readonly detail: string;
      readonly ms: number;
    }
  | { readonly method: "reclaim"; readonly bytes: number; readonly detail: string; readonly ms: number }
  | { readonly method: "none"; readonly bytes: 0; readonly detail: string; readonly ms: number };

export interface KernelSnapshot {
  readonly path: string;
  readonly interface: "netlink" | "ioctl";
  readonly connections: number;
  /** What the kernel reports now (NBD_CMD_STATUS). */
  readonly connected: boolean;
}

export interface DeviceSnapshot {
  readonly name: string;
  readonly kind: string;
  readonly size: number;
  readonly state: DeviceState;
  readonly servedAt: string | undefined;
  readonly metrics: MetricsSnapshot;
  readonly stats: DeviceStats | undefined;
  /** Set while attached to the kernel. */
  readonly kernel: KernelSnapshot | undefined;
  /** The action running now, if any. */
  readonly activity: Activity | undefined;
  /**
   * The device's error to show: its own background error (stats().lastError) while there is one, else the last
   * error event until something went well since (a flush, a trim, recovery).
   */
  readonly lastError: string | undefined;
  /** Clients connected to it as a network export, oldest first. */
  readonly clients: readonly ClientSnapshot[];
  /** Accepted writes not yet in the device's store (an object store's dirty data), or undefined when none. */
  readonly unsettled: UnsettledData | undefined;
}
