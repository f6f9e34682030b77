/**
 * The set of running devices and where each is served: the one object the headless mode and the dashboard both
 * drive (flush, trim, detach, stop) and watch (state, metrics, events). Shutdown always goes in the safe order: stop
 * serving and finish in-flight requests, flush, then close.
 */
import type { BlockDevice, DeviceStats } from "../devices/device.ts";
import type { ListenAddress } from "./address.ts";
import { type KernelAttachOptions, attachKernel } from "./kernel/attach.ts";
import { DetachRefusedError, type KernelAttachment, describeAttachment } from "./kernel/attachment.ts";
import { type Export, type NbdServer, listen } from "./listen.ts";
import type { Logger } from "../shared/log.ts";
import { DeviceMetrics, type MetricsSnapshot } from "./metrics.ts";
import { formatSize } from "../shared/format-size.ts";
import { CMD } from "./protocol/constants.ts";

export type DeviceState = "starting" | "serving" | "flushing" | "trimming" | "detaching" | "detached" | "error";

export interface HostEvent {
  readonly time: number;
  readonly device: string;
  readonly kind: "attached" | "flushed" | "trimmed" | "detached" | "refused" | "error";
  readonly message: string;
}

/**
 * What `Host.trim` did: `fstrim` on the file systems mounted from a kernel device, the device's own `reclaim`, or
 * nothing (a device whose trim already gave the space back). `detail` says it for people; `ms` is the time taken.
 */
export type TrimResult =
  | {
      readonly method: "fstrim";
      /** The first (usually only) mount point trimmed. */
      readonly mountPoint: string;
      /** Every mounted file system trimmed, one mount point each (partitions each have their own). */
      readonly mountPoints: readonly string[];
      /** What fstrim reported as trimmed, summed over the file systems. */
      readonly bytes: number;
      readonly detail: string;
      readonly ms: number;
    }
  | { readonly method: "reclaim"; readonly bytes: number; readonly detail: string; readonly ms: number }
  | { readonly method: "none"; readonly bytes: 0; readonly detail: string; readonly ms: number };

export interface HostedDevice {
  readonly name: string;
  readonly device: BlockDevice;
  readonly metrics: DeviceMetrics;
  state: DeviceState;
  /** Where clients reach it (an nbd URI, or /dev/nbdN), once served. */
  servedAt: string | undefined;
  /** Set while the device is attached to the kernel. */
  kernel: KernelAttachment | undefined;
}

export interface DeviceSnapshot {
  readonly name: string;
  readonly kind: string;
  readonly size: number;
  readonly state: DeviceState;
  readonly servedAt: string | undefined;
  readonly metrics: MetricsSnapshot;
  readonly stats: DeviceStats | undefined;
  /** Set while attached to the kernel. */
  readonly kernel: KernelSnapshot | undefined;
}

export interface KernelSnapshot {
  readonly path: string;
  readonly interface: "netlink" | "ioctl";
  readonly connections: number;
  /** What the kernel reports now (NBD_CMD_STATUS). */
  readonly connected: boolean;
}

/** A device's gauges; a device whose stats() throws shows the error instead of taking the dashboard down. */
function safeStats(device: BlockDevice): DeviceStats | undefined {
  try {
    return device.stats?.();
  } catch (error) {
    return { gauges: [], lastError: `stats failed: ${error instanceof Error ? error.message : String(error)}` };
  }
}

export class Host {
  private readonly devices: HostedDevice[] = [];
  private readonly servers: NbdServer[] = [];
  /** The server each network-exported device is offered by, until it is detached. */
  private readonly exportedBy = new Map<HostedDevice, NbdServer>();
  private readonly listeners = new Set<(event: HostEvent) => void>();
  private stopping: Promise<void> | undefined;

  constructor(private readonly log: Logger) {}

  /** Registers a device under a unique name; it is served by `serve`. */
  add(name: string, device: BlockDevice): HostedDevice {
    if (this.devices.some((d) => d.name === name)) throw new Error(`a device named "${name}" already exists`);
    const hosted: HostedDevice = { name, device, metrics: new DeviceMetrics(), state: "starting", servedAt: undefined, kernel: undefined };
    this.devices.push(hosted);
    return hosted;
  }

  /** Serves the given devices over NBD at `address`, each as an export named after it. */
  async serve(address: ListenAddress, hosted: readonly HostedDevice[]): Promise<NbdServer> {
    const exports: Export[] = hosted.map((h) => ({ name: h.name, device: h.device, metrics: h.metrics, description: h.device.kind }));
    const server = await listen(address, exports, { log: this.log });
    this.servers.push(server);
    for (const h of hosted) {
      this.exportedBy.set(h, server);
      h.servedAt = server.uri(h.name);
      h.state = "serving";
      this.emit(h.name, "attached", `serving at ${h.servedAt}`);
    }
    return server;
  }

  /** Attaches a device to the kernel as /dev/nbdN (see attachKernel for the options and the errors). */
  async attachKernel(hosted: HostedDevice, options: KernelAttachOptions): Promise<KernelAttachment> {
    const attachment = await attachKernel({ device: hosted.device, metrics: hosted.metrics, log: this.log, label: hosted.name }, options);
    hosted.kernel = attachment;
    hosted.servedAt = attachment.path;
    hosted.state = "serving";
    this.emit(hosted.name, "attached", `${attachment.reattached ? "reattached" : "attached"} as ${attachment.path} (${describeAttachment(attachment)})`);
    attachment.onLost((reason) => void this.lostKernel(hosted, reason));
    return attachment;
  }

  /**
   * Detaches one device, then closes it. A kernel device goes in the safe order (refusing while it is mounted unless
   * `force`; a refusal leaves it attached and serving). A network export is withdrawn from its server (clients can
   * no longer choose it; its connections finish the requests they sent and are closed; other exports go on), then
   * the device is flushed and closed. Throws for a device already detached or being detached.
   */
  async detach(name: string, options: { readonly force?: boolean } = {}): Promise<void> {
    const hosted = this.find(name);
    if (hosted.state === "detached") throw new Error(`${name} is already detached`);
    if (hosted.state === "detaching") throw new Error(`${name} is already being detached`);
    const attachment = hosted.kernel;
    const server = this.exportedBy.get(hosted);
    if (attachment === undefined && server === undefined) throw new Error(`${name} is not served, so there is nothing to detach`);
    const previous = hosted.state;
    hosted.state = "detaching";
    if (attachment !== undefined) {
      try {
        await attachment.detach(options);
      } catch (error) {
        hosted.state = previous;
        this.emit(name, error instanceof DetachRefusedError ? "refused" : "error", errorMessage(error));
        throw error;
      }
      hosted.kernel = undefined;
      await this.closeDevice(hosted, `detached from ${attachment.path}, flushed and closed`);
      return;
    }
    try {
      // Withdrawn first: no client can write to it once it is flushed and closed.
      await server!.withdraw(name);
      this.exportedBy.delete(hosted);
      await hosted.device.flush();
      await this.closeDevice(hosted, `withdrawn from ${hosted.servedAt}, flushed and closed`);
    } catch (error) {
      hosted.state = "error";
      this.emit(name, "error", `detach failed: ${errorMessage(error)}`);
      throw error;
    }
  }

  /**
   * Gives back space the device no longer needs. A kernel device with mounted file systems gets `fstrim` on each
   * (the file system tells the device which blocks are free, as TRIM requests through our sessions); otherwise
   * the device's own `reclaim` runs (dedup: free the slots of unreferenced blocks now rather than at the next
   * commit); a device without one releases space as it is trimmed, so there is nothing to do. The state reads
   * "trimming" meanwhile; a "trimmed" event reports the result, an "error" event a failure (which is rethrown).
   */
  async trim(name: string): Promise<TrimResult> {
    const hosted = this.find(name);
    if (hosted.state === "detached" || hosted.state === "detaching") throw new Error(`${name} is ${hosted.state}; there is nothing to trim`);
    if (hosted.state === "trimming") throw new Error(`a trim of ${name} is already running`);
    const previous = hosted.state;
    hosted.state = "trimming";
    const started = performance.now();
    try {
      const mounts = hosted.kernel?.mounts() ?? [];
      let result: TrimResult;
      if (mounts.length > 0) {
        const mountPoints = mounts.map((m) => m.mountPoint);
        let bytes = 0;
        // One at a time: each sends its TRIM requests through this process's own sessions.
        for (const mountPoint of mountPoints) bytes += await fstrim(mountPoint);
        const detail = `fstrim ${mountPoints.join(", ")}`;
        result = { method: "fstrim", mountPoint: mountPoints[0]!, mountPoints, bytes, detail, ms: performance.now() - started };
        this.emit(name, "trimmed", `trimmed ${formatSize(bytes)} (${detail}) in ${formatMs(result.ms)}`);
      } else if (hosted.device.reclaim !== undefined) {
        const reclaimed = await hosted.device.reclaim();
        result = { method: "reclaim", bytes: reclaimed.bytes, detail: reclaimed.detail, ms: performance.now() - started };
        this.emit(name, "trimmed", `reclaimed ${formatSize(reclaimed.bytes)} (${reclaimed.detail}) in ${formatMs(result.ms)}`);
      } else {
        const detail = `${hosted.device.kind} releases space as soon as it is trimmed; nothing to reclaim`;
        result = { method: "none", bytes: 0, detail, ms: performance.now() - started };
        this.emit(name, "trimmed", detail);
      }
      return result;
    } catch (error) {
      this.emit(name, "error", `trim failed: ${errorMessage(error)}`);
      throw error;
    } finally {
      if (hosted.state === "trimming") hosted.state = previous;
    }
  }

  list(): readonly HostedDevice[] {
    return this.devices;
  }

  snapshot(windowSeconds?: number): DeviceSnapshot[] {
    return this.devices.map((d) => ({
      name: d.name,
      kind: d.device.kind,
      size: d.device.size,
      state: d.state,
      servedAt: d.servedAt,
      metrics: d.metrics.snapshot(windowSeconds),
      stats: safeStats(d.device),
      kernel: d.kernel && { path: d.kernel.path, interface: d.kernel.interface, connections: d.kernel.connections, connected: d.kernel.connected() },
    }));
  }

  /**
   * Flushes one device; resolves with the time it took in milliseconds. It counts in the device's metrics as a
   * FLUSH, like one a client sent, so the flush counter a user watches moves for the flushes they ask for too.
   */
  async flush(name: string): Promise<number> {
    const hosted = this.find(name);
    const started = hosted.metrics.begin();
    const previous = hosted.state;
    hosted.state = "flushing";
    try {
      await hosted.device.flush();
      hosted.metrics.end(CMD.FLUSH, 0, started, true);
      const ms = performance.now() - started;
      this.emit(name, "flushed", `flush done in ${ms.toFixed(1)} ms`);
      return ms;
    } catch (error) {
      hosted.metrics.end(CMD.FLUSH, 0, started, false);
      this.emit(name, "error", `flush failed: ${errorMessage(error)}`);
      throw error;
    } finally {
      if (hosted.state === "flushing") hosted.state = previous;
    }
  }

  /** Flushes every device still open (SIGUSR1). */
  async flushAll(): Promise<void> {
    await Promise.all(this.devices.filter((d) => d.state !== "detached").map((d) => this.flush(d.name)));
  }

  /**
   * Stops every server (in-flight requests finish) and detaches every kernel device, then flushes and closes every
   * device. Refuses, changing nothing, while a kernel device is mounted (unless `force`). Idempotent once started.
   */
  stop(options: { readonly force?: boolean } = {}): Promise<void> {
    if (this.stopping === undefined) {
      const refusal = options.force ? undefined : this.kernelRefusal();
      if (refusal !== undefined) {
        this.emit(refusal.name, "refused", refusal.error.message);
        return Promise.reject(refusal.error);
      }
      this.stopping = this.stopAll(options.force ?? false);
    }
    return this.stopping;
  }

  subscribe(listener: (event: HostEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The first kernel device that something still uses, with the error a refused detach gives. */
  private kernelRefusal(): { name: string; error: DetachRefusedError } | undefined {
    for (const d of this.devices) {
      const users = d.kernel?.users() ?? [];
      if (d.kernel !== undefined && users.length > 0) return { name: d.name, error: new DetachRefusedError(d.kernel.path, users) };
    }
    return undefined;
  }

  /** Detached devices (see `detach`) are skipped: they are flushed and closed already. */
  private async stopAll(force: boolean): Promise<void> {
    for (const d of this.devices) if (d.state !== "detached") d.state = "detaching";
    await Promise.all(this.servers.map((s) => s.stop()));
    const failures: string[] = [];
    await Promise.all(
      this.devices.map(async (d) => {
        if (d.state === "detached") return;
        try {
          if (d.kernel !== undefined) {
            // Detach flushes (the kernel's cache, then the device) before it disconnects.
            await d.kernel.detach({ force });
            d.kernel = undefined;
          } else {
            await d.device.flush();
          }
          await this.closeDevice(d, "flushed and closed");
        } catch (error) {
          d.state = "error";
          const message = error instanceof Error ? error.message : String(error);
          failures.push(`${d.name}: ${message}`);
          this.emit(d.name, "error", `shutdown failed: ${message}`);
        }
      }),
    );
    if (failures.length > 0) throw new Error(`could not flush and close every device (${failures.join("; ")})`);
  }

  private async closeDevice(d: HostedDevice, message: string): Promise<void> {
    await d.device.close();
    d.state = "detached";
    // A device that was never served (its attach failed) ends without an event: the failure is the news.
    if (d.servedAt !== undefined) this.emit(d.name, "detached", message);
  }

  /** The kernel let go of a device on its own: flush and close it; its data is safe, but nothing serves it now. */
  private async lostKernel(d: HostedDevice, reason: string): Promise<void> {
    if (d.kernel === undefined) return;
    d.kernel = undefined;
    this.emit(d.name, "error", `${d.servedAt ?? "kernel device"} ${reason}`);
    try {
      await d.device.flush();
      await this.closeDevice(d, "flushed and closed after the kernel let go of it");
    } catch (error) {
      d.state = "error";
      this.emit(d.name, "error", `flush after losing the kernel device failed: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  private find(name: string): HostedDevice {
    const hosted = this.devices.find((d) => d.name === name);
    if (!hosted) throw new Error(`no device named "${name}"`);
    return hosted;
  }

  private emit(device: string, kind: HostEvent["kind"], message: string): void {
    const event: HostEvent = { time: Date.now(), device, kind, message };
    this.log.log(kind === "error" || kind === "refused" ? "error" : "info", message, { device });
    for (const listener of this.listeners) listener(event);
  }
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function formatMs(ms: number): string {
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms).toLocaleString("en-US")} ms`;
}

/** What `fstrim -v` reports: "/mnt/x: 1.2 GiB (1234567 bytes) trimmed" (also "... trimmed on /dev/nbd0"). */
export function parseFstrimBytes(output: string): number | undefined {
  const match = /\((\d+) bytes\) trimmed/.exec(output);
  return match === null ? undefined : Number(match[1]);
}

/**
 * Runs `fstrim -v` on a mount point and returns the bytes it trimmed. Asynchronous on purpose: the file system's
 * TRIM requests come back to this process's sessions, so waiting synchronously would deadlock.
 */
async function fstrim(mountPoint: string): Promise<number> {
  let proc: ReturnType<typeof Bun.spawn<"ignore", "pipe", "pipe">>;
  try {
    proc = Bun.spawn(["fstrim", "-v", mountPoint], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  } catch (error) {
    throw new Error(`cannot run fstrim on ${mountPoint} (${errorMessage(error)}); install util-linux`);
  }
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`fstrim ${mountPoint} failed (exit ${code}): ${stderr.trim() || stdout.trim() || "no output"}`);
  const bytes = parseFstrimBytes(stdout);
  if (bytes === undefined) throw new Error(`fstrim ${mountPoint}: cannot read the trimmed byte count from "${stdout.trim()}"`);
  return bytes;
}
