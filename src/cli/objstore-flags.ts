/**
 * The --objstore-* flags: their specs for the flag table and their parsing into the options the objstore kind
 * takes. Settings that a volume records in its manifest (object size, compression, encryption) stay undefined when
 * not given, so that an existing volume keeps its own.
 */
import {
  isAesMode,
  isFlushMode,
  isObjstoreCompression,
  isObjstoreKind,
  OBJSTORE_KINDS,
  type AesMode,
  type FlushMode,
  type ObjstoreCompression,
} from "../devices/objstore/layout.ts";
import { availableParallelism } from "node:os";
import { parseDuration } from "./durations.ts";
import { parseSize } from "./sizes.ts";

/**
 * --objstore-concurflush=0, which the Go original read as "pick one for me": 4 uploads per CPU core, at least 4, at
 * most 32 (an upload mostly waits on the network, so several per core keep the link busy).
 */
export function concurrencyHeuristic(cores: number): number {
  return Math.min(32, Math.max(4, 4 * cores));
}

export const OBJSTORE_FLAGS = {
  "objstore-kind": { type: "string", value: "KIND", help: "objstore: s3 (default), local, or the S3 presets b2, google, oracle" },
  "objstore-cfg": { type: "string", value: "JSON|FILE", help: 'objstore: {"access_key_id","secret_key","endpoint","region","bucket"} inline or in a file' },
  "objstore-objsize": { type: "size", value: "SIZE", help: "objstore: bytes per object of a new volume, a power of two (default 4MiB)" },
  "objstore-diskcache": { type: "size", value: "SIZE", help: "objstore: local cache bound; least recently used objects go first (default 0: whole volume)" },
  "objstore-persistcache": { type: "boolean", help: "objstore: keep the cache across restarts, revalidated against the store" },
  "objstore-aeskey": { type: "string", value: "SPEC", help: "objstore: key:<64 hex|base64|32 raw characters>, file:<path> or env:<VAR> (default <store-dir>/key.aes, made 0600)" },
  "objstore-aesmode": { type: "string", value: "MODE", help: "objstore: aes-gcm (default), aes-ctr (with HMAC) or identity, for a new volume" },
  "objstore-compress": { type: "string", value: "ALG", help: "objstore: lz4 (default), gzip or identity, for a new volume" },
  "objstore-concurflush": { type: "integer", value: "N", help: "objstore: uploads in parallel (default 8; 0: 4 per CPU core, from 4 to 32)" },
  "objstore-flushevery": { type: "string", value: "DURATION", help: "objstore: upload dirty objects every DURATION: 10 (seconds), 2.5s, 500ms, 1m, 1h30m (default 10s; 0: no timed uploads)" },
  "objstore-flush-mode": { type: "string", value: "MODE", help: "objstore: local (default: FLUSH is durable on local disk) or remote (FLUSH waits for the upload)" },
  "objstore-takeover": { type: "boolean", help: "objstore: take the volume from the daemon holding its writer lease (that one is fenced)" },
  "objstore-snapshot": { type: "string", value: "NAME", help: "objstore: serve snapshot NAME of the volume, read-only" },
  "objstore-clone-of": { type: "string", value: "VOL@SNAP", help: "objstore: create --store-name as a clone of snapshot SNAP of volume VOL (no data copied)" },
  "objstore-gc-threshold": { type: "string", value: "FRACTION", help: "objstore: compact log objects less live than this, 0 to 0.95 (default 0.5; 0: no GC)" },
} as const;

export interface ObjstoreCliOptions {
  readonly kind: string;
  readonly config: string | undefined;
  readonly objectSize: number | undefined;
  readonly diskCache: number;
  readonly persistCache: boolean;
  readonly aesKey: string | undefined;
  readonly aesMode: AesMode | undefined;
  readonly compression: ObjstoreCompression | undefined;
  readonly concurrency: number;
  readonly flushEvery: number;
  readonly flushMode: FlushMode;
  readonly takeover: boolean;
  readonly snapshot: string | undefined;
  readonly cloneOf: string | undefined;
  readonly gcThreshold: number | undefined;
}

/** Parses the --objstore-* values (raw strings and booleans); `fail` throws the CLI's usage error. */
export function parseObjstoreFlags(value: (name: keyof typeof OBJSTORE_FLAGS) => string | boolean | undefined, fail: (message: string) => never): ObjstoreCliOptions {
  const text = (name: keyof typeof OBJSTORE_FLAGS): string | undefined => {
    const v = value(name);
    return v === undefined ? undefined : String(v);
  };
  const size = (name: keyof typeof OBJSTORE_FLAGS): number | undefined => {
    const v = text(name);
    if (v === undefined) return undefined;
    try {
      return parseSize(v);
    } catch (e) {
      return fail(`--${name}: ${(e as Error).message}`);
    }
  };
  const kind = text("objstore-kind") ?? "s3";
  if (!isObjstoreKind(kind)) fail(`--objstore-kind takes one of ${OBJSTORE_KINDS.join(", ")}, not "${kind}"`);
  const objectSize = size("objstore-objsize");
  if (objectSize !== undefined && (objectSize < 4096 || objectSize > 1 << 30 || (objectSize & (objectSize - 1)) !== 0)) {
    fail(`--objstore-objsize must be a power of two from 4KiB to 1GiB, got ${objectSize}`);
  }
  const aesMode = text("objstore-aesmode");
  if (aesMode !== undefined && !isAesMode(aesMode)) fail(`--objstore-aesmode takes aes-gcm, aes-ctr or identity, not "${aesMode}"`);
  const compression = text("objstore-compress");
  if (compression !== undefined && !isObjstoreCompression(compression)) fail(`--objstore-compress takes lz4, gzip or identity, not "${compression}"`);
  const flushMode = text("objstore-flush-mode") ?? "local";
  if (!isFlushMode(flushMode)) fail(`--objstore-flush-mode takes local or remote, not "${flushMode}"`);
  const concurrencyText = text("objstore-concurflush") ?? "8";
  const asked = Number(concurrencyText);
  if (!/^\d+$/.test(concurrencyText) || asked > 256) fail(`--objstore-concurflush must be from 0 (a heuristic) to 256, got "${concurrencyText}"`);
  const concurrency = asked === 0 ? concurrencyHeuristic(availableParallelism()) : asked;
  const everyText = text("objstore-flushevery") ?? "10";
  const every = parseDuration(everyText);
  if (every === undefined || (every !== 0 && every < 0.05)) {
    fail(`--objstore-flushevery takes a duration like 10 (seconds), 2.5s, 500ms, 1m or 1h30m (at least 50ms), or 0 for no timed uploads; not "${everyText}"`);
  }
  const aesKey = text("objstore-aeskey");
  if (aesKey !== undefined && !/^(key|file|env):./s.test(aesKey)) fail("--objstore-aeskey takes key:<hex|base64>, file:<path> or env:<VARIABLE>");
  const name = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
  const snapshot = text("objstore-snapshot");
  if (snapshot !== undefined && !name.test(snapshot)) fail(`--objstore-snapshot takes a snapshot name (letters, digits, ".", "_", "-"), not "${snapshot}"`);
  const cloneOf = text("objstore-clone-of");
  if (cloneOf !== undefined) {
    const [volume, snap, ...rest] = cloneOf.split("@");
    if (rest.length > 0 || volume === undefined || snap === undefined || !name.test(volume) || !name.test(snap)) fail(`--objstore-clone-of takes VOLUME@SNAPSHOT, not "${cloneOf}"`);
  }
  if (snapshot !== undefined && cloneOf !== undefined) fail("--objstore-snapshot and --objstore-clone-of do not go together: a clone is a new volume");
  const takeover = value("objstore-takeover") === true;
  if (takeover && snapshot !== undefined) fail("--objstore-takeover has no meaning with --objstore-snapshot (a snapshot is read-only)");
  const thresholdText = text("objstore-gc-threshold");
  const gcThreshold = thresholdText === undefined ? undefined : Number(thresholdText);
  if (gcThreshold !== undefined && (!/^\d*\.?\d+$/.test(thresholdText!) || gcThreshold < 0 || gcThreshold > 0.95)) {
    fail(`--objstore-gc-threshold takes a fraction from 0 to 0.95, like 0.5, not "${thresholdText}"`);
  }
  return {
    kind,
    config: text("objstore-cfg"),
    objectSize,
    diskCache: size("objstore-diskcache") ?? 0,
    persistCache: value("objstore-persistcache") === true,
    aesKey,
    aesMode: aesMode as AesMode | undefined,
    compression: compression as ObjstoreCompression | undefined,
    concurrency,
    flushEvery: every!,
    flushMode: flushMode as FlushMode,
    takeover,
    snapshot,
    cloneOf,
    gcThreshold,
  };
}
