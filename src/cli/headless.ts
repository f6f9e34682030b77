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
import { tlsConnectHints } from "./tls-hints.ts";

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
    const hints = d.tls === undefined ? connectHints(d.uri, d.name) : tlsConnectHints(d.uri, d.name, d.tls);
    return [`usbd-tui ${version}: serving ${d.kind} device "${d.name}" (${formatSize(d.size)}) on ${d.address}${d.tls ? " (TLS)" : ""}`, ...hints];
  }
  return [
    `usbd-tui ${version}: ${d.reattached ? "reattached" : "attached"} ${d.kind} device "${d.name}" (${formatSize(d.size)}) as ${d.path} (${d.detail})`,
    ...kernelHints(d.path, d.name),
  ];
}

/**
 * The banner as one JSON line (--json keeps stdout to JSON lines only): what was served and where, and the banner's
 * first line as `message`.
 */
export function bannerJson(d: ServedDevice, version: string): string {
  const message = bannerLines(d, version)[0]!;
  if (d.via === "listen") return JSON.stringify({ type: "serving", device: d.name, kind: d.kind, size: d.size, uri: d.uri, address: d.address, message });
  return JSON.stringify({ type: d.reattached ? "reattached" : "attached", device: d.name, kind: d.kind, size: d.size, path: d.path, detail: d.detail, message });
}

/** Serves until the daemon is stopped; resolves with the exit code. */
export async function runHeadless(daemon: Daemon, options: HeadlessOptions, io: HeadlessIo): Promise<number> {
  for (const d of await daemon.serve()) {
    if (options.json) io.out(bannerJson(d, daemon.plan.version));
    else for (const line of bannerLines(d, daemon.plan.version)) io.out(line);
  }
  // Rates over the interval between two lines (whole seconds, 1 to 60), so a line never repeats an earlier burst.
  const window = Math.min(60, Math.max(1, Math.round(options.statsInterval)));
  const printStats = (type: "stats" | "final") => {
    for (const s of daemon.host.snapshot(window)) io.out(options.json ? statsJson(type, s) : statsLine(s));
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
