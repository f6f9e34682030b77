/**
 * The dashboard's screens and the questions it asks before an action that cannot be undone, worded so the user
 * knows what will happen (which clients lose their device, which mount point, which order) before pressing y.
 */
import { type DeviceSnapshot, describeClient } from "../engine/host-types.ts";
import { formatSize } from "../shared/format-size.ts";

export interface Question {
  /** `quit-clients` is the second question a quit asks while clients are connected. */
  readonly action: "trim" | "detach" | "quit" | "quit-clients";
  /** The device the action is for (not for quit). */
  readonly device: string;
  readonly text: string;
  /** What y does, for the key line: `quit anyway`. */
  readonly yes: string;
}

export type Screen =
  | { readonly kind: "panels" }
  | { readonly kind: "help" }
  | { readonly kind: "log" }
  | { readonly kind: "question"; readonly question: Question }
  | { readonly kind: "stopping" };

/** A device that is still served (and so still has something to flush, trim, detach or shut down). */
export function isLive(s: DeviceSnapshot): boolean {
  return s.state !== "detached" && s.state !== "error";
}

function plural(n: number, what: string): string {
  return `${n} ${what}${n === 1 ? "" : "s"}`;
}

/** `nbdfuse (pid 12) on busy, qemu-img (pid 14) on idle` for every client of `devices` (without "on" for one device). */
export function clientList(devices: readonly DeviceSnapshot[]): { count: number; text: string } {
  const clients = devices.flatMap((d) => d.clients.map((c) => (devices.length === 1 ? describeClient(c) : `${describeClient(c)} on ${d.name}`)));
  return { count: clients.length, text: clients.join(", ") };
}

export function question(action: Question["action"], device: DeviceSnapshot | undefined, all: readonly DeviceSnapshot[]): Question {
  if (action === "quit" || action === "quit-clients") {
    const live = all.filter(isLive);
    const clients = clientList(live);
    if (action === "quit-clients") {
      return {
        action,
        device: "",
        text: `Really quit? ${plural(clients.count, "client")} still ${clients.count === 1 ? "uses" : "use"} ${live.length === 1 ? "this device" : "these devices"} and will lose ${clients.count === 1 ? "it" : "them"} now: ${clients.text}. A file system mounted through one of them will fail; unmount it first.`,
        yes: "quit anyway",
      };
    }
    const connected = clients.count === 0 ? "No clients are connected." : `${plural(clients.count, "client")} connected: ${clients.text}.`;
    // An object store that is down keeps writes in the local cache: say so before, not only after.
    const waiting = live
      .filter((d) => d.unsettled !== undefined && d.lastError !== undefined)
      .map((d) => ` ${d.name} has ${formatSize(d.unsettled!.bytes)} not yet in its store (${d.lastError}); it stays in ${d.unsettled!.keptIn} and ${d.unsettled!.destination}.`)
      .join("");
    return { action, device: "", text: `Quit? ${plural(live.length, "device")} will be flushed, disconnected and closed. ${connected}${waiting}`, yes: "quit" };
  }
  const d = device!;
  if (action === "trim") {
    const how = d.kernel !== undefined ? `fstrim its mount point (if mounted) or reclaim space inside ${d.kind}` : `reclaim unused space inside the ${d.kind} device`;
    return { action, device: d.name, text: `Trim "${d.name}": ${how}?`, yes: "trim" };
  }
  const clients = clientList([d]);
  const from =
    d.kernel !== undefined
      ? `${d.kernel.path} (refused while mounted)`
      : clients.count === 0
        ? "its clients (none connected)"
        : `its ${plural(clients.count, "client")} (${clients.text})`;
  return { action, device: d.name, text: `Detach "${d.name}"? It is flushed, then disconnected from ${from}, then closed.`, yes: "detach" };
}
