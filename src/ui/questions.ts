/**
 * The dashboard's screens and the questions it asks before an action that cannot be undone, worded so the user
 * knows what will happen (which mount point, which order) before pressing y.
 */
import type { DeviceSnapshot } from "../engine/host.ts";

export interface Question {
  readonly action: "trim" | "detach" | "quit";
  /** The device the action is for (not for quit). */
  readonly device: string;
  readonly text: string;
}

export type Screen =
  | { readonly kind: "panels" }
  | { readonly kind: "help" }
  | { readonly kind: "question"; readonly question: Question }
  | { readonly kind: "stopping" };

/** A device that is still served (and so still has something to flush, trim, detach or shut down). */
export function isLive(s: DeviceSnapshot): boolean {
  return s.state !== "detached" && s.state !== "error";
}

export function question(action: Question["action"], device: DeviceSnapshot | undefined, all: readonly DeviceSnapshot[]): Question {
  if (action === "quit") {
    const live = all.filter(isLive).length;
    return { action, device: "", text: `Quit? ${live} device${live === 1 ? "" : "s"} will be flushed, disconnected and closed.` };
  }
  const d = device!;
  if (action === "trim") {
    const how = d.kernel !== undefined ? `fstrim its mount point (if mounted) or reclaim space inside ${d.kind}` : `reclaim unused space inside the ${d.kind} device`;
    return { action, device: d.name, text: `Trim "${d.name}": ${how}?` };
  }
  const from = d.kernel !== undefined ? `${d.kernel.path} (refused while mounted)` : "its clients";
  return { action, device: d.name, text: `Detach "${d.name}"? It is flushed, then disconnected from ${from}, then closed.` };
}
