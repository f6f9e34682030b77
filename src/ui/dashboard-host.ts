/**
 * What the dashboard needs from the engine: snapshots to draw, events to list, and the actions its keys start.
 * The engine's Host provides all of it; the UI holds no engine logic of its own.
 */
import type { DeviceSnapshot, HostEvent } from "../engine/host.ts";

export interface DashboardHost {
  snapshot(windowSeconds?: number): DeviceSnapshot[];
  subscribe(listener: (event: HostEvent) => void): () => void;
  /** Resolves with the flush's duration in milliseconds. */
  flush(name: string): Promise<number>;
  /** fstrim on the mount point when mounted, else the device's own reclaim; the Host reports the result as an event. */
  trim(name: string): Promise<unknown>;
  detach(name: string): Promise<void>;
  stop(options?: { readonly force?: boolean }): Promise<void>;
}

/** A line for the event pane: a Host event, or a warning the engine logged. */
export interface PaneEvent {
  readonly time: number;
  readonly device: string;
  readonly level: "info" | "error";
  readonly message: string;
}

export function paneEvent(event: HostEvent): PaneEvent {
  return {
    time: event.time,
    device: event.device,
    level: event.kind === "error" || event.kind === "refused" ? "error" : "info",
    message: event.message,
  };
}
