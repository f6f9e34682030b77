/**
 * The set of running devices and where each is served: the one object every face drives (flush, trim, detach,
 * stop) and watches (snapshots with state, running action, last error and clients; numbered events). Shutdown
 * always goes in the safe order: stop serving and finish in-flight requests, flush, then close.
 */
import type { BlockDevice, DeviceNotice, DeviceStats, NamedSnapshot, UnsettledData } from "../devices/device.ts";
import { formatSize } from "../shared/format-size.ts";
import type { Logger } from "../shared/log.ts";
import type { ListenAddress } from "./address.ts";
import { fstrim } from "./fstrim.ts";
import { HostEvents } from "./host-events.ts";
import { type Activity, type ClientSnapshot, type DeviceSnapshot, type DeviceState, type HostEvent, type HostEventKind, type TrimResult, describeClient } from "./host-types.ts";
import { type KernelAttachOptions, attachKernel } from "./kernel/attach.ts";
import { DetachRefusedError, type KernelAttachment, describeAttachment } from "./kernel/attachment.ts";
import { type Export, type ListenOptions, type NbdServer, listen } from "./listen.ts";
import { DeviceMetrics } from "./metrics.ts";
import { peerProcess } from "./peer-process.ts";
import { CMD } from "./protocol/constants.ts";

export { describeClient, type Activity, type ClientSnapshot, type DeviceSnapshot, type DeviceState, type HostEvent, type HostEventKind, type KernelSnapshot, type TrimResult } from "./host-types.ts";

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

/** What the Host keeps about a device beyond what its faces may change. */
interface DeviceRecord {
  activity: { readonly label: Activity["label"]; readonly startedAt: number } | undefined;
  /** The last error event, until a later event says something went well. */
  lastError: string | undefined;
  readonly clients: ClientSnapshot[];
  /** What the device could not deliver to its store by the time it closed (see BlockDevice.unsettled). */
  unsettled: UnsettledData | undefined;
}

/** A device's gauges; a device whose stats() throws shows the error instead of taking the dashboard down. */
function safeStats(device: BlockDevice): DeviceStats | undefined {
  try {
    return device.stats?.();
  } catch (error) {
    return { gauges: [], lastError: `stats failed: ${error instanceof Error ? error.message : String(error)}` };
  }
}

/** What a device has not delivered to its store yet; a device whose unsettled() throws is treated as having nothing. */
function safeUnsettled(device: BlockDevice): UnsettledData | undefined {
  try {
    const u = device.unsettled?.();
    return u !== undefined && u.bytes > 0 ? u : undefined;
  } catch {
    return undefined;
  }
}

/** Events after which a device's sticky error no longer applies: something went well. */
const CLEARS_ERROR: ReadonlySet<HostEventKind> = new Set(["attached", "flushed", "trimmed", "detached", "recovered", "progress"]);

export class Host {
  private readonly devices: HostedDevice[] = [];
  private readonly records = new Map<string, DeviceRecord>();
  private readonly servers: NbdServer[] = [];
  /** The server each network-exported device is offered by, until it is detached. */
  private readonly exportedBy = new Map<HostedDevice, NbdServer>();
  private readonly events: HostEvents;
  /** The engine's logger: a connection's warnings become events of the device it serves. */
  private readonly engineLog: Logger;
  private stopping: Promise<void> | undefined;

  constructor(log: Logger) {
    this.events = new HostEvents(log);
    this.engineLog = this.events.logger(undefined, (fields) => (typeof fields.peer === "string" ? this.deviceOfPeer(fields.peer) : undefined));
    this.events.subscribe((event) => {
      const record = this.records.get(event.device);
      if (record === undefined) return;
      if (event.kind === "error") record.lastError = event.message;
      else if (CLEARS_ERROR.has(event.kind)) record.lastError = undefined;
    });
  }

  /**
   * The logger for the device `name` and the code serving it: lines carry the device's name, and its warnings and
   * errors are events of that device. Usable before the device is added (it is opened with it).
   */
  deviceLog(name: string): Logger {
    return this.events.logger(name);
  }

  /** Registers a device under a unique name; it is served by `serve` or `attachKernel`. */
  add(name: string, device: BlockDevice): HostedDevice {
    if (this.devices.some((d) => d.name === name)) throw new Error(`a device named "${name}" already exists`);
    const hosted: HostedDevice = { name, device, metrics: new DeviceMetrics(), state: "starting", servedAt: undefined, kernel: undefined };
    this.devices.push(hosted);
    this.records.set(name, { activity: undefined, lastError: undefined, clients: [], unsettled: undefined });
    return hosted;
  }

  /** Something a device told about itself (created or reopened, an upload round, the store failing or back). */
  notice(name: string, notice: DeviceNotice): void {
    const kind: HostEventKind = notice.kind === "error" ? "error" : notice.kind;
    this.events.emit(name, kind, notice.message);
  }

  /** Serves the given devices over NBD at `address`, each as an export named after it, with the listener's `limits`. */
  async serve(address: ListenAddress, hosted: readonly HostedDevice[], limits: Omit<ListenOptions, "log" | "onClient"> = {}): Promise<NbdServer> {
    const exports: Export[] = hosted.map((h) => ({ name: h.name, device: h.device, metrics: h.metrics, description: h.device.kind }));
    const server = await listen(address, exports, { ...limits, log: this.engineLog, onClient: (event) => this.clientEvent(event) });
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
    const log = this.deviceLog(hosted.name);
    const attachment = await attachKernel({ device: hosted.device, metrics: hosted.metrics, log, label: hosted.name }, options);
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
    const end = this.begin(hosted, "detaching");
    try {
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
    } finally {
      end();
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
    const end = this.begin(hosted, "trimming");
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
      end();
    }
  }

  /** A named snapshot of a serving device (objstore), taken without stopping it; a "snapshot" event reports it. */
  async createSnapshot(name: string, snapshotName: string): Promise<NamedSnapshot> {
    const hosted = this.find(name);
    if (hosted.state === "detached" || hosted.state === "detaching") throw new Error(`${name} is ${hosted.state}; there is nothing to snapshot`);
    const device = hosted.device;
    if (device.createSnapshot === undefined) throw new Error(`${name} is a ${device.kind} device, which takes no snapshots (objstore volumes do)`);
    try {
      const made = await device.createSnapshot(snapshotName);
      this.emit(name, "snapshot", `snapshot ${made.name} created (${made.createdAt})`);
      return made;
    } catch (error) {
      this.emit(name, "error", `snapshot ${snapshotName} failed: ${errorMessage(error)}`);
      throw error;
    }
  }

  list(): readonly HostedDevice[] {
    return this.devices;
  }

  snapshot(windowSeconds?: number): DeviceSnapshot[] {
    const now = Date.now();
    return this.devices.map((d) => {
      const record = this.records.get(d.name)!;
      const stats = safeStats(d.device);
      const activity = record.activity && { ...record.activity, elapsedMs: Math.max(0, now - record.activity.startedAt) };
      return {
        name: d.name,
        kind: d.device.kind,
        size: d.device.size,
        state: d.state,
        servedAt: d.servedAt,
        metrics: d.metrics.snapshot(windowSeconds),
        stats,
        kernel: d.kernel && { path: d.kernel.path, interface: d.kernel.interface, connections: d.kernel.connections, connected: d.kernel.connected() },
        activity,
        lastError: stats?.lastError ?? record.lastError,
        clients: [...record.clients],
        unsettled: d.state === "detached" ? record.unsettled : safeUnsettled(d.device),
      };
    });
  }

  /** Devices that closed with accepted data their store did not take yet, and how much and where. */
  unsettled(): Array<{ readonly device: string; readonly data: UnsettledData }> {
    return [...this.records].flatMap(([device, r]) => (r.unsettled === undefined ? [] : [{ device, data: r.unsettled }]));
  }

  /** The kept events after `afterSeq` (the most recent few hundred), oldest first. */
  recentEvents(afterSeq?: number): HostEvent[] {
    return this.events.since(afterSeq);
  }

  /**
   * Flushes one device; resolves with the time it took in milliseconds. It counts in the device's metrics as a
   * FLUSH, like one a client sent, so the flush counter a user watches moves for the flushes they ask for too.
   */
  async flush(name: string): Promise<number> {
    const hosted = this.find(name);
    if (hosted.state === "detached") throw new Error(`${name} is detached; there is nothing to flush`);
    const started = hosted.metrics.begin();
    const end = this.begin(hosted, "flushing");
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
      end();
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
    return this.events.subscribe(listener);
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
          const message = errorMessage(error);
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
    const unsettled = d.device.unsettled?.();
    if (unsettled !== undefined && unsettled.bytes > 0) {
      this.records.get(d.name)!.unsettled = unsettled;
      this.emit(d.name, "warning", unsettledLine(unsettled));
    }
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
      this.emit(d.name, "error", `flush after losing the kernel device failed: ${errorMessage(error)}`);
    }
  }

  /**
   * Marks an action as running (state and activity); the returned function ends it, putting the state back unless
   * the action changed it (detached, error).
   */
  private begin(hosted: HostedDevice, label: Activity["label"]): () => void {
    const record = this.records.get(hosted.name)!;
    if (record.activity !== undefined) throw new Error(`${hosted.name} is ${record.activity.label}; try again once that is done`);
    const activity = { label, startedAt: Date.now() };
    const previous = hosted.state;
    hosted.state = label;
    record.activity = activity;
    return () => {
      if (record.activity === activity) record.activity = undefined;
      if (hosted.state === label) hosted.state = previous;
    };
  }

  private clientEvent(event: { readonly kind: "connected" | "disconnected"; readonly peer: string; readonly export: string; readonly fd?: number }): void {
    const record = this.records.get(event.export);
    if (record === undefined) return;
    if (event.kind === "connected") {
      const client: ClientSnapshot = { peer: event.peer, process: peerProcess(event.fd), since: Date.now() };
      record.clients.push(client);
      this.emit(event.export, "connected", `client ${describeClient(client)} connected`);
      return;
    }
    const at = record.clients.findIndex((c) => c.peer === event.peer);
    if (at < 0) return;
    const [client] = record.clients.splice(at, 1);
    this.emit(event.export, "disconnected", `client ${describeClient(client!)} disconnected after ${formatDuration(Date.now() - client!.since)}`);
  }

  private deviceOfPeer(peer: string): string | undefined {
    for (const [name, record] of this.records) if (record.clients.some((c) => c.peer === peer)) return name;
    return undefined;
  }

  private find(name: string): HostedDevice {
    const hosted = this.devices.find((d) => d.name === name);
    if (!hosted) throw new Error(`no device named "${name}"`);
    return hosted;
  }

  private emit(device: string, kind: HostEventKind, message: string): void {
    this.events.emit(device, kind, message);
  }
}

/** `32 MiB written but not uploaded: kept in /var/lib/usbd-tui/vm1.objstore.cache; it goes up to ... at the next start`. */
export function unsettledLine(u: UnsettledData): string {
  return `${formatSize(u.bytes)} written but not in the store yet: kept in ${u.keptIn}; it ${u.destination}`;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function formatMs(ms: number): string {
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms).toLocaleString("en-US")} ms`;
}

function formatDuration(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : ms < 120_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 60_000)} min`;
}
