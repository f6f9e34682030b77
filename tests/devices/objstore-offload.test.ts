// The objstore codec's sealing and opening on the worker pool (OffloadedCodec): the same objects as inline, handed
// over without a copy, small jobs inline, errors as the inline codec throws them, an inline fallback when the worker
// cannot run, and (issue 19's acceptance) a device that answers READs while a big object is being sealed.
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { deriveVolumeKeys } from "../../src/devices/objstore/codec/keys.ts";
import { chunkSpan, KIND_LOG, LogObjectError, ObjectCodec, type LogExtent } from "../../src/devices/objstore/codec/log-object.ts";
import { OFFLOAD_MIN_BYTES, OffloadedCodec, WorkerLostError } from "../../src/devices/objstore/codec/offloaded-codec.ts";
import { AES_MODES, OBJSTORE_COMPRESSIONS, type AesMode, type ObjstoreCompression } from "../../src/devices/objstore/layout.ts";
import { LocalObjectStore } from "../../src/devices/objstore/store/local.ts";
import type { ObjectStore } from "../../src/devices/objstore/store/types.ts";
import { backendOptions, countingStore, openObjstoreDevice, tempDir } from "./objstore-helpers.ts";

setDefaultTimeout(30_000);
const CHUNK = 64 * 1024;
const keys = deriveVolumeKeys(new Uint8Array(crypto.randomBytes(32)));
const volumeId = new Uint8Array(crypto.randomBytes(16));
const codecs: ObjectCodec[] = [];
afterAll(() => codecs.forEach((c) => c.close()));

function make<C extends ObjectCodec>(c: C): C {
  codecs.push(c);
  return c;
}
const options = (compression: ObjstoreCompression, encryption: AesMode) => ({ compression, encryption, keys, chunkSize: CHUNK });
const id = (seq: number) => ({ volumeId, kind: KIND_LOG, seq, epoch: 3 });

/** 2:1 compressible bytes: random halves and a repeated phrase. */
function mixed(length: number): Uint8Array {
  const out = new Uint8Array(crypto.randomBytes(length));
  const phrase = new TextEncoder().encode("the serving thread keeps answering; ");
  for (let at = 0; at < length; at += 4096) for (let i = 2048; i < 4096 && at + i < length; i++) out[at + i] = phrase[i % phrase.length]!;
  return out;
}

async function openAll(c: ObjectCodec, body: Uint8Array, seq: number): Promise<Uint8Array> {
  const { layout } = await c.decodeHeader(body, id(seq), () => Promise.reject(new Error("no more")));
  const span = chunkSpan(layout, 0, layout.chunks.length - 1);
  return await c.decodeChunks(volumeId, layout, 0, body.subarray(span.offset, span.offset + span.length));
}

describe("objects sealed on a worker are the objects the inline codec makes", () => {
  for (const compression of OBJSTORE_COMPRESSIONS) {
    for (const encryption of AES_MODES) {
      test(`${compression} + ${encryption}: the inline codec opens what the worker sealed, and the other way round`, async () => {
        const off = make(new OffloadedCodec(options(compression, encryption)));
        const inline = new ObjectCodec(options(compression, encryption));
        const data = mixed(OFFLOAD_MIN_BYTES + 5 * CHUNK + 123);
        const extents: LogExtent[] = [{ offset: 4096, length: data.length, pos: 0, zero: false }];
        const { body } = await off.encode(id(11), extents, data);
        expect(off.offloaded).toBe(1);
        expect(await openAll(inline, body, 11)).toEqual(data);
        const again = await inline.encode(id(12), extents, data);
        expect(await openAll(off, again.body, 12)).toEqual(data);
        expect(off.offloaded).toBe(2);
      });
    }
  }

  test("a handed-over buffer moves to the worker (detached here); otherwise the worker gets a copy", async () => {
    const off = make(new OffloadedCodec(options("lz4", "aes-gcm")));
    const kept = mixed(OFFLOAD_MIN_BYTES);
    await off.encode(id(1), [], kept);
    expect(kept.length).toBe(OFFLOAD_MIN_BYTES);
    const given = mixed(OFFLOAD_MIN_BYTES);
    const copy = given.slice();
    const { body } = await off.encode(id(2), [], given, true);
    expect(given.length).toBe(0);
    expect(await openAll(off, body, 2)).toEqual(copy);
  });

  test("the MD5 a store sends along comes with the object, from the worker and inline, and only when asked for", async () => {
    const off = make(new OffloadedCodec(options("lz4", "aes-gcm")));
    const md5 = (b: Uint8Array) => new Uint8Array(crypto.createHash("md5").update(b).digest());
    const big = await off.encode(id(20), [], mixed(OFFLOAD_MIN_BYTES), true, true);
    const small = await off.encode(id(21), [], mixed(4096), true, true);
    const none = await off.encode(id(22), [], mixed(OFFLOAD_MIN_BYTES), true);
    expect({ big: big.md5, small: small.md5, none: none.md5, offloaded: off.offloaded }).toEqual({ big: md5(big.body), small: md5(small.body), none: undefined, offloaded: 2 });
  });

  test("a handed-over run of stored chunks moves to the worker to be opened (detached here); otherwise it is copied", async () => {
    const off = make(new OffloadedCodec(options("lz4", "aes-gcm")));
    const data = mixed(2 * OFFLOAD_MIN_BYTES);
    const { body } = await off.encode(id(23), [], data);
    const { layout } = await off.decodeHeader(body, id(23), () => Promise.reject(new Error("no more")));
    const span = chunkSpan(layout, 0, layout.chunks.length - 1);
    const kept = body.slice(span.offset, span.offset + span.length);
    expect(await off.decodeChunks(volumeId, layout, 0, kept)).toEqual(data);
    expect(kept.length).toBe(span.length);
    const given = body.slice(span.offset, span.offset + span.length);
    expect(await off.decodeChunks(volumeId, layout, 0, given, true)).toEqual(data);
    expect(given.length).toBe(0);
  });

  test("jobs under OFFLOAD_MIN_BYTES stay on the calling thread", async () => {
    const off = make(new OffloadedCodec(options("lz4", "aes-gcm")));
    const data = mixed(OFFLOAD_MIN_BYTES - 1);
    const { body } = await off.encode(id(3), [], data, true);
    expect(data.length).toBe(OFFLOAD_MIN_BYTES - 1);
    expect(off.offloaded).toBe(0);
    expect(await openAll(off, body, 3)).toEqual(data);
  });
});

describe("errors", () => {
  test("a tampered chunk opened on a worker fails as a LogObjectError, on one line", async () => {
    const off = make(new OffloadedCodec(options("lz4", "aes-gcm")));
    const data = mixed(2 * OFFLOAD_MIN_BYTES);
    const { body } = await off.encode(id(4), [], data);
    const { layout } = await off.decodeHeader(body, id(4), () => Promise.reject(new Error("no more")));
    const span = chunkSpan(layout, 0, layout.chunks.length - 1);
    const stored = body.slice(span.offset, span.offset + span.length);
    stored[stored.length - 100]! ^= 1;
    const e = await off.decodeChunks(volumeId, layout, 0, stored).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(LogObjectError);
    expect((e as Error).message).toMatch(/^object 4 chunk \d+: piece \d+: GCM tag mismatch/);
    expect((e as Error).message).not.toContain("\n");
    expect(off.offloaded).toBe(1);
  });

  test("a worker that cannot start: the job runs inline, and so does every later one; onInline hears it once", async () => {
    const broken = new URL("./no-such-seal-worker.ts", import.meta.url);
    const heard: string[] = [];
    const off = make(new OffloadedCodec({ ...options("gzip", "aes-ctr"), workerEntry: broken, onInline: (reason) => heard.push(reason) }));
    const data = mixed(OFFLOAD_MIN_BYTES);
    const { body } = await off.encode(id(5), [], data);
    expect(await openAll(new ObjectCodec(options("gzip", "aes-ctr")), body, 5)).toEqual(data);
    expect(off.offloaded).toBe(0);
    const given = mixed(OFFLOAD_MIN_BYTES);
    await off.encode(id(6), [], given, true);
    expect(given.length).toBe(OFFLOAD_MIN_BYTES);
    expect(heard).toHaveLength(1);
    expect(heard[0]).toMatch(/^the sealing worker failed \(.*\); sealing and opening objects on the serving thread from now on$/);
  });

  test("a handed-over object whose worker cannot start fails with a one-line error that says it is retried", async () => {
    const broken = new URL("./no-such-seal-worker.ts", import.meta.url);
    const off = make(new OffloadedCodec({ ...options("lz4", "aes-gcm"), workerEntry: broken }));
    const e = await off.encode(id(7), [], mixed(OFFLOAD_MIN_BYTES), true).catch((x: unknown) => x);
    expect((e as Error).message).toMatch(/^encoding object 7: the sealing worker failed \(.*\); sealing on the serving thread from now on, the upload is retried$/);
    const data = mixed(OFFLOAD_MIN_BYTES);
    await off.encode(id(8), [], data, true);
    expect(data.length).toBe(OFFLOAD_MIN_BYTES);
  });

  test("handed-over chunks whose worker cannot start: a WorkerLostError (the caller fetches them again), then inline", async () => {
    const data = mixed(2 * OFFLOAD_MIN_BYTES);
    const { body } = await new ObjectCodec(options("lz4", "aes-gcm")).encode(id(24), [], data);
    const broken = new URL("./no-such-seal-worker.ts", import.meta.url);
    const off = make(new OffloadedCodec({ ...options("lz4", "aes-gcm"), workerEntry: broken }));
    const { layout } = await off.decodeHeader(body, id(24), () => Promise.reject(new Error("no more")));
    const span = chunkSpan(layout, 0, layout.chunks.length - 1);
    const e = await off.decodeChunks(volumeId, layout, 0, body.slice(span.offset, span.offset + span.length), true).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(WorkerLostError);
    expect((e as Error).message).toMatch(/^opening chunks of object 24: the sealing worker failed \(.*\) with the bytes handed to it; opening on the serving thread from now on$/);
    const again = body.slice(span.offset, span.offset + span.length);
    expect(await off.decodeChunks(volumeId, layout, 0, again, true)).toEqual(data);
    expect(again.length).toBe(span.length);
  });
});

describe("the device answers READs while a large upload is being sealed", () => {
  const dir = tempDir("objstore-offload");
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  // No compression: the inline codec would seal a 64 MiB object in one synchronous stretch (AES-GCM over all of
  // it), so no read could be answered while it runs; on the worker, reads go on.
  test("reads of a cached block complete between the start and the end of sealing a 64 MiB object", async () => {
    const storeDir = path.join(dir, "cache");
    fs.mkdirSync(storeDir, { recursive: true });
    const dev = await openObjstoreDevice({
      storeDir, storeName: "busy", size: 256 * 2 ** 20, ...backendOptions("local", path.join(dir, "objects"), undefined),
      aesKey: `key:${"cd".repeat(32)}`, objectSize: 64 * 2 ** 20, compression: "identity", aesMode: "aes-gcm", flushEvery: 0, flushMode: "remote",
    });
    try {
      const codec = dev.runtime.v.codec as OffloadedCodec;
      const block = new Uint8Array(4096).fill(0x5a);
      await dev.write(200 * 2 ** 20, block);
      await dev.flush();
      const big = new Uint8Array(crypto.randomBytes(1024 * 1024));
      for (let i = 0; i < 63; i++) await dev.write(i * big.length, big);
      const sealed = codec.offloaded;
      let flushed = false;
      const flushing = dev.flush().then(() => void (flushed = true));
      while (codec.inFlight === 0 && !flushed) await Bun.sleep(0);
      let during = 0;
      while (codec.inFlight > 0) {
        const got = await dev.read(200 * 2 ** 20, 4096);
        // Answered while the same seal was still running: it had not finished before or while this read ran.
        if (codec.inFlight > 0 && codec.offloaded === sealed) {
          expect(got).toEqual(block);
          during++;
        }
        await Bun.sleep(0);
      }
      await flushing;
      expect(codec.offloaded).toBeGreaterThan(sealed);
      expect(during).toBeGreaterThan(3);
    } finally {
      await dev.close();
    }
  });
});

describe("uploads carry the MD5 computed with the seal", () => {
  const dir = tempDir("objstore-md5");
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  // The local store sends no digest; this one says it does (as S3 and Swift do) and records what put is given.
  test("a store that sends MD5s gets each log object's digest from the codec, and it is the digest of the bytes", async () => {
    const inner = new LocalObjectStore(path.join(dir, "objects"));
    const logPuts: Array<{ given: string | undefined; actual: string }> = [];
    const store: ObjectStore = {
      ...countingStore(inner).store,
      putDigest: "md5",
      async put(key, body, md5) {
        if (key.includes("/log/")) logPuts.push({ given: md5 === undefined ? undefined : Buffer.from(md5).toString("hex"), actual: crypto.createHash("md5").update(body).digest("hex") });
        return await inner.put(key, body);
      },
    };
    const storeDir = path.join(dir, "cache");
    fs.mkdirSync(storeDir, { recursive: true });
    const dev = await openObjstoreDevice({
      storeDir, storeName: "md5", size: 64 * 2 ** 20, store, aesKey: `key:${"ce".repeat(32)}`, objectSize: 2 ** 20, flushEvery: 0, flushMode: "remote",
    });
    try {
      await dev.write(0, mixed(3 * 2 ** 20));
      await dev.write(40 * 2 ** 20, mixed(4096));
      await dev.flush();
      expect(logPuts.length).toBeGreaterThanOrEqual(4);
      for (const p of logPuts) expect(p.given).toBe(p.actual);
    } finally {
      await dev.close();
    }
  });
});
