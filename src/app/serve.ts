/**
 * Serving a plan's devices once they are open: every device as an export of one socket, or each attached to the
 * kernel as its own /dev/nbdN with its own options. Returns what was served, for the faces to show.
 */
import { type ListenAddress, describeAddress } from "../engine/address.ts";
import type { Host } from "../engine/host.ts";
import { describeAttachment } from "../engine/kernel/attachment.ts";
import { configureSharedMemoryBudget } from "../engine/memory-budget.ts";
import type { DaemonPlan } from "./plan.ts";

export type ServedDevice =
  | {
      readonly via: "listen";
      readonly name: string;
      readonly kind: string;
      readonly size: number;
      readonly uri: string;
      readonly address: string;
      /** With --tls on|require: what a client needs (the printed help names the certificate options). */
      readonly tls?: { readonly dir: string; readonly verifyPeer: boolean; readonly address: ListenAddress };
    }
  | {
      readonly via: "kernel";
      readonly name: string;
      readonly kind: string;
      readonly size: number;
      readonly path: string;
      readonly reattached: boolean;
      /** `netlink, 4 connections` */
      readonly detail: string;
    };

export async function serveDevices(host: Host, plan: DaemonPlan): Promise<ServedDevice[]> {
  const served: ServedDevice[] = [];
  // Before anything is served: every listener and kernel connection draws on this one budget.
  configureSharedMemoryBudget({ limit: plan.maxBuffer });
  if (plan.listen !== undefined) {
    const server = await host.serve(plan.listen, host.list(), { ...plan.listenLimits, ...(plan.tls === undefined ? {} : { tls: plan.tls }) });
    for (const d of host.list()) {
      const tls = plan.tls === undefined ? {} : { tls: { dir: plan.tls.dir, verifyPeer: plan.tls.verifyPeer, address: server.address } };
      served.push({ via: "listen", name: d.name, kind: d.device.kind, size: d.device.size, uri: d.servedAt!, address: describeAddress(server.address), ...tls });
    }
    return served;
  }
  for (const d of host.list()) {
    const spec = plan.devices.find((s) => s.name === d.name);
    if (spec?.kernel === undefined) throw new Error(`device "${d.name}" has no kernel attach options in the plan`);
    const attachment = await host.attachKernel(d, spec.kernel);
    served.push({
      via: "kernel",
      name: d.name,
      kind: d.device.kind,
      size: d.device.size,
      path: attachment.path,
      reattached: attachment.reattached,
      detail: describeAttachment(attachment),
    });
  }
  return served;
}
