/**
 * Opening an objstore volume: reach the store, read (or write, for a new volume) its manifest, check the key and
 * the flags against it, then bring the local cache in line with the store: dirty segments stay (and are uploaded
 * first), clean ones whose object changed are dropped and refetched, and without a persistent cache every clean
 * segment is dropped.
 */
import fs from "node:fs";
import path from "node:path";
import { silentLogger, type Logger } from "../../shared/log.ts";
import type { DeviceNotice } from "../device.ts";
import { resolveGeometry } from "../geometry.ts";
import { openLocked } from "../locked-file.ts";
import { CacheFile } from "./cache-file.ts";
import { ObjstoreCatalog } from "./catalog.ts";
import { KEY_FILE, deriveVolumeKeys, resolveVolumeKey } from "./codec/keys.ts";
import { checkVolumeKey, createManifest, decodeManifest, encodeManifest, volumeIdBytes, type Manifest } from "./codec/manifest.ts";
import { SegmentCodec } from "./codec/segment-object.ts";
import { ObjstoreDevice } from "./device.ts";
import { cachePaths, manifestKey, segmentPrefix, type AesMode, type FlushMode, type ObjstoreCompression } from "./layout.ts";
import { Segment } from "./segment.ts";
import { SegmentCache } from "./segment-cache.ts";
import { openObjectStore, parseObjectStoreConfig } from "./store/config.ts";
import { ObjectStoreError, type ObjectStore } from "./store/types.ts";
import { TransferStats } from "./transfer-stats.ts";
import { Uploader } from "./uploader.ts";

export interface ObjstoreDeviceOptions {
  /** Directory of the local cache and catalog (--store-dir); it must exist. */
  readonly storeDir: string;
  /** The volume's name (--store-name): the prefix of its objects and of its local files. */
  readonly storeName: string;
  /** Size in bytes: required for a new volume; for an existing one it must equal the manifest's. */
  readonly size?: number;
  /** Size for a new volume when `size` is not given; an existing volume keeps its own. */
  readonly defaultSize?: number;
  /** Advertised block size (--block-size). */
  readonly blockSize?: number;
  /** --objstore-kind (default s3). */
  readonly kind?: string;
  /** --objstore-cfg: inline JSON or the path of a JSON file. */
  readonly config?: string;
  /** A store to use instead of opening one from kind and config (tests that inject faults). */
  readonly store?: ObjectStore;
  /** --objstore-objsize for a new volume (default 4 MiB); an existing one keeps its own. */
  readonly objectSize?: number;
  /** --objstore-diskcache: bytes of local cache; 0 (default) for the whole volume. */
  readonly diskCache?: number;
  /** --objstore-persistcache: keep clean cached segments across restarts (revalidated against the store). */
  readonly persistCache?: boolean;
  /** --objstore-compress for a new volume (default lz4). */
  readonly compression?: ObjstoreCompression;
  /** --objstore-aesmode for a new volume (default aes-gcm). */
  readonly aesMode?: AesMode;
  /** --objstore-aeskey: key:<hex|base64>, file:<path> or env:<VARIABLE>. */
  readonly aesKey?: string;
  /** --objstore-concurflush: uploads in parallel (default 8). */
  readonly concurrency?: number;
  /** --objstore-flushevery in seconds (default 10). */
  readonly flushEvery?: number;
  /** --objstore-flush-mode: whether FLUSH also waits for the uploads (default local). */
  readonly flushMode?: FlushMode;
  readonly log?: Logger;
  /** Told how the volume opened (created or reopened, a generated key), of upload rounds, and of the store failing and back. */
  readonly notify?: (notice: DeviceNotice) => void;
}

export const DEFAULT_OBJECT_SIZE = 4 << 20;
export const DEFAULT_CONCURRENCY = 8;
export const DEFAULT_FLUSH_EVERY = 10;

/**
 * Opens or creates the volume `storeName` in the configured store. Throws a user-facing Error on any mismatch.
 * When the store cannot be reached but this cache served the volume before, the volume opens from the cache alone
 * (cached segments work, uploads wait for the store), so a daemon restarted during an outage keeps serving.
 */
export async function openObjstoreDevice(options: ObjstoreDeviceOptions): Promise<ObjstoreDevice> {
  const log = options.log ?? silentLogger;
  checkOptions(options);
  if (!fs.existsSync(options.storeDir)) throw new Error(`objstore device: the store directory ${options.storeDir} does not exist`);
  const store =
    options.store ??
    openObjectStore(options.kind ?? "s3", parseObjectStoreConfig(options.config), { localPath: path.join(options.storeDir, "objects") });
  const paths = cachePaths(options.storeDir, options.storeName);
  let fd: number | undefined;
  let catalog: ObjstoreCatalog | undefined;
  let device: ObjstoreDevice | undefined;
  try {
    // The lock comes first: one daemon per cache, before anything reads or changes it.
    fd = openLocked(paths.cache, !fs.existsSync(paths.cache), "objstore");
    catalog = new ObjstoreCatalog(paths.db, !fs.existsSync(paths.db));
    const remote = await readManifest(store, options.storeName, catalog, log);
    device = await openVolume(options, store, fd, catalog, remote, log);
    return device;
  } finally {
    if (device === undefined) {
      catalog?.close();
      if (fd !== undefined) fs.closeSync(fd);
      store.close();
    }
  }
}

/** The manifest's bytes as the store has them (undefined: no volume yet), or the cache's copy when offline. */
interface ManifestSource {
  readonly bytes: Uint8Array | undefined;
  readonly where: string;
  readonly offline: boolean;
}

async function readManifest(store: ObjectStore, storeName: string, catalog: ObjstoreCatalog, log: Logger): Promise<ManifestSource> {
  const where = `${store.description} ${manifestKey(storeName)}`;
  try {
    await store.prepare();
    return { bytes: (await store.get(manifestKey(storeName)))?.body, where, offline: false };
  } catch (e) {
    const copy = catalog.meta("manifest");
    const message = e instanceof Error ? e.message : String(e);
    if (e instanceof ObjectStoreError && e.retryable && typeof copy === "string") {
      log.log("warn", "objstore: the store is unreachable; serving the volume from the local cache until it returns (segments not cached fail with EIO)", {
        store: store.description,
        error: message,
      });
      return { bytes: new TextEncoder().encode(copy), where: `${catalog.path} (copy of ${where})`, offline: true };
    }
    throw new Error(`objstore device: cannot use ${store.description}: ${message}`, { cause: e });
  }
}

async function openVolume(
  options: ObjstoreDeviceOptions,
  store: ObjectStore,
  fd: number,
  catalog: ObjstoreCatalog,
  remote: ManifestSource,
  log: Logger,
): Promise<ObjstoreDevice> {
  const { storeDir, storeName } = options;
  let manifest: Manifest;
  let master: Uint8Array | undefined;
  if (remote.bytes !== undefined) {
    manifest = decodeManifest(remote.bytes, remote.where);
    checkAgainstManifest(options, manifest);
    master = resolveVolumeKey({ spec: options.aesKey, mode: manifest.encryption, storeDir, creating: false, volume: storeName });
    checkVolumeKey(manifest, master === undefined ? undefined : deriveVolumeKeys(master), storeName);
  } else {
    const size = options.size ?? options.defaultSize;
    if (size === undefined) {
      throw new Error(`objstore device: ${store.description} has no volume ${storeName} and no size was given; pass --store-size to create it`);
    }
    const encryption = options.aesMode ?? "aes-gcm";
    const keyFile = path.join(storeDir, KEY_FILE);
    const generating = options.aesKey === undefined && encryption !== "identity" && !fs.existsSync(keyFile);
    master = resolveVolumeKey({ spec: options.aesKey, mode: encryption, storeDir, creating: true, volume: storeName });
    if (generating) {
      options.notify?.({ kind: "notice", message: `generated a new key for volume ${storeName} at ${keyFile} (mode 0600); keep a copy: without it the volume cannot be read` });
    }
    manifest = createManifest({
      size,
      objectSize: options.objectSize ?? DEFAULT_OBJECT_SIZE,
      compression: options.compression ?? "lz4",
      encryption,
      ...(master === undefined ? {} : { keys: deriveVolumeKeys(master) }),
    });
  }
  const blockSize = options.blockSize ?? 4096;
  resolveGeometry("objstore", manifest.size, blockSize);
  const file = new CacheFile(fd, cachePaths(storeDir, storeName).cache, manifest.objectSize);
  matchCatalog(catalog, manifest, remote.bytes !== undefined, file, store, storeName, log);
  if (remote.bytes === undefined) {
    // Written last, once everything local is ready: a volume exists in the store only with a usable manifest.
    await store.put(manifestKey(storeName), encodeManifest(manifest));
    log.log("info", "objstore: created a new volume", { volume: storeName, store: store.description, size: manifest.size, objectSize: manifest.objectSize });
  }
  const what = `volume ${storeName} in ${store.description} (${manifest.size.toLocaleString("en-US")} bytes, ${manifest.encryption})`;
  options.notify?.({ kind: "opened", message: remote.bytes === undefined ? `created new ${what}` : `reopened ${what}${remote.offline ? " from the local cache: the store is unreachable" : ""}` });
  catalog.setMeta("volume_id", manifest.volumeId);
  catalog.setMeta("manifest", new TextDecoder().decode(encodeManifest(manifest)));
  return await assemble(options, manifest, master, store, file, catalog, remote.offline, log);
}

/** A flag given for an existing volume must agree with its manifest. */
function checkAgainstManifest(options: ObjstoreDeviceOptions, manifest: Manifest): void {
  const clash = (flag: string, given: string | number, stored: string | number) => {
    throw new Error(
      `objstore device: volume ${options.storeName} has ${flag}=${stored} but ${given} was asked for; drop the flag to use ` +
        `the volume's setting, or pick another --store-name for a new volume`,
    );
  };
  if (options.size !== undefined && options.size !== manifest.size) clash("--store-size", options.size, manifest.size);
  if (options.objectSize !== undefined && options.objectSize !== manifest.objectSize) clash("--objstore-objsize", options.objectSize, manifest.objectSize);
  if (options.compression !== undefined && options.compression !== manifest.compression) clash("--objstore-compress", options.compression, manifest.compression);
  if (options.aesMode !== undefined && options.aesMode !== manifest.encryption) clash("--objstore-aesmode", options.aesMode, manifest.encryption);
}

/**
 * The local catalog must belong to the volume in the store. A catalog of another volume (the store's volume was
 * deleted and created again) is discarded when it holds nothing unuploaded, and refused otherwise.
 */
function matchCatalog(catalog: ObjstoreCatalog, manifest: Manifest, volumeExists: boolean, file: CacheFile, store: ObjectStore, storeName: string, log: Logger): void {
  const cachedVolume = catalog.meta("volume_id");
  if (cachedVolume === undefined || cachedVolume === manifest.volumeId) {
    if (cachedVolume !== undefined && !volumeExists) throw new Error("unreachable: a new volume cannot have a catalog");
    return;
  }
  const dirty = catalog.rows().filter((r) => r.dirty).length;
  const what = volumeExists ? `volume ${manifest.volumeId} is in the store now` : `the store has no volume ${storeName} any more`;
  if (dirty > 0) {
    throw new Error(
      `objstore device: the local cache ${catalog.path} holds ${dirty} unuploaded segments of volume ${String(cachedVolume)}, but ` +
        `${what} (${store.description}). Point --objstore-cfg at the store that has that volume, or move the cache away to discard them`,
    );
  }
  log.log("warn", "objstore: the local cache belongs to another volume and holds nothing unuploaded; discarding it", { cached: cachedVolume, volume: manifest.volumeId });
  catalog.saveAll(catalog.rows().map((r) => ({ id: r.id, slot: null, dirty: false, generation: 0, etag: null })));
  catalog.commitDurably();
  file.adoptSlots([]);
}

async function assemble(
  options: ObjstoreDeviceOptions,
  manifest: Manifest,
  master: Uint8Array | undefined,
  store: ObjectStore,
  file: CacheFile,
  catalog: ObjstoreCatalog,
  offline: boolean,
  log: Logger,
): Promise<ObjstoreDevice> {
  const stats = new TransferStats();
  const codec = new SegmentCodec({
    compression: manifest.compression,
    encryption: manifest.encryption,
    ...(master === undefined ? {} : { keys: deriveVolumeKeys(master) }),
    volumeId: volumeIdBytes(manifest),
    segmentSize: manifest.objectSize,
  });
  const diskCache = options.diskCache ?? 0;
  const maxSlots = diskCache === 0 ? Infinity : Math.floor(diskCache / manifest.objectSize);
  if (maxSlots < 1) {
    throw new RangeError(`objstore device: --objstore-diskcache must hold at least one object of ${manifest.objectSize} bytes, or be 0 for no bound; got ${diskCache}`);
  }
  const cache = new SegmentCache({
    file,
    catalog,
    store,
    codec,
    storeName: options.storeName,
    volumeSize: manifest.size,
    objectSize: manifest.objectSize,
    maxSlots,
    stats,
    log,
  });
  const lastGeneration = await reconcile(cache, catalog, file, store, options.storeName, options.persistCache ?? false, offline, log);
  const uploader = new Uploader({
    cache,
    file,
    catalog,
    store,
    codec,
    storeName: options.storeName,
    stats,
    log,
    intervalMs: (options.flushEvery ?? DEFAULT_FLUSH_EVERY) * 1000,
    concurrency: options.concurrency ?? DEFAULT_CONCURRENCY,
    lastGeneration,
    ...(options.notify === undefined ? {} : { notify: options.notify }),
  });
  const device = new ObjstoreDevice({
    size: manifest.size,
    blockSize: options.blockSize ?? 4096,
    objectSize: manifest.objectSize,
    flushMode: options.flushMode ?? "local",
    persistCache: options.persistCache ?? false,
    cacheQuota: diskCache,
    cache,
    uploader,
    file,
    catalog,
    store,
    stats,
    log,
  });
  uploader.start();
  return device;
}

/**
 * Brings the catalog in line with the store's listing and returns the highest generation seen. Dirty segments keep
 * their bytes (the store gets them at the first upload round); clean cached ones are dropped when their object
 * changed or vanished, or when the cache is not persistent. Slots nothing refers to are punched, and the file is cut
 * after the last slot in use (a crash, or a segment dropped here, can leave bytes in them).
 */
async function reconcile(
  cache: SegmentCache,
  catalog: ObjstoreCatalog,
  file: CacheFile,
  store: ObjectStore,
  storeName: string,
  persistCache: boolean,
  offline: boolean,
  log: Logger,
): Promise<number> {
  const remote = new Map<number, string>();
  const prefix = segmentPrefix(storeName);
  if (offline) {
    // Nothing to compare with: the rows stand as they are, and clean cached segments stay (nothing could replace them).
    for (const row of catalog.rows()) if (row.etag !== null) remote.set(row.id, row.etag);
    persistCache = true;
  } else {
    for await (const info of store.list(prefix)) {
      const id = Number.parseInt(info.key.slice(prefix.length), 16);
      if (/^[0-9a-f]{16}$/.test(info.key.slice(prefix.length)) && id < cache.segmentCount) remote.set(id, info.etag);
    }
  }
  let lastGeneration = 0;
  let stale = 0;
  let dropped = 0;
  const changed: Segment[] = [];
  for (const row of catalog.rows()) {
    if (row.id >= cache.segmentCount) continue;
    const segment = Segment.fromRow(row, cache.lengthOf(row.id));
    if (segment.dirty && segment.slot === undefined) {
      // Dirty bytes live in a slot; a row without one has nothing to upload (a catalog edited by hand).
      log.log("warn", "objstore: a dirty segment has no cache slot; treating it as clean", { segment: row.id });
      segment.writeSeq = 0;
      changed.push(segment);
    }
    const remoteEtag = remote.get(row.id);
    remote.delete(row.id);
    lastGeneration = Math.max(lastGeneration, row.generation);
    if (!segment.dirty && segment.slot !== undefined) {
      if (segment.etag !== remoteEtag) stale++;
      if (segment.etag !== remoteEtag || !persistCache) {
        segment.slot = undefined;
        dropped++;
        changed.push(segment);
      }
    }
    if (segment.etag !== remoteEtag) {
      if (segment.dirty && remoteEtag !== undefined) {
        log.log("warn", "objstore: a segment's object changed in the store while this cache had writes for it; the cache's bytes win", { segment: row.id });
      }
      segment.etag = remoteEtag;
      changed.push(segment);
    }
    if (!segment.empty || segment.generation > 0) cache.adopt(segment);
  }
  for (const [id, etag] of remote) {
    const segment = new Segment(id, cache.lengthOf(id));
    segment.etag = etag;
    cache.adopt(segment);
  }
  catalog.saveAll(changed.map((s) => s.row()));
  catalog.commitDurably();
  const used = [...cache.cached()].map((s) => s.slot!);
  file.adoptSlots(used);
  const inUse = new Set(used);
  for (let slot = 0; slot < file.slotCount; slot++) if (!inUse.has(slot)) file.zero(slot, 0, file.objectSize);
  // Slots past the last one in use are handed out later as reading zeros, but they can hold bytes: of segments just
  // dropped (no --objstore-persistcache, or changed in the store), or written before a crash that no row names.
  file.trimEnd();
  if (stale > 0) log.log("info", "objstore: cached segments changed in the store; they are fetched again", { segments: stale });
  if (dropped > 0 && !persistCache) log.log("debug", "objstore: dropped clean cached segments (no --objstore-persistcache)", { segments: dropped });
  return lastGeneration;
}

function checkOptions(options: ObjstoreDeviceOptions): void {
  const positive = (name: string, value: number | undefined, min: number) => {
    if (value !== undefined && (!Number.isFinite(value) || value < min)) throw new RangeError(`objstore device: ${name} must be at least ${min}, got ${value}`);
  };
  positive("--objstore-concurflush", options.concurrency, 1);
  positive("--objstore-flushevery", options.flushEvery, 0.05);
  const o = options.objectSize;
  if (o !== undefined && (!Number.isInteger(o) || o < 4096 || o > 1 << 30 || (o & (o - 1)) !== 0)) {
    throw new RangeError(`objstore device: --objstore-objsize must be a power of two from 4KiB to 1GiB, got ${o}`);
  }
  const d = options.diskCache;
  if (d !== undefined && (!Number.isSafeInteger(d) || d < 0)) throw new RangeError(`objstore device: --objstore-diskcache must be a size, got ${d}`);
}

export { ObjstoreDevice } from "./device.ts";
export { OBJSTORE_COMPRESSIONS, AES_MODES, OBJSTORE_KINDS, FLUSH_MODES } from "./layout.ts";
