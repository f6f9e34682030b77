/**
 * A running daemon as the dashboard sees it through the control socket (`usbd-tui top`): snapshots polled a few
 * times a second and kept for the App's synchronous reads, events streamed, keys sent as control requests. Quitting
 * only closes this connection; the daemon keeps serving.
 */
import type { ControlClient } from "../app/control/client.ts";
import type { DaemonInfo } from "../app/control/protocol.ts";
import type { DeviceSnapshot, HostEvent } from "../engine/host-types.ts";
import type { DashboardHost } from "./dashboard-host.ts";

/** Kept events a viewer shows when it attaches. */
const HISTORY = 500;

export class RemoteHost implements DashboardHost {
  private devices: DeviceSnapshot[];
  private readonly events: HostEvent[] = [];
  private readonly listeners = new Set<(event: HostEvent) => void>();
  private timer: ReturnType<typeof setInterval> | undefined;
  private polling = false;

  private constructor(
    private readonly client: ControlClient,
    readonly daemon: DaemonInfo,
    devices: DeviceSnapshot[],
    private readonly windowSeconds: number,
  ) {
    this.devices = devices;
  }

  /** Attaches to the daemon behind `client`: the first snapshot, the kept events, then polling every `pollMs`. */
  static async attach(client: ControlClient, pollMs: number, windowSeconds = 2): Promise<RemoteHost> {
    const first = await client.request({ command: "snapshot", window: windowSeconds });
    const host = new RemoteHost(client, first.daemon, [...first.devices], windowSeconds);
    await client.events((event) => host.received(event), { last: HISTORY });
    host.timer = setInterval(() => void host.poll(), pollMs);
    client.onClose(() => host.leave());
    return host;
  }

  snapshot(): DeviceSnapshot[] {
    return this.devices;
  }

  recentEvents(): HostEvent[] {
    return [...this.events];
  }

  subscribe(listener: (event: HostEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async flush(name: string): Promise<unknown> {
    return this.client.request({ command: "flush", device: name });
  }

  async trim(name: string): Promise<unknown> {
    return this.client.request({ command: "trim", device: name });
  }

  async detach(name: string): Promise<unknown> {
    return this.client.request({ command: "detach", device: name });
  }

  /** A viewer's quit leaves: the daemon goes on serving. */
  async stop(): Promise<void> {
    this.leave();
  }

  /** Stops polling and closes the connection. */
  leave(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    this.client.close();
  }

  private async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      this.devices = [...(await this.client.request({ command: "snapshot", window: this.windowSeconds })).devices];
    } catch {
      // The connection ended; onClose stops the polling.
    } finally {
      this.polling = false;
    }
  }

  private received(event: HostEvent): void {
    this.events.push(event);
    if (this.events.length > HISTORY) this.events.splice(0, this.events.length - HISTORY);
    // A key's result shows in the next snapshot: fetch it now rather than at the next tick.
    void this.poll().then(() => {
      for (const listener of this.listeners) listener(event);
    });
  }
}
