/**
 * The set of running devices and where each is served: the one object the headless mode and the dashboard both
 * drive (flush, stop) and watch (state, metrics, events). Shutdown always goes in the safe order: stop serving and
 * finish in-flight requests, flush, then close.
 */
import type { BlockDevice, DeviceStats } from "../devices/device.ts";
import type { ListenAddress } from "./address.ts";
import { type KernelAttachOptions, attachKernel } from "./kernel/attach.ts";
import { DetachRefusedError, type KernelAttachment, describeAttachment } from "./kernel/attachment.ts";
import { type Export, type NbdServer, listen } from "./listen.ts";
import type { Logger } from "./log.ts";
import { DeviceMetrics, type MetricsSnapshot } from "./metrics.ts";

export type DeviceState = "starting" | "serving" | "flushing" | "detaching" | "detached" | "error";

export interface HostEvent {
  readonly time: number;
  readonly device: string;
  readonly kind: "attached" | "flushed" | "detached" | "refused" | "error";
  readonly message: string;
}

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

export class Host {
  private readonly devices: HostedDevice[] = [];
  private readonly servers: NbdServer[] = [];
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
   * Detaches one kernel-attached device in the safe order (refusing while it is mounted unless `force`), then
   * closes it. A refusal leaves it attached and serving.
   */
  async detach(name: string, options: { readonly force?: boolean } = {}): Promise<void> {
    const hosted = this.find(name);
    const attachment = hosted.kernel;
    if (attachment === undefined) throw new Error(`${name} is not attached to the kernel`);
    const previous = hosted.state;
    hosted.state = "detaching";
    try {
      await attachment.detach(options);
    } catch (error) {
      hosted.state = previous;
      this.emit(name, error instanceof DetachRefusedError ? "refused" : "error", error instanceof Error ? error.message : String(error));
      throw error;
    }
    hosted.kernel = undefined;
    await this.closeDevice(hosted, `detached from ${attachment.path}, flushed and closed`);
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
      stats: d.device.stats?.(),
      kernel: d.kernel && { path: d.kernel.path, interface: d.kernel.interface, connections: d.kernel.connections, connected: d.kernel.connected() },
    }));
  }

  /** Flushes one device; resolves with the time it took in milliseconds. */
  async flush(name: string): Promise<number> {
    const hosted = this.find(name);
    const started = performance.now();
    const previous = hosted.state;
    hosted.state = "flushing";
    try {
      await hosted.device.flush();
      const ms = performance.now() - started;
      this.emit(name, "flushed", `flush done in ${ms.toFixed(1)} ms`);
      return ms;
    } catch (error) {
      this.emit(name, "error", `flush failed: ${error instanceof Error ? error.message : String(error)}`);
      throw error;
    } finally {
      if (hosted.state === "flushing") hosted.state = previous;
    }
  }

  async flushAll(): Promise<void> {
    await Promise.all(this.devices.map((d) => this.flush(d.name)));
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
