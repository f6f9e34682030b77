/** Shared by the objstore suites: a temporary store directory, an s3rver on loopback, and device factories. */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { openObjstoreDevice, type ObjstoreDevice, type ObjstoreDeviceOptions } from "../../src/devices/objstore/index.ts";
import { LocalObjectStore } from "../../src/devices/objstore/store/local.ts";
import type { ObjectStore } from "../../src/devices/objstore/store/types.ts";
import { type DeviceTraits, traitsOf } from "../conformance/index.ts";
import { s3ServerConfigJson, type S3Server } from "../helpers/s3-server.ts";

export type Backend = "local" | "s3";

/** A fresh directory under the system temp dir; the caller removes it. */
export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `usbd-${prefix}-`));
}

/** Options that put a volume in `backend`: a directory under `objectsDir`, or the s3rver `server`. */
export function backendOptions(backend: Backend, objectsDir: string, server: S3Server | undefined): Partial<ObjstoreDeviceOptions> {
  if (backend === "local") return { kind: "local", config: JSON.stringify({ path: objectsDir }) };
  if (server === undefined) throw new Error("the s3 backend needs the s3rver");
  return { kind: "s3", config: s3ServerConfigJson(server) };
}

/** A gauge's value from the device's stats. */
export function gauge(dev: ObjstoreDevice, name: string): number {
  const found = dev.stats().gauges.find((g) => g.name === name);
  if (found === undefined) throw new Error(`no gauge "${name}"`);
  return found.value;
}

/** Random bytes (crypto.getRandomValues takes at most 64 KiB at a time). */
export function randomBytes(length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i += 65536) crypto.getRandomValues(out.subarray(i, Math.min(length, i + 65536)));
  return out;
}

/**
 * What an objstore volume can do, for conformance suites whose stores start in a beforeAll (after the suite must
 * know which checks to run): read off a volume in a local directory, the same for every backend (the suite checks
 * each device against it).
 */
export async function objstoreTraits(): Promise<DeviceTraits> {
  const dir = tempDir("objstore-traits");
  try {
    const dev = await openObjstoreDevice({ storeDir: dir, storeName: "traits", size: 16 * 1024 * 1024, ...backendOptions("local", path.join(dir, "objects"), undefined) });
    const traits = traitsOf(dev);
    await dev.close();
    return traits;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export { openObjstoreDevice };

/** Calls to a store, counted by kind; `ranged` counts GETs of a byte range. */
export interface StoreCounts {
  puts: number;
  gets: number;
  ranged: number;
  deletes: number;
  lists: number;
}

/**
 * The real store `inner` with every call counted (and puts optionally held back by `gate`): for tests that count
 * ranged GETs or stop uploads at a chosen point. Everything else goes to the real backend unchanged.
 */
export function countingStore(inner: ObjectStore, gate?: (key: string) => Promise<void> | undefined): { store: ObjectStore; counts: StoreCounts } {
  const counts: StoreCounts = { puts: 0, gets: 0, ranged: 0, deletes: 0, lists: 0 };
  const store: ObjectStore = {
    description: inner.description,
    ...(inner.putDigest === undefined ? {} : { putDigest: inner.putDigest }),
    prepare: () => inner.prepare(),
    async put(key, body, md5) {
      counts.puts++;
      await gate?.(key);
      return inner.put(key, body, md5);
    },
    get(key, range) {
      counts.gets++;
      if (range !== undefined) counts.ranged++;
      return inner.get(key, range);
    },
    async createIfAbsent(key, body) {
      counts.puts++;
      await gate?.(key);
      return inner.createIfAbsent(key, body);
    },
    head: (key) => inner.head(key),
    delete(key) {
      counts.deletes++;
      return inner.delete(key);
    },
    list(prefix) {
      counts.lists++;
      return inner.list(prefix);
    },
    close: () => inner.close(),
  };
  return { store, counts };
}

/** Keys under `prefix` in `store`. */
export async function keys(store: ObjectStore, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const info of store.list(prefix)) out.push(info.key);
  return out;
}

/**
 * Makes test volumes under `dir`, each on the directory backend (or the s3rver `server()`), with the key `aesKey` and
 * 256 KiB objects unless `base` says otherwise, openable from any number of "machines" (store dirs).
 */
export function volumeMaker(dir: string, aesKey: string, server: () => S3Server | undefined) {
  let made = 0;
  return (base: Partial<ObjstoreDeviceOptions> = {}, backend: Backend = "local") => {
    const name = `vol-${made++}`;
    const objects = path.join(dir, `${name}-objects`);
    const store = new LocalObjectStore(objects);
    const machine = (label: string) => {
      const storeDir = path.join(dir, `${name}-${label}`);
      fs.mkdirSync(storeDir, { recursive: true });
      return storeDir;
    };
    const open = (storeDir: string, more: Partial<ObjstoreDeviceOptions> = {}): Promise<ObjstoreDevice> =>
      openObjstoreDevice({ storeDir, storeName: name, ...backendOptions(backend, objects, server()), aesKey, objectSize: 256 * 1024, ...base, ...more });
    return { name, objects, store, machine, open };
  };
}

/** A read's bytes, copied (a device may return a view it reuses). */
export async function readCopy(dev: ObjstoreDevice, offset: number, length: number): Promise<Uint8Array> {
  return (await dev.read(offset, length)).slice();
}
