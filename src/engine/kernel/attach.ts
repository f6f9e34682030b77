/**
 * Serves a device to the kernel as /dev/nbdN: checks privileges and the module, picks the interface (netlink,
 * or ioctl where the kernel lacks the netlink family), validates a device the user named, and reattaches to the
 * device a crashed daemon left waiting when the store's reattach record (or --reattach) says so.
 */
import { resolveCapabilities } from "../../devices/device.ts";
import type { Logger } from "../../shared/log.ts";
import { processAlive } from "../../shared/process-alive.ts";
import type { KernelAttachment, NbdInterface } from "./attachment.ts";
import { IoctlAttachment } from "./ioctl-attach.ts";
import type { KernelServeOptions } from "./kernel-sockets.ts";
import { KernelUsageError, ensureNbdModule, requireSysAdmin } from "./module.ts";
import { NbdNetlink } from "./nbd-netlink.ts";
import { NetlinkAttachment, type NetlinkSettings } from "./netlink-attach.ts";
import { readAttachmentRecord, removeAttachmentRecord } from "./state.ts";
import { nbdBackend, nbdConnections, nbdExists, nbdInUse, nbdIndex, nbdIndexes, nbdPid, notAnNbdNode } from "./sysfs.ts";

export interface KernelAttachOptions {
  /** The /dev/nbdN to use; absent lets the kernel pick a free one (netlink creates a new one when none is free). */
  readonly devicePath?: string;
  /** "netlink" (default) falls back to ioctl when the kernel has no nbd netlink family; "ioctl" forces ioctl. */
  readonly interface?: NbdInterface;
  /** Sockets, one kernel queue and one session each (default 1). */
  readonly connections?: number;
  /** Seconds before the kernel gives up on a request (default 0: never; it only warns). */
  readonly timeoutSeconds?: number;
  /** Seconds the kernel holds I/O for a restarted daemon to reattach (default 60). */
  readonly deadConnTimeoutSeconds?: number;
  /** nbds_max when the module has to be loaded (default 16). */
  readonly maxDevices?: number;
  /** Take over this device, which a previous daemon left attached to the same store. */
  readonly reattach?: string;
  /** Where the reattach record of a persistent store lives; a restarted daemon reattaches from it. */
  readonly stateFile?: string;
  /** Names the device's data (e.g. its store path); a reattach must name the same. */
  readonly backend: string;
}

const DEFAULT_DEAD_CONN_TIMEOUT_S = 60;

/** Checks what attaching needs before any device is opened: privileges, then the module (loaded if missing). */
export async function prepareKernel(maxDevices: number): Promise<void> {
  requireSysAdmin();
  await ensureNbdModule(maxDevices);
}

/** Attaches `serve.device` to the kernel. Usage problems throw KernelUsageError (the CLI exits 2 on them). */
export async function attachKernel(serve: KernelServeOptions, options: KernelAttachOptions): Promise<KernelAttachment> {
  const log = serve.log;
  const connections = options.connections ?? 1;
  const caps = resolveCapabilities(serve.device);
  if (!Number.isInteger(connections) || connections < 1 || connections > 64) {
    throw new KernelUsageError(`--connections must be a whole number from 1 to 64, got ${connections}`);
  }
  if (connections > 1 && !caps.multiConn) {
    throw new KernelUsageError(`the ${serve.device.kind} device does not support several connections (no multi-conn); use --connections=1`);
  }
  if (serve.device.size % 512 !== 0) {
    throw new KernelUsageError(`the kernel needs a device size that is a multiple of 512 bytes, got ${serve.device.size}`);
  }
  await prepareKernel(options.maxDevices ?? 16);

  const settings: NetlinkSettings = {
    timeoutSeconds: options.timeoutSeconds ?? 0,
    deadConnTimeoutSeconds: options.deadConnTimeoutSeconds ?? DEFAULT_DEAD_CONN_TIMEOUT_S,
    backend: options.backend,
  };
  const named = options.devicePath === undefined ? undefined : namedIndex(options.devicePath);
  const takeover = reattachTarget(options, caps.persistent, log);
  // Everything that can be refused from sysfs alone is, before a netlink socket is opened.
  if (takeover !== undefined && named !== undefined && named !== takeover) {
    throw new KernelUsageError(
      `this store is still attached as /dev/nbd${takeover}, waiting for its daemon; run without a device path (or with /dev/nbd${takeover}) to reattach, or detach /dev/nbd${takeover} first`,
    );
  }
  if (takeover === undefined && named !== undefined) checkFree(named);

  const netlink = options.interface === "ioctl" ? undefined : NbdNetlink.open();
  if (takeover !== undefined) {
    if (netlink === undefined) {
      throw new KernelUsageError(
        options.interface === "ioctl"
          ? `this store's /dev/nbd${takeover} is waiting to be reattached, which needs the netlink interface: run without --nbd-interface=ioctl`
          : "reattaching needs the kernel's nbd netlink interface, which this kernel lacks",
      );
    }
    const previous = nbdConnections(takeover) || connections;
    log.log("info", `reattaching /dev/nbd${takeover} (left by a previous daemon) with ${previous} connection(s)`);
    return withNetlink(netlink, () =>
      NetlinkAttachment.reattach(netlink, { index: takeover, connections: previous, stateFile: options.stateFile }, serve, settings),
    );
  }
  if (netlink !== undefined) {
    return withNetlink(netlink, () =>
      NetlinkAttachment.connect(netlink, { index: named, connections, stateFile: caps.persistent ? options.stateFile : undefined }, serve, settings),
    );
  }
  if (options.interface !== "ioctl") log.log("info", "the kernel has no nbd netlink family; attaching through the ioctl interface");
  return IoctlAttachment.attach({ index: named, connections, timeoutSeconds: settings.timeoutSeconds }, serve);
}

/** Closes the netlink socket when the attach fails (on success the attachment keeps it). */
async function withNetlink(netlink: NbdNetlink, attach: () => Promise<KernelAttachment>): Promise<KernelAttachment> {
  try {
    return await attach();
  } catch (error) {
    netlink.close();
    throw error;
  }
}

function namedIndex(path: string): number {
  const index = nbdIndex(path);
  if (index === undefined) throw new KernelUsageError(`"${path}" is not an NBD device path; name one like /dev/nbd0`);
  const wrongNode = notAnNbdNode(path);
  if (wrongNode !== undefined) throw new KernelUsageError(`${wrongNode}; name an NBD device like /dev/nbd0`);
  if (!nbdExists(index)) {
    const have = nbdIndexes();
    const range = have.length === 0 ? "none" : `/dev/nbd${have[0]} to /dev/nbd${have[have.length - 1]}`;
    throw new KernelUsageError(`${path} does not exist (this kernel has ${range}); name an existing one, or leave the device out to let the kernel pick or create one`);
  }
  return index;
}

function checkFree(index: number): void {
  if (!nbdInUse(index)) return;
  const pid = nbdPid(index);
  const backend = nbdBackend(index);
  const by = [pid === undefined ? "" : `attached by pid ${pid}`, backend === undefined ? "" : `backend ${backend}`].filter(Boolean).join(", ");
  throw new KernelUsageError(
    `/dev/nbd${index} is in use${by ? ` (${by})` : ""}; detach it first (e.g. nbd-client -d /dev/nbd${index}), name another device, or leave the device out`,
  );
}

/**
 * The device to reattach to, if any: the one --reattach names, or the one this store's record names when the
 * kernel still holds it for this store. A record that no longer matches the kernel is stale and removed.
 */
function reattachTarget(options: KernelAttachOptions, persistent: boolean, log: Logger): number | undefined {
  if (options.reattach !== undefined) {
    if (!persistent) {
      throw new KernelUsageError(
        `refusing to reattach ${options.reattach} to a device whose data does not survive a restart: the filesystem on it would be corrupted; detach it and attach afresh`,
      );
    }
    const index = namedIndex(options.reattach);
    if (!nbdInUse(index)) throw new KernelUsageError(`nothing to reattach: ${options.reattach} is not attached`);
    const backend = nbdBackend(index);
    if (backend !== undefined && backend !== options.backend) {
      throw new KernelUsageError(`${options.reattach} is attached to another store (${backend}), not ${options.backend}; refusing to reattach`);
    }
    return index;
  }
  if (options.stateFile === undefined || !persistent) return undefined;
  const record = readAttachmentRecord(options.stateFile);
  if (record === undefined) return undefined;
  if (record.pid !== process.pid && processAlive(record.pid) && nbdInUse(record.index) && nbdPid(record.index) === record.pid) {
    throw new KernelUsageError(`this store is already attached as ${record.device} by running process ${record.pid}; stop that daemon first`);
  }
  const backend = nbdBackend(record.index);
  const waiting = nbdInUse(record.index) && record.backend === options.backend && (backend === undefined || backend === options.backend);
  if (waiting) return record.index;
  log.log("info", `forgetting a stale reattach record (${record.device} is no longer attached to this store)`);
  removeAttachmentRecord(options.stateFile);
  return undefined;
}
