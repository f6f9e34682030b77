/**
 * The manifest in the store: reading it (or the catalog's copy while the store is unreachable), checking flags and
 * the key against it, and writing the manifest of a new volume or a new clone.
 */
import type { Logger } from "../../shared/log.ts";
import type { ObjstoreCatalog } from "./catalog.ts";
import fs from "node:fs";
import path from "node:path";
import { deriveVolumeKeys, KEY_FILE, resolveVolumeKey, type VolumeKeys } from "./codec/keys.ts";
import { checkVolumeKey, createManifest, decodeManifest, encodeManifest, type Manifest } from "./codec/manifest.ts";
import type { ObjstoreDeviceOptions } from "./options.ts";
import { manifestKey } from "./layout.ts";
import { readSnapshot, recordClone } from "./snapshots.ts";
import { ObjectStoreError, type ObjectStore } from "./store/types.ts";

export const DEFAULT_OBJECT_SIZE = 4 << 20;

/** The manifest's bytes as the store has them (undefined: no volume yet), or the cache's copy when offline. */
export interface ManifestSource {
  readonly bytes: Uint8Array | undefined;
  readonly where: string;
  readonly offline: boolean;
}

export async function readManifest(store: ObjectStore, storeName: string, catalog: ObjstoreCatalog | undefined, log: Logger): Promise<ManifestSource> {
  const where = `${store.description} ${manifestKey(storeName)}`;
  try {
    await store.prepare();
    return { bytes: (await store.get(manifestKey(storeName)))?.body, where, offline: false };
  } catch (e) {
    const copy = catalog?.meta("manifest");
    const message = e instanceof Error ? e.message : String(e);
    if (e instanceof ObjectStoreError && e.retryable && typeof copy === "string" && catalog !== undefined) {
      log.log("warn", "objstore: the store is unreachable; serving the volume from the local cache until it returns (data not cached fails with EIO)", {
        store: store.description,
        error: message,
      });
      return { bytes: new TextEncoder().encode(copy), where: `${catalog.path} (copy of ${where})`, offline: true };
    }
    throw new Error(`objstore device: cannot use ${store.description}: ${message}`, { cause: e });
  }
}

/** A flag given for an existing volume must agree with its manifest. */
export function checkAgainstManifest(options: ObjstoreDeviceOptions, manifest: Manifest): void {
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
  if (options.cloneOf !== undefined) {
    const origin = manifest.origin === null ? "none" : `${manifest.origin.volume}@${manifest.origin.snapshot}`;
    if (origin !== options.cloneOf) clash("--objstore-clone-of", options.cloneOf, origin);
  }
}

/** The volume's keys (undefined when unencrypted), checked against an existing manifest. */
export function volumeKeys(options: ObjstoreDeviceOptions, manifest: Manifest, creating: boolean): VolumeKeys | undefined {
  const master = resolveVolumeKey({ spec: options.aesKey, mode: manifest.encryption, storeDir: options.storeDir, creating, volume: options.storeName });
  const keys = master === undefined ? undefined : deriveVolumeKeys(master);
  checkVolumeKey(manifest, keys, options.storeName);
  return keys;
}

/** Stores a new manifest unless one appeared meanwhile (another daemon created the volume first): then that one. */
async function publish(store: ObjectStore, storeName: string, manifest: Manifest): Promise<Manifest> {
  const key = manifestKey(storeName);
  const body = encodeManifest(manifest);
  const result = await store.createIfAbsent(key, body);
  if (result.outcome === "exists") {
    const got = await store.get(key);
    if (got !== undefined) return decodeManifest(got.body, `${store.description} ${key}`);
  }
  if (result.outcome === "created") return manifest;
  await store.put(key, body);
  return manifest;
}

/** Creates the manifest of a new volume from the flags. */
export async function createVolume(options: ObjstoreDeviceOptions, store: ObjectStore, log: Logger): Promise<Manifest> {
  const size = options.size ?? options.defaultSize;
  if (size === undefined) {
    throw new Error(`objstore device: ${store.description} has no volume ${options.storeName} and no size was given; pass --store-size to create it`);
  }
  const encryption = options.aesMode ?? "aes-gcm";
  const keyFile = path.join(options.storeDir, KEY_FILE);
  const generating = options.aesKey === undefined && encryption !== "identity" && !fs.existsSync(keyFile);
  const master = resolveVolumeKey({ spec: options.aesKey, mode: encryption, storeDir: options.storeDir, creating: true, volume: options.storeName });
  if (generating) {
    options.notify?.({ kind: "notice", message: `generated a new key for volume ${options.storeName} at ${keyFile} (mode 0600); keep a copy: without it the volume cannot be read` });
  }
  const manifest = createManifest({
    size,
    objectSize: options.objectSize ?? DEFAULT_OBJECT_SIZE,
    compression: options.compression ?? "lz4",
    encryption,
    ...(master === undefined ? {} : { keys: deriveVolumeKeys(master) }),
  });
  const stored = await publish(store, options.storeName, manifest);
  if (stored === manifest) log.log("info", "objstore: created a new volume", { volume: options.storeName, store: store.description, size: manifest.size, objectSize: manifest.objectSize });
  return stored;
}

/** Creates the manifest of a clone of `VOLUME@SNAPSHOT`: the base's settings, and its objects up to the snapshot. */
export async function createClone(options: ObjstoreDeviceOptions, store: ObjectStore, log: Logger): Promise<Manifest> {
  const spec = options.cloneOf!;
  const at = spec.lastIndexOf("@");
  const baseName = spec.slice(0, at);
  const snapshot = spec.slice(at + 1);
  if (at <= 0 || snapshot === "") throw new Error(`objstore device: --objstore-clone-of takes VOLUME@SNAPSHOT, not "${spec}"`);
  if (baseName === options.storeName) throw new Error("objstore device: a clone needs a --store-name of its own, not its base's");
  const baseBytes = (await store.get(manifestKey(baseName)))?.body;
  if (baseBytes === undefined) throw new Error(`objstore device: --objstore-clone-of ${spec}: ${store.description} has no volume ${baseName}`);
  const base = decodeManifest(baseBytes, `${store.description} ${manifestKey(baseName)}`);
  const keys = volumeKeys({ ...options, storeName: baseName }, base, false);
  const record = await readSnapshot(store, baseName, snapshot);
  if (record === undefined) throw new Error(`objstore device: --objstore-clone-of ${spec}: volume ${baseName} has no snapshot ${snapshot}`);
  if (options.size !== undefined && options.size !== base.size) throw new Error(`objstore device: a clone has the size of its base (${base.size} bytes); drop --store-size`);
  const manifest = createManifest({
    size: base.size,
    objectSize: base.objectSize,
    compression: base.compression,
    encryption: base.encryption,
    chunkSize: base.chunkSize,
    bases: [...base.bases, { volume: baseName, volumeId: base.volumeId, upTo: record.seq }],
    origin: { volume: baseName, snapshot, seq: record.seq, epoch: record.epoch },
    ...(keys === undefined ? {} : { keys }),
  });
  // The base learns of the clone first, so that its snapshot can never be deleted under a clone.
  await recordClone(store, baseName, options.storeName, snapshot);
  const stored = await publish(store, options.storeName, manifest);
  log.log("info", "objstore: created a clone", { volume: options.storeName, of: spec, store: store.description });
  return stored;
}
