/**
 * The stored form of a log object (and of a checkpoint, which uses the same container): a fixed preamble, a sealed
 * header, then the data area cut into chunks of `chunkSize` plaintext bytes, each compressed (when that helps) and
 * sealed on its own (chunk-seal.ts), so that any run of chunks can be fetched with one ranged GET and checked.
 *
 * Preamble (80 bytes, integers big-endian), readable without the key:
 *   0  magic "USBDLOG2"    8  format version (1)    9  kind (1 log, 2 checkpoint)    10 encryption    11 compression
 *   12 volume id (16)      28 sequence number (u64) 36 writer epoch (u32)            40 salt (8)
 *   48 sealed header length (u32)   52 header plaintext length (u32)   56 data area length (u32)
 *   60 chunk size (u32)    64 chunk count (u32)     68 reserved (12 zero bytes)
 * Header plaintext (sealed as piece 0xffffffff): data area length, chunk size and chunk count again (so the
 * preamble's copies are checked), the extent count, flags (u32; 1 = "continued": the object's last write goes on in
 * the next object, so replay applies it only together with that one), the extents (offset u64, length u32, position in the data area
 * u32, flags u8: 1 = zeros, no data), then one u32 per chunk: its sealed length, with the top bit set when the
 * chunk is lz4- or gzip-compressed.
 *
 * A log object's extents are the changes it makes to the volume, in no particular order and never overlapping; a
 * data extent's bytes are at `position` in the data area (which can also hold bytes no extent names any more).
 */
import crypto from "node:crypto";
import { promisify } from "node:util";
import zlib from "node:zlib";
import { compress as lz4Compress, uncompress as lz4Uncompress } from "lz4-napi";
import type { AesMode, ObjstoreCompression } from "../layout.ts";
import { HEADER_INDEX, newSalt, openPiece, sealInto, sealOverhead, SealError, type SealContext } from "./chunk-seal.ts";
import type { VolumeKeys } from "./keys.ts";

export const LOG_MAGIC = "USBDLOG2";
export const LOG_FORMAT_VERSION = 1;
export const PREAMBLE_BYTES = 80;
export const KIND_LOG = 1;
export const KIND_CHECKPOINT = 2;
/** Bytes one extent takes in a header (and what the log writer counts toward an object's size). */
export const EXTENT_RECORD_BYTES = 17;
const COMPRESSED_BIT = 0x80000000;
const HEADER_FIXED = 20;
/** Header flag: the last write of this object continues in the next one. */
export const FLAG_CONTINUED = 1;

const MAGIC = new TextEncoder().encode(LOG_MAGIC);
const ENCRYPTION_CODES: readonly AesMode[] = ["identity", "aes-gcm", "aes-ctr"];
const COMPRESSION_CODES: readonly ObjstoreCompression[] = ["identity", "lz4", "gzip"];
const gzip = promisify(zlib.gzip);
const gunzip = promisify(zlib.gunzip);

/** One change a log object makes: `length` bytes at volume `offset` read as data-area bytes at `pos`, or as zeros. */
export interface LogExtent {
  readonly offset: number;
  readonly length: number;
  readonly pos: number;
  readonly zero: boolean;
}

/** Where an object's chunks are: all a reader needs to fetch and open any range of its data area. */
export interface ObjectLayout {
  readonly kind: number;
  readonly seq: number;
  readonly epoch: number;
  readonly salt: Uint8Array;
  readonly dataLength: number;
  readonly chunkSize: number;
  /** Byte offset of chunk 0 in the object. */
  readonly dataStart: number;
  /** Per chunk: sealed length, top bit set when compressed. */
  readonly chunks: Uint32Array;
}

/** An object that is not an intact, authentic object of the expected volume, kind and sequence number. */
export class LogObjectError extends Error {
  override readonly name = "LogObjectError";
}

export interface ObjectCodecOptions {
  readonly compression: ObjstoreCompression;
  readonly encryption: AesMode;
  readonly keys?: VolumeKeys;
  readonly chunkSize: number;
}

/** An encoded object: its stored bytes, where its chunks are, and (when asked for) the MD5 digest of the bytes. */
export interface EncodedObject {
  readonly body: Uint8Array;
  readonly layout: ObjectLayout;
  readonly md5?: Uint8Array;
}

/** What encode needs to know about the object it writes. */
export interface ObjectIdentity {
  readonly volumeId: Uint8Array;
  readonly kind: number;
  readonly seq: number;
  readonly epoch: number;
  /** FLAG_CONTINUED or 0. */
  readonly flags?: number;
}

export class ObjectCodec {
  readonly compression: ObjstoreCompression;
  readonly encryption: AesMode;
  readonly chunkSize: number;
  protected readonly keys: VolumeKeys | undefined;

  constructor(options: ObjectCodecOptions) {
    if (options.encryption !== "identity" && options.keys === undefined) throw new TypeError(`encryption ${options.encryption} needs the volume's keys`);
    this.compression = options.compression;
    this.encryption = options.encryption;
    this.chunkSize = options.chunkSize;
    this.keys = options.encryption === "identity" ? undefined : options.keys;
  }

  /**
   * The stored object for `data` (the data area) and `extents`, with a fresh salt, and its layout. `handOver`: the
   * caller needs `data` no more, so a codec that encodes elsewhere may take it without a copy (OffloadedCodec
   * detaches it; this one only reads it). `md5`: also the digest a store sends with the body (ObjectStore.putDigest),
   * computed here so that a codec working elsewhere takes that work off the serving thread too.
   */
  async encode(id: ObjectIdentity, extents: readonly LogExtent[], data: Uint8Array, _handOver = false, md5 = false): Promise<EncodedObject> {
    const salt = newSalt();
    const ctx: SealContext = { ...id, salt };
    const chunkCount = Math.ceil(data.length / this.chunkSize);
    const plainOf = (i: number) => data.subarray(i * this.chunkSize, Math.min(data.length, (i + 1) * this.chunkSize));
    // Compression first (on libuv's pool, in parallel), so that the sizes are known and each chunk is sealed
    // straight into its place in the object: no second copy of 4 MiB per upload.
    const packed = await Promise.all(Array.from({ length: chunkCount }, (_, i) => this.pack(plainOf(i))));
    const overhead = sealOverhead(this.encryption);
    const chunks = new Uint32Array(chunkCount);
    for (let i = 0; i < chunkCount; i++) {
      const stored = (packed[i] ?? plainOf(i)).length + overhead;
      chunks[i] = (stored | (packed[i] !== undefined ? COMPRESSED_BIT : 0)) >>> 0;
    }
    const header = headerPlain(data.length, this.chunkSize, extents, chunks, id.flags ?? 0);
    const headerStored = header.length + overhead;
    const dataStart = PREAMBLE_BYTES + headerStored;
    let total = dataStart;
    for (let i = 0; i < chunkCount; i++) total += chunks[i]! & ~COMPRESSED_BIT;
    const body = uninitialized(total);
    writePreamble(body, { ...id, salt, encryption: this.encryption, compression: this.compression, headerStored, headerPlain: header.length, dataLength: data.length, chunkSize: this.chunkSize, chunkCount });
    sealInto(body.subarray(PREAMBLE_BYTES, dataStart), this.encryption, this.keys, ctx, HEADER_INDEX, header.length, false, header);
    let at = dataStart;
    for (let i = 0; i < chunkCount; i++) {
      const plain = plainOf(i);
      const payload = packed[i] ?? plain;
      const length = payload.length + overhead;
      sealInto(body.subarray(at, at + length), this.encryption, this.keys, ctx, i, plain.length, packed[i] !== undefined, payload);
      at += length;
    }
    const layout: ObjectLayout = { kind: id.kind, seq: id.seq, epoch: id.epoch, salt, dataLength: data.length, chunkSize: this.chunkSize, dataStart, chunks };
    return md5 ? { body, layout, md5: new Uint8Array(crypto.createHash("md5").update(body).digest()) } : { body, layout };
  }

  /** Gives back what the codec holds (nothing here; OffloadedCodec's worker pool). */
  close(): void {}

  /**
   * Reads the preamble and header of an object whose first bytes are `head` (at least the preamble; `more` fetches
   * further bytes when the header is longer than `head`). Checks the object is `expect`'s.
   */
  async decodeHeader(
    head: Uint8Array,
    expect: { readonly volumeId: Uint8Array; readonly kind: number; readonly seq: number; readonly epoch?: number },
    more: (offset: number, length: number) => Promise<Uint8Array>,
  ): Promise<{ readonly layout: ObjectLayout; readonly extents: LogExtent[]; readonly flags: number }> {
    const what = `${expect.kind === KIND_LOG ? "log object" : "checkpoint"} ${expect.seq}`;
    const p = readPreamble(head, what);
    if (p.encryption !== this.encryption) throw new LogObjectError(`${what}: encrypted with ${p.encryption}, the volume uses ${this.encryption}`);
    if (p.kind !== expect.kind || p.seq !== expect.seq || (expect.epoch !== undefined && p.epoch !== expect.epoch)) {
      throw new LogObjectError(`${what}: the preamble says kind ${p.kind}, sequence ${p.seq}, epoch ${p.epoch} (misplaced object)`);
    }
    if (!bytesEqual(p.volumeId, expect.volumeId)) throw new LogObjectError(`${what}: belongs to another volume`);
    const end = PREAMBLE_BYTES + p.headerStored;
    const sealed = head.length >= end ? head.subarray(PREAMBLE_BYTES, end) : concat(head.subarray(PREAMBLE_BYTES), await more(head.length, end - head.length));
    if (sealed.length !== p.headerStored) throw new LogObjectError(`${what}: truncated header`);
    const ctx: SealContext = { volumeId: p.volumeId, kind: p.kind, seq: p.seq, epoch: p.epoch, salt: p.salt };
    let header: Uint8Array;
    try {
      header = openPiece(this.encryption, this.keys, ctx, HEADER_INDEX, p.headerPlain, false, sealed);
    } catch (e) {
      throw new LogObjectError(`${what}: ${e instanceof Error ? e.message : String(e)}`);
    }
    return parseHeader(header, p, what);
  }

  /**
   * Opens chunks `first ..` of the object `layout` from `stored`, their sealed bytes back to back as one ranged GET
   * returned them, and returns their plaintext joined. `handOver`: the caller needs `stored` no more, so a codec that
   * decodes elsewhere may take it without a copy (OffloadedCodec; this one only reads it).
   */
  async decodeChunks(volumeId: Uint8Array, layout: ObjectLayout, first: number, stored: Uint8Array, _handOver = false): Promise<Uint8Array> {
    const ctx: SealContext = { volumeId, kind: layout.kind, seq: layout.seq, epoch: layout.epoch, salt: layout.salt };
    const pieces: Promise<Uint8Array>[] = [];
    let at = 0;
    let plainTotal = 0;
    for (let i = first; at < stored.length; i++) {
      if (i >= layout.chunks.length) throw new LogObjectError(`object ${layout.seq}: more bytes than chunks`);
      const entry = layout.chunks[i]!;
      const length = entry & ~COMPRESSED_BIT;
      const compressed = (entry & COMPRESSED_BIT) !== 0;
      const plainLength = Math.min(layout.chunkSize, layout.dataLength - i * layout.chunkSize);
      const piece = stored.subarray(at, at + length);
      if (piece.length !== length) throw new LogObjectError(`object ${layout.seq} chunk ${i}: truncated (${piece.length} of ${length} bytes)`);
      at += length;
      plainTotal += plainLength;
      pieces.push(this.openChunk(ctx, i, plainLength, compressed, piece));
    }
    const plains = await Promise.all(pieces);
    if (plains.length === 1) return plains[0]!;
    const out = new Uint8Array(plainTotal);
    let o = 0;
    for (const p of plains) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }

  private async openChunk(ctx: SealContext, index: number, plainLength: number, compressed: boolean, sealed: Uint8Array): Promise<Uint8Array> {
    let payload: Uint8Array;
    try {
      payload = openPiece(this.encryption, this.keys, ctx, index, plainLength, compressed, sealed);
    } catch (e) {
      throw new LogObjectError(`object ${ctx.seq} chunk ${index}: ${e instanceof SealError ? e.message : String(e)}`);
    }
    if (!compressed) return payload;
    const plain = await this.unpack(payload, plainLength).catch((e: unknown) => {
      throw new LogObjectError(`object ${ctx.seq} chunk ${index}: does not decompress: ${e instanceof Error ? e.message : String(e)}`);
    });
    if (plain.length !== plainLength) throw new LogObjectError(`object ${ctx.seq} chunk ${index}: decompressed to ${plain.length} bytes, not ${plainLength}`);
    return plain;
  }

  /** The compressed form of `plain`, or undefined when compression does not make it smaller. */
  private async pack(plain: Uint8Array): Promise<Uint8Array | undefined> {
    if (this.compression === "identity" || plain.length < 64 || looksRandom(plain)) return undefined;
    const packed = this.compression === "lz4" ? await lz4Compress(Buffer.from(plain.buffer, plain.byteOffset, plain.length)) : await gzip(plain, { level: 6 });
    return packed.length < plain.length ? packed : undefined;
  }

  private async unpack(payload: Uint8Array, plainLength: number): Promise<Uint8Array> {
    if (this.compression === "lz4") {
      // lz4-napi prefixes the block with its uncompressed length (u32 LE): check it before letting it allocate.
      const claimed = payload.length >= 4 ? new DataView(payload.buffer, payload.byteOffset, 4).getUint32(0, true) : -1;
      if (claimed !== plainLength) throw new Error(`lz4 block claims ${claimed} bytes`);
      return await lz4Uncompress(payload);
    }
    return await gunzip(payload, { maxOutputLength: Math.max(1, plainLength) });
  }
}

/**
 * Whether `plain` looks incompressible: 150 or more distinct values among 256 bytes sampled across it (random
 * bytes give about 162, text and mostly-zero data far fewer). lz4 spends about as long failing on a 64 KiB random
 * chunk as AES-GCM takes to seal it, so such chunks are stored as they are without trying (the dedup device's
 * test, see docs/ARCHITECTURE.md).
 */
function looksRandom(plain: Uint8Array): boolean {
  const seen = new Uint8Array(256);
  const step = Math.max(1, Math.floor(plain.length / 256));
  let distinct = 0;
  for (let i = 0, at = 0; i < 256 && at < plain.length; i++, at += step) {
    const b = plain[at]!;
    if (seen[b] === 0) {
      seen[b] = 1;
      distinct++;
    }
  }
  return distinct >= 150;
}

/** Byte range in the object of chunks `first..last` (inclusive). */
export function chunkSpan(layout: ObjectLayout, first: number, last: number): { readonly offset: number; readonly length: number } {
  let offset = layout.dataStart;
  for (let i = 0; i < first; i++) offset += layout.chunks[i]! & ~COMPRESSED_BIT;
  let length = 0;
  for (let i = first; i <= last; i++) length += layout.chunks[i]! & ~COMPRESSED_BIT;
  return { offset, length };
}

/** Stored bytes of the whole object described by `layout`. */
export function objectBytes(layout: ObjectLayout): number {
  const span = layout.chunks.length === 0 ? { offset: layout.dataStart, length: 0 } : chunkSpan(layout, 0, layout.chunks.length - 1);
  return span.offset + span.length;
}

/** Sealed header bytes a header with `extents` extents and `chunks` chunks takes (to size objects before encoding). */
export function headerBytes(extents: number, chunks: number, mode: AesMode): number {
  return HEADER_FIXED + extents * EXTENT_RECORD_BYTES + chunks * 4 + sealOverhead(mode);
}

interface Preamble {
  readonly kind: number;
  readonly encryption: AesMode;
  readonly compression: ObjstoreCompression;
  readonly volumeId: Uint8Array;
  readonly seq: number;
  readonly epoch: number;
  readonly salt: Uint8Array;
  readonly headerStored: number;
  readonly headerPlain: number;
  readonly dataLength: number;
  readonly chunkSize: number;
  readonly chunkCount: number;
}

function writePreamble(out: Uint8Array, p: Preamble): void {
  const view = new DataView(out.buffer, out.byteOffset, PREAMBLE_BYTES);
  out.set(MAGIC, 0);
  view.setUint8(8, LOG_FORMAT_VERSION);
  view.setUint8(9, p.kind);
  view.setUint8(10, ENCRYPTION_CODES.indexOf(p.encryption));
  view.setUint8(11, COMPRESSION_CODES.indexOf(p.compression));
  out.set(p.volumeId, 12);
  view.setBigUint64(28, BigInt(p.seq));
  view.setUint32(36, p.epoch);
  out.set(p.salt, 40);
  view.setUint32(48, p.headerStored);
  view.setUint32(52, p.headerPlain);
  view.setUint32(56, p.dataLength);
  view.setUint32(60, p.chunkSize);
  view.setUint32(64, p.chunkCount);
  out.fill(0, 68, PREAMBLE_BYTES);
}

/** The preamble of a stored object, unauthenticated (the header's seal checks what matters). */
export function readPreamble(bytes: Uint8Array, what = "object"): Preamble {
  if (bytes.length < PREAMBLE_BYTES) throw new LogObjectError(`${what}: truncated (${bytes.length} bytes)`);
  if (!bytesEqual(bytes.subarray(0, 8), MAGIC)) {
    const text = new TextDecoder().decode(bytes.subarray(0, 8));
    throw new LogObjectError(`${what}: not a usbd-tui log object (starts with ${JSON.stringify(text)}${text === "USBDSEG1" ? ", the old segment format" : ""})`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, PREAMBLE_BYTES);
  const version = view.getUint8(8);
  if (version !== LOG_FORMAT_VERSION) throw new LogObjectError(`${what}: format version ${version}${version > LOG_FORMAT_VERSION ? " (written by a newer usbd-tui)" : ""}`);
  const encryption = ENCRYPTION_CODES[view.getUint8(10)];
  const compression = COMPRESSION_CODES[view.getUint8(11)];
  if (encryption === undefined || compression === undefined) throw new LogObjectError(`${what}: unknown encryption or compression code`);
  const seq = view.getBigUint64(28);
  if (seq > BigInt(Number.MAX_SAFE_INTEGER)) throw new LogObjectError(`${what}: sequence number out of range`);
  return {
    kind: view.getUint8(9),
    encryption,
    compression,
    volumeId: bytes.slice(12, 28),
    seq: Number(seq),
    epoch: view.getUint32(36),
    salt: bytes.slice(40, 48),
    headerStored: view.getUint32(48),
    headerPlain: view.getUint32(52),
    dataLength: view.getUint32(56),
    chunkSize: view.getUint32(60),
    chunkCount: view.getUint32(64),
  };
}

function headerPlain(dataLength: number, chunkSize: number, extents: readonly LogExtent[], chunks: Uint32Array, flags: number): Uint8Array {
  const out = new Uint8Array(HEADER_FIXED + extents.length * EXTENT_RECORD_BYTES + chunks.length * 4);
  const view = new DataView(out.buffer);
  view.setUint32(0, dataLength);
  view.setUint32(4, chunkSize);
  view.setUint32(8, chunks.length);
  view.setUint32(12, extents.length);
  view.setUint32(16, flags);
  let at = HEADER_FIXED;
  for (const e of extents) {
    view.setBigUint64(at, BigInt(e.offset));
    view.setUint32(at + 8, e.length);
    view.setUint32(at + 12, e.zero ? 0 : e.pos);
    view.setUint8(at + 16, e.zero ? 1 : 0);
    at += EXTENT_RECORD_BYTES;
  }
  for (let i = 0; i < chunks.length; i++, at += 4) view.setUint32(at, chunks[i]!);
  return out;
}

function parseHeader(header: Uint8Array, p: Preamble, what: string): { layout: ObjectLayout; extents: LogExtent[]; flags: number } {
  const bad = (why: string) => new LogObjectError(`${what}: ${why}`);
  if (header.length < HEADER_FIXED) throw bad("header too short");
  const view = new DataView(header.buffer, header.byteOffset, header.length);
  const dataLength = view.getUint32(0);
  const chunkSize = view.getUint32(4);
  const chunkCount = view.getUint32(8);
  const extentCount = view.getUint32(12);
  const flags = view.getUint32(16);
  if (dataLength !== p.dataLength || chunkSize !== p.chunkSize || chunkCount !== p.chunkCount) throw bad("preamble and header disagree");
  if (chunkSize === 0 || chunkCount !== Math.ceil(dataLength / chunkSize)) throw bad("chunk geometry does not fit the data length");
  if (header.length !== HEADER_FIXED + extentCount * EXTENT_RECORD_BYTES + chunkCount * 4) throw bad("header length does not fit its counts");
  const extents: LogExtent[] = new Array(extentCount);
  let at = HEADER_FIXED;
  for (let i = 0; i < extentCount; i++, at += EXTENT_RECORD_BYTES) {
    const offset = Number(view.getBigUint64(at));
    const length = view.getUint32(at + 8);
    const pos = view.getUint32(at + 12);
    const zero = view.getUint8(at + 16) === 1;
    if (!zero && pos + length > dataLength) throw bad(`extent ${i} runs past the data area`);
    extents[i] = { offset, length, pos, zero };
  }
  const chunks = new Uint32Array(chunkCount);
  for (let i = 0; i < chunkCount; i++, at += 4) chunks[i] = view.getUint32(at);
  const dataStart = PREAMBLE_BYTES + p.headerStored;
  return { layout: { kind: p.kind, seq: p.seq, epoch: p.epoch, salt: p.salt, dataLength, chunkSize, dataStart, chunks }, extents, flags };
}

/** Memory of its own (never Buffer's shared pool at these sizes), not zeroed: the caller writes every byte. */
function uninitialized(length: number): Uint8Array {
  const buffer = Buffer.allocUnsafeSlow(length);
  return new Uint8Array(buffer.buffer, buffer.byteOffset, length);
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The sealed length of a chunk entry (without the compressed flag). */
export function storedLength(entry: number): number {
  return entry & ~COMPRESSED_BIT;
}
