/**
 * Helpers for the kernel suites, which run inside the test VM (tests/vm/run.sh, through scripts/test-kernel.sh):
 * start the daemon attached to /dev/nbdX, read its stats, run shell commands, write and verify trees of files.
 */
import { existsSync, mkdirSync, mkdtempSync } from "node:fs";
import { join, resolve } from "node:path";
import { removeDir, run, runResult, sha256File, writeRandomFile } from "../clients/helpers.ts";
import { type Watched, waitFor, watch } from "../helpers/process.ts";
import { NbdNetlink } from "../../src/engine/kernel/nbd-netlink.ts";

const ROOT = resolve(import.meta.dir, "../..");
export const CLI = [join(ROOT, "node_modules/.bin/bun"), join(ROOT, "bin/usbd-tui.ts")];
const READY_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 60_000;

/** Whether this process runs inside the test VM (run.sh sets it); the suites refuse to run anywhere else. */
export function requireVm(): void {
  if (process.env.USBD_IN_VM !== "1") {
    throw new Error("the kernel suites attach /dev/nbdX and load modules: run them in the test VM with scripts/test-kernel.sh");
  }
}

export interface KernelDaemonOptions {
  readonly devType: "mem" | "file" | "dedup";
  readonly size?: string;
  /** The file device's store directory (a fresh one when absent; kept, so a later daemon can reopen it). */
  readonly storeDir?: string;
  readonly iface?: "netlink" | "ioctl";
  readonly connections?: number;
  /** A positional /dev/nbdN. */
  readonly device?: string;
  readonly args?: readonly string[];
}

export interface KernelDaemon {
  readonly path: string;
  readonly index: number;
  readonly storeDir: string;
  readonly w: Watched;
  /** The FLUSH count in the newest stats line (the daemon prints one per second). */
  flushes(): number;
  /** Waits until a stats line reports more than `count` flushes; returns the new count. */
  flushesAbove(count: number, timeoutMs?: number): Promise<number>;
  /** SIGTERM; resolves with the exit code. */
  stop(): Promise<number>;
  /** SIGKILL, as a crash would. */
  crash(): Promise<void>;
}

function statsLines(stdout: string): Array<{ type: string; totals: Record<string, { ops: number }> }> {
  return stdout
    .split("\n")
    .filter((l) => l.startsWith('{"type":"stats"') || l.startsWith('{"type":"final"'))
    .map((l) => JSON.parse(l) as { type: string; totals: Record<string, { ops: number }> });
}

export function kernelCommand(opts: KernelDaemonOptions, storeDir: string): string[] {
  return [
    ...CLI,
    "--headless",
    `--dev-type=${opts.devType}`,
    `--store-size=${opts.size ?? "256MiB"}`,
    `--store-dir=${storeDir}`,
    "--json",
    "--stats-interval=1",
    ...(opts.iface ? [`--nbd-interface=${opts.iface}`] : []),
    ...(opts.connections ? [`--connections=${opts.connections}`] : []),
    ...(opts.args ?? []),
    ...(opts.device ? [opts.device] : []),
  ];
}

/** Starts the daemon attached to the kernel and waits until it says which /dev/nbdN it got. */
export async function startKernelDaemon(opts: KernelDaemonOptions): Promise<KernelDaemon> {
  const storeDir = opts.storeDir ?? storeDirectory();
  const w = watch(kernelCommand(opts, storeDir), { cwd: ROOT });
  const path = await waitFor("\"attached ... as /dev/nbdN\" line", w, () => /attached .* as (\/dev\/nbd\d+) /.exec(w.stdout())?.[1], READY_TIMEOUT_MS).catch(
    async (error: unknown) => {
      await w.stop("SIGKILL", 0);
      throw error;
    },
  );
  const flushes = () => statsLines(w.stdout()).at(-1)?.totals.flush?.ops ?? 0;
  return {
    path,
    index: Number(path.slice("/dev/nbd".length)),
    storeDir,
    w,
    flushes,
    flushesAbove: (count, timeoutMs = 10_000) => waitFor(`a stats line with more than ${count} flushes`, w, () => (flushes() > count ? flushes() : undefined), timeoutMs),
    stop: () => w.stop("SIGTERM", STOP_TIMEOUT_MS),
    async crash() {
      await w.stop("SIGKILL", 0);
    },
  };
}

/** Runs a shell command line; throws with its output unless it exits 0. */
export function sh(command: string, timeoutMs = 120_000): Promise<string> {
  return run(["bash", "-c", command], { timeoutMs });
}

export { removeDir, runResult };

/** A fresh store directory in guest memory (/var/tmp is the guest's own tmpfs): fast, and gone with the VM. */
export function storeDirectory(): string {
  return mkdtempSync("/var/tmp/usbd-store-");
}

/** `count` files of random sizes (4 KiB to 1 MiB) in `dir`, in a few subdirectories; returns name -> sha256. */
export async function writeTree(dir: string, count: number, prefix = "f"): Promise<Map<string, string>> {
  const sums = new Map<string, string>();
  for (let i = 0; i < count; i++) {
    const sub = join(dir, `d${i % 4}`);
    if (!existsSync(sub)) mkdirSync(sub, { recursive: true });
    const name = join(sub, `${prefix}${i}.bin`);
    const size = 4096 * (1 + Math.floor(Math.random() * 256));
    sums.set(name, await writeRandomFile(name, size));
  }
  return sums;
}

/** The files whose content no longer matches its sha256 (empty when all do). */
export async function changedFiles(sums: ReadonlyMap<string, string>): Promise<string[]> {
  const changed: string[] = [];
  for (const [name, sum] of sums) {
    if (!existsSync(name) || (await sha256File(name)) !== sum) changed.push(name);
  }
  return changed;
}

/** Whether the kernel holds /dev/nbdN attached (its sysfs pid file exists). */
export function attached(index: number): boolean {
  return existsSync(`/sys/block/nbd${index}/pid`);
}

/** A fresh mount point under /run (guest memory). */
export function mountPoint(name: string): string {
  const dir = join("/run/usbd-test", name);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Drops the guest's clean page cache, so later reads come from the device. */
export function dropCaches(): Promise<string> {
  return sh("sync && echo 3 > /proc/sys/vm/drop_caches");
}

/** NBD_CMD_DISCONNECT from outside the daemon, as `nbd-client -d` would send it. */
export function kernelDisconnect(index: number): void {
  const netlink = NbdNetlink.open();
  if (netlink === undefined) throw new Error("no nbd netlink family: is the nbd module loaded?");
  try {
    netlink.disconnect(index);
  } finally {
    netlink.close();
  }
}

/** NBD_CMD_STATUS for one device: whether the kernel holds a configuration for it. */
export function kernelConnected(index: number): boolean | undefined {
  const netlink = NbdNetlink.open();
  if (netlink === undefined) return undefined;
  try {
    return netlink.status(index).find((d) => d.index === index)?.connected;
  } finally {
    netlink.close();
  }
}
