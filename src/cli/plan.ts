/**
 * From parsed flags (and a --config file's devices) to the plan a daemon runs: each device's creation options and,
 * on the kernel path, its attach options; where everything is served.
 */
import { deviceKinds, isDeviceKind, type DeviceOptions } from "../devices/index.ts";
import { parseListenAddress } from "../engine/address.ts";
import path from "node:path";
import { defaultControlPath } from "../app/control/paths.ts";
import type { DaemonPlan, DeviceSpec } from "../app/plan.ts";
import type { CliOptions } from "./flags.ts";
import { kernelAttachOptions } from "./kernel.ts";
import type { ObjstoreCliOptions } from "./objstore-flags.ts";

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
    takeover: o.takeover,
    ...(o.snapshot === undefined ? {} : { snapshot: o.snapshot }),
    ...(o.cloneOf === undefined ? {} : { cloneOf: o.cloneOf }),
    ...(o.gcThreshold === undefined ? {} : { gcThreshold: o.gcThreshold }),
  };
}

/** One device of the plan; `kernel` says whether it is attached to the kernel (no --listen). */
export function deviceSpec(options: CliOptions, kernel: boolean): DeviceSpec {
  const persistent = isDeviceKind(options.devType) && deviceKinds[options.devType].persistent;
  return {
    name: options.exportName,
    kind: options.devType,
    options: {
      // A persistent store keeps its own size unless --store-size was given.
      size: options.storeSizeGiven || !persistent ? options.storeSize : undefined,
      defaultSize: options.storeSize,
      blockSize: options.blockSize,
      storeDir: options.storeDir,
      storeName: options.storeName,
      dedup: { blockSize: options.dedupBlockSize, compression: options.dedupCompress, memoryCache: options.dedupMemcache },
      objstore: objstoreOptions(options.objstore),
      readOnly: options.access.readOnly,
    },
    kernel: kernel ? kernelAttachOptions(options, persistent) : undefined,
  };
}

/** `global` holds the process-wide options; `devices` one entry per device (the flags' one, or a --config file's). */
export function daemonPlan(global: CliOptions, devices: readonly CliOptions[], version: string): DaemonPlan {
  const listen = global.listen === undefined ? undefined : parseListenAddress(global.listen);
  return {
    version,
    devices: devices.map((d) => deviceSpec(d, listen === undefined)),
    listen,
    force: global.force,
    maxBuffer: global.maxBuffer,
    listenLimits: { maxConnections: global.maxConnections, handshakeTimeoutMs: global.handshakeTimeout * 1000, socketGroup: global.socketGroup },
    ...(global.access.tls === undefined ? {} : { tls: global.access.tls }),
    control: controlPath(global, devices),
    metrics: global.metrics,
    pidFile: global.pidFile === undefined ? undefined : path.resolve(global.pidFile),
  };
}

/** --control, or the default named after the --config file (or the only device): `/run/usbd-tui/vm1.4242.sock`. */
function controlPath(global: CliOptions, devices: readonly CliOptions[]): string | undefined {
  if (global.control === "none") return undefined;
  if (global.control !== undefined) return path.resolve(global.control);
  const name = global.config !== undefined ? path.basename(global.config).replace(/\.toml$/, "") : (devices[0]?.exportName ?? "usbd");
  return defaultControlPath(name.replace(/[^A-Za-z0-9._-]/g, "-"));
}
