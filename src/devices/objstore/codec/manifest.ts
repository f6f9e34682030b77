/**
 * The volume's manifest object: JSON a person can read with `cat`, holding what every log object and checkpoint
 * is read by. It is written once when the volume is created and never changed. Its `keyCheck` is an HMAC (with a
 * subkey of the volume key) over the fields that decide how objects are read, so opening with a wrong key fails at
 * once with a clear message instead of as an integrity error on the first read, and an edited field is noticed.
 *
 * Format 2 is the log-structured layout (log objects, checkpoints, leases). Format 1 was the segment format of
 * earlier versions, refused with a message rather than read through a second code path.
 */
import crypto from "node:crypto";
import { isAesMode, isObjstoreCompression, isValidName, type AesMode, type ObjstoreCompression } from "../layout.ts";
import { KeyError, type VolumeKeys } from "./keys.ts";

/** The manifest format this version writes and reads. */
export const MANIFEST_FORMAT = 2;
export const MIN_OBJECT_SIZE = 4096;
export const MAX_OBJECT_SIZE = 1 << 30;
export const VOLUME_ID_BYTES = 16;
/** Plaintext bytes per chunk of a log object's data area: the unit of a ranged read. */
export const DEFAULT_CHUNK_SIZE = 64 * 1024;

/** A volume this one was cloned from, and the last of its log objects the clone reads. */
export interface BaseVolume {
  readonly volume: string;
  readonly volumeId: string;
  /** Log objects of the clone with sequence numbers up to this one are the base's. */
  readonly upTo: number;
}

/** Where a clone started: a snapshot's checkpoint in its base volume. */
export interface CloneOrigin {
  readonly volume: string;
  readonly snapshot: string;
  readonly seq: number;
  readonly epoch: number;
}

/** A volume in the old segment format: refused by this version. */
export class OldFormatError extends Error {
  override readonly name = "OldFormatError";
}

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
  readonly chunkSize: number;
  /** A clone: the volumes whose log objects it reads, oldest first (empty for a volume of its own). */
  readonly bases: readonly BaseVolume[];
  /** A clone: the snapshot it was made from; null otherwise. */
  readonly origin: CloneOrigin | null;
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
  readonly chunkSize?: number;
  readonly bases?: readonly BaseVolume[];
  readonly origin?: CloneOrigin | null;
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
    chunkSize: options.chunkSize ?? Math.min(DEFAULT_CHUNK_SIZE, options.objectSize),
    bases: options.bases ?? [],
    origin: options.origin ?? null,
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
    chunkSize: manifest.chunkSize,
    bases: manifest.bases,
    origin: manifest.origin,
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
  if (format === 1) {
    throw new OldFormatError(
      `${where}: this volume is in the segment format (manifest format 1) of an earlier usbd-tui, which this version ` +
        "does not read (it writes log-structured volumes, format 2). Copy its data to a new volume (another --store-name) " +
        "with the earlier version serving it, for example with nbdcopy",
    );
  }
  return validate(raw, where);
}

/** Checks every field of `raw`; returns the manifest with exactly the known fields. */
function validate(raw: Record<string, unknown> | Manifest, where: string): Manifest {
  const bad = (field: string, why: string): Error => new Error(`${where}: manifest field "${field}" ${why}`);
  const { format, volumeId, size, objectSize, compression, encryption, keyCheck, createdAt, chunkSize, bases, origin } = raw as Record<string, unknown>;
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
  if (typeof chunkSize !== "number" || !Number.isSafeInteger(chunkSize) || chunkSize < 512 || chunkSize > objectSize || (chunkSize & (chunkSize - 1)) !== 0) {
    throw bad("chunkSize", `must be a power of two from 512 to the object size (got ${JSON.stringify(chunkSize)})`);
  }
  if (!Array.isArray(bases)) throw bad("bases", "must be a list");
  const checkedBases: BaseVolume[] = bases.map((b: unknown, i) => {
    const o = b as Record<string, unknown> | null;
    if (typeof o !== "object" || o === null || typeof o.volume !== "string" || !isValidName(o.volume) || typeof o.volumeId !== "string" || !/^[0-9a-f]{32}$/.test(o.volumeId) ||
      typeof o.upTo !== "number" || !Number.isSafeInteger(o.upTo) || o.upTo < 0 || (i > 0 && o.upTo < (bases[i - 1] as BaseVolume).upTo)) {
      throw bad("bases", `entry ${i} must be {volume, volumeId, upTo} with upTo not decreasing`);
    }
    return { volume: o.volume, volumeId: o.volumeId, upTo: o.upTo };
  });
  let checkedOrigin: CloneOrigin | null = null;
  if (origin !== null) {
    const o = origin as Record<string, unknown> | undefined;
    if (typeof o !== "object" || typeof o.volume !== "string" || typeof o.snapshot !== "string" || typeof o.seq !== "number" || typeof o.epoch !== "number" || checkedBases.length === 0) {
      throw bad("origin", "must be null, or {volume, snapshot, seq, epoch} on a clone");
    }
    checkedOrigin = { volume: o.volume, snapshot: o.snapshot, seq: o.seq, epoch: o.epoch };
  }
  return {
    format: MANIFEST_FORMAT,
    volumeId,
    size,
    objectSize,
    compression,
    encryption,
    keyCheck: keyCheck as string | null,
    createdAt,
    chunkSize,
    bases: checkedBases,
    origin: checkedOrigin,
  };
}

type CheckedFields = Pick<Manifest, "volumeId" | "size" | "objectSize" | "compression" | "encryption" | "chunkSize" | "bases" | "origin">;

/** HMAC-SHA256 with the check subkey over the fields a reader depends on, as 64 hex digits. */
export function manifestKeyCheck(fields: CheckedFields, keys: VolumeKeys): string {
  const bases = fields.bases.map((b) => `${b.volume}:${b.volumeId}:${b.upTo}`).join(",");
  const origin = fields.origin === null ? "-" : `${fields.origin.volume}@${fields.origin.snapshot}:${fields.origin.seq}.${fields.origin.epoch}`;
  const text = `2|${fields.volumeId}|${fields.size}|${fields.objectSize}|${fields.compression}|${fields.encryption}|${fields.chunkSize}|${bases}|${origin}`;
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
        "its volumeId, size, objectSize, compression, encryption or clone origin differ from when the volume was created)",
    );
  }
}

/** A volume id (32 hex digits) as the 16 bytes object preambles carry. */
export function volumeIdBytes(manifestOrId: Pick<Manifest, "volumeId"> | string): Uint8Array {
  return new Uint8Array(Buffer.from(typeof manifestOrId === "string" ? manifestOrId : manifestOrId.volumeId, "hex"));
}
