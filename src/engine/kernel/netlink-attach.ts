/**
 * Attaching through the nbd generic netlink family: CONNECT with every socket at once (no thread blocks while
 * attached, and the kernel creates a new /dev/nbdN when none is free), RECONFIGURE to take over a device whose
 * daemon died or whose connection the kernel dropped, DISCONNECT to detach.
 */
import { LibcError } from "../../ffi/libc.ts";
import { BaseAttachment, type AttachmentBase, kernelBlockSize, kernelServerFlags } from "./attachment.ts";
import { runBlocking } from "./blocking.ts";
import { type KernelServeOptions, type KernelSockets, openKernelSockets } from "./kernel-sockets.ts";
import { KernelUsageError } from "./module.ts";
import type { NbdNetlink } from "./nbd-netlink.ts";
import { writeAttachmentRecord } from "./state.ts";
import { nbdInUse } from "./sysfs.ts";

export interface NetlinkSettings {
  readonly timeoutSeconds: number;
  readonly deadConnTimeoutSeconds: number;
  /** Sent when the kernel knows NBD_ATTR_BACKEND_IDENTIFIER. */
  readonly backend: string;
}

/** How long a reattach watches its new connections for the kernel refusing them. */
const TAKEOVER_CHECK_MS = 300;
/** At most this many link repairs per minute before the attachment counts as lost. */
const MAX_REPAIRS_PER_MINUTE = 5;

export class NetlinkAttachment extends BaseAttachment {
  readonly interface = "netlink";
  private repairs: number[] = [];

  private constructor(
    base: AttachmentBase,
    connections: number,
    reattached: boolean,
    private readonly netlink: NbdNetlink,
    private readonly serve: KernelServeOptions,
    private readonly settings: NetlinkSettings,
  ) {
    super(base, connections, reattached);
  }

  /** NBD_CMD_CONNECT: a fresh attachment to `index`, or to whatever device the kernel picks. */
  static async connect(
    netlink: NbdNetlink,
    request: { readonly index?: number; readonly connections: number; readonly stateFile?: string },
    serve: KernelServeOptions,
    settings: NetlinkSettings,
  ): Promise<NetlinkAttachment> {
    const sockets = await openKernelSockets(request.connections, serve);
    let index: number;
    try {
      index = netlink.connect({
        index: request.index,
        sizeBytes: serve.device.size,
        blockSizeBytes: kernelBlockSize(serve.device),
        serverFlags: kernelServerFlags(serve.device, request.connections),
        timeoutSeconds: settings.timeoutSeconds,
        deadConnTimeoutSeconds: settings.deadConnTimeoutSeconds,
        socketFds: sockets.kernelFds,
        backend: netlink.supportsBackend ? settings.backend : undefined,
      });
    } catch (error) {
      for (const c of sockets.connections) c.terminate();
      throw connectError(error, request.index);
    } finally {
      sockets.releaseKernelEnds();
    }
    const attachment = new NetlinkAttachment(
      { index, device: serve.device, log: serve.log, stateFile: request.stateFile },
      request.connections,
      false,
      netlink,
      serve,
      settings,
    );
    attachment.adopt(sockets.connections);
    attachment.remember();
    return attachment;
  }

  /** NBD_CMD_RECONFIGURE: takes over a device left waiting by a daemon that died, one new socket per old one. */
  static async reattach(
    netlink: NbdNetlink,
    request: { readonly index: number; readonly connections: number; readonly stateFile?: string },
    serve: KernelServeOptions,
    settings: NetlinkSettings,
  ): Promise<NetlinkAttachment> {
    const attachment = new NetlinkAttachment(
      { index: request.index, device: serve.device, log: serve.log, stateFile: request.stateFile },
      request.connections,
      true,
      netlink,
      serve,
      settings,
    );
    const sockets = await attachment.reconfigure(request.connections);
    // A kernel whose connections are all alive keeps them and silently drops ours: they close at once.
    const refused = await Promise.race([
      Promise.all(sockets.connections.map((c) => c.ended)).then(() => true),
      Bun.sleep(TAKEOVER_CHECK_MS).then(() => false),
    ]);
    if (refused) {
      throw new KernelUsageError(
        `the kernel kept the existing connections of /dev/nbd${request.index} and refused ours: another process still serves it`,
      );
    }
    attachment.adopt(sockets.connections);
    attachment.remember();
    return attachment;
  }

  connected(): boolean {
    return this.netlink.status(this.index).some((d) => d.index === this.index && d.connected);
  }

  protected async disconnect(): Promise<void> {
    // In a worker: the kernel writes NBD_CMD_DISC to our sockets before the command returns.
    await runBlocking({ op: "netlink-disconnect", index: this.index });
    this.netlink.close();
  }

  protected connectionLost(): void {
    // Give the kernel a moment to finish tearing down: after a disconnect its configuration goes right after the sockets.
    setTimeout(() => void this.repair(), 200);
  }

  /** Replaces a connection the kernel dropped, unless the device is gone (then it is lost). */
  private async repair(): Promise<void> {
    if (this.detaching) return;
    if (!nbdInUse(this.index)) return this.lost("was disconnected outside usbd-tui (the kernel no longer has it configured)");
    const now = Date.now();
    this.repairs = this.repairs.filter((t) => now - t < 60_000);
    if (this.repairs.length >= MAX_REPAIRS_PER_MINUTE) {
      return this.lost(`lost its connection ${MAX_REPAIRS_PER_MINUTE} times within a minute; giving up`);
    }
    this.repairs.push(now);
    const missing = this.connections - this.live.length;
    this.base.log.log("warn", `${this.path}: the kernel dropped ${missing} connection(s); reconnecting`);
    try {
      const sockets = await this.reconfigure(missing);
      this.adopt(sockets.connections);
    } catch (error) {
      this.lost(`could not be reconnected: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  private async reconfigure(count: number): Promise<KernelSockets> {
    const sockets = await openKernelSockets(count, this.serve);
    try {
      this.netlink.reconfigure({
        index: this.index,
        socketFds: sockets.kernelFds,
        timeoutSeconds: this.settings.timeoutSeconds,
        deadConnTimeoutSeconds: this.settings.deadConnTimeoutSeconds,
        backend: this.netlink.supportsBackend ? this.settings.backend : undefined,
      });
    } catch (error) {
      for (const c of sockets.connections) c.terminate();
      throw reconfigureError(error, this.index);
    } finally {
      sockets.releaseKernelEnds();
    }
    return sockets;
  }

  /** Writes the reattach record, so a daemon restarted after a crash finds this device. */
  private remember(): void {
    if (this.base.stateFile === undefined) return;
    writeAttachmentRecord(this.base.stateFile, {
      version: 1,
      device: this.path,
      index: this.index,
      backend: this.settings.backend,
      connections: this.connections,
      pid: process.pid,
      attachedAt: new Date().toISOString(),
    });
  }
}

function connectError(error: unknown, index: number | undefined): Error {
  if (!(error instanceof LibcError)) return error instanceof Error ? error : new Error(String(error));
  const device = index === undefined ? "a free NBD device" : `/dev/nbd${index}`;
  if (error.code === "EBUSY") return new KernelUsageError(`/dev/nbd${index ?? "?"} is already in use; name another device, or leave the device out`);
  if (error.code === "EPERM") return new KernelUsageError("the kernel refused NBD_CMD_CONNECT: attaching needs CAP_SYS_ADMIN (run it as root)");
  return new Error(`the kernel refused to attach ${device}: ${error.message} (see dmesg for its reason)`);
}

function reconfigureError(error: unknown, index: number): Error {
  if (!(error instanceof LibcError)) return error instanceof Error ? error : new Error(String(error));
  if (error.code === "EINVAL") {
    return new KernelUsageError(
      `cannot reattach /dev/nbd${index}: the kernel refused NBD_CMD_RECONFIGURE (not attached any more, or attached to another store; see dmesg)`,
    );
  }
  return new Error(`cannot reattach /dev/nbd${index}: ${error.message}`);
}
