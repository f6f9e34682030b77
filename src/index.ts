/**
 * usbd-tui as a library: implement `BlockDevice`, check it with the conformance suite
 * (`usbd-tui/conformance`), and serve it over NBD with `serve` (or `listen` for several exports).
 */
import type { BlockDevice } from "./devices/device.ts";
import { parseListenAddress } from "./engine/address.ts";
import { type NbdServer, listen } from "./engine/listen.ts";
import { type Logger, textLogger } from "./engine/log.ts";
import { DeviceMetrics } from "./engine/metrics.ts";

export * from "./devices/device.ts";
export { createDevice, createMemDevice, deviceKinds, openFileDevice, DEVICE_KINDS } from "./devices/index.ts";
export type { DeviceOptions, FileDevice, FileDeviceOptions, MemDevice, MemDeviceOptions } from "./devices/index.ts";
export { exportUri, parseListenAddress, type ListenAddress } from "./engine/address.ts";
export { Host, type DeviceSnapshot, type DeviceState, type HostEvent, type HostedDevice } from "./engine/host.ts";
export { listen, ListenError, type Export, type ListenOptions, type NbdServer } from "./engine/listen.ts";
export { jsonLogger, silentLogger, textLogger, type LogLevel, type Logger } from "./engine/log.ts";
export { DeviceMetrics, type MetricsSnapshot } from "./engine/metrics.ts";
export type { Transport } from "./engine/reply-writer.ts";
export { Session, type SessionOptions } from "./engine/session.ts";

export interface ServeOptions {
  /** Export name (default "usbd"); clients asking for "" also get this export. */
  readonly name?: string;
  readonly log?: Logger;
  /** Metrics to count into (a fresh DeviceMetrics when absent). */
  readonly metrics?: DeviceMetrics;
}

/** Serves one device over NBD at `address` (`unix:/path/sock` or `tcp:HOST:PORT`). */
export function serve(device: BlockDevice, address: string, options: ServeOptions = {}): Promise<NbdServer> {
  return listen(
    parseListenAddress(address),
    [{ name: options.name ?? "usbd", device, metrics: options.metrics ?? new DeviceMetrics() }],
    { log: options.log ?? textLogger("warn") },
  );
}
