/**
 * Sealing one piece of a stored object (a chunk of a log object's data, or its header) so that it can be fetched and
 * checked on its own, which is what lets a cold read fetch one byte range of an object instead of all of it.
 *
 * Every piece is authenticated together with its context: the volume id, the object's kind, sequence number and
 * writer epoch, the piece's index and length, and whether it is compressed. A piece copied into another object,
 * another place in the same object, or another volume fails to open. The modes:
 * - aes-gcm: AES-256-GCM, IV = the object's random 8-byte salt + the piece index (u32), 16-byte tag;
 * - aes-ctr: AES-256-CTR with IV = salt + index + a zero 32-bit counter, then HMAC-SHA256 over context, IV and
 *   ciphertext (encrypt-then-MAC, 32 bytes);
 * - identity: no secrecy; SHA-256 over context and payload (32 bytes) catches corruption but not a deliberate edit.
 * A salt is drawn fresh for every encode of an object, so an IV never repeats under one key.
 */
import crypto from "node:crypto";
import type { AesMode } from "../layout.ts";
import type { VolumeKeys } from "./keys.ts";

export const SALT_BYTES = 8;
/** The index the header of an object is sealed under (chunks count up from 0). */
export const HEADER_INDEX = 0xffffffff;

/** Bytes a sealed piece carries beyond its payload. */
export function sealOverhead(mode: AesMode): number {
  return mode === "aes-gcm" ? 16 : 32;
}

/** Which object a piece belongs to: everything its authentication binds it to besides its own index. */
export interface SealContext {
  readonly volumeId: Uint8Array;
  /** 1: log object, 2: checkpoint. */
  readonly kind: number;
  readonly seq: number;
  readonly epoch: number;
  readonly salt: Uint8Array;
}

/** A piece that fails authentication (altered, misplaced, or read with the wrong key). Never carries its bytes. */
export class SealError extends Error {
  override readonly name = "SealError";
}

const CONTEXT_BYTES = 8 + 16 + 1 + 8 + 4 + 4 + 4 + 1;
const CONTEXT_TAG = new TextEncoder().encode("USBDSEAL");

function contextBytes(ctx: SealContext, index: number, plainLength: number, compressed: boolean): Uint8Array {
  const out = new Uint8Array(CONTEXT_BYTES);
  const view = new DataView(out.buffer);
  out.set(CONTEXT_TAG, 0);
  out.set(ctx.volumeId, 8);
  view.setUint8(24, ctx.kind);
  view.setBigUint64(25, BigInt(ctx.seq));
  view.setUint32(33, ctx.epoch);
  view.setUint32(37, index);
  view.setUint32(41, plainLength);
  view.setUint8(45, compressed ? 1 : 0);
  return out;
}

function iv(salt: Uint8Array, index: number, bytes: 12 | 16): Uint8Array {
  const out = new Uint8Array(bytes);
  out.set(salt, 0);
  new DataView(out.buffer).setUint32(SALT_BYTES, index);
  return out;
}

/**
 * Seals `payload` (already compressed when `compressed`) as piece `index` of the object `ctx`; `plainLength` is the
 * piece's length before compression. Returns payload bytes followed by the tag, in memory of its own.
 */
export function sealPiece(
  mode: AesMode,
  keys: VolumeKeys | undefined,
  ctx: SealContext,
  index: number,
  plainLength: number,
  compressed: boolean,
  payload: Uint8Array,
): Uint8Array {
  const out = new Uint8Array(payload.length + sealOverhead(mode));
  sealInto(out, mode, keys, ctx, index, plainLength, compressed, payload);
  return out;
}

/** `sealPiece` into `out` (exactly payload length + sealOverhead bytes), where the piece goes in the object. */
export function sealInto(
  out: Uint8Array,
  mode: AesMode,
  keys: VolumeKeys | undefined,
  ctx: SealContext,
  index: number,
  plainLength: number,
  compressed: boolean,
  payload: Uint8Array,
): void {
  const aad = contextBytes(ctx, index, plainLength, compressed);
  const body = out.subarray(0, payload.length);
  const tail = out.subarray(payload.length);
  if (mode === "identity" || keys === undefined) {
    body.set(payload);
    tail.set(crypto.createHash("sha256").update(aad).update(payload).digest());
  } else if (mode === "aes-gcm") {
    const cipher = crypto.createCipheriv("aes-256-gcm", keys.encryption, iv(ctx.salt, index, 12));
    cipher.setAAD(aad);
    body.set(cipher.update(payload));
    cipher.final();
    tail.set(cipher.getAuthTag());
  } else {
    const nonce = iv(ctx.salt, index, 16);
    const cipher = crypto.createCipheriv("aes-256-ctr", keys.encryption, nonce);
    body.set(cipher.update(payload));
    cipher.final();
    tail.set(crypto.createHmac("sha256", keys.mac).update(aad).update(nonce).update(body).digest());
  }
}

/**
 * Checks and opens a sealed piece; returns its payload (still compressed when `compressed`).
 * @throws SealError when the piece is not the authentic piece `index` of the object `ctx`.
 */
export function openPiece(
  mode: AesMode,
  keys: VolumeKeys | undefined,
  ctx: SealContext,
  index: number,
  plainLength: number,
  compressed: boolean,
  sealed: Uint8Array,
): Uint8Array {
  const overhead = sealOverhead(mode);
  if (sealed.length < overhead) throw new SealError(`piece ${index} is truncated (${sealed.length} bytes)`);
  const aad = contextBytes(ctx, index, plainLength, compressed);
  const body = sealed.subarray(0, sealed.length - overhead);
  const tag = sealed.subarray(sealed.length - overhead);
  if (mode === "identity" || keys === undefined) {
    const sum = crypto.createHash("sha256").update(aad).update(body).digest();
    if (!crypto.timingSafeEqual(sum, tag)) throw new SealError(`piece ${index}: SHA-256 mismatch (the object is corrupt or misplaced)`);
    return body;
  }
  if (mode === "aes-gcm") {
    const decipher = crypto.createDecipheriv("aes-256-gcm", keys.encryption, iv(ctx.salt, index, 12));
    decipher.setAAD(aad);
    decipher.setAuthTag(tag);
    const plain = decipher.update(body);
    try {
      decipher.final();
    } catch {
      // The decrypted bytes are dropped unseen: GCM verifies only at the end.
      throw new SealError(`piece ${index}: GCM tag mismatch (the object was altered or misplaced, or the key is wrong)`);
    }
    return plain;
  }
  const nonce = iv(ctx.salt, index, 16);
  const mac = crypto.createHmac("sha256", keys.mac).update(aad).update(nonce).update(body).digest();
  if (!crypto.timingSafeEqual(mac, tag)) throw new SealError(`piece ${index}: HMAC mismatch (the object was altered or misplaced, or the key is wrong)`);
  const decipher = crypto.createDecipheriv("aes-256-ctr", keys.encryption, nonce);
  const plain = decipher.update(body);
  decipher.final();
  return plain;
}

export function newSalt(): Uint8Array {
  return new Uint8Array(crypto.randomBytes(SALT_BYTES));
}
