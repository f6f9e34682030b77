/**
 * Headless mode: open the device, serve it, print how to connect, print stats on an interval, and shut down in
 * the safe order on SIGINT/SIGTERM (SIGUSR1 flushes).
 */
import { type ListenAddress, describeAddress, parseListenAddress } from "../engine/address.ts";
import type { DeviceSnapshot, Host } from "../engine/host.ts";
import type { Logger } from "../engine/log.ts";
import type { CliOptions } from "./flags.ts";
import { formatSize } from "./sizes.ts";

export interface HeadlessIo {
  readonly out: (line: string) => void;
}

function formatRate(bytesPerSecond: number): string {
  return `${(bytesPerSecond / 1e6).toFixed(1)} MB/s`;
}

/** One human line per device: what a glance at `journalctl` should tell. */
export function statsLine(s: DeviceSnapshot): string {
  const m = s.metrics;
  const gauges = (s.stats?.gauges ?? [])
    .map((g) => `${g.name} ${g.unit === "bytes" ? formatSize(g.value) : g.unit === "ratio" ? `${g.value.toFixed(2)}x` : g.value}`)
    .join(", ");
  return (
    `stats ${s.name}: read ${m.readIops.toFixed(0)} IOPS ${formatRate(m.readBytesPerSecond)}, ` +
    `write ${m.writeIops.toFixed(0)} IOPS ${formatRate(m.writeBytesPerSecond)}, ` +
    `p50 ${m.latencyP50Micros.toFixed(0)} us, p99 ${m.latencyP99Micros.toFixed(0)} us, ` +
    `in-flight ${m.inFlight}, connections ${m.connections}${gauges ? `, ${gauges}` : ""}`
  );
}

/** One JSON object per device: the metrics snapshot without its 60-second history. */
export function statsJson(type: "stats" | "final", s: DeviceSnapshot): string {
  const { history: _history, ...metrics } = s.metrics;
  return JSON.stringify({ type, device: s.name, kind: s.kind, size: s.size, state: s.state, ...metrics, gauges: s.stats?.gauges ?? [] });
}

export function connectHints(uri: string, name: string): string[] {
  return [
    `  URI:      ${uri}`,
    `  nbdinfo:  nbdinfo '${uri}'`,
    `  nbdfuse:  mkdir -p /tmp/${name} && nbdfuse /tmp/${name} '${uri}' &   # then: losetup --find --show /tmp/${name}/nbd`,
    `  qemu:     qemu-img info '${uri}'   (or -drive file=${uri},format=raw)`,
  ];
}

/** Serves until a signal, then shuts down; resolves with the process exit code. */
export async function runHeadless(host: Host, options: CliOptions, version: string, log: Logger, io: HeadlessIo): Promise<number> {
  const address: ListenAddress = parseListenAddress(options.listen!);
  const server = await host.serve(address, host.list());
  for (const d of host.list()) {
    io.out(`usbd-tui ${version}: serving ${d.device.kind} device "${d.name}" (${formatSize(d.device.size)}) on ${describeAddress(server.address)}`);
    for (const line of connectHints(d.servedAt!, d.name)) io.out(line);
  }

  const printStats = (type: "stats" | "final") => {
    for (const s of host.snapshot()) io.out(options.json ? statsJson(type, s) : statsLine(s));
  };
  const timer = options.statsInterval > 0 ? setInterval(() => printStats("stats"), options.statsInterval * 1000) : undefined;

  const onFlushSignal = () => {
    log.log("info", "SIGUSR1: flushing every device");
    host.flushAll().catch((error: unknown) => log.log("error", `flush failed: ${error instanceof Error ? error.message : String(error)}`));
  };
  process.on("SIGUSR1", onFlushSignal);

  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once("SIGINT", () => resolve("SIGINT"));
    process.once("SIGTERM", () => resolve("SIGTERM"));
  });
  log.log("info", `${signal}: stopping (finishing in-flight requests, then flush and close)`);
  const forceExit = () => {
    log.log("warn", "second signal during shutdown: exiting without waiting");
    process.exit(1);
  };
  process.once("SIGINT", forceExit);
  process.once("SIGTERM", forceExit);
  if (timer) clearInterval(timer);
  process.off("SIGUSR1", onFlushSignal);
  try {
    await host.stop();
  } catch (error) {
    log.log("error", error instanceof Error ? error.message : String(error));
    printStats("final");
    return 1;
  }
  printStats("final");
  log.log("info", "stopped cleanly");
  return 0;
}
