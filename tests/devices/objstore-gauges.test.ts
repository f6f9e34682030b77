// The objstore's gauges for the dashboard follow what the volume does: dirty bytes and the upload backlog while the
// store holds uploads back, log objects and the live ratio once stored, the GC's copies, and the running write
// amplification (bytes uploaded, checkpoints and GC copies included, over bytes written).
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import fs from "node:fs";
import { MiB } from "../conformance/index.ts";
import { countingStore, gauge, randomBytes, readCopy, tempDir, volumeMaker } from "./objstore-helpers.ts";
import { expectSameBytes } from "../conformance/helpers.ts";
import type { ObjstoreDevice } from "../../src/devices/objstore/index.ts";

setDefaultTimeout(60_000);
const dir = tempDir("objstore-gauges");
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const volume = volumeMaker(dir, `key:${"9b".repeat(32)}`, () => undefined);
const KiB = 1024;

async function until(what: string, holds: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!holds()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await Bun.sleep(10);
  }
}

describe("objstore: the dashboard's gauges", () => {
  test("dirty bytes, upload backlog, log objects, live ratio, GC bytes and write amplification follow the volume", async () => {
    // The GC is off (threshold 0) at first, so that the dead third below stays in the store to be seen.
    const v = volume({ objectSize: 256 * KiB, flushEvery: 3600, flushMode: "remote" });
    // Uploads of log objects wait while `held` is set: the store is slow.
    let release: (() => void) | undefined;
    let held: Promise<void> | undefined;
    const { store } = countingStore(v.store, (key) => (key.includes("/log/") ? held : undefined));
    let dev: ObjstoreDevice = await v.open(v.machine("a"), { size: 4 * MiB, store, gcThreshold: 0 });
    expect(gauge(dev, "dirty bytes")).toBe(0);
    expect(gauge(dev, "log objects")).toBe(0);
    expect(gauge(dev, "write amplification")).toBe(0);

    held = new Promise<void>((resolve) => (release = resolve));
    const model = randomBytes(2 * MiB);
    await dev.write(0, model.subarray(0, MiB));
    expect(gauge(dev, "dirty bytes")).toBe(MiB);
    const flushed = dev.flush();
    await until("the sealed log objects to queue for upload", () => gauge(dev, "upload backlog") >= 1);
    expect(gauge(dev, "dirty bytes")).toBe(MiB);
    expect(gauge(dev, "log objects")).toBe(0);
    held = undefined;
    release!();
    await flushed;
    expect(gauge(dev, "dirty bytes")).toBe(0);
    expect(gauge(dev, "upload backlog")).toBe(0);
    expect(gauge(dev, "log objects")).toBe(4);
    expect(gauge(dev, "live ratio")).toBe(1);
    // Random data does not compress: each object is its data plus a header and tags, and the flush's checkpoint.
    const afterFirst = gauge(dev, "write amplification");
    expect(afterFirst).toBeGreaterThanOrEqual(1);
    expect(afterFirst).toBeLessThan(1.1);
    expect(afterFirst).toBeCloseTo(gauge(dev, "uploaded") / MiB, 6);

    // Half of every object overwritten: a third of what the store holds is dead.
    for (let at = 0; at < MiB; at += 256 * KiB) {
      const half = randomBytes(128 * KiB);
      await dev.write(at, half);
      model.set(half, at);
    }
    await dev.flush();
    expect(gauge(dev, "log objects")).toBe(6);
    expect(gauge(dev, "live ratio")).toBeCloseTo(2 / 3, 2);
    expect(gauge(dev, "GC bytes")).toBe(0);
    await dev.close();

    // Reopened with the GC on (threshold 0.9): the four half-dead objects are compacted, their live halves copied.
    dev = await v.open(v.machine("a"), { store, gcThreshold: 0.9 });
    await dev.write(MiB, model.subarray(MiB, 2 * MiB));
    await dev.reclaim();
    expect(gauge(dev, "GC bytes")).toBe(512 * KiB);
    expect(gauge(dev, "live ratio")).toBe(1);
    // 1 MiB written in this session, 1.5 MiB uploaded at least (its own data and the GC's copies).
    expect(gauge(dev, "write amplification")).toBeCloseTo(gauge(dev, "uploaded") / MiB, 6);
    expect(gauge(dev, "write amplification")).toBeGreaterThan(1.5);
    expectSameBytes(await readCopy(dev, 0, 2 * MiB), model, "the volume after GC");
    await dev.close();
  });
});
