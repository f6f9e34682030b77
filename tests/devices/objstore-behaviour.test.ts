// What is special to the objstore device, against a real S3 server (s3rver on loopback) and the local backend:
// a new machine reads a volume from the store alone, a persistent cache is reused and revalidated, an outage
// loses nothing, keys and tampering are caught, the cache quota holds, and zeroing gives objects back.
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { DeviceError } from "../../src/devices/device.ts";
import { KeyError } from "../../src/devices/objstore/codec/keys.ts";
import { segmentKey } from "../../src/devices/objstore/layout.ts";
import { LocalObjectStore } from "../../src/devices/objstore/store/local.ts";
import type { ObjectStore } from "../../src/devices/objstore/store/types.ts";
import { expectSameBytes, isAllZero } from "../conformance/helpers.ts";
import { MiB, pattern } from "../conformance/index.ts";
import { startS3Server, type S3Server } from "../helpers/s3-server.ts";
import { backendOptions, gauge, openObjstoreDevice, randomBytes, tempDir } from "./objstore-helpers.ts";
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

  test("a persistent cache is reused after a restart, and a segment changed in the store is fetched again", async () => {
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
    // Another machine changes the second segment while the first is stopped.
    const other = await v.open(v.machine("other"));
    const changed = pattern(1000, 2);
    await other.write(256 * 1024 + 10, changed);
    await other.close();
    dev = await v.open(home);
    const expected = first.slice();
    expected.set(changed, 256 * 1024 + 10);
    expectSameBytes(await read(dev, 0, MiB), expected, "after revalidation");
    // Only the changed segment was fetched.
    expect(gauge(dev, "downloaded")).toBeGreaterThan(0);
    expect(gauge(dev, "downloaded")).toBeLessThan(512 * 1024);
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
    await a.write(0, randomBytes(300 * 1024));
    await a.close();
    const store = new LocalObjectStore(objects);
    const key = segmentKey(v.name, 1);
    const object = (await store.get(key))!.body;
    object[Math.floor(object.length / 2)]! ^= 0x01;
    await store.put(key, object);
    const b = await v.open(v.machine("b"));
    expect(await read(b, 0, 4096)).toHaveLength(4096);
    let error: unknown;
    try {
      await b.read(256 * 1024, 4096);
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
  test("a 4-segment quota with a 16-segment working set: correct data, quota respected", async () => {
    const v = volume({ diskCache: MiB, concurrency: 2 });
    const home = v.machine("a");
    const dev = await v.open(home, { size: 8 * MiB });
    const segments = Array.from({ length: 16 }, (_, i) => pattern(256 * 1024, 10 + i));
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 16; i++) await dev.write(i * 256 * 1024, segments[i]!);
      for (let i = 15; i >= 0; i--) expectSameBytes(await read(dev, i * 256 * 1024, 256 * 1024), segments[i]!, `segment ${i}`);
      expect(gauge(dev, "cache")).toBeLessThanOrEqual(MiB);
      expect(fs.statSync(path.join(home, `${v.name}.objstore.cache`)).blocks * 512).toBeLessThanOrEqual(MiB + 64 * 1024);
    }
    // The working set did not fit: segments went to the store and came back.
    expect(gauge(dev, "downloaded")).toBeGreaterThan(0);
    await dev.close();
  });

  test("zeroing a whole segment deletes its object; zeros written to an evicted segment are kept", async () => {
    const objects = path.join(dir, "zero-objects");
    const v = volume({ ...backendOptions("local", objects, undefined), diskCache: 512 * 1024, flushMode: "remote" });
    const store = new LocalObjectStore(objects);
    const dev = await v.open(v.machine("a"), { size: 4 * MiB });
    for (let i = 0; i < 4; i++) await dev.write(i * 256 * 1024, pattern(256 * 1024, 30 + i));
    await dev.flush();
    expect(await store.head(segmentKey(v.name, 0))).toBeDefined();
    // Segment 0 was evicted long ago (two slots); a whole-segment trim must still reach the store.
    await dev.trim(0, 256 * 1024);
    // A partial zero write to another evicted segment.
    await dev.writeZeroes(256 * 1024 + 4096, 8192);
    await dev.flush();
    expect(await store.head(segmentKey(v.name, 0))).toBeUndefined();
    await dev.close();
    const cold = await v.open(v.machine("b"));
    expect(isAllZero(await read(cold, 0, 256 * 1024))).toBe(true);
    const expected = pattern(256 * 1024, 31);
    expected.fill(0, 4096, 4096 + 8192);
    expectSameBytes(await read(cold, 256 * 1024, 256 * 1024), expected, "partly zeroed segment");
    await cold.close();
  });
});

describe("objstore: reclaim", () => {
  test("reclaim uploads now: a trimmed segment's object is deleted before the next upload round", async () => {
    const objects = path.join(dir, "reclaim-objects");
    // Local flush mode and an upload round an hour away: only reclaim can reach the store.
    const v = volume({ ...backendOptions("local", objects, undefined), flushEvery: 3600 });
    const store = new LocalObjectStore(objects);
    const dev = await v.open(v.machine("a"), { size: 4 * MiB });
    await dev.write(0, pattern(512 * 1024, 7));
    const first = await dev.reclaim();
    expect(first.detail).toBe("0 remote objects deleted, 2 segments uploaded");
    expect(await store.head(segmentKey(v.name, 0))).toBeDefined();
    const cachedBeforeTrim = gauge(dev, "cache");
    await dev.trim(0, 256 * 1024);
    await dev.flush();
    // FLUSH in local mode keeps the trim local: the object is still there.
    expect(await store.head(segmentKey(v.name, 0))).toBeDefined();
    const cachedBeforeReclaim = gauge(dev, "cache");
    const result = await dev.reclaim();
    expect(result.detail).toBe("1 remote object deleted, 0 segments uploaded");
    expect(await store.head(segmentKey(v.name, 0))).toBeUndefined();
    expect(await store.head(segmentKey(v.name, 1))).toBeDefined();
    // The trimmed segment is out of the cache (by the trim or by the reclaim); bytes counts what the reclaim freed.
    expect(gauge(dev, "cache")).toBe(cachedBeforeTrim - 256 * 1024);
    expect(result.bytes).toBe(cachedBeforeReclaim - gauge(dev, "cache"));
    expectSameBytes(await read(dev, 256 * 1024, 256 * 1024), pattern(512 * 1024, 7).subarray(256 * 1024), "the segment left alone");
    await dev.close();
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
      await expect(v.open(v.machine("never-seen"))).rejects.toThrow(/cannot use/);
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

  test("a segment written while its upload is in flight stays dirty, and the next upload carries the new bytes", async () => {
    const objects = path.join(dir, "inflight-objects");
    // A stand-in that holds puts until released: the only way to land a write at a known point inside an upload.
    // Everything else is the real directory backend.
    const real = new LocalObjectStore(objects);
    let release: (() => void) | undefined;
    let held = 0;
    const slow: ObjectStore = {
      description: real.description,
      prepare: () => real.prepare(),
      async put(key, body) {
        if (key.includes("/segments/") && release === undefined) {
          held++;
          await new Promise<void>((resolve) => (release = resolve));
        }
        return real.put(key, body);
      },
      createIfAbsent: (key, body) => real.createIfAbsent(key, body),
      get: (key, range) => real.get(key, range),
      head: (key) => real.head(key),
      delete: (key) => real.delete(key),
      list: (prefix) => real.list(prefix),
      close: () => real.close(),
    };
    const v = volume({ ...backendOptions("local", objects, undefined), flushMode: "remote" });
    const dev = await v.open(v.machine("a"), { size: 4 * MiB, store: slow });
    await dev.write(0, pattern(4096, 1));
    const flushing = dev.flush();
    await waitUntil("the upload to start", () => held === 1);
    await dev.write(0, pattern(4096, 2));
    release!();
    await flushing;
    // The upload took the first bytes; the second write came after its snapshot.
    expect(gauge(dev, "dirty objects")).toBe(1);
    await dev.flush();
    expect(gauge(dev, "dirty objects")).toBe(0);
    await dev.close();
    const cold = await v.open(v.machine("b"));
    expectSameBytes(await read(cold, 0, 4096), pattern(4096, 2), "the write made during the upload");
    await cold.close();
  });
});
