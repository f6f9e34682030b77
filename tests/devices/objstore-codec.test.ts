// The objstore codec: log objects and checkpoints (chunks compressed and sealed one by one, ranged reads, integrity),
// the map pages they carry, the volume key and the manifest.
import { afterAll, describe, expect, test } from "bun:test";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { decodeCheckpoint, encodeCheckpoint } from "../../src/devices/objstore/codec/checkpoint.ts";
import { deriveVolumeKeys, KeyError, resolveVolumeKey } from "../../src/devices/objstore/codec/keys.ts";
import {
  chunkSpan,
  FLAG_CONTINUED,
  KIND_CHECKPOINT,
  KIND_LOG,
  LogObjectError,
  ObjectCodec,
  objectBytes,
  PREAMBLE_BYTES,
  type LogExtent,
} from "../../src/devices/objstore/codec/log-object.ts";
import { checkVolumeKey, createManifest, decodeManifest, encodeManifest, OldFormatError, volumeIdBytes, type Manifest } from "../../src/devices/objstore/codec/manifest.ts";
import { AES_MODES, OBJSTORE_COMPRESSIONS, type AesMode, type ObjstoreCompression } from "../../src/devices/objstore/layout.ts";
import { MapPage, type MapPiece } from "../../src/devices/objstore/map-page.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "usbd-objstore-codec-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const CHUNK = 64 * 1024;
const masterKey = new Uint8Array(crypto.randomBytes(32));
const keys = deriveVolumeKeys(masterKey);
const volumeId = new Uint8Array(crypto.randomBytes(16));

function codec(compression: ObjstoreCompression, encryption: AesMode, more: { keys?: typeof keys } = {}): ObjectCodec {
  return new ObjectCodec({ compression, encryption, keys: more.keys ?? keys, chunkSize: CHUNK });
}

function random(length: number): Uint8Array {
  return new Uint8Array(crypto.randomBytes(length));
}

function text(length: number): Uint8Array {
  const lines = Array.from({ length: Math.ceil(length / 20) }, (_, i) => `line ${i} of a log\n`).join("");
  return new TextEncoder().encode(lines).subarray(0, length);
}

/** A data area of random and compressible halves, and extents that use parts of it and zero some ranges. */
function sample(length: number): { data: Uint8Array; extents: LogExtent[] } {
  const data = new Uint8Array(length);
  data.set(random(Math.floor(length / 2)), 0);
  data.set(text(length - Math.floor(length / 2)), Math.floor(length / 2));
  const extents: LogExtent[] = [
    { offset: 1 << 30, length: 4096, pos: 0, zero: false },
    { offset: 5000, length: length - 4096, pos: 4096, zero: false },
    { offset: 3 * 2 ** 30, length: 1 << 20, pos: 0, zero: true },
  ];
  return { data, extents };
}

const id = (seq: number, epoch = 3, kind = KIND_LOG) => ({ volumeId, kind, seq, epoch });

/** Asserts that `promise` rejects with a LogObjectError whose message contains `fragment`. */
async function rejects(promise: Promise<unknown>, fragment?: string): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(LogObjectError);
  if (fragment !== undefined) expect((error as Error).message).toContain(fragment);
}

const noMore = () => Promise.reject(new Error("no more bytes"));
const combos = OBJSTORE_COMPRESSIONS.flatMap((c) => AES_MODES.map((e) => [c, e] as const));

describe("log objects: round trips", () => {
  for (const [compression, encryption] of combos) {
    test(`${compression} + ${encryption}: header, every chunk range, and the whole data area`, async () => {
      const c = codec(compression, encryption);
      const { data, extents } = sample(5 * CHUNK + 1234);
      const { body, layout } = await c.encode({ ...id(42), flags: FLAG_CONTINUED }, extents, data);
      expect(objectBytes(layout)).toBe(body.length);
      const back = await c.decodeHeader(body.subarray(0, 200), id(42), async (offset, length) => body.slice(offset, offset + length));
      expect(back.extents).toEqual(extents);
      expect(back.flags).toBe(FLAG_CONTINUED);
      expect(back.layout.chunks).toEqual(layout.chunks);
      expect(back.layout.dataStart).toBe(layout.dataStart);
      for (const [first, last] of [[0, 0], [2, 3], [5, 5], [0, 5]] as const) {
        const span = chunkSpan(layout, first, last);
        const plain = await c.decodeChunks(volumeId, back.layout, first, body.subarray(span.offset, span.offset + span.length));
        expect(Buffer.from(plain).equals(Buffer.from(data.subarray(first * CHUNK, Math.min(data.length, (last + 1) * CHUNK))))).toBe(true);
      }
    });
  }

  test("an object of zero extents only has no chunks", async () => {
    const c = codec("lz4", "aes-gcm");
    const zeros: LogExtent[] = [{ offset: 0, length: 1 << 20, pos: 0, zero: true }];
    const { body, layout } = await c.encode(id(7), zeros, new Uint8Array(0));
    expect(layout.chunks.length).toBe(0);
    expect((await c.decodeHeader(body, id(7), noMore)).extents).toEqual(zeros);
  });

  test("compressible chunks are stored smaller, random ones as they are; two encodes differ (fresh salt)", async () => {
    const c = codec("lz4", "aes-gcm");
    const compressible = (await c.encode(id(1), [], text(4 * CHUNK))).body;
    const incompressible = (await c.encode(id(1), [], random(4 * CHUNK))).body;
    expect(compressible.length).toBeLessThan(CHUNK);
    expect(incompressible.length).toBeGreaterThan(4 * CHUNK);
    expect(incompressible.length).toBeLessThan(4 * CHUNK + 4096);
    const again = (await c.encode(id(1), [], text(4 * CHUNK))).body;
    expect(Buffer.from(again).equals(Buffer.from(compressible))).toBe(false);
  });
});

describe("log objects: integrity", () => {
  for (const encryption of AES_MODES) {
    test(`${encryption}: a flipped byte in the header or a chunk fails; misplaced objects and chunks are refused`, async () => {
      const c = codec("lz4", encryption);
      const { data, extents } = sample(3 * CHUNK);
      const { body, layout } = await c.encode(id(9), extents, data);
      const header = body.slice();
      header[PREAMBLE_BYTES + 5]! ^= 1;
      await rejects(c.decodeHeader(header, id(9), noMore));
      const span = chunkSpan(layout, 1, 1);
      const chunk = body.slice(span.offset, span.offset + span.length);
      chunk[chunk.length >> 1]! ^= 1;
      await rejects(c.decodeChunks(volumeId, layout, 1, chunk), "chunk 1");
      const good = body.subarray(span.offset, span.offset + span.length);
      // The same bytes read as another chunk, another object, another epoch or another volume.
      await rejects(c.decodeChunks(volumeId, layout, 2, good.subarray(0, chunkSpan(layout, 2, 2).length)));
      await rejects(c.decodeChunks(volumeId, { ...layout, seq: 10 }, 1, good));
      await rejects(c.decodeChunks(volumeId, { ...layout, epoch: 4 }, 1, good));
      await rejects(c.decodeChunks(new Uint8Array(16), layout, 1, good));
      await rejects(c.decodeHeader(body, id(10), noMore), "misplaced");
      await rejects(c.decodeHeader(body, { ...id(9), volumeId: new Uint8Array(16) }, noMore), "another volume");
      await rejects(c.decodeHeader(body, id(9, 3, KIND_CHECKPOINT), noMore), "misplaced");
    });
  }

  test("a wrong key fails authentication; a weaker encryption mode is refused", async () => {
    const { data, extents } = sample(CHUNK);
    const { body } = await codec("identity", "aes-gcm").encode(id(1), extents, data);
    await rejects(codec("identity", "aes-gcm", { keys: deriveVolumeKeys(random(32)) }).decodeHeader(body, id(1), noMore), "GCM");
    const plain = (await codec("identity", "identity").encode(id(1), extents, data)).body;
    await rejects(codec("identity", "aes-gcm").decodeHeader(plain, id(1), noMore), "encrypted with identity");
  });

  test("an object of the old segment format and a newer version are named", async () => {
    const old = new TextEncoder().encode("USBDSEG1".padEnd(100, "x"));
    await rejects(codec("identity", "identity").decodeHeader(old, id(1), noMore), "old segment format");
    const { body } = await codec("identity", "identity").encode(id(1), [], new Uint8Array(10));
    const newer = body.slice();
    newer[8] = 9;
    await rejects(codec("identity", "identity").decodeHeader(newer, id(1), noMore), "newer usbd-tui");
  });
});

describe("map pages and checkpoints", () => {
  const pieces = (page: MapPage, start = 0, end = 1 << 20): MapPiece[] => {
    const out: MapPiece[] = [];
    page.pieces(0, start, end, out);
    return out.filter((p) => p.kind !== "hole");
  };

  test("overwrites split and merge extents, and live bytes follow every change", () => {
    const live = new Map<number, number>();
    const adjust = (seq: number, delta: number) => live.set(seq, (live.get(seq) ?? 0) + delta);
    const page = new MapPage();
    page.set(0, 100_000, 1, 0, false, adjust);
    page.set(10_000, 20_000, 2, 500, false, adjust);
    page.set(15_000, 30_000, 3, 0, true, adjust);
    page.set(20_000, 25_000, 2, 10_500, false, adjust);
    expect(pieces(page)).toEqual([
      { offset: 0, length: 10_000, kind: "data", seq: 1, pos: 0 },
      { offset: 10_000, length: 5_000, kind: "data", seq: 2, pos: 500 },
      { offset: 15_000, length: 5_000, kind: "zero", seq: 3, pos: 0 },
      { offset: 20_000, length: 5_000, kind: "data", seq: 2, pos: 10_500 },
      { offset: 25_000, length: 5_000, kind: "zero", seq: 3, pos: 0 },
      { offset: 30_000, length: 70_000, kind: "data", seq: 1, pos: 30_000 },
    ]);
    expect(Object.fromEntries(live)).toEqual({ 1: 80_000, 2: 10_000 });
    // Contiguous data of one object merges back into one extent.
    page.set(15_000, 20_000, 2, 5_500, false, adjust);
    expect(pieces(page, 10_000, 25_000)).toEqual([{ offset: 10_000, length: 15_000, kind: "data", seq: 2, pos: 500 }]);
    expect(page.count).toBe(4);
    const copy = MapPage.unpack(page.pack(), "test");
    expect(pieces(copy)).toEqual(pieces(page));
    expect(() => MapPage.unpack(page.pack().subarray(0, 30), "test")).toThrow("not whole entries");
  });

  test("a checkpoint's objects and pages survive encode and decode", async () => {
    const page = new MapPage();
    page.set(0, 4096, 5, 0, false, () => {});
    page.set(8192, 9000, 6, 0, true, () => {});
    const c = codec("lz4", "aes-gcm");
    const { layout } = await c.encode(id(5), [], random(3 * CHUNK));
    const content = { objects: [{ seq: 5, epoch: 3, dataLength: 3 * CHUNK, live: 4096, layout }], pages: [[7, page] as [number, MapPage]] };
    const back = decodeCheckpoint(encodeCheckpoint(content), "cp");
    expect(back.objects[0]!.layout.chunks).toEqual(layout.chunks);
    expect(back.objects[0]!.live).toBe(4096);
    expect(pieces(back.pages[0]![1])).toEqual(pieces(page));
    expect(() => decodeCheckpoint(encodeCheckpoint(content).subarray(0, 50), "cp")).toThrow("cp: truncated");
  });
});

describe("volume key", () => {
  let n = 0;
  const storeDir = () => {
    const d = path.join(dir, `store-${n++}`);
    fs.mkdirSync(d);
    return d;
  };
  const hexKey = Buffer.from(masterKey).toString("hex");
  const b64Key = Buffer.from(masterKey).toString("base64");
  const resolve = (spec: string | undefined, more: { mode?: AesMode; creating?: boolean; storeDir?: string } = {}) =>
    resolveVolumeKey({ spec, mode: more.mode ?? "aes-gcm", storeDir: more.storeDir ?? storeDir(), creating: more.creating ?? false, volume: "v" });
  const same = (key: Uint8Array | undefined) => expect(Buffer.from(key ?? []).equals(Buffer.from(masterKey))).toBe(true);
  /** The KeyError thrown by `run`, checked not to reveal any form of `secret`. */
  const keyError = (run: () => unknown, secret?: string): KeyError => {
    let caught: unknown;
    try {
      run();
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(KeyError);
    if (secret !== undefined) expect((caught as Error).message).not.toContain(secret);
    return caught as KeyError;
  };

  test("key: hex and base64, env:, file: raw and text", () => {
    same(resolve(`key:${hexKey}`));
    same(resolve(`key:${hexKey.toUpperCase()}`));
    same(resolve(`key:${b64Key}`));
    same(resolve(`key:${Buffer.from(masterKey).toString("base64url")}`));
    process.env.USBD_TEST_AES_KEY = `${b64Key}\n`;
    same(resolve("env:USBD_TEST_AES_KEY"));
    delete process.env.USBD_TEST_AES_KEY;
    const d = storeDir();
    for (const [name, body] of [["raw", masterKey], ["hex", `${hexKey}\n`], ["b64", b64Key], ["crlf", `${hexKey}\r\n`]] as const) {
      fs.writeFileSync(path.join(d, name), body, { mode: 0o600 });
      same(resolve(`file:${path.join(d, name)}`));
    }
  });

  test("a new encrypted volume without a key gets a generated key.aes (0600), reused afterwards", () => {
    const d = storeDir();
    const key = resolve(undefined, { storeDir: d, creating: true });
    expect(key?.length).toBe(32);
    const file = path.join(d, "key.aes");
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(Buffer.from(fs.readFileSync(file)).equals(Buffer.from(key!))).toBe(true);
    expect(Buffer.from(resolve(undefined, { storeDir: d })!).equals(Buffer.from(key!))).toBe(true);
    expect(Buffer.from(resolve(undefined, { storeDir: d, creating: true })!).equals(Buffer.from(key!))).toBe(true);
  });

  test("a key file others can read is refused, naming chmod 600", () => {
    const d = storeDir();
    const file = path.join(d, "key.aes");
    fs.writeFileSync(file, masterKey);
    fs.chmodSync(file, 0o644);
    expect(keyError(() => resolve(undefined, { storeDir: d }), hexKey).message).toContain("chmod 600");
    fs.chmodSync(file, 0o640);
    expect(keyError(() => resolve(`file:${file}`), hexKey).message).toContain("chmod 600");
  });

  test("an existing encrypted volume without a key: a clear error, and nothing is generated", () => {
    const d = storeDir();
    const message = keyError(() => resolve(undefined, { storeDir: d, mode: "aes-ctr" })).message;
    expect(message).toContain("encrypted");
    expect(message).toContain("key.aes");
    expect(message).toContain("machine that created");
    expect(message).toContain("--objstore-aeskey");
    expect(fs.existsSync(path.join(d, "key.aes"))).toBe(false);
  });

  test("identity: no key, and a key spec is an error", () => {
    expect(resolve(undefined, { mode: "identity", creating: true })).toBeUndefined();
    expect(keyError(() => resolve(`key:${hexKey}`, { mode: "identity" }), hexKey).message).toContain("not encrypted");
  });

  test("malformed specs are refused without echoing the key material", () => {
    const d = storeDir();
    const cases: [string, string | undefined][] = [
      [`key:${hexKey.slice(1)}`, hexKey.slice(1)],
      [`key:${hexKey}00`, hexKey],
      [`key:${Buffer.from(masterKey.subarray(1)).toString("base64")}`, Buffer.from(masterKey.subarray(1)).toString("base64")],
      [`key:${hexKey.slice(0, 30)}!!${hexKey.slice(32)}`, hexKey.slice(0, 30)],
      [hexKey, hexKey],
      [`aes:${hexKey}`, hexKey],
      ["key:", undefined],
      ["file:", undefined],
      [`file:${path.join(d, "missing")}`, undefined],
      ["env:NOT-A-NAME", undefined],
      ["env:USBD_TEST_NO_SUCH_VARIABLE", undefined],
    ];
    for (const [spec, secret] of cases) keyError(() => resolve(spec), secret);
    const short = path.join(d, "short");
    fs.writeFileSync(short, `${hexKey.slice(2)}\n`, { mode: 0o600 });
    keyError(() => resolve(`file:${short}`), hexKey.slice(2));
    process.env.USBD_TEST_AES_KEY = b64Key.slice(4);
    keyError(() => resolve("env:USBD_TEST_AES_KEY"), b64Key.slice(4));
    delete process.env.USBD_TEST_AES_KEY;
  });

  test("subkeys differ from each other and from the master key", () => {
    const all = [masterKey, keys.encryption, keys.mac, keys.check].map((k) => Buffer.from(k).toString("hex"));
    expect(new Set(all).size).toBe(4);
    expect(Buffer.from(deriveVolumeKeys(masterKey).mac).equals(Buffer.from(keys.mac))).toBe(true);
  });
});

describe("manifest", () => {
  const base = () => createManifest({ size: 10 * 1024 * 1024 + 512, objectSize: 4 * 1024 * 1024, compression: "lz4", encryption: "aes-gcm", keys });
  const withField = (m: Manifest, field: string, value: unknown) => new TextEncoder().encode(JSON.stringify({ ...m, [field]: value }));

  test("round trip, readable JSON, key check", () => {
    const m = base();
    const bytes = encodeManifest(m);
    expect(new TextDecoder().decode(bytes)).toContain('"objectSize": 4194304');
    const back = decodeManifest(bytes, "test");
    expect(back).toEqual(m);
    expect(volumeIdBytes(back).length).toBe(16);
    checkVolumeKey(back, keys, "v");
    const plain = createManifest({ size: 1 << 20, objectSize: 1 << 16, compression: "identity", encryption: "identity" });
    expect(plain.keyCheck).toBeNull();
    checkVolumeKey(decodeManifest(encodeManifest(plain), "test"), undefined, "v");
  });

  test("a wrong key, a missing key and an altered size fail the key check", () => {
    const m = base();
    expect(() => checkVolumeKey(m, deriveVolumeKeys(random(32)), "v")).toThrow(/wrong key for volume v.*manifest was altered/);
    expect(() => checkVolumeKey(m, undefined, "v")).toThrow(KeyError);
    const grown = decodeManifest(withField(m, "size", m.size + 512), "test");
    expect(() => checkVolumeKey(grown, keys, "v")).toThrow(KeyError);
    const weaker = decodeManifest(withField(m, "encryption", "aes-ctr"), "test");
    expect(() => checkVolumeKey(weaker, keys, "v")).toThrow(KeyError);
  });

  test("each invalid field is rejected with a message naming it", () => {
    const m = base();
    const cases: [string, unknown][] = [
      ["format", 0],
      ["format", "1"],
      ["volumeId", "abc"],
      ["volumeId", m.volumeId.toUpperCase()],
      ["size", 0],
      ["size", 1000],
      ["size", -512],
      ["size", 2 ** 60],
      ["size", "1048576"],
      ["objectSize", 3 * 1024 * 1024],
      ["objectSize", 2048],
      ["objectSize", 2 ** 31],
      ["compression", "zstd"],
      ["encryption", "aes-cbc"],
      ["keyCheck", null],
      ["keyCheck", "00"],
      ["createdAt", "yesterday"],
      ["createdAt", undefined],
      ["chunkSize", 3000],
      ["chunkSize", 8 * 1024 * 1024],
      ["bases", "none"],
      ["origin", { volume: "x" }],
    ];
    for (const [field, value] of cases) {
      expect(() => decodeManifest(withField(m, field, value), "s3://bucket/v/manifest.json")).toThrow(`s3://bucket/v/manifest.json: manifest field "${field}"`);
    }
    const plain = createManifest({ size: 1 << 20, objectSize: 1 << 16, compression: "gzip", encryption: "identity" });
    expect(() => decodeManifest(withField(plain, "keyCheck", "0".repeat(64)), "m")).toThrow('"keyCheck"');
    expect(() => decodeManifest(new TextEncoder().encode("{ not json"), "m")).toThrow("not a usbd-tui manifest");
    expect(() => decodeManifest(new TextEncoder().encode("[1]"), "m")).toThrow("not a usbd-tui manifest");
    expect(() => decodeManifest(new Uint8Array([0xff, 0xfe]), "m")).toThrow("not a usbd-tui manifest");
  });

  test("a manifest from a newer format is refused as such, one of the old segment format as that; unknown extra fields are ignored", () => {
    const m = base();
    expect(() => decodeManifest(withField(m, "format", 3), "m")).toThrow("written by a newer usbd-tui");
    expect(() => decodeManifest(withField(m, "format", 1), "m")).toThrow(OldFormatError);
    expect(() => decodeManifest(withField(m, "format", 1), "m")).toThrow("segment format");
    expect(decodeManifest(withField(m, "comment", "hello"), "m")).toEqual(m);
  });

  test("a clone's origin is part of the key check", () => {
    const clone = createManifest({
      size: 1 << 20,
      objectSize: 1 << 16,
      compression: "lz4",
      encryption: "aes-gcm",
      keys,
      bases: [{ volume: "base", volumeId: "ab".repeat(16), upTo: 12 }],
      origin: { volume: "base", snapshot: "s1", seq: 12, epoch: 2 },
    });
    const back = decodeManifest(encodeManifest(clone), "m");
    expect(back).toEqual(clone);
    checkVolumeKey(back, keys, "c");
    const moved = decodeManifest(withField(clone, "bases", [{ volume: "base", volumeId: "ab".repeat(16), upTo: 13 }]), "m");
    expect(() => checkVolumeKey(moved, keys, "c")).toThrow(KeyError);
  });
});
