/**
 * One segment's object in the store: a fixed header, the payload (the segment's plaintext with its trailing zeros
 * dropped, compressed, then encrypted) and a trailer that authenticates both.
 *
 * Header (68 bytes, integers big-endian):
 *   0  magic "USBDSEG1"          8  format version       9  compression used     10 encryption mode
 *   11 reserved (0)              12 volume id (16)       28 segment index (u64)  36 generation (u64)
 *   44 plaintext length (u32)    48 payload length (u32) 52 nonce / IV (16; GCM uses the first 12, the rest is 0)
 * Trailer: aes-gcm: the GCM tag (16); aes-ctr: HMAC-SHA256 over header + ciphertext (32, encrypt-then-MAC);
 * identity: SHA-256 over header + payload (32), which catches corruption but not a deliberate edit.
 *
 * The whole header is authenticated (GCM's associated data, or inside the HMAC), so an object copied under another
 * segment's key, taken from another volume, or an older generation put back, is refused by decode rather than read
 * as data. Plaintext length is that of the trimmed plaintext; decode zero-extends it to the segment size.
 */
import crypto from "node:crypto";
import { promisify } from "node:util";
import zlib from "node:zlib";
import { compress as lz4Compress, uncompress as lz4Uncompress } from "lz4-napi";
import type { AesMode, ObjstoreCompression } from "../layout.ts";
import type { VolumeKeys } from "./keys.ts";

export const SEGMENT_MAGIC = "USBDSEG1";
export const SEGMENT_FORMAT_VERSION = 1;
export const SEGMENT_HEADER_BYTES = 68;
export const VOLUME_ID_BYTES = 16;

const COMPRESSION_CODES: readonly ObjstoreCompression[] = ["identity", "lz4", "gzip"];
const ENCRYPTION_CODES: readonly AesMode[] = ["identity", "aes-gcm", "aes-ctr"];
const MAGIC_BYTES = new TextEncoder().encode(SEGMENT_MAGIC);
const NONCE_AT = 52;
const GCM_IV_BYTES = 12;

const gzip = promisify(zlib.gzip);
const gunzip = promisify(zlib.gunzip);

/** Trailer bytes after the payload for each encryption mode. */
export function trailerBytes(mode: AesMode): number {
  return mode === "aes-gcm" ? 16 : 32;
}

/** What is wrong with an object, for callers that treat a rollback differently from corruption. */
export type IntegrityProblem =
  | "truncated" | "bad magic" | "unknown version" | "wrong encryption mode" | "bad header" | "authentication failed"
  | "volume mismatch" | "segment mismatch" | "rolled back" | "length mismatch";

/** An object that is not a valid, authentic object of this segment of this volume. Decode never returns its bytes. */
export class ObjectIntegrityError extends Error {
  override readonly name = "ObjectIntegrityError";
  constructor(readonly segment: number, readonly problem: IntegrityProblem, detail: string) {
    super(`segment ${segment}: ${problem}: ${detail}`);
  }
}

type Fail = (problem: IntegrityProblem, detail: string) => ObjectIntegrityError;
const failer = (segment: number): Fail => (problem, detail) => new ObjectIntegrityError(segment, problem, detail);

/** The header fields as stored. Read by `peekSegmentHeader` without authentication: a hint, never proof. */
export interface SegmentHeader {
  readonly version: number;
  readonly compression: ObjstoreCompression;
  readonly encryption: AesMode;
  readonly volumeId: Uint8Array;
  readonly segment: number;
  readonly generation: number;
  /** Length of the stored (trimmed) plaintext. */
  readonly plainLength: number;
  readonly payloadLength: number;
  readonly nonce: Uint8Array;
}

export interface SegmentCodecOptions {
  /** Compression to try; an object it does not shrink is stored with `identity`. */
  readonly compression: ObjstoreCompression;
  readonly encryption: AesMode;
  /** Required unless `encryption` is identity. */
  readonly keys?: VolumeKeys;
  readonly volumeId: Uint8Array;
  /** The volume's objectSize: decode returns this many bytes. */
  readonly segmentSize: number;
  /** zlib level for gzip, 1-9 (default 6). */
  readonly gzipLevel?: number;
}

export interface DecodedSegment {
  /** Exactly `segmentSize` bytes, not sharing memory with the object passed to decode. */
  readonly plain: Uint8Array;
  readonly generation: number;
}

export class SegmentCodec {
  readonly compression: ObjstoreCompression;
  readonly encryption: AesMode;
  readonly segmentSize: number;
  private readonly keys: VolumeKeys | undefined;
  private readonly volumeId: Uint8Array;
  private readonly gzipLevel: number;

  constructor(options: SegmentCodecOptions) {
    if (options.volumeId.length !== VOLUME_ID_BYTES) throw new RangeError(`volume id must be ${VOLUME_ID_BYTES} bytes`);
    if (!Number.isSafeInteger(options.segmentSize) || options.segmentSize <= 0 || options.segmentSize > 0xffffffff) {
      throw new RangeError(`segment size ${options.segmentSize} is not a length a u32 can hold`);
    }
    if (options.encryption !== "identity" && options.keys === undefined) {
      throw new TypeError(`encryption ${options.encryption} needs the volume's keys`);
    }
    this.compression = options.compression;
    this.encryption = options.encryption;
    this.segmentSize = options.segmentSize;
    this.keys = options.encryption === "identity" ? undefined : options.keys;
    this.volumeId = new Uint8Array(options.volumeId);
    this.gzipLevel = options.gzipLevel ?? 6;
  }

  /**
   * The object for `plain` (at most segmentSize bytes) as generation `generation` of `segment`, with a fresh random
   * nonce. Compression runs on libuv's pool: `plain` must not change until the promise settles.
   */
  async encode(plain: Uint8Array, segment: number, generation: number): Promise<Uint8Array> {
    if (plain.length > this.segmentSize) throw new RangeError(`segment ${segment}: ${plain.length} bytes exceed the segment size ${this.segmentSize}`);
    if (!Number.isSafeInteger(segment) || segment < 0) throw new RangeError(`segment index ${segment} is not a non-negative integer`);
    if (!Number.isSafeInteger(generation) || generation < 0) throw new RangeError(`generation ${generation} is not a non-negative integer`);
    const trimmed = plain.subarray(0, trimmedLength(plain));
    let compression: ObjstoreCompression = "identity";
    let payload: Uint8Array = trimmed;
    if (this.compression !== "identity" && trimmed.length > 0) {
      const packed = this.compression === "lz4" ? await lz4Compress(trimmed) : await gzip(trimmed, { level: this.gzipLevel });
      if (packed.length < trimmed.length) {
        compression = this.compression;
        payload = packed;
      }
    }
    const trailer = trailerBytes(this.encryption);
    // Every byte is written below; fresh zeroed memory cost more (page faults) than the encryption of 4 MiB.
    const object = uninitialized(SEGMENT_HEADER_BYTES + payload.length + trailer);
    const header = object.subarray(0, SEGMENT_HEADER_BYTES);
    const nonce = crypto.randomBytes(this.encryption === "aes-gcm" ? GCM_IV_BYTES : 16);
    writeHeader(header, {
      version: SEGMENT_FORMAT_VERSION,
      compression,
      encryption: this.encryption,
      volumeId: this.volumeId,
      segment,
      generation,
      plainLength: trimmed.length,
      payloadLength: payload.length,
      nonce,
    });
    const body = object.subarray(SEGMENT_HEADER_BYTES, SEGMENT_HEADER_BYTES + payload.length);
    const tail = object.subarray(SEGMENT_HEADER_BYTES + payload.length);
    const keys = this.keys;
    if (this.encryption === "identity" || keys === undefined) {
      body.set(payload);
      tail.set(sha256(object.subarray(0, SEGMENT_HEADER_BYTES + payload.length)));
    } else if (this.encryption === "aes-gcm") {
      const cipher = crypto.createCipheriv("aes-256-gcm", keys.encryption, nonce);
      cipher.setAAD(header);
      body.set(cipher.update(payload));
      cipher.final();
      tail.set(cipher.getAuthTag());
    } else {
      const cipher = crypto.createCipheriv("aes-256-ctr", keys.encryption, nonce);
      body.set(cipher.update(payload));
      cipher.final();
      tail.set(crypto.createHmac("sha256", keys.mac).update(object.subarray(0, SEGMENT_HEADER_BYTES + payload.length)).digest());
    }
    return object;
  }

  /**
   * Authenticates `object` as the object of `segment` of this volume and returns its plaintext, zero-extended to
   * the segment size. `minGeneration` refuses an object older than the caller knows it wrote.
   * @throws ObjectIntegrityError for anything but an intact, authentic object of this segment.
   */
  async decode(object: Uint8Array, segment: number, expect: { readonly minGeneration?: number } = {}): Promise<DecodedSegment> {
    const fail = failer(segment);
    const header = parseHeader(object, segment);
    if (header.encryption !== this.encryption) {
      // Never accept a weaker mode than the volume's: an unencrypted object with a plain checksum is easy to forge.
      throw fail("wrong encryption mode", `object says ${header.encryption}, the volume uses ${this.encryption}`);
    }
    const trailer = trailerBytes(header.encryption);
    const expected = SEGMENT_HEADER_BYTES + header.payloadLength + trailer;
    if (object.length < expected) throw fail("truncated", `${object.length} bytes, the header describes ${expected}`);
    if (object.length > expected) throw fail("bad header", `${object.length} bytes, the header describes ${expected}`);
    const signed = object.subarray(0, SEGMENT_HEADER_BYTES + header.payloadLength);
    const body = object.subarray(SEGMENT_HEADER_BYTES, SEGMENT_HEADER_BYTES + header.payloadLength);
    const tag = object.subarray(SEGMENT_HEADER_BYTES + header.payloadLength);
    const payload = this.open(header, signed, body, tag, fail);
    // Only authenticated fields are compared from here on, so a mismatch is a misplaced object, not a flipped bit.
    if (!bytesEqual(header.volumeId, this.volumeId)) {
      throw fail("volume mismatch", `the object belongs to volume ${hex(header.volumeId)}, not ${hex(this.volumeId)}`);
    }
    if (header.segment !== segment) throw fail("segment mismatch", `the object is segment ${header.segment}'s`);
    const minGeneration = expect.minGeneration ?? 0;
    if (header.generation < minGeneration) {
      throw fail("rolled back", `generation ${header.generation} is older than the ${minGeneration} last written`);
    }
    if (header.plainLength > this.segmentSize) {
      throw fail("length mismatch", `plaintext of ${header.plainLength} bytes exceeds the segment size ${this.segmentSize}`);
    }
    const plain = await this.decompress(header, payload, fail, payload.buffer !== object.buffer);
    return { plain, generation: header.generation };
  }

  /** Checks the trailer and returns the payload decrypted. */
  private open(header: SegmentHeader, signed: Uint8Array, body: Uint8Array, tag: Uint8Array, fail: Fail): Uint8Array {
    const keys = this.keys;
    if (header.encryption === "identity" || keys === undefined) {
      if (!crypto.timingSafeEqual(sha256(signed), tag)) throw fail("authentication failed", "SHA-256 mismatch (the object is corrupt)");
      return body;
    }
    if (header.encryption === "aes-gcm") {
      const decipher = crypto.createDecipheriv("aes-256-gcm", keys.encryption, header.nonce.subarray(0, GCM_IV_BYTES));
      decipher.setAAD(signed.subarray(0, SEGMENT_HEADER_BYTES));
      decipher.setAuthTag(tag);
      const payload = decipher.update(body);
      try {
        decipher.final();
      } catch {
        // The decrypted bytes are dropped unseen: GCM verifies only at the end.
        throw fail("authentication failed", "GCM tag mismatch (the object was altered, or the key is wrong)");
      }
      return payload;
    }
    const mac = crypto.createHmac("sha256", keys.mac).update(signed).digest();
    if (!crypto.timingSafeEqual(mac, tag)) throw fail("authentication failed", "HMAC mismatch (the object was altered, or the key is wrong)");
    const decipher = crypto.createDecipheriv("aes-256-ctr", keys.encryption, header.nonce);
    const payload = decipher.update(body);
    decipher.final();
    return payload;
  }

  /** Expands the payload to exactly segmentSize bytes; `owned` says whether `payload` is ours to hand out. */
  private async decompress(header: SegmentHeader, payload: Uint8Array, fail: Fail, owned: boolean): Promise<Uint8Array> {
    let plain = payload;
    if (header.compression === "lz4") {
      // lz4-napi prefixes the block with its uncompressed length (u32 LE): check it before letting it allocate.
      const claimed = payload.length >= 4 ? new DataView(payload.buffer, payload.byteOffset, 4).getUint32(0, true) : -1;
      if (claimed !== header.plainLength) throw fail("length mismatch", `lz4 block claims ${claimed} bytes, the header ${header.plainLength}`);
      plain = await lz4Uncompress(payload).catch((error: unknown) => {
        throw fail("length mismatch", `lz4 block does not decompress: ${error instanceof Error ? error.message : String(error)}`);
      });
      owned = true;
    } else if (header.compression === "gzip") {
      plain = await gunzip(payload, { maxOutputLength: Math.max(1, header.plainLength) }).catch((error: unknown) => {
        throw fail("length mismatch", `gzip stream does not decompress to ${header.plainLength} bytes: ${error instanceof Error ? error.message : String(error)}`);
      });
      owned = true;
    }
    if (plain.length !== header.plainLength) {
      throw fail("length mismatch", `decompressed to ${plain.length} bytes, the header says ${header.plainLength}`);
    }
    // A plain Uint8Array view, not the Buffer the libraries return: Buffer#slice would hand callers a view, not a copy.
    if (owned && plain.length === this.segmentSize) return new Uint8Array(plain.buffer, plain.byteOffset, plain.length);
    const out = uninitialized(this.segmentSize);
    out.set(plain);
    out.fill(0, plain.length);
    return out;
  }
}

/** The header of an object, unauthenticated: for listings and `check`, never to trust the payload by. */
export function peekSegmentHeader(object: Uint8Array, segment = -1): SegmentHeader {
  return parseHeader(object, segment);
}

function parseHeader(object: Uint8Array, segment: number): SegmentHeader {
  const fail = failer(segment);
  if (object.length < MAGIC_BYTES.length || !bytesEqual(object.subarray(0, MAGIC_BYTES.length), MAGIC_BYTES)) {
    if (object.length < MAGIC_BYTES.length && bytesEqual(object, MAGIC_BYTES.subarray(0, object.length))) {
      throw fail("truncated", `${object.length} bytes, shorter than the ${SEGMENT_HEADER_BYTES}-byte header`);
    }
    throw fail("bad magic", `not a usbd-tui segment object (does not start with ${SEGMENT_MAGIC})`);
  }
  if (object.length < SEGMENT_HEADER_BYTES) throw fail("truncated", `${object.length} bytes, shorter than the ${SEGMENT_HEADER_BYTES}-byte header`);
  const view = new DataView(object.buffer, object.byteOffset, SEGMENT_HEADER_BYTES);
  const version = view.getUint8(8);
  if (version !== SEGMENT_FORMAT_VERSION) {
    throw fail("unknown version", `format version ${version}${version > SEGMENT_FORMAT_VERSION ? " (written by a newer usbd-tui)" : ""}`);
  }
  const compression = COMPRESSION_CODES[view.getUint8(9)];
  const encryption = ENCRYPTION_CODES[view.getUint8(10)];
  if (compression === undefined) throw fail("bad header", `unknown compression code ${view.getUint8(9)}`);
  if (encryption === undefined) throw fail("bad header", `unknown encryption code ${view.getUint8(10)}`);
  if (view.getUint8(11) !== 0) throw fail("bad header", "reserved byte is not zero");
  const segmentIndex = view.getBigUint64(28);
  const generation = view.getBigUint64(36);
  if (segmentIndex > BigInt(Number.MAX_SAFE_INTEGER) || generation > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw fail("bad header", "segment index or generation out of range");
  }
  return {
    version,
    compression,
    encryption,
    volumeId: object.slice(12, 28),
    segment: Number(segmentIndex),
    generation: Number(generation),
    plainLength: view.getUint32(44),
    payloadLength: view.getUint32(48),
    nonce: object.slice(NONCE_AT, NONCE_AT + 16),
  };
}

function writeHeader(header: Uint8Array, fields: SegmentHeader): void {
  const view = new DataView(header.buffer, header.byteOffset, SEGMENT_HEADER_BYTES);
  header.set(MAGIC_BYTES, 0);
  view.setUint8(8, fields.version);
  view.setUint8(9, COMPRESSION_CODES.indexOf(fields.compression));
  view.setUint8(10, ENCRYPTION_CODES.indexOf(fields.encryption));
  view.setUint8(11, 0);
  header.set(fields.volumeId, 12);
  view.setBigUint64(28, BigInt(fields.segment));
  view.setBigUint64(36, BigInt(fields.generation));
  view.setUint32(44, fields.plainLength);
  view.setUint32(48, fields.payloadLength);
  header.fill(0, NONCE_AT, NONCE_AT + 16);
  header.set(fields.nonce, NONCE_AT);
}

/** Length of `data` without its trailing zero bytes, scanning 4 bytes at a time where aligned. */
function trimmedLength(data: Uint8Array): number {
  let end = data.length;
  while (end > 0 && (data.byteOffset + end) % 4 !== 0) {
    if (data[end - 1] !== 0) return end;
    end--;
  }
  if (end === 0) return 0;
  // From here data.byteOffset + end is aligned, and at least the first aligned offset at or after the start.
  const first = Math.ceil(data.byteOffset / 4);
  const words = new Uint32Array(data.buffer, first * 4, (data.byteOffset + end) / 4 - first);
  let w = words.length;
  while (w > 0 && words[w - 1] === 0) w--;
  end = first * 4 + w * 4 - data.byteOffset;
  while (end > 0 && data[end - 1] === 0) end--;
  return end;
}

/** Memory of its own (never Buffer's shared pool at these sizes), not zeroed: the caller writes every byte. */
function uninitialized(length: number): Uint8Array {
  const buffer = Buffer.allocUnsafeSlow(length);
  return new Uint8Array(buffer.buffer, buffer.byteOffset, length);
}

function sha256(data: Uint8Array): Uint8Array {
  return crypto.createHash("sha256").update(data).digest();
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("hex");
}
