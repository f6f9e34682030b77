// Reads of data the cache does not hold: a cold random 4 KiB read costs one ranged GET of the log object; a
// sequential stream is read ahead of itself, a lone read is not; NBD_CMD_CACHE (the device's cache()) fetches a range
// before it is read.
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import fs from "node:fs";
import { WorkerLostError } from "../../src/devices/objstore/codec/offloaded-codec.ts";
import { openObjectStore, parseObjectStoreConfig } from "../../src/devices/objstore/store/config.ts";
import type { ObjectStore } from "../../src/devices/objstore/store/types.ts";
import { expectSameBytes } from "../conformance/helpers.ts";
import { MiB } from "../conformance/index.ts";
import { startS3Server, type S3Server } from "../helpers/s3-server.ts";
import { backendOptions, countingStore, randomBytes, readCopy, tempDir, volumeMaker } from "./objstore-helpers.ts";

setDefaultTimeout(60_000);
const dir = tempDir("objstore-reads");
let server: S3Server;
beforeAll(async () => {
  server = await startS3Server();
});
afterAll(async () => {
  await server.cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
});

const volume = volumeMaker(dir, `key:${"5e".repeat(32)}`, () => server);
const read = readCopy;

/** `inner` with its GETs counted and the ones still running known, so a test can wait until fetches are done. */
function watchedStore(inner: ObjectStore) {
  const { store, counts } = countingStore(inner);
  let running = 0;
  const get = store.get.bind(store);
  store.get = (key, range) => {
    running++;
    return get(key, range).finally(() => running--);
  };
  /** Resolves once no GET has run for 100 ms (background read-ahead finished). */
  const settled = async () => {
    let quietSince = Date.now();
    let seen = counts.gets;
    while (Date.now() - quietSince < 100) {
      await Bun.sleep(10);
      if (running > 0 || counts.gets !== seen) {
        seen = counts.gets;
        quietSince = Date.now();
      }
    }
  };
  return { store, counts, settled };
}

/** A read's bytes copied in the turn the read returns them (a result served from the cache is a reused buffer's view). */
function copyInTurn(result: Uint8Array | Promise<Uint8Array>): Uint8Array | Promise<Uint8Array> {
  return result instanceof Promise ? result.then((b) => b.slice()) : result.slice();
}

/** A 16 MiB volume of random data in 1 MiB log objects, written and closed: every later open of it is cold. */
async function filledVolume(backend: "local" | "s3") {
  const v = volume({ objectSize: MiB }, backend);
  const size = 16 * MiB;
  const data = randomBytes(size);
  const dev = await v.open(v.machine("a"), { size });
  await dev.write(0, data);
  await dev.close();
  return { v, data };
}

describe("objstore: reads from the store", () => {
  test("cold random 4 KiB reads cost one ranged GET each; NBD_CMD_CACHE fetches a range before it is read", async () => {
    const { v, data } = await filledVolume("s3");
    const real = openObjectStore("s3", parseObjectStoreConfig(backendOptions("s3", "", server).config), { localPath: "/nonexistent" });
    const { store, counts } = countingStore(real);
    const cold = await v.open(v.machine("b"), { store });
    const before = counts.ranged;
    const offsets = [3, 900, 1777, 2500, 3100, 3999].map((block) => block * 4096 + 128);
    for (const offset of offsets) expectSameBytes(await read(cold, offset, 4096 - 256), data.subarray(offset, offset + 4096 - 256), `block at ${offset}`);
    expect(counts.ranged - before).toBe(offsets.length);
    // The same blocks again: from the cache, no GET.
    for (const offset of offsets) await read(cold, offset, 100);
    expect(counts.ranged - before).toBe(offsets.length);
    await cold.cache(8 * MiB, MiB);
    const afterCache = counts.ranged;
    expect(afterCache).toBeGreaterThan(before + offsets.length);
    expectSameBytes(await read(cold, 8 * MiB, MiB), data.subarray(8 * MiB, 9 * MiB), "prefetched");
    expect(counts.ranged).toBe(afterCache);
    await cold.close();
  });

  test("sequential cold reads are read ahead: once two reads follow each other, the next ones need no fetch; a lone read fetches only itself", async () => {
    const { v, data } = await filledVolume("local");
    const step = 256 * 1024;

    const lone = watchedStore(v.store);
    const a = await v.open(v.machine("lone"), { store: lone.store });
    expectSameBytes(await read(a, 8 * MiB, step), data.subarray(8 * MiB, 8 * MiB + step), "a lone read");
    await lone.settled();
    // Nothing was fetched ahead of it: the read right after it must wait for the store (a promise, not bytes).
    const next = a.read(8 * MiB + step, step);
    expect(next instanceof Promise).toBe(true);
    expectSameBytes((await next).slice(), data.subarray(8 * MiB + step, 8 * MiB + 2 * step), "the read after it");
    await a.close();

    const stream = watchedStore(v.store);
    const b = await v.open(v.machine("stream"), { store: stream.store });
    await read(b, 0, step);
    await read(b, step, step);
    await stream.settled();
    // The read-ahead window after two sequential reads is at least 2 MiB: the next reads are served from the cache
    // at once (a synchronous result), and what they return is the volume's data.
    for (let at = 2 * step; at < 2 * step + 2 * MiB; at += step) {
      const got = b.read(at, step);
      expect(got instanceof Promise).toBe(false);
      expectSameBytes((await got).slice(), data.subarray(at, at + step), `sequential read at ${at}`);
    }
    // And the stream keeps going: read to the end, everything intact.
    for (let at = 2 * step + 2 * MiB; at < data.length; at += step) expectSameBytes(await read(b, at, step), data.subarray(at, at + step), `read at ${at}`);
    await b.close();
  });

  // A stand-in for the seal worker dying with the fetched bytes handed to it: a real worker cannot be made to die
  // at that moment, so the codec's decode throws the error OffloadedCodec throws then, once.
  test("chunks lost with a worker that died opening them are fetched again: the read gets its bytes", async () => {
    const { v, data } = await filledVolume("local");
    const watched = watchedStore(v.store);
    const dev = await v.open(v.machine("lost"), { store: watched.store });
    const codec = dev.runtime.v.codec;
    const decode = codec.decodeChunks.bind(codec);
    let lost = 0;
    codec.decodeChunks = (...args) => (lost++ === 0 ? Promise.reject(new WorkerLostError("opening chunks of object 1: the sealing worker failed (test)")) : decode(...args));
    const before = watched.counts.ranged;
    expectSameBytes(await read(dev, 5 * MiB, 4096), data.subarray(5 * MiB, 5 * MiB + 4096), "the read after the lost worker");
    expect({ decodes: lost, gets: watched.counts.ranged - before }).toEqual({ decodes: 2, gets: 2 });
    await dev.close();
  });

  test("a sequential cold read of a volume written sequentially costs one GET per log object, at QD1 and at QD8", async () => {
    const { v, data } = await filledVolume("local");
    const step = 256 * 1024;
    for (const depth of [1, 8]) {
      const watched = watchedStore(v.store);
      const dev = await v.open(v.machine(`seq${depth}`), { store: watched.store });
      const opening = watched.counts.ranged;
      for (let at = 0; at < data.length; at += depth * step) {
        const batch = Array.from({ length: depth }, (_, i) => at + i * step).filter((o) => o < data.length);
        const got = await Promise.all(batch.map((o) => copyInTurn(dev.read(o, step))));
        got.forEach((bytes, i) => expectSameBytes(bytes, data.subarray(batch[i]!, batch[i]! + step), `QD${depth} read at ${batch[i]}`));
      }
      await watched.settled();
      // 16 objects of 1 MiB; the first read, not yet known to be sequential, fetches only itself (one GET more).
      expect({ depth, gets: watched.counts.ranged - opening }).toEqual({ depth, gets: 17 });
      await dev.close();
    }
  });
});
