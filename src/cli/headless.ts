/**
 * The headless face: serve the daemon's devices, print how to use them, print stats on an interval, and wait for
 * the daemon to be stopped (a signal; SIGUSR1 flushes). A kernel device that is mounted is not detached: the
 * signal is refused with a message naming the mount point, and the daemon keeps serving.
 */
import type { Daemon } from "../app/daemon.ts";
import type { ServedDevice } from "../app/serve.ts";
import { statsJson, statsLine } from "../app/stats-lines.ts";
import { formatSize } from "../shared/format-size.ts";
import { kernelHints } from "./kernel.ts";

export interface HeadlessIo {
  readonly out: (line: string) => void;
}

export interface HeadlessOptions {
  readonly json: boolean;
  /** Seconds between stats lines; 0 prints none until the final one. */
  readonly statsInterval: number;
}

export function connectHints(uri: string, name: string): string[] {
  return [
    `  URI:      ${uri}`,
    `  nbdinfo:  nbdinfo '${uri}'`,
    `  nbdfuse:  mkdir -p /tmp/${name} && nbdfuse /tmp/${name} '${uri}' &   # then: losetup --find --show /tmp/${name}/nbd`,
    `  qemu:     qemu-img info '${uri}'   (or -drive file=${uri},format=raw)`,
  ];
}

/** What a served device's banner says: where it is and what to do with it. */
export function bannerLines(d: ServedDevice, version: string): string[] {
  if (d.via === "listen") {
    return [`usbd-tui ${version}: serving ${d.kind} device "${d.name}" (${formatSize(d.size)}) on ${d.address}`, ...connectHints(d.uri, d.name)];
  }
  return [
    `usbd-tui ${version}: ${d.reattached ? "reattached" : "attached"} ${d.kind} device "${d.name}" (${formatSize(d.size)}) as ${d.path} (${d.detail})`,
    ...kernelHints(d.path, d.name),
  ];
}

/** Serves until the daemon is stopped; resolves with the exit code. */
export async function runHeadless(daemon: Daemon, options: HeadlessOptions, io: HeadlessIo): Promise<number> {
  for (const d of await daemon.serve()) for (const line of bannerLines(d, daemon.plan.version)) io.out(line);
  const printStats = (type: "stats" | "final") => {
    for (const s of daemon.host.snapshot()) io.out(options.json ? statsJson(type, s) : statsLine(s));
  };
  const timer = options.statsInterval > 0 ? setInterval(() => printStats("stats"), options.statsInterval * 1000) : undefined;
  try {
    const outcome = await daemon.finished;
    printStats("final");
    return outcome.code;
  } finally {
    if (timer) clearInterval(timer);
  }
}
