/**
 * The set of running devices and where each is served: the one object the headless mode and the dashboard both
 * drive (flush, stop) and watch (state, metrics, events). Shutdown always goes in the safe order: stop serving and
 * finish in-flight requests, flush, then close.
 */
import type { BlockDevice, DeviceStats } from "../devices/device.ts";
import type { ListenAddress } from "./address.ts";
import { type Export, type NbdServer, listen } from "./listen.ts";
import type { Logger } from "./log.ts";
import { DeviceMetrics, type MetricsSnapshot } from "./metrics.ts";

export type DeviceState = "starting" | "serving" | "flushing" | "detaching" | "detached" | "error";

export interface HostEvent {
  readonly time: number;
  readonly device: string;
  readonly kind: "attached" | "flushed" | "detached" | "error";
  readonly message: string;
}

export interface HostedDevice {
  readonly name: string;
  readonly device: BlockDevice;
  readonly metrics: DeviceMetrics;
  state: DeviceState;
  /** Where clients reach it (an nbd URI), once served. */
  servedAt: string | undefined;
}

export interface DeviceSnapshot {
  readonly name: string;
  readonly kind: string;
  readonly size: number;
  readonly state: DeviceState;
  readonly servedAt: string | undefined;
  readonly metrics: MetricsSnapshot;
  readonly stats: DeviceStats | undefined;
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
    const hosted: HostedDevice = { name, device, metrics: new DeviceMetrics(), state: "starting", servedAt: undefined };
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

  /** Stops every server (in-flight requests finish), then flushes and closes every device. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= this.stopAll();
    return this.stopping;
  }

  subscribe(listener: (event: HostEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private async stopAll(): Promise<void> {
    for (const d of this.devices) if (d.state !== "detached") d.state = "detaching";
    await Promise.all(this.servers.map((s) => s.stop()));
    const failures: string[] = [];
    for (const d of this.devices) {
      if (d.state === "detached") continue;
      try {
        await d.device.flush();
        await d.device.close();
        d.state = "detached";
        this.emit(d.name, "detached", "flushed and closed");
      } catch (error) {
        d.state = "error";
        const message = error instanceof Error ? error.message : String(error);
        failures.push(`${d.name}: ${message}`);
        this.emit(d.name, "error", `shutdown failed: ${message}`);
      }
    }
    if (failures.length > 0) throw new Error(`could not flush and close every device (${failures.join("; ")})`);
  }

  private find(name: string): HostedDevice {
    const hosted = this.devices.find((d) => d.name === name);
    if (!hosted) throw new Error(`no device named "${name}"`);
    return hosted;
  }

  private emit(device: string, kind: HostEvent["kind"], message: string): void {
    const event: HostEvent = { time: Date.now(), device, kind, message };
    this.log.log(kind === "error" ? "error" : "info", message, { device });
    for (const listener of this.listeners) listener(event);
  }
}
