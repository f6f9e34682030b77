/**
 * What the dashboard needs from a daemon: snapshots to draw, events to list, and the actions its keys start. The
 * local dashboard gets them from the daemon it runs (src/ui/run.tsx), `usbd-tui top` from a running daemon's
 * control socket (src/app/control); the UI holds no engine logic of its own.
 */
import type { DeviceSnapshot, HostEvent } from "../engine/host-types.ts";

export interface DashboardHost {
  /** The devices now; rates over the last `windowSeconds` complete seconds. Synchronous: a remote host caches. */
  snapshot(windowSeconds?: number): DeviceSnapshot[];
  /** The events kept so far, oldest first (what a late viewer has missed). */
  recentEvents(): HostEvent[];
  subscribe(listener: (event: HostEvent) => void): () => void;
  flush(name: string): Promise<unknown>;
  /** fstrim on the mount point when mounted, else the device's own reclaim; the result arrives as an event. */
  trim(name: string): Promise<unknown>;
  detach(name: string): Promise<unknown>;
  /**
   * Quit. The dashboard that runs the daemon shuts every device down in the safe order (rejecting with a
   * DetachRefusedError-named error while a kernel device is mounted); a viewer only leaves.
   */
  stop(options?: { readonly force?: boolean }): Promise<void>;
}

/** Where the dashboard runs: in the daemon itself, or as a viewer attached to one (`usbd-tui top`). */
export type DashboardMode = { readonly kind: "daemon" } | { readonly kind: "viewer"; readonly target: string };
