/**
 * What sysfs and procfs say about NBD devices: which exist, which are in use (a device is in use exactly when
 * /sys/block/nbdN/pid exists, i.e. the kernel holds a configuration for it), who set them up, and how many
 * connections they have. Read-only; nothing here changes the kernel's state.
 */
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { NBD_MAJOR } from "./constants.ts";

const SYS_BLOCK = "/sys/block";

/** The index N of a /dev/nbdN path, or undefined for any other path. */
export function nbdIndex(path: string): number | undefined {
  const m = /^\/dev\/nbd(\d+)$/.exec(path);
  return m ? Number(m[1]) : undefined;
}

export function nbdPath(index: number): string {
  return `/dev/nbd${index}`;
}

function sysDir(index: number): string {
  return `${SYS_BLOCK}/nbd${index}`;
}

function readTrimmed(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return undefined;
  }
}

/** Whether the nbd module is loaded (or built in). */
export function nbdModuleLoaded(): boolean {
  return existsSync("/sys/module/nbd");
}

/** Indexes of every /dev/nbdN the kernel has, ascending. */
export function nbdIndexes(): number[] {
  let names: string[];
  try {
    names = readdirSync(SYS_BLOCK);
  } catch {
    return [];
  }
  return names
    .map((n) => /^nbd(\d+)$/.exec(n)?.[1])
    .filter((n): n is string => n !== undefined)
    .map(Number)
    .sort((a, b) => a - b);
}

export function nbdExists(index: number): boolean {
  return existsSync(sysDir(index));
}

/** Whether the kernel holds a configuration for the device (attached, or waiting for a dead connection). */
export function nbdInUse(index: number): boolean {
  return existsSync(`${sysDir(index)}/pid`);
}

/** The pid the kernel recorded for the task that attached the device, if it is attached. */
export function nbdPid(index: number): number | undefined {
  const text = readTrimmed(`${sysDir(index)}/pid`);
  return text === undefined || text === "" ? undefined : Number(text);
}

/** The backend identifier given at connect (Linux 5.14+), or undefined when none is shown. */
export function nbdBackend(index: number): string | undefined {
  const text = readTrimmed(`${sysDir(index)}/backend`);
  return text === undefined || text === "" ? undefined : text;
}

/** The device's connection count: one blk-mq hardware queue per socket. */
export function nbdConnections(index: number): number {
  try {
    return readdirSync(`${sysDir(index)}/mq`).length;
  } catch {
    return 0;
  }
}

/** Why `path` is not an NBD block device node, or undefined when it is one (or does not exist as a node yet). */
export function notAnNbdNode(path: string): string | undefined {
  let stat;
  try {
    stat = statSync(path);
  } catch {
    return undefined;
  }
  if (!stat.isBlockDevice()) return `${path} is not a block device`;
  const major = Math.floor(stat.rdev / 256) & 0xfff;
  if (major !== NBD_MAJOR) return `${path} is a block device of major ${major}, not an NBD device (major ${NBD_MAJOR})`;
  return undefined;
}

/** CAP_SYS_ADMIN in the effective set: what both the ioctl and the netlink interfaces demand. */
export function hasSysAdmin(): boolean {
  const text = readTrimmed("/proc/self/status");
  const capEff = text === undefined ? undefined : /^CapEff:\s*([0-9a-f]+)$/m.exec(text)?.[1];
  if (capEff === undefined) return process.geteuid?.() === 0;
  const CAP_SYS_ADMIN = 21n;
  return ((BigInt(`0x${capEff}`) >> CAP_SYS_ADMIN) & 1n) === 1n;
}
