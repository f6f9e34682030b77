/**
 * usbd-tui as a library: implement `BlockDevice`, check it with the conformance suite
 * (`usbd-tui/conformance`), and serve it over NBD with `serve` (or `listen` for several exports).
 */
import type { BlockDevice } from "./devices/device.ts";
import { parseListenAddress } from "./engine/address.ts";
import { type KernelAttachOptions, attachKernel } from "./engine/kernel/attach.ts";
import type { KernelAttachment } from "./engine/kernel/attachment.ts";
import { type NbdServer, listen } from "./engine/listen.ts";
import { type Logger, textLogger } from "./shared/log.ts";
import { DeviceMetrics } from "./engine/metrics.ts";

export * from "./devices/device.ts";
export { createDevice, createMemDevice, deviceKinds, openFileDevice, DEVICE_KINDS } from "./devices/index.ts";
export type { DeviceOptions, FileDevice, FileDeviceOptions, MemDevice, MemDeviceOptions } from "./devices/index.ts";
export { exportUri, parseListenAddress, type ListenAddress } from "./engine/address.ts";
export { Host, type DeviceSnapshot, type DeviceState, type HostEvent, type HostedDevice } from "./engine/host.ts";
export { listen, ListenError, type Export, type ListenOptions, type NbdServer } from "./engine/listen.ts";
export { attachKernel, prepareKernel, type KernelAttachOptions } from "./engine/kernel/attach.ts";
export { DetachRefusedError, type KernelAttachment, type NbdInterface } from "./engine/kernel/attachment.ts";
export { KernelUsageError } from "./engine/kernel/module.ts";
export { jsonLogger, silentLogger, textLogger, type LogLevel, type Logger } from "./shared/log.ts";
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

export interface AttachOptions extends Partial<KernelAttachOptions> {
  readonly log?: Logger;
  readonly metrics?: DeviceMetrics;
  /** Names the connections in log lines (default "usbd"). */
  readonly name?: string;
}

/**
 * Attaches one device to the kernel as /dev/nbdN (needs root and the nbd module, which it loads when missing).
 * Detach with `attachment.detach()`, then close the device.
 */
export function attach(device: BlockDevice, options: AttachOptions = {}): Promise<KernelAttachment> {
  const { log = textLogger("warn"), metrics = new DeviceMetrics(), name = "usbd", ...kernel } = options;
  return attachKernel({ device, metrics, log, label: name }, { backend: `usbd-tui:${device.kind}:pid${process.pid}`, ...kernel });
}
