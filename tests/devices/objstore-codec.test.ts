// The objstore codec: segment objects (compression, encryption, integrity), the volume key and the manifest.
import { afterAll, describe, expect, test } from "bun:test";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { deriveVolumeKeys, KeyError, resolveVolumeKey, type VolumeKeys } from "../../src/devices/objstore/codec/keys.ts";
import { checkVolumeKey, createManifest, decodeManifest, encodeManifest, volumeIdBytes, type Manifest } from "../../src/devices/objstore/codec/manifest.ts";
import {
  ObjectIntegrityError,
  peekSegmentHeader,
  SEGMENT_HEADER_BYTES,
  SegmentCodec,
  trailerBytes,
} from "../../src/devices/objstore/codec/segment-object.ts";
import { AES_MODES, OBJSTORE_COMPRESSIONS, type AesMode, type ObjstoreCompression } from "../../src/devices/objstore/layout.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "usbd-objstore-codec-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const SEGMENT = 256 * 1024;
const masterKey = new Uint8Array(crypto.randomBytes(32));
const keys = deriveVolumeKeys(masterKey);
const volumeId = new Uint8Array(crypto.randomBytes(16));

function codec(compression: ObjstoreCompression, encryption: AesMode, more: { keys?: VolumeKeys; volumeId?: Uint8Array } = {}): SegmentCodec {
  return new SegmentCodec({ compression, encryption, keys: more.keys ?? keys, volumeId: more.volumeId ?? volumeId, segmentSize: SEGMENT });
}

function random(length: number): Uint8Array {
  return new Uint8Array(crypto.randomBytes(length));
}

function text(length: number): Uint8Array {
  const lines = Array.from({ length: Math.ceil(length / 20) }, (_, i) => `line ${i} of a log\n`).join("");
  return new TextEncoder().encode(lines).subarray(0, length);
}

/** Data, then zeros to the end of the segment: the common shape of a segment of a new filesystem. */
function zeroTail(): Uint8Array {
  const out = new Uint8Array(SEGMENT);
  out.set(random(1000), 5000);
  return out;
}

/** Asserts that `promise` rejects with an ObjectIntegrityError whose message contains `fragment`. */
async function rejectsIntegrity(promise: Promise<unknown>, fragment?: string): Promise<ObjectIntegrityError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ObjectIntegrityError);
  if (fragment !== undefined) expect((error as Error).message).toContain(fragment);
  return error as ObjectIntegrityError;
}

const combos = OBJSTORE_COMPRESSIONS.flatMap((c) => AES_MODES.map((e) => [c, e] as const));

describe("segment objects: round trips", () => {
  const inputs: [string, () => Uint8Array][] = [
    ["random", () => random(SEGMENT)],
    ["compressible", () => text(SEGMENT)],
    ["zero tail", zeroTail],
    ["empty", () => new Uint8Array(0)],
    ["all zero", () => new Uint8Array(SEGMENT)],
    ["short, odd length", () => random(777)],
  ];
  for (const [compression, encryption] of combos) {
    test(`${compression} + ${encryption}`, async () => {
      const c = codec(compression, encryption);
      for (const [name, make] of inputs) {
        const plain = make();
        const object = await c.encode(plain, 3, 9);
        const { plain: back, generation } = await c.decode(object, 3, { minGeneration: 9 });
        expect(generation).toBe(9);
        expect(back.length).toBe(SEGMENT);
        const expected = new Uint8Array(SEGMENT);
        expected.set(plain);
        expect(Buffer.from(back).equals(Buffer.from(expected)), `${name} differs after the round trip`).toBe(true);
      }
    });
  }

  test("the decoded plaintext shares no memory with the object", async () => {
    const c = codec("identity", "identity");
    const object = await c.encode(random(SEGMENT), 0, 0);
    const { plain } = await c.decode(object, 0);
    expect(plain.buffer).not.toBe(object.buffer);
  });

  test("a plaintext larger than the segment is refused", async () => {
    await expect(codec("lz4", "aes-gcm").encode(new Uint8Array(SEGMENT + 1), 0, 0)).rejects.toThrow("exceed");
  });
});

describe("segment objects: size", () => {
  test("compressible data is stored smaller; incompressible data is stored with identity compression", async () => {
    for (const compression of ["lz4", "gzip"] as const) {
      const c = codec(compression, "aes-gcm");
      const small = await c.encode(text(SEGMENT), 0, 1);
      expect(small.length).toBeLessThan(SEGMENT / 3);
      expect(peekSegmentHeader(small).compression).toBe(compression);
      const raw = await c.encode(random(SEGMENT), 0, 1);
      expect(peekSegmentHeader(raw).compression).toBe("identity");
      expect(raw.length).toBe(SEGMENT_HEADER_BYTES + SEGMENT + trailerBytes("aes-gcm"));
    }
  });

  test("trailing zeros are not stored, even without compression", async () => {
    const c = codec("identity", "aes-ctr");
    expect((await c.encode(new Uint8Array(SEGMENT), 0, 0)).length).toBe(SEGMENT_HEADER_BYTES + 32);
    const object = await c.encode(zeroTail(), 0, 0);
    expect(object.length).toBeLessThanOrEqual(SEGMENT_HEADER_BYTES + 6000 + 32);
    expect(peekSegmentHeader(object).plainLength).toBeLessThanOrEqual(6000);
  });

  test("the trimmed length is right for views at any alignment", async () => {
    const c = codec("identity", "identity");
    const backing = new Uint8Array(4096 + 16);
    for (const offset of [0, 1, 2, 3, 5]) {
      for (const [length, last] of [[0, -1], [3, -1], [3, 0], [7, 6], [100, 3], [100, 99], [4096, 4000], [4096, 1]]) {
        backing.fill(0);
        const view = backing.subarray(offset, offset + length!);
        if (last! >= 0) view[last!] = 0xa5;
        // Bytes outside the view must not count.
        backing[offset + length!] = 0xff;
        const object = await c.encode(view, 0, 0);
        expect(peekSegmentHeader(object).plainLength, `offset ${offset} length ${length} last ${last}`).toBe(last! + 1);
      }
    }
  });

  test("two encodes of the same data use different nonces and differ", async () => {
    for (const encryption of ["aes-gcm", "aes-ctr"] as const) {
      const c = codec("lz4", encryption);
      const plain = text(SEGMENT);
      const [a, b] = [await c.encode(plain, 1, 1), await c.encode(plain, 1, 1)];
      expect(Buffer.from(peekSegmentHeader(a).nonce).equals(Buffer.from(peekSegmentHeader(b).nonce))).toBe(false);
      expect(Buffer.from(a.subarray(SEGMENT_HEADER_BYTES)).equals(Buffer.from(b.subarray(SEGMENT_HEADER_BYTES)))).toBe(false);
    }
  });
});

describe("segment objects: integrity", () => {
  for (const encryption of AES_MODES) {
    test(`${encryption}: flipping any sampled byte is detected`, async () => {
      const c = codec("lz4", encryption);
      const object = await c.encode(text(SEGMENT), 5, 7);
      // Every header byte, then the payload's ends and middle, then the trailer's ends.
      const payloadEnd = object.length - trailerBytes(encryption);
      const positions = [...Array.from({ length: SEGMENT_HEADER_BYTES }, (_, i) => i), SEGMENT_HEADER_BYTES, (SEGMENT_HEADER_BYTES + payloadEnd) >> 1, payloadEnd - 1, payloadEnd, object.length - 1];
      for (const at of positions) {
        for (const bit of [0x01, 0x80]) {
          const bad = object.slice();
          bad[at]! ^= bit;
          await rejectsIntegrity(c.decode(bad, 5), "segment 5");
        }
      }
      expect((await c.decode(object, 5)).generation).toBe(7);
    });

    test(`${encryption}: moved, foreign, rolled back and truncated objects are refused`, async () => {
      const c = codec("gzip", encryption);
      const object = await c.encode(text(SEGMENT), 5, 7);
      expect((await rejectsIntegrity(c.decode(object, 6), "segment 6")).problem).toBe("segment mismatch");
      const other = codec("gzip", encryption, { volumeId: random(16) });
      expect((await rejectsIntegrity(other.decode(object, 5))).problem).toBe("volume mismatch");
      expect((await rejectsIntegrity(c.decode(object, 5, { minGeneration: 8 }), "generation 7")).problem).toBe("rolled back");
      for (const length of [0, 5, SEGMENT_HEADER_BYTES - 1, SEGMENT_HEADER_BYTES, object.length - 1]) {
        await rejectsIntegrity(c.decode(object.subarray(0, length), 5));
      }
      expect((await rejectsIntegrity(c.decode(object.subarray(0, object.length - 1), 5))).problem).toBe("truncated");
      const longer = new Uint8Array(object.length + 1);
      longer.set(object);
      await rejectsIntegrity(c.decode(longer, 5));
    });
  }

  test("a wrong key fails authentication", async () => {
    const otherKeys = deriveVolumeKeys(random(32));
    for (const encryption of ["aes-gcm", "aes-ctr"] as const) {
      const object = await codec("lz4", encryption).encode(text(SEGMENT), 2, 1);
      const error = await rejectsIntegrity(codec("lz4", encryption, { keys: otherKeys }).decode(object, 2), "wrong");
      expect(error.problem).toBe("authentication failed");
    }
  });

  test("an object of a weaker encryption mode is refused, not trusted", async () => {
    const plain = await codec("identity", "identity").encode(text(SEGMENT), 2, 1);
    expect((await rejectsIntegrity(codec("identity", "aes-gcm").decode(plain, 2))).problem).toBe("wrong encryption mode");
    const ctr = await codec("identity", "aes-ctr").encode(text(SEGMENT), 2, 1);
    expect((await rejectsIntegrity(codec("identity", "aes-gcm").decode(ctr, 2))).problem).toBe("wrong encryption mode");
  });

  test("bad magic and an unknown version are named", async () => {
    const object = await codec("identity", "identity").encode(text(1000), 0, 0);
    const magic = object.slice();
    magic[0] = 0x41;
    await rejectsIntegrity(codec("identity", "identity").decode(magic, 0), "bad magic");
    await rejectsIntegrity(codec("identity", "identity").decode(new TextEncoder().encode("<Error>NoSuchKey</Error>"), 0), "bad magic");
    const version = object.slice();
    version[8] = 2;
    await rejectsIntegrity(codec("identity", "identity").decode(version, 0), "newer usbd-tui");
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

  test("a manifest from a newer format is refused as such; unknown extra fields are ignored", () => {
    const m = base();
    expect(() => decodeManifest(withField(m, "format", 2), "m")).toThrow("written by a newer usbd-tui");
    expect(decodeManifest(withField(m, "comment", "hello"), "m")).toEqual(m);
  });
});
