// The log-structured objstore's own promises, on the directory backend and s3rver: one writer at a time (a second
// daemon refused naming the holder; a takeover fences the first), snapshots and clones (instant, isolated, kept by
// the GC), the GC (bounded space, exact data), cold reads by ranged GET, writes larger than an object applied whole
// or not at all, and volumes of the old segment format refused.
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { DeviceError } from "../../src/devices/device.ts";
import { LeaseHeldError, SnapshotError } from "../../src/devices/objstore/index.ts";
import { checkpointPrefix, leasePrefix, logPrefix, manifestKey, snapshotKey } from "../../src/devices/objstore/layout.ts";
import { expectSameBytes, isAllZero } from "../conformance/helpers.ts";
import { MiB, pattern } from "../conformance/index.ts";
import { startS3Server, type S3Server } from "../helpers/s3-server.ts";
import { backendOptions, gauge, keys, openObjstoreDevice, randomBytes, readCopy, tempDir, volumeMaker } from "./objstore-helpers.ts";
import type { ObjstoreDevice } from "../../src/devices/objstore/index.ts";

setDefaultTimeout(60_000);
const dir = tempDir("objstore-log");
let server: S3Server;
beforeAll(async () => {
  server = await startS3Server();
});
afterAll(async () => {
  await server.cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
});

const KEY = `key:${"cd".repeat(32)}`;
/** A new volume on the directory backend (or s3), openable from any number of "machines" (store dirs). */
const volume = volumeMaker(dir, KEY, () => server);
const read = readCopy;

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (e: unknown) => e,
  );
}

describe("objstore: one writer at a time", () => {
  test("a second daemon on the volume is refused, naming the holder; after a clean close it may open", async () => {
    const v = volume();
    const first = await v.open(v.machine("a"), { size: 8 * MiB });
    const error = await rejection(v.open(v.machine("b")));
    expect(error).toBeInstanceOf(LeaseHeldError);
    const message = (error as Error).message;
    expect(message).toContain(`pid ${process.pid}`);
    expect(message).toContain("since 20");
    expect(message).toContain("--objstore-takeover");
    // The same cache restarted after a crash is the holder itself, not a second writer: only another cache is refused.
    await first.close();
    const second = await v.open(v.machine("b"));
    await second.close();
  });

  test("takeover: the first writer is fenced, and a cold open has everything the second flushed and nothing the first wrote after", async () => {
    const v = volume({ flushMode: "remote" });
    const first = await v.open(v.machine("a"), { size: 8 * MiB });
    await first.write(0, pattern(MiB, 1));
    await first.flush();
    const second = await v.open(v.machine("b"), { takeover: true });
    expectSameBytes(await read(second, 0, MiB), pattern(MiB, 1), "the takeover sees what the first flushed");
    await second.write(MiB, pattern(MiB, 2));
    await second.flush();
    // The first writes on, not knowing yet; its remote FLUSH is where it learns it is fenced.
    await first.write(2 * MiB, pattern(MiB, 3));
    await first.write(MiB, pattern(MiB, 4));
    const fenced = await rejection(first.flush());
    expect(fenced).toBeInstanceOf(DeviceError);
    expect((fenced as DeviceError).code).toBe("EIO");
    expect((fenced as Error).message).toContain("fenced");
    expect(first.stats().lastError).toContain("taken over");
    // From then on it refuses writes.
    const refused = await rejection(Promise.resolve().then(() => first.write(0, new Uint8Array(4096))));
    expect((refused as DeviceError).code).toBe("EIO");
    await first.close();
    await second.write(3 * MiB, pattern(4096, 5));
    await second.close();
    const cold = await v.open(v.machine("c"));
    expectSameBytes(await read(cold, 0, MiB), pattern(MiB, 1), "flushed before the takeover");
    expectSameBytes(await read(cold, MiB, MiB), pattern(MiB, 2), "the second's write, not the fenced one's");
    expect(isAllZero(await read(cold, 2 * MiB, MiB))).toBe(true);
    expectSameBytes(await read(cold, 3 * MiB, 4096), pattern(4096, 5), "written by the second before it closed");
    await cold.close();
  });

  test("a fenced cache that still holds unuploaded writes is refused with the reason, not silently dropped", async () => {
    const v = volume({ flushEvery: 3600 });
    const home = v.machine("a");
    const first = await v.open(home, { size: 4 * MiB });
    await first.write(0, pattern(4096, 1));
    await first.flush();
    // Simulate a crash: the process is gone, nothing uploaded, the lease still held.
    (first.runtime.uploader as { stop(): Promise<void> }).stop();
    first.runtime.v.file.close();
    first.runtime.v.catalog.close();
    const other = await v.open(v.machine("b"), { takeover: true });
    await other.close();
    const error = await rejection(v.open(home));
    expect(error).toBeInstanceOf(LeaseHeldError);
    expect((error as Error).message).toMatch(/holds \d+ bytes of writes .* never reached the store/);
  });
});

describe("objstore: snapshots and clones", () => {
  test("write A, snapshot, write B: the snapshot reads A; a clone of it takes C; neither the snapshot nor the original changes", async () => {
    const v = volume({ gcThreshold: 0.9, flushEvery: 0.1 }, "s3");
    const a = pattern(2 * MiB, 11);
    const b = pattern(MiB, 12);
    const dev = await v.open(v.machine("a"), { size: 8 * MiB });
    await dev.write(0, a);
    const record = await dev.createSnapshot("s1");
    expect(record.name).toBe("s1");
    await expect(dev.createSnapshot("s1")).rejects.toThrow(SnapshotError);
    await dev.write(0, b);
    await dev.flush();
    expect((await dev.listSnapshots()).map((s) => s.name)).toEqual(["s1"]);

    const snap = await v.open(v.machine("snap"), { snapshot: "s1" });
    expect(snap.capabilities.readOnly).toBe(true);
    expectSameBytes(await read(snap, 0, 2 * MiB), a, "the snapshot");
    expect((await rejection(Promise.resolve().then(() => snap.write(0, new Uint8Array(1))))) as DeviceError).toMatchObject({ code: "EPERM" });
    await snap.close();

    const cloneName = `${v.name}-clone`;
    const openClone = (storeDir: string) =>
      openObjstoreDevice({ storeDir, storeName: cloneName, ...backendOptions("s3", "", server), aesKey: KEY, cloneOf: `${v.name}@s1` });
    const clone = await openClone(v.machine("clone"));
    expectSameBytes(await read(clone, 0, 2 * MiB), a, "the clone starts as the snapshot");
    const c = pattern(512 * 1024, 13);
    await clone.write(MiB, c);
    await clone.close();
    // Deleting a snapshot a clone starts from is refused.
    await expect(dev.deleteSnapshot("s1")).rejects.toThrow(/clone .*-clone starts from it/);

    // The original overwrites everything again and compacts: the GC must keep what the snapshot refers to.
    const r = randomBytes(2 * MiB);
    await dev.write(0, r);
    await dev.reclaim();
    await dev.reclaim();
    await dev.close();

    const cloneAgain = await openClone(v.machine("clone-2"));
    const expected = a.slice();
    expected.set(c, MiB);
    expectSameBytes(await read(cloneAgain, 0, 2 * MiB), expected, "the clone, from the store alone");
    await cloneAgain.close();
    const snapAgain = await v.open(v.machine("snap-2"), { snapshot: "s1" });
    expectSameBytes(await read(snapAgain, 0, 2 * MiB), a, "the snapshot after GC");
    await snapAgain.close();
    const original = await v.open(v.machine("original"));
    expectSameBytes(await read(original, 0, 2 * MiB), r, "the original, untouched by the clone");
    await original.close();
  });

  test("a snapshot of a stopped volume, and snapshot deletion lets the GC reclaim its objects", async () => {
    const v = volume({ gcThreshold: 0.9 });
    let dev = await v.open(v.machine("a"), { size: 4 * MiB });
    await dev.write(0, pattern(MiB, 21));
    await dev.close();
    dev = await v.open(v.machine("a"));
    await dev.createSnapshot("before");
    await dev.write(0, pattern(MiB, 22));
    await dev.reclaim();
    const pinned = (await keys(v.store, logPrefix(v.name))).length;
    await dev.deleteSnapshot("before");
    expect(await v.store.head(snapshotKey(v.name, "before"))).toBeUndefined();
    await dev.reclaim();
    expect((await keys(v.store, logPrefix(v.name))).length).toBeLessThan(pinned);
    await expect(v.open(v.machine("s"), { snapshot: "before" })).rejects.toThrow(/no snapshot named before/);
    await dev.close();
  });
});

describe("objstore: garbage collection", () => {
  test("random overwrites: the store stays within the GC's bound and every byte reads back", async () => {
    const v = volume({ objectSize: 64 * 1024, flushEvery: 0.05, gcThreshold: 0.5 });
    const size = 2 * MiB;
    const dev = await v.open(v.machine("a"), { size });
    const model = new Uint8Array(size);
    const fill = randomBytes(size);
    await dev.write(0, fill);
    model.set(fill);
    let seed = 7;
    const next = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
    for (let i = 0; i < 2000; i++) {
      const at = Math.floor(next() * (size / 4096)) * 4096;
      const block = pattern(4096, i);
      await dev.write(at, block);
      model.set(block, at);
      if (i % 200 === 199) await dev.flush();
    }
    await dev.reclaim();
    const stored = (await keys(v.store, logPrefix(v.name))).length;
    console.log(`objstore GC test: ${stored} log objects of 64 KiB for 2 MiB live, GC copied ${gauge(dev, "GC bytes")} bytes, live ratio ${gauge(dev, "live ratio").toFixed(2)}, uploaded ${gauge(dev, "uploaded")}`);
    // Live data 2 MiB in 64 KiB objects: at most 1/threshold of it, plus the head of the log not yet compacted.
    expect(stored * 64 * 1024).toBeLessThanOrEqual(size / 0.5 + 32 * 64 * 1024);
    expect(gauge(dev, "GC bytes")).toBeGreaterThan(0);
    expect(gauge(dev, "live ratio")).toBeGreaterThan(0.5);
    expectSameBytes(await read(dev, 0, size), model, "after GC, this machine");
    await dev.close();
    const cold = await v.open(v.machine("b"));
    expectSameBytes(await read(cold, 0, size), model, "after GC, from the store alone");
    await cold.close();
  });
});

describe("objstore: the log in the store", () => {
  test("a write larger than an object is applied whole or not at all when the store lacks its last object", async () => {
    const v = volume({ objectSize: 64 * 1024, flushMode: "remote" });
    const dev = await v.open(v.machine("a"), { size: 4 * MiB });
    await dev.write(0, pattern(4096, 1));
    await dev.flush();
    await dev.write(4096, pattern(200 * 1024, 2));
    await dev.flush();
    await dev.close();
    // Remove the last log object of the big write: the store now ends inside it.
    const logKeys = (await keys(v.store, logPrefix(v.name))).sort();
    await v.store.delete(logKeys.at(-1)!);
    for (const key of await keys(v.store, checkpointPrefix(v.name))) await v.store.delete(key);
    const cold = await v.open(v.machine("b"), { readOnly: true });
    expectSameBytes(await read(cold, 0, 4096), pattern(4096, 1), "the first write");
    expect(isAllZero(await read(cold, 4096, 200 * 1024))).toBe(true);
    await cold.close();
  });

  test("a volume of the old segment format is refused with a message; so is a cache of it", async () => {
    const v = volume();
    fs.mkdirSync(path.join(v.objects, v.name), { recursive: true });
    await v.store.put(manifestKey(v.name), new TextEncoder().encode(JSON.stringify({ format: 1, volumeId: "00".repeat(16) })));
    await expect(v.open(v.machine("a"))).rejects.toThrow(/segment format \(manifest format 1\)/);
    const w = volume();
    const home = w.machine("a");
    const { Database } = await import("bun:sqlite");
    const db = new Database(path.join(home, `${w.name}.objstore.db`), { create: true });
    db.exec("CREATE TABLE segments(id INTEGER PRIMARY KEY, slot INTEGER, dirty INTEGER, generation INTEGER, etag TEXT)");
    db.close();
    await expect(w.open(home, { size: MiB })).rejects.toThrow(/segment format of an earlier usbd-tui/);
  });

  test("leases, checkpoints and log objects are where the format says; nothing is ever overwritten", async () => {
    const v = volume({ flushMode: "remote" });
    const dev = await v.open(v.machine("a"), { size: 4 * MiB });
    await dev.write(0, pattern(300 * 1024, 1));
    await dev.flush();
    const seen = new Map<string, string>();
    for (const info of await Array.fromAsync(v.store.list(`${v.name}/`))) seen.set(info.key, info.etag);
    await dev.write(0, pattern(300 * 1024, 2));
    await dev.close();
    for await (const info of v.store.list(`${v.name}/`)) {
      if (info.key.includes("/lease/")) continue;
      const before = seen.get(info.key);
      if (before !== undefined) expect({ key: info.key, etag: info.etag }).toEqual({ key: info.key, etag: before });
    }
    expect(await keys(v.store, leasePrefix(v.name))).toEqual([`${v.name}/lease/00000001`, `${v.name}/lease/00000001.released`]);
    expect((await keys(v.store, logPrefix(v.name))).every((k) => /\/log\/[0-9a-f]{16}\.00000001$/.test(k))).toBe(true);
  });
});
