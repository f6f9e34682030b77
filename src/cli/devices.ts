/**
 * Opening the devices the CLI describes (one from the flags, or one per [[device]] of a --config file) and
 * registering each with the host under its export name, in order.
 */
import { mkdirSync } from "node:fs";
import { createDevice, deviceKinds, type DeviceOptions } from "../devices/index.ts";
import type { Host, HostedDevice } from "../engine/host.ts";
import type { Logger } from "../shared/log.ts";
import type { CliOptions } from "./flags.ts";
import type { ObjstoreCliOptions } from "./objstore-flags.ts";

/** A device could not be opened; `cause` is what its kind threw (which decides the exit code). */
export class OpenDeviceError extends Error {
  constructor(
    readonly device: string,
    override readonly cause: unknown,
  ) {
    super(`device "${device}": ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

/** The options each device was opened from, for what comes later (the kernel attach of a --config file's device). */
const opened = new WeakMap<HostedDevice, CliOptions>();

/** The options `hosted` was opened from by openDevices; undefined for a device added some other way. */
export function deviceOptions(hosted: HostedDevice): CliOptions | undefined {
  return opened.get(hosted);
}

function objstoreOptions(o: ObjstoreCliOptions): DeviceOptions["objstore"] {
  return {
    kind: o.kind,
    config: o.config,
    objectSize: o.objectSize,
    diskCache: o.diskCache,
    persistCache: o.persistCache,
    aesKey: o.aesKey,
    aesMode: o.aesMode,
    compression: o.compression,
    concurrency: o.concurrency,
    flushEvery: o.flushEvery,
    flushMode: o.flushMode,
  };
}

/**
 * Creates every device in order and adds it to `host`. On a failure the devices opened so far stay in the host
 * (the caller's `host.stop({ force: true })` flushes and closes them) and an OpenDeviceError names the device.
 */
export async function openDevices(specs: readonly CliOptions[], log: Logger, host: Host): Promise<void> {
  for (const options of specs) {
    try {
      const kind = deviceKinds[options.devType as keyof typeof deviceKinds];
      // Private by default: stores hold users' data (and keys).
      if (kind.persistent) mkdirSync(options.storeDir, { recursive: true, mode: 0o700 });
      const device = await createDevice(options.devType, {
        size: options.storeSizeGiven || !kind.persistent ? options.storeSize : undefined,
        defaultSize: options.storeSize,
        blockSize: options.blockSize,
        storeDir: options.storeDir,
        storeName: options.storeName,
        dedup: { blockSize: options.dedupBlockSize, compression: options.dedupCompress, memoryCache: options.dedupMemcache },
        objstore: objstoreOptions(options.objstore),
        log,
      });
      try {
        opened.set(host.add(options.exportName, device), options);
      } catch (error) {
        await device.close();
        throw error;
      }
    } catch (error) {
      throw new OpenDeviceError(options.exportName, error);
    }
  }
}
