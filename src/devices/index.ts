/**
 * The device kinds usbd-tui ships and one way to create any of them from CLI-level options. A new kind adds one
 * entry to `deviceKinds`; nothing else needs to change.
 */
import { existsSync } from "node:fs";
import path from "node:path";
import type { BlockDevice, DeviceNotice, MaybePromise } from "./device.ts";
import { openFileDevice } from "./file/index.ts";
import { createMemDevice } from "./mem/index.ts";
import { offThreadHashingPays, openDedupDevice, type DedupCompression } from "./dedup/index.ts";
import { openObjstoreDevice, type ObjstoreDeviceOptions } from "./objstore/index.ts";
import type { Logger } from "../shared/log.ts";

export * from "./device.ts";
export { createMemDevice, type MemDevice, type MemDeviceOptions } from "./mem/index.ts";
export { openFileDevice, type FileDevice, type FileDeviceOptions } from "./file/index.ts";
export { openDedupDevice, type DedupDevice, type DedupDeviceOptions, type DedupCompression } from "./dedup/index.ts";
export { openObjstoreDevice, type ObjstoreDevice, type ObjstoreDeviceOptions } from "./objstore/index.ts";

/** Options every kind is created from (the CLI's --store-* flags). Each kind uses the ones it needs. */
export interface DeviceOptions {
  /** Size in bytes (--store-size). Required for new stores; persistent kinds may take it from the store. */
  readonly size?: number;
  /** Size for a new store when `size` is not given (the CLI's default --store-size); an existing store keeps its own. */
  readonly defaultSize?: number;
  readonly blockSize?: number;
  /** Directory holding persistent stores (--store-dir). */
  readonly storeDir?: string;
  /** Name of the store inside storeDir (--store-name). */
  readonly storeName?: string;
  /** The dedup kind's --dedup-* flags; absent ones take the store's or the defaults. */
  readonly dedup?: {
    readonly blockSize?: number;
    readonly compression?: DedupCompression;
    readonly memoryCache?: number;
  };
  /** The objstore kind's --objstore-* flags; absent ones take the volume's or the defaults. */
  readonly objstore?: Omit<ObjstoreDeviceOptions, "storeDir" | "storeName" | "size" | "defaultSize" | "blockSize" | "log">;
  /** Open the store for reading only (--read-only): advertised read-only, writes refused, the store never changed. */
  readonly readOnly?: boolean;
  /** Where kinds that work in the background (objstore uploads) report what happens. */
  readonly log?: Logger;
  /** Told what a device has to say about itself: created or reopened, upload rounds, the store failing and back. */
  readonly notify?: (notice: DeviceNotice) => void;
}

export interface DeviceKindInfo {
  /** One line for `--help` and the dashboard. */
  readonly description: string;
  /** The data survives a restart. */
  readonly persistent: boolean;
  create(options: DeviceOptions): MaybePromise<BlockDevice>;
}

function need<T>(value: T | undefined, kind: string, flag: string): T {
  if (value === undefined) throw new Error(`the ${kind} device needs ${flag}; pass it on the command line`);
  return value;
}

/** The path of a file-backed store: `<storeDir>/<storeName>.img`. */
export function storeImagePath(options: DeviceOptions, kind: string): string {
  return path.join(need(options.storeDir, kind, "--store-dir"), `${need(options.storeName, kind, "--store-name")}.img`);
}

/** "created new volume" or "reopened volume", with where it is: a typo in --store-name then shows as a new volume. */
function openedNotice(existed: boolean, where: string, size: number): DeviceNotice {
  return { kind: "opened", message: `${existed ? "reopened volume" : "created new volume"}: ${where} (${size.toLocaleString("en-US")} bytes)` };
}

export const deviceKinds = {
  mem: {
    description: "in memory, sparse; contents are lost when the daemon stops",
    persistent: false,
    create: (o: DeviceOptions) =>
      createMemDevice({ size: need(o.size, "mem", "--store-size"), blockSize: o.blockSize, readOnly: o.readOnly }),
  },
  file: {
    description: "a sparse image file <store-dir>/<store-name>.img; trim punches holes",
    persistent: true,
    create: (o: DeviceOptions) => {
      const path = storeImagePath(o, "file");
      const exists = existsSync(path);
      const device = openFileDevice({ path, size: o.size ?? (exists ? undefined : o.defaultSize), blockSize: o.blockSize, readOnly: o.readOnly });
      o.notify?.(openedNotice(exists, `image ${path}`, device.size));
      return device;
    },
  },
  dedup: {
    description: "deduplicated 4 KiB blocks (SHA-256, lz4, refcounts) in <store-dir>/<store-name>.dedup.{db,blocks}",
    persistent: true,
    create: (o: DeviceOptions) => {
      const storeDir = need(o.storeDir, "dedup", "--store-dir");
      const storeName = need(o.storeName, "dedup", "--store-name");
      const exists = existsSync(path.join(storeDir, `${storeName}.dedup.db`));
      const device = openDedupDevice({
        storeDir, storeName, size: o.size ?? (exists ? undefined : o.defaultSize), ...o.dedup, readOnly: o.readOnly, hashOffThread: offThreadHashingPays(),
      });
      o.notify?.(openedNotice(exists, `dedup store ${path.join(storeDir, storeName)}.dedup.{db,blocks}`, device.size));
      return device;
    },
  },
  objstore: {
    description: "a log of immutable objects in S3, Azure, Swift, SFTP or a directory, behind a local cache; lz4, AES-GCM",
    persistent: true,
    create: (o: DeviceOptions) =>
      openObjstoreDevice({
        storeDir: need(o.storeDir, "objstore", "--store-dir"),
        storeName: need(o.storeName, "objstore", "--store-name"),
        size: o.size,
        defaultSize: o.defaultSize,
        blockSize: o.blockSize,
        ...o.objstore,
        // A snapshot is read-only already; otherwise --read-only opens the latest state without a lease.
        ...(o.readOnly === true && o.objstore?.snapshot === undefined ? { readOnly: true } : {}),
        ...(o.log === undefined ? {} : { log: o.log }),
        ...(o.notify === undefined ? {} : { notify: o.notify }),
      }),
  },
} as const satisfies Record<string, DeviceKindInfo>;

export type DeviceKind = keyof typeof deviceKinds;

/** The kind names, in the order `--help` lists them. */
export const DEVICE_KINDS = Object.keys(deviceKinds) as DeviceKind[];

export function isDeviceKind(name: string): name is DeviceKind {
  return Object.hasOwn(deviceKinds, name);
}

/** Creates a device of `kind`. Throws a user-facing Error for an unknown kind or missing options. */
export async function createDevice(kind: string, options: DeviceOptions): Promise<BlockDevice> {
  if (!isDeviceKind(kind)) {
    throw new Error(`unknown device type "${kind}"; --dev-type must be one of: ${DEVICE_KINDS.join(", ")}`);
  }
  const info: DeviceKindInfo = deviceKinds[kind];
  return info.create(options);
}
