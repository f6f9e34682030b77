/**
 * What netlink and ioctl attachments share: the served connections, the safe detach order (refuse while
 * mounted, write back the kernel's cache of the device, flush the device, disconnect, wait for the sessions to
 * finish), the reattach record, and telling the host when the kernel dropped the device on its own.
 */
import { resolveCapabilities, type BlockDevice } from "../../devices/device.ts";
import { TFLAG_CAN_MULTI_CONN, TFLAG_HAS_FLAGS, TFLAG_READ_ONLY, TFLAG_SEND_FLUSH, TFLAG_SEND_FUA, TFLAG_SEND_TRIM, TFLAG_SEND_WRITE_ZEROES } from "../protocol/constants.ts";
import type { Logger } from "../../shared/log.ts";
import { runBlocking } from "./blocking.ts";
import { KERNEL_MAX_BLOCK_SIZE } from "./constants.ts";
import type { KernelConnection } from "./kernel-sockets.ts";
import { type MountEntry, deviceMounts, deviceUsers } from "./mounts.ts";
import { removeAttachmentRecord } from "./state.ts";

export type NbdInterface = "netlink" | "ioctl";

/** A device served to the kernel as /dev/nbdN. */
export interface KernelAttachment {
  readonly path: string;
  readonly index: number;
  readonly interface: NbdInterface;
  readonly connections: number;
  /** True when this daemon took over a device a previous one left waiting (RECONFIGURE). */
  readonly reattached: boolean;
  /** What uses the device now: mounts, swap, stacked devices (empty when nothing does). */
  users(): string[];
  /** The file systems mounted from the device or its partitions now, one mount point each (for fstrim). */
  mounts(): MountEntry[];
  /** Whether the kernel holds the device configured now (NBD_CMD_STATUS with netlink, sysfs with ioctl). */
  connected(): boolean;
  /**
   * Detaches in the safe order: refuses while something uses the device (unless `force`), writes back what the
   * kernel still caches for it, flushes the device, disconnects, and waits for the sessions to finish. The device
   * itself stays open: the caller closes it.
   */
  detach(options?: { readonly force?: boolean }): Promise<void>;
  /** Called once if the kernel lets go of the device without `detach` (someone else disconnected it). */
  onLost(listener: (reason: string) => void): void;
}

/** "netlink, 2 connections": how a device is attached, for messages. */
export function describeAttachment(a: KernelAttachment): string {
  return `${a.interface}, ${a.connections} connection${a.connections === 1 ? "" : "s"}`;
}

/** Detach refused because the device is in use; names every user so the message says what to unmount. */
export class DetachRefusedError extends Error {
  override readonly name = "DetachRefusedError";
  constructor(
    readonly path: string,
    readonly users: readonly string[],
  ) {
    super(`not detaching ${path}: it is in use (${users.join("; ")}); unmount it first, or detach anyway with --force`);
  }
}

/** How long the kernel may take to write back its cache of the device before detach gives up on it. */
const WRITEBACK_TIMEOUT_MS = 60_000;
/** How long sessions may take to answer what they were sent before a disconnect cuts them off. */
const SESSION_GRACE_MS = 10_000;

/** The transmission flags the kernel understands, for what the device can do. */
export function kernelServerFlags(device: BlockDevice, connections: number): number {
  const caps = resolveCapabilities(device);
  // FLUSH and FUA always: a kernel that sees no SEND_FLUSH turns its write cache off and never flushes.
  let flags = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_FUA | TFLAG_SEND_WRITE_ZEROES;
  if (caps.readOnly) flags |= TFLAG_READ_ONLY;
  if (caps.trim) flags |= TFLAG_SEND_TRIM;
  if (connections > 1) flags |= TFLAG_CAN_MULTI_CONN;
  return flags;
}

/** The logical block size to give the kernel: the device's, capped at what the kernel accepts, dividing the size. */
export function kernelBlockSize(device: BlockDevice): number {
  let size = Math.min(device.blockSize, KERNEL_MAX_BLOCK_SIZE);
  while (size > 512 && device.size % size !== 0) size /= 2;
  return size;
}

export interface AttachmentBase {
  readonly index: number;
  readonly device: BlockDevice;
  readonly log: Logger;
  readonly stateFile: string | undefined;
}

export abstract class BaseAttachment implements KernelAttachment {
  abstract readonly interface: NbdInterface;
  readonly path: string;
  protected detaching = false;
  private lostReason: string | undefined;
  private readonly lostListeners: Array<(reason: string) => void> = [];
  protected live: KernelConnection[] = [];

  constructor(
    protected readonly base: AttachmentBase,
    readonly connections: number,
    readonly reattached: boolean,
  ) {
    this.path = `/dev/nbd${base.index}`;
  }

  get index(): number {
    return this.base.index;
  }

  users(): string[] {
    return deviceUsers(this.index);
  }

  mounts(): MountEntry[] {
    return deviceMounts(this.index);
  }

  abstract connected(): boolean;

  onLost(listener: (reason: string) => void): void {
    if (this.lostReason !== undefined) listener(this.lostReason);
    else this.lostListeners.push(listener);
  }

  async detach(options: { readonly force?: boolean } = {}): Promise<void> {
    const force = options.force ?? false;
    const users = this.users();
    if (users.length > 0 && !force) throw new DetachRefusedError(this.path, users);
    if (users.length > 0) this.base.log.log("warn", `detaching ${this.path} while in use (--force): ${users.join("; ")}`);
    this.detaching = true;
    try {
      await this.writeBack(force);
      await this.base.device.flush();
      await this.disconnect();
      await this.sessionsFinished();
    } catch (error) {
      this.detaching = false;
      throw error;
    }
    if (this.base.stateFile !== undefined) removeAttachmentRecord(this.base.stateFile);
    this.base.log.log("info", `detached ${this.path}`);
  }

  /** Interface-specific: tell the kernel to let go of the device, and return once it has. */
  protected abstract disconnect(): Promise<void>;

  /** Serves these connections from now on; when one ends outside a detach, `connectionLost` decides what to do. */
  protected adopt(connections: readonly KernelConnection[]): void {
    for (const c of connections) {
      this.live.push(c);
      void c.ended.then(() => {
        this.live = this.live.filter((x) => x !== c);
        if (!this.detaching && this.lostReason === undefined) this.connectionLost();
      });
    }
  }

  /** A connection ended without a detach: the kernel dropped it (a timeout) or someone else disconnected. */
  protected abstract connectionLost(): void;

  /** The kernel no longer has the device: tell the listeners once, forget the reattach record. */
  protected lost(reason: string): void {
    if (this.lostReason !== undefined || this.detaching) return;
    this.lostReason = reason;
    // Listeners (the host) report it; an attachment nobody listens to says it itself.
    if (this.lostListeners.length === 0) this.base.log.log("error", `${this.path} ${reason}`);
    if (this.base.stateFile !== undefined) removeAttachmentRecord(this.base.stateFile);
    for (const c of this.live) c.terminate();
    for (const listener of this.lostListeners.splice(0)) listener(reason);
  }

  /**
   * fsync(/dev/nbdN): the kernel writes back its page cache of the device through our sessions and sends FLUSH.
   * Done in a worker: the writes come back to this thread.
   */
  private async writeBack(force: boolean): Promise<void> {
    const timeout = Bun.sleep(WRITEBACK_TIMEOUT_MS).then(() => "timeout" as const);
    try {
      if ((await Promise.race([runBlocking({ op: "fsync", path: this.path }), timeout])) !== "timeout") return;
      throw new Error(`the kernel did not finish writing back ${this.path} within ${WRITEBACK_TIMEOUT_MS / 1000} s`);
    } catch (error) {
      if (!force) throw error;
      this.base.log.log("warn", `write-back of ${this.path} failed, detaching anyway (--force): ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  /** Waits for every session to answer what it was sent; cuts off any still busy after the grace period. */
  private async sessionsFinished(): Promise<void> {
    const all = Promise.all(this.live.map((c) => c.ended));
    const timeout = Bun.sleep(SESSION_GRACE_MS).then(() => "timeout" as const);
    if ((await Promise.race([all, timeout])) === "timeout") {
      this.base.log.log("warn", `${this.path}: connections still open ${SESSION_GRACE_MS / 1000} s after disconnect; closing them`);
      for (const c of this.live) c.terminate();
    }
    this.live = [];
  }
}
