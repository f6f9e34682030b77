/**
 * The objstore device kind: a log-structured volume in an object store (S3, a directory, ...) behind a local
 * cache. `openObjstoreDevice` opens (or creates) a volume for writing, or a snapshot of one read-only.
 * docs/ARCHITECTURE.md ("The objstore device") describes the design.
 */
import fs from "node:fs";
import path from "node:path";
import { silentLogger } from "../../shared/log.ts";
import { resolveGeometry } from "../geometry.ts";
import { openLocked } from "../locked-file.ts";
import { ObjstoreCatalog } from "./catalog.ts";
import { ObjstoreDevice } from "./device.ts";
import { cachePaths } from "./layout.ts";
import { openSnapshot } from "./open-snapshot.ts";
import { openWritable } from "./open.ts";
import { checkOptions, type ObjstoreDeviceOptions } from "./options.ts";
import type { ObjstoreRuntime } from "./runtime.ts";
import { openObjectStore, parseObjectStoreConfig } from "./store/config.ts";

/**
 * Opens or creates the volume `storeName` in the configured store. Throws a user-facing Error on any mismatch, and
 * LeaseHeldError when another daemon writes the volume. When the store cannot be reached but this cache holds the
 * volume's writer lease, the volume opens from the cache alone (cached data works, uploads wait for the store).
 */
export async function openObjstoreDevice(options: ObjstoreDeviceOptions): Promise<ObjstoreDevice> {
  const log = options.log ?? silentLogger;
  checkOptions(options);
  if (!fs.existsSync(options.storeDir)) throw new Error(`objstore device: the store directory ${options.storeDir} does not exist`);
  const store =
    options.store ??
    openObjectStore(options.kind ?? "s3", parseObjectStoreConfig(options.config), { localPath: path.join(options.storeDir, "objects") });
  const readOnly = options.snapshot !== undefined || options.readOnly === true;
  const paths = cachePaths(options.storeDir, options.storeName, options.readOnly === true ? "@latest" : options.snapshot);
  let fd: number | undefined;
  let catalog: ObjstoreCatalog | undefined;
  let runtime: ObjstoreRuntime | undefined;
  try {
    // The lock comes first: one daemon per cache, before anything reads or changes it.
    fd = openLocked(paths.cache, !fs.existsSync(paths.cache), "objstore");
    catalog = new ObjstoreCatalog(paths.db, !fs.existsSync(paths.db));
    const files = { fd, cachePath: paths.cache, catalog };
    runtime = readOnly ? await openSnapshot(options, store, files, log) : await openWritable(options, store, files, log);
    const blockSize = options.blockSize ?? 4096;
    resolveGeometry("objstore", runtime.v.manifest.size, blockSize);
    return new ObjstoreDevice(runtime, { blockSize, flushMode: options.flushMode ?? "local", readOnly });
  } catch (e) {
    if (runtime !== undefined) await runtime.shutDown().catch(() => {});
    else {
      catalog?.close();
      if (fd !== undefined) fs.closeSync(fd);
      store.close();
    }
    throw e;
  }
}

export { ObjstoreDevice } from "./device.ts";
export { OBJSTORE_COMPRESSIONS, AES_MODES, OBJSTORE_KINDS, FLUSH_MODES } from "./layout.ts";
export { LeaseHeldError } from "./lease.ts";
export { SnapshotError } from "./snapshots.ts";
export { DEFAULT_OBJECT_SIZE } from "./manifest-io.ts";
export { DEFAULT_CONCURRENCY, DEFAULT_FLUSH_EVERY, type ObjstoreDeviceOptions } from "./options.ts";
