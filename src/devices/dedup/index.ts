/**
 * Opening a dedup store: create it when neither file exists, resume it when both do, and refuse anything in
 * between or any setting that contradicts the store, with a message that says what to do.
 */
import fs from "node:fs";
import os from "node:os";
import { resolveGeometry } from "../geometry.ts";
import { SlotAllocator } from "./allocator.ts";
import { BlockFile } from "./block-file.ts";
import { openLocked } from "../locked-file.ts";
import { Catalog } from "./catalog.ts";
import { DedupDevice } from "./device.ts";
import { storePaths, type DedupCompression } from "./layout.ts";

export interface DedupDeviceOptions {
  /** Directory of the store (--store-dir); it must exist. */
  readonly storeDir: string;
  /** The store's name (--store-name): its files are `<storeName>.dedup.*`. */
  readonly storeName: string;
  /** Size in bytes: required for a new store; for an existing one it must equal the store's. */
  readonly size?: number;
  /** Dedup block size (--dedup-blocksize, default 4 KiB for a new store); an existing store keeps its own. */
  readonly blockSize?: number;
  /** How new blocks are stored (--dedup-compress, default lz4). Existing blocks keep the form they were written in. */
  readonly compression?: DedupCompression;
  /** Bytes of memory for cached map pages, index entries and decoded blocks (--dedup-memcache, default 256 MiB). */
  readonly memoryCache?: number;
  /** Open an existing store for reading only (--read-only): nothing is created, committed or checkpointed. */
  readonly readOnly?: boolean;
  /**
   * Hash writes of 64 KiB and more on a worker thread (default false). Those writes then complete asynchronously, so
   * a caller must await every write; the daemon turns it on where it pays (`offThreadHashingPays`).
   */
  readonly hashOffThread?: boolean;
}

export const DEFAULT_DEDUP_BLOCK_SIZE = 4096;
export const DEFAULT_DEDUP_MEMCACHE = 256 * 1024 * 1024;
/** Below this a cache cannot hold even the pages one large request touches. */
const MIN_MEMCACHE = 1024 * 1024;

/** Opens or creates the dedup store `<storeDir>/<storeName>.dedup.*`. Throws a user-facing Error on any mismatch. */
export function openDedupDevice(options: DedupDeviceOptions): DedupDevice {
  const paths = storePaths(options.storeDir, options.storeName);
  const memoryCache = options.memoryCache ?? DEFAULT_DEDUP_MEMCACHE;
  if (!Number.isSafeInteger(memoryCache) || memoryCache < MIN_MEMCACHE) {
    throw new RangeError(`dedup device: --dedup-memcache must be at least 1MiB, got ${memoryCache}`);
  }
  if (!fs.existsSync(options.storeDir)) throw new Error(`dedup device: the store directory ${options.storeDir} does not exist`);
  const hasDb = fs.existsSync(paths.db);
  const hasBlocks = fs.existsSync(paths.blocks);
  if (hasDb !== hasBlocks) {
    const [present, missing] = hasDb ? [paths.db, paths.blocks] : [paths.blocks, paths.db];
    throw new Error(
      `dedup device: ${present} exists but ${missing} is missing; the store is incomplete. Restore the missing file, ` +
        `or remove ${present} to start an empty store`,
    );
  }
  const compression = options.compression ?? "lz4";
  if (!hasDb && options.readOnly === true) {
    throw new Error(`dedup device: no store ${options.storeName} in ${options.storeDir}, and --read-only never creates one; check --store-dir and --store-name`);
  }
  return hasDb ? resume(paths, options, compression, memoryCache) : create(paths, options, compression, memoryCache);
}

function create(paths: ReturnType<typeof storePaths>, options: DedupDeviceOptions, compression: DedupCompression, memoryCache: number): DedupDevice {
  if (options.size === undefined) {
    throw new Error(`dedup device: no store ${options.storeName} in ${options.storeDir} and no size given; pass --store-size to create it`);
  }
  const blockSize = checkBlockSize(options.blockSize ?? DEFAULT_DEDUP_BLOCK_SIZE);
  resolveGeometry("dedup", options.size, blockSize);
  const file = new BlockFile(openLocked(paths.blocks, true, "dedup"), paths.blocks, blockSize);
  let catalog: Catalog | undefined;
  try {
    catalog = new Catalog(paths.db, true, sqliteCache(memoryCache));
    catalog.writeSettings({ size: options.size, blockSize });
    return new DedupDevice({
      size: options.size, blockSize, compression, memoryCache: deviceCache(memoryCache), catalog, file, allocator: new SlotAllocator(), hashOffThread: offThread(options),
    });
  } catch (e) {
    catalog?.close();
    file.close();
    for (const p of [paths.db, `${paths.db}-wal`, `${paths.db}-shm`, paths.blocks]) fs.rmSync(p, { force: true });
    throw e;
  }
}

function resume(paths: ReturnType<typeof storePaths>, options: DedupDeviceOptions, compression: DedupCompression, memoryCache: number): DedupDevice {
  // The lock is taken on the blocks file before sqlite opens, so a second daemon never touches the database.
  const readOnly = options.readOnly === true;
  const fd = openLocked(paths.blocks, false, "dedup", readOnly);
  let catalog: Catalog | undefined;
  try {
    catalog = new Catalog(paths.db, false, sqliteCache(memoryCache), readOnly);
    const settings = catalog.settings();
    if (settings === undefined) {
      throw new Error(`dedup device: ${paths.db} holds no store settings; it is not a usbd-tui dedup store`);
    }
    if (options.blockSize !== undefined && options.blockSize !== settings.blockSize) {
      throw new Error(
        `dedup device: the store ${options.storeName} uses ${settings.blockSize}-byte blocks but --dedup-blocksize asks ` +
          `for ${options.blockSize}; drop the flag to use the store's, or pick another --store-name`,
      );
    }
    if (options.size !== undefined && options.size !== settings.size) {
      throw new Error(
        `dedup device: the store ${options.storeName} is ${settings.size} bytes but --store-size asks for ` +
          `${options.size}; refusing to resize (drop --store-size to use the store's size)`,
      );
    }
    const file = new BlockFile(fd, paths.blocks, settings.blockSize);
    const allocator = SlotAllocator.fromSlots(catalog.slots());
    return new DedupDevice({ ...settings, compression, memoryCache: deviceCache(memoryCache), catalog, file, allocator, readOnly, hashOffThread: offThread(options) });
  } catch (e) {
    catalog?.close();
    fs.closeSync(fd);
    throw e instanceof Error && !e.message.startsWith("dedup device") ? new Error(`dedup device: cannot open ${paths.db}: ${e.message}`) : e;
  }
}

/**
 * Off-thread hashing needs a core the serving thread is not on: pinned to one CPU (taskset, a cgroup cpuset), the
 * worker would take that core's time and add the hand-off to it.
 */
export function offThreadHashingPays(): boolean {
  return os.availableParallelism() > 1;
}

function offThread(options: DedupDeviceOptions): boolean {
  return options.hashOffThread === true;
}

/** A quarter of --dedup-memcache goes to sqlite's page cache (the on-disk index), the rest to the device's own caches. */
function sqliteCache(memoryCache: number): number {
  return Math.floor(memoryCache / 4);
}

function deviceCache(memoryCache: number): number {
  return memoryCache - sqliteCache(memoryCache);
}

function checkBlockSize(blockSize: number): number {
  if (!Number.isInteger(blockSize) || blockSize < 512 || blockSize > 65536 || (blockSize & (blockSize - 1)) !== 0) {
    throw new RangeError(`dedup device: --dedup-blocksize must be a power of two from 512 to 64KiB, got ${blockSize}`);
  }
  return blockSize;
}

export { DedupDevice } from "./device.ts";
export { DEDUP_COMPRESSIONS, isDedupCompression, storePaths, type DedupCompression } from "./layout.ts";
