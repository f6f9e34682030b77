/**
 * Headless mode: serve the devices (over a socket, or to the kernel as /dev/nbdX), print how to use them, print
 * stats on an interval, and shut down in the safe order on SIGINT/SIGTERM (SIGUSR1 flushes). A kernel device that
 * is mounted is not detached: the signal is refused with a message naming the mount point.
 */
import { resolveCapabilities } from "../devices/device.ts";
import { type ListenAddress, describeAddress, parseListenAddress } from "../engine/address.ts";
import type { DeviceSnapshot, Host } from "../engine/host.ts";
import { DetachRefusedError, describeAttachment } from "../engine/kernel/attachment.ts";
import type { Logger } from "../shared/log.ts";
import { deviceOptions } from "./devices.ts";
import type { CliOptions } from "./flags.ts";
import { kernelAttachOptions, kernelHints } from "./kernel.ts";
import { formatSize } from "../shared/format-size.ts";
import { formatGaugeValue } from "../ui/format.ts";

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
    .map((g) => `${g.name} ${formatGaugeValue(g.value, g.unit)}`)
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
  return JSON.stringify({
    type,
    device: s.name,
    kind: s.kind,
    size: s.size,
    state: s.state,
    servedAt: s.servedAt,
    kernel: s.kernel,
    ...metrics,
    gauges: s.stats?.gauges ?? [],
  });
}

export function connectHints(uri: string, name: string): string[] {
  return [
    `  URI:      ${uri}`,
    `  nbdinfo:  nbdinfo '${uri}'`,
    `  nbdfuse:  mkdir -p /tmp/${name} && nbdfuse /tmp/${name} '${uri}' &   # then: losetup --find --show /tmp/${name}/nbd`,
    `  qemu:     qemu-img info '${uri}'   (or -drive file=${uri},format=raw)`,
  ];
}

/**
 * Serves over --listen, or attaches every device to the kernel (a --config file's device with its own options,
 * see deviceOptions); prints how to use what it served.
 */
export async function serveDevices(host: Host, options: CliOptions, version: string, io: HeadlessIo): Promise<void> {
  if (options.listen !== undefined) {
    const address: ListenAddress = parseListenAddress(options.listen);
    const server = await host.serve(address, host.list());
    for (const d of host.list()) {
      io.out(`usbd-tui ${version}: serving ${d.device.kind} device "${d.name}" (${formatSize(d.device.size)}) on ${describeAddress(server.address)}`);
      for (const line of connectHints(d.servedAt!, d.name)) io.out(line);
    }
    return;
  }
  for (const d of host.list()) {
    const own = deviceOptions(d) ?? options;
    const attachment = await host.attachKernel(d, kernelAttachOptions(own, resolveCapabilities(d.device).persistent));
    io.out(
      `usbd-tui ${version}: ${attachment.reattached ? "reattached" : "attached"} ${d.device.kind} device "${d.name}" (${formatSize(d.device.size)}) as ${attachment.path} (${describeAttachment(attachment)})`,
    );
    for (const line of kernelHints(attachment.path, d.name)) io.out(line);
  }
}

type StopReason = "SIGINT" | "SIGTERM" | "gone";

/**
 * SIGINT/SIGTERM, listened for from the start (a signal that arrives while devices are still being attached is
 * kept, not lost to the default action), plus "gone" once the kernel has let go of every device. A signal while a
 * shutdown is already running exits at once.
 */
class StopRequests {
  private readonly pending: StopReason[] = [];
  private wake: (() => void) | undefined;
  private shuttingDown = false;
  private readonly onSignal = (signal: NodeJS.Signals) => {
    if (this.shuttingDown) {
      this.log.log("warn", "second signal during shutdown: exiting without waiting");
      process.exit(1);
    }
    this.push(signal === "SIGINT" ? "SIGINT" : "SIGTERM");
  };
  private unsubscribe: (() => void) | undefined;

  constructor(private readonly log: Logger) {
    process.on("SIGINT", this.onSignal);
    process.on("SIGTERM", this.onSignal);
  }

  watch(host: Host): void {
    this.unsubscribe = host.subscribe(() => {
      if (host.list().every((d) => d.state === "detached" || d.state === "error")) this.push("gone");
    });
  }

  async next(): Promise<StopReason> {
    while (this.pending.length === 0) await new Promise<void>((resolve) => (this.wake = resolve));
    return this.pending.shift()!;
  }

  /** Marks a shutdown as running (or finished), which decides what a further signal does. */
  set busy(value: boolean) {
    this.shuttingDown = value;
  }

  dispose(): void {
    process.off("SIGINT", this.onSignal);
    process.off("SIGTERM", this.onSignal);
    this.unsubscribe?.();
  }

  private push(reason: StopReason): void {
    this.pending.push(reason);
    this.wake?.();
  }
}

/** Serves until a signal (or until the kernel lets go of every device), then shuts down; resolves with the exit code. */
export async function runHeadless(host: Host, options: CliOptions, version: string, log: Logger, io: HeadlessIo): Promise<number> {
  const stops = new StopRequests(log);
  try {
    await serveDevices(host, options, version, io);
    stops.watch(host);
    return await serveUntilStopped(host, options, log, io, stops);
  } finally {
    stops.dispose();
  }
}

async function serveUntilStopped(host: Host, options: CliOptions, log: Logger, io: HeadlessIo, stops: StopRequests): Promise<number> {
  const printStats = (type: "stats" | "final") => {
    for (const s of host.snapshot()) io.out(options.json ? statsJson(type, s) : statsLine(s));
  };
  const timer = options.statsInterval > 0 ? setInterval(() => printStats("stats"), options.statsInterval * 1000) : undefined;

  const onFlushSignal = () => {
    log.log("info", "SIGUSR1: flushing every device");
    host.flushAll().catch((error: unknown) => log.log("error", `flush failed: ${error instanceof Error ? error.message : String(error)}`));
  };
  process.on("SIGUSR1", onFlushSignal);

  let status: number | undefined;
  while (status === undefined) {
    const reason = await stops.next();
    if (reason === "gone") {
      status = host.list().every((d) => d.state === "detached") ? 0 : 1;
      break;
    }
    log.log("info", `${reason}: stopping (finishing in-flight requests, then flush${options.listen === undefined ? ", disconnect" : ""} and close)`);
    stops.busy = true;
    try {
      await host.stop({ force: options.force });
      status = 0;
    } catch (error) {
      if (error instanceof DetachRefusedError) {
        log.log("info", "still serving: send SIGINT or SIGTERM again once it is unmounted (or run with --force)");
      } else {
        log.log("error", error instanceof Error ? error.message : String(error));
        status = 1;
      }
    } finally {
      stops.busy = false;
    }
  }
  if (timer) clearInterval(timer);
  process.off("SIGUSR1", onFlushSignal);
  printStats("final");
  if (status === 0) log.log("info", "stopped cleanly");
  return status;
}
