/**
 * Opening a plan's devices, in order, and registering each with the host under its name. A failure leaves the
 * devices opened before it in the host, so that stopping the host flushes and closes them.
 */
import { mkdirSync } from "node:fs";
import { createDevice, deviceKinds, isDeviceKind } from "../devices/index.ts";
import type { Host } from "../engine/host.ts";
import type { Logger } from "../shared/log.ts";
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
export async function openDevices(specs: readonly DeviceSpec[], host: Host, log: Logger): Promise<void> {
  for (const spec of specs) {
    try {
      // Private by default: stores hold users' data (and keys).
      if (isDeviceKind(spec.kind) && deviceKinds[spec.kind].persistent && spec.options.storeDir !== undefined) {
        mkdirSync(spec.options.storeDir, { recursive: true, mode: 0o700 });
      }
      const device = await createDevice(spec.kind, { ...spec.options, log });
      try {
        host.add(spec.name, device);
      } catch (error) {
        await device.close();
        throw error;
      }
    } catch (error) {
      throw new OpenDeviceError(spec.name, error);
    }
  }
}
