/**
 * Opening a plan's devices, in order, and registering each with the host under its name. A failure leaves the
 * devices opened before it in the host, so that stopping the host flushes and closes them. Each device logs
 * through the host (its lines carry its name; its warnings become its events) and tells it how it opened.
 */
import { mkdirSync } from "node:fs";
import { type DeviceNotice, createDevice, deviceKinds, isDeviceKind } from "../devices/index.ts";
import type { Host } from "../engine/host.ts";
import type { DeviceSpec } from "./plan.ts";

/** A device could not be opened; `cause` is what its kind threw (which decides the exit code). */
export class OpenDeviceError extends Error {
  constructor(
    readonly device: string,
    override readonly cause: unknown,
  ) {
    super(`device "${device}": ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

/** Creates every device in order and adds it to `host`; throws OpenDeviceError naming the first that fails. */
export async function openDevices(specs: readonly DeviceSpec[], host: Host): Promise<void> {
  for (const spec of specs) {
    try {
      // Private by default: stores hold users' data (and keys).
      if (isDeviceKind(spec.kind) && deviceKinds[spec.kind].persistent && spec.options.storeDir !== undefined) {
        mkdirSync(spec.options.storeDir, { recursive: true, mode: 0o700 });
      }
      // What the device says while it opens is kept until it is in the host, then told as its events.
      const early: DeviceNotice[] = [];
      let notify = (notice: DeviceNotice): void => {
        early.push(notice);
      };
      const device = await createDevice(spec.kind, { ...spec.options, log: host.deviceLog(spec.name), notify: (notice) => notify(notice) });
      try {
        host.add(spec.name, device);
      } catch (error) {
        await device.close();
        throw error;
      }
      notify = (notice): void => host.notice(spec.name, notice);
      for (const notice of early) host.notice(spec.name, notice);
    } catch (error) {
      throw new OpenDeviceError(spec.name, error);
    }
  }
}
