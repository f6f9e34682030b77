/**
 * The volume's manifest object: JSON a person can read with `cat`, holding what every segment object is read by.
 * It is written once when the volume is created. Its `keyCheck` is an HMAC (with a subkey of the volume key) over
 * the fields that decide how segments are read, so opening with a wrong key fails at once with a clear message
 * instead of as an integrity error on the first read, and an edited size or mode is noticed.
 */
import crypto from "node:crypto";
import { isAesMode, isObjstoreCompression, type AesMode, type ObjstoreCompression } from "../layout.ts";
import { KeyError, type VolumeKeys } from "./keys.ts";
import { VOLUME_ID_BYTES } from "./segment-object.ts";

/** The manifest format this version writes and reads. */
export const MANIFEST_FORMAT = 1;
export const MIN_OBJECT_SIZE = 4096;
export const MAX_OBJECT_SIZE = 1 << 30;

export interface Manifest {
  readonly format: typeof MANIFEST_FORMAT;
  /** 32 lowercase hex digits: the 16 bytes every segment object's header carries. */
  readonly volumeId: string;
  /** Volume size in bytes: a multiple of 512, not necessarily of objectSize (the last segment is then short). */
  readonly size: number;
  /** Bytes per segment object's plaintext: a power of two from 4 KiB to 1 GiB. */
  readonly objectSize: number;
  readonly compression: ObjstoreCompression;
  readonly encryption: AesMode;
  /** 64 hex digits of HMAC-SHA256 (see `manifestKeyCheck`); null for an unencrypted volume. */
  readonly keyCheck: string | null;
  /** When the volume was created, ISO 8601. */
  readonly createdAt: string;
}

export interface NewManifestOptions {
  readonly size: number;
  readonly objectSize: number;
  readonly compression: ObjstoreCompression;
  readonly encryption: AesMode;
  /** Required unless `encryption` is identity. */
  readonly keys?: VolumeKeys;
  /** Random when not given. */
  readonly volumeId?: Uint8Array;
  readonly createdAt?: Date;
}

/** A manifest for a new volume, validated as `decodeManifest` would. */
export function createManifest(options: NewManifestOptions): Manifest {
  const volumeId = options.volumeId ?? crypto.randomBytes(VOLUME_ID_BYTES);
  if (volumeId.length !== VOLUME_ID_BYTES) throw new RangeError(`volume id must be ${VOLUME_ID_BYTES} bytes`);
  const fields = {
    volumeId: Buffer.from(volumeId).toString("hex"),
    size: options.size,
    objectSize: options.objectSize,
    compression: options.compression,
    encryption: options.encryption,
  };
  let keyCheck: string | null = null;
  if (options.encryption !== "identity") {
    if (options.keys === undefined) throw new KeyError(`encryption ${options.encryption} needs a key`);
    keyCheck = manifestKeyCheck(fields, options.keys);
  }
  const manifest: Manifest = { format: MANIFEST_FORMAT, ...fields, keyCheck, createdAt: (options.createdAt ?? new Date()).toISOString() };
  return validate(manifest, "new volume");
}

/** The manifest as the bytes stored: pretty-printed JSON with a final newline. */
export function encodeManifest(manifest: Manifest): Uint8Array {
  const ordered: Manifest = {
    format: manifest.format,
    volumeId: manifest.volumeId,
    size: manifest.size,
    objectSize: manifest.objectSize,
    compression: manifest.compression,
    encryption: manifest.encryption,
    keyCheck: manifest.keyCheck,
    createdAt: manifest.createdAt,
  };
  return new TextEncoder().encode(`${JSON.stringify(ordered, null, 2)}\n`);
}

/**
 * Parses and validates a stored manifest; `where` (the store and key) starts every error message. Fields this
 * version does not know are ignored: a change older versions must not overlook raises `format` instead.
 * @throws Error naming the field that is missing or invalid, or that the manifest is from a newer usbd-tui.
 */
export function decodeManifest(bytes: Uint8Array, where: string): Manifest {
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (error) {
    throw new Error(`${where}: not a usbd-tui manifest: ${error instanceof Error ? error.message : String(error)}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new Error(`${where}: not a usbd-tui manifest: expected a JSON object`);
  }
  const raw = parsed as Record<string, unknown>;
  const format = raw.format;
  if (typeof format === "number" && Number.isInteger(format) && format > MANIFEST_FORMAT) {
    throw new Error(`${where}: manifest format ${format} was written by a newer usbd-tui (this version reads format ${MANIFEST_FORMAT}); upgrade usbd-tui to open this volume`);
  }
  return validate(raw, where);
}

/** Checks every field of `raw`; returns the manifest with exactly the known fields. */
function validate(raw: Record<string, unknown> | Manifest, where: string): Manifest {
  const bad = (field: string, why: string): Error => new Error(`${where}: manifest field "${field}" ${why}`);
  const { format, volumeId, size, objectSize, compression, encryption, keyCheck, createdAt } = raw as Record<string, unknown>;
  if (format !== MANIFEST_FORMAT) throw bad("format", `must be ${MANIFEST_FORMAT}, not ${JSON.stringify(format)}`);
  if (typeof volumeId !== "string" || !/^[0-9a-f]{32}$/.test(volumeId)) throw bad("volumeId", "must be 32 lowercase hex digits");
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size <= 0 || size % 512 !== 0) {
    throw bad("size", `must be a positive whole number of bytes, a multiple of 512 (got ${JSON.stringify(size)})`);
  }
  if (typeof objectSize !== "number" || !Number.isSafeInteger(objectSize) || objectSize < MIN_OBJECT_SIZE || objectSize > MAX_OBJECT_SIZE || (objectSize & (objectSize - 1)) !== 0) {
    throw bad("objectSize", `must be a power of two from ${MIN_OBJECT_SIZE} to ${MAX_OBJECT_SIZE} (got ${JSON.stringify(objectSize)})`);
  }
  if (typeof compression !== "string" || !isObjstoreCompression(compression)) {
    throw bad("compression", `must be lz4, gzip or identity (got ${JSON.stringify(compression)})`);
  }
  if (typeof encryption !== "string" || !isAesMode(encryption)) {
    throw bad("encryption", `must be aes-gcm, aes-ctr or identity (got ${JSON.stringify(encryption)})`);
  }
  if (encryption === "identity") {
    if (keyCheck !== null) throw bad("keyCheck", "must be null for an unencrypted volume");
  } else if (typeof keyCheck !== "string" || !/^[0-9a-f]{64}$/.test(keyCheck)) {
    throw bad("keyCheck", `must be 64 lowercase hex digits for an encrypted (${encryption}) volume`);
  }
  if (typeof createdAt !== "string" || Number.isNaN(Date.parse(createdAt))) throw bad("createdAt", "must be an ISO 8601 date");
  return { format: MANIFEST_FORMAT, volumeId, size, objectSize, compression, encryption, keyCheck: keyCheck as string | null, createdAt };
}

type CheckedFields = Pick<Manifest, "volumeId" | "size" | "objectSize" | "compression" | "encryption">;

/** HMAC-SHA256 with the check subkey over the fields a reader depends on, as 64 hex digits. */
export function manifestKeyCheck(fields: CheckedFields, keys: VolumeKeys): string {
  const text = `${fields.volumeId}|${fields.size}|${fields.objectSize}|${fields.compression}|${fields.encryption}`;
  return crypto.createHmac("sha256", keys.check).update(text).digest("hex");
}

/**
 * Verifies that `keys` is the volume's key and that the checked fields are as written at creation.
 * @throws KeyError for a wrong or missing key, or an altered manifest (indistinguishable by design).
 */
export function checkVolumeKey(manifest: Manifest, keys: VolumeKeys | undefined, volume: string): void {
  if (manifest.encryption === "identity") return;
  if (keys === undefined) throw new KeyError(`volume ${volume} is encrypted (${manifest.encryption}) but no key was given`);
  if (manifest.keyCheck === null) throw new KeyError(`volume ${volume}: the manifest has no keyCheck (the manifest was altered)`);
  const expected = Buffer.from(manifestKeyCheck(manifest, keys), "hex");
  const stored = Buffer.from(manifest.keyCheck, "hex");
  if (stored.length !== expected.length || !crypto.timingSafeEqual(stored, expected)) {
    throw new KeyError(
      `wrong key for volume ${volume}: the key does not match the manifest's keyCheck (or the manifest was altered: ` +
        "its volumeId, size, objectSize, compression or encryption differ from when the volume was created)",
    );
  }
}

/** The volume id as the 16 bytes segment headers carry. */
export function volumeIdBytes(manifest: Manifest): Uint8Array {
  return new Uint8Array(Buffer.from(manifest.volumeId, "hex"));
}
