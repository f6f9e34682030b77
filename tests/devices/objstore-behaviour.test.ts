// What is special to the objstore device, against a real S3 server (s3rver on loopback) and the local backend:
// a new machine reads a volume from the store alone, a persistent cache is reused (and dropped when another
// machine wrote the volume since), an outage loses nothing, keys and tampering are caught, the cache quota holds,
// and trimmed data leaves the store.
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { DeviceError } from "../../src/devices/device.ts";
import { KeyError } from "../../src/devices/objstore/codec/keys.ts";
import { logPrefix } from "../../src/devices/objstore/layout.ts";
import { LocalObjectStore } from "../../src/devices/objstore/store/local.ts";
import type { ObjectStore } from "../../src/devices/objstore/store/types.ts";
import { expectSameBytes, isAllZero } from "../conformance/helpers.ts";
import { MiB, pattern } from "../conformance/index.ts";
import { startS3Server, type S3Server } from "../helpers/s3-server.ts";
import { backendOptions, countingStore, gauge, keys, openObjstoreDevice, randomBytes, tempDir } from "./objstore-helpers.ts";
import type { ObjstoreDevice, ObjstoreDeviceOptions } from "../../src/devices/objstore/index.ts";

setDefaultTimeout(30_000);
const dir = tempDir("objstore-behaviour");
let server: S3Server;
beforeAll(async () => {
  server = await startS3Server();
});
afterAll(async () => {
  await server.cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
});

const KEY = `key:${"ab".repeat(32)}`;
let volumes = 0;

/** A new volume name and a way to open it from any store dir ("machine"), on s3 unless told otherwise. */
function volume(base: Partial<ObjstoreDeviceOptions> = {}) {
  const name = `vol-${volumes++}`;
  const machine = (label: string) => {
    const storeDir = path.join(dir, `${name}-${label}`);
    fs.mkdirSync(storeDir, { recursive: true });
    return storeDir;
  };
  const open = (storeDir: string, more: Partial<ObjstoreDeviceOptions> = {}) =>
    openObjstoreDevice({ storeDir, storeName: name, ...backendOptions("s3", "", server), aesKey: KEY, objectSize: 256 * 1024, ...base, ...more });
  return { name, machine, open };
}

const read = async (dev: ObjstoreDevice, offset: number, length: number) => (await dev.read(offset, length)).slice();

async function waitUntil(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(50);
  }
}

describe("objstore: the store is the source of truth", () => {
  test("a new machine (empty cache dir) reads the volume from the store alone", async () => {
    const v = volume();
    const data = randomBytes(3 * MiB + 777);
    const a = await v.open(v.machine("a"), { size: 16 * MiB });
    await a.write(5 * MiB + 3, data);
    await a.close();
    const b = await v.open(v.machine("b"));
    expect(b.size).toBe(16 * MiB);
    expectSameBytes(await read(b, 5 * MiB + 3, data.length), data, "from the store");
    expect(gauge(b, "downloaded")).toBeGreaterThan(0);
    expect(isAllZero(await read(b, 0, 5 * MiB))).toBe(true);
    await b.close();
  });

  test("a persistent cache is reused after a restart; after another machine wrote the volume, the cache is rebuilt from the store", async () => {
    const v = volume({ persistCache: true });
    const home = v.machine("home");
    const first = pattern(MiB, 1);
    let dev = await v.open(home, { size: 8 * MiB });
    await dev.write(0, first);
    await dev.close();
    dev = await v.open(home);
    expectSameBytes(await read(dev, 0, MiB), first, "cached");
    expect(gauge(dev, "downloaded")).toBe(0);
    await dev.close();
    // Another machine changes part of it while the first is stopped.
    const other = await v.open(v.machine("other"));
    const changed = pattern(1000, 2);
    await other.write(256 * 1024 + 10, changed);
    await other.close();
    dev = await v.open(home);
    const expected = first.slice();
    expected.set(changed, 256 * 1024 + 10);
    expectSameBytes(await read(dev, 0, MiB), expected, "after the other machine's write");
    expect(gauge(dev, "downloaded")).toBeGreaterThan(0);
    await dev.close();
  });

  test("reopening needs no size; a flag that contradicts the manifest is refused", async () => {
    const v = volume();
    const home = v.machine("a");
    await (await v.open(home, { size: 4 * MiB })).close();
    const again = await v.open(home);
    expect(again.size).toBe(4 * MiB);
    await again.close();
    await expect(v.open(home, { size: 8 * MiB })).rejects.toThrow(/--store-size/);
    await expect(v.open(home, { objectSize: MiB })).rejects.toThrow(/--objstore-objsize/);
    await expect(v.open(home, { compression: "gzip" })).rejects.toThrow(/--objstore-compress/);
  });

  test("reads of segments never written return zeros without creating anything", async () => {
    const v = volume();
    const home = v.machine("a");
    const dev = await v.open(home, { size: 64 * MiB });
    expect(isAllZero(await read(dev, 10 * MiB, 8 * MiB))).toBe(true);
    expect(fs.statSync(path.join(home, `${v.name}.objstore.cache`)).size).toBe(0);
    expect(gauge(dev, "cache")).toBe(0);
    await dev.close();
  });
});

describe("objstore: keys and integrity", () => {
  test("a wrong key is refused at open with a clear error", async () => {
    const v = volume({ aesMode: "aes-gcm" });
    await (await v.open(v.machine("a"), { size: 4 * MiB })).close();
    const attempt = v.open(v.machine("b"), { aesKey: `key:${"cd".repeat(32)}` });
    await expect(attempt).rejects.toBeInstanceOf(KeyError);
    await expect(v.open(v.machine("c"), { aesKey: `key:${"cd".repeat(32)}` })).rejects.toThrow(/wrong key/);
  });

  test("a byte flipped in a stored object reads as EIO, never as other data", async () => {
    const objects = path.join(dir, "tamper-objects");
    const v = volume({ ...backendOptions("local", objects, undefined) });
    const a = await v.open(v.machine("a"), { size: 4 * MiB });
    await a.write(0, randomBytes(256 * 1024));
    await a.flush();
    await a.write(256 * 1024, randomBytes(256 * 1024));
    await a.close();
    const store = new LocalObjectStore(objects);
    // The second log object holds the second write; damage a byte in the middle of its data.
    const key = (await keys(store, logPrefix(v.name))).sort()[1]!;
    const object = (await store.get(key))!.body;
    object[object.length - 1000]! ^= 0x01;
    await store.put(key, object);
    const b = await v.open(v.machine("b"));
    expect(await read(b, 0, 4096)).toHaveLength(4096);
    let error: unknown;
    try {
      await b.read(512 * 1024 - 4096, 4096);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(DeviceError);
    expect((error as DeviceError).code).toBe("EIO");
    expect(gauge(b, "store errors")).toBe(1);
    await b.close();
  });
});

describe("objstore: the cache", () => {
  test("a 4-object quota with a 16-object working set: correct data, quota respected", async () => {
    const v = volume({ diskCache: MiB, concurrency: 2, flushEvery: 0.1 });
    const home = v.machine("a");
    const dev = await v.open(home, { size: 8 * MiB });
    const parts = Array.from({ length: 16 }, (_, i) => pattern(256 * 1024, 10 + i));
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 16; i++) await dev.write(i * 256 * 1024, parts[i]!);
      for (let i = 15; i >= 0; i--) expectSameBytes(await read(dev, i * 256 * 1024, 256 * 1024), parts[i]!, `part ${i}`);
      // Evicted chunks are punched after a commit records it: let it land.
      await dev.flush();
      await Bun.sleep(100);
      expect(gauge(dev, "cache")).toBeLessThanOrEqual(MiB);
      expect(fs.statSync(path.join(home, `${v.name}.objstore.cache`)).blocks * 512).toBeLessThanOrEqual(MiB + 320 * 1024);
    }
    // The working set did not fit: log objects went to the store and came back.
    expect(gauge(dev, "downloaded")).toBeGreaterThan(0);
    await dev.close();
  });

  test("zeros written to data that is no longer cached read back as zeros, on this machine and a new one", async () => {
    const objects = path.join(dir, "zero-objects");
    const v = volume({ ...backendOptions("local", objects, undefined), diskCache: 512 * 1024, flushMode: "remote", flushEvery: 0.1 });
    const dev = await v.open(v.machine("a"), { size: 4 * MiB });
    for (let i = 0; i < 4; i++) await dev.write(i * 256 * 1024, pattern(256 * 1024, 30 + i));
    await dev.flush();
    await dev.trim(0, 256 * 1024);
    await dev.writeZeroes(256 * 1024 + 4096, 8192);
    await dev.flush();
    expect(isAllZero(await read(dev, 0, 256 * 1024))).toBe(true);
    await dev.close();
    const cold = await v.open(v.machine("b"));
    expect(isAllZero(await read(cold, 0, 256 * 1024))).toBe(true);
    const expected = pattern(256 * 1024, 31);
    expected.fill(0, 4096, 4096 + 8192);
    expectSameBytes(await read(cold, 256 * 1024, 256 * 1024), expected, "partly zeroed range");
    await cold.close();
  });
});

describe("objstore: reclaim", () => {
  test("reclaim compacts what trims and overwrites left dead and deletes it from the store now", async () => {
    const objects = path.join(dir, "reclaim-objects");
    // An upload round an hour away: only reclaim (and close) reach the store.
    const v = volume({ ...backendOptions("local", objects, undefined), flushEvery: 3600, objectSize: 256 * 1024 });
    const store = new LocalObjectStore(objects);
    const dev = await v.open(v.machine("a"), { size: 4 * MiB });
    await dev.write(0, pattern(2 * MiB, 7));
    await dev.reclaim();
    const before = (await keys(store, logPrefix(v.name))).length;
    expect(before).toBe(8);
    // Trim most of it: the objects that held it are dead or nearly so.
    await dev.trim(0, 2 * MiB - 64 * 1024);
    const result = await dev.reclaim();
    expect(result.detail).toMatch(/log objects? compacted, \d+ log objects? deleted from the store/);
    expect(result.bytes).toBeGreaterThan(MiB);
    const after = (await keys(store, logPrefix(v.name))).length;
    expect(after).toBeLessThan(before);
    expectSameBytes(await read(dev, 2 * MiB - 64 * 1024, 64 * 1024), pattern(2 * MiB, 7).subarray(2 * MiB - 64 * 1024), "the part left alone");
    await dev.close();
    const cold = await v.open(v.machine("b"));
    expect(isAllZero(await read(cold, 0, 2 * MiB - 64 * 1024))).toBe(true);
    expectSameBytes(await read(cold, 2 * MiB - 64 * 1024, 64 * 1024), pattern(2 * MiB, 7).subarray(2 * MiB - 64 * 1024), "from the store");
    await cold.close();
  });
});

describe("objstore: the store failing", () => {
  test("S3 stopped during a flush: FLUSH fails, cached data keeps working, nothing is lost, uploads resume", async () => {
    const v = volume({ flushEvery: 0.2, flushMode: "remote" });
    const home = v.machine("a");
    const dev = await v.open(home, { size: 8 * MiB });
    const data = randomBytes(2 * MiB);
    await dev.write(0, data);
    await server.stop();
    try {
      let error: unknown;
      try {
        await dev.flush();
      } catch (e) {
        error = e;
      }
      expect((error as DeviceError).code).toBe("EIO");
      expect(gauge(dev, "store errors")).toBeGreaterThan(0);
      expect(dev.stats().lastError).toMatch(/127\.0\.0\.1/);
      expect(gauge(dev, "dirty objects")).toBeGreaterThan(0);
      // The cache keeps serving reads and writes.
      expectSameBytes(await read(dev, 0, 2 * MiB), data, "cached during the outage");
      await dev.write(3 * MiB, data.subarray(0, MiB));
    } finally {
      await server.restart();
    }
    await waitUntil("uploads to resume", () => gauge(dev, "dirty objects") === 0, 20_000);
    expect(dev.stats().lastError).toBeUndefined();
    await dev.flush();
    await dev.close();
    const cold = await v.open(v.machine("b"));
    expectSameBytes(await read(cold, 0, 2 * MiB), data, "first write");
    expectSameBytes(await read(cold, 3 * MiB, MiB), data.subarray(0, MiB), "write during the outage");
    await cold.close();
  });

  test("a restart while the store is down serves the cache, and uploads what was dirty once it returns", async () => {
    const v = volume({ flushEvery: 0.2 });
    const home = v.machine("a");
    const dev = await v.open(home, { size: 8 * MiB });
    const data = randomBytes(MiB + 4096);
    await server.stop();
    try {
      await dev.write(MiB, data);
      await dev.flush();
      // The store is down: close keeps the writes dirty in the cache.
      await dev.close();
      await expect(v.open(v.machine("never-seen"))).rejects.toThrow(/cannot (use|reach)/);
      const again = await v.open(home);
      expectSameBytes(await read(again, MiB, data.length), data, "dirty data served while the store is down");
      expect(gauge(again, "dirty objects")).toBeGreaterThan(0);
      await server.restart();
      await waitUntil("the dirty segments to reach the store", () => gauge(again, "dirty objects") === 0, 20_000);
      await again.close();
    } finally {
      await server.restart();
    }
    const cold = await v.open(v.machine("b"));
    expectSameBytes(await read(cold, MiB, data.length), data, "from the store after the outage");
    await cold.close();
  });

  test("a remote FLUSH waits for the whole prefix: a later log object stored first does not count", async () => {
    const objects = path.join(dir, "prefix-objects");
    const real = new LocalObjectStore(objects);
    // Holds the upload of the first log object until released: the only way to store the second one first.
    let release: (() => void) | undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    let first: string | undefined;
    const { store } = countingStore(real, (key) => {
      if (!key.includes("/log/")) return undefined;
      first ??= key;
      return key === first ? held : undefined;
    });
    const v = volume({ ...backendOptions("local", objects, undefined), flushMode: "remote", objectSize: 64 * 1024, concurrency: 4 });
    const dev = await v.open(v.machine("a"), { size: 4 * MiB, store });
    await dev.write(0, pattern(64 * 1024, 1));
    await dev.write(64 * 1024, pattern(64 * 1024, 2));
    let done = false;
    const flushing = dev.flush().then(() => (done = true));
    await waitUntil("the second object to be stored", () => gauge(dev, "uploads in flight") === 1 && gauge(dev, "log objects") === 1);
    await Bun.sleep(100);
    expect(done).toBe(false);
    release!();
    await flushing;
    expect(gauge(dev, "log objects")).toBe(2);
    await dev.close();
    const cold = await v.open(v.machine("b"));
    expectSameBytes(await read(cold, 0, 128 * 1024), new Uint8Array([...pattern(64 * 1024, 1), ...pattern(64 * 1024, 2)]), "both writes");
    await cold.close();
  });
});
